"""The docker plugin's pure pieces: references, the config mapping, challenges, auth lookup."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rkt.config import Config, DockerAuthEntry
from rkt.errors import ImageError, UsageError
from rkt_plugins.docker.convert import Origin, image_manifest, manifest_bytes, parse_user
from rkt_plugins.docker.documents import (
    ManifestIndex,
    Platform,
    media_type_of,
    parse_config,
    parse_index,
    parse_manifest,
)
from rkt_plugins.docker.fetcher import registry_credentials, remote_etag, stored_conversion
from rkt_plugins.docker.reference import DockerReference, parse_docker_reference
from rkt_plugins.docker.registry import parse_challenge


# -- references ----------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("docker://busybox", ("registry-1.docker.io", "library/busybox", "latest", None)),
    ("docker:busybox", ("registry-1.docker.io", "library/busybox", "latest", None)),
    ("docker://centos:7", ("registry-1.docker.io", "library/centos", "7", None)),
    ("docker://docker.io/myuser/app", ("registry-1.docker.io", "myuser/app", "latest", None)),
    ("docker://index.docker.io/redis", ("registry-1.docker.io", "library/redis", "latest", None)),
    ("docker://quay.io/myuser/privateapp",
     ("quay.io", "myuser/privateapp", "latest", None)),
    ("docker://localhost:5443/library/busybox",
     ("localhost:5443", "library/busybox", "latest", None)),
    ("docker://localhost/a/b/c:v1.0-rc_1", ("localhost", "a/b/c", "v1.0-rc_1", None)),
    ("docker://Registry.Example.COM:443/x", ("registry.example.com:443", "x", "latest", None)),
    ("docker://[::1]:5000/x", ("[::1]:5000", "x", "latest", None)),
    ("docker://my-user/my__app.x-y", ("registry-1.docker.io", "my-user/my__app.x-y",
                                      "latest", None)),
    ("docker://busybox@sha256:" + "a" * 64,
     ("registry-1.docker.io", "library/busybox", None, "sha256:" + "a" * 64)),
    ("docker://busybox:1@sha256:" + "b" * 64,
     ("registry-1.docker.io", "library/busybox", "1", "sha256:" + "b" * 64)),
])
def test_reference(text: str, expected: tuple[str, str, str | None, str | None]) -> None:
    ref = parse_docker_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == expected


@pytest.mark.parametrize("text, fragment", [
    ("docker://", "no image name"),
    ("docker://Busybox", "must be lowercase"),
    ("docker://localhost/Busy", "must be lowercase"),
    ("docker://busybox:", "invalid tag"),
    ("docker://busybox:-x", "invalid tag"),
    ("docker://busybox:" + "x" * 129, "invalid tag"),
    ("docker://busybox@sha256:abc", "unsupported digest"),
    ("docker://busybox@md5", "is not a digest"),
    ("docker://a b", "whitespace"),
    ("docker://localhost:5000/", "no repository name"),
    ("docker://foo..bar/x", "invalid registry host"),
    ("docker://x/" + "a" * 300, "longer than 255"),
    ("docker://a//b", "invalid repository name component"),
])
def test_bad_reference(text: str, fragment: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_docker_reference(text)
    message = str(caught.value)
    assert message.startswith(f'invalid docker URL "{text[:300]}')
    assert fragment in message
    assert message.endswith(
        'expected syntax is "docker://[REGISTRY_HOST[:REGISTRY_PORT]/]IMAGE_NAME[:TAG|@DIGEST]"')
    assert "\n" not in message


def test_reference_names() -> None:
    ref = parse_docker_reference("docker://localhost:5443/library/busybox")
    assert ref.aci_name == "localhost_5443/library/busybox"
    assert ref.url == "docker://localhost:5443/library/busybox:latest"
    assert parse_docker_reference("docker://redis").aci_name == (
        "registry-1.docker.io/library/redis")
    pinned = DockerReference("r.io", "a", None, "sha256:" + "c" * 64)
    assert pinned.version == pinned.reference == "sha256:" + "c" * 64


# -- config mapping ------------------------------------------------------------------------
def origin(**changes: Any) -> Origin:
    values: dict[str, Any] = dict(
        name="registry-1.docker.io/library/app", version="1.0", original_name="app:1.0",
        registry="registry-1.docker.io", repository="library/app", tag="1.0",
        manifest_digest="sha256:" + "1" * 64, image_id="sha256:" + "2" * 64,
    )
    values.update(changes)
    return Origin(**values)


def convert(container: dict[str, Any], **config: Any) -> dict[str, Any]:
    document = {"architecture": "amd64", "os": "linux", "config": container, **config}
    warnings: list[str] = []
    manifest = image_manifest(origin(), parse_config(json.dumps(document).encode(), "config"),
                              warn=warnings.append)
    manifest_bytes(manifest, "test image")  # the result is always a valid appc manifest
    manifest["warnings"] = warnings
    return manifest


@pytest.mark.parametrize("user, expected", [
    ("", ("0", "0")), ("1000", ("1000", "1000")), ("1000:50", ("1000", "50")),
    ("nobody", ("nobody", "nobody")), ("app:staff", ("app", "staff")), (":5", ("0", "5")),
])
def test_user_mapping(user: str, expected: tuple[str, str]) -> None:
    assert parse_user(user) == expected
    app = convert({"User": user, "Cmd": ["/x"]})["app"]
    assert (app["user"], app["group"]) == expected


def test_exec_is_entrypoint_then_cmd() -> None:
    manifest = convert({"Entrypoint": ["/bin/tini", "--"], "Cmd": ["nginx", "-g", "x"]})
    assert manifest["app"]["exec"] == ["/bin/tini", "--", "nginx", "-g", "x"]
    notes = {n["name"]: n["value"] for n in manifest["annotations"]}
    assert json.loads(notes["appc.io/docker/entrypoint"]) == ["/bin/tini", "--"]
    assert json.loads(notes["appc.io/docker/cmd"]) == ["nginx", "-g", "x"]
    assert "exec" not in convert({})["app"]


def test_environment_last_wins_and_bad_names_are_dropped() -> None:
    manifest = convert({"Env": ["A=1", "B=x=y", "A=2", "NOEQUALS", "1BAD=z", "E="]})
    assert manifest["app"]["environment"] == [
        {"name": "B", "value": "x=y"}, {"name": "A", "value": "2"}, {"name": "E", "value": ""},
    ]
    assert any("1BAD" in warning for warning in manifest["warnings"])


def test_volumes_and_ports() -> None:
    app = convert({
        "Volumes": {"/var/lib/mysql": {}, "/var/lib-mysql": {}, "/data": {}, "rel": {}},
        "ExposedPorts": {"8080/tcp": {}, "53/udp": {}, "9000": {}, "bad/tcp": {}},
    })["app"]
    assert app["mountPoints"] == [
        {"name": "volume-data", "path": "/data"},
        {"name": "volume-var-lib-mysql", "path": "/var/lib-mysql"},
        {"name": "volume-var-lib-mysql-1", "path": "/var/lib/mysql"},
    ]
    assert app["ports"] == [
        {"name": "53-udp", "protocol": "udp", "port": 53},
        {"name": "8080-tcp", "protocol": "tcp", "port": 8080},
        {"name": "9000", "protocol": "tcp", "port": 9000},
    ]


def test_labels_annotations_and_arch() -> None:
    manifest = convert({"Labels": {"a": "b"}, "WorkingDir": "/srv"},
                       architecture="arm64", variant="v8", author="me", comment="note",
                       created="2020-05-06T07:08:09.123Z")
    labels = {label["name"]: label["value"] for label in manifest["labels"]}
    assert labels == {"version": "1.0", "os": "linux", "arch": "aarch64"}
    assert manifest["app"]["userLabels"] == {"a": "b"}
    assert manifest["app"]["workingDirectory"] == "/srv"
    notes = {n["name"]: n["value"] for n in manifest["annotations"]}
    assert notes["authors"] == "me"
    assert notes["docker-comment"] == "note"
    assert notes["created"] == "2020-05-06T07:08:09Z"
    assert notes["appc.io/docker/originalname"] == "app:1.0"
    unknown = convert({}, architecture="mips64le")
    assert [label["name"] for label in unknown["labels"]] == ["version", "os"]


# -- documents -------------------------------------------------------------------------------
def test_index_platform_selection() -> None:
    def entry(arch: str, variant: str | None = None, os_name: str = "linux") -> dict[str, Any]:
        platform: dict[str, str] = {"os": os_name, "architecture": arch}
        if variant:
            platform["variant"] = variant
        return {"mediaType": "x", "size": 1, "digest": "sha256:" + arch[0] * 63 + "0",
                "platform": platform}

    document = {"manifests": [entry("arm", "v6"), entry("arm", "v7"), entry("amd64", None,
                                                                             "windows")]}
    index = parse_index(json.dumps(document).encode(), "t", "index")
    assert isinstance(index, ManifestIndex)
    chosen = index.select(Platform("linux", "arm", "v7"))
    assert chosen is not None and chosen.platform == Platform("linux", "arm", "v7")
    assert index.select(Platform("linux", "amd64")) is None
    assert index.platforms() == ["linux/arm/v6", "linux/arm/v7", "windows/amd64"]


OCI = "application/vnd.oci.image.manifest.v1+json"
ZEROS = "sha256:" + "0" * 64


@pytest.mark.parametrize("document, media_type, fragment", [
    (b"[]", OCI, "is not a JSON object"),
    (b"{", OCI, "is not valid JSON"),
    (b"{}", "application/vnd.docker.distribution.manifest.v1+prettyjws", "schema 1"),
    (b"{}", "text/html", 'unsupported media type "text/html"'),
    (json.dumps({"schemaVersion": 2, "config": {"size": 1, "digest": "sha256:xx"},
                 "layers": []}).encode(), OCI, "invalid digest"),
    (json.dumps({"schemaVersion": 2, "config": {"size": -1, "digest": ZEROS},
                 "layers": []}).encode(), OCI, "size is not a non-negative integer"),
    (json.dumps({"schemaVersion": 2, "config": {"size": 1, "digest": ZEROS},
                 "layers": {}}).encode(), OCI, "layers is not a list"),
    (json.dumps({"schemaVersion": 2, "config": {"size": 1, "digest": ZEROS}, "layers": [{
        "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "size": 1,
        "digest": ZEROS}]}).encode(), OCI, "foreign layer"),
])
def test_bad_manifests(document: bytes, media_type: str, fragment: str) -> None:
    with pytest.raises(ImageError) as caught:
        parse_manifest(document, media_type, "manifest")
    assert fragment in str(caught.value)


def test_media_type_inference() -> None:
    assert media_type_of(b'{"manifests": []}', None, "m") == (
        "application/vnd.oci.image.index.v1+json")
    assert media_type_of(b'{"schemaVersion": 2}', "application/json", "m") == OCI
    assert media_type_of(b'{"mediaType": "x"}', OCI, "m") == "x"


# -- registry protocol -----------------------------------------------------------------------
def test_challenges() -> None:
    bearer = parse_challenge(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/busybox:pull"')
    assert bearer is not None and bearer.scheme == "bearer"
    assert bearer.params == {"realm": "https://auth.docker.io/token",
                             "service": "registry.docker.io",
                             "scope": "repository:library/busybox:pull"}
    basic = parse_challenge('Basic realm="x, y"')
    assert basic is not None and basic.scheme == "basic" and basic.params == {"realm": "x, y"}
    assert parse_challenge("Negotiate abc") is None
    assert parse_challenge("") is None


def test_docker_auth_lookup(tmp_path: Path) -> None:
    config = Config()
    config.docker_auth["quay.io"] = DockerAuthEntry("q", "1", tmp_path / "q.json")
    config.docker_auth["https://index.docker.io/v1/"] = DockerAuthEntry("h", "2",
                                                                        tmp_path / "h.json")
    config.docker_auth["localhost:5443"] = DockerAuthEntry("l", "3", tmp_path / "l.json")
    quay = registry_credentials(config, "quay.io")
    assert quay is not None and quay.user == "q"
    hub = registry_credentials(config, "registry-1.docker.io")
    assert hub is not None and hub.user == "h" and hub.source.endswith("h.json")
    local = registry_credentials(config, "localhost:5443")
    assert local is not None and local.user == "l"
    assert registry_credentials(config, "localhost:5000") is None


class _Store:
    def __init__(self, rows: dict[str, tuple[str | None, str]], ids: set[str]) -> None:
        self.rows, self.ids = rows, ids

    def cached_remote(self, url: str) -> tuple[str | None, str] | None:
        return self.rows.get(url)

    def resolve(self, image_id: str) -> Any:
        if image_id not in self.ids:
            raise ImageError("gone")
        return type("Info", (), {"id": image_id})()


def test_stored_conversion_needs_the_same_manifest_and_rules() -> None:
    digest = "sha256:" + "d" * 64
    store = _Store({"docker://r/a:1": (remote_etag(digest), "sha512-x"),
                    "docker://r/b:1": (f"{digest} older-converter/0", "sha512-y"),
                    "docker://r/c:1": (remote_etag(digest), "sha512-removed")},
                   {"sha512-x", "sha512-y"})
    assert stored_conversion(store, "docker://r/a:1", digest) == "sha512-x"  # type: ignore[arg-type]
    assert stored_conversion(store, "docker://r/a:1", None) == "sha512-x"  # type: ignore[arg-type]
    assert stored_conversion(store, "docker://r/a:1", "sha256:" + "e" * 64) is None  # type: ignore[arg-type]
    assert stored_conversion(store, "docker://r/b:1", digest) is None  # type: ignore[arg-type]
    assert stored_conversion(store, "docker://r/c:1", digest) is None  # type: ignore[arg-type]
    assert stored_conversion(store, "docker://r/none:1", None) is None  # type: ignore[arg-type]
