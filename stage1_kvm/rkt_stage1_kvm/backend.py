"""The kvm stage1: each pod is a qemu virtual machine (KVM, or TCG where KVM is unusable).

The guest boots Debian's kernel with a tiny initramfs (busybox and the few
modules it needs) and mounts the pod's stage1 rootfs from the host over 9p.
On the host, in a mount namespace that lives exactly as long as qemu, each
app's overlay is mounted and the volumes and the host's ``/usr`` are bound into
that rootfs, so the guest sees the same tree an nspawn container does, and the
same shared supervisor runs the apps in it, with the host's python3. Exit codes
land in ``/rkt/status`` on the host as the guest writes them. docs/kvm.md
explains the choices.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rkt.api import (
    INTERFACE_VERSION,
    PID_FILE,
    Pod,
    PodError,
    PodRuntime,
    ResolvedApp,
    ResolvedPod,
    Stage1Error,
    UsageError,
    build_job,
    run_with_console,
    volume_host_path,
    write_job,
)
from rkt_stage1_kvm import image, vm

LOG = logging.getLogger(__name__)

#: how long the guest may take to start the pod, in seconds (TCG on a loaded
#: host is slow; a guest that never boots must not hang rkt)
BOOT_TIMEOUT_ENV = "RKT_KVM_BOOT_TIMEOUT"
DEFAULT_BOOT_TIMEOUT = 120.0
#: files the guest leaves in the stage1 rootfs (guest.py)
BOOTED = "rkt/kvm-booted"
EXIT = "rkt/kvm-exit"
#: the guest's network interfaces, one ``MAC IFNAME IP/PREFIX GATEWAY`` line each,
#: which the guest's init applies (image.GUEST_INIT)
NET_CONFIG = "rkt/kvm-net"
LAUNCHER = Path(__file__).with_name("launch.py")


class KvmStage1:
    name = "kvm"
    interface_version = INTERFACE_VERSION
    #: a VM cannot share the host's network stack; CNI networks reach it through
    #: a tap device per attachment in the pod's namespace (see _network_devices)
    network_modes = frozenset({"none", "contained"})

    def __init__(self) -> None:
        self.options: dict[str, str] = {}

    def configure(self, options: Mapping[str, str]) -> None:
        """``stage1.d``'s ``options.kvm``: ``kernel``, the kernel image to boot."""
        unknown = set(options) - {image.KERNEL_OPTION}
        if unknown:
            raise UsageError(f"stage1.d options.kvm.{sorted(unknown)[0]}: unknown option "
                             f"(known: {image.KERNEL_OPTION})")
        self.options = dict(options)

    def build_image(self, rootfs: Path) -> None:
        image.build(rootfs, self.options)

    # -- running ------------------------------------------------------------------------
    def run(self, pod: Pod, resolved: ResolvedPod, runtime: PodRuntime) -> int:
        qemu = vm.qemu_binary()
        rootfs = pod.stage1_rootfs()
        kernel, initrd = rootfs / image.KERNEL, rootfs / image.INITRD
        if not kernel.is_file() or not initrd.is_file():
            raise Stage1Error("the kvm stage1 image has no kernel or initramfs "
                              "(rebuild it with 'rkt install')")
        size = vm.vm_size(resolved)
        cache = pod.pods_dir.parent / "tmp"
        accel = vm.choose_accelerator(qemu, kernel, cache / "kvm-accel.json")
        kernel = vm.uncompressed_kernel(kernel, cache)
        if accel.fallback_reason:
            print(f"rkt: kvm: using TCG (software emulation): {accel.fallback_reason}",
                  file=sys.stderr, flush=True)
        job = build_job(
            pod, resolved, runtime, mode="nspawn",
            app_root=lambda app: f"/opt/stage2/{app.name}/rootfs",
            volume_source=lambda volume: f"/rkt/volumes/{volume.name}",
            set_hostname=True,
            # the host's app-<name> cgroups (in every hierarchy) become one cgroup v2
            # directory in the guest, which guest.py makes with the app's limits
            cgroup_dir=lambda host_dir: f"/sys/fs/cgroup/{Path(host_dir).name}",
        )
        write_job(pod, job)
        kvm_dir = pod.path / "kvm"
        kvm_dir.mkdir(exist_ok=True)
        for stale in (BOOTED, EXIT):
            with contextlib.suppress(FileNotFoundError):
                (rootfs / stale).unlink()
        dir_fd = os.open(kvm_dir, os.O_PATH | os.O_DIRECTORY)
        output = _OutputRelay()
        try:
            files = vm.VmFiles(kernel=kernel, initrd=initrd, stage1_rootfs=rootfs,
                               console_log=kvm_dir / "console.log",
                               socket_dir=f"/proc/self/fd/{dir_fd}",
                               stdout=f"/proc/self/fd/{output.stdout_w}",
                               stderr=f"/proc/self/fd/{output.stderr_w}")
            command = vm.qemu_command(qemu, f"rkt-{pod.uuid}", accel, size, files,
                                      interactive=runtime.interactive, debug=runtime.debug)
            command += _network_devices(runtime, rootfs / NET_CONFIG)
            spec = kvm_dir / "launch.json"
            spec.write_text(json.dumps({"argv": command, "mounts": _host_mounts(pod, resolved),
                                        "netns": runtime.network.netns}))
            LOG.debug("running %s", " ".join(command))
            return self._boot(pod, runtime, [sys.executable, "-I", "-S", str(LAUNCHER),
                                             str(spec)], dir_fd, files.console_log, output)
        finally:
            os.close(dir_fd)
            output.close()

    def _boot(self, pod: Pod, runtime: PodRuntime, command: list[str], dir_fd: int,
              console_log: Path, output: _OutputRelay) -> int:
        rootfs = pod.stage1_rootfs()
        timeout = _boot_timeout()
        state: dict[str, Any] = {"process": None, "boot_failed": False}
        started = threading.Event()
        finished = threading.Event()

        def watch_boot() -> None:
            started.wait()
            deadline = time.monotonic() + timeout
            while not finished.is_set() and not (rootfs / BOOTED).exists():
                if time.monotonic() > deadline:
                    state["boot_failed"] = True
                    _kill(state["process"].pid, signal.SIGKILL)
                    return
                finished.wait(0.1)

        def stop_gracefully() -> None:
            # called from rkt's signal handling: the guest is asked from a thread
            threading.Thread(target=_request_stop, args=(pod,), daemon=True).start()

        def on_start(process: subprocess.Popen[bytes]) -> None:
            state["process"] = process
            tmp = pod.path / f".{PID_FILE}.tmp"
            tmp.write_text(str(process.pid))
            os.rename(tmp, pod.path / PID_FILE)
            output.start()
            started.set()

        def kill(process: subprocess.Popen[bytes]) -> None:
            _kill(process.pid, signal.SIGKILL)

        watcher = threading.Thread(target=watch_boot, daemon=True)
        watcher.start()
        pass_fds = [dir_fd, output.stdout_w, output.stderr_w]
        pass_fds += [pod.lock_fd] if pod.lock_fd is not None else []
        for fd in pass_fds:
            os.set_inheritable(fd, True)
        try:
            # a stop signal to rkt (SIGTERM, SIGINT, Ctrl+C) stops the pod through
            # the guest, as under nspawn; SIGKILL to rkt kills qemu with it
            code = run_with_console(command, interactive=runtime.interactive, kill=kill,
                                    pass_fds=pass_fds, on_start=on_start,
                                    stop=stop_gracefully)
        finally:
            finished.set()
            started.set()
            output.finish()
        watcher.join()
        if state["boot_failed"]:
            _show_console(console_log, runtime)
            raise Stage1Error(f"the pod's VM did not boot within {timeout:g}s (its console "
                              f"is above; {BOOT_TIMEOUT_ENV} sets the limit)")
        try:
            return int((rootfs / EXIT).read_text())
        except (OSError, ValueError):
            pass
        if code == 128 + signal.SIGKILL:
            return code  # Ctrl+] or stop --force
        _show_console(console_log, runtime)
        raise Stage1Error(f"the pod's VM ended before its apps did (qemu exit status {code}; "
                          "its console is above)")

    # -- looking after a running pod ------------------------------------------------------
    def enter(self, pod: Pod, app: ResolvedApp, command: list[str]) -> int:
        _wait_until_started(pod, app)
        kvm_dir = pod.path / "kvm"
        with open(kvm_dir / "enter.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one enter at a time per VM channel
            with _connect(kvm_dir, "enter.sock") as channel:
                request = {"app": app.name, "command": command}
                channel.sendall(json.dumps(request).encode() + b"\n")
                return _relay_enter(channel)

    def stop(self, pod: Pod, *, force: bool) -> None:
        if force:
            pid = _qemu_pid(pod)
            if pid is not None:
                _kill(pid, signal.SIGKILL)
            return
        _request_stop(pod)

    def gc(self, pod: Pod) -> None:
        # qemu dies with rkt run (PR_SET_PDEATHSIG); this is for anything that outlived it
        pid = _qemu_pid(pod)
        if pid is not None:
            _kill(pid, signal.SIGKILL)


class _OutputRelay:
    """Copies what the apps write to their stdout and stderr ports, which qemu
    writes into two pipes, to rkt's own stdout and stderr."""

    def __init__(self) -> None:
        self.stdout_r, self.stdout_w = os.pipe()
        self.stderr_r, self.stderr_w = os.pipe()
        self.threads = [
            threading.Thread(target=self._copy, args=(self.stdout_r, 1), daemon=True),
            threading.Thread(target=self._copy, args=(self.stderr_r, 2), daemon=True),
        ]

    @staticmethod
    def _copy(source: int, target: int) -> None:
        while True:
            try:
                data = os.read(source, 65536)
            except InterruptedError:
                continue
            if not data:
                return
            with contextlib.suppress(OSError):
                while data:
                    data = data[os.write(target, data):]

    def start(self) -> None:
        """Once qemu holds the write ends: rkt closes its own, so EOF means qemu ended."""
        for fd in (self.stdout_w, self.stderr_w):
            os.close(fd)
        self.stdout_w = self.stderr_w = -1
        for thread in self.threads:
            thread.start()

    def finish(self) -> None:
        for thread in self.threads:
            if thread.is_alive():
                thread.join()

    def close(self) -> None:
        for fd in (self.stdout_r, self.stdout_w, self.stderr_r, self.stderr_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)


def _network_devices(runtime: PodRuntime, net_config: Path) -> list[str]:
    """qemu's network devices for the pod, one per CNI attachment (none: loopback only).

    stage0 has attached the pod's network namespace to its CNI networks (``eth0``,
    ``eth1``, ... there). Each interface gets a tap device beside it and ``tc``
    redirects every frame between the two, both ways, so the interface becomes a
    wire into the guest: the guest's NIC takes the interface's MAC (the host
    side's neighbour entry stays right) and its address, which the guest's init
    configures from ``net_config``. qemu runs in that namespace (launch.py) to
    open the taps, which go away with the namespace at ``rkt gc``.
    """
    with contextlib.suppress(FileNotFoundError):
        net_config.unlink()
    network = runtime.network
    if network.mode != "contained" or network.netns is None:
        return []
    devices: list[str] = []
    lines: list[str] = []
    for index, attachment in enumerate(network.attachments):
        tap = f"tap{index}"
        mac = _connect_tap(network.netns, attachment.ifname, tap)
        devices += ["-netdev", f"tap,id=net{index},ifname={tap},script=no,downscript=no",
                    "-device", f"virtio-net-device,netdev=net{index},mac={mac}"]
        if attachment.ip is not None and attachment.mask is not None:
            prefix = ipaddress.IPv4Network(f"0.0.0.0/{attachment.mask}").prefixlen
            lines.append(f"{mac} {attachment.ifname} {attachment.ip}/{prefix} "
                         f"{attachment.gateway or '-'}\n")
    net_config.write_text("".join(lines))
    return devices


def _connect_tap(netns: str, ifname: str, tap: str) -> str:
    """Make ``tap`` in ``netns`` and redirect all of ``ifname``'s traffic to and
    from it; returns ``ifname``'s MAC, which the guest's NIC takes."""
    def ns(*argv: str) -> str:
        try:
            result = subprocess.run(["nsenter", f"--net={netns}", *argv], capture_output=True,
                                    text=True, check=True)
        except FileNotFoundError as exc:
            raise Stage1Error(f"{argv[0]} is not installed (Debian package "
                              f"{'iproute2' if argv[0] in ('ip', 'tc') else 'util-linux'})"
                              ) from exc
        except subprocess.CalledProcessError as exc:
            raise Stage1Error(f"cannot connect {ifname} to the pod's VM: "
                              f"{' '.join(argv)}: {exc.stderr.strip()}") from exc
        return result.stdout

    link = json.loads(ns("ip", "-j", "link", "show", "dev", ifname))
    mac = str(link[0]["address"])
    ns("ip", "tuntap", "add", "dev", tap, "mode", "tap")
    ns("ip", "link", "set", tap, "up")
    # frames for the guest's MAC arrive at ifname; promiscuous, it passes on any
    # other the guest may answer to (multicast, a changed MAC) as a bridge would
    ns("ip", "link", "set", ifname, "promisc", "on")
    for source, target in ((ifname, tap), (tap, ifname)):
        ns("tc", "qdisc", "add", "dev", source, "ingress")
        ns("tc", "filter", "add", "dev", source, "parent", "ffff:", "protocol", "all",
           "u32", "match", "u8", "0", "0", "action", "mirred", "egress", "redirect",
           "dev", target)
    return mac


def _host_mounts(pod: Pod, resolved: ResolvedPod) -> list[dict[str, Any]]:
    """What the launcher mounts into the stage1 rootfs before qemu shares it."""
    rootfs = pod.stage1_rootfs()
    mounts: list[dict[str, Any]] = []
    for app in resolved.apps:
        if app.overlay:
            base = pod.path / "overlay" / app.tree
            mounts.append({"kind": "overlay",
                           "target": str(rootfs / "opt" / "stage2" / app.name / "rootfs"),
                           "lower": app.lower, "upper": str(base / "upper" / app.name),
                           "work": str(base / "work" / app.name)})
    for volume in resolved.volumes:
        mounts.append({"kind": "bind", "source": volume_host_path(pod, volume),
                       "target": str(rootfs / "rkt" / "volumes" / volume.name),
                       "read_only": volume.read_only, "recursive": volume.recursive})
    return mounts


def _boot_timeout() -> float:
    try:
        return float(os.environ.get(BOOT_TIMEOUT_ENV, DEFAULT_BOOT_TIMEOUT))
    except ValueError as exc:
        raise UsageError(f"{BOOT_TIMEOUT_ENV}: expected a number of seconds") from exc


def _show_console(console_log: Path, runtime: PodRuntime) -> None:
    if runtime.debug:
        return  # the whole console went to stderr already
    for line in vm.tail(console_log):
        print(f"rkt: kvm: console: {line}", file=sys.stderr)


def _kill(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _qemu_pid(pod: Pod) -> int | None:
    """The pod's qemu, if it still runs (its command line names the pod)."""
    pid = pod.pid()
    if pid is None:
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    return pid if f"rkt-{pod.uuid}".encode() in cmdline else None


@contextlib.contextmanager
def _connect(kvm_dir: Path, name: str) -> Any:
    """A connection to one of the VM's control sockets (through a directory fd:
    a pod directory's path can be longer than a socket address allows)."""
    dir_fd = os.open(kvm_dir, os.O_PATH | os.O_DIRECTORY)
    channel = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            channel.connect(f"/proc/self/fd/{dir_fd}/{name}")
        except OSError as exc:
            raise PodError(f"cannot reach the pod's VM: {exc.strerror}") from exc
        yield channel
    finally:
        channel.close()
        os.close(dir_fd)


def _request_stop(pod: Pod, timeout: float = 10) -> None:
    """Ask the guest to stop the pod (SIGTERM to its supervisor, as under nspawn)."""
    with contextlib.suppress(PodError, OSError), _connect(pod.path / "kvm", "ctl.sock") as ctl:
        ctl.sendall(b"stop\n")
        ctl.settimeout(timeout)
        ctl.recv(16)  # "ok": the guest got it (a guest still booting reads it later)


def _wait_until_started(pod: Pod, app: ResolvedApp, timeout: float = 60) -> None:
    """rkt's contract: enter waits until the pod runs; in a VM, until the app has started."""
    marker = pod.stage1_rootfs() / "rkt" / "pids" / app.name
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if not pod.is_locked_by_other():
            raise PodError(f'pod "{pod.uuid}" is not running')
        if time.monotonic() > deadline:
            raise PodError(f'app "{app.name}" has not started')
        time.sleep(0.1)


def _relay_enter(channel: socket.socket) -> int:
    reader = channel.makefile("rb")
    outputs = {b"O": sys.stdout.buffer, b"E": sys.stderr.buffer}
    while True:
        header = reader.read(5)
        if len(header) < 5:
            raise PodError("the pod's VM ended while the command ran")
        kind, length = header[:1], struct.unpack(">I", header[1:])[0]
        data = reader.read(length)
        if kind == b"X":
            return int(struct.unpack(">i", data)[0])
        stream = outputs.get(kind)
        if stream is not None:
            stream.write(data)
            stream.flush()
