"""``rkt.pod.gc`` on pod directories made by hand: what it reports and returns.

No stage1 runs: the lookup hands out a backend whose ``gc`` records the pod (or
fails, to show that a stage1's failed clean-up does not keep a pod).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from rkt.errors import PodError, Stage1Error
from rkt.pod.dirs import POD_CREATED, Pod, PodStore
from rkt.pod.gc import GcEvent, collect_pods, pod_references, remove_pod


class RecordingBackend:
    def __init__(self, fail: bool = False) -> None:
        self.collected: list[str] = []
        self.fail = fail

    def gc(self, pod: Pod) -> None:
        self.collected.append(pod.uuid)
        if self.fail:
            raise Stage1Error("the network namespace is gone already")


def make_pod(pods: PodStore, phase: str, uuid: str, *, age: float = 0.0) -> Pod:
    pod = Pod(pods.pods_dir, uuid, phase)
    pod.path.mkdir()
    created = pod.path / POD_CREATED
    created.touch()
    then = time.time() - age
    os.utime(created, (then, then))
    return pod


UUIDS = {name: f"{index:08x}-0000-4000-8000-000000000000"
         for index, name in enumerate(("exited", "aborted", "fresh", "old", "garbage"), 1)}


def test_collect_marks_then_sweeps_and_reports_each_pod(tmp_path: Path) -> None:
    pods = PodStore(tmp_path)
    make_pod(pods, "run", UUIDS["exited"])
    make_pod(pods, "prepare", UUIDS["aborted"])
    make_pod(pods, "prepared", UUIDS["fresh"])
    make_pod(pods, "prepared", UUIDS["old"], age=3600)
    make_pod(pods, "garbage", UUIDS["garbage"])
    backend = RecordingBackend()
    events: list[GcEvent] = []

    result = collect_pods(pods, grace_period=600, expire_prepared=60,
                          stage1_backend=lambda pod: backend, report=events.append)

    assert [(e.action, e.uuid) for e in events] == [
        ("marked-exited", UUIDS["exited"]),
        ("marked-aborted", UUIDS["aborted"]),
        ("marked-expired", UUIDS["old"]),
        ("within-grace", UUIDS["exited"]),  # marked just now
        ("collecting", UUIDS["aborted"]),
        ("collecting", UUIDS["old"]),
        ("collecting", UUIDS["garbage"]),
    ]
    assert result.removed == [UUIDS["aborted"], UUIDS["old"], UUIDS["garbage"]]
    assert result.failed == []
    assert backend.collected == result.removed
    left = sorted(p.relative_to(pods.pods_dir).as_posix() for p in pods.pods_dir.glob("*/*"))
    assert left == [f"exited-garbage/{UUIDS['exited']}", f"prepared/{UUIDS['fresh']}"]

    events.clear()
    result = collect_pods(pods, grace_period=0, expire_prepared=60,
                          stage1_backend=lambda pod: backend, report=events.append)
    assert [(e.action, e.uuid) for e in events] == [("collecting", UUIDS["exited"])]
    assert result.removed == [UUIDS["exited"]]


def test_mark_only_removes_nothing(tmp_path: Path) -> None:
    pods = PodStore(tmp_path)
    make_pod(pods, "run", UUIDS["exited"])
    events: list[GcEvent] = []
    result = collect_pods(pods, grace_period=0, expire_prepared=0, mark_only=True,
                          stage1_backend=lambda pod: RecordingBackend(),
                          report=events.append)
    assert [e.action for e in events] == ["marked-exited"]
    assert result.removed == [] and result.failed == []
    assert (pods.pods_dir / "exited-garbage" / UUIDS["exited"]).is_dir()


def test_a_failed_stage1_clean_up_is_a_debug_line_and_the_pod_removed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pods = PodStore(tmp_path)
    make_pod(pods, "garbage", UUIDS["garbage"])
    events: list[GcEvent] = []
    with caplog.at_level(logging.DEBUG, logger="rkt.pod.gc"):
        result = collect_pods(pods, grace_period=0, expire_prepared=0,
                              stage1_backend=lambda pod: RecordingBackend(fail=True),
                              report=events.append)
    assert [e.action for e in events] == ["collecting"]
    assert caplog.messages == [
        f"stage1 gc of {UUIDS['garbage']}: the network namespace is gone already"
    ]
    assert result.removed == [UUIDS["garbage"]]
    assert not any(pods.pods_dir.glob("*/*"))


def test_remove_refuses_a_pod_someone_works_on(tmp_path: Path) -> None:
    pods = PodStore(tmp_path)
    pod = make_pod(pods, "run", UUIDS["exited"])
    assert pod.lock()  # as a running pod's stage0 holds it
    other = Pod(pods.pods_dir, pod.uuid, "run")
    assert other.state() == "running"
    try:
        with pytest.raises(PodError, match="is running; only exited pods can be removed"):
            remove_pod(pods, UUIDS["exited"][:8], lambda p: RecordingBackend())
    finally:
        pod.release()
    removed = remove_pod(pods, UUIDS["exited"][:8], lambda p: RecordingBackend())
    assert removed.uuid == UUIDS["exited"]
    assert not any(pods.pods_dir.glob("*/*"))


def test_references_are_the_trees_of_pods_that_are_not_garbage(tmp_path: Path) -> None:
    pods = PodStore(tmp_path)
    kept = make_pod(pods, "exited-garbage", UUIDS["exited"])
    (kept.path / "stage1TreeStoreID").write_text("deps-stage1\n")
    (kept.path / "appsinfo" / "app").mkdir(parents=True)
    (kept.path / "appsinfo" / "app" / "treeStoreID").write_text("deps-app\n")
    gone = make_pod(pods, "garbage", UUIDS["garbage"])
    (gone.path / "stage1TreeStoreID").write_text("deps-of-garbage\n")
    references = pod_references(pods)
    assert references.trees == {"deps-stage1", "deps-app"}
    assert references.images == {}


def test_a_pod_that_moves_on_while_references_are_read_is_read_where_it_went(
    tmp_path: Path,
) -> None:
    """``rkt image gc`` against ``rkt prepare``: a pod listed in ``prepare/`` may be in
    ``prepared/`` by the time its files are read (the interleaving is made here by
    moving the pod from inside the listing, since it cannot be timed)."""
    pods = PodStore(tmp_path)
    moving = make_pod(pods, "prepare", UUIDS["fresh"])
    (moving.path / "stage1TreeStoreID").write_text("deps-stage1\n")
    (moving.path / "appsinfo" / "app").mkdir(parents=True)
    (moving.path / "appsinfo" / "app" / "treeStoreID").write_text("deps-app\n")
    (tmp_path / "prepared").mkdir(exist_ok=True)
    listed = pods.iter_pods

    def listing_then_moving(*args: object, **kwargs: object) -> object:
        for pod in listed(*args, **kwargs):  # type: ignore[arg-type]
            if pod.phase == "prepare":
                moving.move("prepared")
            yield pod

    pods.iter_pods = listing_then_moving  # type: ignore[method-assign,assignment]
    references = pod_references(pods)
    assert references.trees == {"deps-stage1", "deps-app"}


def test_what_a_cut_short_removal_left_in_the_trash_goes_with_the_next_gc(
    tmp_path: Path,
) -> None:
    pods = PodStore(tmp_path)
    # a gc killed while deleting: half a pod in the trash, invisible to everyone
    left = pods.pods_dir / "trash" / UUIDS["old"]
    (left / "stage1" / "rootfs").mkdir(parents=True)
    (left / "stage1" / "rootfs" / "file").write_text("x")
    assert [p.uuid for p in pods.iter_pods()] == []
    result = collect_pods(pods, grace_period=0, expire_prepared=0,
                          stage1_backend=lambda pod: RecordingBackend(), report=lambda e: None)
    assert result.removed == []
    assert not left.exists()


def test_many_pods_are_deleted_side_by_side_and_nothing_is_left(tmp_path: Path) -> None:
    pods = PodStore(tmp_path)
    uuids = [f"{index:08x}-0000-4000-8000-{index:012x}" for index in range(70)]
    for uuid in uuids:  # more than one rm process takes at once
        pod = make_pod(pods, "garbage", uuid)
        (pod.path / "stage1" / "rootfs" / "rkt").mkdir(parents=True)
        (pod.path / "stage1" / "rootfs" / "rkt" / "apps.json").write_text("{}")
    backend = RecordingBackend()
    result = collect_pods(pods, grace_period=0, expire_prepared=0,
                          stage1_backend=lambda pod: backend, report=lambda e: None)
    assert result.removed == uuids == backend.collected
    assert not any(pods.pods_dir.glob("*/*"))


def test_a_pod_in_use_is_not_collected(tmp_path: Path) -> None:
    pods = PodStore(tmp_path)
    pod = make_pod(pods, "garbage", UUIDS["garbage"])
    holder = Pod(pods.pods_dir, pod.uuid, "garbage")
    assert holder.lock()  # as a concurrent rm holds it
    try:
        events: list[GcEvent] = []
        result = collect_pods(pods, grace_period=0, expire_prepared=0,
                              stage1_backend=lambda p: RecordingBackend(),
                              report=events.append)
    finally:
        holder.release()
    assert events == [] and result.removed == [] and result.failed == []
    assert pod.path.is_dir()


def test_the_trash_of_a_running_deleter_is_left_to_it(tmp_path: Path) -> None:
    import fcntl

    pods = PodStore(tmp_path)
    trash = pods.pods_dir / "trash"
    left = trash / UUIDS["old"]
    left.mkdir(parents=True)
    make_pod(pods, "garbage", UUIDS["garbage"])
    # as a detached deleter holds it while it deletes (rkt.pod.trash)
    deleter = os.open(trash, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(deleter, fcntl.LOCK_SH)
    try:
        result = collect_pods(pods, grace_period=0, expire_prepared=0,
                              stage1_backend=lambda pod: RecordingBackend(),
                              report=lambda e: None)
    finally:
        os.close(deleter)
    assert result.removed == [UUIDS["garbage"]]
    assert [p.name for p in trash.iterdir()] == [UUIDS["old"]]  # the deleter's
    collect_pods(pods, grace_period=0, expire_prepared=0,
                 stage1_backend=lambda pod: RecordingBackend(), report=lambda e: None)
    assert list(trash.iterdir()) == []  # no deleter any more: a leftover, deleted


def test_a_detached_deleter_holds_no_lock_of_its_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fcntl
    import shutil

    pods = PodStore(tmp_path / "data")
    for uuid in (UUIDS["garbage"], UUIDS["old"]):
        make_pod(pods, "garbage", uuid)
    # the deleter's rm waits for a gate file (a stand-in on PATH that only holds the
    # deletion back), so it is surely still running when we look
    gate = tmp_path / "gate"
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "rm").write_text(
        f"#!/bin/sh\nwhile [ ! -e {gate} ]; do sleep 0.05; done\n"
        f'exec {shutil.which("rm")} "$@"\n')
    (tmp_path / "bin" / "rm").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    held = tmp_path / "store.lock"  # a lock the caller holds across the gc
    held_fd = os.open(held, os.O_RDWR | os.O_CREAT)
    fcntl.flock(held_fd, fcntl.LOCK_EX)
    trash = pods.pods_dir / "trash"
    try:
        result = collect_pods(pods, grace_period=0, expire_prepared=0, detach_above=1,
                              stage1_backend=lambda pod: RecordingBackend(),
                              report=lambda e: None)
        assert sorted(result.removed) == sorted([UUIDS["garbage"], UUIDS["old"]])
        assert sorted(p.name for p in trash.iterdir()) == sorted(result.removed)
        os.close(held_fd)
        other = os.open(held, os.O_RDWR)
        try:
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free: not the deleter's
        finally:
            os.close(other)
    finally:
        gate.touch()
    waiter = os.open(trash, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(waiter, fcntl.LOCK_EX)  # the deleter holds it until it is done
    finally:
        os.close(waiter)
    assert list(trash.iterdir()) == []
