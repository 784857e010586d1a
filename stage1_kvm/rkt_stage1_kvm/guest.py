"""The guest side of a kvm pod: runs the shared supervisor, answers stop and enter.

Copied into the kvm stage1 image as ``/rkt/kvm-guest.py``; the guest's
``/init`` runs it chrooted into the pod's stage1 rootfs (shared from the host
over 9p) with the host's own ``/usr/bin/python3``, so it imports the standard
library only (and the supervisor next to it).

It writes ``/rkt/kvm-booted`` (the host's boot watchdog waits for it; it holds
the guest's uptime, as ``/rkt/kvm-init-uptime`` holds it when ``/init``
started, for the benchmark's split of the boot time), starts
``/rkt/supervisor.py`` with the pod's terminal (the ``rkt.stdout`` and
``rkt.stderr`` virtio-serial ports, or ``/dev/hvc0`` with ``--interactive``),
serves two more ports while the pod runs, and writes the supervisor's exit code
to ``/rkt/kvm-exit`` for the host:

- ``rkt.ctl``: a line ``stop`` sends SIGTERM to the supervisor, which stops the
  apps as it does under nspawn; answered with ``ok``.
- ``rkt.enter``: a JSON line ``{"app": NAME, "command": [...]}`` runs the
  command in the app's mount namespace with the app's user, groups,
  capabilities and environment; the answer is frames ``O``/``E`` (output,
  4-byte big-endian length, bytes) and one ``X`` frame (4-byte exit code).
"""

from __future__ import annotations

import json
import os
import select
import signal
import struct
import sys
import threading
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

RKT = "/rkt"
BOOTED = f"{RKT}/kvm-booted"
EXIT = f"{RKT}/kvm-exit"
PORTS_DIR = "/sys/class/virtio-ports"
CLONE_NEWNS = 0x00020000


def find_ports(names: set[str], timeout: float = 30) -> dict[str, str]:
    """``/dev`` paths of the named virtio-serial ports (they appear as the host
    announces them, shortly after the driver loads)."""
    found: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while True:
        try:
            entries = os.listdir(PORTS_DIR)
        except FileNotFoundError:
            entries = []
        for entry in entries:
            try:
                with open(f"{PORTS_DIR}/{entry}/name") as handle:
                    name = handle.read().strip()
            except OSError:
                continue
            if name in names and os.path.exists(f"/dev/{entry}"):
                found[name] = f"/dev/{entry}"
        if names <= found.keys() or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


class Port:
    """A virtio-serial port whose host end is a socket that clients come and go on.

    While no client is connected a read returns at once with nothing, so the
    reader sleeps between tries instead of spinning.
    """

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR)
        self.buffer = b""

    def read_line(self) -> bytes:
        while b"\n" not in self.buffer:
            try:
                chunk = os.read(self.fd, 4096)
            except OSError:
                chunk = b""
            if not chunk:
                self.buffer = b""  # a client that left mid-line
                time.sleep(0.2)
                continue
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line

    def write(self, data: bytes) -> None:
        try:
            while data:
                data = data[os.write(self.fd, data):]
        except OSError:
            pass  # the client left


def serve_ctl(port: Port, supervisor: int) -> None:
    while True:
        if port.read_line().strip() == b"stop":
            try:
                os.kill(supervisor, signal.SIGTERM)
            except ProcessLookupError:
                pass
            port.write(b"ok\n")


def serve_enter(port: Port, job: dict[str, Any]) -> None:
    apps = {app["name"]: app for app in job["apps"]}
    while True:
        try:
            request = json.loads(port.read_line())
            app = apps[request["app"]]
            command = [str(arg) for arg in request["command"]]
        except (ValueError, KeyError, TypeError) as exc:
            _frame(port, b"E", f"rkt: enter: bad request: {exc}\n".encode())
            _frame(port, b"X", struct.pack(">i", 254))
            continue
        code = enter(port, app, command, job.get("pids_dir", f"{RKT}/pids"))
        _frame(port, b"X", struct.pack(">i", code))


def _frame(port: Port, kind: bytes, data: bytes) -> None:
    port.write(kind + struct.pack(">I", len(data)) + data)


def enter(port: Port, app: dict[str, Any], command: list[str], pids_dir: str) -> int:
    try:
        with open(f"{pids_dir}/{app['name']}") as handle:
            app_pid = int(handle.read())
        os.kill(app_pid, 0)
    except (OSError, ValueError):
        _frame(port, b"E", f'rkt: app "{app["name"]}" is not running\n'.encode())
        return 254
    _wait_for_exec(app_pid)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(out_r)
        os.close(err_r)
        _entered_child(app, app_pid, command, out_w, err_w)
    os.close(out_w)
    os.close(err_w)
    kinds = {out_r: b"O", err_r: b"E"}
    while kinds:
        ready, _, _ = select.select(list(kinds), [], [])
        for fd in ready:
            data = os.read(fd, 65536)
            if data:
                _frame(port, kinds[fd], data)
            else:
                os.close(fd)
                del kinds[fd]
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


def _wait_for_exec(app_pid: int, timeout: float = 5) -> None:
    """An app's PID is recorded as soon as it is forked: give it the moment it
    needs to leave the supervisor's mount namespace and exec, so enter joins
    the app's namespace and not the supervisor's."""
    own = os.readlink("/proc/self/exe")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.readlink(f"/proc/{app_pid}/exe") != own:
                return
        except OSError:
            return
        time.sleep(0.05)


def _entered_child(app: dict[str, Any], app_pid: int, command: list[str], out: int,
                   err: int) -> None:
    """In the forked child: join the app's mount namespace (its root is the app's
    rootfs), take the app's privileges, exec. Never returns."""
    try:
        null = os.open("/dev/null", os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(err, 2)
        os.setsid()
        supervisor = _supervisor_module()
        # the app's cgroup (in the guest) is opened while its path is visible
        cgroups = supervisor._open_cgroups(app)
        namespace = os.open(f"/proc/{app_pid}/ns/mnt", os.O_RDONLY)
        # the app pivoted below the namespace's own root: its root is found
        # through its /proc entry, opened before the namespace changes under us
        app_root = os.open(f"/proc/{app_pid}/root", os.O_RDONLY | os.O_DIRECTORY)
        if supervisor._libc().setns(namespace, CLONE_NEWNS) != 0:
            raise supervisor.SetupError("cannot join the app's mount namespace")
        os.fchdir(app_root)
        os.chroot(".")
        os.chdir("/")
        supervisor._join_cgroups(cgroups)
        # as the supervisor makes the app itself: privileges, working directory, seccomp
        supervisor.exec_app(app, command, dict(app["env"]))
    except Exception as exc:  # the child must never return into the agent
        os.write(2, f"rkt: enter: {exc}\n".encode())
    os._exit(254)


CGROUP = "/sys/fs/cgroup"
CFS_PERIOD_US = 100000


def make_app_cgroups(job: dict[str, Any]) -> None:
    """The apps' cgroups inside the guest (cgroup v2), with the limits stage0
    resolved (``apps.json``): the host's cgroups hold the whole VM, these each
    app. The job names them ``/sys/fs/cgroup/app-<name>`` (backend.py)."""
    wanted = {app["name"] for app in job["apps"] if app.get("cgroups")}
    if not wanted:
        return
    with open(f"{RKT}/apps.json") as handle:
        resolved = {app["name"]: app.get("resources") or {}
                    for app in json.load(handle)["apps"]}
    _write(f"{CGROUP}/cgroup.subtree_control", "+memory +cpu")
    for name in sorted(wanted):
        directory = f"{CGROUP}/app-{name}"
        os.makedirs(directory, exist_ok=True)
        limits = resolved.get(name, {})
        if limits.get("memory_bytes") is not None:
            _write(f"{directory}/memory.max", str(limits["memory_bytes"]))
        if limits.get("cpu_millis") is not None:
            quota = int(limits["cpu_millis"]) * CFS_PERIOD_US // 1000
            _write(f"{directory}/cpu.max", f"{quota} {CFS_PERIOD_US}")
        if limits.get("cpu_shares") is not None:
            # cgroup v1 shares (2..262144) to v2's weight (1..10000), as stage0 maps them
            weight = 1 + ((int(limits["cpu_shares"]) - 2) * 9999) // (262144 - 2)
            _write(f"{directory}/cpu.weight", str(weight))


def _write(path: str, value: str) -> None:
    with open(path, "w") as handle:
        handle.write(value)


def _supervisor_module() -> Any:
    """The shared supervisor, for its privilege dropping and exec (imported, and
    its C library loaded, before any thread starts: a child forked from a
    thread must not wait on an import lock)."""
    import importlib

    if RKT not in sys.path:
        sys.path.insert(0, RKT)
    supervisor = importlib.import_module("supervisor")
    supervisor._libc()
    return supervisor


def start_supervisor(job: dict[str, Any], ports: dict[str, str]) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            if job.get("interactive"):
                stdin = stdout = stderr = "/dev/hvc0"
                mode = os.O_RDWR
            else:
                stdin, stdout, stderr = "/dev/null", ports["rkt.stdout"], ports["rkt.stderr"]
                mode = os.O_WRONLY
            os.dup2(os.open(stdin, os.O_RDWR if job.get("interactive") else os.O_RDONLY), 0)
            os.dup2(os.open(stdout, mode), 1)
            os.dup2(os.open(stderr, mode), 2)
            # the supervisor is already imported: running it in this child saves
            # starting a second python3, which costs a second or so under TCG
            code = _supervisor_module().main(["supervisor", f"{RKT}/runtime.json"])
        except BaseException as exc:
            os.write(2, f"rkt: guest: the supervisor failed: {exc}\n".encode())
            code = 254
        os._exit(code)
    return pid


def main() -> int:
    with open("/proc/uptime") as uptime, open(BOOTED, "w") as booted:
        booted.write(uptime.read().split()[0] + "\n")  # for bench/bench_kvm.py's split
    with open(f"{RKT}/runtime.json") as handle:
        job = json.load(handle)
    wanted = {"rkt.ctl", "rkt.enter"}
    if not job.get("interactive"):
        wanted |= {"rkt.stdout", "rkt.stderr"}
    ports = find_ports(wanted)
    missing = wanted - ports.keys()
    if missing:
        os.write(2, f"rkt: guest: no virtio-serial port {', '.join(sorted(missing))}\n".encode())
        code = 254
    else:
        _supervisor_module()
        try:
            make_app_cgroups(job)
        except OSError as exc:
            os.write(2, f"rkt: guest: the apps' cgroups: {exc}\n".encode())
        supervisor = start_supervisor(job, ports)
        threading.Thread(target=serve_ctl, args=(Port(ports["rkt.ctl"]), supervisor),
                         daemon=True).start()
        threading.Thread(target=serve_enter, args=(Port(ports["rkt.enter"]), job),
                         daemon=True).start()
        while True:
            try:
                _, status = os.waitpid(supervisor, 0)
                break
            except InterruptedError:
                continue
        code = os.waitstatus_to_exitcode(status)
        code = code if code >= 0 else 128 - code
    with open(EXIT, "w") as handle:
        handle.write(f"{code}\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
