"""What stage0 does about a stage1 that breaks its contract (issue 16, docs/stage1.md).

Each misbehaving backend is a real third-party distribution
(``tests/dists/rkt-misbehaving-stage1``) whose images ``rkt install`` builds, run
through the real ``rkt``: one declaring interface version 99, one returning
without writing anything, one raising, one hanging, one writing garbage. A
stage1 that is uninstalled while its pods exist is the example stage1
(``tests/dists/rkt-example-stage1``), run and then taken off the path.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from rkt_testing import AciBuilder, RktEnv, assert_one_line_error, pythonpath_with
from rkt_testing.plugin import FLY, needs_root, stage1_image_path

pytestmark = [needs_root]



@pytest.fixture
def extra(rkt_env: RktEnv, tmp_path: Path,
          misbehaving_stage1_path: Path) -> Iterator[dict[str, str]]:
    images = tmp_path / "stage1-images"
    env = {**pythonpath_with(misbehaving_stage1_path), "RKT_STAGE1_IMAGES_DIR": str(images)}
    built = rkt_env.run("install", env=env)
    assert built.returncode == 0, built.stderr
    yield env


@pytest.fixture
def image(aci_builder: AciBuilder) -> Path:
    return aci_builder.build("true.aci", name="example.com/true", busybox=True,
                             exec_=["/bin/true"])


def run(env: RktEnv, backend: str, image: Path, extra: dict[str, str], *args: str):  # type: ignore[no-untyped-def]
    return env.run("--insecure-options=image", "run", "--net=host",
                   f"--stage1-name=coreos.com/rkt/stage1-{backend}", *args, image, env=extra)


def only_pod(env: RktEnv) -> Path:
    pods = [p for p in (env.data_dir / "pods").glob("*/*")]
    assert len(pods) == 1, pods
    return pods[0]


def status_lines(env: RktEnv, pod: Path, extra: dict[str, str]) -> list[str]:
    result = env.run("status", pod.name, env=extra)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_interface_version_99_is_refused_before_run(
    rkt_env: RktEnv, extra: dict[str, str], image: Path
) -> None:
    # the backend declares 99, so its image does too (rkt install labels it so)
    aci = Path(extra["RKT_STAGE1_IMAGES_DIR"]) / "stage1-future.aci"
    result = run(rkt_env, "future", image, extra)
    assert_one_line_error(
        result, 'stage1 image "coreos.com/rkt/stage1-future" speaks stage1 interface '
        "version 99; this rkt speaks")
    assert list((rkt_env.data_dir / "pods").glob("*/*")) == []
    assert aci.is_file()


def test_a_backend_of_version_99_is_refused_whatever_its_image_says(
    rkt_env: RktEnv, extra: dict[str, str], image: Path, aci_builder: AciBuilder
) -> None:
    # an image built when the backend still spoke 3, found by path
    from rkt.stage1 import INTERFACE_VERSION
    from rkt_testing import image_manifest

    stage1 = aci_builder.build("stage1-old.aci", manifest=image_manifest(
        "example.com/stage1-old", extra={"annotations": [
            {"name": "coreos.com/rkt/stage1/backend", "value": "future"},
            {"name": "coreos.com/rkt/stage1/interface-version",
             "value": str(INTERFACE_VERSION)}]}))
    result = rkt_env.run("--insecure-options=image", "run", f"--stage1-path={stage1}",
                         image, env=extra)
    assert_one_line_error(result, message=(
        f'stage1 backend "future" speaks stage1 interface version 99; this rkt speaks '
        f"{INTERFACE_VERSION}"))
    assert list((rkt_env.data_dir / "pods").glob("*/*")) == []


def test_a_backend_that_writes_nothing_is_named_with_the_file(
    rkt_env: RktEnv, extra: dict[str, str], image: Path
) -> None:
    result = run(rkt_env, "silent", image, extra)
    line = assert_one_line_error(result, 'stage1 "silent" did not write ')
    pod = only_pod(rkt_env)
    assert line == (f'rkt: stage1 "silent" did not write {rkt_env.data_dir}/pods/run/'
                    f"{pod.name}/pid (the host PID of the pod's PID 1)")
    lines = status_lines(rkt_env, pod, extra)
    # not a normal exited pod without exit codes: the app's state is unknown, and why
    assert lines[0] == "state=exited"
    assert "app-true=unknown" in lines
    assert any(x.startswith('error=stage1 "silent" did not write ') for x in lines), lines
    record = json.loads(rkt_env.run("status", "--format=json", pod.name, env=extra).stdout)
    assert record["apps"][0]["state"] == "unknown"
    assert "did not write" in record["error"]


def test_a_backend_that_writes_no_exit_code_is_named_with_the_file(
    rkt_env: RktEnv, extra: dict[str, str], image: Path
) -> None:
    result = run(rkt_env, "pidonly", image, extra)
    pod = only_pod(rkt_env)
    assert_one_line_error(
        result, message=f'stage1 "pidonly" did not write {rkt_env.data_dir}/pods/run/'
        f"{pod.name}/stage1/rootfs/rkt/status/true (the app's exit code)")
    assert "app-true=unknown" in status_lines(rkt_env, pod, extra)


def test_a_backend_that_raises_is_one_line_and_the_pod_exited_with_error(
    rkt_env: RktEnv, extra: dict[str, str], image: Path
) -> None:
    result = run(rkt_env, "raises", image, extra)
    assert_one_line_error(result, 'stage1 "raises" failed: KeyError: ', status=254)
    pod = only_pod(rkt_env)
    lines = status_lines(rkt_env, pod, extra)
    assert lines[0] == "state=exited"
    assert "app-true=unknown" in lines
    assert 'error=stage1 "raises" failed: KeyError: \'no such key\'' in lines
    # the traceback is there for whoever asks for it
    debug = rkt_env.run("--debug", "--insecure-options=image", "run", "--net=host",
                        "--stage1-name=coreos.com/rkt/stage1-raises", image, env=extra)
    assert debug.returncode == 254
    assert "Traceback" in debug.stderr and "rkt_misbehaving_stage1.py" in debug.stderr


def test_a_backend_that_hangs_in_run_meets_the_start_time_limit(
    rkt_env: RktEnv, extra: dict[str, str], image: Path
) -> None:
    result = run(rkt_env, "hangs", image, {**extra, "RKT_STAGE1_START_TIMEOUT": "1.5"})
    line = assert_one_line_error(result, 'stage1 "hangs" did not start the pod within 1.5 s')
    assert "RKT_STAGE1_START_TIMEOUT" in line
    pod = only_pod(rkt_env)
    assert status_lines(rkt_env, pod, extra)[0] == "state=exited"
    for value in ("soon", "-1", "nan"):
        bad = run(rkt_env, "hangs", image, {**extra, "RKT_STAGE1_START_TIMEOUT": value})
        assert_one_line_error(
            bad, f"RKT_STAGE1_START_TIMEOUT={value!r} is not a number of seconds")
    assert [only_pod(rkt_env)] == [pod]  # refused before a pod ran: none left behind


@pytest.mark.skipif(not stage1_image_path("fly").exists(),
                    reason="stage1 images not installed (run rkt install)")
def test_the_start_time_limit_does_not_end_a_pod_that_started(
    rkt_env: RktEnv, aci_builder: AciBuilder
) -> None:
    # fly writes its pid at once; the app then runs for longer than the limit
    image = aci_builder.build("sleeper.aci", name="example.com/sleeper", busybox=True,
                              exec_=["/bin/sh", "-c", "sleep 2; echo still here"])
    result = rkt_env.run("--insecure-options=image", "run", FLY, image,
                         env={"RKT_STAGE1_START_TIMEOUT": "0.5"})
    assert result.returncode == 0, result.stderr
    assert result.stdout == "still here\n"


def test_garbage_in_the_status_files_is_an_error_and_an_unknown_state(
    rkt_env: RktEnv, extra: dict[str, str], image: Path
) -> None:
    result = run(rkt_env, "garbage", image, extra)
    pod = only_pod(rkt_env)
    assert_one_line_error(
        result, f'stage1 "garbage" wrote a garbled {pod}/stage1/rootfs/rkt/status/true: '
        "'exited with flair\\n' is not an exit code")
    lines = status_lines(rkt_env, pod, extra)
    assert "app-true=unknown" in lines
    listed = rkt_env.run("list", "--no-legend", env=extra)
    assert listed.returncode == 0 and "exited" in listed.stdout


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux's unshare")
def test_pods_of_an_uninstalled_stage1_are_still_removed(
    rkt_env: RktEnv, image: Path, tmp_path: Path, example_stage1_path: Path
) -> None:
    images = tmp_path / "stage1-images"
    installed = {**pythonpath_with(example_stage1_path), "RKT_STAGE1_IMAGES_DIR": str(images)}
    assert rkt_env.run("install", env=installed).returncode == 0
    for _ in range(2):
        result = run(rkt_env, "unshare", image, installed)
        assert result.returncode == 0, result.stderr
    uuids = rkt_env.run("list", "--no-legend", "--full").stdout.split("\n")
    first, second = (row.split()[0] for row in uuids if row)
    # the distribution is gone (not on the path any more): rm and gc still clean up
    removed = rkt_env.run("rm", first)
    assert removed.returncode == 0, removed.stderr
    assert removed.stderr.startswith(
        f'rkt: warning: pod "{first}": its stage1 backend\'s gc could not run: '
        'stage1 backend "unshare" is not installed'), removed.stderr
    collected = rkt_env.run("gc", "--grace-period=0s")
    assert collected.returncode == 0, collected.stderr
    assert f'rkt: warning: pod "{second}": its stage1 backend\'s gc could not run' \
        in collected.stderr
    assert list((rkt_env.data_dir / "pods").glob("*/*")) == []
