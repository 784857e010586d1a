"""Seccomp filters: from an app's isolator (or rkt's default) to a BPF program.

stage0 compiles every app's filter here, with libseccomp (Debian's
``libseccomp2``, through ctypes), when the pod is prepared; the program travels in
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
import os
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


class _Libseccomp:
    """The few libseccomp calls rkt needs, through ctypes.

    Our own binding rather than a PyPI one: the ``seccomp`` bindings compile C at
    install time, and ``pyseccomp`` finds the library with ``ctypes.util``, which
    runs ``ldconfig`` in a subprocess: 50 ms on every pod start. Loading the
    soname directly takes a fraction of a millisecond.
    """

    #: actions (linux/seccomp.h)
    ALLOW = 0x7FFF0000
    KILL_PROCESS = 0x80000000
    #: scmp_compare's SCMP_CMP_MASKED_EQ
    MASKED_EQ = 7
    #: seccomp_syscall_resolve_name's answer for a name no architecture has
    UNKNOWN = -1

    def __init__(self) -> None:
        import ctypes

        try:
            lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
        except OSError as exc:
            raise PodError(
                f"seccomp filters need libseccomp (Debian package libseccomp2): {exc}"
            ) from exc
        lib.seccomp_init.argtypes = [ctypes.c_uint32]
        lib.seccomp_init.restype = ctypes.c_void_p
        lib.seccomp_release.argtypes = [ctypes.c_void_p]
        lib.seccomp_release.restype = None
        lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_syscall_resolve_name.restype = ctypes.c_int
        lib.seccomp_rule_add_array.argtypes = [
            ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p]
        lib.seccomp_rule_add_array.restype = ctypes.c_int
        lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.seccomp_export_bpf.restype = ctypes.c_int
        self._lib = lib
        self._ctypes = ctypes

        class ArgCompare(ctypes.Structure):  # struct scmp_arg_cmp
            _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                        ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]

        self._arg_compare = ArgCompare

    @staticmethod
    def errno_action(number: int) -> int:
        return 0x00050000 | (number & 0xFFFF)

    def resolve(self, name: str) -> int:
        """The syscall's number here; below -1 for one only other architectures have."""
        return int(self._lib.seccomp_syscall_resolve_name(name.encode()))

    def compile(self, default_action: int,
                rules: list[tuple[int, int, tuple[int, int] | None]]) -> bytes:
        """A BPF program: ``rules`` are (action, syscall number, (arg 0 mask, value) or None)."""
        context = self._lib.seccomp_init(default_action)
        if not context:
            raise PodError("seccomp: libseccomp could not start a filter")
        try:
            for action, number, masked in rules:
                if masked is None:
                    result = self._lib.seccomp_rule_add_array(context, action, number, 0, None)
                else:
                    compare = self._arg_compare(0, self.MASKED_EQ, masked[0], masked[1])
                    result = self._lib.seccomp_rule_add_array(
                        context, action, number, 1, self._ctypes.byref(compare))
                if result < 0:
                    raise PodError(f"seccomp: libseccomp refused a rule for syscall {number}: "
                                   f"{os.strerror(-result)}")
            fd = os.memfd_create("rkt-seccomp")
            try:
                result = self._lib.seccomp_export_bpf(context, fd)
                if result < 0:
                    raise PodError(f"seccomp: cannot export the filter: {os.strerror(-result)}")
                size = os.lseek(fd, 0, os.SEEK_END)
                return os.pread(fd, size, 0)
            finally:
                os.close(fd)
        finally:
            self._lib.seccomp_release(context)


_LIBSECCOMP: _Libseccomp | None = None


def _libseccomp() -> _Libseccomp:
    global _LIBSECCOMP
    if _LIBSECCOMP is None:
        _LIBSECCOMP = _Libseccomp()
    return _LIBSECCOMP


def compile_filter(mode: str, names: tuple[str, ...], errno_name: str) -> SeccompFilter:
    """Compile a remove- or retain-set to a BPF program for this machine.

    ``@appc.io/all`` retained is no filter at all (``program`` is ``""``).
    """
    lib = _libseccomp()
    action = lib.errno_action(errno_number(errno_name)) if errno_name else lib.KILL_PROCESS
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
        number = lib.resolve(name)
        if number == lib.UNKNOWN:
            raise UsageError(f'seccomp: unknown syscall "{name}"')
        if number >= 0:  # below -1: a syscall other architectures have, not this one
            numbers[name] = number
    rules: list[tuple[int, int, tuple[int, int] | None]] = []
    if effective_mode == "retain":
        default_action = action
        for name in ALWAYS_ALLOWED:
            number = lib.resolve(name)
            if number >= 0:
                numbers[name] = number
        rules += [(lib.ALLOW, number, None) for number in numbers.values()]
    else:
        default_action = lib.ALLOW
        rules += [(action, number, None) for name, number in numbers.items()
                  if name not in ALWAYS_ALLOWED]
        if with_default:
            clone = lib.resolve("clone")
            rules += [(action, clone, (flag, flag)) for flag in CLONE_NAMESPACE_FLAGS]
            clone3 = lib.resolve("clone3")
            if "clone3" not in numbers and clone3 >= 0:
                # clone3's flags are in memory a filter cannot read: ENOSYS makes
                # the C library fall back to clone, which is checked above
                rules.append((lib.errno_action(errno_codes.ENOSYS), clone3, None))
    program = lib.compile(default_action, rules)
    return SeccompFilter(mode, names, errno_name, base64.b64encode(program).decode())


#: ``platform.machine()`` -> the OCI runtime-spec's name of that architecture
_OCI_ARCHITECTURES = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64",
                      "ppc64le": "SCMP_ARCH_PPC64LE", "s390x": "SCMP_ARCH_S390X",
                      "riscv64": "SCMP_ARCH_RISCV64"}


def oci_seccomp(seccomp: SeccompFilter | None) -> dict[str, Any] | None:
    """The app's filter as an OCI runtime-spec ``linux.seccomp`` object, or ``None``.

    The same rules :func:`compile_filter` compiles, for a stage1 that hands apps
    to an OCI runtime (which takes rule lists, not BPF programs): the sets
    expanded, :data:`ALWAYS_ALLOWED` never filtered, and, with rkt's default
    group, namespace-making ``clone`` flags refused and ``clone3`` failing with
    ``ENOSYS``. Syscalls this architecture lacks are left to the runtime, which
    skips names its libseccomp does not know (runc does).
    """
    if seccomp is None or (seccomp.mode == "retain" and ALL in seccomp.set):
        return None
    import platform

    if seccomp.errno:
        deny: dict[str, Any] = {"action": "SCMP_ACT_ERRNO",
                                "errnoRet": errno_number(seccomp.errno)}
    else:
        deny = {"action": "SCMP_ACT_KILL_PROCESS"}
    architecture = _OCI_ARCHITECTURES.get(platform.machine())
    profile: dict[str, Any] = {"architectures": [architecture] if architecture else []}
    if ALL in seccomp.set or seccomp.mode == "retain":
        syscalls, _ = _expand(tuple(n for n in seccomp.set if n != ALL))
        allowed = [] if ALL in seccomp.set else syscalls
        names = sorted({*allowed, *ALWAYS_ALLOWED})
        profile["defaultAction"] = deny["action"]
        if "errnoRet" in deny:
            profile["defaultErrnoRet"] = deny["errnoRet"]
        profile["syscalls"] = [{"names": names, "action": "SCMP_ACT_ALLOW"}]
        return profile
    syscalls, with_default = _expand(seccomp.set)
    names = sorted(set(syscalls) - set(ALWAYS_ALLOWED))
    rules: list[dict[str, Any]] = [{"names": names, **deny}] if names else []
    if with_default:
        rules += [{"names": ["clone"], **deny,
                   "args": [{"index": 0, "value": flag, "valueTwo": flag,
                             "op": "SCMP_CMP_MASKED_EQ"}]}
                  for flag in CLONE_NAMESPACE_FLAGS]
        if "clone3" not in names:
            rules.append({"names": ["clone3"], "action": "SCMP_ACT_ERRNO",
                          "errnoRet": errno_codes.ENOSYS})
    profile["defaultAction"] = "SCMP_ACT_ALLOW"
    profile["syscalls"] = rules
    return profile
