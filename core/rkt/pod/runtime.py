"""The supervisor's job (``/rkt/runtime.json``), placed by a backend at run time.

``rkt.pod.prepare`` resolves the apps once (a :class:`ResolvedPod`); a backend
then says where things are *inside its isolation*: where each app's rootfs is,
where each volume appears, whether the supervisor mounts the overlays itself.
The result is a :class:`SupervisorJob`, serialised by ``rkt.pod.contract``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rkt.pod.contract import (
    OverlayDirs,
    PlacedApp,
    PodRuntime,
    ResolvedApp,
    ResolvedPod,
    ResolvedVolume,
    SupervisorJob,
)
from rkt.pod.dirs import Pod

RUNTIME_FILE = "runtime.json"


def hosts_file(hostname: str) -> str:
    """OS-SPEC.md: a provided /etc/hosts SHOULD have a localhost entry."""
    return (
        f"127.0.0.1\tlocalhost localhost.localdomain {hostname}\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
    )


def no_overlay(app: ResolvedApp) -> OverlayDirs | None:
    """For backends that mount the apps' overlays themselves (or none is wanted)."""
    del app
    return None


def overlay_on_host(pod: Pod) -> Callable[[ResolvedApp], OverlayDirs | None]:
    """The apps' overlays as host paths, for a supervisor that sees the host's files."""

    def overlay(app: ResolvedApp) -> OverlayDirs | None:
        if not app.overlay:
            return None
        base = pod.path / "overlay" / app.tree
        return OverlayDirs(lower=app.lower, upper=str(base / "upper" / app.name),
                           work=str(base / "work" / app.name))

    return overlay


def build_job(
    pod: Pod,
    resolved: ResolvedPod,
    runtime: PodRuntime,
    *,
    mode: str,
    app_root: Callable[[ResolvedApp], str],
    volume_source: Callable[[ResolvedVolume], str],
    overlay: Callable[[ResolvedApp], OverlayDirs | None] = no_overlay,
    status_dir: str = "/rkt/status",
    pids_dir: str = "/rkt/pids",
    resolv_conf: str | None = None,
    set_hostname: bool = False,
    die_with_parent: bool = False,
    cgroup_dir: Callable[[str], str] = str,
) -> SupervisorJob:
    """The supervisor's job for ``resolved``, placed by the backend's callbacks.

    Every app gets an ``/etc/hosts`` naming the pod's hostname, and
    ``resolv_conf`` as ``/etc/resolv.conf`` when given; the supervisor writes
    them only where the image has no such file. Each app's cgroup directories
    (``runtime.cgroups``, host paths) are placed with ``cgroup_dir``: by default
    as they are, for a supervisor that sees the host's ``/sys/fs/cgroup``.
    What the pod's network says (``runtime.network.resolv_conf`` and
    ``hosts``) is laid over the app's own.
    """
    hostname = runtime.pod_hostname(pod.uuid)
    cgroups = runtime.cgroups
    etc_files = [("hosts", hosts_file(hostname))]
    if resolv_conf is not None:
        etc_files.append(("resolv.conf", resolv_conf))
    network = runtime.network
    etc_overrides = tuple((name, content) for name, content in
                          (("resolv.conf", network.resolv_conf), ("hosts", network.hosts))
                          if content is not None)
    placed = tuple(
        PlacedApp(
            app=app,
            root=app_root(app),
            overlay=overlay(app),
            mount_sources=tuple(volume_source(resolved.volume(m.volume)) for m in app.mounts),
            etc_files=tuple(etc_files),
            cgroups=tuple(cgroup_dir(d) for d in cgroups.app_dirs(app.name)) if cgroups else (),
            etc_overrides=etc_overrides,
        )
        for app in resolved.apps
    )
    return SupervisorJob(
        uuid=pod.uuid, hostname=hostname, mode=mode, apps=placed,
        interactive=runtime.interactive, status_dir=status_dir, pids_dir=pids_dir,
        set_hostname=set_hostname, die_with_parent=die_with_parent,
        protect_kernel_paths="paths" not in runtime.insecure,
    )


def volume_host_path(pod: Pod, volume: ResolvedVolume) -> str:
    """Where a resolved volume is on the host (empty volumes live in the pod dir)."""
    return volume.host_path(str(pod.path))


def write_job(pod: Pod, job: SupervisorJob) -> Path:
    """Write ``stage1/rootfs/rkt/runtime.json``; returns its path on the host."""
    path = pod.stage1_rootfs() / "rkt" / RUNTIME_FILE
    path.write_text(job.to_json())
    return path


def host_resolv_conf() -> str | None:
    try:
        return Path("/etc/resolv.conf").read_text()
    except OSError:
        return None
