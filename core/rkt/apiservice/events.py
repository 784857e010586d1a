"""``ListenEvents``: what changed in the pod directories and the store, as it happens.

rkt 1.x declared this call but never implemented it. Here each stream looks
at the pods and images every :data:`POLL_INTERVAL` seconds (reading as
``rkt list`` and ``rkt image list`` do) and reports the differences since its
last look. Only what happens while a client listens is reported: no history
is kept, so ``since_time`` in the past is refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rkt.apiservice.v1alpha import api_pb2 as api
from rkt.pod.dirs import PodStore
from rkt.pod.status import pod_status

if TYPE_CHECKING:
    from rkt.store import ImageStore

POLL_INTERVAL = 0.25


@dataclass(frozen=True)
class PodSnapshot:
    state: str
    #: the apps that have started, and the exit codes of those that ended
    started_apps: frozenset[str] = frozenset()
    exit_codes: tuple[tuple[str, int], ...] = ()


@dataclass
class Snapshot:
    pods: dict[str, PodSnapshot] = field(default_factory=dict)
    images: dict[str, str] = field(default_factory=dict)


def take_snapshot(data_dir: Path, store: ImageStore) -> Snapshot:
    snapshot = Snapshot()
    for pod in PodStore(data_dir).iter_pods():
        status = pod_status(pod)
        status_dir = pod.stage1_rootfs() / "rkt" / "status"
        started = frozenset(
            app.name for app in status.apps
            if app.name and (status_dir / f"{app.name}-started").exists()
        )
        codes = tuple(sorted((app.name, app.exit_code) for app in status.apps
                             if app.name and app.exit_code is not None))
        snapshot.pods[pod.uuid] = PodSnapshot(status.state, started, codes)
    snapshot.images = {info.id: info.name for info in store.list_images()}
    return snapshot


_PREPARED = ("prepared",)
_ABORTED = ("aborted prepare",)
_EXITED = ("exited", "exited garbage", "exited deleting")


def _event(kind: api.EventType, ident: str, origin: str = "",
           data: dict[str, str] | None = None) -> api.Event:
    return api.Event(type=kind, id=ident, time=int(time.time()), **{"from": origin},
                     data=[api.KeyValue(Key=k, value=v) for k, v in (data or {}).items()])


def differences(before: Snapshot, after: Snapshot) -> list[api.Event]:
    """The events that turn ``before`` into ``after``, pods first, in a stable order."""
    events: list[api.Event] = []
    for uuid, now in sorted(after.pods.items()):
        was = before.pods.get(uuid)
        old_state = was.state if was else None
        if now.state != old_state:
            if now.state in _PREPARED:
                events.append(_event(api.EVENT_TYPE_POD_PREPARED, uuid))
            elif now.state in _ABORTED:
                events.append(_event(api.EVENT_TYPE_POD_PREPARE_ABORTED, uuid))
            elif now.state == "running":
                events.append(_event(api.EVENT_TYPE_POD_STARTED, uuid))
        for app in sorted(now.started_apps - (was.started_apps if was else frozenset())):
            events.append(_event(api.EVENT_TYPE_APP_STARTED, uuid, app))
        old_codes = dict(was.exit_codes) if was else {}
        for app, code in now.exit_codes:
            if app not in old_codes:
                events.append(_event(api.EVENT_TYPE_APP_EXITED, uuid, app,
                                     {"exit_code": str(code)}))
        if now.state in _EXITED and (old_state is None or old_state not in _EXITED) and (
            was is not None
        ):
            events.append(_event(api.EVENT_TYPE_POD_EXITED, uuid))
    for uuid in sorted(before.pods.keys() - after.pods.keys()):
        events.append(_event(api.EVENT_TYPE_POD_GARBAGE_COLLECTED, uuid))
    for image_id in sorted(after.images.keys() - before.images.keys()):
        events.append(_event(api.EVENT_TYPE_IMAGE_IMPORTED, image_id, after.images[image_id]))
    for image_id in sorted(before.images.keys() - after.images.keys()):
        events.append(_event(api.EVENT_TYPE_IMAGE_REMOVED, image_id, before.images[image_id]))
    return events


def wanted(event: api.Event, selection: api.EventFilter) -> bool:
    if selection.types and event.type not in selection.types:
        return False
    if selection.ids and event.id not in selection.ids:
        return False
    origin = getattr(event, "from")
    return not selection.names or origin in selection.names


def watch(data_dir: Path, store: ImageStore, selection: api.EventFilter,
          active: Callable[[], bool]) -> Iterator[api.ListenEventsResponse]:
    """Yield batches of events until ``active()`` is false (the client left) or
    ``until_time`` (seconds since the epoch) has passed."""
    before = take_snapshot(data_dir, store)
    while active():
        if selection.until_time and time.time() > selection.until_time:
            return
        time.sleep(POLL_INTERVAL)
        after = take_snapshot(data_dir, store)
        events = [e for e in differences(before, after) if wanted(e, selection)]
        before = after
        if events:
            yield api.ListenEventsResponse(events=events)
