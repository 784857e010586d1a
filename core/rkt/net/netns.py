"""A pod's network namespace, made and removed with pyroute2.

As rkt 1.x did, the namespace is kept alive by a bind mount under
``/var/run/netns`` (``ip netns`` lists it as ``rkt-<uuid>``), and the pod
directory's ``netns`` file says where it is, for the stage1, ``enter`` and ``gc``.
The pod directory itself stays free of mounts, so it can move between states.

pyroute2 is imported here only, and only when a pod gets its own network
namespace: importing it costs tens of milliseconds.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from rkt.errors import NetworkError

#: where the namespaces are bind-mounted (iproute2's directory), unless RKT_NETNS_DIR says
NETNS_DIR = "/var/run/netns"


def netns_dir() -> Path:
    return Path(os.environ.get("RKT_NETNS_DIR") or NETNS_DIR)


def path_for(uuid: str) -> Path:
    return netns_dir() / f"rkt-{uuid}"


def create(path: Path) -> None:
    """Make a network namespace kept at ``path``, with its loopback up."""
    from pyroute2 import IPRoute, netns

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        netns.create(str(path))
    except OSError as exc:
        raise NetworkError(f"cannot create network namespace {path}: "
                           f"{exc.strerror or exc}") from exc
    try:
        with IPRoute(netns=str(path)) as ipr:
            (index,) = ipr.link_lookup(ifname="lo")
            ipr.link("set", index=index, state="up")
    except Exception as exc:  # pyroute2 raises its own netlink errors
        remove(path)
        raise NetworkError(f"cannot bring up the loopback in {path}: {exc}") from exc


def remove(path: Path) -> None:
    """Unmount and delete the namespace's file; nothing to do if it is gone already."""
    if not path.exists():
        return
    from pyroute2 import netns

    with contextlib.suppress(FileNotFoundError):
        try:
            netns.remove(str(path))
        except OSError as exc:
            raise NetworkError(f"cannot remove network namespace {path}: "
                               f"{exc.strerror or exc}") from exc
