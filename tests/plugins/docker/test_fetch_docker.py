"""``rkt fetch/run docker://...`` through the real command against real registries.

The registries are Debian's ``docker-registry`` on loopback with TLS from a test CA
(open, htpasswd basic auth, token auth); images are pushed with skopeo or, for
documents skopeo would not write, by hand through the registry API. After every
refused fetch the store holds exactly what it held before.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import socket
import socketserver
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from docker_world import PASSWORD, USER, Registries, assert_clean_failure

from rkt_testing import RktEnv
from rkt_testing.docker_registry import (
    DroppingProxy,
    Entry,
    RegistryServer,
    TestCA,
    busybox_layer,
    image_config,
    layer_tar,
)
from rkt_testing.plugin import needs_root

HEX_ID = re.compile(r"^sha512-[0-9a-f]{32}$")


def downloads(stderr: str) -> list[str]:
    return re.findall(r"^Downloading layer: ([0-9a-f]{64})$", stderr, re.MULTILINE)


def write_docker_auth(env: RktEnv, registry: str, password: str, *, where: str = "local") -> Path:
    directory = (env.local_config if where == "local" else env.system_config) / "auth.d"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "myuser.json"
    path.write_text(json.dumps({
        "rktKind": "dockerAuth",
        "rktVersion": "v1",
        "registries": [registry],
        "credentials": {"user": USER, "password": password},
    }, indent=4))
    return path


def aci_member_is_link(blob: Path, name: str) -> bool:
    import tarfile

    with tarfile.open(blob) as aci:
        member = aci.getmember(name)
    return member.islnk()


def manifest_of(env: RktEnv, image: str) -> dict[str, Any]:
    result = env.run("image", "cat-manifest", image, check=True)
    loaded: dict[str, Any] = json.loads(result.stdout)
    return loaded


# -- acceptance 1: fetch prints the image ID; refused without the flag ----------------------
def test_fetch_prints_image_id(rkt_env: RktEnv, registries: Registries) -> None:
    env = registries.env(rkt_env)
    url = f"docker://{registries.open.host}/library/busybox"
    result = env.run("--insecure-skip-verify", "fetch", url)
    assert result.returncode == 0, result.stderr
    assert HEX_ID.match(result.stdout.strip()), result.stdout
    assert f"rkt: fetching image from {url}" in result.stderr
    assert len(downloads(result.stderr)) == 1
    listing = env.run("image", "list", check=True).stdout
    name = f"localhost_{registries.open.port}/library/busybox"
    assert f"{name}:latest" in listing


def test_fetch_is_refused_without_the_insecure_flag(
    rkt_env: RktEnv, registries: Registries
) -> None:
    env = registries.env(rkt_env)
    before = env.store_snapshot()
    result = env.run("fetch", f"docker://{registries.open.host}/library/busybox")
    assert_clean_failure(
        result, env, before,
        f"signature verification for docker://{registries.open.host}/library/busybox:latest "
        "is not supported (try --insecure-options=image)",
    )
    assert "Downloading" not in result.stderr


def test_manifest_is_mapped_as_docker2aci_did(rkt_env: RktEnv, registries: Registries) -> None:
    env = registries.env(rkt_env)
    url = f"docker://{registries.open.host}/library/busybox:latest"
    image_id = env.run("--insecure-options=image", "fetch", url, check=True).stdout.strip()
    manifest = manifest_of(env, image_id)
    assert manifest["name"] == f"localhost_{registries.open.port}/library/busybox"
    labels = {label["name"]: label["value"] for label in manifest["labels"]}
    assert labels == {"version": "latest", "os": "linux", "arch": "amd64"}
    app = manifest["app"]
    assert app["exec"][:2] == ["/bin/sh", "-c"]
    assert (app["user"], app["group"]) == ("0", "0")
    assert {"name": "GREETING", "value": "hello from docker"} in app["environment"]
    assert app["workingDirectory"] == "/tmp"
    assert app["mountPoints"] == [{"name": "volume-data", "path": "/data"}]
    assert app["ports"] == [
        {"name": "53-udp", "protocol": "udp", "port": 53},
        {"name": "80-tcp", "protocol": "tcp", "port": 80},
    ]
    assert app["userLabels"] == {"maintainer": "rkt tests"}
    notes = {note["name"]: note["value"] for note in manifest["annotations"]}
    assert notes["appc.io/docker/registryurl"] == registries.open.host
    assert notes["appc.io/docker/repository"] == "library/busybox"
    assert notes["appc.io/docker/tag"] == "latest"
    assert notes["appc.io/docker/manifesthash"] == registries.open.manifest_digest(
        "library/busybox", "latest")
    assert json.loads(notes["appc.io/docker/cmd"]) == app["exec"]
    assert notes["authors"] == "rkt tests"
    assert notes["created"] == "2024-01-02T03:04:05Z"


def test_refetch_of_an_unchanged_tag_downloads_nothing(
    rkt_env: RktEnv, registries: Registries
) -> None:
    env = registries.env(rkt_env)
    url = f"docker://{registries.open.host}/library/busybox"
    first = env.run("--insecure-skip-verify", "fetch", url, check=True)
    snapshot = env.store_snapshot()
    second = env.run("--insecure-skip-verify", "fetch", url, check=True)
    assert second.stdout == first.stdout
    assert downloads(second.stderr) == []
    assert env.store_snapshot() == snapshot
    # Another spelling of the same image is the same image.
    third = env.run("--insecure-skip-verify", "fetch",
                    f"docker:{registries.open.host}/library/busybox:latest", check=True)
    assert downloads(third.stderr) == []


# -- acceptance 2: run the image's Cmd with its Env --------------------------------------------
@needs_root
def test_run_docker_image(rkt_env: RktEnv, registries: Registries) -> None:
    env = registries.env(rkt_env)
    url = f"docker://{registries.open.host}/library/busybox"
    result = env.run("--insecure-skip-verify", "run", url)
    assert result.returncode == 0, result.stderr
    assert "greeting=hello from docker" in result.stdout
    assert "cwd=/tmp" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "0"
    # The converted image is an ordinary store image: by hash and by name.
    image_id = env.run("--insecure-skip-verify", "fetch", url, check=True).stdout.strip()
    by_hash = env.run("--insecure-skip-verify", "run", image_id)
    assert "greeting=hello from docker" in by_hash.stdout, by_hash.stderr
    name = f"localhost_{registries.open.port}/library/busybox:latest"
    by_name = env.run("--insecure-skip-verify", "run", name)
    assert "greeting=hello from docker" in by_name.stdout, by_name.stderr


# -- acceptance 3: private registries with dockerAuth -------------------------------------------
def test_basic_auth_with_docker_auth_file(rkt_env: RktEnv, registries: Registries) -> None:
    env = registries.env(rkt_env)
    write_docker_auth(env, registries.basic.host, PASSWORD)
    url = f"docker://{registries.basic.host}/{USER}/privateapp"
    result = env.run("--insecure-skip-verify", "fetch", url)
    assert result.returncode == 0, result.stderr
    assert HEX_ID.match(result.stdout.strip())


def test_basic_auth_wrong_password(rkt_env: RktEnv, registries: Registries) -> None:
    env = registries.env(rkt_env)
    auth_file = write_docker_auth(env, registries.basic.host, "wrong")
    before = env.store_snapshot()
    result = env.run("--insecure-skip-verify", "fetch",
                     f"docker://{registries.basic.host}/{USER}/privateapp")
    assert_clean_failure(
        result, env, before,
        f'registry {registries.basic.host} rejected the credentials of user "{USER}"',
        "401", str(auth_file),
    )


def test_local_auth_overrides_system_auth(rkt_env: RktEnv, registries: Registries) -> None:
    env = registries.env(rkt_env)
    write_docker_auth(env, registries.basic.host, "wrong", where="system")
    write_docker_auth(env, registries.basic.host, PASSWORD, where="local")
    result = env.run("--insecure-skip-verify", "fetch",
                     f"docker://{registries.basic.host}/{USER}/privateapp")
    assert result.returncode == 0, result.stderr


def test_private_registry_without_credentials(rkt_env: RktEnv, registries: Registries) -> None:
    env = registries.env(rkt_env)
    before = env.store_snapshot()
    result = env.run("--insecure-skip-verify", "fetch",
                     f"docker://{registries.basic.host}/{USER}/privateapp")
    assert_clean_failure(result, env, before,
                         f"registry {registries.basic.host} requires authentication", "auth.d")


def test_token_auth_with_docker_auth_file(rkt_env: RktEnv, registries: Registries) -> None:
    env = registries.env(rkt_env)
    write_docker_auth(env, registries.token.host, PASSWORD)
    seen = len(registries.tokens.requests)
    result = env.run("--insecure-skip-verify", "fetch",
                     f"docker://{registries.token.host}/{USER}/tokenapp")
    assert result.returncode == 0, result.stderr
    asked = registries.tokens.requests[seen:]
    assert asked and all(with_credentials for _, with_credentials in asked)
    assert any(f"repository%3A{USER}%2Ftokenapp%3Apull" in path for path, _ in asked)


def test_token_auth_wrong_password(rkt_env: RktEnv, registries: Registries) -> None:
    env = registries.env(rkt_env)
    write_docker_auth(env, registries.token.host, "wrong")
    before = env.store_snapshot()
    result = env.run("--insecure-skip-verify", "fetch",
                     f"docker://{registries.token.host}/{USER}/tokenapp")
    assert_clean_failure(
        result, env, before,
        f'registry {registries.token.host} rejected the credentials of user "{USER}"',
    )


# -- acceptance 4: whiteouts, shared layers -----------------------------------------------------
@pytest.fixture(scope="module")
def layered(registries: Registries, whiteout_layers: list[bytes]) -> dict[str, str]:
    """Two tags sharing their two lower layers: v1 with the whiteout top layer, v2 with
    another top layer."""
    config = image_config(whiteout_layers, cmd=["/bin/sh", "-c", "ls /etc /var/cache"])
    registries.open.push_image("library/layered:v1", whiteout_layers, config, registries.work)
    other_top = layer_tar({"srv/": "", "srv/v2": "second tag\n"})
    v2_layers = [*whiteout_layers[:2], other_top]
    v2_config = image_config(v2_layers, cmd=["/bin/sh", "-c", "cat /srv/v2"])
    registries.open.push_image("library/layered:v2", v2_layers, v2_config, registries.work)
    host = registries.open.host
    return {"v1": f"docker://{host}/library/layered:v1", "v2": f"docker://{host}/library/layered:v2"}


def test_whiteout_removes_the_lower_file(rkt_env: RktEnv, layered: dict[str, str],
                                         registries: Registries) -> None:
    env = registries.env(rkt_env)
    image_id = env.run("--insecure-skip-verify", "fetch", layered["v1"], check=True).stdout
    rendered = Path(env.data_dir, "cas")
    blob = next((rendered / "blob" / "sha512").glob(f"*/{image_id.strip()}*"))
    import tarfile

    with tarfile.open(blob) as aci:
        names = set(aci.getnames())
        link = aci.getmember("rootfs/etc/kept-link.conf")
    assert "rootfs/etc/kept.conf" in names
    assert "rootfs/etc/doomed.conf" not in names
    assert not any(".wh." in name for name in names)
    assert "rootfs/var/cache/fresh" in names
    assert "rootfs/var/cache/old-1" not in names and "rootfs/var/cache/old-2" not in names
    # One of the two names holds the data, the other is a hard link to it.
    kept = "rootfs/etc/kept.conf"
    assert (link.islnk() and link.linkname == kept) or aci_member_is_link(blob, kept)


@needs_root
def test_whiteout_image_runs_without_the_file(rkt_env: RktEnv, layered: dict[str, str],
                                              registries: Registries) -> None:
    env = registries.env(rkt_env)
    result = env.run("--insecure-skip-verify", "run", layered["v1"])
    assert result.returncode == 0, result.stderr
    listed = result.stdout.split()
    assert "kept.conf" in listed and "kept-link.conf" in listed
    assert "doomed.conf" not in listed
    assert "fresh" in listed and "old-1" not in listed


def test_second_tag_downloads_only_its_new_layer(rkt_env: RktEnv, layered: dict[str, str],
                                                 registries: Registries) -> None:
    env = registries.env(rkt_env)
    first = env.run("--insecure-skip-verify", "fetch", layered["v1"], check=True)
    assert len(downloads(first.stderr)) == 3
    second = env.run("--insecure-skip-verify", "fetch", layered["v2"], check=True)
    assert len(downloads(second.stderr)) == 1
    assert second.stdout != first.stdout
    assert len(list((env.data_dir / "cas/docker/layers/sha256").iterdir())) == 4
    assert len(list((env.data_dir / "cas/docker/blobs/sha256").iterdir())) == 2  # configs


def test_concurrent_fetches_share_the_layer_cache(
    rkt_env: RktEnv, layered: dict[str, str], registries: Registries
) -> None:
    env = registries.env(rkt_env)
    env.run("image", "list", check=True)  # create the store before the race
    command = [env.rkt_binary(), *env.global_flags(), "--insecure-skip-verify", "fetch"]
    merged = {**os.environ, **env.env}
    processes = [
        subprocess.Popen([*command, layered[tag]], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=merged)
        for tag in ("v1", "v2")
    ]
    outputs = [process.communicate(timeout=120) for process in processes]
    assert all(process.returncode == 0 for process in processes), outputs
    # Four distinct layers between the two images: each downloaded exactly once.
    fetched = [digest for _, stderr in outputs for digest in downloads(stderr)]
    assert len(fetched) == len(set(fetched)) == 4, outputs
    assert len(list((env.data_dir / "cas/docker/layers/sha256").iterdir())) == 4


# -- registry documents: indexes, OCI, compression ------------------------------------------------
def test_manifest_list_picks_the_host_platform(rkt_env: RktEnv, registries: Registries,
                                               busybox_layers: list[bytes]) -> None:
    registry = registries.open
    amd64 = image_config(busybox_layers, cmd=["/bin/echo", "amd64"])
    arm64 = image_config(busybox_layers, cmd=["/bin/echo", "arm64"], architecture="arm64")
    a = registry.push_layers("library/multi:amd64", busybox_layers, amd64)
    b = registry.push_layers("library/multi:arm64", busybox_layers, arm64)
    registry.push_index("library/multi:latest", [
        (b[0], b[1], {"os": "linux", "architecture": "arm64", "variant": "v8"}),
        (a[0], a[1], {"os": "linux", "architecture": "amd64"}),
    ])
    env = registries.env(rkt_env)
    image_id = env.run("--insecure-skip-verify", "fetch",
                       f"docker://{registry.host}/library/multi", check=True).stdout.strip()
    manifest = manifest_of(env, image_id)
    assert manifest["app"]["exec"] == ["/bin/echo", "amd64"]
    notes = {note["name"]: note["value"] for note in manifest["annotations"]}
    assert notes["appc.io/docker/manifesthash"] == a[0]


def test_manifest_list_without_our_platform(rkt_env: RktEnv, registries: Registries,
                                            busybox_layers: list[bytes]) -> None:
    registry = registries.open
    arm64 = image_config(busybox_layers, architecture="arm64")
    b = registry.push_layers("library/armonly:arm64", busybox_layers, arm64, oci=True)
    registry.push_index("library/armonly:latest", [
        (b[0], b[1], {"os": "linux", "architecture": "arm64"}),
        (b[0], b[1], {"os": "windows", "architecture": "amd64"}),
    ], oci=True)
    env = registries.env(rkt_env)
    before = env.store_snapshot()
    result = env.run("--insecure-skip-verify", "fetch",
                     f"docker://{registry.host}/library/armonly")
    assert_clean_failure(result, env, before, "has no image for linux/amd64",
                         "it has: linux/arm64, windows/amd64")


@pytest.mark.parametrize("compression", ["zstd", "none", "gzip"])
def test_oci_manifest_with_any_layer_compression(
    rkt_env: RktEnv, registries: Registries, compression: str
) -> None:
    layers = [busybox_layer(), layer_tar({"etc/": "", "etc/motd": f"{compression}\n"})]
    config = image_config(layers, cmd=["/bin/cat", "/etc/motd"])
    registries.open.push_layers(f"library/oci-{compression}:1.0", layers, config, oci=True,
                                compression=compression)
    env = registries.env(rkt_env)
    image_id = env.run("--insecure-skip-verify", "fetch",
                       f"docker://{registries.open.host}/library/oci-{compression}:1.0",
                       check=True).stdout.strip()
    manifest = manifest_of(env, image_id)
    assert {"name": "version", "value": "1.0"} in manifest["labels"]


def test_pinned_digest(rkt_env: RktEnv, registries: Registries) -> None:
    env = registries.env(rkt_env)
    digest = registries.open.manifest_digest("library/busybox", "latest")
    url = f"docker://{registries.open.host}/library/busybox@{digest}"
    image_id = env.run("--insecure-skip-verify", "fetch", url, check=True).stdout.strip()
    labels = {label["name"]: label["value"] for label in manifest_of(env, image_id)["labels"]}
    assert labels["version"] == digest


# -- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize("reference, fragment", [
    ("docker://", "no image name"),
    ("docker://localhost:5000/Library/Busybox", "repository name must be lowercase"),
    ("docker://busybox:bad:tag", "invalid"),
    ("docker://busybox@sha256:1234", "unsupported digest"),
    ("docker://-bad-/busybox", "invalid repository name"),
])
def test_malformed_reference(rkt_env: RktEnv, reference: str, fragment: str) -> None:
    before = rkt_env.store_snapshot()
    result = rkt_env.run("--insecure-skip-verify", "fetch", reference)
    error = assert_clean_failure(result, rkt_env, before, "invalid docker URL", fragment)
    assert 'expected syntax is "docker://[REGISTRY_HOST[:REGISTRY_PORT]/]IMAGE_NAME' in error


def test_unknown_repository(rkt_env: RktEnv, registries: Registries) -> None:
    env = registries.env(rkt_env)
    before = env.store_snapshot()
    result = env.run("--insecure-skip-verify", "fetch",
                     f"docker://{registries.open.host}/library/nosuchimage")
    assert_clean_failure(
        result, env, before,
        f'docker image "{registries.open.host}/library/nosuchimage:latest" not found', "404",
    )


def test_unknown_tag(rkt_env: RktEnv, registries: Registries) -> None:
    env = registries.env(rkt_env)
    before = env.store_snapshot()
    result = env.run("--insecure-skip-verify", "fetch",
                     f"docker://{registries.open.host}/library/busybox:nosuchtag")
    assert_clean_failure(result, env, before,
                         f"{registries.open.host}/library/busybox:nosuchtag", "404")


def test_blob_that_does_not_match_its_digest(
    rkt_env: RktEnv, tmp_path: Path, busybox_layers: list[bytes]
) -> None:
    # A registry of its own: its storage is tampered with after the push.
    ca = TestCA(tmp_path / "ca")
    layers = [*busybox_layers, layer_tar({"data": b"\0" * 300_000})]
    with RegistryServer(tmp_path / "reg", ca).start() as registry:
        registry.push_layers("library/tampered:latest", layers, image_config(layers),
                             compression="none")
        manifest = json.loads(registry.blob_file(
            registry.manifest_digest("library/tampered", "latest")).read_bytes())
        victim = registry.blob_file(manifest["layers"][1]["digest"])
        data = bytearray(victim.read_bytes())
        data[-2000] ^= 0xFF  # same size, other bytes
        victim.write_bytes(bytes(data))
        rkt_env.env["REQUESTS_CA_BUNDLE"] = str(ca.bundle)
        before = rkt_env.store_snapshot()
        result = rkt_env.run("--insecure-skip-verify", "fetch",
                             f"docker://{registry.host}/library/tampered")
    assert_clean_failure(result, rkt_env, before, manifest["layers"][1]["digest"],
                         "does not match its digest")


class _HugeManifestRegistry(http.server.BaseHTTPRequestHandler):
    """Stands in for a registry (the real one refuses to store, and then to serve, a
    manifest over 4 MiB): ``/v2/`` answers 200, every manifest is 5 MiB of JSON, sent
    with a Content-Length, or chunked for ``:chunked``."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        del format, args

    def do_GET(self) -> None:
        if self.path == "/v2/":
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")
            return
        body = json.dumps({"schemaVersion": 2, "padding": "x" * (5 << 20)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.docker.distribution.manifest.v2+json")
        if self.path.endswith(":chunked") or self.path.endswith("/chunked"):
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for start in range(0, len(body), 65536):
                piece = body[start:start + 65536]
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)


@pytest.mark.parametrize("tag", ["latest", "chunked"])
def test_huge_manifest_is_refused(rkt_env: RktEnv, tag: str) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HugeManifestRegistry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        before = rkt_env.store_snapshot()
        result = rkt_env.run("--insecure-options=image,http", "fetch",
                             f"docker://localhost:{server.server_address[1]}/library/huge:{tag}")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert_clean_failure(result, rkt_env, before, "larger than 4 MiB")


@pytest.mark.parametrize("layer, fragment", [
    ({"../escape": "x"}, '".." component'),
    ({"/etc/escape": "x"}, "absolute name"),
    ({"etc/": "", "etc/hosts-link": Entry(b"1", linkname="/etc/hosts")},
     'hard link "etc/hosts-link" points outside'),
    ({"etc/": "", "etc/hosts-link": Entry(b"1", linkname="../../etc/hosts")},
     'hard link "etc/hosts-link" points outside'),
    ({"etc/": "", "etc/.wh..": ""}, "invalid whiteout"),
])
def test_layer_with_breakout_entries(
    rkt_env: RktEnv, registries: Registries, layer: dict[str, Any], fragment: str
) -> None:
    layers = [busybox_layer(), layer_tar(layer)]
    name = f"library/breakout-{abs(hash(str(layer))) % 10**8}:latest"
    registries.open.push_layers(name, layers, image_config(layers))
    env = registries.env(rkt_env)
    before = env.store_snapshot()
    result = env.run("--insecure-skip-verify", "fetch",
                     f"docker://{registries.open.host}/{name}")
    assert_clean_failure(result, env, before, fragment)


def test_whiteout_through_a_symlink_stays_inside(rkt_env: RktEnv, registries: Registries,
                                                 tmp_path: Path) -> None:
    # The lower layer points "escape" at the host's /tmp; the upper whites out
    # escape/canary. Resolved inside the rootfs, it deletes nothing of the host's.
    canary = Path("/tmp") / f"rkt-canary-{tmp_path.name}"
    canary.write_text("still here\n")
    try:
        layers = [
            layer_tar({"escape": Entry(b"2", linkname="/tmp"), "tmp/": "",
                       f"tmp/{canary.name}": "inside\n"}),
            layer_tar({f"escape/.wh.{canary.name}": "",
                       "escape/written": "through the link\n"}),
        ]
        registries.open.push_layers("library/symlinked:latest", layers, image_config(layers))
        env = registries.env(rkt_env)
        image_id = env.run("--insecure-skip-verify", "fetch",
                           f"docker://{registries.open.host}/library/symlinked",
                           check=True).stdout.strip()
        assert canary.read_text() == "still here\n"
        assert not Path("/tmp/written").exists()
        import tarfile

        blob = next((env.data_dir / "cas/blob/sha512").glob(f"*/{image_id}*"))
        with tarfile.open(blob) as aci:
            names = set(aci.getnames())
        assert f"rootfs/tmp/{canary.name}" not in names
        assert "rootfs/tmp/written" in names
    finally:
        canary.unlink()


def test_connection_dropped_mid_layer_every_time(
    rkt_env: RktEnv, tmp_path: Path
) -> None:
    layers = [layer_tar({"big": bytes(range(256)) * 8192})]  # 2 MiB
    with RegistryServer(tmp_path / "reg", None).start() as registry:
        registry.push_layers("library/dropped:latest", layers, image_config(layers),
                             compression="none")
        proxy = DroppingProxy(registry.port, cut_after=600_000).start()
        try:
            before = rkt_env.store_snapshot()
            result = rkt_env.run(
                "--insecure-options=image,http", "fetch",
                f"docker://{proxy.host}/library/dropped",
                env={"RKT_HTTP_ATTEMPTS": "3", "RKT_HTTP_TIMEOUT": "5"},
            )
        finally:
            proxy.stop()
    assert_clean_failure(result, rkt_env, before, "download of layer sha256:",
                         "failed 3 times")


def test_connection_dropped_once_is_resumed(rkt_env: RktEnv, tmp_path: Path) -> None:
    layers = [layer_tar({"big": bytes(range(256)) * 8192})]
    with RegistryServer(tmp_path / "reg", None).start() as registry:
        registry.push_layers("library/dropped:latest", layers, image_config(layers),
                             compression="none")
        proxy = DroppingProxy(registry.port, cut_after=600_000, times=1).start()
        try:
            result = rkt_env.run("--insecure-options=image,http", "fetch",
                                 f"docker://{proxy.host}/library/dropped")
        finally:
            proxy.stop()
    assert result.returncode == 0, result.stderr
    assert proxy.cuts == 1


def test_plain_http_registry_needs_the_insecure_option(
    rkt_env: RktEnv, tmp_path: Path, busybox_layers: list[bytes]
) -> None:
    with RegistryServer(tmp_path / "reg", None).start() as registry:
        registry.push_layers("library/plain:latest", busybox_layers,
                             image_config(busybox_layers))
        url = f"docker://{registry.host}/library/plain"
        before = rkt_env.store_snapshot()
        refused = rkt_env.run("--insecure-options=image", "fetch", url)
        assert_clean_failure(refused, rkt_env, before, f"registry {registry.host}",
                             "--insecure-options=http")
        allowed = rkt_env.run("--insecure-options=image,http", "fetch", url)
    assert allowed.returncode == 0, allowed.stderr


def test_untrusted_certificate(rkt_env: RktEnv, registries: Registries) -> None:
    url = f"docker://{registries.open.host}/library/busybox"
    before = rkt_env.store_snapshot()  # no REQUESTS_CA_BUNDLE: the test CA is unknown
    result = rkt_env.run("--insecure-skip-verify", "fetch", url)
    assert_clean_failure(result, rkt_env, before, "not trusted", "--insecure-options=tls")
    insecure = rkt_env.run("--insecure-options=image,tls", "fetch", url)
    assert insecure.returncode == 0, insecure.stderr
    assert "TLS verification has been disabled" in insecure.stderr


def test_failed_fetch_leaves_no_layer_behind(rkt_env: RktEnv, registries: Registries) -> None:
    """A layer that converts badly after others downloaded: none of them is kept."""
    layers = [busybox_layer(), layer_tar({"ok": "fine\n"}), layer_tar({"../bad": "x"})]
    registries.open.push_layers("library/halfbad:latest", layers, image_config(layers))
    env = registries.env(rkt_env)
    before = env.store_snapshot()
    result = env.run("--insecure-skip-verify", "fetch",
                     f"docker://{registries.open.host}/library/halfbad")
    assert_clean_failure(result, env, before, '".." component')
    assert not (env.data_dir / "cas" / "docker").exists()
    assert not list((env.data_dir / "cas" / "tmp").iterdir())


def test_corrupt_cached_layer_is_caught(rkt_env: RktEnv, registries: Registries) -> None:
    env = registries.env(rkt_env)
    url = f"docker://{registries.open.host}/library/busybox"
    image_id = env.run("--insecure-skip-verify", "fetch", url, check=True).stdout.strip()
    env.run("image", "rm", image_id, check=True)
    cached = list((env.data_dir / "cas/docker/layers/sha256").iterdir())
    assert len(cached) == 1
    data = bytearray(cached[0].read_bytes())
    data[len(data) // 2] ^= 0xFF
    cached[0].write_bytes(bytes(data))
    result = env.run("--insecure-skip-verify", "fetch", url)
    assert result.returncode != 0
    assert f"cached layer sha256:{cached[0].name} does not match its digest" in (
        result.stderr.splitlines()[-1])
    assert not cached[0].exists()  # evicted: the next fetch downloads it again
    again = env.run("--insecure-skip-verify", "fetch", url)
    assert again.returncode == 0, again.stderr
    assert len(downloads(again.stderr)) == 1


def test_pull_policy_new_needs_no_registry(rkt_env: RktEnv, tmp_path: Path,
                                           busybox_layers: list[bytes]) -> None:
    ca = TestCA(tmp_path / "ca")
    rkt_env.env["REQUESTS_CA_BUNDLE"] = str(ca.bundle)
    with RegistryServer(tmp_path / "reg", ca).start() as registry:
        registry.push_layers("library/once:latest", busybox_layers,
                             image_config(busybox_layers))
        url = f"docker://{registry.host}/library/once"
        first = rkt_env.run("--insecure-skip-verify", "fetch", url, check=True)
    # the registry is gone: "new" uses the stored image, "update" has to ask
    again = rkt_env.run("--insecure-skip-verify", "fetch", "--pull-policy=new", url)
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout
    update = rkt_env.run("--insecure-skip-verify", "fetch", url, env={"RKT_HTTP_ATTEMPTS": "1"})
    assert update.returncode != 0
    assert f"cannot connect to registry {registry.host}" in update.stderr
    never = rkt_env.run("--insecure-skip-verify", "fetch", "--pull-policy=never", url)
    assert never.returncode == 0, never.stderr
    assert never.stdout == first.stdout
    unknown = rkt_env.run("--insecure-skip-verify", "fetch", "--pull-policy=never",
                          f"docker://{registry.host}/library/other")
    assert unknown.returncode == 254
    assert "not in the store and --pull-policy=never" in unknown.stderr


def test_layer_cache_survives_image_removal(rkt_env: RktEnv, registries: Registries) -> None:
    env = registries.env(rkt_env)
    url = f"docker://{registries.open.host}/library/busybox"
    image_id = env.run("--insecure-skip-verify", "fetch", url, check=True).stdout.strip()
    env.run("image", "rm", image_id, check=True)
    again = env.run("--insecure-skip-verify", "fetch", url, check=True)
    assert downloads(again.stderr) == []  # converted again from the cached layer
    assert again.stdout.strip() == image_id  # the same bytes: the same image ID


def test_image_gc_removes_cached_layers_past_the_grace_period(
    rkt_env: RktEnv, registries: Registries
) -> None:
    env = registries.env(rkt_env)
    url = f"docker://{registries.open.host}/library/busybox"
    env.run("--insecure-skip-verify", "fetch", url, check=True)
    layers = rkt_env.data_dir / "cas" / "docker" / "layers"
    assert list(layers.glob("*/*"))
    kept = env.run("image", "gc", check=True).stdout  # used just now: within 24h
    assert "removed docker layer" not in kept
    gone = env.run("image", "gc", "--grace-period=0s", check=True).stdout
    assert "removed docker layer sha256:" in gone
    assert list(layers.glob("*/*")) == []
    again = env.run("--insecure-skip-verify", "fetch", url, check=True)
    assert len(downloads(again.stderr)) == 1


def test_a_progress_bar_per_layer_on_a_terminal(rkt_env: RktEnv, registries: Registries,
                                               whiteout_layers: list[bytes]) -> None:
    config = image_config(whiteout_layers)
    registries.open.push_image("library/bars:latest", whiteout_layers, config, registries.work)
    env = registries.env(rkt_env)
    status, output = env.run_on_terminal(
        "--insecure-skip-verify", "fetch", f"docker://{registries.open.host}/library/bars")
    assert status == 0, output
    bars = set(re.findall(r"Downloading layer ([0-9a-f]{12}): \[=+\] ", output))
    assert len(bars) == 3, output
    assert "\x1b[" in output  # redrawn in place
    assert not downloads(output.replace("\r\n", "\n"))  # no plain lines on a terminal


class _ConnectProxy(socketserver.ThreadingTCPServer):
    """A minimal HTTP CONNECT proxy that records what it was asked."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        self.requests: list[tuple[str, str | None]] = []
        super().__init__(("127.0.0.1", 0), _ConnectHandler)


class _ConnectHandler(socketserver.StreamRequestHandler):
    server: _ConnectProxy

    def handle(self) -> None:
        request = self.rfile.readline().decode().split()
        authorization = None
        while (line := self.rfile.readline().decode()) not in ("\r\n", "\n", ""):
            name, _, value = line.partition(":")
            if name.lower() == "proxy-authorization":
                authorization = value.strip()
        self.server.requests.append((" ".join(request[:2]), authorization))
        host, _, port = request[1].rpartition(":")
        upstream = socket.create_connection((host, int(port)))
        self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self.wfile.flush()

        def pump(source: socket.socket, target: socket.socket) -> None:
            try:
                while data := source.recv(65536):
                    target.sendall(data)
            except OSError:
                pass
            finally:
                target.close()

        thread = threading.Thread(target=pump, args=(upstream, self.connection), daemon=True)
        thread.start()
        pump(self.connection, upstream)
        thread.join(timeout=10)


def test_https_proxy(rkt_env: RktEnv, registries: Registries) -> None:
    env = registries.env(rkt_env)
    proxy = _ConnectProxy()
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        port = proxy.server_address[1]
        result = env.run("--insecure-skip-verify", "fetch",
                         f"docker://{registries.open.host}/library/busybox",
                         env={"https_proxy": f"http://proxyuser:pa%40ss@127.0.0.1:{port}",
                              "no_proxy": "", "NO_PROXY": ""})
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert result.returncode == 0, result.stderr
    assert proxy.requests, "the proxy was not used"
    import base64

    expected = "Basic " + base64.b64encode(b"proxyuser:pa@ss").decode()
    assert all(request == (f"CONNECT {registries.open.host}", expected)
               for request in proxy.requests), proxy.requests
