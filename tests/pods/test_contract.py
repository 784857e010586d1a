"""The typed stage1 contract (``rkt.pod.contract``) and its JSON, as both sides read it.

stage0 writes ``apps.json`` and ``runtime.json``; the supervisor, a stdlib-only
copy inside each stage1 image, reads the latter as plain JSON. These tests hold
the two sides to the same fields and the same version.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rkt.errors import Stage1Error
from rkt.pod import supervisor
from rkt.pod.contract import (
    CONTRACT_VERSION,
    AppMount,
    AppPort,
    ContractVersionError,
    OverlayDirs,
    PlacedApp,
    PodNetwork,
    PodRuntime,
    ResolvedApp,
    ResolvedPod,
    ResolvedVolume,
    SeccompFilter,
    SupervisorJob,
)
from rkt.stage1 import INTERFACE_VERSION, check_interface_version

APP = ResolvedApp(
    name="web", image_name="example.com/web", image_id="sha512-" + "0" * 128,
    tree="deps-sha512-" + "1" * 64, lower="/var/lib/rkt/cas/tree/x/rootfs", overlay=True,
    exec=("/bin/web", "--port=80"), env=(("PATH", "/bin"), ("B", "2"), ("A", "1")),
    uid=1000, gid=100, supplementary_gids=(2000, 3000), working_directory="/srv",
    read_only_rootfs=True,
    mounts=(AppMount("data", "/data", read_only=True, recursive=False),),
    capabilities=("CAP_NET_BIND_SERVICE",), no_new_privileges=True, oom_score_adj=-10,
    seccomp=SeccompFilter("remove", ("@rkt/default-blacklist", "mkdir"), "EACCES", "IAAAAA=="),
    pre_start=("/bin/setup",), post_stop=("/bin/cleanup", "now"),
    ports=(AppPort("http", "tcp", 80, port_count=2, socket_activated=True),),
)
POD = ResolvedPod(
    uuid="00000000-1111-2222-3333-444444444444", apps=(APP,), rkt_version="0.1.0",
    volumes=(ResolvedVolume("data", "host", "/srv/data", read_only=True, recursive=False),
             ResolvedVolume("scratch", "empty", "sharedVolumes/scratch")),
)


def test_resolved_pod_round_trips_through_apps_json() -> None:
    assert ResolvedPod.from_json(POD.to_json()) == POD
    assert json.loads(POD.to_json())["version"] == CONTRACT_VERSION == INTERFACE_VERSION


def test_keep_all_capabilities_stays_distinct_from_keep_none() -> None:
    for caps in (None, ()):
        app = APP._replace(capabilities=caps)
        assert ResolvedApp.from_json(app.to_json()).capabilities == caps


def test_no_seccomp_filter_stays_distinct_from_a_filter() -> None:
    app = APP._replace(seccomp=None)
    assert ResolvedApp.from_json(app.to_json()).seccomp is None
    assert json.loads(POD.to_json())["apps"][0]["seccomp"]["set"] == [
        "@rkt/default-blacklist", "mkdir"]


def test_apps_json_of_another_version_is_refused() -> None:
    document = json.loads(POD.to_json())
    document["version"] = 1
    with pytest.raises(ContractVersionError,
                       match=f"version 1; this rkt speaks {CONTRACT_VERSION}"):
        ResolvedPod.from_json(json.dumps(document))


def test_empty_volumes_are_found_under_the_pod_dir() -> None:
    assert POD.volume("scratch").host_path("/pods/run/u") == "/pods/run/u/sharedVolumes/scratch"
    assert POD.volume("data").host_path("/pods/run/u") == "/srv/data"


def test_pod_runtime_defaults() -> None:
    runtime = PodRuntime()
    assert runtime.pod_hostname("abc") == "rkt-abc"
    assert PodRuntime(hostname="h").pod_hostname("abc") == "h"
    none = PodRuntime(net=("none",), network=PodNetwork(mode="none", netns="/run/netns/x"))
    assert not runtime.private_network and none.private_network


def _job(**overrides: Any) -> SupervisorJob:
    placed = PlacedApp(APP, root="/opt/stage2/web/rootfs", mount_sources=("/rkt/volumes/data",),
                       overlay=OverlayDirs("/l", "/u", "/w"),
                       etc_files=(("hosts", "127.0.0.1\tlocalhost\n"),))
    return SupervisorJob(uuid=POD.uuid, hostname="h", mode="nspawn", apps=(placed,),
                         **overrides)


def test_the_supervisor_reads_exactly_the_job_stage0_writes(tmp_path: Path) -> None:
    path = tmp_path / "runtime.json"
    path.write_text(_job(ready_file="/rkt/ready").to_json())
    spec = supervisor.load_job(str(path))
    assert set(spec) == supervisor.JOB_KEYS
    (app,) = spec["apps"]
    assert set(app) == supervisor.APP_KEYS
    assert app["mounts"] == [{"source": "/rkt/volumes/data", "target": "/data",
                              "read_only": True, "recursive": False}]
    assert app["overlay"] == {"lower": "/l", "upper": "/u", "work": "/w"}
    assert dict(app["env"]) == {"PATH": "/bin", "B": "2", "A": "1"}
    assert supervisor.JOB_VERSION == CONTRACT_VERSION


def test_the_supervisor_refuses_a_job_of_another_version(tmp_path: Path,
                                                         capfd: pytest.CaptureFixture[str]) -> None:
    document = json.loads(_job().to_json())
    document["version"] = 99
    path = tmp_path / "runtime.json"
    path.write_text(json.dumps(document))
    assert supervisor.main(["supervisor", str(path)]) == 254
    err = capfd.readouterr().err
    assert err == (f"rkt: supervisor: {path} is of stage1 interface version 99; "
                   f"this supervisor speaks {CONTRACT_VERSION}\n")


class _Backend:
    name = "fly"
    interface_version = INTERFACE_VERSION


def _stage1_manifest(name: str, version: str | None) -> dict[str, Any]:
    annotations = [{"name": "coreos.com/rkt/stage1/backend", "value": "fly"}]
    if version is not None:
        annotations.append({"name": "coreos.com/rkt/stage1/interface-version", "value": version})
    return {"name": name, "annotations": annotations}


@pytest.mark.parametrize(("name", "version", "message"), [
    ("example.com/stage1-future", "99",
     'stage1 image "example.com/stage1-future" speaks stage1 interface version 99; '
     f"this rkt speaks {INTERFACE_VERSION}"),
    ("coreos.com/rkt/stage1-fly", "1",
     'stage1 image "coreos.com/rkt/stage1-fly" speaks stage1 interface version 1; '
     f"this rkt speaks {INTERFACE_VERSION} (run 'rkt install' to rebuild the stage1 images)"),
    ("example.com/stage1-old", "1",
     'stage1 image "example.com/stage1-old" speaks stage1 interface version 1; '
     f"this rkt speaks {INTERFACE_VERSION}"),
    ("example.com/stage1-silent", None,
     'stage1 image "example.com/stage1-silent" does not say which stage1 interface version'),
])
def test_unknown_interface_versions_are_refused(name: str, version: str | None,
                                                message: str) -> None:
    with pytest.raises(Stage1Error) as caught:
        check_interface_version(_stage1_manifest(name, version), _Backend())  # type: ignore[arg-type]
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_a_backend_of_another_interface_version_is_refused() -> None:
    backend = _Backend()
    backend.interface_version = 1
    with pytest.raises(Stage1Error, match='backend "fly" speaks stage1 interface version 1'):
        check_interface_version(_stage1_manifest("x", str(INTERFACE_VERSION)), backend)  # type: ignore[arg-type]
    check_interface_version(_stage1_manifest("x", str(INTERFACE_VERSION)), _Backend())  # type: ignore[arg-type]
