"""The wire contract (``api.proto``) and the modules ``scripts/gen-apiservice``
generates from it (``api_pb2*``: do not edit)."""
