"""Seccomp filters: from an app's isolator (or rkt's default) to a BPF program.

stage0 compiles every app's filter here, with libseccomp (through the
``pyseccomp`` ctypes binding), when the pod is prepared; the program travels in
the stage1 contract (``SeccompFilter.program``) and the stdlib-only supervisor
installs it as the last step before it execs the app. So every stage1 that
uses the supervisor (nspawn, fly, kvm) applies the same filter, and a set that
names an unknown syscall is refused before any pod directory exists.

Which filter an app gets (docs/isolators.md):

- ``os/linux/seccomp-remove-set``: every syscall but the set's; the set's fail
  with ``errno`` (or kill the app with SIGSYS when it has none, ace.md).
- ``os/linux/seccomp-retain-set``: only the set's; the rest fail likewise.
- neither: rkt's default, the remove-set ``@rkt/default-blacklist`` failing
  with EPERM. A blocklist rather than rkt 1.x's 2016 allowlist, which would
  refuse every syscall added since (``statx``, ``clone3``, ``rseq``, ...) and
  so break today's C libraries.
- ``--insecure-options=seccomp``: none.

The syscalls in :data:`ALWAYS_ALLOWED` are never filtered (as systemd's
``SystemCallFilter=`` does): the supervisor's own ``execve`` of the app comes
after the filter, and a process must be able to exit.
"""

from __future__ import annotations

import base64
import errno as errno_codes
import tempfile
from typing import Any

from rkt.errors import PodError, UsageError
from rkt.pod.contract import SeccompFilter

REMOVE_SET = "os/linux/seccomp-remove-set"
RETAIN_SET = "os/linux/seccomp-retain-set"

#: never filtered: the app must be exec'd after the filter is in, and must be able to end
ALWAYS_ALLOWED = ("execve", "exit", "exit_group", "rt_sigreturn", "sigreturn")

#: rkt's default remove-set: what a container has no business doing to the
#: shared kernel, whatever its capabilities. Names this architecture lacks
#: (``stime``, ``vm86``, ...) are skipped when compiling.
DEFAULT_BLOCKLIST = (
    # loading code into the kernel, or replacing it
    "init_module", "finit_module", "delete_module", "create_module", "query_module",
    "get_kernel_syms", "kexec_load", "kexec_file_load", "bpf", "uselib",
    # the kernel's keyrings are not namespaced
    "keyctl", "add_key", "request_key",
    # mounts and namespaces: the ways out of the pod
    "mount", "umount", "umount2", "pivot_root", "fsopen", "fsconfig", "fsmount",
    "fspick", "move_mount", "open_tree", "mount_setattr", "unshare", "setns",
    # other processes' memory, kernel profiling, page-fault handling in user space
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "perf_event_open",
    "userfaultfd", "lookup_dcookie",
    # the host's clock, power, swap, accounting and quotas
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "stime", "reboot",
    "swapon", "swapoff", "acct", "quotactl", "quotactl_fd",
    # file handles bypass the mount namespace (the "shocker" escape)
    "open_by_handle_at", "name_to_handle_at",
    # NUMA placement of other processes' memory
    "mbind", "set_mempolicy", "get_mempolicy", "move_pages", "migrate_pages",
    # raw I/O ports and obsolete interfaces
    "ioperm", "iopl", "vm86", "vm86old", "nfsservctl", "_sysctl", "sysfs", "ustat",
)

#: ``clone`` flags that make namespaces: ``clone`` with any of them is refused
#: by the default set, as ``unshare`` is (arg 0 holds the flags on x86_64 and arm64)
CLONE_NAMESPACE_FLAGS = (
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
)

DEFAULT_GROUP = "@rkt/default-blacklist"
#: the ``@`` groups a set may name; the two appc defines, rkt's blocklist and its
#: docker-compatible alias (docker's list is the same kind of blocklist)
GROUPS: dict[str, tuple[str, ...]] = {
    DEFAULT_GROUP: DEFAULT_BLOCKLIST,
    "@docker/default-blacklist": DEFAULT_BLOCKLIST,
    "@appc.io/empty": (),
}
ALL = "@appc.io/all"


def errno_number(name: str) -> int:
    """``"EACCES"`` -> 13; a one-line error for a name this system does not know."""
    number = getattr(errno_codes, name, None) if name.startswith("E") else None
    if not isinstance(number, int):
        raise UsageError(f'seccomp: unknown errno "{name}" (use a name such as EPERM)')
    return number


def default_filter() -> SeccompFilter:
    """rkt's filter for an app that names none."""
    return compile_filter("remove", (DEFAULT_GROUP,), "EPERM")


def filter_for(isolators: list[dict[str, Any]] | None) -> SeccompFilter:
    """The filter an app's isolators ask for (the last seccomp one wins:
    ``--seccomp`` replaces the image's), or rkt's default."""
    chosen: dict[str, Any] | None = None
    for isolator in isolators or ():
        if isolator.get("name") in (REMOVE_SET, RETAIN_SET):
            chosen = isolator
    if chosen is None:
        return default_filter()
    value = chosen.get("value") or {}
    mode = "remove" if chosen["name"] == REMOVE_SET else "retain"
    return compile_filter(mode, tuple(value.get("set") or ()), value.get("errno") or "")


def parse_seccomp_flag(text: str) -> dict[str, Any]:
    """rkt 1.x's ``--seccomp mode=remove|retain[,errno=ENAME],SYSCALL,...`` as an isolator."""
    mode = errno_name = None
    syscalls: list[str] = []
    for item in (part.strip() for part in text.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            if item:
                syscalls.append(item)
        elif key == "mode" and mode is None:
            mode = value
        elif key == "errno" and errno_name is None:
            errno_name = value
        else:
            raise UsageError(f'--seccomp "{text}": unexpected "{item}"')
    if mode not in ("remove", "retain"):
        raise UsageError(f'--seccomp "{text}": expected mode=remove or mode=retain')
    if not syscalls:
        raise UsageError(f'--seccomp "{text}": name at least one syscall or @group')
    isolator_value: dict[str, Any] = {"set": syscalls}
    if errno_name:
        errno_number(errno_name)
        isolator_value["errno"] = errno_name
    return {"name": REMOVE_SET if mode == "remove" else RETAIN_SET, "value": isolator_value}


def _expand(names: tuple[str, ...]) -> tuple[list[str], bool]:
    """The syscall names a set stands for, and whether it holds rkt's default group
    (which also refuses namespace-making ``clone`` calls)."""
    syscalls: list[str] = []
    with_default = False
    for name in names:
        if name.startswith("@"):
            if name not in GROUPS:
                known = ", ".join(sorted([*GROUPS, ALL]))
                raise UsageError(f'seccomp: unknown syscall group "{name}" (known: {known})')
            with_default |= GROUPS[name] is DEFAULT_BLOCKLIST
            syscalls += GROUPS[name]
        else:
            syscalls.append(name)
    return syscalls, with_default


def _libseccomp() -> Any:
    try:
        import pyseccomp
    except (ImportError, RuntimeError, OSError) as exc:
        raise PodError(
            f"seccomp filters need libseccomp (Debian package libseccomp2): {exc}"
        ) from exc
    return pyseccomp


def compile_filter(mode: str, names: tuple[str, ...], errno_name: str) -> SeccompFilter:
    """Compile a remove- or retain-set to a BPF program for this machine.

    ``@appc.io/all`` retained is no filter at all (``program`` is ``""``).
    """
    pyseccomp = _libseccomp()

    action = pyseccomp.ERRNO(errno_number(errno_name)) if errno_name else pyseccomp.KILL_PROCESS
    effective_mode = mode
    names_left: tuple[str, ...]
    if ALL in names:
        # all syscalls retained is no filter at all; all removed keeps only ALWAYS_ALLOWED
        if mode == "retain":
            return SeccompFilter(mode, names, errno_name, "")
        effective_mode, names_left = "retain", ()
    else:
        names_left = names
    syscalls, with_default = _expand(names_left)
    numbers: dict[str, int] = {}
    for name in syscalls:
        number = pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name)
        if number == -1:
            raise UsageError(f'seccomp: unknown syscall "{name}"')
        if number >= 0:  # below -1: a syscall other architectures have, not this one
            numbers[name] = number
    if effective_mode == "retain":
        program = pyseccomp.SyscallFilter(action)
        for name in dict.fromkeys([*numbers, *ALWAYS_ALLOWED]):
            _add(pyseccomp, program, pyseccomp.ALLOW, name)
    else:
        program = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
        for name in numbers:
            if name not in ALWAYS_ALLOWED:
                program.add_rule(action, name)
        if with_default:
            for flag in CLONE_NAMESPACE_FLAGS:
                program.add_rule(action, "clone",
                                 pyseccomp.Arg(0, pyseccomp.MASKED_EQ, flag, flag))
            if "clone3" not in numbers:
                # clone3's flags are in memory a filter cannot read: ENOSYS makes
                # the C library fall back to clone, which is checked above
                _add(pyseccomp, program, pyseccomp.ERRNO(errno_codes.ENOSYS), "clone3")
    return SeccompFilter(mode, names, errno_name, _export(program))


def _add(pyseccomp: Any, program: Any, action: int, name: str) -> None:
    """A rule for ``name`` if this architecture has such a syscall."""
    if pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name) >= 0:
        program.add_rule(action, name)


def _export(program: Any) -> str:
    with tempfile.TemporaryFile() as handle:
        program.export_bpf(handle)
        handle.seek(0)
        return base64.b64encode(handle.read()).decode()
