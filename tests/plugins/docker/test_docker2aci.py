"""``docker2aci``: the Docker plugin's conversion as a standalone command (issue 13).

Acceptance 3: busybox is pulled from the real registry into a ``docker save``
archive by the real ``skopeo``; ``docker2aci docker-archive:busybox.tar busybox.aci``
gives an image that ``rkt run`` runs, and ``actool patch-manifest --exec=/bin/true``
on it gives one that exits 0. The other sources (``docker://``, ``oci:``,
``oci-archive:``) convert to the very image ``rkt fetch`` stores for them.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from docker_world import Registries

from rkt_testing import RktEnv, assert_one_line_error, run_tool
from rkt_testing.plugin import needs_root


def image_id(aci: Path) -> str:
    return "sha512-" + hashlib.sha512(gzip.decompress(aci.read_bytes())).hexdigest()


@pytest.fixture(scope="module")
def busybox_tar(registries: Registries, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``skopeo copy docker://REGISTRY/library/busybox docker-archive:busybox.tar``."""
    archive = tmp_path_factory.mktemp("docker2aci") / "busybox.tar"
    subprocess.run(
        ["skopeo", "copy", "--quiet", "--insecure-policy",
         f"--src-cert-dir={registries.ca.cert_dir}",
         f"docker://{registries.open.host}/library/busybox:latest",
         f"docker-archive:{archive}:busybox:latest"],
        check=True, timeout=300, capture_output=True)
    return archive


def docker2aci(*args: str | Path, env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess[str]:
    return run_tool("docker2aci", *args, env=env)


def test_docker_archive_converts_like_rkt_fetch(busybox_tar: Path, rkt_env: RktEnv,
                                                tmp_path: Path) -> None:
    out = tmp_path / "busybox.aci"
    result = docker2aci(f"docker-archive:{busybox_tar}", out)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert run_tool("actool", "validate", out).returncode == 0
    manifest = json.loads(run_tool("actool", "cat-manifest", out).stdout)
    assert manifest["name"] == "registry-1.docker.io/library/busybox"
    assert {"name": "GREETING", "value": "hello from docker"} in manifest["app"]["environment"]
    # the same conversion as the fetcher's, so the same image
    fetched = rkt_env.run("--insecure-options=image", "fetch", f"docker-archive:{busybox_tar}",
                          check=True).stdout.strip()
    assert image_id(out).startswith(fetched)
    # and reproducible
    again = tmp_path / "again.aci"
    docker2aci(f"docker-archive:{busybox_tar}", again)
    assert again.read_bytes() == out.read_bytes()
    plain = tmp_path / "plain.aci"
    docker2aci("--no-compression", f"docker-archive:{busybox_tar}", plain)
    assert "sha512-" + hashlib.sha512(plain.read_bytes()).hexdigest() == image_id(out)


@needs_root
@pytest.mark.slow
def test_converted_image_runs_and_patched_exec_exits_0(busybox_tar: Path, rkt_env: RktEnv,
                                                       tmp_path: Path) -> None:
    image = tmp_path / "busybox.aci"
    assert docker2aci(f"docker-archive:{busybox_tar}", image).returncode == 0
    ran = rkt_env.run("--insecure-options=image", "run", image)
    assert ran.returncode == 0, ran.stderr
    assert "greeting=hello from docker" in ran.stdout
    true = tmp_path / "true.aci"
    patched = run_tool("actool", "patch-manifest", "--exec=/bin/true", image, true)
    assert patched.returncode == 0, patched.stderr
    assert rkt_env.run("--insecure-options=image", "run", true).returncode == 0
    failing = tmp_path / "failing.aci"
    run_tool("actool", "patch-manifest", "--exec=/bin/sh /no/such/script", image, failing)
    failed = rkt_env.run("--insecure-options=image", "run", failing)
    assert failed.returncode not in (0, 254), failed.stderr  # the app's own status


def test_registry_and_oci_sources(registries: Registries, busybox_tar: Path,
                                  tmp_path: Path) -> None:
    env = {"REQUESTS_CA_BUNDLE": str(registries.ca.bundle),
           "no_proxy": "localhost,127.0.0.1", "NO_PROXY": "localhost,127.0.0.1"}
    from_registry = tmp_path / "registry.aci"
    result = docker2aci(f"docker://{registries.open.host}/library/busybox", from_registry,
                        env=env)
    assert result.returncode == 0, result.stderr
    manifest = json.loads(run_tool("actool", "cat-manifest", from_registry).stdout)
    assert manifest["name"] == f"localhost_{registries.open.port}/library/busybox"
    oci = tmp_path / "busybox-oci"
    subprocess.run(["skopeo", "copy", "--quiet", "--insecure-policy",
                    f"docker-archive:{busybox_tar}", f"oci:{oci}:v1"], check=True, timeout=120)
    from_oci = tmp_path / "oci.aci"
    assert docker2aci(f"oci:{oci}:v1", from_oci).returncode == 0
    assert run_tool("actool", "validate", from_oci).returncode == 0
    # no scratch directory is left next to the outputs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busybox-oci", "oci.aci",
                                                          "registry.aci"]


def test_bad_input(busybox_tar: Path, registries: Registries, tmp_path: Path) -> None:
    def refused(*args: str | Path, fragment: str, env: dict[str, str] | None = None) -> None:
        assert_one_line_error(docker2aci(*args, env=env), fragment, tool="docker2aci",
                              status=1)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["exists.aci"]

    (tmp_path / "exists.aci").write_text("precious")
    refused(f"docker-archive:{busybox_tar}", tmp_path / "exists.aci",
            fragment="already exists (use --overwrite")
    refused(f"docker-archive:{busybox_tar}", tmp_path / "busybox.tar",
            fragment="must end in .aci")
    refused(f"docker-archive:{tmp_path}/none.tar", tmp_path / "x.aci", fragment="no such file")
    refused("example.com/app:1.0", tmp_path / "x.aci", fragment="is not a Docker or OCI image")
    refused(f"docker-archive:{busybox_tar}:other:1", tmp_path / "x.aci",
            fragment='has no image tagged "other:1"')
    junk = tmp_path.parent / f"{tmp_path.name}-junk.tar"
    junk.write_bytes(b"\x00" * 512 + b"junk" * 300)
    try:
        refused(f"docker-archive:{junk}", tmp_path / "x.aci",
                fragment=f"{junk} is not a tar archive")
    finally:
        junk.unlink()
    # a registry whose certificate is not trusted, without --insecure
    refused(f"docker://{registries.open.host}/library/busybox", tmp_path / "x.aci",
            fragment="certificate", env={"RKT_HTTP_ATTEMPTS": "1"})
    refused(tmp_path / "x.aci", fragment="required: OUT.aci")
