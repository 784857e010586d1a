"""The checks: pod behaviour every stage1 owes, or declares it does not have.

Each check drives the real ``rkt`` in the suite's world (:mod:`rkt.conformance.world`)
and looks at what a user sees: output, exit codes, files on the host, ``rkt status``.
A check returns when the stage1 behaved, and raises :class:`CheckFailed` with a
one-line reason when it did not.
"""

from __future__ import annotations

import ipaddress
import json
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rkt.conformance.world import HANDLERS_NAME, IMAGE_NAME, IMAGE_TOKEN, World, last_line


class CheckFailed(Exception):
    """The stage1 did not behave; the message is the one-line reason."""


class CheckSkipped(Exception):
    """The host cannot run the check (not the stage1's fault); the message says why."""


@dataclass(frozen=True)
class Check:
    name: str
    #: the STAGE1_FEATURES name a stage1 may declare unsupported, a ``net-*`` mode
    #: from ``network_modes``, or None for what every stage1 owes
    feature: str | None
    run: Callable[[World], None]
    #: run alone after the others (it looks at every pod of the world)
    last: bool = False


CHECKS: list[Check] = []
#: feature -> a pod that uses it: a stage1 that declares the feature unsupported
#: must refuse this pod (one ``rkt:`` line, non-zero exit), not run it without it
PROBES: dict[str, Callable[[World], subprocess.CompletedProcess[str]]] = {}


def check(name: str, feature: str | None = None, *, last: bool = False
          ) -> Callable[[Callable[[World], None]], Callable[[World], None]]:
    def register(fn: Callable[[World], None]) -> Callable[[World], None]:
        CHECKS.append(Check(name, feature, fn, last))
        return fn
    return register


def probe(feature: str) -> Callable[
        [Callable[[World], subprocess.CompletedProcess[str]]],
        Callable[[World], subprocess.CompletedProcess[str]]]:
    def register(fn: Callable[[World], subprocess.CompletedProcess[str]]
                 ) -> Callable[[World], subprocess.CompletedProcess[str]]:
        PROBES[feature] = fn
        return fn
    return register


def expect(result: subprocess.CompletedProcess[str], code: int = 0) -> str:
    """``result``'s stdout, if it exited ``code``."""
    if result.returncode != code:
        raise CheckFailed(f"rkt exited {result.returncode}, expected {code}: "
                          f"{last_line(result.stderr)}")
    return result.stdout


def expect_lines(result: subprocess.CompletedProcess[str], expected: list[str],
                 code: int = 0) -> None:
    lines = expect(result, code).splitlines()
    if lines != expected:
        raise CheckFailed(f"the app printed {lines}, expected {expected}"
                          f" (stderr: {last_line(result.stderr)})")


def sh(script: str) -> list[str]:
    return ["--exec=/bin/sh", "--", "-c", script]


# -- what every stage1 owes ------------------------------------------------------------
def _status_shows(world: World, name: str, code: int) -> None:
    """``rkt status`` of the pod whose UUID was saved as ``name`` says the app exited ``code``."""
    uuid = (world.scratch / f"{name}.uuid").read_text().strip()
    shown = world.run("status", uuid)
    if f"app-busybox={code}" not in shown.stdout.splitlines():
        raise CheckFailed(f"rkt status does not say app-busybox={code}: "
                          f"{' '.join(shown.stdout.split()) or last_line(shown.stderr)}")


@check("exit-code")
def exit_code(world: World) -> None:
    expect_lines(world.run_pod(f"--uuid-file-save={world.scratch / 'exit-code.uuid'}",
                               *sh("echo out; exit 3")), ["out"], code=3)
    _status_shows(world, "exit-code", 3)


@check("exit-code-signal")
def exit_code_signal(world: World) -> None:
    """An app killed by signal N exits 128+N (SIGUSR1: 138), as a shell reports it."""
    code = 128 + signal.SIGUSR1
    expect(world.run_pod(f"--uuid-file-save={world.scratch / 'exit-code-signal.uuid'}",
                         *sh("kill -USR1 $$; sleep 5")), code)
    _status_shows(world, "exit-code-signal", code)


@check("environment")
def environment(world: World) -> None:
    out = expect(world.run_pod("--set-env=CONFORMANCE_VAR=from flag", "--exec=/bin/env"))
    env = dict(line.partition("=")[::2] for line in out.splitlines())
    wanted = {"CONFORMANCE_VAR": "from flag", "IMAGE_VAR": "image", "AC_APP_NAME": "busybox"}
    wrong = {k: env.get(k) for k, v in wanted.items() if env.get(k) != v}
    if wrong:
        raise CheckFailed(f"the app's environment has {wrong}, expected {wanted}")
    if not env.get("PATH"):
        raise CheckFailed("the app has no PATH")


@check("user-group")
def user_group(world: World) -> None:
    """By name (the image's /etc/passwd and /etc/group) and by number."""
    expect_lines(world.run_pod("--user=user", "--group=users", "--supplementary-gids=2000",
                               *sh("id -u; id -g; id -G")), ["1000", "1000", "1000 2000"])
    expect_lines(world.run_pod("--user=4242", "--group=4343", *sh("id -u; id -g")),
                 ["4242", "4343"])


@check("etc-hosts")
def etc_hosts(world: World) -> None:
    """An app without /etc/hosts gets one naming localhost (appc-spec/OS-SPEC.md)."""
    out = expect(world.run_pod("--exec=/bin/cat", "--", "/etc/hosts"))
    if not any(line.split()[:1] == ["127.0.0.1"] and "localhost" in line.split()
               for line in out.splitlines()):
        raise CheckFailed(f"the app's /etc/hosts has no 127.0.0.1 localhost line: {out!r}")


@check("working-directory")
def working_directory(world: World) -> None:
    expect_lines(world.run_pod("--working-dir=/work", "--exec=/bin/pwd"), ["/work"])


# -- features a stage1 may declare unsupported ------------------------------------------
def _host_dir(world: World, name: str) -> Path:
    directory = world.scratch / name
    directory.mkdir()
    (directory / "in").write_text("from host\n")
    return directory


@probe("volumes")
def probe_volumes(world: World) -> subprocess.CompletedProcess[str]:
    return world.run_pod("--volume=v,kind=empty", "--mount=volume=v,target=/data",
                         "--exec=/bin/true")


@check("volume-host", "volumes")
def volume_host(world: World) -> None:
    rw, ro = _host_dir(world, "host-rw"), _host_dir(world, "host-ro")
    script = ("cat /rw/in; echo from pod > /rw/out; cat /ro/in; "
              "touch /ro/out 2>/dev/null && echo read-only volume is writable; true")
    expect_lines(world.run_pod(
        f"--volume=rw,kind=host,source={rw}", f"--volume=ro,kind=host,source={ro},readOnly=true",
        "--mount=volume=rw,target=/rw", "--mount=volume=ro,target=/ro", *sh(script)),
        ["from host", "from host"])
    if not (rw / "out").is_file() or (rw / "out").read_text() != "from pod\n":
        raise CheckFailed("what the app wrote to its host volume is not on the host")
    if (ro / "out").exists():
        raise CheckFailed("the app wrote into a read-only host volume")


@check("volume-empty", "volumes")
def volume_empty(world: World) -> None:
    script = ("stat -c %a /scratch; echo kept > /scratch/f; cat /scratch/f; "
              "touch /locked/f 2>/dev/null && echo read-only volume is writable; true")
    expect_lines(world.run_pod(
        "--volume=scratch,kind=empty,mode=0750", "--volume=locked,kind=empty,readOnly=true",
        "--mount=volume=scratch,target=/scratch", "--mount=volume=locked,target=/locked",
        *sh(script)), ["750", "kept"])


@probe("read-only-rootfs")
def probe_read_only_rootfs(world: World) -> subprocess.CompletedProcess[str]:
    return world.run_pod("--readonly-rootfs", "--exec=/bin/true")


@check("read-only-rootfs", "read-only-rootfs")
def read_only_rootfs(world: World) -> None:
    result = world.run_pod("--readonly-rootfs", "--volume=v,kind=empty",
                           "--mount=volume=v,target=/data",
                           *sh("touch /data/ok && echo volume ok; touch /new-file"))
    if result.returncode == 0:
        raise CheckFailed("the app wrote /new-file into its read-only root")
    if result.stdout.splitlines() != ["volume ok"]:
        raise CheckFailed(f"the app printed {result.stdout.splitlines()}, expected "
                          f"['volume ok'] (a volume stays writable): {last_line(result.stderr)}")


@probe("event-handlers")
def probe_event_handlers(world: World) -> subprocess.CompletedProcess[str]:
    out = world.scratch / "probe-handlers"
    out.mkdir(exist_ok=True)
    return world.run_pod(f"--volume=out,kind=host,source={out}", image=HANDLERS_NAME)


@check("event-handlers", "event-handlers")
def event_handlers(world: World) -> None:
    out = world.scratch / "handlers"
    out.mkdir()
    expect_lines(world.run_pod(f"--volume=out,kind=host,source={out}", image=HANDLERS_NAME),
                 ["pre", "d"])  # /scratch: an empty volume made for the mount point
    log = (out / "log").read_text().split() if (out / "log").exists() else []
    if log != ["pre", "main", "post"]:
        raise CheckFailed(f"the handlers and the app ran as {log}, expected pre, main, post")


def _two_apps(world: World, first: str, second: str, *flags: str
              ) -> subprocess.CompletedProcess[str]:
    image = world.images[IMAGE_NAME]
    return world.run(
        *world.pod_args(), *flags, "--volume=shared,kind=empty",
        image, "--name=alpha", "--mount=volume=shared,target=/shared", *sh(first), "---",
        image, "--name=beta", "--mount=volume=shared,target=/shared", *sh(second))


@probe("multi-app")
def probe_multi_app(world: World) -> subprocess.CompletedProcess[str]:
    return _two_apps(world, "true", "true")


@check("multi-app", "multi-app")
def multi_app(world: World) -> None:
    # written aside and renamed: the other app never reads it created but still empty
    handshake = ("echo {me} > /shared/.{me}; mv /shared/.{me} /shared/{me}; i=0; "
                 "while [ ! -e /shared/{other} ]; do "
                 "i=$((i+1)); [ $i -gt 600 ] && exit 9; sleep 0.1; done; "
                 "echo {me} saw $(cat /shared/{other})")
    lines = sorted(expect(_two_apps(world, handshake.format(me="alpha", other="beta"),
                                    handshake.format(me="beta", other="alpha"))).splitlines())
    if lines != ["alpha saw beta", "beta saw alpha"]:
        raise CheckFailed(f"the two apps printed {lines}: they did not run side by side "
                          "sharing their volume")


@check("multi-app-exit-code", "multi-app")
def multi_app_exit_code(world: World) -> None:
    """The failing app's code is the pod's, and ``rkt status`` has each app's."""
    uuid_file = world.scratch / "multi-app-exit-code.uuid"
    # beta fails only once alpha has finished, or alpha may be stopped while starting
    wait_then_fail = ("i=0; while [ ! -e /shared/done ]; do i=$((i+1)); [ $i -gt 600 ] && "
                      "exit 9; sleep 0.1; done; sleep 1; exit 4")
    expect(_two_apps(world, "touch /shared/done", wait_then_fail,
                     f"--uuid-file-save={uuid_file}"), 4)
    shown = world.run("status", uuid_file.read_text().strip()).stdout.splitlines()
    if "app-alpha=0" not in shown or "app-beta=4" not in shown:
        raise CheckFailed(f"rkt status does not say app-alpha=0 and app-beta=4: "
                          f"{' '.join(shown)}")


@probe("hostname")
def probe_hostname(world: World) -> subprocess.CompletedProcess[str]:
    return world.run_pod("--hostname=conformance-pod", "--exec=/bin/hostname")


@check("hostname", "hostname")
def hostname(world: World) -> None:
    expect_lines(probe_hostname(world), ["conformance-pod"])
    uuid_file = world.scratch / "hostname.uuid"
    out = expect(world.run_pod(f"--uuid-file-save={uuid_file}", "--exec=/bin/hostname"))
    expected = f"rkt-{uuid_file.read_text().strip()}"
    if out.strip() != expected:
        raise CheckFailed(f"the pod's default hostname is {out.strip()!r}, expected {expected}")


# -- running pods: stop, enter ----------------------------------------------------------
class RunningPod:
    """``rkt run`` in the background until the app is ready."""

    def __init__(self, world: World, name: str, *args: str) -> None:
        self.world = world
        self.uuid_file = world.scratch / f"{name}.uuid"
        self.log = world.scratch / f"{name}.log"
        self.process = world.popen_pod(*args, uuid_file=self.uuid_file, log=self.log)
        deadline = time.monotonic() + world.timeout
        while not (self.uuid_file.exists() and self.uuid_file.read_text().strip()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise CheckFailed(f"the pod did not start: {self.stderr()}")
            time.sleep(0.05)
        self.uuid = self.uuid_file.read_text().strip()
        ready = world.run("status", f"--wait-ready={int(world.timeout)}s", self.uuid)
        if ready.returncode != 0 or "state=running" not in ready.stdout:
            self.kill()
            raise CheckFailed(f"the pod never became ready: {last_line(ready.stderr)}")

    def stderr(self) -> str:
        return last_line(self.log.read_text(errors="replace"))

    def wait(self, what: str) -> int:
        try:
            return self.process.wait(timeout=self.world.end_timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise CheckFailed(f"rkt run did not end after {what}") from None

    def kill(self) -> None:
        if self.process.poll() is None:
            if hasattr(self, "uuid"):
                self.world.run("stop", "--force", self.uuid)
            self.process.kill()
        self.process.wait()

    def status(self) -> dict[str, object]:
        shown = self.world.run("status", f"--wait={int(self.world.end_timeout)}s",
                               "--format=json", self.uuid)
        try:
            record: dict[str, object] = json.loads(shown.stdout)
        except ValueError:
            raise CheckFailed(f"rkt status: {last_line(shown.stderr)}") from None
        return record


def _wait_for(path: Path, world: World) -> None:
    deadline = time.monotonic() + world.timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise CheckFailed(f"the app never wrote {path.name}")
        time.sleep(0.05)


def _stop(world: World, name: str, *flags: str) -> tuple[RunningPod, Path]:
    out = world.scratch / name
    out.mkdir()
    script = ("trap 'echo stopped > /out/trapped; exit 0' TERM; echo up > /out/up; "
              "while true; do sleep 0.1; done")
    pod = RunningPod(world, name, f"--volume=out,kind=host,source={out}",
                     "--mount=volume=out,target=/out", *sh(script))
    try:
        _wait_for(out / "up", world)
        stopped = world.run("stop", *flags, pod.uuid)
        if stopped.returncode != 0:
            raise CheckFailed(f"rkt stop {' '.join(flags)} exited {stopped.returncode}: "
                              f"{last_line(stopped.stderr)}")
        pod.wait(f"rkt stop {' '.join(flags)}".strip())
        state = pod.status().get("state")
        if state != "exited":
            raise CheckFailed(f"rkt status says {state} after the pod ended")
        return pod, out
    finally:
        pod.kill()


@check("stop", "stop")
def stop(world: World) -> None:
    _, out = _stop(world, "stop")
    if not (out / "trapped").exists():
        raise CheckFailed("the app never got its SIGTERM (its trap did not run)")
    _status_shows(world, "stop", 0)  # what its trap exited with


@check("stop-force", "stop")
def stop_force(world: World) -> None:
    _stop(world, "stop-force", "--force")


@check("pod-dies-with-rkt")
def pod_dies_with_rkt(world: World) -> None:
    """SIGKILL to ``rkt run`` ends the pod: the process a scheduler started is the pod."""
    # an unusual duration tells the app's own process from any other sleep
    duration = str(100000 + os.getpid() % 10000)
    pod = RunningPod(world, "killed", "--exec=/bin/sleep", "--", duration)
    try:
        pod.process.kill()
        pod.process.wait()
        state = pod.status().get("state")  # --wait: until the pod's processes are gone
        if state != "exited":
            raise CheckFailed(f"rkt status says {state} after rkt run was SIGKILLed")
        # The lock goes with the last holder's files, and a PID namespace's other
        # processes are killed just after its init has closed them: give the
        # kernel a moment to finish, not a stage1 a second chance.
        deadline = time.monotonic() + 2
        while left := _left_of(pod.uuid, duration):
            if time.monotonic() > deadline:
                raise CheckFailed(f"pid {left[0]} of the pod outlived rkt run's SIGKILL")
            time.sleep(0.02)
    finally:
        pod.kill()


def _left_of(uuid: str, duration: str) -> list[int]:
    return [pid for pid in _pids()
            if _names(pid, uuid) or _names(pid, f"sleep\0{duration}\0")]


def _pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def _names(pid: int, text: str) -> bool:
    try:
        return text.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


@check("enter", "enter")
def enter(world: World) -> None:
    pod = RunningPod(world, "enter", "--exec=/bin/sleep", "--", "1000")
    try:
        entered = world.run("enter", pod.uuid, "/bin/sh", "-c",
                            "cat /etc/conformance; echo $((6*7)); exit 7")
        expect_lines(entered, [IMAGE_TOKEN, "42"], code=7)
    finally:
        pod.kill()


# -- the terminal ------------------------------------------------------------------------
class Terminal:
    """``rkt run`` with a pseudo-terminal for stdin, stdout and stderr."""

    def __init__(self, world: World, *args: str) -> None:
        import pty

        self.primary, secondary = pty.openpty()
        self.seen = b""
        self.world = world
        try:
            self.process = subprocess.Popen(
                world.command(*world.pod_args(), world.images[IMAGE_NAME], *args),
                stdin=secondary, stdout=secondary, stderr=secondary, start_new_session=True)
        finally:
            os.close(secondary)

    def read_until(self, marker: bytes) -> None:
        deadline = time.monotonic() + self.world.timeout
        while marker not in self.seen:
            if time.monotonic() > deadline or self.process.poll() is not None:
                tail = self.seen.decode(errors="replace").strip().splitlines()[-1:]
                raise CheckFailed(f"the terminal never showed {marker.decode()!r} "
                                  f"(last: {tail})")
            ready, _, _ = select.select([self.primary], [], [], 0.2)
            if ready:
                try:
                    self.seen += os.read(self.primary, 4096)
                except OSError:
                    continue

    def write(self, data: bytes) -> None:
        os.write(self.primary, data)

    def wait(self, what: str, timeout: float | None = None) -> int:
        deadline = time.monotonic() + (timeout or self.world.timeout)
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                raise CheckFailed(f"rkt run did not end after {what}")
            ready, _, _ = select.select([self.primary], [], [], 0.2)
            if ready:  # keep draining, so the pod never blocks on a full terminal
                try:
                    self.seen += os.read(self.primary, 4096)
                except OSError:
                    time.sleep(0.1)
        return self.process.returncode

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.primary)


@check("interactive", "interactive")
def interactive(world: World) -> None:
    terminal = Terminal(world, "--interactive", "--exec=/bin/sh", "--", "-i")
    try:
        terminal.read_until(b"# ")
        terminal.write(b"echo $((6*7))\n")
        terminal.read_until(b"42")
        terminal.write(b"exit 5\n")
        code = terminal.wait("exit 5")
        if code != 5:
            raise CheckFailed(f"rkt run exited {code} after the shell's exit 5")
    finally:
        terminal.close()


@check("ctrl-bracket", "interactive")
def ctrl_bracket(world: World) -> None:
    """Ctrl+] three times within a second kills the pod, interactive or not."""
    terminal = Terminal(world, *sh("echo started; exec sleep 1000"))
    try:
        terminal.read_until(b"started")
        terminal.write(b"\x1d\x1d\x1d")
        terminal.wait("Ctrl+] three times", timeout=world.end_timeout)
    finally:
        terminal.close()


# -- isolators ---------------------------------------------------------------------------
def _cap_sets(output: str) -> dict[str, int]:
    sets = {}
    for line in output.splitlines():
        name, _, value = line.partition(":")
        if name.startswith("Cap"):
            sets[name] = int(value.strip(), 16)
    return sets


CHOWN = "touch /tmp/f && chown 1000 /tmp/f && echo chowned; grep ^Cap /proc/self/status"


@probe("capabilities")
def probe_capabilities(world: World) -> subprocess.CompletedProcess[str]:
    return world.run_pod("--caps-retain=CAP_CHOWN", "--exec=/bin/true")


@check("capabilities-retain", "capabilities")
def capabilities_retain(world: World) -> None:
    result = world.run_pod("--caps-retain=CAP_CHOWN,CAP_NET_BIND_SERVICE", *sh(CHOWN))
    out = expect(result)
    if "chowned" not in out.splitlines():
        raise CheckFailed(f"CAP_CHOWN was retained but chown failed: {last_line(result.stderr)}")
    sets = _cap_sets(out)
    if sets.get("CapBnd") != 0x401 or sets.get("CapEff") != 0x401:
        raise CheckFailed(f"the app's bounding/effective sets are {sets.get('CapBnd', 0):#x}/"
                          f"{sets.get('CapEff', 0):#x}, expected 0x401 (CHOWN, NET_BIND_SERVICE)")


@check("capabilities-remove", "capabilities")
def capabilities_remove(world: World) -> None:
    result = world.run_pod("--caps-remove=CAP_CHOWN", *sh(CHOWN))
    if "chowned" in result.stdout.splitlines():
        raise CheckFailed("the app could chown with CAP_CHOWN removed")
    sets = _cap_sets(result.stdout)
    if not sets or any(value & 1 for value in sets.values()):
        raise CheckFailed(f"CAP_CHOWN is still in the app's sets: {sets}")
    if not sets.get("CapEff"):
        raise CheckFailed("the root app has no capabilities left at all")


@probe("memory-limit")
def probe_memory_limit(world: World) -> subprocess.CompletedProcess[str]:
    return world.run_pod("--memory=64M", "--exec=/bin/true")


@check("memory-limit", "memory-limit")
def memory_limit(world: World) -> None:
    from rkt.pod.cgroups import detect_host

    host = detect_host()
    if host is None or not any("memory" in h.controllers for h in host.hierarchies):
        raise CheckSkipped("this host has no memory cgroup controller")
    # busybox has no allocator: dd's 200M block is one buffer
    result = world.run_pod("--memory=64M", "--exec=/bin/dd", "--", "if=/dev/zero", "bs=200M",
                           "count=1", "of=/dev/null")
    if result.returncode != 137 or "memory limit" not in result.stderr:
        raise CheckFailed(f"a 200M allocation under --memory=64M exited {result.returncode}, "
                          f"expected 137 and rkt naming the limit: {last_line(result.stderr)}")


# -- networks (network_modes) ------------------------------------------------------------
def _netns_of_app(world: World, net: str) -> tuple[str, list[str]]:
    out = expect(world.run_pod(*sh("readlink /proc/self/ns/net; ls /sys/class/net"), net=net))
    lines = out.split()
    return (lines[0] if lines else ""), sorted(lines[1:])


@check("net-host", "net-host")
def net_host(world: World) -> None:
    namespace, _ = _netns_of_app(world, "host")
    if namespace != os.readlink("/proc/self/ns/net"):
        raise CheckFailed(f"--net=host: the app's network namespace is {namespace}, "
                          "not the host's")


@check("net-none", "net-none")
def net_none(world: World) -> None:
    namespace, links = _netns_of_app(world, "none")
    if namespace == os.readlink("/proc/self/ns/net"):
        raise CheckFailed("--net=none: the app shares the host's network namespace")
    if links != ["lo"]:
        raise CheckFailed(f"--net=none: the app sees interfaces {links}, expected lo only")


@check("net-contained", "net-contained", last=True)  # its clean-up runs rkt gc
def net_contained(world: World) -> None:
    from rkt.conformance.network import private_network

    with private_network(world) as (name, subnet):
        out = expect(world.run_pod(*sh("ip -4 -o addr"), net=name))
        for line in out.splitlines():
            fields = line.split()
            if len(fields) > 3 and fields[1] == "eth0" and fields[2] == "inet":
                address = ipaddress.ip_address(fields[3].split("/")[0])
                if address not in subnet:
                    raise CheckFailed(f"eth0 has {address}, outside the network's {subnet}")
                return
        raise CheckFailed(f"no IPv4 eth0 in the pod on network {name}: {out.split()}")


# -- gc, last: it collects every pod of the world ----------------------------------------
@check("gc", last=True)
def gc(world: World) -> None:
    expect(world.run_pod(*sh("echo done")))
    collected = world.run("gc", "--grace-period=0s")
    if collected.returncode != 0:
        raise CheckFailed(f"rkt gc exited {collected.returncode}: {last_line(collected.stderr)}")
    left = sorted(p.name for p in (world.data_dir / "pods").glob("*/*"))
    if left:
        raise CheckFailed(f"rkt gc left {len(left)} pod director{'y' if len(left) == 1 else 'ies'}")
    if world.mounts():
        raise CheckFailed(f"mounts left after rkt gc: {world.mounts()[0]}")
    if world.processes():
        raise CheckFailed(f"processes left after rkt gc: pid {world.processes()[0]}")
