"""An app of a pod as an OCI bundle: its ``config.json`` (OCI runtime-spec 1.0.2).

The app arrives placed by ``rkt.api.build_job`` (a :class:`PlacedApp`: host
paths for its root and volumes, the ``/etc`` files it is owed, its cgroups), so
this module only translates; what each field means is docs/stage1.md's.
"""

from __future__ import annotations

from typing import Any

from rkt.api import PlacedApp, oci_seccomp

OCI_VERSION = "1.0.2"

#: every capability Linux 6.x knows, in the kernel's order (bit 0 first)
ALL_CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)

#: the kernel paths rkt's supervisor makes read-only or hides in every app
#: (docs/security.md); ``--insecure-options=paths`` keeps them
READ_ONLY_PATHS = ("/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus", "/proc/fs")
MASKED_PATHS = ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/proc/latency_stats", "/proc/acpi", "/proc/scsi",
                "/proc/asound", "/sys/firmware", "/sys/devices/virtual/powercap")

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
        return list(ALL_CAPABILITIES)
    return [name for bit, name in enumerate(ALL_CAPABILITIES) if held & (1 << bit)]


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
        linux["maskedPaths"] = list(MASKED_PATHS)
        linux["readonlyPaths"] = list(READ_ONLY_PATHS)
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
