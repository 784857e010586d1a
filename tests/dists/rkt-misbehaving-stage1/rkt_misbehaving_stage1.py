"""Stage1 backends that each break the stage1 contract (docs/stage1.md) in one way,
for rkt's tests of what stage0 does about it. None of them runs anything."""

from __future__ import annotations

import os
import time
from pathlib import Path

from rkt.api import INTERFACE_VERSION, PID_FILE, Pod, PodRuntime, ResolvedApp, ResolvedPod


class _Base:
    name = ""
    interface_version = INTERFACE_VERSION

    def build_image(self, rootfs: Path) -> None:
        del rootfs

    def run(self, pod: Pod, resolved: ResolvedPod, runtime: PodRuntime) -> int:
        raise NotImplementedError

    def enter(self, pod: Pod, app: ResolvedApp, command: list[str]) -> int:
        return 1

    def stop(self, pod: Pod, *, force: bool) -> None:
        pass

    def gc(self, pod: Pod) -> None:
        pass


class FutureStage1(_Base):
    """Speaks a stage1 interface from the future (its image says so too)."""

    name = "future"
    interface_version = 99

    def run(self, pod: Pod, resolved: ResolvedPod, runtime: PodRuntime) -> int:
        raise AssertionError("stage0 must not run a backend of another interface version")


class SilentStage1(_Base):
    """Returns success without writing the pod's pid or any app's exit code."""

    name = "silent"

    def run(self, pod: Pod, resolved: ResolvedPod, runtime: PodRuntime) -> int:
        return 0


class PidOnlyStage1(_Base):
    """Writes its pid, and returns success without any app's exit code."""

    name = "pidonly"

    def run(self, pod: Pod, resolved: ResolvedPod, runtime: PodRuntime) -> int:
        (pod.path / PID_FILE).write_text(str(os.getpid()))
        return 0


class RaisingStage1(_Base):
    """Has a bug."""

    name = "raises"

    def run(self, pod: Pod, resolved: ResolvedPod, runtime: PodRuntime) -> int:
        return {}["no such key"]  # type: ignore[no-any-return]


class HangingStage1(_Base):
    """Never starts the pod, and never returns."""

    name = "hangs"

    def run(self, pod: Pod, resolved: ResolvedPod, runtime: PodRuntime) -> int:
        time.sleep(3600)
        return 0


class GarbageStage1(_Base):
    """Writes its pid, then garbage where each app's exit code belongs."""

    name = "garbage"

    def run(self, pod: Pod, resolved: ResolvedPod, runtime: PodRuntime) -> int:
        (pod.path / PID_FILE).write_text(str(os.getpid()))
        status = pod.stage1_rootfs() / "rkt" / "status"
        status.mkdir(parents=True, exist_ok=True)
        for app in resolved.apps:
            (status / app.name).write_text("exited with flair\n")
        return 0
