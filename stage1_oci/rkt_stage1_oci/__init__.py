"""rkt's OCI stage1: each app of a pod is an OCI bundle run by runc (or another
OCI runtime), built against the public stage1 contract (``rkt.api``) only."""
