"""The fly stage1: one app, chrooted, in the host's namespaces (rkt's ``stage1-fly``).

No container, no VM: the supervisor runs in a fork of rkt on the host and starts
the app with its own mount namespace (so its mounts vanish with it) pivoted
into the app's rootfs, sharing the host's network, PID, IPC and UTS
namespaces. Useful where isolation is done elsewhere (kubelet, systemd units).
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

from rkt.api import (
    INTERFACE_VERSION,
    PID_FILE,
    ForkedStage1,
    Pod,
    PodRuntime,
    ResolvedApp,
    ResolvedPod,
    UsageError,
    build_job,
    enter,
    get_logger,
    host_resolv_conf,
    overlay_on_host,
    run_supervisor,
    run_with_console,
    running_app_pid,
    volume_host_path,
    write_job,
)

LOG = get_logger(__name__)


class FlyStage1:
    name = "fly"
    interface_version = INTERFACE_VERSION
    #: no namespaces of its own: the host's network, always (and by default)
    network_modes = frozenset({"host"})
    #: what the conformance suite need not check (rkt.api.STAGE1_FEATURES)
    unsupported = {
        "multi-app": "fly runs exactly one app per pod",
        "hostname": "fly shares the host's UTS namespace, so the host's hostname",
    }

    def build_image(self, rootfs: Path) -> None:
        del rootfs  # the common skeleton is all fly needs

    def run(self, pod: Pod, resolved: ResolvedPod, runtime: PodRuntime) -> int:
        if len(resolved.apps) != 1:
            raise UsageError("the fly stage1 runs exactly one app per pod")
        if runtime.hostname is not None:
            # no UTS namespace: naming the pod would rename the host
            raise UsageError("the fly stage1 shares the host's hostname; --hostname cannot "
                             "be honoured")
        rootfs = pod.stage1_rootfs()
        job = build_job(
            # the app sees the host's hostname: /etc/hosts names that one, not rkt-<uuid>
            pod, resolved, runtime._replace(hostname=os.uname().nodename), mode="fly",
            app_root=lambda app: str(rootfs / "opt" / "stage2" / app.name / "rootfs"),
            volume_source=lambda volume: volume_host_path(pod, volume),
            overlay=overlay_on_host(pod),
            status_dir=str(rootfs / "rkt" / "status"),
            pids_dir=str(rootfs / "rkt" / "pids"),
            # the host's network, so the host's resolver (when the image has none)
            resolv_conf=host_resolv_conf(),
            # the app too dies with rkt: fly has no PID namespace to end it
            die_with_parent=True,
        )
        spec = write_job(pod, job)
        if pod.lock_fd is not None:
            os.set_inheritable(pod.lock_fd, True)

        def record(process: ForkedStage1) -> None:
            tmp = pod.path / f".{PID_FILE}.tmp"
            tmp.write_text(str(process.pid))
            os.rename(tmp, pod.path / PID_FILE)

        def kill(process: ForkedStage1) -> None:
            self._kill_all(pod, process.pid)

        # The supervisor runs in a fork of rkt, not in an interpreter of its own (the
        # start-up of a second Python was half of a fly pod's start: issue 14); it is
        # the same stdlib-only code the stage1 image carries. It mounts the app's
        # overlay and volumes as the job says.
        LOG.debug("running the supervisor for %s in a fork of rkt", spec)
        return run_with_console(
            lambda: run_supervisor(str(spec)), interactive=runtime.interactive, kill=kill,
            pass_fds=(pod.lock_fd,) if pod.lock_fd is not None else (), on_start=record,
        )

    @staticmethod
    def _app_pids(pod: Pod) -> list[int]:
        pids = []
        for entry in (pod.stage1_rootfs() / "rkt" / "pids").glob("*"):
            try:
                pids.append(int(entry.read_text()))
            except ValueError:
                continue
        return pids

    def _kill_all(self, pod: Pod, supervisor_pid: int) -> None:
        for pid in [*self._app_pids(pod), supervisor_pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def enter(self, pod: Pod, app: ResolvedApp, command: list[str]) -> int:
        return enter(running_app_pid(pod, app.name), app, command)

    def stop(self, pod: Pod, *, force: bool) -> None:
        supervisor = pod.pid()
        if supervisor is None:
            return
        if force:
            self._kill_all(pod, supervisor)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(supervisor, signal.SIGTERM)

    def gc(self, pod: Pod) -> None:
        del pod  # the app's mounts lived in its own mount namespace
