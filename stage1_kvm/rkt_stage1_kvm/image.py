"""Building the kvm stage1 image: a Debian kernel, a tiny initramfs, the guest side.

The initramfs holds the host's static busybox, ``/init`` (a busybox shell
script, :data:`GUEST_INIT`) and exactly the kernel modules the guest needs to
reach the pod: virtio over MMIO (qemu's ``microvm`` machine), virtio-serial for
the pod's terminal and control channels, and 9p for the pod's files. Which
modules those are, and in which order they load, comes from the installed
kernel's own ``modinfo``; modules built into the kernel are skipped.

It is written as an uncompressed ``newc`` cpio: under TCG, decompressing costs
more guest time than reading the bytes does.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path

from rkt.api import ConfigError, Stage1Error

#: where the image keeps the VM's files, relative to the stage1 rootfs
KVM_DIR = "kvm"
KERNEL = f"{KVM_DIR}/vmlinuz"
INITRD = f"{KVM_DIR}/initrd.cpio"
#: the guest side of the pod, run by /init with the host's python3
GUEST_SCRIPT = "rkt/kvm-guest.py"

#: the modules the guest needs; their dependencies are added from modinfo
NEEDED_MODULES = ("virtio_mmio", "virtio_console", "9pnet_virtio", "9p", "virtio_net")
BUSYBOX = Path("/bin/busybox")
#: the stage1.d key naming the kernel (docs/kvm.md)
KERNEL_OPTION = "kernel"
KERNEL_PACKAGE = "linux-image-amd64"
#: the 9p mount tags of the pod's stage1 rootfs and of the host's /usr
ROOT_TAG = "rkt-root"
USR_TAG = "rkt-usr"

GUEST_INIT = f"""#!/bin/busybox sh
# rkt kvm stage1: the guest's PID 1. Loads the modules, mounts the pod's stage1
# rootfs and the host's /usr (9p), then runs the guest side of the pod with the
# host's python3.
B=/bin/busybox
$B mount -t proc proc /proc
read started _ < /proc/uptime
$B mount -t sysfs sys /sys
$B mount -t devtmpfs dev /dev
for m in $($B cat /modules/order); do
    $B insmod /modules/$m.ko || echo "rkt: guest: cannot load module $m"
done
if ! $B mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 {ROOT_TAG} /root; then
    echo "rkt: guest: cannot mount the pod's files"
    $B reboot -f
fi
echo "$started" > /root/rkt/kvm-init-uptime
# the host's /usr (python3 for the supervisor): read-only for the pod's whole life,
# so the guest may cache it, which python's many small reads at start-up need
$B mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=loose,ro {USR_TAG} /root/usr
$B mount -t proc proc /root/proc
$B mount -t sysfs sys /root/sys
$B mount -t cgroup2 cgroup2 /root/sys/fs/cgroup
$B mount --move /dev /root/dev
$B mkdir -p /root/dev/pts /root/dev/shm
$B mount -t devpts -o newinstance,ptmxmode=0666 devpts /root/dev/pts
$B mount -t tmpfs -o mode=1777 shm /root/dev/shm
$B ip link set lo up
# the pod's CNI addresses: each NIC (found by its MAC) takes its attachment's
# name, address and, for the first with a gateway, the default route
if [ -s /root/rkt/kvm-net ]; then
    while read mac name addr gw; do
        for dev in /sys/class/net/*; do
            [ "$($B cat $dev/address)" = "$mac" ] || continue
            $B ip link set ${{dev##*/}} name $name
            $B ip addr add $addr dev $name
            $B ip link set $name up
            if [ "$gw" != - ] && ! $B ip route show | $B grep -q ^default; then
                $B ip route add default via $gw dev $name
            fi
        done
    done < /root/rkt/kvm-net
fi
$B chroot /root /usr/bin/python3 -I -S /{GUEST_SCRIPT}
$B sync
$B reboot -f
"""


def find_kernel(options: Mapping[str, str]) -> Path:
    """The kernel named by ``stage1.d``'s ``options.kvm.kernel``, or the newest
    ``/boot/vmlinuz-*`` whose modules include 9p."""
    named = options.get(KERNEL_OPTION)
    if named:
        kernel = Path(named)
        if not kernel.is_file():
            raise ConfigError(
                f"stage1.d options.kvm.{KERNEL_OPTION}: {kernel} is not a file "
                f"(Debian's kernels come with the package {KERNEL_PACKAGE})"
            )
        return kernel
    candidates = sorted(Path("/boot").glob("vmlinuz-*"), key=_version_key, reverse=True)
    for kernel in candidates:
        if _module_path(kernel_release(kernel), "9p") is not None:
            return kernel
    raise ConfigError(
        "no kernel with 9p support in /boot: install the Debian package "
        f"{KERNEL_PACKAGE}, or name one in stage1.d as options.kvm.{KERNEL_OPTION}"
    )


def _version_key(path: Path) -> list[object]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path.name)]


def kernel_release(kernel: Path) -> str:
    return kernel.name.removeprefix("vmlinuz-")


def _has_modules(kernel: Path) -> bool:
    return Path(f"/lib/modules/{kernel_release(kernel)}").is_dir()


def _modinfo(release: str, module: str, field: str) -> str | None:
    try:
        result = subprocess.run(["modinfo", "-k", release, "-F", field, module],
                                capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise Stage1Error("modinfo is not installed (Debian package kmod)") from exc
    return result.stdout.strip() if result.returncode == 0 else None


def _module_path(release: str, module: str) -> Path | None:
    filename = _modinfo(release, module, "filename")
    if not filename or not filename.startswith("/"):
        return None  # "(builtin)" or unknown
    return Path(filename)


def module_closure(release: str, wanted: Iterable[str]) -> list[tuple[str, Path]]:
    """``wanted`` and their dependencies, each after what it depends on."""
    ordered: list[tuple[str, Path]] = []
    seen: set[str] = set()

    def visit(module: str) -> None:
        if module in seen:
            return
        seen.add(module)
        path = _module_path(release, module)
        if path is None:
            if _modinfo(release, module, "name") is None and not _builtin(release, module):
                raise Stage1Error(
                    f"kernel {release} has no module {module!r} (the kvm stage1 needs "
                    f"{', '.join(NEEDED_MODULES)}; Debian's {KERNEL_PACKAGE} has them)"
                )
            return  # built in
        depends = _modinfo(release, module, "depends") or ""
        for dependency in filter(None, depends.split(",")):
            visit(dependency)
        ordered.append((module, path))

    for module in wanted:
        visit(module)
    return ordered


def _builtin(release: str, module: str) -> bool:
    try:
        text = Path(f"/lib/modules/{release}/modules.builtin").read_text()
    except OSError:
        return False
    name = module.replace("_", "-")
    return any(Path(line).stem.replace("_", "-") == name for line in text.splitlines())


class Cpio:
    """A ``newc`` cpio archive, the format the kernel unpacks as an initramfs."""

    def __init__(self, path: Path) -> None:
        self.handle = path.open("wb")
        self.inode = 0

    def add(self, name: str, mode: int, data: bytes = b"") -> None:
        self.inode += 1
        encoded = name.encode() + b"\0"
        fields = (self.inode, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
        self.handle.write(b"070701" + "".join(f"{f:08X}" for f in fields).encode() + encoded)
        self._pad()
        self.handle.write(data)
        self._pad()

    def _pad(self) -> None:
        self.handle.write(b"\0" * (-self.handle.tell() % 4))

    def close(self) -> None:
        self.add("TRAILER!!!", 0)
        self.handle.close()


def write_initramfs(out: Path, init: str, modules: list[tuple[str, Path]]) -> None:
    if not BUSYBOX.is_file():
        raise Stage1Error(f"{BUSYBOX} is missing (Debian package busybox-static)")
    archive = Cpio(out)
    try:
        for directory in ("bin", "dev", "proc", "sys", "root", "modules"):
            archive.add(directory, stat.S_IFDIR | 0o755)
        archive.add("bin/busybox", stat.S_IFREG | 0o755, BUSYBOX.read_bytes())
        archive.add("init", stat.S_IFREG | 0o755, init.encode())
        archive.add("modules/order", stat.S_IFREG | 0o644,
                    "".join(f"{name}\n" for name, _ in modules).encode())
        for name, path in modules:
            archive.add(f"modules/{name}.ko", stat.S_IFREG | 0o644, path.read_bytes())
    finally:
        archive.close()


def build(rootfs: Path, options: Mapping[str, str]) -> None:
    """Put the kernel, the initramfs and the guest script into a stage1 rootfs."""
    kernel = find_kernel(options)
    release = kernel_release(kernel)
    if not _has_modules(kernel):
        raise ConfigError(
            f"no modules for kernel {release} in /lib/modules (stage1.d "
            f"options.kvm.{KERNEL_OPTION} names a kernel whose package is not installed?)"
        )
    modules = module_closure(release, NEEDED_MODULES)
    (rootfs / KVM_DIR).mkdir(exist_ok=True)
    shutil.copyfile(kernel, rootfs / KERNEL)
    write_initramfs(rootfs / INITRD, GUEST_INIT, modules)
    guest = Path(__file__).with_name("guest.py")
    shutil.copyfile(guest, rootfs / GUEST_SCRIPT)
    os.chmod(rootfs / GUEST_SCRIPT, 0o644)
