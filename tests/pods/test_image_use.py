"""Nothing is deleted from under a pod (issue 10, "Data").

A pod holds on to every image and rendered tree it uses from ``rkt prepare``
until it is collected: ``rkt image rm`` of such an image removes its name and
keeps its files, ``rkt image gc`` skips them, and an ``image gc`` racing a
``prepare`` cannot remove what the pod is being built from. Everything runs
through the real ``rkt`` command, as root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from rkt_testing import AciBuilder, RktEnv
from rkt_testing.plugin import FLY, NSPAWN, needs_root

pytestmark = [
    needs_root,
    pytest.mark.root,
    pytest.mark.skipif(shutil.which("systemd-nspawn") is None, reason="needs systemd-nspawn"),
]

#: rounds of the prepare/image-gc race; RKT_TEST_RACE_ROUNDS overrides (CI keeps 200)
RACE_ROUNDS = int(os.environ.get("RKT_TEST_RACE_ROUNDS", "200"))


@pytest.fixture
def image(aci_builder: AciBuilder) -> Path:
    return aci_builder.build("busybox.aci", name="example.com/busybox", busybox=True,
                             exec_=["/bin/sh", "-c", "echo hello from the pod"])


def rkt(env: RktEnv, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return env.run("--insecure-options=image", *args)


def image_id(env: RktEnv, name: str) -> str:
    rows = env.run("image", "list", "--no-legend", "--full", "--fields=id,name",
                   check=True).stdout.splitlines()
    return next(row.split()[0] for row in rows if name in row)


@pytest.mark.parametrize("stage1", [NSPAWN, FLY], ids=["nspawn", "fly"])
def test_image_rm_keeps_what_a_prepared_pod_uses_until_it_is_collected(
    rkt_env: RktEnv, image: Path, stage1: str
) -> None:
    """Acceptance 3: prepare; image rm; image gc; run-prepared runs the app."""
    uuid = rkt(rkt_env, "prepare", "--quiet", stage1, image).stdout.strip()
    busybox = image_id(rkt_env, "example.com/busybox")

    removed = rkt_env.run("image", "rm", busybox)
    assert removed.returncode == 0, removed.stderr
    assert f'"{busybox}" ("example.com/busybox")' in removed.stdout
    assert f"is used by pod(s) {uuid}: its files are kept" in removed.stderr
    assert "example.com/busybox" not in rkt_env.run("image", "list").stdout
    assert rkt_env.run("image", "gc").returncode == 0

    ran = rkt_env.run("run-prepared", uuid)
    assert (ran.returncode, ran.stdout) == (0, "hello from the pod\n"), ran.stderr

    # the last pod gone, the files go with the next image gc
    assert rkt_env.run("gc", "--grace-period=0s").returncode == 0
    collected = rkt_env.run("image", "gc", "--grace-period=0s")
    assert f'removed the files of image "{busybox}"' in collected.stdout
    assert [p for p in rkt_env.store_snapshot() if busybox in p or p.startswith("cas/tree/")
            or p.startswith("pods/")] == []


def test_image_gc_skips_the_images_of_prepared_pods(rkt_env: RktEnv, image: Path) -> None:
    uuid = rkt(rkt_env, "prepare", "--quiet", FLY, image).stdout.strip()
    busybox = image_id(rkt_env, "example.com/busybox")
    collected = rkt_env.run("image", "gc", "--grace-period=0s")
    assert collected.returncode == 0, collected.stderr
    assert busybox not in collected.stdout
    assert image_id(rkt_env, "example.com/busybox") == busybox
    assert rkt_env.run("image", "verify", busybox).returncode == 0
    ran = rkt_env.run("run-prepared", uuid)
    assert ran.stdout == "hello from the pod\n", ran.stderr


@pytest.mark.slow
def test_image_gc_racing_prepare_never_removes_what_a_pod_is_built_from(
    rkt_env: RktEnv, image: Path
) -> None:
    """``prepare`` (importing the image again each time) against ``image gc
    --grace-period=0s`` in a loop, then every prepared pod runs."""
    done = threading.Event()
    gc_runs: list[subprocess.CompletedProcess[str]] = []

    def collect() -> None:
        while not done.is_set():
            gc_runs.append(rkt_env.run("image", "gc", "--grace-period=0s"))

    collector = threading.Thread(target=collect)
    collector.start()
    uuids, refused = [], []
    try:
        for _ in range(RACE_ROUNDS):
            result = rkt(rkt_env, "prepare", "--quiet", FLY, image)
            (uuids if result.returncode == 0 else refused).append(result)
    finally:
        done.set()
        collector.join()
    assert refused == [], refused[0].stderr
    assert gc_runs and all(run.returncode == 0 for run in gc_runs), gc_runs[-1].stderr
    assert any("successfully removed aci" in run.stdout for run in gc_runs)  # it did race
    for result in uuids:
        ran = rkt_env.run("run-prepared", result.stdout.strip())
        assert (ran.returncode, ran.stdout) == (0, "hello from the pod\n"), ran.stderr
