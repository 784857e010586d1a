"""``rkt api-service``: rkt 1.x's read-only gRPC API (``v1alpha.PublicAPI``).

``v1alpha/api.proto`` is the wire contract (rkt's package, messages and field
numbers, so clients generated from rkt's own ``api/v1alpha/api.proto`` work);
``v1alpha/api_pb2*.py`` are generated from it and checked in
(``scripts/gen-apiservice``), so neither building nor running rkt needs
grpcio-tools. The service reads pod directories and the image store through
the same code, and so the same locks, as ``rkt list``/``status``/``image list``,
and writes nothing.

Nothing here is imported unless ``rkt api-service`` runs: ``grpc`` and
``protobuf`` cost start-up time that ``rkt run`` and ``rkt version`` must not pay.
"""
