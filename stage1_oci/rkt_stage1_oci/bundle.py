"""An app of a pod as an OCI bundle: its ``config.json`` (OCI runtime-spec 1.0.2).

The app arrives placed by ``rkt.api.build_job`` (a :class:`PlacedApp`: host
paths for its root and volumes, the ``/etc`` files it is owed, its cgroups), so
this module only translates; what each field means is docs/stage1.md's.
"""

from __future__ import annotations

from typing import Any

from rkt.api import (
    CAPABILITIES,
    MASKED_KERNEL_PATHS,
    READ_ONLY_KERNEL_PATHS,
    PlacedApp,
    oci_seccomp,
)

OCI_VERSION = "1.0.2"

#: CPU quota period (µs): rkt's ``cpu_millis`` is thousandths of a CPU
CPU_PERIOD = 100_000


def held_capabilities() -> list[str]:
    """The capabilities this process holds: an app whose set is ``None``
    (``--insecure-options=capabilities``) gets every capability the stage1 has,
    as on the other stage1s, and no more (the runtime could not give it more)."""
    try:
        with open("/proc/self/status") as status:
            fields = dict(line.split(":", 1) for line in status if line.startswith("Cap"))
        held = int(fields["CapBnd"], 16) & int(fields["CapPrm"], 16)
    except (OSError, KeyError, ValueError):
        return list(CAPABILITIES)
    return [name for name, bit in CAPABILITIES.items() if held & (1 << bit)]


def _kernel_file_systems(terminal: bool) -> list[dict[str, Any]]:
    """OS-SPEC.md's file systems and devices, as runc's own default bundle has them."""
    mounts = [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620",
                     "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
    ]
    if not terminal:
        # the spec asks for the node; with no terminal it is the null device, as on
        # the other stage1s (docs/executor-checklist.md); with one the runtime makes
        # it the app's terminal
        mounts.append({"destination": "/dev/console", "type": "bind", "source": "/dev/null",
                       "options": ["bind"]})
    return mounts


def _resources(placed: PlacedApp) -> dict[str, Any]:
    limits = placed.app.resources
    resources: dict[str, Any] = {"devices": [{"allow": False, "access": "rwm"}]}
    if limits.memory_bytes is not None:
        resources["memory"] = {"limit": limits.memory_bytes}
    cpu: dict[str, Any] = {}
    if limits.cpu_millis is not None:
        cpu.update(quota=limits.cpu_millis * CPU_PERIOD // 1000, period=CPU_PERIOD)
    if limits.cpu_shares is not None:
        cpu["shares"] = limits.cpu_shares
    if cpu:
        resources["cpu"] = cpu
    return resources


def app_config(
    placed: PlacedApp,
    *,
    hostname: str,
    namespaces: dict[str, str | None],
    cgroups_path: str | None,
    protect_kernel_paths: bool,
    etc_override_dir: str,
    terminal: bool = False,
) -> dict[str, Any]:
    """The app's ``config.json``.

    ``namespaces`` maps each OCI namespace type the app has to the path of the one
    it joins (``None``: a new one); ``cgroups_path`` is its cgroup below the
    hierarchies' roots; ``etc_override_dir`` holds the files bound over its
    ``/etc`` ones (written by the caller); ``terminal`` gives the app a terminal of
    its own, which the runtime relays to its own standard input and output.
    """
    app = placed.app
    capabilities = held_capabilities() if app.capabilities is None else list(app.capabilities)
    # rkt's rule (docs/isolators.md): a non-root app holds no capability, its set
    # only bounds what it can gain by exec
    held = capabilities if app.uid == 0 else []
    process: dict[str, Any] = {
        "terminal": terminal,
        "user": {"uid": app.uid, "gid": app.gid,
                 "additionalGids": list(app.supplementary_gids)},
        "args": list(app.exec),
        "env": [f"{name}={value}" for name, value in app.env],
        "cwd": app.working_directory,
        "capabilities": {"bounding": capabilities, "inheritable": capabilities,
                         "permitted": held, "effective": held, "ambient": []},
        "noNewPrivileges": app.no_new_privileges,
    }
    if app.oom_score_adj is not None:
        process["oomScoreAdj"] = app.oom_score_adj
    mounts = _kernel_file_systems(terminal)
    for mount, source in zip(app.mounts, placed.mount_sources, strict=True):
        options = ["rbind" if mount.recursive else "bind"]
        if mount.read_only:
            options.append("ro")
        mounts.append({"destination": mount.target, "type": "bind", "source": source,
                       "options": options})
    # laid over whatever the app has, read-only (--dns, --hosts-entry, CNI's DNS)
    for name, _ in placed.etc_overrides:
        mounts.append({"destination": f"/etc/{name}", "type": "bind",
                       "source": f"{etc_override_dir}/{name}", "options": ["bind", "ro"]})
    linux: dict[str, Any] = {
        "namespaces": [{"type": kind, **({"path": path} if path else {})}
                       for kind, path in namespaces.items()],
        "resources": _resources(placed),
    }
    if cgroups_path is not None:
        linux["cgroupsPath"] = cgroups_path
    if protect_kernel_paths:
        linux["maskedPaths"] = list(MASKED_KERNEL_PATHS)
        linux["readonlyPaths"] = list(READ_ONLY_KERNEL_PATHS)
    seccomp = oci_seccomp(app.seccomp)
    if seccomp is not None:
        linux["seccomp"] = seccomp
    return {
        "ociVersion": OCI_VERSION,
        "process": process,
        "root": {"path": placed.root, "readonly": app.read_only_rootfs},
        "hostname": hostname,
        "mounts": mounts,
        "linux": linux,
    }
