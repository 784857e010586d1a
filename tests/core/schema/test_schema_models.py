"""Model behaviour: defaults, exact output, null vs [], unknown keys, Python construction."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from pydantic import ValidationError

from rkt.errors import ManifestError
from rkt.schema.image import App, Dependency, EventHandler, ImageManifest, MountPoint, Port
from rkt.schema.pod import ExposedPort, Mount, PodManifest, RuntimeApp, RuntimeImage, Volume
from rkt.schema.types import Annotation, EnvironmentVariable, Isolator, Label

MINIMAL_IMAGE = {"acKind": "ImageManifest", "acVersion": "0.8.11", "name": "example.com/app"}


def _image(**extra: Any) -> dict[str, Any]:
    return {**MINIMAL_IMAGE, **extra}


def _round_trip(model: type[ImageManifest] | type[PodManifest], document: dict[str, Any]) -> Any:
    return json.loads(model.parse(json.dumps(document)).to_json())


def test_defaults_are_available_but_not_emitted() -> None:
    document = _image(
        app={
            "user": "0",
            "group": "0",
            "mountPoints": [{"name": "work", "path": "/work"}],
            "ports": [{"name": "http", "protocol": "tcp", "port": 80}],
        }
    )
    manifest = ImageManifest.parse(json.dumps(document))
    app = manifest.app
    assert app is not None
    assert app.working_directory == "/"
    assert app.exec is None
    mount_point = app.mount_point("work")
    assert mount_point is not None and mount_point.read_only is False
    port = app.port("http")
    assert port is not None
    assert (port.count, port.effective_count, port.socket_activated) == (1, 1, False)
    assert port.port_range == range(80, 81)
    assert json.loads(manifest.to_json()) == document


def test_pod_defaults_are_available_but_not_emitted() -> None:
    document = {
        "acKind": "PodManifest",
        "acVersion": "0.8.11",
        "apps": [{"name": "app", "image": {"id": "sha512-" + "b" * 64}}],
        "volumes": [
            {"name": "scratch", "kind": "empty"},
            {"name": "h", "kind": "host", "source": "/srv"},
        ],
    }
    pod = PodManifest.parse(json.dumps(document))
    scratch, host = pod.volume("scratch"), pod.volume("h")
    assert scratch is not None and host is not None
    assert (scratch.mode, scratch.mode_bits, scratch.uid, scratch.gid) == ("0755", 0o755, 0, 0)
    assert scratch.read_only is False
    assert host.recursive is True
    app = pod.app("app")
    assert app is not None and app.read_only_root_fs is False
    assert json.loads(pod.to_json()) == document


def test_explicit_defaults_are_kept() -> None:
    document = _image(
        app={
            "user": "0",
            "group": "0",
            "workingDirectory": "/",
            "mountPoints": [{"name": "work", "path": "/work", "readOnly": False}],
            "ports": [
                {"name": "p", "protocol": "udp", "port": 53, "count": 1, "socketActivated": False}
            ],
        }
    )
    assert _round_trip(ImageManifest, document) == document


def test_null_and_empty_lists_stay_distinct() -> None:
    document = _image(
        labels=None,
        app={"exec": None, "user": "0", "group": "0", "environment": [], "isolators": None},
        dependencies=[],
        pathWhitelist=None,
        annotations=[],
    )
    assert _round_trip(ImageManifest, document) == document


def test_reference_style_pod_with_null_lists_round_trips() -> None:
    # The reference marshals PodManifest lists without omitempty: "volumes": null, etc.
    document = {
        "acVersion": "0.8.11",
        "acKind": "PodManifest",
        "apps": [
            {
                "name": "hello",
                "image": {"name": "example.com/hello", "id": "sha512-" + "c" * 128, "labels": []},
                "app": {"exec": ["/hello"], "user": "0", "group": "0"},
                "annotations": None,
            }
        ],
        "volumes": None,
        "isolators": None,
        "annotations": None,
        "ports": None,
    }
    assert _round_trip(PodManifest, document) == document


def test_unknown_keys_are_ignored_and_not_emitted() -> None:
    document = _image(
        futureField={"x": 1},
        app={"user": "0", "group": "0", "criAnnotations": {"a": "b"}},
        labels=[{"name": "version", "value": "1", "comment": "ignored"}],
    )
    emitted = _round_trip(ImageManifest, document)
    assert "futureField" not in emitted
    assert emitted["app"] == {"user": "0", "group": "0"}
    assert emitted["labels"] == [{"name": "version", "value": "1"}]


def test_python_field_names_are_not_json_keys() -> None:
    # A document must use the spec's camelCase keys; "ac_kind" is just an unknown key.
    with pytest.raises(ManifestError, match=r"^manifest: acKind: is required$"):
        ImageManifest.parse(
            json.dumps({"ac_kind": "ImageManifest", "acVersion": "0.8.11", "name": "a"})
        )
    manifest = ImageManifest.parse(
        json.dumps(_image(app={"user": "0", "group": "0", "working_directory": "x"}))
    )
    assert manifest.app is not None and manifest.app.working_directory == "/"


def test_supplementary_gids_spellings() -> None:
    both = _image(
        app={"user": "0", "group": "0", "supplementaryGIDs": [1], "supplementaryGids": [2]}
    )
    manifest = ImageManifest.parse(json.dumps(both))
    assert manifest.app is not None and manifest.app.supplementary_gids == [1]
    emitted = json.loads(manifest.to_json())
    assert emitted["app"] == {"user": "0", "group": "0", "supplementaryGIDs": [1]}


def test_reference_port_count_zero_means_one() -> None:
    # docker2aci (built on the reference) writes "count": 0; the reference reads it as 1.
    document = _image(
        app={
            "user": "0",
            "group": "0",
            "ports": [{"name": "p", "protocol": "tcp", "port": 65535, "count": 0}],
        }
    )
    manifest = ImageManifest.parse(json.dumps(document))
    assert manifest.app is not None
    port = manifest.app.ports[0] if manifest.app.ports else None
    assert port is not None and port.effective_count == 1 and port.port_range == range(65535, 65536)
    assert json.loads(manifest.to_json()) == document


def test_port_range_may_end_at_65535() -> None:
    port = Port(name="ftp-data", protocol="tcp", port=64536, count=1000)
    assert port.port_range[-1] == 65535


def test_python_construction_writes_kind_and_version() -> None:
    manifest = ImageManifest(
        name="example.com/hello",
        labels=[Label(name="version", value="1.0.0")],
        app=App(
            exec=["/hello"],
            user="0",
            group="0",
            environment=[EnvironmentVariable(name="A", value="1")],
            isolators=[Isolator(name="os/linux/no-new-privileges", value=True)],
            event_handlers=[EventHandler(name="pre-start", exec=["/setup"])],
            mount_points=[MountPoint(name="data", path="/data", read_only=True)],
        ),
        dependencies=[Dependency(image_name="example.com/base")],
        annotations=[Annotation(name="authors", value="me")],
    )
    emitted = json.loads(manifest.to_json())
    assert emitted == {
        "acKind": "ImageManifest",
        "acVersion": "0.8.11",
        "name": "example.com/hello",
        "labels": [{"name": "version", "value": "1.0.0"}],
        "app": {
            "exec": ["/hello"],
            "eventHandlers": [{"name": "pre-start", "exec": ["/setup"]}],
            "user": "0",
            "group": "0",
            "environment": [{"name": "A", "value": "1"}],
            "isolators": [{"name": "os/linux/no-new-privileges", "value": True}],
            "mountPoints": [{"name": "data", "path": "/data", "readOnly": True}],
        },
        "dependencies": [{"imageName": "example.com/base"}],
        "annotations": [{"name": "authors", "value": "me"}],
    }
    assert ImageManifest.parse(manifest.to_json()) == manifest

    pod = PodManifest(
        apps=[
            RuntimeApp(
                name="hello",
                image=RuntimeImage(id="sha512-" + "d" * 64),
                mounts=[Mount(volume="data", path="/data")],
            )
        ],
        volumes=[Volume(name="data", kind="empty", mode="0700")],
        ports=[ExposedPort(name="http", host_port=8080, host_ip="::1")],
    )
    assert json.loads(pod.to_json()) == {
        "acVersion": "0.8.11",
        "acKind": "PodManifest",
        "apps": [
            {
                "name": "hello",
                "image": {"id": "sha512-" + "d" * 64},
                "mounts": [{"volume": "data", "path": "/data"}],
            }
        ],
        "volumes": [{"name": "data", "kind": "empty", "mode": "0700"}],
        "ports": [{"name": "http", "hostPort": 8080, "hostIP": "::1"}],
    }


def test_assignment_is_validated_and_emitted() -> None:
    app = App(user="0", group="0")
    app.working_directory = "/srv"
    assert app.to_dict() == {"user": "0", "group": "0", "workingDirectory": "/srv"}
    with pytest.raises(ValidationError):
        app.working_directory = "srv"
    with pytest.raises(ValidationError):
        Volume(name="v", kind="host", source="/srv", uid=0)


def test_to_json_refuses_an_invalid_mutated_document() -> None:
    manifest = ImageManifest.parse(json.dumps(_image(labels=[{"name": "os", "value": "linux"}])))
    assert manifest.labels is not None
    manifest.labels.append(Label(name="os", value="linux"))
    with pytest.raises(ManifestError, match=r'^manifest: labels\[1\]\.name: duplicate label "os"'):
        manifest.to_json()


def test_pod_template_and_undefined_volume_are_accepted() -> None:
    # Checklist section 4 [impl]: no image id in a template; a mount may name a volume
    # the pod does not define (appVolume or the stage1 may supply it).
    document = {
        "acKind": "PodManifest",
        "acVersion": "0.8.11",
        "apps": [
            {
                "name": "a",
                "image": {"name": "example.com/a"},
                "mounts": [{"volume": "nope", "path": "/x"}],
            }
        ],
    }
    pod = PodManifest.parse(json.dumps(document))
    assert not pod.is_reified()
    assert pod.volume("nope") is None
    assert json.loads(pod.to_json()) == document


def test_app_helpers() -> None:
    app = App(
        user="0",
        group="0",
        environment=[
            EnvironmentVariable(name="B", value="2"),
            EnvironmentVariable(name="A", value="1"),
        ],
        isolators=[
            Isolator(name="resource/memory", value={"limit": "1G"}),
            Isolator(name="resource/memory", value={"limit": "2G"}),
        ],
    )
    assert list(app.env().items()) == [("B", "2"), ("A", "1")]
    memory = app.isolator("resource/memory")
    assert memory is not None and memory.value == {"limit": "2G"}
    assert app.isolator("resource/cpu") is None
    assert app.event_handler("pre-start") is None


def test_dependency_pin_matching() -> None:
    full = "sha512-" + "e" * 128
    assert Dependency(image_name="a").matches(full)
    assert Dependency(image_name="a", image_id=full).matches(full)
    assert Dependency(image_name="a", image_id=full[: 7 + 64]).matches(full)
    assert Dependency(image_name="a", image_id=full).matches(full[: 7 + 64])
    assert not Dependency(image_name="a", image_id="sha512-" + "f" * 128).matches(full)
    assert not Dependency(image_name="a", image_id="sha512-eeee").matches(full)


def test_ac_version_major_is_not_enforced() -> None:
    # The reference only refuses major < 0; the spec's own pod template says 0.3.0.
    assert ImageManifest.parse(json.dumps(_image(acVersion="1.2.3"))).ac_version == "1.2.3"


def test_importing_rkt_does_not_import_pydantic() -> None:
    code = "import sys, rkt, rkt.schema; assert 'pydantic' not in sys.modules, 'pydantic loaded'"
    subprocess.run([sys.executable, "-c", code], check=True)
