"""Removing pods: ``rkt rm`` for one pod, ``rkt gc`` for all that are done.

Garbage collection has two steps, as in rkt (``Documentation/commands.md#rkt-gc``):

- *mark*: exited pods move from ``run/`` to ``exited-garbage/``; aborted prepares,
  embryos nobody holds and prepared pods older than the expiry move to ``garbage/``;
- *sweep*: pods in ``garbage/`` are removed at once, pods in ``exited-garbage/``
  once they were marked longer ago than the grace period, so a user still has
  time to look at a pod that just exited.

Nothing here prints: what happens to each pod is reported as a :class:`GcEvent`,
and the caller says it to the user.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from rkt import faults
from rkt.errors import PodError, RktError
from rkt.log import get_logger
from rkt.metadata import forget_pod
from rkt.pod.cgroups import remove_pod_cgroups
from rkt.pod.dirs import Pod, PodStore

if TYPE_CHECKING:
    from rkt.stage1 import Stage1Backend

LOG = get_logger(__name__)

#: the stage1 backend that prepared a pod (it releases what it set up outside the pod dir)
Stage1Lookup = Callable[[Pod], "Stage1Backend"]

GcAction = Literal[
    "marked-exited",     # an exited pod moved to exited-garbage/
    "marked-aborted",    # an aborted prepare moved to garbage/
    "marked-expired",    # a prepared pod past its expiry moved to garbage/
    "within-grace",      # an exited pod kept: marked less than the grace period ago
    "collecting",        # a pod about to be removed
    "failed",            # a pod that could not be removed (``error`` says why)
]

#: pod states ``rkt rm`` refuses: someone is working on the pod
ACTIVE_STATES = ("running", "preparing", "deleting", "exited deleting", "embryo")


@dataclass(frozen=True)
class GcEvent:
    """Something that happened to one pod while removing pods."""

    action: GcAction
    uuid: str
    error: RktError | None = None


GcReport = Callable[[GcEvent], None]


@dataclass
class GcResult:
    """The UUIDs of the pods ``collect_pods`` removed, and of those it failed to remove.

    A removed pod is out of every phase; should deleting its files in the trash
    fail, that is a debug line and the next gc tries again (:mod:`rkt.pod.trash`).
    """

    removed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def delete_pod(pods: PodStore, pod: Pod, stage1_backend: Stage1Lookup) -> None:
    """Delete a pod nobody works on: lock it, let its stage1 clean up, remove the directory.

    The pod is moved to a garbage phase first, so that if the removal is cut short
    the next ``gc`` finishes it. A stage1 whose clean-up fails does not keep the pod
    (what it set up may be gone already); the failure is a ``--debug`` line.
    """
    if not pod.lock():
        raise PodError(f'pod "{pod.uuid}" is in use')
    try:
        _release_pod(pods, pod, stage1_backend)
        pods.delete(pod)
    finally:
        pod.release()


def _release_pod(pods: PodStore, pod: Pod, stage1_backend: Stage1Lookup) -> None:
    """Move the pod we hold locked to garbage and release what lives outside its
    directory (its stage1's, its cgroups, its network, its metadata registration)."""
    pods.refresh(pod)
    if pod.phase == "run":
        pod.move("exited-garbage")
    elif pod.phase in ("prepare", "prepared"):
        pod.move("garbage")
    faults.point("gc:deleting")
    try:
        stage1_backend(pod).gc(pod)
    except RktError as exc:
        LOG.debug("stage1 gc of %s: %s", pod.uuid, exc)
    forget_pod(pod.path, pod.uuid)
    remove_pod_cgroups(pod)  # stage0 made them, whatever the stage1
    _teardown_network(pod)


def _teardown_network(pod: Pod) -> None:
    """CNI DEL and the namespace's removal, for pods that had a network of their own.

    A plugin's failed DEL does not keep the pod (what it held may be gone
    already); it is a warning. A namespace that cannot be removed does.
    """
    if not os.path.exists(f"{pod.path_text}/netns"):
        return  # host networking: nothing to release (and no CNI code to import)
    from rkt.net.pod import teardown_pod_network

    for error in teardown_pod_network(pod):
        LOG.warning("pod %s: %s", pod.uuid, error)


def remove_pod(pods: PodStore, uuid: str, stage1_backend: Stage1Lookup) -> Pod:
    """``rkt rm``: remove the pod with this UUID (or prefix) unless it is active."""
    pod = pods.find(uuid)
    state = pod.state()
    if state in ACTIVE_STATES:
        raise PodError(f'pod "{pod.uuid}" is {state}; only exited pods can be removed')
    delete_pod(pods, pod, stage1_backend)
    return pod


def mark_pods(pods: PodStore, *, expire_prepared: float, report: GcReport) -> None:
    """Move exited pods, aborted prepares and expired prepared pods to the garbage phases."""
    now = time.time()
    for pod in pods.iter_pods(("embryo", "run", "prepare", "prepared")):
        try:
            if pod.phase == "embryo":
                # killed between making the directory and locking it: whatever its age,
                # a free lock means nobody will finish it (its maker retries if we won)
                if pod.lock():
                    try:
                        pod.move("garbage")
                    finally:
                        pod.release()
                    report(GcEvent("marked-aborted", pod.uuid))
            elif pod.phase == "run" and not pod.is_locked_by_other():
                pod.move("exited-garbage")
                report(GcEvent("marked-exited", pod.uuid))
            elif pod.phase == "prepare" and not pod.is_locked_by_other():
                pod.move("garbage")
                report(GcEvent("marked-aborted", pod.uuid))
            elif pod.phase == "prepared":
                created = pod.created() or now
                if now - created > expire_prepared and pod.lock():
                    try:
                        pod.move("garbage")
                    finally:
                        pod.release()
                    report(GcEvent("marked-expired", pod.uuid))
        except FileNotFoundError:
            continue  # another gc or rm won the race


#: a gc that collects more pods than this leaves deleting their files to a process
#: of its own (:mod:`rkt.pod.trash`); fewer are deleted before it returns (their
#: deletion takes milliseconds)
DETACH_ABOVE = 64


def sweep_pods(pods: PodStore, *, grace_period: float, stage1_backend: Stage1Lookup,
               report: GcReport, detach_above: int | None = None) -> GcResult:
    """Remove garbage pods, and exited ones marked longer ago than ``grace_period`` seconds.

    One pod at a time: lock it, release what it holds outside its directory, move
    it into the trash and unlock it. Its directory is deleted meanwhile, with many
    others at once (:mod:`rkt.pod.trash`); the sweep returns when all are gone, or,
    when it collects more than ``detach_above`` pods, as soon as they are all in
    the trash, leaving their deletion to a detached process. What earlier removals
    left in the trash (unless a deleter is still at work on it) is deleted before
    it returns, either way.
    """
    from rkt.pod.trash import Remover, delete_detached, lock_trash

    result = GcResult()
    now = time.time()
    lock_fd, leftovers = lock_trash(pods.trash_dir())
    candidates = list(pods.iter_pods(("exited-garbage", "garbage")))
    detach = detach_above is not None and len(candidates) > detach_above
    # What earlier removals left is deleted before we return, even when ours are
    # not: a deleter that a service manager kills with its `rkt gc` unit (systemd's
    # default) leaves trash behind every time, and this keeps it from piling up.
    remover = Remover()
    for path in leftovers:
        remover.add(path)
    trashed: list[str] = []
    try:
        for pod in candidates:
            try:
                if pod.phase == "exited-garbage":
                    # marked when it was renamed into exited-garbage/: the rename's ctime
                    marked = os.stat(pod.path_text).st_ctime
                    if now - marked < grace_period:
                        report(GcEvent("within-grace", pod.uuid))
                        continue
                if not pod.lock():
                    continue  # someone works on it
            except FileNotFoundError:
                continue  # another gc or rm won the race
            try:
                report(GcEvent("collecting", pod.uuid))
                _release_pod(pods, pod, stage1_backend)
                path = pods.discard(pod)
                if detach:
                    trashed.append(path)
                else:
                    remover.add(path)
                result.removed.append(pod.uuid)
            except FileNotFoundError:
                continue
            except RktError as exc:
                report(GcEvent("failed", pod.uuid, exc))
                result.failed.append(pod.uuid)
            finally:
                pod.release()
    finally:
        try:
            if trashed:
                try:
                    pid = delete_detached(trashed, lock_fd)
                    LOG.debug("process %d deletes %d pod directories in %s", pid,
                              len(trashed), pods.trash_dir())
                except OSError as exc:  # no process to spare: delete them ourselves
                    LOG.debug("cannot start a deleter: %s", exc)
                    for path in trashed:
                        remover.add(path)
            remover.finish()
        finally:
            os.close(lock_fd)
    return result


def collect_pods(
    pods: PodStore,
    *,
    grace_period: float,
    expire_prepared: float,
    stage1_backend: Stage1Lookup,
    report: GcReport,
    mark_only: bool = False,
    detach_above: int | None = None,
) -> GcResult:
    """``rkt gc``: mark, then (unless ``mark_only``) sweep; durations in seconds.

    ``detach_above``: see :func:`sweep_pods` (``rkt gc`` passes :data:`DETACH_ABOVE`).
    """
    mark_pods(pods, expire_prepared=expire_prepared, report=report)
    faults.point("gc:marked")
    if mark_only:
        return GcResult()
    return sweep_pods(pods, grace_period=grace_period, stage1_backend=stage1_backend,
                      report=report, detach_above=detach_above)


# -- what pods hold on to in the image store -----------------------------------------------
@dataclass(frozen=True)
class PodReferences:
    """What the image store must keep for the pods there are.

    A pod holds on to every image and rendered tree it uses from the moment it is
    prepared until it is collected: while it is being prepared through the shared
    :func:`rkt.locks.prepare_lock`, afterwards through what its directory records.
    """

    #: rendered trees recorded by pods that are not garbage (``render`` directory names)
    trees: frozenset[str]
    #: image ID -> UUIDs of the pods (not garbage) whose apps use it
    images: Mapping[str, tuple[str, ...]]


def _tree_ids(pod_dir: str) -> list[str]:
    """The tree store IDs a pod directory records (its stage1's, its apps').

    The pod may move to its next phase while it is read (``prepare/`` to
    ``prepared/``, say): what cannot be read here is read again where it went,
    since :meth:`PodStore.iter_pods` lists the later phases afterwards.
    """
    try:
        apps = os.listdir(f"{pod_dir}/appsinfo")
    except OSError:
        apps = []
    found = []
    for name in ["stage1TreeStoreID", *(f"appsinfo/{app}/treeStoreID" for app in apps)]:
        try:
            with open(f"{pod_dir}/{name}") as handle:
                found.append(handle.read().strip())
        except OSError:
            continue
    return found


def pod_references(pods: PodStore) -> PodReferences:
    trees: set[str] = set()
    images: dict[str, list[str]] = {}
    for pod in pods.iter_pods():
        if pod.phase == "garbage":
            continue
        trees.update(_tree_ids(pod.path_text))
        try:
            apps = pod.manifest_json().get("apps") or []
        except (RktError, ValueError, OSError):
            continue  # an embryo, or a pod removed meanwhile: it records nothing
        for app in apps:  # type: ignore[attr-defined]
            image_id = app.get("image", {}).get("id") if isinstance(app, dict) else None
            if image_id:
                users = images.setdefault(image_id, [])
                if pod.uuid not in users:
                    users.append(pod.uuid)
    return PodReferences(frozenset(trees), {k: tuple(v) for k, v in images.items()})

