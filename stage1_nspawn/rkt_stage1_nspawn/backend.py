"""The nspawn stage1: each pod is a systemd-nspawn container.

The container's root is the pod's private copy of the stage1 rootfs; the host's
``/usr`` is bound read-only into it so the supervisor runs with the system
Python (apps never see it: each one is ``pivot_root``-ed into its own rootfs).
Apps' overlays are mounted by nspawn itself (``--overlay``), inside the
container's mount namespace, so nothing is left mounted on the host when the pod
ends, however it ends.

On hosts without systemd as PID 1, nspawn must not try to register with
machined or create a scope: ``--register=no --keep-unit``.

nspawn's own seccomp filter is turned off (``SYSTEMD_SECCOMP=0``): each app
gets rkt's filter from the supervisor, as on every stage1, so the filter an app
runs under is exactly the one its isolators asked for (docs/isolators.md), and
``rkt enter`` can give an entered process the very same one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from rkt.api import (
    INTERFACE_VERSION,
    PID_FILE,
    PPID_FILE,
    SUPERVISOR_PATH,
    Pod,
    PodCgroups,
    PodRuntime,
    ResolvedApp,
    ResolvedPod,
    Stage1Error,
    build_job,
    children,
    enter,
    get_logger,
    host_resolv_conf,
    namespace_pids,
    running_app_pid,
    spawn_stage1,
    volume_host_path,
    write_job,
)

LOG = get_logger(__name__)

SYSTEM_PYTHON = "/usr/bin/python3"
#: where the pod's cgroup directories are bound inside the container, one per hierarchy
CGROUP_BINDS = "/rkt/cgroup"


#: compiles argv[1] to its __pycache__ for the running Python, validated by hash
_COMPILE = ("import py_compile, sys; py_compile.compile(sys.argv[1], doraise=True, "
            "invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)")
_SUPERVISOR_DIR, _, _SUPERVISOR_MODULE = f"/{SUPERVISOR_PATH}".removesuffix(".py").rpartition("/")
#: the container's command: the supervisor's main with its default job (/rkt/runtime.json)
_START_SUPERVISOR = (f"import sys; sys.path.insert(0, {_SUPERVISOR_DIR!r}); "
                     f"from {_SUPERVISOR_MODULE} import main; sys.exit(main(sys.argv))")

PROPAGATE_DIR = Path("/run/systemd/nspawn")


def prepare_host() -> None:
    """Give nspawn a tmpfs for its per-machine state when ``/run`` is not one.

    On hosts without systemd as PID 1 ``/run`` may be an ordinary disk
    directory; nspawn then refuses to clean up ``/run/systemd/nspawn/propagate``
    and says so on every exit. One tmpfs there (once per boot, shared by all
    pods, not a per-pod mount) is what a systemd host has anyway.
    """
    try:
        if PROPAGATE_DIR.exists() and os.path.ismount(PROPAGATE_DIR):
            return
        with open("/proc/self/mountinfo") as mounts:
            for line in mounts:
                fields = line.split()
                if fields[4] == "/run" and " - tmpfs " in line:
                    return
        PROPAGATE_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755,size=16m", "tmpfs",
                        str(PROPAGATE_DIR)], check=False, capture_output=True)
    except OSError:
        pass  # only the cosmetic warning is at stake


def _nspawn_binary() -> str:
    # not shutil.which: shutil imports bz2 and lzma, and a pod start needs neither
    found = next((path for path in (os.path.join(d, "systemd-nspawn") for d in
                                    os.environ.get("PATH", os.defpath).split(os.pathsep) if d)
                  if os.access(path, os.X_OK) and not os.path.isdir(path)), None)
    if found is None:
        raise Stage1Error(
            "systemd-nspawn is not installed (Debian package systemd-container)"
        )
    return found


class NspawnStage1:
    name = "nspawn"
    interface_version = INTERFACE_VERSION
    #: the container joins the namespace stage0 prepared (none, or CNI networks)
    network_modes = frozenset({"host", "none", "contained"})

    def build_image(self, rootfs: Path) -> None:
        """Beyond the common skeleton (nspawn and Python come from the host): the
        supervisor's bytecode for the host's Python, so no pod start compiles it.

        Checked against the source's hash, not its mtime (the image's files carry
        the archive's times); another Python, or none here at build time, just
        compiles the source as before.
        """
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                [SYSTEM_PYTHON, "-I", "-S", "-c", _COMPILE, str(rootfs / SUPERVISOR_PATH)],
                check=True, capture_output=True, timeout=60,
            )

    def _command(self, pod: Pod, resolved: ResolvedPod, runtime: PodRuntime) -> list[str]:
        rootfs = pod.stage1_rootfs()
        console = "interactive" if sys.stdin.isatty() and sys.stdout.isatty() else "pipe"
        command = [
            _nspawn_binary(), "--register=no", "--keep-unit", "--quiet",
            f"--directory={rootfs}", f"--machine=rkt-{pod.uuid}",
            f"--hostname={runtime.pod_hostname(pod.uuid)}",
            "--bind-ro=/usr", "--kill-signal=SIGTERM", f"--console={console}",
            # apps get their capability set from the supervisor; it needs them all
            "--capability=all",
        ]
        if runtime.network.netns is not None:
            command.append(f"--network-namespace-path={runtime.network.netns}")
        for app in resolved.apps:
            if app.overlay:
                upper = pod.path / "overlay" / app.tree / "upper" / app.name
                command.append(f"--overlay={app.lower}:{upper}:/opt/stage2/{app.name}/rootfs")
        for volume in resolved.volumes:
            flag = "--bind-ro" if volume.read_only else "--bind"
            recursive = "rbind" if volume.recursive else "norbind"
            source = volume_host_path(pod, volume)
            command.append(f"{flag}={source}:/rkt/volumes/{volume.name}:{recursive}")
        if runtime.cgroups is not None:
            # the container's /sys/fs/cgroup is read-only: the supervisor reaches the
            # apps' cgroups through these binds (see _cgroup_in_container)
            for index, pod_dir in enumerate(runtime.cgroups.pod_dirs):
                command.append(f"--bind={pod_dir}:{CGROUP_BINDS}/{index}")
        # imported rather than run as a script: a script is compiled on every start,
        # a module is loaded from the bytecode build_image left next to it
        command += ["--", SYSTEM_PYTHON, "-I", "-S", "-c", _START_SUPERVISOR]
        return command

    def run(self, pod: Pod, resolved: ResolvedPod, runtime: PodRuntime) -> int:
        # nspawn mounts the overlays (--overlay) and volumes (--bind) itself
        job = build_job(
            pod, resolved, runtime, mode="nspawn",
            app_root=lambda app: f"/opt/stage2/{app.name}/rootfs",
            volume_source=lambda volume: f"/rkt/volumes/{volume.name}",
            resolv_conf=None if runtime.private_network else host_resolv_conf(),
            cgroup_dir=_cgroup_in_container(runtime.cgroups),
            die_with_parent=True,
        )
        write_job(pod, job)
        prepare_host()
        command = self._command(pod, resolved, runtime)
        # the overlays and volume binds are nspawn flags: this line shows every mount
        LOG.debug("running %s", " ".join(command))
        pass_fds = (pod.lock_fd,) if pod.lock_fd is not None else ()
        if pod.lock_fd is not None:
            os.set_inheritable(pod.lock_fd, True)
        # rkt's stop signals reach nspawn as SIGTERM, which it turns into
        # --kill-signal for the supervisor; nspawn dies with rkt (spawn_stage1)
        # and the supervisor with nspawn (die_with_parent)
        try:
            process = spawn_stage1(command, pass_fds=pass_fds, cwd=pod.path,
                                   env=_nspawn_environment(runtime))
        except OSError as exc:
            raise Stage1Error(f"cannot start systemd-nspawn: {exc.strerror}") from exc
        (pod.path / PPID_FILE).write_text(str(process.pid))
        self._record_pid1(pod, process)
        return process.wait()

    @staticmethod
    def _record_pid1(pod: Pod, process: subprocess.Popen[bytes]) -> None:
        """Write ``pid``: the host PID of the container's PID 1.

        nspawn forks a short-lived helper before the container's init exists, so
        the first child seen is not necessarily it: wait for a process below
        nspawn that is PID 1 of its own PID namespace.
        """
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and process.poll() is None:
            pid1 = _find_namespace_init(process.pid)
            if pid1 is not None:
                tmp = pod.path / f".{PID_FILE}.tmp"
                tmp.write_text(str(pid1))
                os.rename(tmp, pod.path / PID_FILE)
                return
            time.sleep(0.005)

    def enter(self, pod: Pod, app: ResolvedApp, command: list[str]) -> int:
        return enter(running_app_pid(pod, app.name), app, command)

    def stop(self, pod: Pod, *, force: bool) -> None:
        if force:
            pid1 = pod.pid()
            if pid1 is not None:
                # Killing the PID namespace's init kills every process in it.
                _kill(pid1, signal.SIGKILL)
            return
        ppid = pod.read_int(PPID_FILE)
        if ppid is not None:
            _kill(ppid, signal.SIGTERM)  # nspawn turns it into --kill-signal for PID 1

    def gc(self, pod: Pod) -> None:
        del pod  # nothing outside the pod directory: nspawn's mounts died with it


def _cgroup_in_container(cgroups: PodCgroups | None) -> Callable[[str], str]:
    """A host cgroup directory of the pod as the supervisor sees it: below the
    bind of its pod directory (``/rkt/cgroup/<index>``)."""

    def place(host_dir: str) -> str:
        for index, pod_dir in enumerate(cgroups.pod_dirs if cgroups else ()):
            if host_dir == pod_dir or host_dir.startswith(pod_dir + "/"):
                return f"{CGROUP_BINDS}/{index}{host_dir[len(pod_dir):]}"
        raise Stage1Error(f"cgroup {host_dir} is not the pod's")

    return place


def _nspawn_environment(runtime: PodRuntime) -> dict[str, str]:
    # no seccomp filter of nspawn's own: the apps get exactly rkt's (see the module doc)
    env = {**os.environ, "SYSTEMD_SECCOMP": "0"}
    if runtime.cgroups is not None and runtime.cgroups.version == 2:
        # With cgroup v2's nsdelegate a process may move others only between
        # cgroups inside its cgroup namespace, and nspawn roots the container's
        # namespace at its own cgroup (the pod's stage1/), which the apps'
        # cgroups are beside, not below. (The v1 hierarchies have no such rule.)
        env["SYSTEMD_NSPAWN_USE_CGNS"] = "0"
    return env


def _find_namespace_init(root: int, depth: int = 3) -> int | None:
    """A descendant of ``root`` whose innermost PID is 1, searched breadth first."""
    level = children(root)
    for _ in range(depth):
        for pid in level:
            pids = namespace_pids(pid)
            if len(pids) > 1 and pids[-1] == 1:
                return pid
        level = [child for pid in level for child in children(pid)]
    return None


def _kill(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)
