"""An example third-party stage1: each pod gets new PID, UTS and IPC namespaces from
util-linux's ``unshare``, no container manager at all, and rkt's shared supervisor
does the rest. About sixty lines: see docs/stage1.md for the contract.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rkt.pod.dirs import PID_FILE, PPID_FILE, Pod
from rkt.pod.enter import children, enter, host_pid_of
from rkt.pod.runtime import build_runtime, volume_host_path, write_runtime
from rkt.stage1 import INTERFACE_VERSION, SUPERVISOR_PATH, RunOptions


class UnshareStage1:
    name = "unshare"
    interface_version = INTERFACE_VERSION

    def build_image(self, rootfs: Path) -> None:
        (rootfs / "rkt" / "README").write_text("pods isolated with unshare(1)\n")

    def run(self, pod: Pod, apps: dict[str, Any], options: RunOptions) -> int:
        rootfs = pod.stage1_rootfs()

        def overlay(app: dict[str, Any]) -> dict[str, str] | None:
            base = pod.path / "overlay" / app["tree"]
            return {"lower": app["lower"], "upper": str(base / "upper" / app["name"]),
                    "work": str(base / "work" / app["name"])} if app["overlay"] else None

        runtime = build_runtime(
            pod, apps, options, mode="fly",
            app_root=lambda app: str(rootfs / "opt" / "stage2" / app["name"] / "rootfs"),
            volume_source=lambda name, volume: volume_host_path(pod, volume),
            overlay=overlay,
            status_dir=str(rootfs / "rkt" / "status"), pids_dir=str(rootfs / "rkt" / "pids"),
        )
        runtime["set_hostname"] = True
        spec = write_runtime(pod, runtime)
        command = ["unshare", "--pid", "--fork", "--uts", "--ipc", "--kill-child", "--",
                   sys.executable, "-I", "-S", str(rootfs / SUPERVISOR_PATH), str(spec)]
        os.set_inheritable(pod.lock_fd, True)  # type: ignore[arg-type]
        process = subprocess.Popen(command, pass_fds=(pod.lock_fd,))  # type: ignore[arg-type]
        (pod.path / PPID_FILE).write_text(str(process.pid))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and process.poll() is None:
            below = children(process.pid)
            if below:
                (pod.path / PID_FILE).write_text(str(below[0]))
                break
            time.sleep(0.005)
        return process.wait()

    def enter(self, pod: Pod, app: dict[str, Any], command: list[str]) -> int:
        inner = int((pod.stage1_rootfs() / "rkt" / "pids" / app["name"]).read_text())
        pid1 = pod.pid()
        app_pid = host_pid_of(inner, pid1) if pid1 else None
        if app_pid is None:
            raise RuntimeError(f"app {app['name']} is not running")
        return enter(app_pid, app, command)

    def stop(self, pod: Pod, *, force: bool) -> None:
        pid1 = pod.pid()
        if pid1 is not None:
            os.kill(pid1, signal.SIGKILL if force else signal.SIGTERM)

    def gc(self, pod: Pod) -> None:
        del pod  # everything lived in namespaces that died with the pod
