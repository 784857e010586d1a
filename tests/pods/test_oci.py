"""The OCI stage1 (``stage1_oci/``, docs/oci.md) through the real ``rkt``, as root,
with Debian's real ``runc``.

Each test checks what a user sees: the app's exit code, what ``rkt enter`` lands
in, an app that cannot chown without ``CAP_CHOWN``, a hog the kernel OOM-kills.
That runc is what ran the app is shown by pointing ``RKT_STAGE1_OCI_RUNTIME`` at
a wrapper that records its arguments and then execs the real runc.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rkt.pod.cgroups import detect_host
from rkt_testing import AciBuilder, RktEnv, assert_one_line_error
from rkt_testing.aci import image_manifest
from rkt_testing.plugin import OCI, needs_oci_stage1

HOST = detect_host()

pytestmark = [needs_oci_stage1, pytest.mark.root, pytest.mark.slow]

#: busybox has no allocator: dd's 200M block is one buffer, filled from /dev/zero
ALLOCATE_200M = ["/bin/busybox", "dd", "if=/dev/zero", "bs=200M", "count=1", "of=/dev/null"]


def run(target: RktEnv, *args: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return target.run("--insecure-options=image", *args, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def recorded_runc(rkt_env: RktEnv, tmp_path: Path) -> Path:
    """A runtime that appends its command line to a file, then is runc."""
    record = tmp_path / "runtime-calls"
    wrapper = tmp_path / "bin" / "recording-runc"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> {record}\nexec {shutil.which("runc")} "$@"\n')
    wrapper.chmod(0o755)
    rkt_env.env["RKT_STAGE1_OCI_RUNTIME"] = str(wrapper)
    return record


def pod_dir(env: RktEnv, pod: str) -> Path:
    [found] = (env.data_dir / "pods").glob(f"*/{pod}")
    return found


def test_an_app_runs_under_runc_and_rkt_exits_with_its_code(
    rkt_env: RktEnv, aci_builder: AciBuilder, tmp_path: Path, recorded_runc: Path
) -> None:
    image = aci_builder.build(
        "exit.aci", name="example.com/exit", busybox=True,
        exec_=["/bin/sh", "-c", 'echo "hello from $AC_APP_NAME as $(id -u)"; exit 7'])
    result = run(rkt_env, "run", OCI, f"--uuid-file-save={tmp_path / 'uuid'}", image)
    assert result.returncode == 7, result.stderr
    assert result.stdout.splitlines() == ["hello from exit as 0"]
    pod = (tmp_path / "uuid").read_text().strip()
    assert "app-exit=7" in rkt_env.run("status", pod).stdout.splitlines()
    # runc ran the app's bundle, from a state root of the pod's own
    [call] = [line for line in recorded_runc.read_text().splitlines() if " run " in line]
    bundle = pod_dir(rkt_env, pod) / "oci" / "exit"
    assert f"--root {pod_dir(rkt_env, pod) / 'oci' / 'state'} " in call
    assert f"--bundle {bundle} " in call
    config = json.loads((bundle / "config.json").read_text())
    assert config["ociVersion"].startswith("1.0.")
    assert config["process"]["args"][0] == "/bin/sh"

    collected = rkt_env.run("gc", "--grace-period=0s")
    assert collected.returncode == 0, collected.stderr
    assert list((rkt_env.data_dir / "pods").glob(f"*/{pod}")) == []


def test_a_signalled_app_is_recorded_as_128_plus_the_signal(
    rkt_env: RktEnv, aci_builder: AciBuilder, tmp_path: Path
) -> None:
    image = aci_builder.build("kill.aci", name="example.com/kill", busybox=True,
                              exec_=["/bin/sh", "-c", "kill -KILL $$"])
    result = run(rkt_env, "run", OCI, f"--uuid-file-save={tmp_path / 'uuid'}", image)
    assert result.returncode == 137, result.stderr
    pod = (tmp_path / "uuid").read_text().strip()
    assert "app-kill=137" in rkt_env.run("status", pod).stdout.splitlines()


def wait_running(env: RktEnv, uuid_file: Path, process: subprocess.Popen[str]) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        if uuid_file.exists() and uuid_file.read_text().strip():
            pod = uuid_file.read_text().strip()
            if "state=running" in env.run("status", pod).stdout.splitlines():
                return pod
        time.sleep(0.1)
    raise AssertionError("the pod did not start")


def test_enter_lands_in_the_app_and_stop_ends_the_pod(
    rkt_env: RktEnv, aci_builder: AciBuilder, tmp_path: Path
) -> None:
    image = aci_builder.build("sleeper.aci", name="example.com/sleeper", busybox=True,
                              exec_=["/bin/sleep", "600"],
                              files={"only-in-the-image": "yes\n"})
    uuid_file = tmp_path / "uuid"
    process = subprocess.Popen(
        [rkt_env.rkt_binary(), *rkt_env.global_flags(), "--insecure-options=image", "run",
         OCI, "--net=none", f"--uuid-file-save={uuid_file}", "--hostname=oci-pod", str(image)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **rkt_env.env})
    try:
        pod = wait_running(rkt_env, uuid_file, process)
        entered = rkt_env.run("enter", pod, "/bin/sh", "-c",
                              "hostname; cat /only-in-the-image; grep CapBnd /proc/self/status;"
                              " ls /work 2>&1 || echo no-host-work")
        assert entered.returncode == 0, entered.stderr
        lines = entered.stdout.splitlines()
        assert lines[:2] == ["oci-pod", "yes"]
        assert lines[2].split() == ["CapBnd:", "00000000a80425fb"]  # the app's set, no more
        assert lines[-1] == "no-host-work"

        stopped = rkt_env.run("stop", pod)
        assert stopped.returncode == 0, stopped.stderr
        assert process.wait(timeout=60) == 0  # stopped on request
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    status = rkt_env.run("status", pod).stdout.splitlines()
    assert "state=exited" in status
    assert "app-sleeper=143" in status  # SIGTERM


def test_caps_remove_chown_makes_chown_fail(rkt_env: RktEnv, aci_builder: AciBuilder) -> None:
    image = aci_builder.build("chown.aci", name="example.com/chown", busybox=True,
                              exec_=["/bin/sh", "-c", "touch /f && chown 1:1 /f && echo chowned"])
    allowed = run(rkt_env, "run", OCI, "--net=none", image)
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout.splitlines() == ["chowned"]

    refused = run(rkt_env, "run", OCI, "--net=none", image, "--caps-remove=CAP_CHOWN")
    assert refused.returncode == 1, refused.stderr
    assert "chowned" not in refused.stdout
    assert "Operation not permitted" in refused.stderr


def test_the_default_seccomp_filter_holds(rkt_env: RktEnv, aci_builder: AciBuilder) -> None:
    """rkt's default remove-set, translated for runc: unshare(2) fails with EPERM even
    for root with CAP_SYS_ADMIN; with --insecure-options=seccomp it does not."""
    image = aci_builder.build("ns.aci", name="example.com/ns", busybox=True,
                              exec_=["/bin/busybox", "unshare", "--uts", "/bin/true"])
    filtered = run(rkt_env, "run", OCI, "--net=none", "--caps-retain=CAP_SYS_ADMIN", image)
    assert filtered.returncode != 0
    assert "Operation not permitted" in filtered.stderr
    open_ = rkt_env.run("--insecure-options=image,seccomp", "run", OCI, "--net=none",
                        "--caps-retain=CAP_SYS_ADMIN", image)
    assert open_.returncode == 0, open_.stderr


def test_a_seccomp_retain_set_is_refused_and_a_remove_set_holds(
    rkt_env: RktEnv, aci_builder: AciBuilder, tmp_path: Path
) -> None:
    image = aci_builder.build("t.aci", name="example.com/t", busybox=True,
                              exec_=["/bin/busybox", "mkdir", "/made"])
    refused = run(rkt_env, "run", OCI, "--net=none", image,
                  "--seccomp=mode=retain,errno=ENOSYS,read,write,exit_group")
    assert_one_line_error(refused, 'app "t": the oci stage1 does not support seccomp '
                                   "retain-sets")
    removed = run(rkt_env, "run", OCI, "--net=none", image,
                  "--seccomp=mode=remove,errno=EACCES,mkdir,mkdirat")
    assert removed.returncode == 1
    assert "Permission denied" in removed.stderr  # EACCES, the set's errno


@pytest.fixture
def cgroup_parent(rkt_env: RktEnv) -> Iterator[str]:
    with rkt_env.cgroup_parent() as parent:
        yield parent


@pytest.mark.skipif(HOST is None or HOST.version != 1,
                    reason="needs the cgroup v1 memory and cpu controllers")
def test_an_app_over_its_memory_limit_is_oom_killed(
    rkt_env: RktEnv, aci_builder: AciBuilder, tmp_path: Path, cgroup_parent: str
) -> None:
    manifest = image_manifest("example.com/hog", exec_=ALLOCATE_200M, app={
        "isolators": [{"name": "resource/memory", "value": {"limit": "64M"}}]})
    image = aci_builder.build("hog.aci", manifest=manifest, busybox=True)
    result = run(rkt_env, "run", OCI, "--net=none", f"--uuid-file-save={tmp_path / 'uuid'}",
                 image)
    assert result.returncode == 137, result.stderr
    assert ('rkt: app "hog" was killed by the kernel: it hit its memory limit (64M)'
            in result.stderr.splitlines())
    pod = (tmp_path / "uuid").read_text().strip()
    app = json.loads(rkt_env.run("status", "--format=json", pod).stdout)["apps"][0]
    assert (app["exit_code"], app["oom_killed"]) == (137, True)

    # the control: with room for it the same app succeeds
    roomy = run(rkt_env, "run", OCI, "--net=none", image, "--memory=512Mi")
    assert roomy.returncode == 0, roomy.stderr


def test_gc_cleans_up_after_rkt_was_killed(
    rkt_env: RktEnv, aci_builder: AciBuilder, tmp_path: Path, cgroup_parent: str
) -> None:
    """SIGKILL to rkt ends the pod (the apps die with the pod's PID namespace);
    gc then deletes what runc left in the pod's state root and the cgroups runc
    made beside stage0's (the fixture checks every hierarchy)."""
    image = aci_builder.build("sleeper.aci", name="example.com/sleeper", busybox=True,
                              exec_=["/bin/sleep", "600"])
    uuid_file = tmp_path / "uuid"
    process = subprocess.Popen(
        [rkt_env.rkt_binary(), *rkt_env.global_flags(), "--insecure-options=image", "run",
         OCI, "--net=none", f"--uuid-file-save={uuid_file}", "--memory=64M", str(image)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **rkt_env.env})
    try:
        pod = wait_running(rkt_env, uuid_file, process)
        pid_file = pod_dir(rkt_env, pod) / "oci" / "sleeper" / "pid"
        deadline = time.monotonic() + 10
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        app_pid = int(pid_file.read_text())
        process.kill()
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{app_pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{app_pid}").exists()  # the app died with rkt
    assert "state=exited" in rkt_env.run("status", pod).stdout.splitlines()
    assert (pod_dir(rkt_env, pod) / "oci" / "state" / "sleeper").is_dir()  # runc's record

    collected = rkt_env.run("gc", "--grace-period=0s")
    assert collected.returncode == 0, collected.stderr
    assert list((rkt_env.data_dir / "pods").glob(f"*/{pod}")) == []


def test_two_apps_share_the_pods_hostname_ipc_and_volume(
    rkt_env: RktEnv, aci_builder: AciBuilder, tmp_path: Path
) -> None:
    image = aci_builder.build("pair.aci", name="example.com/pair", busybox=True,
                              exec_=["/bin/true"])
    shared = tmp_path / "shared"
    shared.mkdir()
    script = 'hostname > /shared/$AC_APP_NAME; readlink /proc/self/ns/ipc >> /shared/$AC_APP_NAME'
    result = run(rkt_env, "run", OCI, "--net=none", "--hostname=pair-pod",
                 f"--volume=shared,kind=host,source={shared}",
                 image, "--name=one", "--mount=volume=shared,target=/shared",
                 "--exec=/bin/sh", "--", "-c", script, "---",
                 image, "--name=two", "--mount=volume=shared,target=/shared",
                 "--exec=/bin/sh", "--", "-c", script)
    assert result.returncode == 0, result.stderr
    one, two = ((shared / name).read_text().splitlines() for name in ("one", "two"))
    assert one[0] == two[0] == "pair-pod"
    assert one[1] == two[1]  # one IPC namespace for the pod
    assert one[1] != os.readlink("/proc/self/ns/ipc")


def test_a_missing_runtime_is_one_line(rkt_env: RktEnv, aci_builder: AciBuilder) -> None:
    image = aci_builder.build("t.aci", name="example.com/t", busybox=True, exec_=["/bin/true"])
    result = run(rkt_env, "run", OCI, "--net=none", image,
                 env={"RKT_STAGE1_OCI_RUNTIME": "no-such-runtime"})
    assert_one_line_error(result, 'the OCI runtime "no-such-runtime" is not installed')


def test_a_runtime_failure_is_one_line_with_the_runtimes_message(
    rkt_env: RktEnv, aci_builder: AciBuilder
) -> None:
    """runc cannot exec a file that is not executable: the app's setup failed (254)."""
    image = aci_builder.build("t.aci", name="example.com/t", busybox=True,
                              exec_=["/not-executable"], files={"not-executable": "data\n"})
    result = run(rkt_env, "run", OCI, "--net=none", image)
    assert_one_line_error(result, 'app "t": runc could not start it:', "permission denied",
                          status=254)


def test_event_handlers_run_in_order_around_the_app(
    rkt_env: RktEnv, aci_builder: AciBuilder, tmp_path: Path
) -> None:
    """pre-start and post-stop run as containers of their own on the app's rootfs."""
    log = tmp_path / "log"
    log.mkdir()

    def image(name: str, pre_start: str) -> Path:
        manifest = image_manifest(
            f"example.com/{name}", exec_=["/bin/sh", "-c", "cat /pre >> /log/order; "
                                          "echo app >> /log/order; exit 3"],
            app={"eventHandlers": [
                {"name": "pre-start", "exec": ["/bin/sh", "-c", pre_start]},
                {"name": "post-stop", "exec": ["/bin/sh", "-c", "echo post >> /log/order"]}],
                "mountPoints": [{"name": "log", "path": "/log"}]})
        return aci_builder.build(f"{name}.aci", manifest=manifest, busybox=True)

    volume = f"--volume=log,kind=host,source={log}"
    result = run(rkt_env, "run", OCI, "--net=none", volume,
                 image("handled", "echo pre > /pre"))
    assert result.returncode == 3, result.stderr
    assert (log / "order").read_text().splitlines() == ["pre", "app", "post"]

    (log / "order").unlink()
    failed = run(rkt_env, "run", OCI, "--net=none", volume, image("refused", "exit 5"))
    assert failed.returncode == 5
    assert 'rkt: app "refused": pre-start handler failed with exit code 5' in \
        failed.stderr.splitlines()
    assert (log / "order").read_text().splitlines() == ["post"]  # the app never ran
