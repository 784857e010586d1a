"""``rkt.pod.seccomp``: isolators and ``--seccomp`` to BPF programs (libseccomp).

These check the compiled program's shape and the refusals; what a filter does
to an app is in test_isolation.py, through the real ``rkt run``.
"""

from __future__ import annotations

import base64

import pytest

from rkt.errors import PodError, UsageError
from rkt.pod import seccomp
from rkt.pod.seccomp import compile_filter, filter_for, parse_seccomp_flag


def instructions(program: str) -> int:
    return len(base64.b64decode(program)) // 8  # struct sock_filter is 8 bytes


def test_default_filter_is_rkts_blocklist_failing_with_eperm() -> None:
    default = filter_for(None)
    assert default == filter_for([{"name": "resource/memory", "value": {"limit": "1G"}}])
    assert (default.mode, default.set, default.errno) == (
        "remove", ("@rkt/default-blacklist",), "EPERM")
    assert instructions(default.program) > len(seccomp.DEFAULT_BLOCKLIST) // 2


def test_the_last_seccomp_isolator_wins() -> None:
    chosen = filter_for([
        {"name": "os/linux/seccomp-remove-set", "value": {"set": ["mkdir"]}},
        {"name": "os/linux/seccomp-retain-set", "value": {"set": ["read"], "errno": "ENOSYS"}},
    ])
    assert (chosen.mode, chosen.set, chosen.errno) == ("retain", ("read",), "ENOSYS")


def test_retaining_everything_is_no_filter_and_removing_everything_is_not() -> None:
    assert compile_filter("retain", ("@appc.io/all",), "").program == ""
    assert instructions(compile_filter("remove", ("@appc.io/all",), "EPERM").program) > 2


def test_syscalls_other_architectures_have_are_skipped() -> None:
    # stime and chown32 exist on i386, not on x86_64: nothing to filter, no error
    assert compile_filter("remove", ("stime", "chown32"), "EPERM").program


@pytest.mark.parametrize(("mode", "names", "errno", "message"), [
    ("remove", ("frobnicate",), "", 'seccomp: unknown syscall "frobnicate"'),
    ("remove", ("@rkt/nonsense",), "", 'seccomp: unknown syscall group "@rkt/nonsense"'),
    ("retain", ("read",), "EWHAT", 'seccomp: unknown errno "EWHAT"'),
    ("retain", ("read",), "errorcode", 'seccomp: unknown errno "errorcode"'),
])
def test_bad_sets_are_refused(mode: str, names: tuple[str, ...], errno: str,
                              message: str) -> None:
    with pytest.raises((UsageError, PodError), match=message):
        compile_filter(mode, names, errno)


def test_seccomp_flag_as_rkt_1x_wrote_it() -> None:
    assert parse_seccomp_flag("mode=remove,errno=EACCES,mkdir,rmdir") == {
        "name": "os/linux/seccomp-remove-set",
        "value": {"set": ["mkdir", "rmdir"], "errno": "EACCES"}}
    assert parse_seccomp_flag("mode=retain,@rkt/default-blacklist") == {
        "name": "os/linux/seccomp-retain-set", "value": {"set": ["@rkt/default-blacklist"]}}


@pytest.mark.parametrize(("flag", "message"), [
    ("mkdir", "expected mode=remove or mode=retain"),
    ("mode=drop,mkdir", "expected mode=remove or mode=retain"),
    ("mode=remove", "name at least one syscall"),
    ("mode=remove,mode=retain,mkdir", 'unexpected "mode=retain"'),
    ("mode=remove,level=3,mkdir", 'unexpected "level=3"'),
    ("mode=remove,errno=NOPE,mkdir", 'unknown errno "NOPE"'),
])
def test_bad_seccomp_flags(flag: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_seccomp_flag(flag)
