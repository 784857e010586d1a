"""The OCI stage1: each app of a pod is an OCI bundle, run by an OCI runtime (runc).

How a pod is laid out (docs/oci.md):

- a *pod holder*: ``unshare`` makes the pod's PID, IPC, UTS and mount namespaces,
  whose PID 1 is a few lines of Python that reap orphans. It is the pod's
  process (``<pod>/pid``): killing it ends every app, since they all live in its
  PID namespace. The apps' overlays are mounted in its mount namespace, so
  nothing is left mounted on the host however the pod ends.
- each app: ``<pod>/oci/<app>/config.json`` (``bundle.py``), run with
  ``<runtime> run`` (foreground: its exit status is the app's, 128 + N for a
  signal) from inside the holder's mount namespace, joining the holder's PID,
  IPC and UTS namespaces and the network namespace stage0 prepared, in the
  app's cgroup that stage0 made (``cgroupsPath``).

The runtime's state lives in ``<pod>/oci/state`` (``--root``), shared with no
one; ``gc`` deletes whatever a crashed pod left there.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rkt.api import (
    INTERFACE_VERSION,
    PID_FILE,
    PPID_FILE,
    EscapeDetector,
    PlacedApp,
    Pod,
    PodCgroups,
    PodError,
    PodRuntime,
    ResolvedApp,
    ResolvedPod,
    Stage1Error,
    UsageError,
    build_job,
    children,
    enter,
    get_logger,
    host_resolv_conf,
    oom_kill_count,
    overlay_on_host,
    run_with_console,
    spawn_stage1,
    volume_host_path,
)
from rkt_stage1_oci.bundle import app_config
from rkt_stage1_oci.runtime import (
    IMAGE_RUNTIME_FILE,
    POD_DIR,
    OciRuntime,
    find_runtime,
    remove_tree,
    runtime_name,
    which,
)

LOG = get_logger(__name__)

#: PID 1 of the pod's PID namespace: it only reaps the orphans it inherits
HOLDER = """
import os, time
while True:
    try:
        os.wait()
    except ChildProcessError:
        time.sleep(1)
"""

#: seconds between a stop's SIGTERM and the SIGKILL of whatever still runs, as
#: the shared supervisor's ``stop_timeout``
STOP_TIMEOUT = 10.0
#: ``<pod>/oci/cgroup``: the pod's cgroup path, and the directories stage0 made
CGROUP_RECORD = "cgroup"
PRE_START, POST_STOP = "pre-start", "post-stop"
#: an app whose runtime never started it (a bad exec, a mount that failed)
SETUP_FAILED = 254


class OciStage1:
    name = "oci"
    interface_version = INTERFACE_VERSION
    #: the apps join the namespace stage0 prepared, or the host's network
    network_modes = frozenset({"host", "none", "contained"})

    def __init__(self) -> None:
        self.options: dict[str, str] = {}
        self._stopping = False
        self._cgroups: PodCgroups | None = None

    # -- the image -----------------------------------------------------------------------
    def configure(self, options: Mapping[str, str]) -> None:
        """``stage1.d``'s ``options.oci``: ``runtime``, the OCI runtime to run apps with."""
        unknown = set(options) - {"runtime"}
        if unknown:
            raise UsageError(f"stage1.d options.oci.{sorted(unknown)[0]}: unknown option "
                             "(known: runtime)")
        self.options = dict(options)

    def build_image(self, rootfs: Path) -> None:
        chosen = self.options.get("runtime", "").strip()
        if chosen:
            (rootfs / IMAGE_RUNTIME_FILE).write_text(chosen + "\n")

    # -- running -------------------------------------------------------------------------
    def run(self, pod: Pod, resolved: ResolvedPod, runtime: PodRuntime) -> int:
        _refuse_what_is_not_done(resolved)
        oci = OciRuntime(find_runtime(runtime_name(pod)), pod.path)
        for tool in ("unshare", "nsenter"):
            if which(tool) is None:
                raise Stage1Error(f"{tool} is not installed (Debian package util-linux)")
        (pod.path / POD_DIR).mkdir(exist_ok=True)
        oci.state_root.mkdir(exist_ok=True)
        oci.record(pod)
        self._cgroups = runtime.cgroups
        if runtime.cgroups is not None:
            # runc makes each app's cgroup in every hierarchy, and the pod's directory
            # above it where stage0 made none: gc removes those (below)
            pod_cgroup = _below_cgroup_root(runtime.cgroups.pod_dirs[0])
            (pod.path / POD_DIR / CGROUP_RECORD).write_text(
                json.dumps({"pod": pod_cgroup, "stage0": list(runtime.cgroups.pod_dirs)}))
        rootfs = pod.stage1_rootfs()
        status_dir = rootfs / "rkt" / "status"
        status_dir.mkdir(parents=True, exist_ok=True)
        job = build_job(
            pod, resolved, runtime, mode="fly",
            app_root=lambda app: str(rootfs / "opt" / "stage2" / app.name / "rootfs"),
            volume_source=lambda volume: volume_host_path(pod, volume),
            overlay=overlay_on_host(pod),
            status_dir=str(status_dir),
            resolv_conf=None if runtime.private_network else host_resolv_conf(),
        )
        for placed in job.apps:
            self._write_bundle(pod, placed, job.hostname, runtime)

        holder = self._start_holder(pod)
        try:
            init = _wait_for_init(holder)
            _write_atomically(pod.path / PID_FILE, str(init))
            for placed in job.apps:
                if placed.overlay is not None:
                    _mount_overlay(init, placed)
            return self._run_apps(pod, oci, job.apps, init, holder, runtime.interactive)
        finally:
            with contextlib.suppress(ProcessLookupError):
                holder.kill()  # unshare's --kill-child takes the holder's PID 1 along
            holder.wait()
            for container in oci.containers():
                oci.forget(container)

    def _write_bundle(self, pod: Pod, placed: PlacedApp, hostname: str,
                      runtime: PodRuntime) -> None:
        """The app's bundle, and one per event handler: the same container with the
        handler's command (``<app>.pre-start``, ``<app>.post-stop``)."""
        app = placed.app
        etc_dir = pod.path / POD_DIR / app.name / "etc"
        etc_dir.mkdir(parents=True, exist_ok=True)
        _write_etc_files(placed)
        for name, content in placed.etc_overrides:
            (etc_dir / name).write_text(content)
        # the holder's namespaces, by its PID 1; the paths are filled in at start
        namespaces: dict[str, str | None] = {"pid": "@pid", "ipc": "@ipc", "uts": "@uts",
                                             "mount": None}
        if runtime.network.netns is not None:
            namespaces["network"] = runtime.network.netns
        config = app_config(
            placed, hostname=hostname, namespaces=namespaces,
            cgroups_path=_cgroups_path(runtime.cgroups, app),
            protect_kernel_paths="paths" not in runtime.insecure,
            etc_override_dir=str(etc_dir),
            terminal=runtime.interactive and sys.stdin.isatty(),
        )
        for kind, command in (("app", app.exec), (PRE_START, app.pre_start),
                              (POST_STOP, app.post_stop)):
            if command:
                bundle = pod.path / POD_DIR / _container_id(app.name, kind)
                bundle.mkdir(exist_ok=True)
                config["process"]["args"] = list(command)
                (bundle / "config.json").write_text(json.dumps(config, indent=1))
                config["process"]["terminal"] = False  # only the app gets the terminal

    def _start_holder(self, pod: Pod) -> subprocess.Popen[bytes]:
        command = ["unshare", "--mount", "--propagation=private", "--pid", "--fork",
                   "--kill-child", "--ipc", "--uts", "--",
                   sys.executable, "-I", "-S", "-c", HOLDER]
        pass_fds = (pod.lock_fd,) if pod.lock_fd is not None else ()
        if pod.lock_fd is not None:
            os.set_inheritable(pod.lock_fd, True)
        self._stopping = False
        try:
            # a stop signal to rkt stops the apps (stop_apps); should they outlive
            # it, rkt kills this process, and with it the PID namespace
            holder = spawn_stage1(command, stop=lambda: self._stop_apps(pod), cwd=pod.path,
                                  pass_fds=pass_fds, stdin=subprocess.DEVNULL)
        except OSError as exc:
            raise Stage1Error(f"cannot start unshare: {exc.strerror}") from exc
        # `rkt stop` signals this process: its stop signal becomes stop_apps
        (pod.path / PPID_FILE).write_text(str(os.getpid()))
        return holder

    def _stop_apps(self, pod: Pod) -> None:
        self._stopping = True
        oci = OciRuntime.recorded(pod)
        if oci is not None:
            for container in oci.containers():
                oci.kill(container, "TERM")

    def _start(self, pod: Pod, oci: OciRuntime, init: int,
               container: str) -> subprocess.Popen[bytes]:
        command = _run_command(pod, oci, init, container)
        try:
            return spawn_stage1(command, helper=True, stdin=subprocess.DEVNULL)
        except OSError as exc:
            raise Stage1Error(f"cannot start {oci.binary}: {exc.strerror}") from exc

    def _run_interactive(self, pod: Pod, oci: OciRuntime, app: ResolvedApp, init: int) -> int:
        """The pod's one app with the user's terminal: rkt's console relays it and
        watches for Ctrl+]; the runtime gives the app a terminal of its own."""
        if app.pre_start:
            container = _container_id(app.name, PRE_START)
            code = self._container_ended(
                pod, oci, container, self._start(pod, oci, init, container).wait())
            oci.forget(container)
            if code != 0:
                print(f'rkt: app "{app.name}": pre-start handler failed with exit code '
                      f"{code}", file=sys.stderr, flush=True)
                return code
        def kill(process: subprocess.Popen[bytes]) -> None:
            del process  # the runtime: the app dies with the pod's PID namespace
            _kill(init, signal.SIGKILL)

        code = run_with_console(
            _run_command(pod, oci, init, app.name), interactive=True, kill=kill,
            stop=lambda: self._stop_apps(pod))
        return self._container_ended(pod, oci, app.name, code)

    def _run_apps(self, pod: Pod, oci: OciRuntime, apps: tuple[PlacedApp, ...], init: int,
                  holder: subprocess.Popen[bytes], interactive: bool) -> int:
        if interactive:
            [placed] = apps  # stage0 gives the terminal to a pod of one app only
            code = self._record(pod, placed.app.name,
                                self._run_interactive(pod, oci, placed.app, init))
            oci.forget(placed.app.name)
            self._run_post_stop(pod, oci, apps, init, holder)
            return code
        with _EscapeWatch() as escape:
            code = self._run_containers(pod, oci, apps, init, holder, escape)
        self._run_post_stop(pod, oci, apps, init, holder)
        return code

    def _run_containers(self, pod: Pod, oci: OciRuntime, apps: tuple[PlacedApp, ...],
                        init: int, holder: subprocess.Popen[bytes],
                        escape: _EscapeWatch) -> int:
        running: dict[str, tuple[str, str, subprocess.Popen[bytes]]] = {}

        def start(app: ResolvedApp, kind: str) -> None:
            container = _container_id(app.name, kind)
            running[container] = (app.name, kind, self._start(pod, oci, init, container))

        by_name = {placed.app.name: placed.app for placed in apps}
        for placed in apps:
            start(placed.app, PRE_START if placed.app.pre_start else "app")
        pod_code = 0
        kill_at: float | None = None
        while running:
            for container, (name, kind, process) in list(running.items()):
                code = process.poll()
                if code is None:
                    continue
                del running[container]
                code = self._container_ended(pod, oci, container, code)
                if kind == PRE_START:
                    oci.forget(container)
                    if code == 0 and not self._stopping:
                        start(by_name[name], "app")
                        continue
                    if code == 0:
                        code = 128 + signal.SIGTERM  # stopped before it started
                    else:
                        print(f'rkt: app "{name}": pre-start handler failed with exit code '
                              f"{code}", file=sys.stderr, flush=True)
                code = self._record(pod, name, code)
                oci.forget(container)
                if code != 0 and not self._stopping and pod_code == 0:
                    pod_code = code
                    # one app failed: the others are stopped, as the supervisor does
                    self._stop_apps(pod)
            if self._stopping and kill_at is None:
                kill_at = time.monotonic() + STOP_TIMEOUT
            if kill_at is not None and time.monotonic() > kill_at and holder.poll() is None:
                LOG.debug("apps still running %.0f s after SIGTERM: killing the pod",
                          STOP_TIMEOUT)
                _kill(init, signal.SIGKILL)
                kill_at = float("inf")
            if escape.pressed(0.02):
                print("\r\nrkt: pod killed (Ctrl+] pressed three times)", file=sys.stderr)
                _kill(init, signal.SIGKILL)
        return pod_code

    def _run_post_stop(self, pod: Pod, oci: OciRuntime, apps: tuple[PlacedApp, ...],
                       init: int, holder: subprocess.Popen[bytes]) -> None:
        """Each app's post-stop handler, one after the other, once every app ended
        (best effort: not when the pod was killed, since its namespaces are gone)."""
        for placed in apps:
            if not placed.app.post_stop or holder.poll() is not None:
                continue
            container = _container_id(placed.app.name, POST_STOP)
            code = self._start(pod, oci, init, container).wait()
            self._container_ended(pod, oci, container, code)
            oci.forget(container)

    def _container_ended(self, pod: Pod, oci: OciRuntime, container: str, code: int) -> int:
        """A container's exit code (254 when the runtime never started it; it says
        why), read as the kernel reports it, before the runtime deletes it."""
        bundle = pod.path / POD_DIR / container
        if code < 0:
            code = 128 - code  # the runtime itself was killed
        if code != 0 and not (bundle / "pid").exists():
            error = oci.logged_error(bundle / "runtime.log") or (
                f"exit status {code} (its own message is above)")
            print(f'rkt: app "{container}": {os.path.basename(oci.binary)} could not start '
                  f"it: {error}", file=sys.stderr, flush=True)
            code = SETUP_FAILED
        return code

    def _record(self, pod: Pod, name: str, code: int) -> int:
        """Write an app's exit code (and an OOM kill); delete its container."""
        status_dir = pod.stage1_rootfs() / "rkt" / "status"
        if code == 128 + signal.SIGKILL:
            kills = _oom_kills(self._cgroups, name)
            if kills:
                # before the exit code, so whoever sees the code sees this too
                (status_dir / f"{name}-oom").write_text(str(kills))
        _write_atomically(status_dir / name, str(code))
        return code

    # -- other commands ------------------------------------------------------------------
    def enter(self, pod: Pod, app: ResolvedApp, command: list[str]) -> int:
        # rkt's contract: enter waits while a running pod is still starting its apps
        deadline = time.monotonic() + 10
        while (app_pid := _app_pid(pod, app.name)) is None:
            if time.monotonic() > deadline or not pod.is_locked_by_other():
                raise PodError(f'app "{app.name}" is not running')
            time.sleep(0.05)
        return enter(app_pid, app, command)

    def stop(self, pod: Pod, *, force: bool) -> None:
        if force:
            pid1 = pod.pid()
            if pid1 is not None:
                _kill(pid1, signal.SIGKILL)  # the PID namespace's init: every app dies
            return
        rkt_run = pod.read_int(PPID_FILE)
        if rkt_run is not None and _kill(rkt_run, signal.SIGTERM):
            return  # rkt stops the apps, and kills them after the timeout
        self._stop_apps(pod)

    def gc(self, pod: Pod) -> None:
        oci = OciRuntime.recorded(pod)
        if oci is not None and os.path.exists(oci.binary):
            for container in oci.containers():
                oci.delete(container)
        remove_tree(pod.path / POD_DIR / "state")
        _remove_runtime_cgroups(pod)


def _refuse_what_is_not_done(resolved: ResolvedPod) -> None:
    """A seccomp retain-set cannot hold exactly under an OCI runtime: runc installs
    the filter, then makes syscalls of its own (closing fds, its exec fifo, the Go
    runtime's) before it execs the app, which a retain-set would have to allow."""
    for app in resolved.apps:
        if app.seccomp is not None and app.seccomp.mode == "retain" and app.seccomp.program:
            raise UsageError(f'app "{app.name}": the oci stage1 does not support seccomp '
                             "retain-sets (the OCI runtime makes syscalls of its own after "
                             "the filter is in); use a remove-set or another stage1")


def _cgroups_path(cgroups: PodCgroups | None, app: ResolvedApp) -> str | None:
    """The app's cgroup (stage0 made it and wrote its limits) below the hierarchy's root."""
    if cgroups is None:
        return None
    return _below_cgroup_root(cgroups.app_dirs(app.name)[0])


def _cgroup_mounts() -> list[str]:
    """The mount points of the cgroup (v1 and v2) file systems."""
    points = []
    with open("/proc/self/mountinfo") as mounts:
        for line in mounts:
            fields = line.split()
            if fields[fields.index("-") + 1] in ("cgroup", "cgroup2"):
                points.append(fields[4])
    return points


def _below_cgroup_root(directory: str) -> str:
    """``directory`` as a path below its cgroup hierarchy's root (OCI's ``cgroupsPath``)."""
    holding = [point for point in _cgroup_mounts()
               if directory == point or directory.startswith(point + "/")]
    if not holding:
        raise Stage1Error(f"cgroup {directory} is on no cgroup file system")
    return "/" + os.path.relpath(directory, max(holding, key=len))


def _remove_runtime_cgroups(pod: Pod) -> None:
    """rmdir what the runtime made of the pod's cgroup in the hierarchies stage0 does
    not use (stage0 removes its own); a directory still in use is left alone."""
    try:
        record = json.loads((pod.path / POD_DIR / CGROUP_RECORD).read_text())
        pod_cgroup, stage0 = str(record["pod"]), {str(d) for d in record["stage0"]}
    except (OSError, ValueError, KeyError, TypeError):
        return
    for point in _cgroup_mounts():
        top = Path(point + pod_cgroup)
        if str(top) in stage0 or not top.is_dir():
            continue
        for directory in sorted((p for p in top.rglob("*") if p.is_dir()),
                                key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                directory.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()


def _oom_kills(cgroups: PodCgroups | None, name: str) -> int:
    """The OOM killer's count for the app (read before ``delete``)."""
    return oom_kill_count(cgroups.app_dirs(name) if cgroups is not None else ())


class _EscapeWatch:
    """Ctrl+] three times within a second on rkt's terminal kills the pod, as on every
    stage1 (``rkt.console`` does it for a pod with the terminal; here no app reads it,
    so this only watches it, with the same :class:`rkt.api.EscapeDetector`)."""

    def __init__(self) -> None:
        self.fd: int | None = None
        self.saved: list[Any] | None = None
        self.detector = EscapeDetector()

    def __enter__(self) -> _EscapeWatch:
        with contextlib.suppress(OSError, ValueError):
            if sys.stdin.isatty():
                import termios  # only with a terminal: a pod start from a script needs neither
                import tty

                self.fd = sys.stdin.fileno()
                self.saved = termios.tcgetattr(self.fd)
                tty.setcbreak(self.fd)  # no echo, no line buffering
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None and self.saved is not None:
            import termios

            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)

    def pressed(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for input; True once the escape was typed."""
        if self.fd is None:
            time.sleep(timeout)
            return False
        try:
            ready, _, _ = select.select([self.fd], [], [], timeout)
        except InterruptedError:
            return False
        data = os.read(self.fd, 1024) if ready else b""
        if ready and not data:
            self.fd = None  # end of input: nothing more to watch
        return self.detector.feed(data)


def _run_command(pod: Pod, oci: OciRuntime, init: int, container: str) -> list[str]:
    """``<runtime> run`` of a bundle, in the holder's mount namespace (the overlays)."""
    bundle = pod.path / POD_DIR / container
    _fill_namespace_paths(bundle / "config.json", init)
    run = ["run", "--bundle", str(bundle), "--pid-file", str(bundle / "pid")]
    if oci.is_runc:
        run.append("--keep")  # else runc removes the app's cgroup, which is stage0's
    command = ["nsenter", f"--target={init}", "--mount", "--",
               *oci.command(*run, container, log=bundle / "runtime.log")]
    LOG.debug("running %s", " ".join(command))
    return command


def _container_id(app_name: str, kind: str) -> str:
    """The runtime's name of an app's container (AC Names never hold a dot)."""
    return app_name if kind == "app" else f"{app_name}.{kind}"


def _write_etc_files(placed: PlacedApp) -> None:
    """``/etc/hosts`` (and ``resolv.conf``) into the app's rootfs where its image has
    none, before anything is mounted, as the supervisor writes them: into the
    overlay's upper directory, or into the copy of ``--no-overlay``."""
    if placed.overlay is not None:
        lower_etc = Path(placed.overlay.lower) / "etc"
        target = Path(placed.overlay.upper) / "etc"
    else:
        lower_etc = Path(placed.root) / "etc"
        target = lower_etc
    if lower_etc.is_symlink() or (lower_etc.exists() and not lower_etc.is_dir()):
        return  # an /etc elsewhere: writing through the link could leave the rootfs
    for name, content in placed.etc_files:
        if os.path.lexists(lower_etc / name) or os.path.lexists(target / name):
            continue
        if not target.exists():
            target.mkdir(mode=0o755, parents=True)
        (target / name).write_text(content)
        os.chmod(target / name, 0o644)


def _mount_overlay(init: int, placed: PlacedApp) -> None:
    overlay = placed.overlay
    assert overlay is not None
    options = f"lowerdir={overlay.lower},upperdir={overlay.upper},workdir={overlay.work}"
    result = subprocess.run(
        ["nsenter", f"--target={init}", "--mount", "--",
         "mount", "-t", "overlay", "overlay", "-o", options, placed.root],
        capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise Stage1Error(f'app "{placed.app.name}": cannot mount its overlay: '
                          + " ".join(result.stderr.split()))


def _fill_namespace_paths(config_file: Path, init: int) -> None:
    config = json.loads(config_file.read_text())
    for namespace in config["linux"]["namespaces"]:
        path = namespace.get("path")
        if isinstance(path, str) and path.startswith("@"):
            namespace["path"] = f"/proc/{init}/ns/{path[1:]}"
    config_file.write_text(json.dumps(config, indent=1))


def _wait_for_init(holder: subprocess.Popen[bytes], timeout: float = 10) -> int:
    """The host PID of the holder's PID 1 (unshare's child)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        below = children(holder.pid)
        if below:
            return below[0]
        if holder.poll() is not None:
            raise Stage1Error(f"unshare could not make the pod's namespaces "
                              f"(exit status {holder.returncode})")
        time.sleep(0.002)
    raise Stage1Error("unshare did not start the pod's PID 1 in time")


def _app_pid(pod: Pod, name: str) -> int | None:
    try:
        pid = int((pod.path / POD_DIR / name / "pid").read_text())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.rename(tmp, path)


def _kill(pid: int, signum: int) -> bool:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return False
    return True
