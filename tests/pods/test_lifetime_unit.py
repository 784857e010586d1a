"""rkt.pod.lifetime without a pod: a plain ``sleep`` stands in for the stage1
process, so these run unprivileged. The pod-level behaviour (real stage1s,
status, /proc) is tests/pods/test_lifetime.py."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rkt.errors import PodInterrupted
from rkt.pod.lifetime import current_lifetime, pod_lifetime, spawn_stage1


def alive_with(mark: str) -> bool:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if mark.encode() in (entry / "cmdline").read_bytes().split(b"\0"):
                    state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                    if state != "Z":
                        return True
            except OSError:
                continue
    return False


def wait_gone(mark: str, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while alive_with(mark):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def mark() -> str:
    return str(random.randrange(10**8, 10**9))


def stage0(code: str) -> subprocess.Popen[str]:
    """A Python process playing stage0; it prints READY once its child runs."""
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)],
                            stdout=subprocess.PIPE, text=True)


def test_the_stage1_process_dies_with_rkt(mark: str) -> None:
    parent = stage0(f"""
        import time
        from rkt.pod.lifetime import spawn_stage1
        spawn_stage1(["sleep", "{mark}"])
        print("READY", flush=True)
        time.sleep(1000)
    """)
    assert parent.stdout is not None and parent.stdout.readline() == "READY\n"
    assert alive_with(mark)
    parent.kill()
    parent.wait()
    assert wait_gone(mark)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_stops_the_stage1_process_and_rkt_waits_for_it(
        mark: str, signum: int) -> None:
    parent = stage0(f"""
        from rkt.pod.lifetime import pod_lifetime, spawn_stage1
        with pod_lifetime():
            process = spawn_stage1(["sleep", "{mark}"])
            print("READY", flush=True)
            print("CODE", process.wait(), flush=True)
    """)
    assert parent.stdout is not None and parent.stdout.readline() == "READY\n"
    parent.send_signal(signum)
    assert parent.stdout.readline() == f"CODE {-signal.SIGTERM}\n"
    assert parent.wait(timeout=10) == 0
    assert wait_gone(mark)


def test_a_stage1_that_ignores_its_stop_is_killed_after_the_grace(mark: str) -> None:
    parent = stage0(f"""
        from rkt.pod.lifetime import pod_lifetime, spawn_stage1
        with pod_lifetime(stop_timeout=0, grace=1):
            process = spawn_stage1(["sh", "-c", "trap '' TERM; exec sleep {mark}"])
            print("READY", flush=True)
            print("CODE", process.wait(), flush=True)
    """)
    assert parent.stdout is not None and parent.stdout.readline() == "READY\n"
    time.sleep(0.3)  # the shell has set its trap and exec'd
    parent.send_signal(signal.SIGTERM)
    assert parent.stdout.readline() == f"CODE {-signal.SIGKILL}\n"
    assert parent.wait(timeout=10) == 0


def test_a_signal_while_preparing_unwinds_at_once() -> None:
    with pytest.raises(PodInterrupted) as caught, pod_lifetime():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # not reached: the handler raises
    assert caught.value.exit_code == 128 + signal.SIGTERM
    assert str(caught.value) == "interrupted by SIGTERM before the pod started"
    assert current_lifetime() is None
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_a_signal_once_deferred_waits_for_the_checkpoint_and_starts_nothing(
        mark: str) -> None:
    with pytest.raises(PodInterrupted) as caught, pod_lifetime() as lifetime:
        lifetime.defer()
        os.kill(os.getpid(), signal.SIGINT)
        reached = True  # the handler did not raise: setup goes on to its checkpoint
        spawn_stage1(["sleep", mark])
    assert reached
    assert caught.value.exit_code == 128 + signal.SIGINT
    assert not alive_with(mark)


# -- the time limit for a backend to start the pod (issue 16) -------------------------
def test_start_deadline_interrupts_a_backend_that_never_writes_its_pid(
    tmp_path: Path,
) -> None:
    from rkt.errors import Stage1Error
    from rkt.pod.lifetime import start_deadline

    pid_file = tmp_path / "pid"
    with pod_lifetime():
        process = spawn_stage1(["sleep", "60"])
        with pytest.raises(Stage1Error, match=r'stage1 "stuck" did not start the pod within '
                           r"0\.2 s \(no .*/pid; RKT_STAGE1_START_TIMEOUT"), \
                start_deadline(pid_file, "stuck", 0.2):
            process.wait()
        # its stage1 process is killed, and no alarm is left behind
        assert process.wait(timeout=10) == -signal.SIGKILL
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_start_deadline_leaves_a_started_pod_alone(tmp_path: Path) -> None:
    from rkt.pod.lifetime import start_deadline

    pid_file = tmp_path / "pid"
    pid_file.write_text("1")
    previous = signal.getsignal(signal.SIGALRM)
    with start_deadline(pid_file, "fine", 0.05):
        subprocess.run(["sleep", "0.3"], check=True)  # the alarm comes and goes
    assert signal.getsignal(signal.SIGALRM) is previous
    with start_deadline(tmp_path / "nothing", "unlimited", 0):
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_a_function_runs_in_a_fork_set_up_as_an_exec_d_child(tmp_path: Path) -> None:
    """spawn_stage1 of a function (the fly supervisor): its return value is the exit
    code, only pass_fds stay open, stdin is /dev/null when asked, rkt's signal
    handlers are gone."""
    kept_r, kept_w = os.pipe()
    other_r, other_w = os.pipe()
    report = tmp_path / "report"

    def stage1() -> int:
        open_fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
        report.write_text(json.dumps({
            "kept": kept_w in open_fds, "other": other_w in open_fds,
            "stdin": os.readlink("/proc/self/fd/0"),
            "sigterm": signal.getsignal(signal.SIGTERM) == signal.SIG_DFL,
        }))
        os.write(kept_w, b"x")
        return 7

    with pod_lifetime():
        process = spawn_stage1(stage1, pass_fds=(kept_w,), stdin=subprocess.DEVNULL)
        assert process.wait() == 7
    assert process.poll() == 7
    assert json.loads(report.read_text()) == {"kept": True, "other": False, "stdin": "/dev/null",
                                        "sigterm": True}
    assert os.read(kept_r, 1) == b"x"
    for fd in (kept_r, kept_w, other_r, other_w):
        os.close(fd)


def test_a_forked_stage1_killed_by_a_signal_reads_as_popen_says() -> None:
    def stage1() -> int:
        os.kill(os.getpid(), signal.SIGKILL)
        return 0

    process = spawn_stage1(stage1)
    assert process.wait() == -signal.SIGKILL
