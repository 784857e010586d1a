"""A no-op stage1 for testing stage0 and plugins without any isolation.

It "runs" a pod by recording exit code 0 for every app (or the code given in the
``RKT_NOOP_EXIT`` annotation of the pod), so tests of preparing, listing, status
and garbage collection need neither root nor systemd-nspawn.
"""

from __future__ import annotations

from pathlib import Path

# Only the plugin contract, as any third-party backend would use it.
from rkt.api import (
    INTERFACE_VERSION,
    PID_FILE,
    Pod,
    PodRuntime,
    ResolvedApp,
    ResolvedPod,
    Stage1Registry,
    hookimpl,
)


class NoopStage1:
    name = "noop"
    interface_version = INTERFACE_VERSION
    exit_code = 0

    def build_image(self, rootfs: Path) -> None:
        (rootfs / "rkt" / "noop").write_text("this stage1 runs nothing\n")

    def run(self, pod: Pod, resolved: ResolvedPod, runtime: PodRuntime) -> int:
        del runtime
        status = pod.stage1_rootfs() / "rkt" / "status"
        status.mkdir(parents=True, exist_ok=True)
        for app in resolved.apps:
            (status / app.name).write_text(str(self.exit_code))
        (pod.path / PID_FILE).write_text("0")
        return self.exit_code

    def enter(self, pod: Pod, app: ResolvedApp, command: list[str]) -> int:
        del pod, app, command
        return 0

    def stop(self, pod: Pod, *, force: bool) -> None:
        del pod, force

    def gc(self, pod: Pod) -> None:
        del pod


class NoopStage1Plugin:
    """Registers :class:`NoopStage1` as backend ``noop`` through the public hook."""

    @hookimpl
    def rkt_register_stage1_backends(self, registry: Stage1Registry) -> None:
        registry.add("noop", NoopStage1)
