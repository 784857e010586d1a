"""The virtual machine: qemu's command line, its accelerator, its size.

qemu's ``microvm`` machine boots the kernel directly (no PCI bus to enumerate,
no legacy firmware tables); every device is virtio over MMIO, found through
ACPI. ``-nodefaults -no-reboot``: nothing the pod does not use, and the
guest's ``reboot -f`` (triple fault, ``reboot=t``) ends qemu.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from rkt.api import ResolvedPod, Stage1Error

QEMU = "qemu-system-x86_64"
QEMU_PACKAGE = "qemu-system-x86"
#: the kernel command line every pod VM boots with (and bench/'s bare VM)
KERNEL_CMDLINE = (
    "console=ttyS0 panic=-1 reboot=t rdinit=/init "
    "cryptomgr.notests audit=0 apparmor=0 8250.nr_uarts=1 random.trust_cpu=on"
)
#: memory for the guest's kernel, init and supervisor, and for an app with no
#: resource/memory limit, in MiB (so one such app gets 256 MiB)
BASE_MEMORY = 128
DEFAULT_APP_MEMORY = 128
MIN_MEMORY = 256
#: how long a KVM guest may take to reach its first panic before KVM is
#: judged unusable (a working KVM needs well under a second)
KVM_PROBE_SECONDS = 3.0
ACCEL_ENV = "RKT_KVM_ACCEL"


def qemu_binary() -> str:
    found = shutil.which(QEMU)
    if found is None:
        raise Stage1Error(f"{QEMU} is not installed (Debian package {QEMU_PACKAGE})")
    return found


def kernel_cmdline(accel: str, *, debug: bool) -> str:
    """The guest kernel's command line.

    Under TCG the guest reads the host's TSC, and a loaded host makes the
    kernel's calibration of it against the (emulated) PIT fail, after which
    microvm, which has no HPET or ACPI PM timer to fall back on, hangs early in
    boot; ``tsc_early_khz`` gives the kernel the host's TSC rate instead.
    """
    parts = [KERNEL_CMDLINE]
    khz = _host_tsc_khz() if accel == "tcg" else None
    if khz:
        parts.append(f"tsc_early_khz={khz}")
    if not debug:
        parts.append("quiet")
    return " ".join(parts)


def _host_tsc_khz() -> int | None:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("cpu MHz"):
                    return int(float(line.split(":")[1]) * 1000)
    except (OSError, ValueError, IndexError):
        pass
    return None


# -- the accelerator ----------------------------------------------------------------------
class Accelerator(NamedTuple):
    name: str  # "kvm" or "tcg"
    #: why TCG was chosen, for the one line rkt prints; None with KVM
    fallback_reason: str | None = None


def choose_accelerator(qemu: str, kernel: Path, cache: Path) -> Accelerator:
    """KVM when it really runs a guest, else TCG.

    ``/dev/kvm`` may open and still fail every guest (a host without VT-x or
    AMD-V passed through: guests hang, or reset at their first instructions),
    so KVM is tried on the real kernel with no initramfs, which boots to its
    "cannot mount root" panic and, with ``panic=-1``, ends qemu at once; only a
    panic message on the console within :data:`KVM_PROBE_SECONDS` means KVM
    works. The verdict is kept in ``cache`` for this boot of the host and this
    kernel. ``RKT_KVM_ACCEL=kvm|tcg`` skips the probe.
    """
    forced = os.environ.get(ACCEL_ENV)
    if forced in ("kvm", "tcg"):
        return Accelerator(forced, None if forced == "kvm" else f"{ACCEL_ENV}=tcg")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return Accelerator("tcg", "/dev/kvm is missing or not accessible")
    key = {"boot_id": _boot_id(), "kernel": _digest(kernel), "qemu": qemu}
    with contextlib.suppress(OSError, ValueError):
        cached = json.loads(cache.read_text())
        if cached.get("key") == key:
            return Accelerator(str(cached["name"]), cached.get("fallback_reason"))
    verdict = _probe_kvm(qemu, kernel)
    with contextlib.suppress(OSError):
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}")
        tmp.write_text(json.dumps({"key": key, **verdict._asdict()}))
        os.rename(tmp, cache)
    return verdict


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _digest(kernel: Path) -> str:
    import hashlib

    try:
        return hashlib.sha256(kernel.read_bytes()).hexdigest()
    except OSError:
        return ""


def _probe_kvm(qemu: str, kernel: Path) -> Accelerator:
    command = [qemu, "-machine", "microvm,accel=kvm", "-cpu", "host", "-m", "64",
               "-nodefaults", "-no-user-config", "-no-reboot", "-display", "none",
               "-serial", "stdio", "-kernel", str(kernel),
               "-append", "console=ttyS0 panic=-1 reboot=t loglevel=1"]
    try:
        result = subprocess.run(command, capture_output=True, text=True,
                                timeout=KVM_PROBE_SECONDS, check=False)
    except subprocess.TimeoutExpired:
        return Accelerator("tcg", f"a KVM guest did not get through its boot within "
                                  f"{KVM_PROBE_SECONDS:g}s")
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if "warning" not in line]
        why = lines[0].split(": ")[-1] if lines else f"exit status {result.returncode}"
        return Accelerator("tcg", f"qemu cannot run a KVM guest here ({why})")
    if "Kernel panic" not in result.stdout:
        return Accelerator("tcg", "a KVM guest reset before its kernel had started")
    return Accelerator("kvm")


# -- the kernel qemu boots ------------------------------------------------------------------
_ELF_PVH_NOTE = 18  # XEN_ELFNOTE_PHYS32_ENTRY: the kernel can be entered in 32-bit mode


def uncompressed_kernel(kernel: Path, cache_dir: Path) -> Path:
    """The ELF ``vmlinux`` inside a bzImage, for qemu to boot through its PVH entry.

    A bzImage first decompresses itself, which under TCG takes longer than
    the whole rest of the kernel's boot (Debian's are XZ-compressed: about two
    thirds of a bare boot's time). The uncompressed kernel is about 65 MB, too
    much to copy into every pod with the stage1 image, so it is unpacked on
    the host once per kernel into ``cache_dir`` (``<data dir>/tmp``). A kernel
    that is not an XZ or gzip bzImage, or has no PVH entry, is booted as it is.
    """
    digest = _digest(kernel)
    cached = cache_dir / f"kvm-vmlinux-{digest[:32]}"
    if cached.exists():
        return cached
    try:
        data = kernel.read_bytes()
    except OSError:
        return kernel
    elf = _decompress_payload(data)
    if elf is None or not _has_pvh_entry(elf):
        return kernel
    with contextlib.suppress(OSError):
        cache_dir.mkdir(parents=True, exist_ok=True)
        for old in cache_dir.glob("kvm-vmlinux-*"):
            old.unlink()  # one kernel's worth of cache at a time
        tmp = cache_dir / f".{cached.name}.{os.getpid()}"
        tmp.write_bytes(elf)
        os.rename(tmp, cached)
        return cached
    return kernel


def _decompress_payload(data: bytes) -> bytes | None:
    import lzma
    import zlib

    for magic, make in ((b"\xfd7zXZ\x00", lzma.LZMADecompressor),
                        (b"\x1f\x8b\x08\x00", lambda: zlib.decompressobj(16 + zlib.MAX_WBITS))):
        start = data.find(magic)
        if start < 0:
            continue
        try:
            elf: bytes = make().decompress(data[start:])
        except (lzma.LZMAError, zlib.error):
            continue
        if elf.startswith(b"\x7fELF"):
            return elf
    return None


def _has_pvh_entry(elf: bytes) -> bool:
    """Whether an ELF64 kernel carries the Xen PVH entry note qemu boots it by."""
    import struct

    if elf[4] != 2:  # ELFCLASS64
        return False
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for index in range(phnum):
        header = phoff + index * phentsize
        kind, _, offset, _, _, filesz = struct.unpack_from("<IIQQQQ", elf, header)
        if kind != 4:  # PT_NOTE
            continue
        position, end = offset, offset + filesz
        while position + 12 <= end:
            namesz, descsz, note_type = struct.unpack_from("<III", elf, position)
            name = elf[position + 12:position + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and note_type == _ELF_PVH_NOTE:
                return True
            position += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


# -- the VM's size ----------------------------------------------------------------------------
class Size(NamedTuple):
    memory_mib: int
    cpus: int


def vm_size(resolved: ResolvedPod) -> Size:
    """Memory: the apps' ``resource/memory`` limits (128 MiB for an app without
    one) plus 128 MiB for the guest itself, and at least 256 MiB (an app's
    limit holds in its cgroup inside the guest; a VM barely larger than it
    would make big allocations fail outright instead); vCPUs: the apps'
    ``resource/cpu`` limits added up and rounded up, at least 1 and at most
    the host's CPUs."""
    memory = BASE_MEMORY
    millis = 0
    for app in resolved.apps:
        limit = app.resources.memory_bytes
        memory += DEFAULT_APP_MEMORY if limit is None else math.ceil(limit / 2**20)
        millis += app.resources.cpu_millis or 0
    memory = max(memory, MIN_MEMORY)
    host = _host_memory_mib()
    if host is not None and memory > host:
        raise Stage1Error(
            f"the pod's VM needs {memory} MiB (its apps' resource/memory limits plus "
            f"{BASE_MEMORY} MiB for the guest) but the host has {host} MiB"
        )
    return Size(memory, max(1, min(math.ceil(millis / 1000), os.cpu_count() or 1)))


def _host_memory_mib() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


# -- the command line ---------------------------------------------------------------------------
class VmFiles(NamedTuple):
    """Where a pod's VM finds and leaves things on the host."""

    kernel: Path
    initrd: Path
    #: exported to the guest over 9p as its view of the pod
    stage1_rootfs: Path
    #: the kernel console's log
    console_log: Path
    #: a directory the control sockets are in, as qemu reaches it (a path under
    #: /proc/self/fd: a pod directory's path may be too long for a socket)
    socket_dir: str
    #: the write ends of the pipes rkt relays the apps' output from, as qemu
    #: reaches them (not rkt's own stdout, which may be a file whose offset a
    #: second open would not share, or a socket, which cannot be opened at all)
    stdout: str = "/dev/null"
    stderr: str = "/dev/null"


def cpu_model(accel: str) -> list[str]:
    """The guest's CPU: the host's under KVM; under TCG qemu's default model plus
    RDRAND, so that the kernel (``random.trust_cpu=on``) has its random numbers
    at once: without them the guest's first ``getrandom()`` (python3's, at its
    start) waits a second or more for entropy."""
    return ["-cpu", "host" if accel == "kvm" else "qemu64,+rdrand"]


def qemu_command(qemu: str, name: str, accel: Accelerator, size: Size, files: VmFiles, *,
                 interactive: bool, debug: bool) -> list[str]:
    command = [
        qemu, "-name", name, "-machine", f"microvm,accel={accel.name}", *cpu_model(accel.name),
        "-m", str(size.memory_mib), "-smp", str(size.cpus),
        "-nodefaults", "-no-user-config", "-no-reboot", "-display", "none",
        "-kernel", str(files.kernel), "-initrd", str(files.initrd),
        "-append", kernel_cmdline(accel.name, debug=debug),
        # the pod as the guest sees it: one export, the host's mounts (overlays,
        # volumes) inside it, each kept distinct by multidevs=remap
        "-fsdev", f"local,id=root,path={files.stage1_rootfs},security_model=passthrough,"
                  "multidevs=remap",
        "-device", "virtio-9p-device,fsdev=root,mount_tag=rkt-root",
        # the host's /usr, for the supervisor's python3 (as nspawn binds it)
        "-fsdev", "local,id=usr,path=/usr,security_model=passthrough,readonly=on,"
                  "multidevs=remap",
        "-device", "virtio-9p-device,fsdev=usr,mount_tag=rkt-usr",
        "-device", "virtio-serial-device,max_ports=8",
    ]
    # the kernel's console: a log for boot failures, and the terminal with --debug
    if debug:
        command += ["-chardev", f"file,id=log,path=/dev/fd/2,append=on,"
                                f"logfile={files.console_log}"]
    else:
        command += ["-chardev", f"file,id=log,path={files.console_log}"]
    command += ["-serial", "chardev:log"]
    if interactive:
        command += ["-chardev", "stdio,id=console,signal=off",
                    "-device", "virtconsole,chardev=console,name=rkt.console"]
    else:
        command += [
            "-chardev", f"file,id=stdout,path={files.stdout}",
            "-device", "virtserialport,chardev=stdout,name=rkt.stdout",
            "-chardev", f"file,id=stderr,path={files.stderr}",
            "-device", "virtserialport,chardev=stderr,name=rkt.stderr",
        ]
    for port in ("ctl", "enter"):
        command += [
            "-chardev", f"socket,id={port},path={files.socket_dir}/{port}.sock,"
                        "server=on,wait=off",
            "-device", f"virtserialport,chardev={port},name=rkt.{port}",
        ]
    return command


def tail(path: Path, lines: int = 15) -> Sequence[str]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [line.rstrip("\r") for line in text.splitlines() if line.strip()][-lines:]
