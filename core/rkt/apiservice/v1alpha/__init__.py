"""Generated from ``api.proto`` by ``scripts/gen-apiservice``; do not edit the ``api_pb2*`` modules."""
