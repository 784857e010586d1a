"""Start qemu in a mount namespace of its own that holds the pod's files.

Run by the kvm backend as ``python3 -I -S launch.py SPEC`` (standard library
only: it runs before every VM and must start fast). In a new session (so the
terminal's Ctrl+C reaches rkt, which stops the pod gracefully, and not qemu)
and a private mount namespace it mounts each app's overlay and binds the
volumes into the pod's stage1 rootfs, which qemu then shares with the guest
over 9p, and execs qemu. The mounts live exactly as long
as qemu: however the pod ends, nothing stays mounted on the host. qemu dies
with rkt (``PR_SET_PDEATHSIG``): SIGKILL to ``rkt run`` ends the pod.

SPEC is JSON: ``{"argv": [...], "mounts": [...], "netns": PATH-or-null}``, each mount either
``{"kind": "overlay", "target", "lower", "upper", "work"}`` or
``{"kind": "bind", "source", "target", "read_only", "recursive"}``.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
PR_SET_PDEATHSIG = 1

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]


def _mount(source: str | None, target: str, fstype: str | None, flags: int,
           data: str | None = None) -> None:
    if _libc.mount(source.encode() if source else None, target.encode(),
                   fstype.encode() if fstype else None, flags,
                   data.encode() if data else None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {target}: {os.strerror(err)}")


def _target(path: str, *, is_dir: bool) -> None:
    if is_dir:
        os.makedirs(path, exist_ok=True)
    elif not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "a"):
            pass


def mount_all(mounts: list[dict[str, Any]]) -> None:
    for mount in mounts:
        target = mount["target"]
        if mount["kind"] == "overlay":
            _mount("overlay", target, "overlay", 0,
                   f"lowerdir={mount['lower']},upperdir={mount['upper']},"
                   f"workdir={mount['work']}")
            continue
        source = mount["source"]
        _target(target, is_dir=os.path.isdir(source))
        _mount(source, target, None, MS_BIND | (MS_REC if mount["recursive"] else 0))
        if mount["read_only"]:
            _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def main(argv: list[str]) -> int:
    with open(argv[1]) as handle:
        spec = json.load(handle)
    try:
        os.setsid()
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if _libc.unshare(CLONE_NEWNS) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"unshare the mount namespace: {os.strerror(err)}")
        _mount(None, "/", None, MS_REC | MS_PRIVATE)
        mount_all(spec["mounts"])
        if spec.get("netns"):
            # the pod's network namespace, where its tap devices are (backend.py)
            netns = os.open(spec["netns"], os.O_RDONLY)
            if _libc.setns(netns, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"enter the pod's network namespace: {os.strerror(err)}")
            os.close(netns)
        os.execv(spec["argv"][0], spec["argv"])
    except OSError as exc:
        os.write(2, f"rkt: kvm: {exc.strerror or exc}\n".encode())
    return 254


if __name__ == "__main__":
    sys.exit(main(sys.argv))
