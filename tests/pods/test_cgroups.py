"""Memory and CPU limits through the real ``rkt`` command, nspawn and fly, as root.

Each test puts its pods below a cgroup parent of its own (``paths.d``'s
``cgroup-parent``), so tests running side by side on this host never meet, and
checks the effect a user sees: the app is OOM-killed and rkt says so, a busy
loop is throttled (the kernel's own accounting, no wall-clock timing), and the
cgroups are gone after ``gc``. This host is cgroup v1; the v2 writer is covered
in ``test_cgroups_unit.py`` against a fake tree.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rkt.pod.cgroups import detect_host
from rkt_testing import AciBuilder, RktEnv, assert_one_line_error
from rkt_testing.aci import image_manifest
from rkt_testing.plugin import FLY, KVM, NSPAWN, OCI, needs_kvm_stage1, needs_oci_stage1, needs_root

HOST = detect_host()

pytestmark = [
    needs_root,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("systemd-nspawn") is None, reason="needs systemd-nspawn"),
    pytest.mark.skipif(HOST is None or HOST.version != 1,
                       reason="needs the cgroup v1 memory and cpu controllers"),
]

STAGE1S = pytest.mark.parametrize("stage1", [
    NSPAWN, FLY, pytest.param(OCI, marks=needs_oci_stage1)], ids=["nspawn", "fly", "oci"])
#: kvm: the limit holds in the guest's own cgroup of the app (docs/kvm.md); the
#: host's app cgroups are made and hold no process, so the CPU test's host-side
#: accounting does not apply to it
WITH_KVM = pytest.mark.parametrize("stage1", [
    NSPAWN, FLY, pytest.param(KVM, marks=needs_kvm_stage1),
    pytest.param(OCI, marks=needs_oci_stage1)],
    ids=["nspawn", "fly", "kvm", "oci"])
#: busybox has no allocator: dd's 200M block is one buffer, filled from /dev/zero
ALLOCATE_200M = ["/bin/busybox", "dd", "if=/dev/zero", "bs=200M", "count=1", "of=/dev/null"]


def hierarchy(controller: str) -> Path:
    assert HOST is not None
    return next(Path(h.path) for h in HOST.hierarchies if controller in h.controllers)


@pytest.fixture
def env(rkt_env: RktEnv) -> Iterator[RktEnv]:
    with rkt_env.cgroup_parent() as parent:
        rkt_env.env["TEST_CGROUP_PARENT"] = parent
        yield rkt_env


def parent_of(env: RktEnv) -> str:
    return env.env["TEST_CGROUP_PARENT"]


def app_cgroup(env: RktEnv, controller: str, pod_uuid: str, app: str) -> Path:
    return hierarchy(controller) / parent_of(env) / f"rkt-{pod_uuid}" / f"app-{app}"


def run(target: RktEnv, *args: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return target.run("--insecure-options=image", *args, **kwargs)  # type: ignore[arg-type]


def hog_image(aci_builder: AciBuilder, memory: str | None = "64M") -> Path:
    isolators = [] if memory is None else [
        {"name": "resource/memory", "value": {"limit": memory}}]
    manifest = image_manifest("example.com/hog", exec_=ALLOCATE_200M,
                              app={"isolators": isolators})
    return aci_builder.build("hog.aci", manifest=manifest, busybox=True)


def saved_uuid(tmp_path: Path) -> str:
    return (tmp_path / "uuid").read_text().strip()


# -- memory ------------------------------------------------------------------------------
@WITH_KVM
def test_an_app_over_its_memory_limit_is_oom_killed_and_rkt_says_so(
    env: RktEnv, aci_builder: AciBuilder, tmp_path: Path, stage1: str
) -> None:
    result = run(env, "run", stage1, f"--uuid-file-save={tmp_path / 'uuid'}",
                 hog_image(aci_builder))
    assert result.returncode == 137, result.stderr
    assert ('rkt: app "hog" was killed by the kernel: it hit its memory limit (64M)'
            in result.stderr.splitlines())
    pod = saved_uuid(tmp_path)
    assert "app-hog=137" in env.run("status", pod).stdout.splitlines()
    app = json.loads(env.run("status", "--format=json", pod).stdout)["apps"][0]
    assert (app["exit_code"], app["oom_killed"]) == (137, True)
    assert (app_cgroup(env, "memory", pod, "hog") / "memory.limit_in_bytes").read_text() \
        .strip() == "64000000"

    collected = env.run("gc", "--grace-period=0s")
    assert collected.returncode == 0, collected.stderr
    assert not (hierarchy("memory") / parent_of(env) / f"rkt-{pod}").exists()
    assert not (hierarchy("cpu") / parent_of(env) / f"rkt-{pod}").exists()


def test_the_allocation_is_real_and_fits_a_larger_limit(
    env: RktEnv, aci_builder: AciBuilder, tmp_path: Path
) -> None:
    """The control: with room for it the same app succeeds, having used >150M."""
    result = run(env, "run", f"--uuid-file-save={tmp_path / 'uuid'}",
                 hog_image(aci_builder), "--memory=512Mi")  # the flag replaces the image's
    assert result.returncode == 0, result.stderr
    assert "memory limit" not in result.stderr
    pod = saved_uuid(tmp_path)
    memory = app_cgroup(env, "memory", pod, "hog")
    assert int((memory / "memory.limit_in_bytes").read_text()) == 512 * 2**20
    assert int((memory / "memory.max_usage_in_bytes").read_text()) > 150 * 2**20
    app = json.loads(env.run("status", "--format=json", pod).stdout)["apps"][0]
    assert app["exit_code"] == 0 and "oom_killed" not in app


def test_the_pods_memory_limit_bounds_its_apps(
    env: RktEnv, aci_builder: AciBuilder, tmp_path: Path
) -> None:
    image = hog_image(aci_builder, memory=None)
    assert run(env, "fetch", image).returncode == 0
    [image_id] = env.image_ids()
    manifest = tmp_path / "pod.json"
    manifest.write_text(json.dumps({
        "acVersion": "0.8.11", "acKind": "PodManifest",
        "apps": [{"name": "hog", "image": {"id": image_id}}],
        "isolators": [{"name": "resource/memory", "value": {"limit": "100M"}}],
    }))
    result = run(env, "run", f"--uuid-file-save={tmp_path / 'uuid'}",
                 f"--pod-manifest={manifest}")
    assert result.returncode == 137, result.stderr
    assert ('rkt: app "hog" was killed by the kernel: it hit the pod\'s memory limit (100M)'
            in result.stderr.splitlines())
    pod_cgroup = hierarchy("memory") / parent_of(env) / f"rkt-{saved_uuid(tmp_path)}"
    page = os.sysconf("SC_PAGESIZE")  # the kernel keeps whole pages of a limit
    assert int((pod_cgroup / "memory.limit_in_bytes").read_text()) == 100_000_000 // page * page


# -- cpu ---------------------------------------------------------------------------------
@STAGE1S
def test_a_cpu_limit_throttles_a_busy_loop(env: RktEnv, aci_builder: AciBuilder,
                                           tmp_path: Path, stage1: str) -> None:
    image = aci_builder.build("busy.aci", name="example.com/busy", busybox=True,
                              exec_=["/bin/sh", "-c",
                                     "i=0; while [ $i -lt 150000 ]; do i=$((i+1)); done"])
    result = run(env, "run", stage1, f"--uuid-file-save={tmp_path / 'uuid'}", image,
                 "--cpu=100m")
    assert result.returncode == 0, result.stderr
    pod = saved_uuid(tmp_path)
    cpu = app_cgroup(env, "cpu", pod, "busy")
    assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "10000"
    stat = dict(line.split() for line in (cpu / "cpu.stat").read_text().splitlines())
    assert int(stat["nr_throttled"]) > 0
    # the CPU time it got against the periods it wanted to run in, both the kernel's
    # count: near 10%; unlimited it would be near 100%
    usage_ns = int((app_cgroup(env, "cpuacct", pod, "busy") / "cpuacct.usage").read_text())
    assert usage_ns < 0.5 * int(stat["nr_periods"]) * 100_000_000


def test_nomads_prepare_line_sets_shares_and_memory(
    env: RktEnv, aci_builder: AciBuilder
) -> None:
    image = aci_builder.build("bb.aci", name="example.com/bb", busybox=True,
                              exec_=["/bin/true"])
    uuid_ = run(env, "prepare", image, "--memory=268435456", "--cpu-shares=100",
                "--cpu=500m").stdout.strip()
    result = env.run("run-prepared", uuid_)
    assert result.returncode == 0, result.stderr
    assert (app_cgroup(env, "cpu", uuid_, "bb") / "cpu.shares").read_text().strip() == "100"
    assert (app_cgroup(env, "cpu", uuid_, "bb") / "cpu.cfs_quota_us").read_text() \
        .strip() == "50000"
    assert (app_cgroup(env, "memory", uuid_, "bb") / "memory.limit_in_bytes").read_text() \
        .strip() == "268435456"


# -- bad input -----------------------------------------------------------------------------
@pytest.mark.parametrize(("flags", "message"), [
    (["--memory=2M"], 'app "bb": memory limit 2M is below the minimum of 4Mi'),
    (["--memory=900Ti"], 'app "bb": memory limit 900Ti is more than this host\'s'),
    (["--cpu=1m"], 'app "bb": CPU limit 0.001 is below the minimum of 10m'),
    (["--memory=64Q"], '--memory "64Q": expected a quantity such as 128M, 64Mi or 1G'),
    (["--cpu=fast"], '--cpu "fast": expected a quantity such as 500m, 1 or 1.5'),
    (["--cpu-shares=1"], '--cpu-shares "1": expected a whole number from 2 to 262144'),
])
def test_limits_that_cannot_work_are_refused_and_leave_nothing(
    env: RktEnv, aci_builder: AciBuilder, flags: list[str], message: str
) -> None:
    image = aci_builder.build("bb.aci", name="example.com/bb", busybox=True,
                              exec_=["/bin/true"])
    result = run(env, "run", image, *flags)
    assert_one_line_error(result, message)
    assert list((env.data_dir / "pods").glob("*/*")) == []
    assert not (hierarchy("memory") / parent_of(env)).exists()


def test_an_image_whose_limit_is_too_small_is_refused(env: RktEnv,
                                                      aci_builder: AciBuilder) -> None:
    result = run(env, "prepare", hog_image(aci_builder, memory="1Mi"))
    assert_one_line_error(result, 'app "hog": memory limit 1Mi is below the minimum of 4Mi')
    assert list((env.data_dir / "pods").glob("*/*")) == []


# -- clean-up ------------------------------------------------------------------------------
def test_gc_removes_the_cgroups_of_a_pod_whose_processes_died_hard(
    env: RktEnv, aci_builder: AciBuilder, tmp_path: Path
) -> None:
    image = aci_builder.build("sleep.aci", name="example.com/sleep", busybox=True,
                              exec_=["/bin/sleep", "300"])
    command = [env.rkt_binary(), *env.global_flags(), "--insecure-options=image", "run",
               f"--uuid-file-save={tmp_path / 'uuid'}", str(image), "--memory=64M"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, **env.env})
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pod_dir = None
            if (tmp_path / "uuid").exists():
                pod_dir = hierarchy("memory") / parent_of(env) / f"rkt-{saved_uuid(tmp_path)}"
            if pod_dir and (pod_dir / "app-sleep" / "cgroup.procs").exists() and \
                    (pod_dir / "app-sleep" / "cgroup.procs").read_text().strip():
                break
            time.sleep(0.1)
        else:
            pytest.fail("the app never joined its cgroup")
        # a crash of everything: every process of the pod, rkt included, dies at once
        for procs in pod_dir.rglob("cgroup.procs"):
            for pid in procs.read_text().split():
                os.kill(int(pid), signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert pod_dir.is_dir()  # nobody cleaned up
    collected = env.run("gc", "--grace-period=0s")
    assert collected.returncode == 0, collected.stderr
    assert not pod_dir.exists()
    assert not (hierarchy("cpu") / parent_of(env) / f"rkt-{saved_uuid(tmp_path)}").exists()


@pytest.mark.parametrize("stage1", [NSPAWN, FLY], ids=["nspawn", "fly"])
def test_rkt_its_stage1_and_each_app_are_in_the_pods_cgroups(
    env: RktEnv, aci_builder: AciBuilder, stage1: str
) -> None:
    """rkt and what it starts sit in ``stage1/``, each app in ``app-<name>/``, in every
    hierarchy (on v1 they join by writing to ``tasks``, one thread at a time)."""
    image = aci_builder.build("sleep.aci", name="example.com/sleep", busybox=True,
                              exec_=["/bin/sleep", "300"])
    with env.running_pod("--insecure-options=image", stage1, image) as (process, uuid):
        assert HOST is not None
        pod_dirs = [Path(h.path) / parent_of(env) / f"rkt-{uuid}" for h in HOST.hierarchies]
        deadline = time.monotonic() + 30
        while not (pod_dirs[0] / "app-sleep" / "cgroup.procs").read_text().strip():
            assert time.monotonic() < deadline and process.poll() is None, "no app joined"
            time.sleep(0.05)
        for pod_dir in pod_dirs:
            stage1_procs = (pod_dir / "stage1" / "cgroup.procs").read_text().split()
            assert str(process.pid) in stage1_procs, pod_dir
            [app_pid] = (pod_dir / "app-sleep" / "cgroup.procs").read_text().split()
            assert Path(f"/proc/{app_pid}/cmdline").read_bytes() == b"/bin/sleep\x00300\x00"
            assert (pod_dir / "cgroup.procs").read_text() == ""  # nothing in the pod's own


def test_rm_removes_the_cgroups(env: RktEnv, aci_builder: AciBuilder, tmp_path: Path) -> None:
    image = aci_builder.build("bb.aci", name="example.com/bb", busybox=True,
                              exec_=["/bin/true"])
    assert run(env, "run", f"--uuid-file-save={tmp_path / 'uuid'}", image).returncode == 0
    pod_cgroup = hierarchy("memory") / parent_of(env) / f"rkt-{saved_uuid(tmp_path)}"
    assert (pod_cgroup / "app-bb").is_dir()  # every pod gets its cgroups, limits or not
    removed = env.run("rm", saved_uuid(tmp_path))
    assert removed.returncode == 0, removed.stderr
    assert not pod_cgroup.exists()
