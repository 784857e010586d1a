"""``rkt gc`` of many pods leaves deleting their files to a process of its own (issue 14).

The pods are copies of one real exited nspawn pod under new UUIDs, as in
``bench/bench_pods.py``. To see that ``rkt gc`` returned while its deleter was
still at work, without timing anything, the deleter's ``rm`` is a script first
on ``PATH`` that waits for a gate file before it runs the real ``rm`` (the one
stand-in here: it only holds the deletion back).
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import time
import uuid
from pathlib import Path

import pytest

from rkt.pod.gc import DETACH_ABOVE
from rkt_testing import AciBuilder, RktEnv
from rkt_testing.plugin import NSPAWN, needs_root, stage1_image_path

pytestmark = [
    needs_root,
    pytest.mark.skipif(shutil.which("systemd-nspawn") is None, reason="needs systemd-nspawn"),
    pytest.mark.skipif(not stage1_image_path("nspawn").exists(),
                       reason="stage1 images not installed (run rkt install)"),
]

PHASES = ("embryo", "prepare", "prepared", "run", "exited-garbage", "garbage")


def gated_rm(directory: Path) -> tuple[dict[str, str], Path]:
    """A ``PATH`` whose ``rm`` waits for the returned gate file to exist."""
    gate = directory / "gate"
    bin_dir = directory / "bin"
    bin_dir.mkdir()
    script = bin_dir / "rm"
    script.write_text(f"#!/bin/sh\nwhile [ ! -e {gate} ]; do sleep 0.05; done\n"
                      f'exec {shutil.which("rm")} "$@"\n')
    script.chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}, gate


def exited_pods(env: RktEnv, builder: AciBuilder, count: int) -> list[str]:
    """One real exited nspawn pod and ``count - 1`` copies of it; their UUIDs."""
    image = builder.build(busybox=True, exec_=["/bin/true"], files={"usr/": b""})
    env.run("--insecure-options=image", "run", NSPAWN, "--net=none", image, check=True)
    run = env.data_dir / "pods" / "run"
    (template,) = run.iterdir()
    for _ in range(count - 1):
        shutil.copytree(template, run / str(uuid.uuid4()), symlinks=True)
    return sorted(p.name for p in run.iterdir())


def in_phases(env: RktEnv) -> list[str]:
    return [p.name for phase in PHASES for p in (env.data_dir / "pods" / phase).iterdir()]


def wait_for_deleter(trash: Path) -> None:
    """Returns once no one deletes in the trash (a deleter holds its lock meanwhile)."""
    fd = os.open(trash, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    finally:
        os.close(fd)


def trash_is_locked(trash: Path) -> bool:
    fd = os.open(trash, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_gc_of_many_pods_returns_once_they_are_out_of_sight_and_a_deleter_finishes(
    rkt_env: RktEnv, aci_builder: AciBuilder, tmp_path: Path
) -> None:
    uuids = exited_pods(rkt_env, aci_builder, DETACH_ABOVE + 1)
    path, gate = gated_rm(tmp_path)
    trash = rkt_env.data_dir / "pods" / "trash"
    try:
        # returns (its output read to the end) while every rm still waits at the gate
        result = rkt_env.run("gc", "--grace-period=0s", env=path, timeout=60)
        assert result.returncode == 0, result.stderr
        assert sorted(line.split('"')[1] for line in result.stdout.splitlines()
                      if line.startswith("Garbage collecting pod")) == uuids
        # out of sight: in no phase, not listed, not found
        assert in_phases(rkt_env) == []
        assert rkt_env.run("list", "--no-legend", check=True).stdout == ""
        status = rkt_env.run("status", uuids[0])
        assert status.returncode != 0 and "no pod" in status.stderr
        # the files are still there, and their deleter at work
        assert sorted(p.name for p in trash.iterdir()) == uuids
        assert trash_is_locked(trash)
        # a gc meanwhile does not take the deleter's pods as left over (nor wait)
        again = rkt_env.run("gc", "--grace-period=0s", env=path, timeout=60)
        assert again.returncode == 0 and again.stdout == "", again.stderr
        assert len(list(trash.iterdir())) == len(uuids)
    finally:
        gate.touch()
    wait_for_deleter(trash)
    assert list(trash.iterdir()) == []


def test_what_a_killed_deleter_left_is_deleted_by_the_next_gc(
    rkt_env: RktEnv, aci_builder: AciBuilder, tmp_path: Path
) -> None:
    uuids = exited_pods(rkt_env, aci_builder, DETACH_ABOVE + 1)
    path, gate = gated_rm(tmp_path)
    trash = rkt_env.data_dir / "pods" / "trash"
    result = rkt_env.run("--debug", "gc", "--grace-period=0s", env=path, timeout=60)
    assert result.returncode == 0, result.stderr
    match = re.search(r"process (\d+) deletes (\d+) pod directories", result.stderr)
    assert match is not None, result.stderr
    assert int(match.group(2)) == len(uuids)
    deleter = int(match.group(1))
    # the deleter and its rm processes are a process group of their own: kill them all
    os.killpg(os.getpgid(deleter), signal.SIGKILL)
    while trash_is_locked(trash):  # until the killed processes are gone
        time.sleep(0.05)
    assert sorted(p.name for p in trash.iterdir()) == uuids

    gate.touch()
    # deleted before it returns (a deleter killed with every gc, as a service manager
    # may do, must not let the trash pile up)
    result = rkt_env.run("gc", "--grace-period=0s", check=True)
    assert result.stdout == ""  # no pod collected: only files deleted
    assert list(trash.iterdir()) == [] and in_phases(rkt_env) == []
