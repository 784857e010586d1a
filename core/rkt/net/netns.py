"""A pod's network namespace, made and removed with a few system calls.

As rkt 1.x did, the namespace is kept alive by a bind mount under
``/var/run/netns`` (``ip netns`` lists it as ``rkt-<uuid>``), and the pod
directory's ``netns`` file says where it is, for the stage1, ``enter`` and ``gc``.
The pod directory itself stays free of mounts, so it can move between states.

Making and removing one takes three system calls (unshare, mount, umount) and an
ioctl for the loopback, made here through ctypes. pyroute2 did this first, but
importing it pulls in asyncio and ssl (about 80 ms), more than a ``--net=none``
pod start costs, and the CNI plugins do all the rest of the network's setup.

The namespace is made by a short-lived thread of rkt, not a forked child: a
network namespace belongs to a thread, so the thread can enter a new one and
bind it while the rest of rkt stays in the host's; forking rkt (and the child's
exit) cost several times as much on a pod start (issue 14).
"""

from __future__ import annotations

import errno
import functools
import os
import threading
from pathlib import Path
from typing import Any

from rkt.errors import NetworkError

#: where the namespaces are bind-mounted (iproute2's directory), unless RKT_NETNS_DIR says
NETNS_DIR = "/var/run/netns"


def netns_dir() -> Path:
    return Path(os.environ.get("RKT_NETNS_DIR") or NETNS_DIR)


def path_for(uuid: str) -> Path:
    return netns_dir() / f"rkt-{uuid}"


def create(path: Path) -> None:
    """Make a network namespace kept at ``path``, with its loopback up."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _share(path.parent)
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    except OSError as exc:
        raise NetworkError(f"cannot create network namespace {path}: "
                           f"{exc.strerror or exc}") from exc
    # A thread of its own enters the new namespace, binds it to ``path`` (which
    # keeps it alive once the thread is gone) and brings up lo; every other thread
    # of rkt stays in the host's namespace.
    errors: list[str] = []
    worker = threading.Thread(target=_make_bound_namespace, args=(path, errors),
                              name="rkt-netns")
    worker.start()
    worker.join()
    if errors:
        remove(path)
        raise NetworkError(f"cannot create network namespace {path}: {errors[0]}")


def _make_bound_namespace(path: Path, errors: list[str]) -> None:
    """In a thread that ends afterwards: unshare its network namespace and bind it
    to ``path``; an error goes into ``errors`` for the caller to report."""
    try:
        _libc_call("unshare", _CLONE_NEWNET)
        # thread-self: /proc/self/ns/net is the main thread's, the host's namespace
        _libc_call("mount", b"/proc/thread-self/ns/net", os.fsencode(path), b"none",
                   _MS_BIND, None)
        _loopback_up()
    except Exception as exc:  # anything: the caller reports it
        errors.append(str(exc) or type(exc).__name__)


def remove(path: Path) -> None:
    """Unmount and delete the namespace's file; nothing to do if it is gone already."""
    if not path.exists():
        return
    try:
        try:
            _libc_call("umount2", os.fsencode(path), _MNT_DETACH)
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # EINVAL: not mounted (a failed create)
                raise
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise NetworkError(f"cannot remove network namespace {path}: "
                           f"{exc.strerror or exc}") from exc


# -- the system calls ------------------------------------------------------------------
_CLONE_NEWNET = 0x40000000
_MS_BIND = 0x1000
_MS_REC = 0x4000
_MS_SHARED = 1 << 20
_MNT_DETACH = 2
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_AF_INET = 2
_SOCK_DGRAM = 2
_SOCK_CLOEXEC = 0o2000000


@functools.cache
def _libc() -> Any:
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _libc_call(name: str, *args: object) -> None:
    import ctypes

    if getattr(_libc(), name)(*args) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{name}: {os.strerror(code)}")


def _share(directory: Path) -> None:
    """Give ``directory`` shared mount propagation, as ``ip netns add`` does, so that
    the namespaces bound below it are seen in every mount namespace (a stage1's too).
    A directory that is not a mount point yet is first bound onto itself."""
    try:
        _libc_call("mount", b"none", os.fsencode(directory), b"none", _MS_SHARED | _MS_REC, None)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        _libc_call("mount", os.fsencode(directory), os.fsencode(directory), b"none",
                   _MS_BIND | _MS_REC, None)
        _libc_call("mount", b"none", os.fsencode(directory), b"none", _MS_SHARED | _MS_REC, None)


def _loopback_up() -> None:
    """``ip link set lo up`` in the calling thread's network namespace: the
    interface's flags through a datagram socket's ioctls (the socket made with
    libc, not Python's socket module, whose import alone cost more than this)."""
    import ctypes
    import fcntl
    import struct

    fd = _libc().socket(_AF_INET, _SOCK_DGRAM | _SOCK_CLOEXEC, 0)
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"socket: {os.strerror(code)}")
    try:
        request = struct.pack("16sh22x", b"lo", 0)
        flags = struct.unpack("16sh22x", fcntl.ioctl(fd, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(fd, _SIOCSIFFLAGS, struct.pack("16sh22x", b"lo", flags | _IFF_UP))
    finally:
        os.close(fd)
