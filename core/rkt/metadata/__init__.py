"""The appc metadata service (appc-spec/ace.md "App Container Metadata Service").

``rkt metadata-service`` is a long-running process with two doors:

- the *registration socket* (a unix socket, ``/run/rkt/metadata-svc.sock`` by
  default, or the one systemd passes with socket activation), where ``rkt run
  --mds-register`` registers a pod: its manifests, its address on its private
  network; the service answers with the pod's secret token;
- the *public port* (TCP 18112 by default), where a pod's apps read their
  metadata at ``AC_METADATA_URL`` = ``http://<host>:<port>/<token>``.

A request on the public port is answered only when its token names a
registered pod *and* it comes from that pod's address: the token alone could
leak (a log, an ``env`` dump), the address alone is shared by whatever runs in
the pod's network namespace. Registrations are kept in a state directory so
that they survive a restart of the service. docs/metadata-service.md has the
whole protocol.

Modules: ``registrations`` (the pods the service knows and their persistence),
``service`` (the two HTTP servers), ``client`` (what stage0 uses to register).
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_SOCKET = Path("/run/rkt/metadata-svc.sock")
DEFAULT_PORT = 18112
#: the registrations' directory under the rkt data dir
STATE_SUBDIR = "metadata-service"
#: a file in a registered pod's directory naming the socket it was registered on,
#: so that ``gc`` and ``stop`` unregister it there (and leave other pods alone)
POD_REGISTRATION_FILE = "mds-socket"


def forget_pod(pod_dir: Path, uuid: str) -> None:
    """Unregister a pod that ends or is removed, if it was registered (best effort).

    Costs one ``stat`` for the pods that never were, which is nearly all of them.
    """
    if os.path.exists(f"{pod_dir}/{POD_REGISTRATION_FILE}"):  # (no pathlib: gc does 1,000s)
        from rkt.metadata.client import unregister_pod

        unregister_pod(pod_dir, uuid)
