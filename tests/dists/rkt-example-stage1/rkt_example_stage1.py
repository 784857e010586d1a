"""An example third-party stage1: each pod gets new PID, UTS and IPC namespaces from
util-linux's ``unshare``, no container manager at all, and rkt's shared supervisor
does the rest. About sixty lines, written against the typed stage1 contract
(``rkt.pod.contract``, interface version 3): see docs/stage1.md.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from rkt.api import (
    INTERFACE_VERSION,
    PID_FILE,
    PPID_FILE,
    SUPERVISOR_PATH,
    Pod,
    PodRuntime,
    ResolvedApp,
    ResolvedPod,
    build_job,
    children,
    enter,
    overlay_on_host,
    run_with_console,
    running_app_pid,
    volume_host_path,
    write_job,
)


class UnshareStage1:
    name = "unshare"
    interface_version = INTERFACE_VERSION

    def build_image(self, rootfs: Path) -> None:
        (rootfs / "rkt" / "README").write_text("pods isolated with unshare(1)\n")

    def run(self, pod: Pod, resolved: ResolvedPod, runtime: PodRuntime) -> int:
        rootfs = pod.stage1_rootfs()
        # the supervisor sees the host's files: host paths, and it mounts the overlays
        job = build_job(
            pod, resolved, runtime, mode="fly",
            app_root=lambda app: str(rootfs / "opt" / "stage2" / app.name / "rootfs"),
            volume_source=lambda volume: volume_host_path(pod, volume),
            overlay=overlay_on_host(pod),
            status_dir=str(rootfs / "rkt" / "status"), pids_dir=str(rootfs / "rkt" / "pids"),
            set_hostname=True,  # a new UTS namespace, and nobody else to name it
        )
        spec = write_job(pod, job)
        command = ["unshare", "--pid", "--fork", "--uts", "--ipc", "--kill-child", "--",
                   sys.executable, "-I", "-S", str(rootfs / SUPERVISOR_PATH), str(spec)]
        os.set_inheritable(pod.lock_fd, True)  # type: ignore[arg-type]

        def record(process: subprocess.Popen[bytes]) -> None:
            (pod.path / PPID_FILE).write_text(str(process.pid))
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and process.poll() is None:
                below = children(process.pid)
                if below:
                    (pod.path / PID_FILE).write_text(str(below[0]))
                    break
                time.sleep(0.005)

        # run_with_console starts it with spawn_stage1 (the pod dies with rkt) and
        # relays the terminal with the Ctrl+] escape, whose kill() ends unshare and,
        # through --kill-child, the pod's PID 1 and every app with it
        return run_with_console(
            command, interactive=runtime.interactive, on_start=record,
            kill=lambda process: process.kill(),
            stop=lambda: self.stop(pod, force=False),  # SIGTERM to rkt: to the pod's PID 1
            pass_fds=(pod.lock_fd,),  # type: ignore[arg-type]
        )

    def enter(self, pod: Pod, app: ResolvedApp, command: list[str]) -> int:
        # waits while the pod is still starting the app, as rkt's contract says
        return enter(running_app_pid(pod, app.name), app, command)

    def stop(self, pod: Pod, *, force: bool) -> None:
        pid1 = pod.pid()
        if pid1 is not None:
            os.kill(pid1, signal.SIGKILL if force else signal.SIGTERM)

    def gc(self, pod: Pod) -> None:
        del pod  # everything lived in namespaces that died with the pod
