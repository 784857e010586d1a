"""rkt.apiservice.pods without a server: pod messages from hand-made pod
directories (unprivileged), and rkt's filter rules."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("grpc")

from rkt.apiservice import pods
from rkt.apiservice.v1alpha import api_pb2 as api
from rkt.pod.dirs import PodStore

MANIFEST = {
    "acKind": "PodManifest", "acVersion": "0.8.11",
    "apps": [{"name": "web", "image": {"name": "example.com/web", "id": "sha512-" + "a" * 64,
                                       "labels": [{"name": "version", "value": "3"}]},
              "app": {"exec": ["/web"], "user": "0", "group": "0"},
              "annotations": [{"name": "role", "value": "front"}]}],
    "annotations": [{"name": "owner", "value": "ops"}],
}


def prepared_pod(tmp_path: Path) -> PodStore:
    store = PodStore(tmp_path)
    pod = store.create_embryo()
    (pod.path / "pod").write_text(json.dumps(MANIFEST))
    pod.move("prepared")
    pod.release()
    return store


def test_a_prepared_pod(tmp_path: Path) -> None:
    store = prepared_pod(tmp_path)
    pod = next(store.iter_pods())
    message = pods.pod_message(pod, detail=False)
    assert message.state == api.POD_STATE_PREPARED and message.pid == -1
    assert message.manifest == b""
    assert [(kv.Key, kv.value) for kv in message.annotations] == [("owner", "ops")]
    app = message.apps[0]
    assert (app.name, app.image.name, app.image.version) == ("web", "example.com/web", "3")
    assert app.state == api.APP_STATE_UNDEFINED and app.exit_code == -1
    assert [(kv.Key, kv.value) for kv in app.annotations] == [("role", "front")]
    assert message.created_at > 10**18 and message.started_at == 0
    assert b'"PodManifest"' in pods.pod_message(pod, detail=True).manifest


def test_a_pod_collected_while_it_is_read_is_gone(tmp_path: Path) -> None:
    store = prepared_pod(tmp_path)
    pod = next(store.iter_pods())
    shutil.rmtree(pod.path)
    with pytest.raises(pods.PodGone):
        pods.pod_message(pod, detail=True)


def test_find_pod_by_prefix() -> None:
    class P:
        def __init__(self, uuid: str) -> None:
            self.uuid = uuid

    found = [P("abc1"), P("abd2")]
    assert pods.find_pod(found, "abc").uuid == "abc1"  # type: ignore[arg-type]
    with pytest.raises(Exception, match="ambiguous"):
        pods.find_pod(found, "ab")  # type: ignore[arg-type]
    with pytest.raises(Exception, match="no pod"):
        pods.find_pod(found, "ff")  # type: ignore[arg-type]


def test_pod_filters_as_rkt_had_them() -> None:
    pod = api.Pod(id="p1", state=api.POD_STATE_RUNNING, cgroup="/machine.slice/rkt-p1",
                  apps=[api.App(name="a", image=api.Image(id="i1")),
                        api.App(name="b", image=api.Image(id="i2"))],
                  annotations=[api.KeyValue(Key="k", value="v")])
    match = pods.matches_filter
    assert match(pod, api.PodFilter())
    assert match(pod, api.PodFilter(ids=["p0", "p1"], states=[api.POD_STATE_RUNNING]))
    assert not match(pod, api.PodFilter(ids=["p1"], states=[api.POD_STATE_EXITED]))
    assert match(pod, api.PodFilter(app_names=["a", "b"], image_ids=["i2"]))
    assert not match(pod, api.PodFilter(app_names=["a", "c"]))  # all of them
    assert match(pod, api.PodFilter(annotations=[api.KeyValue(Key="k", value="v")]))
    assert not match(pod, api.PodFilter(annotations=[api.KeyValue(Key="k", value="w")]))
    assert not match(pod, api.PodFilter(network_names=["default"]))
    assert match(pod, api.PodFilter(cgroups=["/machine.slice/rkt-p1"]))
    assert match(pod, api.PodFilter(pod_sub_cgroups=["/machine.slice/rkt-p1/stage1"]))
    assert not match(pod, api.PodFilter(pod_sub_cgroups=["/other"]))
    assert pods.matches_any(pod, [])
    assert pods.matches_any(pod, [api.PodFilter(ids=["x"]), api.PodFilter(ids=["p1"])])


def test_events_are_the_differences_between_two_looks() -> None:
    from rkt.apiservice.events import PodSnapshot, Snapshot, differences, wanted

    before = Snapshot(pods={"p1": PodSnapshot("prepared"), "p2": PodSnapshot("running",
                                                                               frozenset({"a"}))},
                      images={"sha512-1": "example.com/old"})
    after = Snapshot(pods={"p1": PodSnapshot("running", frozenset({"web"})),
                           "p2": PodSnapshot("exited", frozenset({"a"}), (("a", 3),)),
                           "p3": PodSnapshot("prepared")},
                     images={"sha512-2": "example.com/new"})
    seen = [(e.type, e.id, getattr(e, "from"), [(kv.Key, kv.value) for kv in e.data])
            for e in differences(before, after)]
    assert seen == [
        (api.EVENT_TYPE_POD_STARTED, "p1", "", []),
        (api.EVENT_TYPE_APP_STARTED, "p1", "web", []),
        (api.EVENT_TYPE_APP_EXITED, "p2", "a", [("exit_code", "3")]),
        (api.EVENT_TYPE_POD_EXITED, "p2", "", []),
        (api.EVENT_TYPE_POD_PREPARED, "p3", "", []),
        (api.EVENT_TYPE_IMAGE_IMPORTED, "sha512-2", "example.com/new", []),
        (api.EVENT_TYPE_IMAGE_REMOVED, "sha512-1", "example.com/old", []),
    ]
    gone = differences(after, Snapshot(pods={}, images=after.images))
    assert [(e.type, e.id) for e in gone] == [
        (api.EVENT_TYPE_POD_GARBAGE_COLLECTED, uuid) for uuid in ("p1", "p2", "p3")]
    started = differences(before, after)[0]
    assert wanted(started, api.EventFilter(types=[api.EVENT_TYPE_POD_STARTED], ids=["p1"]))
    assert not wanted(started, api.EventFilter(types=[api.EVENT_TYPE_POD_EXITED]))
    assert not wanted(started, api.EventFilter(names=["web"]))
