"""The pod manifest ``rkt run`` / ``rkt prepare`` write, checked against the appc schema.

``build_pod_manifest`` builds plain JSON data (the schema library stays off the
run path, docs/benchmarks.md); these tests hold every shape it makes to
``rkt.schema.pod.PodManifest`` and its exact round trip, so it cannot drift
from the spec.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from rkt import APPC_VERSION
from rkt.errors import UsageError
from rkt.pod.apps import AppRequest, parse_volume, resource_isolators
from rkt.pod.prepare import PodRequest, ResolvedImage, build_pod_manifest
from rkt.schema.pod import PodManifest
from rkt.store import ImageInfo
from rkt_testing.aci import image_manifest


def _image(name: str, **app: Any) -> ResolvedImage:
    manifest = image_manifest(name, exec_=["/bin/app", "--flag"], app=app or None)
    info = ImageInfo(id="sha512-" + "ab" * 64, name=name,
                     labels={"version": "1.0.0", "os": "linux", "arch": "amd64"})
    return ResolvedImage(info, manifest)


def _valid(document: dict[str, Any]) -> dict[str, Any]:
    """The document, after checking that the schema reads it and writes it back unchanged."""
    parsed = PodManifest.parse(json.dumps(document))
    assert json.loads(parsed.to_json()) == document
    return document


def test_a_plain_run_is_a_valid_pod_manifest() -> None:
    document, names = build_pod_manifest([_image("example.com/hello")],
                                         PodRequest(apps=[AppRequest("example.com/hello")]))
    _valid(document)
    assert names == ["hello"]
    assert document["acVersion"] == APPC_VERSION
    assert document["apps"][0]["app"]["exec"] == ["/bin/app", "--flag"]


def test_every_flag_gives_a_valid_pod_manifest() -> None:
    image = _image(
        "example.com/full",
        mountPoints=[{"name": "cache", "path": "/var/cache", "readOnly": True},
                     {"name": "data", "path": "/data"}],
        environment=[{"name": "FROM_IMAGE", "value": "1"}],
        isolators=[{"name": "os/linux/no-new-privileges", "value": True},
                   {"name": "os/linux/capabilities-remove-set", "value": {"set": ["CAP_KILL"]}}],
        eventHandlers=[{"name": "pre-start", "exec": ["/bin/true"]}],
        ports=[{"name": "http", "protocol": "tcp", "port": 80}],
    )
    request = PodRequest(
        apps=[
            AppRequest(
                "example.com/full", exec_=["/bin/other"], args=["a", "b"], user="1000",
                group="users", supplementary_gids=[2000, 3000], working_dir="/data",
                name="full", mounts=[("data", "/data")], readonly_rootfs=True,
                annotations={"example.com/note": "yes"},
                environment=[("FROM_FLAG", "2")], caps_retain=["CAP_NET_BIND_SERVICE"],
                isolators=resource_isolators("512M", "500m", "100", "-10"),
            ),
            AppRequest("example.com/full", name="second"),
        ],
        volumes=[parse_volume("data,kind=host,source=/srv,readOnly=true,recursive=false"),
                 parse_volume("scratch,kind=empty,mode=0700,uid=1,gid=2")],
        user_annotations={"team": "infra"}, user_labels={"tier": "web"},
    )
    document = _valid(build_pod_manifest([image, image], request)[0])
    full, second = document["apps"]
    assert full["app"]["exec"] == ["/bin/other", "a", "b"]
    isolators = {i["name"] for i in full["app"]["isolators"]}
    assert "os/linux/capabilities-retain-set" in isolators
    assert "os/linux/capabilities-remove-set" not in isolators  # a flag replaces both
    assert {"resource/memory", "resource/cpu", "os/linux/cpu-shares",
            "os/linux/oom-score-adj"} <= isolators
    # the image's mount point nobody filled got an implicit empty volume, once for both apps
    assert [v["name"] for v in document["volumes"]] == ["data", "scratch", "cache"]
    assert {"volume": "cache", "path": "/var/cache"} in second["mounts"]


def test_a_mount_of_an_undeclared_volume_is_refused() -> None:
    request = PodRequest(apps=[AppRequest("example.com/a", mounts=[("nope", "/x")])])
    with pytest.raises(UsageError, match='no volume named "nope"'):
        build_pod_manifest([_image("example.com/a")], request)


def test_annotation_names_are_ac_identifiers() -> None:
    """``--annotation`` takes appc names such as ``example.com/build``; user annotations
    and labels take any non-empty key."""
    from rkt.pod.apps import parse_annotation

    assert parse_annotation("example.com/build=42", "--annotation") == ("example.com/build",
                                                                        "42")
    request = PodRequest(apps=[AppRequest("example.com/hello",
                                          annotations={"example.com/build": "42"})],
                         user_annotations={"Team/Owner": "me"})
    document, _ = build_pod_manifest([_image("example.com/hello")], request)
    _valid(document)
    assert document["apps"][0]["annotations"] == [{"name": "example.com/build", "value": "42"}]
    assert parse_annotation("Team/Owner=me", "--user-annotation", identifier=False) == (
        "Team/Owner", "me")
    for bad in ("Build=1", "example.com//x=1", "-x=1", "=1", "novalue"):
        with pytest.raises(UsageError, match="--annotation"):
            parse_annotation(bad, "--annotation")
    with pytest.raises(UsageError, match="expected NAME=VALUE"):
        parse_annotation("=me", "--user-label", identifier=False)
