"""``docker-archive:``, ``oci:`` and ``oci-archive:`` sources through the real command.

The docker-archive tarballs are built with tarfile, as ``docker save`` lays them
out; the OCI layouts are written from them by the real ``skopeo copy``.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
from docker_world import assert_clean_failure

from rkt_testing import RktEnv
from rkt_testing.docker_registry import (
    busybox_layer,
    image_config,
    layer_tar,
    write_docker_archive,
)
from rkt_testing.plugin import needs_root


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("archives")
    layers = [busybox_layer(), layer_tar({"etc/": "", "etc/motd": "from an archive\n"})]
    config = image_config(layers, cmd=["/bin/cat", "/etc/motd"], env=["PATH=/bin", "A=1"])
    archive = write_docker_archive(directory / "hello.tar", layers, config,
                                   "example.org/team/hello:1.2")
    oci_dir = directory / "hello-oci"
    oci_archive = directory / "hello.oci.tar"
    for target in (f"oci:{oci_dir}:v1", f"oci-archive:{oci_archive}:v1"):
        subprocess.run(["skopeo", "copy", "--quiet", "--insecure-policy",
                        f"docker-archive:{archive}", target], check=True, timeout=120)
    return {"docker-archive": archive, "oci": oci_dir, "oci-archive": oci_archive}


def fetch(env: RktEnv, image: str) -> subprocess.CompletedProcess[str]:
    return env.run("--insecure-options=image", "fetch", image)


def manifest_of(env: RktEnv, image_id: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        env.run("image", "cat-manifest", image_id, check=True).stdout)
    return loaded


def labels(manifest: dict[str, Any]) -> dict[str, str]:
    return {label["name"]: label["value"] for label in manifest["labels"]}


def test_docker_archive(rkt_env: RktEnv, sources: dict[str, Path]) -> None:
    result = fetch(rkt_env, f"docker-archive:{sources['docker-archive']}")
    assert result.returncode == 0, result.stderr
    manifest = manifest_of(rkt_env, result.stdout.strip())
    assert manifest["name"] == "example.org/team/hello"
    assert labels(manifest)["version"] == "1.2"
    assert manifest["app"]["exec"] == ["/bin/cat", "/etc/motd"]


def test_docker_archive_by_tag_and_index(rkt_env: RktEnv, sources: dict[str, Path]) -> None:
    archive = sources["docker-archive"]
    by_tag = fetch(rkt_env, f"docker-archive:{archive}:example.org/team/hello:1.2")
    by_index = fetch(rkt_env, f"docker-archive:{archive}:@0")
    assert by_tag.returncode == 0 and by_index.returncode == 0, by_tag.stderr + by_index.stderr
    first = manifest_of(rkt_env, by_tag.stdout.strip())
    second = manifest_of(rkt_env, by_index.stdout.strip())
    assert (first["name"], labels(first)) == (second["name"], labels(second))


def test_oci_layout(rkt_env: RktEnv, sources: dict[str, Path]) -> None:
    result = fetch(rkt_env, f"oci:{sources['oci']}:v1")
    assert result.returncode == 0, result.stderr
    manifest = manifest_of(rkt_env, result.stdout.strip())
    assert manifest["name"] == "hello-oci"
    assert labels(manifest)["version"] == "v1"
    assert {"name": "A", "value": "1"} in manifest["app"]["environment"]


def test_oci_archive(rkt_env: RktEnv, sources: dict[str, Path]) -> None:
    result = fetch(rkt_env, f"oci-archive:{sources['oci-archive']}")
    assert result.returncode == 0, result.stderr
    manifest = manifest_of(rkt_env, result.stdout.strip())
    assert manifest["name"] == "hello"
    assert labels(manifest)["version"] == "v1"


def test_same_image_from_every_source_has_the_same_rootfs(
    rkt_env: RktEnv, sources: dict[str, Path]
) -> None:
    trees = []
    for image in (f"docker-archive:{sources['docker-archive']}", f"oci:{sources['oci']}",
                  f"oci-archive:{sources['oci-archive']}"):
        image_id = fetch(rkt_env, image).stdout.strip()
        blob = next((rkt_env.data_dir / "cas/blob/sha512").glob(f"*/{image_id}*"))
        with tarfile.open(blob) as aci:
            trees.append({
                (m.name, m.type, m.mode, m.size, m.linkname) for m in aci.getmembers()
                if m.name != "manifest"
            })
    assert trees[0] == trees[1] == trees[2]


@needs_root
def test_run_oci_layout(rkt_env: RktEnv, sources: dict[str, Path]) -> None:
    result = rkt_env.run("--insecure-options=image", "run", f"oci:{sources['oci']}:v1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "from an archive"


# -- bad input ----------------------------------------------------------------------------
def test_archive_needs_the_insecure_flag(rkt_env: RktEnv, sources: dict[str, Path]) -> None:
    before = rkt_env.store_snapshot()
    image = f"oci:{sources['oci']}:v1"
    result = rkt_env.run("fetch", image)
    assert_clean_failure(result, rkt_env, before,
                         f"signature verification for {image} is not supported")


def test_missing_sources(rkt_env: RktEnv, tmp_path: Path) -> None:
    before = rkt_env.store_snapshot()
    assert_clean_failure(fetch(rkt_env, f"docker-archive:{tmp_path}/none.tar"), rkt_env,
                         before, "no such file")
    assert_clean_failure(fetch(rkt_env, f"oci:{tmp_path}/none"), rkt_env, before,
                         "no such OCI layout directory")
    assert_clean_failure(fetch(rkt_env, f"oci:{tmp_path}"), rkt_env, before,
                         "is not an OCI image layout")


def test_unknown_reference(rkt_env: RktEnv, sources: dict[str, Path]) -> None:
    before = rkt_env.store_snapshot()
    assert_clean_failure(fetch(rkt_env, f"oci:{sources['oci']}:v2"), rkt_env, before,
                         'has no image named "v2"', "it has: v1")
    assert_clean_failure(fetch(rkt_env, f"docker-archive:{sources['docker-archive']}:other:1"),
                         rkt_env, before, 'has no image tagged "other:1"')


def test_tampered_oci_blob(rkt_env: RktEnv, sources: dict[str, Path], tmp_path: Path) -> None:
    copy = tmp_path / "tampered"
    subprocess.run(["cp", "-a", str(sources["oci"]), str(copy)], check=True)
    index = json.loads((copy / "index.json").read_text())
    manifest_digest = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads((copy / "blobs/sha256" / manifest_digest).read_text())
    layer = copy / "blobs/sha256" / manifest["layers"][1]["digest"].split(":")[1]
    data = bytearray(layer.read_bytes())
    data[len(data) // 2] ^= 0x01
    layer.write_bytes(bytes(data))
    before = rkt_env.store_snapshot()
    result = fetch(rkt_env, f"oci:{copy}:v1")
    assert_clean_failure(result, rkt_env, before, manifest["layers"][1]["digest"],
                         "does not match its digest")


def test_docker_archive_layer_not_matching_diff_id(rkt_env: RktEnv, tmp_path: Path) -> None:
    layers = [layer_tar({"a": "a\n"})]
    config = image_config(layers)
    config["rootfs"]["diff_ids"] = ["sha256:" + "0" * 64]
    archive = write_docker_archive(tmp_path / "bad.tar", layers, config, "bad:latest")
    before = rkt_env.store_snapshot()
    result = fetch(rkt_env, f"docker-archive:{archive}")
    assert_clean_failure(result, rkt_env, before, "(uncompressed) does not match its digest",
                         "sha256:" + "0" * 64)
