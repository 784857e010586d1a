"""Every example manifest shipped with the spec parses, validates and round-trips exactly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rkt.schema.base import SchemaDocument
from rkt.schema.image import ImageManifest
from rkt.schema.pod import PodManifest

EXAMPLES = Path(__file__).parent / "data" / "examples"
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.json"))


def _model_for(document: dict[str, Any]) -> type[SchemaDocument]:
    return ImageManifest if document["acKind"] == "ImageManifest" else PodManifest


def _normalise_gids_spelling(value: Any) -> Any:
    # The spec's example spells the key "supplementaryGids"; we read it and write the
    # reference's "supplementaryGIDs". Only that key is renamed before comparing.
    if isinstance(value, dict):
        return {
            ("supplementaryGIDs" if key == "supplementaryGids" else key): _normalise_gids_spelling(
                item
            )
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_normalise_gids_spelling(item) for item in value]
    return value


def test_examples_exist() -> None:
    names = {path.name for path in EXAMPLE_FILES}
    assert {"image.json", "pod_runtime.json", "pod_template.json"} <= names


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_example_round_trips_exactly(path: Path) -> None:
    text = path.read_text()
    original = json.loads(text)
    model = _model_for(original)
    manifest = model.parse(text, source=path.name)

    emitted = json.loads(manifest.to_json())

    assert emitted == _normalise_gids_spelling(original)


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_example_parses_from_bytes_and_is_stable(path: Path) -> None:
    data = path.read_bytes()
    model = _model_for(json.loads(data))
    first = model.parse(data)
    again = model.parse(first.to_json(indent=4))
    assert again == first
    assert again.to_json() == first.to_json()


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_example_indent_output_is_valid_json(path: Path) -> None:
    text = path.read_text()
    manifest = _model_for(json.loads(text)).parse(text)
    pretty = manifest.to_json(indent=2)
    assert "\n  " in pretty
    assert json.loads(pretty) == json.loads(manifest.to_json())


def test_image_example_content() -> None:
    manifest = ImageManifest.parse((EXAMPLES / "image.json").read_text())
    assert manifest.name == "example.com/reduce-worker"
    assert manifest.version == "1.0.0"
    assert (manifest.os, manifest.arch) == ("linux", "amd64")
    assert manifest.annotation("created") == "2014-10-27T19:32:27.67021798Z"
    assert manifest.annotation("missing") is None
    assert manifest.app is not None
    assert manifest.app.exec == ["/usr/bin/reduce-worker", "--quiet"]
    handler = manifest.app.event_handler("post-stop")
    assert handler is not None and handler.exec[0] == "/usr/bin/deregister-worker"
    assert manifest.app.env() == {"REDUCE_WORKER_DEBUG": "true"}
    # The spec example's dependency pin is a placeholder: accepted, but matches nothing.
    dependency = (manifest.dependencies or [])[0]
    assert dependency.image_id == "sha512-..."
    assert not dependency.matches("sha512-" + "0" * 128)
    assert dependency.label("env") == "canary"


def test_spec_text_example_with_supplementary_gids_spelling() -> None:
    # aci.md's own example uses "supplementaryGids"; it is read and written as GIDs.
    document = json.loads((EXAMPLES / "image.json").read_text())
    document["app"]["supplementaryGids"] = [400, 500]
    manifest = ImageManifest.parse(json.dumps(document))
    assert manifest.app is not None
    assert manifest.app.supplementary_gids == [400, 500]
    emitted = json.loads(manifest.to_json())
    assert emitted["app"]["supplementaryGIDs"] == [400, 500]
    assert "supplementaryGids" not in emitted["app"]
    assert emitted == _normalise_gids_spelling(document)


def test_pod_examples_content() -> None:
    runtime = PodManifest.parse((EXAMPLES / "pod_runtime.json").read_text())
    template = PodManifest.parse((EXAMPLES / "pod_template.json").read_text())
    assert runtime.is_reified()
    assert not template.is_reified()
    assert template.ac_version == "0.3.0"
    backup = runtime.app("backup")
    assert backup is not None
    assert backup.annotation("foo") == "baz"
    assert backup.image.label("version") == "latest"
    assert backup.read_only_root_fs is False
    db = runtime.volume("dbvolume")
    assert db is not None and db.read_only and db.recursive
    out = runtime.volume("buildoutput")
    assert out is not None and out.mode_bits == 0o777
    assert runtime.annotation("ip-address") == "10.1.2.3"
    # Pod-level isolators keep their raw values.
    assert [i.name for i in runtime.isolators or []] == ["resource/memory", "os/unix/sysctl"]
