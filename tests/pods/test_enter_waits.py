"""``rkt enter`` on a pod that is still starting its app waits for it (rkt's
contract), through the shared ``rkt.api.running_app_pid`` every backend can use.

A third-party stage1 that read the app's pid file itself once gave "internal
error: FileNotFoundError" when ``enter`` came a moment too early. The real-pod
test makes that moment last: it hides the pid file the supervisor wrote, and
gives it back while ``rkt enter`` waits. The helper's own failures are driven
against a pod directory locked by a real ``flock`` process and real children.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rkt.api import Pod, PodError, running_app_pid
from rkt_testing import AciBuilder, RktEnv, wait_for_file
from rkt_testing.plugin import FLY, NSPAWN, needs_root, stage1_image_path

pytestmark = needs_root


@pytest.fixture
def busybox_image(aci_builder: AciBuilder) -> Path:
    return aci_builder.build("busybox.aci", name="example.com/busybox", busybox=True,
                             exec_=["/bin/sleep", "1000"])


@pytest.mark.skipif(shutil.which("systemd-nspawn") is None, reason="needs systemd-nspawn")
@pytest.mark.skipif(not stage1_image_path("nspawn").exists(), reason="run rkt install first")
@pytest.mark.parametrize("stage1", [NSPAWN, FLY], ids=["nspawn", "fly"])
def test_enter_waits_for_an_app_that_has_not_started_yet(rkt_env: RktEnv, busybox_image: Path,
                                                          stage1: str) -> None:
    with rkt_env.running_pod("--insecure-options=image", "--net=host", stage1,
                             busybox_image) as (pod, uuid):
        pid_file = rkt_env.data_dir / "pods" / "run" / uuid / "stage1/rootfs/rkt/pids/busybox"
        wait_for_file(pid_file)
        # as if the supervisor had not got to writing it yet
        hidden = pid_file.with_name(".busybox")
        pid_file.rename(hidden)
        entering = subprocess.Popen(
            [rkt_env.rkt_binary(), *rkt_env.global_flags(), "enter", uuid, "/bin/echo", "in"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        time.sleep(0.5)
        still_waiting = entering.poll() is None
        hidden.rename(pid_file)
        out, err = entering.communicate(timeout=60)
        assert still_waiting, err
        assert (entering.returncode, out, err) == (0, "in\n", "")
        rkt_env.run("stop", "--force", uuid, check=True)
        pod.wait(timeout=30)


# -- the helper's one-line failures ---------------------------------------------------------
@pytest.fixture
def pod(tmp_path: Path) -> Pod:
    path = tmp_path / "pods" / "run" / "pod-uuid"
    (path / "stage1/rootfs/rkt/pids").mkdir(parents=True)
    return Pod(tmp_path / "pods", "pod-uuid", "run")


@pytest.fixture
def held(pod: Pod) -> Iterator[None]:
    """The pod's lock held by another process, as a running pod's rkt holds it."""
    holder = subprocess.Popen(["flock", "--exclusive", pod.path_text, "sleep", "600"])
    try:
        deadline = time.monotonic() + 10
        while not pod.is_locked_by_other():
            assert time.monotonic() < deadline and holder.poll() is None
            time.sleep(0.01)
        yield
    finally:
        holder.kill()
        holder.wait()


def _write(pod: Pod, name: str, pid: int) -> None:
    target = pod.path / name if name == "pid" else pod.stage1_rootfs() / "rkt/pids" / name
    target.write_text(str(pid))


def test_a_pod_nobody_runs_is_not_running(pod: Pod) -> None:
    with pytest.raises(PodError, match=r'^pod "pod-uuid" is not running$'):
        running_app_pid(pod, "app", timeout=5)


@pytest.mark.usefixtures("held")
def test_a_pod_without_its_pid_has_not_started(pod: Pod) -> None:
    with pytest.raises(PodError, match=r"^pod has not started within 0\.2 s$"):
        running_app_pid(pod, "app", timeout=0.2)


@pytest.mark.usefixtures("held")
def test_an_app_without_its_pid_file_has_not_started(pod: Pod) -> None:
    _write(pod, "pid", os.getpid())
    (pod.stage1_rootfs() / "rkt/pids/app").write_text("")  # opened, not yet written
    with pytest.raises(PodError, match=r'^app "app" has not started within 0\.2 s$'):
        running_app_pid(pod, "app", timeout=0.2)


@pytest.mark.usefixtures("held")
def test_a_running_app_is_found_below_the_pods_pid1_and_an_exited_one_is_not(pod: Pod) -> None:
    # no PID namespace here, so the app's PID inside is its host PID (as under fly)
    _write(pod, "pid", os.getpid())
    app = subprocess.Popen(["sleep", "600"])
    try:
        _write(pod, "app", app.pid)
        assert running_app_pid(pod, "app", timeout=5) == app.pid
    finally:
        app.kill()
        app.wait()
    with pytest.raises(PodError, match=r'^app "app" is not running \(it has exited\)$'):
        running_app_pid(pod, "app", timeout=5)
