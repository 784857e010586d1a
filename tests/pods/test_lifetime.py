"""The process a scheduler started is the pod's lifetime (rkt.pod.lifetime), as root.

Nomad's rkt driver stops a task with SIGINT to ``rkt run-prepared`` and SIGKILL
after a timeout; a systemd unit (``KillMode=mixed``) sends SIGTERM to ``rkt
run``. Each must end the whole pod: ``status`` says exited and no process of
the pod remains. Every pod's app is ``sleep`` with a number no other process
uses, so /proc shows whether anything of it survived.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rkt_testing import AciBuilder, RktEnv, wait_for_file
from rkt_testing.plugin import FLY, NSPAWN, OCI, needs_oci_stage1, needs_root

pytestmark = [needs_root, pytest.mark.root, pytest.mark.slow]

STAGE1S = pytest.mark.parametrize("stage1", [
    NSPAWN, FLY, pytest.param(OCI, marks=needs_oci_stage1)], ids=["nspawn", "fly", "oci"])
SIGNALS = pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL],
                                  ids=["SIGINT", "SIGTERM", "SIGKILL"])
#: the supervisor's stop timeout (SupervisorJob.stop_timeout) and some slack
STOP_TIMEOUT = 10 + 10


@pytest.fixture
def env(rkt_env: RktEnv) -> RktEnv:
    return rkt_env


@pytest.fixture
def sleeper(aci_builder: AciBuilder) -> Path:
    return aci_builder.build("sleeper.aci", name="example.com/sleeper", busybox=True,
                             exec_=["/bin/sleep", "1000"])


@pytest.fixture
def mark() -> str:
    """A sleep duration no other process on this machine uses."""
    return str(random.randrange(10**8, 10**9))


def processes_with(mark: str) -> list[int]:
    """PIDs whose command line mentions ``mark`` (the pod's app, wherever it runs)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if mark.encode() in argv:
            found.append(int(entry.name))
    return found


@pytest.fixture
def reaper(mark: str) -> Iterator[None]:
    """Whatever a test did, kill what is left of its pod so the machine stays clean."""
    yield
    for pid in processes_with(mark):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def start(env: RktEnv, *args: str | Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [env.rkt_binary(), *env.global_flags(), "--insecure-options=image", *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_running(env: RktEnv, uuid: str, mark: str) -> None:
    """Until the pod runs and its app is up (the app, not only the pod, gets signals)."""
    ready = env.run("status", "--wait-ready=20s", uuid)
    assert "state=running" in ready.stdout, ready.stderr
    deadline = time.monotonic() + 20
    while not processes_with(mark):
        assert time.monotonic() < deadline, "the app never started"
        time.sleep(0.05)
    time.sleep(0.3)  # the supervisor has installed its signal handlers by now


def assert_pod_gone(env: RktEnv, uuid: str, mark: str, process: subprocess.Popen[str],
                    signum: int) -> None:
    code = process.wait(timeout=STOP_TIMEOUT)
    if signum == signal.SIGKILL:
        assert code == -signal.SIGKILL
    else:
        # stopped on request: the pod's code (0), its app's own recorded
        assert code == 0, process.stderr.read() if process.stderr else ""
    deadline = time.monotonic() + 5  # SIGKILL: the kernel reaps the pod asynchronously
    while processes_with(mark) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_with(mark) == []
    status = env.run("status", uuid)
    assert "state=exited" in status.stdout and "exited=true" in status.stdout, status.stdout
    record = json.loads(env.run("status", "--format=json", uuid).stdout)
    assert record["state"] == "exited"
    if signum != signal.SIGKILL:
        # the app got its stop signal (SIGTERM) and its end was recorded
        assert "app-sleeper=143" in status.stdout, status.stdout


@STAGE1S
@SIGNALS
def test_signal_to_run_prepared_ends_the_pod(env: RktEnv, sleeper: Path, stage1: str,
                                             signum: int, mark: str, reaper: None) -> None:
    prepared = env.run("--insecure-options=image", "prepare", stage1, sleeper,
                       "--exec=/bin/sleep", "--", mark)
    assert prepared.returncode == 0, prepared.stderr
    uuid = prepared.stdout.strip()
    process = start(env, "run-prepared", uuid)
    wait_running(env, uuid, mark)
    process.send_signal(signum)
    assert_pod_gone(env, uuid, mark, process, signum)


@STAGE1S
@SIGNALS
def test_signal_to_rkt_run_ends_the_pod(env: RktEnv, sleeper: Path, stage1: str, signum: int,
                                        mark: str, reaper: None, tmp_path: Path) -> None:
    uuid_file = tmp_path / "uuid"
    process = start(env, "run", f"--uuid-file-save={uuid_file}", stage1, sleeper,
                    "--exec=/bin/sleep", "--", mark)
    uuid = wait_for_file(uuid_file, process=process).read_text()
    wait_running(env, uuid, mark)
    process.send_signal(signum)
    assert_pod_gone(env, uuid, mark, process, signum)


def test_systemd_stop_stand_in(env: RktEnv, sleeper: Path, mark: str, reaper: None,
                               tmp_path: Path) -> None:
    """systemd stops ``ExecStart=rkt run ...`` (KillMode=mixed) with SIGTERM to the
    main process; the pod must be gone before systemd's SIGKILL sweep would come.
    (systemd itself is not PID 1 here: this replays what it does.)"""
    uuid_file = tmp_path / "uuid"
    process = start(env, "run", f"--uuid-file-save={uuid_file}", sleeper,
                    "--exec=/bin/sleep", "--", mark)
    uuid = wait_for_file(uuid_file, process=process).read_text()
    wait_running(env, uuid, mark)
    process.terminate()
    assert_pod_gone(env, uuid, mark, process, signal.SIGTERM)
    assert " exited " in env.run("list", "--no-legend").stdout


@pytest.mark.parametrize("delay", [0.15, 0.3, 0.45, 0.6, 0.8])
def test_signal_while_the_pod_is_set_up_leaves_nothing_half_done(
    env: RktEnv, sleeper: Path, mark: str, reaper: None, delay: float
) -> None:
    """SIGTERM at some point of ``run-prepared``'s setup: whenever it lands, the
    pod is either still prepared (it never started) or has run and exited; no
    process of it remains, and nothing is left mounted."""
    prepared = env.run("--insecure-options=image", "prepare", sleeper, "--exec=/bin/sleep",
                       "--", mark)
    uuid = prepared.stdout.strip()
    process = start(env, "run-prepared", uuid)
    time.sleep(delay)
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=STOP_TIMEOUT)
    stderr = process.stderr.read() if process.stderr else ""
    deadline = time.monotonic() + 5
    while processes_with(mark) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_with(mark) == []
    state = json.loads(env.run("status", "--format=json", uuid).stdout)["state"]
    assert state in ("prepared", "exited"), (state, code, stderr)
    if state == "prepared":
        # never started: one line says so, and the pod can still be run
        assert code in (-signal.SIGTERM, 128 + signal.SIGTERM), stderr
        assert "Traceback" not in stderr
    with open("/proc/self/mountinfo") as mounts:
        assert str(env.data_dir) not in mounts.read()


def test_rkt_stop_still_works_under_run_prepared(env: RktEnv, sleeper: Path, mark: str,
                                                 reaper: None) -> None:
    uuid = env.run("--insecure-options=image", "prepare", sleeper, "--exec=/bin/sleep",
                   "--", mark).stdout.strip()
    process = start(env, "run-prepared", uuid)
    wait_running(env, uuid, mark)
    env.run("stop", uuid, check=True)
    assert_pod_gone(env, uuid, mark, process, signal.SIGTERM)
