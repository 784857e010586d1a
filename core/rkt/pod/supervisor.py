"""The pod supervisor: runs a pod's apps inside the stage1 and records how they ended.

This file is copied into every stage1 image as ``/rkt/supervisor.py`` and runs
with the system's ``/usr/bin/python3``, so it imports the standard library only.
stage0 writes the whole job to ``/rkt/runtime.json`` (``rkt.pod.contract``'s
``SupervisorJob``, see docs/stage1.md); the supervisor does no policy of its own
and refuses a job of a stage1 interface version other than its own.

For each app it forks a child that gets its own mount namespace, mounts the
app's rootfs (an overlay, when asked to), ``/proc`` (its host-wide knobs read-only
or masked), ``/sys`` (read-only), a minimal ``/dev`` (appc-spec/OS-SPEC.md's
device set), the volumes at their
mount points, then ``pivot_root``s into the rootfs (the stage1's files are gone
from the app's view, unlike a plain chroot), joins the app's cgroup (made by
stage0) and becomes the app (:func:`exec_app`: capabilities, user,
no_new_privs, the seccomp filter, exec). ``pre-start`` handlers run first in
the same mount namespace, ``post-stop`` handlers after the app ends (best
effort).

When an app fails (non-zero exit) the others are stopped and the supervisor
exits with that app's code; when all apps succeed it exits 0. Exit codes are
written to ``/rkt/status/<app>`` as rkt's stage1s did, so ``rkt status`` can
read them after the pod is gone. Runs as PID 1 of an nspawn container or as a
plain child of ``rkt run`` (the fly stage1).
"""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
import time

# typing costs milliseconds at every pod start; the annotations need it only for mypy
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

RUNTIME = "/rkt/runtime.json"
#: the stage1 interface version of the jobs this supervisor reads (it is
#: ``rkt.pod.contract.CONTRACT_VERSION`` of the rkt that built the image)
JOB_VERSION = 3
#: the keys of a job and of each of its apps (``SupervisorJob.to_json``)
JOB_KEYS = frozenset({
    "version", "mode", "uuid", "hostname", "interactive", "status_dir", "pids_dir",
    "set_hostname", "die_with_parent", "stop_timeout", "ready_file", "protect_kernel_paths",
    "apps",
})
APP_KEYS = frozenset({
    "name", "root", "overlay", "exec", "env", "uid", "gid", "supplementary_gids",
    "working_directory", "read_only_rootfs", "pre_start", "post_stop", "capabilities",
    "no_new_privileges", "oom_score_adj", "seccomp", "mounts", "etc_files", "cgroups",
    "etc_overrides",
})
#: the job's directory: the files the supervisor binds into apps are kept next to it
JOB_DIR = [os.path.dirname(RUNTIME)]
STATUS_DIR = "/rkt/status"
PIDS_DIR = "/rkt/pids"

CLONE_NEWNS = 0x00020000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MNT_DETACH = 2
PR_CAPBSET_DROP = 24
PR_SET_KEEPCAPS = 8
PR_SET_NO_NEW_PRIVS = 38
PR_SET_PDEATHSIG = 1
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
CAP_SYS_ADMIN = 21
LINUX_CAPABILITY_VERSION_3 = 0x20080522
SYS_PIVOT_ROOT = 155  # x86_64
TIOCSCTTY = 0x540E
CAP_LAST = 40

#: the capability numbers of linux/capability.h, for the names isolators use
CAPABILITIES = {
    "CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3,
    "CAP_FSETID": 4, "CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8,
    "CAP_LINUX_IMMUTABLE": 9, "CAP_NET_BIND_SERVICE": 10, "CAP_NET_BROADCAST": 11,
    "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_IPC_LOCK": 14, "CAP_IPC_OWNER": 15,
    "CAP_SYS_MODULE": 16, "CAP_SYS_RAWIO": 17, "CAP_SYS_CHROOT": 18, "CAP_SYS_PTRACE": 19,
    "CAP_SYS_PACCT": 20, "CAP_SYS_ADMIN": 21, "CAP_SYS_BOOT": 22, "CAP_SYS_NICE": 23,
    "CAP_SYS_RESOURCE": 24, "CAP_SYS_TIME": 25, "CAP_SYS_TTY_CONFIG": 26, "CAP_MKNOD": 27,
    "CAP_LEASE": 28, "CAP_AUDIT_WRITE": 29, "CAP_AUDIT_CONTROL": 30, "CAP_SETFCAP": 31,
    "CAP_MAC_OVERRIDE": 32, "CAP_MAC_ADMIN": 33, "CAP_SYSLOG": 34, "CAP_WAKE_ALARM": 35,
    "CAP_BLOCK_SUSPEND": 36, "CAP_AUDIT_READ": 37, "CAP_PERFMON": 38, "CAP_BPF": 39,
    "CAP_CHECKPOINT_RESTORE": 40,
}

#: kernel interfaces that are not namespaced, so an app could change the host through
#: them (the lists docker, podman and rkt 1.x use); --insecure-options=paths keeps them
READ_ONLY_PATHS = ("sys", "sysrq-trigger", "irq", "bus", "fs")
MASKED_PROC_PATHS = ("kcore", "keys", "timer_list", "timer_stats", "sched_debug",
                     "latency_stats", "acpi", "scsi", "asound")
MASKED_SYS_PATHS = ("firmware", "devices/virtual/powercap")
#: the same lists as absolute paths, for a stage1 that hands them to another runtime
READ_ONLY_KERNEL_PATHS = tuple(f"/proc/{name}" for name in READ_ONLY_PATHS)
MASKED_KERNEL_PATHS = (*(f"/proc/{name}" for name in MASKED_PROC_PATHS),
                       *(f"/sys/{name}" for name in MASKED_SYS_PATHS))

#: OS-SPEC.md: the device nodes every app must see
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")

_LIBC: Any = None


def _libc() -> Any:
    """The C library, loaded on first use: stage0 imports this module for
    :func:`resolve_in_root` alone and need not pay for ctypes."""
    global _LIBC
    if _LIBC is None:
        import ctypes

        lib = ctypes.CDLL(None, use_errno=True)
        lib.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                              ctypes.c_ulong, ctypes.c_char_p]
        lib.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
        lib.syscall.restype = ctypes.c_long
        _LIBC = lib
    return _LIBC


def _errno() -> int:
    import ctypes

    return ctypes.get_errno()


class SetupError(Exception):
    """The app's environment could not be set up; the message is for the user."""


def _check(result: int, what: str) -> None:
    if result != 0:
        err = _errno()
        raise SetupError(f"{what}: {os.strerror(err)}")


def mount(source: str | None, target: str, fstype: str | None, flags: int,
          data: str | None = None) -> None:
    _check(
        _libc().mount(
            source.encode() if source else None, target.encode(),
            fstype.encode() if fstype else None, flags, data.encode() if data else None,
        ),
        f"mount {target}",
    )


def bind(source: str, target: str, *, read_only: bool = False, recursive: bool = True) -> None:
    mount(source, target, None, MS_BIND | (MS_REC if recursive else 0))
    if read_only:
        mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


# -- paths inside the app's rootfs ------------------------------------------------------
def resolve_in_root(root: str, path: str, *, create_dirs: bool = False) -> str:
    """``path`` inside ``root``, following symlinks as if ``root`` were ``/``.

    A hostile image may plant ``/data -> /etc`` or ``../../..`` links; resolving
    each component against ``root`` (never the host) keeps mount points inside
    the rootfs. With ``create_dirs`` the missing components are made (0755).
    """
    parts = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            info = os.lstat(candidate)
        except FileNotFoundError:
            if not create_dirs:
                resolved.append(part)
                continue
            os.mkdir(candidate, 0o755)
            resolved.append(part)
            continue
        if stat.S_ISLNK(info.st_mode):
            hops += 1
            if hops > 40:
                raise SetupError(f"too many levels of symbolic links in {path}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        resolved.append(part)
    return os.path.join(root, *resolved)


def _make_target(root: str, path: str, *, is_dir: bool) -> str:
    parent, _, leaf = path.rstrip("/").rpartition("/")
    target_parent = resolve_in_root(root, parent or "/", create_dirs=True)
    target = os.path.join(target_parent, leaf) if leaf else target_parent
    if os.path.islink(target):
        # A link at the very end would be followed by mount(2): re-resolve it inside.
        target = resolve_in_root(root, path, create_dirs=is_dir)
    if not os.path.lexists(target):
        if is_dir:
            os.mkdir(target, 0o755)
        else:
            with open(target, "a"):
                pass
    elif is_dir and not os.path.isdir(target):
        # ace.md: a file where a volume goes SHOULD be replaced by a directory
        os.unlink(target)
        os.mkdir(target, 0o755)
    return target


# -- setting up one app ---------------------------------------------------------------
def _mount_sysfs(target: str) -> None:
    """A read-only sysfs of the app's own network namespace (a bind of the stage1's
    /sys would list the interfaces of the namespace that mounted it: the host's,
    under nspawn), with the cgroup hierarchies the stage1 shows bound back in."""
    flags = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
    try:
        mount("sysfs", target, "sysfs", flags)
    except SetupError:
        bind("/sys", target, read_only=True)  # no sysfs of our own: the stage1's
        return
    cgroups = os.path.join(target, "fs", "cgroup")
    if os.path.ismount("/sys/fs/cgroup") and os.path.isdir(cgroups):
        bind("/sys/fs/cgroup", cgroups, read_only=True)


def _protect_kernel_paths(proc: str, sys_dir: str) -> None:
    """Make the app's /proc/sys & co. read-only and hide /proc/kcore & co."""
    for name in READ_ONLY_PATHS:
        path = os.path.join(proc, name)
        if os.path.exists(path):
            mount(path, path, None, MS_BIND | MS_REC)
            mount(None, path, None,
                  MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    masked = [os.path.join(proc, name) for name in MASKED_PROC_PATHS]
    masked += [os.path.join(sys_dir, name) for name in MASKED_SYS_PATHS]
    for path in masked:
        if os.path.isdir(path) and not os.path.islink(path):
            mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
        elif os.path.exists(path):
            mount("/dev/null", path, None, MS_BIND)


def _setup_filesystems(app: dict[str, Any], spec: dict[str, Any]) -> None:
    root = app["root"]
    _check(_libc().unshare(CLONE_NEWNS), "unshare mount namespace")
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    overlay = app.get("overlay")
    if overlay:
        mount("overlay", root, "overlay", 0,
              f"lowerdir={overlay['lower']},upperdir={overlay['upper']},"
              f"workdir={overlay['work']}")
    else:
        bind(root, root)  # pivot_root needs the new root to be a mount point
    proc = _make_target(root, "/proc", is_dir=True)
    mount("proc", proc, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    sys_dir = _make_target(root, "/sys", is_dir=True)
    _mount_sysfs(sys_dir)
    if spec.get("protect_kernel_paths", True):
        _protect_kernel_paths(proc, sys_dir)
    dev = _make_target(root, "/dev", is_dir=True)
    mount("tmpfs", dev, "tmpfs", MS_NOSUID, "mode=755,size=65536k")
    for name in DEVICES:
        node = os.path.join(dev, name)
        with open(node, "a"):
            pass
        bind(f"/dev/{name}", node, recursive=False)
    # OS-SPEC.md: every app has a /dev/console: the pod's console when it has one
    # (nspawn makes it for an interactive pod), else the null device
    with open(os.path.join(dev, "console"), "a"):
        pass
    console = "/dev/console" if os.path.exists("/dev/console") else "/dev/null"
    bind(console, os.path.join(dev, "console"), recursive=False)
    os.mkdir(os.path.join(dev, "pts"))
    if spec.get("mode") == "fly":
        bind("/dev/pts", os.path.join(dev, "pts"))
    else:
        mount("devpts", os.path.join(dev, "pts"), "devpts", MS_NOSUID | MS_NOEXEC,
              "newinstance,ptmxmode=0666,mode=620")
    os.symlink("pts/ptmx", os.path.join(dev, "ptmx"))
    os.mkdir(os.path.join(dev, "shm"))
    mount("tmpfs", os.path.join(dev, "shm"), "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    for link, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, os.path.join(dev, link))
    # /etc/hosts and resolv.conf go into the app's rootfs before any volume is
    # mounted: a volume at /etc hides them, and rkt never writes into a volume
    overrides = app.get("etc_overrides") or {}
    for name, content in app.get("etc_files", {}).items():
        if name in overrides:
            continue
        etc = resolve_in_root(root, "/etc", create_dirs=True)
        path = os.path.join(etc, name)
        if not os.path.lexists(path):
            with open(path, "w") as handle:
                handle.write(content)
    for volume in app.get("mounts", []):
        source = volume["source"]
        target = _make_target(root, volume["target"], is_dir=os.path.isdir(source))
        bind(source, target, read_only=volume.get("read_only", False),
             recursive=volume.get("recursive", True))
    for name, content in overrides.items():
        # over the image's file and any volume there (--dns, --hosts-entry): a
        # read-only bind, so neither the image nor a volume's source is written
        source = os.path.join(JOB_DIR[0], "etc", f"{app['name']}.{name}")
        os.makedirs(os.path.dirname(source), exist_ok=True)
        with open(source, "w") as handle:
            handle.write(content)
        etc = resolve_in_root(root, "/etc", create_dirs=True)
        if not os.path.lexists(os.path.join(etc, name)) and (
                os.path.ismount(etc) or os.stat(etc).st_dev != os.stat(root).st_dev):
            raise SetupError(f"/etc is a volume without {name}: there is nothing to put "
                             f"the pod's {name} over")
        target = _make_target(root, f"/etc/{name}", is_dir=False)
        bind(source, target, read_only=True, recursive=False)
    os.chdir(root)
    _check(_libc().syscall(SYS_PIVOT_ROOT, b".", b"."), "pivot_root")
    _check(_libc().umount2(b".", MNT_DETACH), "detach the stage1 root")
    os.chdir("/")
    if app.get("read_only_rootfs"):
        mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY)


# -- cgroups ---------------------------------------------------------------------------
def open_cgroup_to_join(directory: str) -> int:
    """The file of cgroup ``directory`` that moves whoever writes ``0`` into it.

    cgroup v1's ``tasks`` where there is one: through it the kernel moves just the
    calling thread (the whole process, for the single-threaded callers here) and
    skips the lock a whole-process move takes, whose RCU grace period costs 5-15 ms
    on a quiet machine, once per app start. cgroup v2 has ``cgroup.procs`` only.
    """
    try:
        return os.open(os.path.join(directory, "tasks"), os.O_WRONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return os.open(os.path.join(directory, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)


def join_cgroup(directory: str) -> None:
    """Move the calling thread (a single-threaded caller: its process) into cgroup
    ``directory`` now, through :func:`open_cgroup_to_join`'s file."""
    fd = open_cgroup_to_join(directory)
    try:
        os.write(fd, b"0")
    finally:
        os.close(fd)


def _open_cgroups(app: dict[str, Any]) -> list[int]:
    """The app's cgroups' files to join them by, opened while their paths are still
    visible (``pivot_root`` hides them); :func:`_join_cgroups` writes to them just
    before the exec, so the supervisor's own setup is not charged to the app."""
    fds = []
    for directory in app.get("cgroups") or ():
        try:
            fds.append(open_cgroup_to_join(directory))
        except OSError as exc:
            raise SetupError(f"cgroup {directory}: {exc.strerror}") from exc
    return fds


def _join_cgroups(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.write(fd, b"0")  # 0: the writing process, whatever its PID namespace
        except OSError as exc:
            raise SetupError(f"join the app's cgroup: {exc.strerror}") from exc


def oom_kills(app: dict[str, Any]) -> int:
    """How many of the app's processes the kernel's OOM killer ended."""
    return oom_kill_count(app.get("cgroups") or ())


def oom_kill_count(cgroup_dirs: Iterable[str]) -> int:
    """The ``oom_kill`` count of the first of ``cgroup_dirs`` that keeps one (v2's
    ``memory.events``, v1's ``memory.oom_control``); 0 if none does. Read it
    before the cgroup is removed."""
    for directory in cgroup_dirs:
        for name in ("memory.events", "memory.oom_control"):
            try:
                with open(os.path.join(directory, name)) as handle:
                    for line in handle:
                        key, _, value = line.partition(" ")
                        if key == "oom_kill":
                            return int(value)
            except (OSError, ValueError):
                continue
    return 0


# -- becoming the app ------------------------------------------------------------------
def _last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as handle:
            return int(handle.read())
    except (OSError, ValueError):
        return CAP_LAST


def _held_capabilities() -> tuple[int, int]:
    """This process's permitted and bounding sets."""
    found = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(("CapPrm:", "CapBnd:")):
                found[line[:6]] = int(line.split()[1], 16)
    return found["CapPrm"], found["CapBnd"]


def capability_mask(names: list[str] | None) -> int:
    """The app's capability set as a bit mask (every capability for ``None``)."""
    if names is None:
        return (1 << (_last_cap() + 1)) - 1
    mask = 0
    for name in names:
        if name not in CAPABILITIES:
            # stage0 refuses unknown names; a job naming one was not made by it
            raise SetupError(f'unknown capability "{name}"')
        mask |= 1 << CAPABILITIES[name]
    return mask


def _capset(effective: int, permitted: int, inheritable: int) -> None:
    import ctypes

    header = (ctypes.c_uint32 * 2)(LINUX_CAPABILITY_VERSION_3, 0)
    # two struct __user_cap_data_struct {effective, permitted, inheritable}: low, high 32 bits
    data = (ctypes.c_uint32 * 6)(
        effective & 0xFFFFFFFF, permitted & 0xFFFFFFFF, inheritable & 0xFFFFFFFF,
        effective >> 32, permitted >> 32, inheritable >> 32,
    )
    _check(_libc().capset(header, data), "set capabilities")


def drop_privileges(app: dict[str, Any], *, keep_sys_admin: bool = False) -> None:
    """Take on the app's user, groups and capability sets (docs/isolators.md).

    The bounding and inheritable sets become the app's set. Permitted and
    effective become it too for uid 0 and empty for any other uid (as in rkt
    1.x), so a file-capability or setuid binary can gain nothing beyond the
    bounding set. The ambient set stays empty. ``keep_sys_admin`` keeps
    CAP_SYS_ADMIN in the permitted and effective sets, for installing the
    seccomp filter afterwards; the ``execve`` of the app drops it again, as the
    kernel then recomputes those sets from the bounding and inheritable ones.
    """
    if app.get("oom_score_adj") is not None:
        with open("/proc/self/oom_score_adj", "w") as handle:
            handle.write(str(app["oom_score_adj"]))
    # what this process holds bounds what it can hand out (fly runs with the host's sets)
    permitted, bounding = _held_capabilities()
    wanted = capability_mask(app.get("capabilities")) & bounding
    libc = _libc()
    for cap in range(bounding.bit_length()):
        if bounding & (1 << cap) and not wanted & (1 << cap):
            _check(libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"drop capability {cap}")
    # keep the permitted set across setuid, to hand out exactly the app's below
    _check(libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0), "keep capabilities")
    os.setgroups(app.get("supplementary_gids", []))
    os.setgid(app["gid"])
    os.setuid(app["uid"])
    _check(libc.prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0), "reset keep capabilities")
    held = wanted if app["uid"] == 0 else 0
    if keep_sys_admin:
        held |= 1 << CAP_SYS_ADMIN
    held &= permitted
    _capset(held, held, wanted)
    if app.get("no_new_privileges"):
        _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "set no_new_privs")


def seccomp_program(app: dict[str, Any]) -> bytes:
    """The app's compiled seccomp filter (``b""`` for none)."""
    seccomp = app.get("seccomp")
    if not seccomp or not seccomp.get("program"):
        return b""
    import binascii  # call this before pivot_root: the app's rootfs has no stdlib

    return binascii.a2b_base64(seccomp["program"])


def install_seccomp(program: bytes) -> None:
    """Install a BPF filter on this process (inherited by everything it execs).

    The kernel allows it with no_new_privs set or CAP_SYS_ADMIN in effect.
    """
    import ctypes

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    _check(_libc().prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0),
           "install the seccomp filter")


def exec_app(app: dict[str, Any], argv: list[str], env: dict[str, str],
             program: bytes | None = None, *, die_with: int | None = None) -> None:
    """Become the app and exec ``argv``: the last steps of every process run as
    the app (the app, its event handlers, ``rkt enter``). Raises SetupError.

    ``program`` is :func:`seccomp_program`'s, when it had to be decoded earlier.
    ``die_with``: be killed when that process (the supervisor) dies.
    The seccomp filter goes in last, so that the filter need allow nothing
    but ``execve`` (which rkt's filters never block) of what follows it.
    """
    if program is None:
        program = seccomp_program(app)
    drop_privileges(app, keep_sys_admin=bool(program) and not app.get("no_new_privileges"))
    if die_with is not None:
        # after drop_privileges: changing credentials clears the setting
        _die_with(die_with)
    working_directory = app.get("working_directory") or "/"
    try:
        os.chdir(working_directory)
    except OSError as exc:
        raise SetupError(f'working directory "{working_directory}": {exc.strerror}') from exc
    path = _find_executable(argv[0], env)
    if program:
        install_seccomp(program)
    _exec(path, argv, env)


def _find_executable(command: str, env: dict[str, str]) -> str:
    if "/" in command:
        return command
    for directory in env.get("PATH", "").split(":"):
        candidate = os.path.join(directory or ".", command)
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    return command


def _exec(path: str, argv: list[str], env: dict[str, str]) -> None:
    try:
        os.execve(path, argv, env)
    except OSError as exc:
        raise SetupError(f'unable to run "{path}": {exc.strerror}') from exc


def _app_child(app: dict[str, Any], spec: dict[str, Any], argv: list[str], *, interactive: bool,
               setup: bool = True, pre_start: bool = True) -> None:
    """In the forked child: never returns."""
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        os.setsid()
        if interactive:
            import fcntl

            # steal the terminal from the stage1's init, whose console it is
            fcntl.ioctl(0, TIOCSCTTY, 1)
        else:
            null = os.open("/dev/null", os.O_RDONLY)
            os.dup2(null, 0)
            os.close(null)
        cgroups = _open_cgroups(app)
        program = seccomp_program(app)
        if setup:
            _setup_filesystems(app, spec)
        env = dict(app["env"])
        handler = app.get("pre_start") if pre_start else None
        if setup and handler:
            pid = os.fork()
            if pid == 0:
                try:
                    _join_cgroups(cgroups)
                    exec_app(app, handler, env, program)
                except SetupError as exc:
                    _report(app, f"pre-start: {exc}")
                os._exit(254)
            _, status = os.waitpid(pid, 0)
            code = os.waitstatus_to_exitcode(status)
            if code != 0:
                _report(app, f"pre-start handler failed with exit code {code}")
                os._exit(code if code > 0 else 128 - code)
        _join_cgroups(cgroups)
        exec_app(app, argv, env, program,
                 die_with=SUPERVISOR_PID if spec.get("die_with_parent") else None)
    except SetupError as exc:
        _report(app, str(exc))
    except BaseException as exc:  # the child must never return into the supervisor
        _report(app, f"{type(exc).__name__}: {exc}")
    os._exit(254)


def _die_with(parent: int) -> None:
    """Be killed when ``parent`` dies; exit now if it already has (the pod is gone)."""
    _libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(137)


def _report(app: dict[str, Any], message: str) -> None:
    try:
        os.write(2, f'rkt: app "{app["name"]}": {message}\n'.encode())
    except OSError:
        pass


# -- the supervisor proper -----------------------------------------------------------
#: this process, as its apps see their parent (1 when it is a PID namespace's init)
SUPERVISOR_PID = os.getpid()


class Supervisor:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.apps = {app["name"]: app for app in spec["apps"]}
        self.running: dict[int, str] = {}
        self.codes: dict[str, int] = {}
        self.first_failure: int | None = None
        self.stopping = False
        self.status_dir = spec.get("status_dir", STATUS_DIR)
        self.pids_dir = spec.get("pids_dir", PIDS_DIR)

    def start(self) -> None:
        os.makedirs(self.status_dir, exist_ok=True)
        os.makedirs(self.pids_dir, exist_ok=True)
        interactive = bool(self.spec.get("interactive"))
        for name, app in self.apps.items():
            pid = os.fork()
            if pid == 0:
                _app_child(app, self.spec, app["exec"], interactive=interactive)
            self.running[pid] = name
            with open(os.path.join(self.pids_dir, name), "w") as handle:
                handle.write(str(pid))
            _touch(os.path.join(self.status_dir, f"{name}-started"))

    def stop(self, signum: int = signal.SIGTERM) -> None:
        self.stopping = True
        for pid in list(self.running):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def wait(self) -> int:
        deadline: float | None = None
        while self.running:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG if deadline else 0)
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            if pid == 0:  # only with WNOHANG, while waiting out the stop timeout
                if deadline is not None and time.monotonic() > deadline:
                    self.stop(signal.SIGKILL)
                    deadline = None
                else:
                    time.sleep(0.05)
                continue
            name = self.running.pop(pid, None)
            if name is None:
                continue  # an orphan reparented to us (we may be PID 1)
            code = os.waitstatus_to_exitcode(status)
            code = code if code >= 0 else 128 - code
            self.codes[name] = code
            if code == 128 + signal.SIGKILL:
                kills = oom_kills(self.apps[name])
                if kills:
                    # before the exit code, so whoever sees the code sees this too
                    with open(os.path.join(self.status_dir, f"{name}-oom"), "w") as handle:
                        handle.write(str(kills))
            with open(os.path.join(self.status_dir, name), "w") as handle:
                handle.write(str(code))
            if code != 0 and self.first_failure is None and not self.stopping:
                self.first_failure = code
            if (code != 0 or self.stopping) and self.running and deadline is None:
                self.stop()
                deadline = time.monotonic() + float(self.spec.get("stop_timeout", 10))
        self.run_post_stop()
        return self.first_failure or 0

    def run_post_stop(self) -> None:
        for app in self.apps.values():
            handler = app.get("post_stop")
            if not handler:
                continue
            pid = os.fork()
            if pid == 0:
                _app_child(app, self.spec, handler, interactive=False, pre_start=False)
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


def _touch(path: str) -> None:
    with open(path, "a"):
        pass
    os.utime(path, None)


class JobError(Exception):
    """The job file is not one this supervisor can run."""


def load_job(path: str) -> dict[str, Any]:
    """Read and check a job: its version, and that nothing it needs is missing."""
    with open(path) as handle:
        spec: dict[str, Any] = json.load(handle)
    version = spec.get("version")
    if version != JOB_VERSION:
        raise JobError(f"{path} is of stage1 interface version {version}; "
                       f"this supervisor speaks {JOB_VERSION}")
    missing = JOB_KEYS - spec.keys()
    for app in spec.get("apps", ()):
        missing |= APP_KEYS - app.keys()
    if missing:
        raise JobError(f"{path} lacks {', '.join(sorted(missing))}")
    return spec


def run_supervisor(job_path: str) -> int:
    """Supervise the job at ``job_path`` in this process; return the pod's exit code.

    For a stage1 that runs the supervisor in a fork of rkt (fly) rather than in
    an interpreter of its own: the caller must be a fresh child that ends with
    ``os._exit`` of the result (signal handlers and the parent-death signal are
    set here for the whole process).
    """
    return main(["supervisor", job_path])


def main(argv: list[str]) -> int:
    global SUPERVISOR_PID
    # this process, whether it was started for the job or forked by rkt to run it
    SUPERVISOR_PID = os.getpid()
    path = argv[1] if len(argv) > 1 else RUNTIME
    JOB_DIR[0] = os.path.dirname(os.path.abspath(path))
    try:
        spec = load_job(path)
    except (OSError, ValueError, JobError) as exc:
        os.write(2, f"rkt: supervisor: {exc}\n".encode())
        return 254
    supervisor = Supervisor(spec)

    def on_signal(signum: int, frame: object) -> None:
        del frame
        supervisor.stop(signal.SIGTERM if signum != signal.SIGKILL else signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    if spec.get("die_with_parent"):
        # the pod lives no longer than the rkt that runs it (rkt.pod.lifetime); the
        # kernel delivers this SIGKILL even to a PID namespace's init
        _libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if spec.get("set_hostname"):
        # for stage1s that give the pod a UTS namespace but set no hostname themselves
        import socket

        socket.sethostname(spec["hostname"])
    supervisor.start()
    ready = spec.get("ready_file")
    if ready:
        _touch(ready)
    return supervisor.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
