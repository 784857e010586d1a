"""Pods as ``v1alpha.Pod`` messages, and rkt's pod filters.

Everything comes from the pod directory (:func:`rkt.pod.status.pod_status`
and the files it reads), read as ``rkt status`` reads it: a pod that ``gc``
removes while it is read is simply gone (:class:`PodGone`).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Sequence
from typing import Any

from rkt import APPC_VERSION
from rkt.apiservice.v1alpha import api_pb2 as api
from rkt.errors import PodError
from rkt.pod.dirs import POD_MANIFEST, Pod
from rkt.pod.status import pod_status

#: rkt's state words (:meth:`rkt.pod.dirs.Pod.state`) as v1alpha states
POD_STATES = {
    "embryo": api.POD_STATE_EMBRYO,
    "preparing": api.POD_STATE_PREPARING,
    "aborted prepare": api.POD_STATE_ABORTED_PREPARE,
    "prepared": api.POD_STATE_PREPARED,
    "running": api.POD_STATE_RUNNING,
    "exited": api.POD_STATE_EXITED,
    "deleting": api.POD_STATE_DELETING,
    "exited deleting": api.POD_STATE_DELETING,
    "exited garbage": api.POD_STATE_GARBAGE,
    "garbage": api.POD_STATE_GARBAGE,
}
#: phases a pod has been moved to by ``gc`` (their directory's mtime is when)
_GC_PHASES = ("exited-garbage", "garbage")


class PodGone(Exception):
    """The pod disappeared (``gc``, ``rm``) while it was being read."""


def key_values(items: Iterable[dict[str, Any]] | dict[str, Any] | None) -> list[api.KeyValue]:
    """appc's ``[{"name", "value"}]`` lists (or a plain mapping) as KeyValues."""
    if isinstance(items, dict):
        return [api.KeyValue(Key=str(k), value=str(v)) for k, v in items.items()]
    return [api.KeyValue(Key=str(item.get("name", "")), value=str(item.get("value", "")))
            for item in items or ()]


def _nanoseconds(when: float | None) -> int:
    return 0 if when is None else int(when * 1_000_000_000)


def pod_message(pod: Pod, *, detail: bool) -> api.Pod:
    """The pod as v1alpha describes it; ``detail`` adds the pod manifest's bytes."""
    status = pod_status(pod)
    try:
        manifest_bytes = (pod.path / POD_MANIFEST).read_bytes()
        manifest: dict[str, Any] = json.loads(manifest_bytes)
    except FileNotFoundError:
        if not pod.path.exists():
            raise PodGone(pod.uuid) from None
        manifest_bytes, manifest = b"", {}  # an embryo has none yet
    except (OSError, ValueError):
        manifest_bytes, manifest = b"", {}
    state = POD_STATES.get(status.state, api.POD_STATE_UNDEFINED)
    message = api.Pod(
        id=pod.uuid, state=state, pid=-1,
        annotations=key_values(manifest.get("annotations")),
        created_at=_nanoseconds(status.created), started_at=_nanoseconds(status.started),
    )
    if pod.phase in _GC_PHASES:
        with contextlib.suppress(OSError):
            message.gc_marked_at = _nanoseconds(pod.path.stat().st_mtime)
    if status.state == "running":
        pid = pod.pid()
        message.pid = pid if pid is not None else -1
        message.cgroup = cgroup_of(pod)
    if status.state in ("running", "exited"):
        # rkt reported the networks of running and exited pods (until collected)
        message.networks.extend(api.Network(name=n.name, ipv4=n.ip or "")
                                for n in status.networks)
    if detail:
        message.manifest = manifest_bytes
    after_run = pod.phase in ("run", "exited-garbage")
    runtime_apps = {app.get("name"): app for app in manifest.get("apps") or []}
    for app in status.apps:
        image = (runtime_apps.get(app.name) or {}).get("image") or {}
        labels = {label.get("name"): label.get("value") for label in image.get("labels") or ()}
        app_state = api.APP_STATE_UNDEFINED
        if status.state == "running" and app.exit_code is None:
            app_state = api.APP_STATE_RUNNING
        elif after_run:
            app_state = api.APP_STATE_EXITED
        message.apps.append(api.App(
            name=app.name or "",
            image=api.Image(
                base_format=api.ImageFormat(type=api.IMAGE_TYPE_APPC, version=APPC_VERSION),
                id=app.image_id, name=app.image_name,
                version=str(labels.get("version") or "latest"),
            ),
            state=app_state,
            exit_code=app.exit_code if app.exit_code is not None else -1,
            annotations=key_values((runtime_apps.get(app.name) or {}).get("annotations")),
        ))
    return message


def find_pod(pods: Iterable[Pod], text: str) -> Pod:
    """The pod whose UUID is ``text`` or starts with it, as ``rkt status`` finds it."""
    matches = [pod for pod in pods if pod.uuid.startswith(text.lower())] if text else []
    if not matches:
        raise PodError(f'no pod with UUID "{text}"')
    if len(matches) > 1:
        raise PodError(f'UUID prefix "{text}" is ambiguous: it matches {len(matches)} pods')
    return matches[0]


def _has_all(wanted: Sequence[str], present: Iterable[str]) -> bool:
    return set(wanted) <= set(present)


def _contains_key_values(present: Sequence[api.KeyValue],
                         wanted: Sequence[api.KeyValue]) -> bool:
    values = {kv.Key: kv.value for kv in present}
    return all(kv.Key in values and values[kv.Key] == kv.value for kv in wanted)


def matches_filter(pod: api.Pod, wanted: api.PodFilter) -> bool:
    """rkt's rule: every field set in the filter must hold (an AND)."""
    if wanted.ids and pod.id not in wanted.ids:
        return False
    if wanted.states and pod.state not in wanted.states:
        return False
    if wanted.app_names and not _has_all(wanted.app_names, (a.name for a in pod.apps)):
        return False
    if wanted.image_ids and not _has_all(wanted.image_ids, (a.image.id for a in pod.apps)):
        return False
    if wanted.network_names and not _has_all(wanted.network_names,
                                             (n.name for n in pod.networks)):
        return False
    if wanted.annotations and not _contains_key_values(pod.annotations, wanted.annotations):
        return False
    if wanted.cgroups and pod.cgroup not in wanted.cgroups:
        return False
    if wanted.pod_sub_cgroups:
        if not pod.cgroup:
            return False
        if not any(cgroup.startswith(pod.cgroup) for cgroup in wanted.pod_sub_cgroups):
            return False
    return True


def matches_any(pod: api.Pod, filters: Sequence[api.PodFilter]) -> bool:
    """Filters are alternatives (an OR); no filter matches every pod."""
    return not filters or any(matches_filter(pod, f) for f in filters)


def cgroup_of(pod: Pod) -> str:
    """The pod's cgroup as ``/proc/<pid>/cgroup`` names it (what rkt reported), or ""."""
    from rkt.pod.cgroups import recorded_pod_dirs

    for directory in recorded_pod_dirs(pod):
        parts = directory.split(os.sep)
        # /sys/fs/cgroup[/<controller>]/<path>: the path below the hierarchy's root
        for depth in (5, 4):  # a v1 controller's mount first, then v2's
            if len(parts) > depth and os.path.ismount(os.sep.join(parts[:depth])):
                return "/" + "/".join(parts[depth:])
    return ""
