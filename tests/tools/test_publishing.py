"""The publishing flow of docs/publishing.md, end to end (acceptance 1 of issue 13).

A publisher builds a busybox image with ``actool build``, signs it with the real
``gpg --detach-sign``, and serves it with a discovery page from a real HTTPS server
on ``127.0.0.1:443`` (the name ``localhost/...`` is discovered exactly as
``example.com/...`` would be; the port is taken in turns with other test runs). A
user runs ``actool discover``, ``rkt trust``, ``rkt fetch`` and ``rkt run``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rkt_plugins.discovery import host_labels
from rkt_testing import RktEnv, assert_one_line_error, run_tool
from rkt_testing.aci import BUSYBOX
from rkt_testing.gpg import GpgHome
from rkt_testing.https_server import HttpsServer
from rkt_testing.plugin import needs_root

NAME = "localhost/actool-hello"
VERSION = "1.0.0"
GREETING = "Hello from a published image"
HOST = host_labels()
#: where the discovery template below puts NAME:VERSION for this host
ACI_PATH = f"/images/{NAME}-{VERSION}-{HOST['os']}-{HOST['arch']}.aci"


@dataclass
class Published:
    server: HttpsServer
    image: Path
    key_file: Path
    layout: Path


def write_layout(directory: Path) -> Path:
    """What a publisher writes: a manifest and a rootfs with a static busybox."""
    (directory / "rootfs" / "bin").mkdir(parents=True)
    shutil.copy(BUSYBOX, directory / "rootfs" / "bin" / "busybox")
    for applet in ("sh", "echo"):
        (directory / "rootfs" / "bin" / applet).symlink_to("busybox")
    (directory / "manifest").write_text(json.dumps({
        "acKind": "ImageManifest", "acVersion": "0.8.11", "name": NAME,
        "labels": [{"name": "version", "value": VERSION},
                   {"name": "os", "value": HOST["os"]}, {"name": "arch", "value": HOST["arch"]}],
        "app": {"exec": ["/bin/echo", GREETING], "user": "0", "group": "0"},
    }, indent=4))
    return directory


def gpg_command(gpg: GpgHome, *args: str | Path) -> subprocess.CompletedProcess[bytes]:
    """``gpg`` as a publisher runs it (the fixture's home as GNUPGHOME)."""
    return subprocess.run(["gpg", "--batch", "--yes", *map(str, args)], capture_output=True,
                          check=True, env={**os.environ, "GNUPGHOME": str(gpg.home)})


@pytest.fixture(scope="module")
def published(gpg: GpgHome, signing_key: tuple[str, Path],
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Published]:
    fingerprint, _ = signing_key
    work = tmp_path_factory.mktemp("publisher")
    layout = write_layout(work / "layout")
    image = work / "actool-hello.aci"
    built = run_tool("actool", "build", "--owner-root", layout, image,
                     env={"SOURCE_DATE_EPOCH": "1700000000"})
    assert built.returncode == 0, built.stderr
    gpg_command(gpg, "--local-user", fingerprint, "--armor", "--detach-sign", image)
    key_file = work / "pubkeys.gpg"
    key_file.write_bytes(gpg_command(gpg, "--armor", "--export", fingerprint).stdout)
    page = (
        "<html><head>"
        '<meta name="ac-discovery" content="localhost/actool-hello '
        'https://localhost/images/{name}-{version}-{os}-{arch}.{ext}">'
        '<meta name="ac-discovery-pubkeys" content="localhost/actool-hello '
        'https://localhost/pubkeys.gpg">'
        "</head></html>"
    )
    with HttpsServer(host="127.0.0.1", port=443, hostnames=("localhost",)) as server:
        server.serve("/actool-hello", page, content_type="text/html")
        server.serve(ACI_PATH, image)
        server.serve(ACI_PATH + ".asc", image.with_name(image.name + ".asc"))
        server.serve("/pubkeys.gpg", key_file)
        yield Published(server, image, key_file, layout)


@pytest.fixture
def env(rkt_env: RktEnv, published: Published) -> RktEnv:
    rkt_env.env.update({**published.server.env(), "RKT_HTTP_TIMEOUT": "5",
                        "RKT_HTTP_ATTEMPTS": "2"})
    return rkt_env


def uncompressed_id(image: Path) -> str:
    return "sha512-" + hashlib.sha512(gzip.decompress(image.read_bytes())).hexdigest()


def test_discover_prints_the_published_urls(env: RktEnv, published: Published) -> None:
    base = "https://localhost" + ACI_PATH.removesuffix(".aci")
    result = run_tool("actool", "discover", f"{NAME}:{VERSION}", env=env.env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"ACI: {base}.aci, ASC: {base}.aci.asc",
                                          "Keys: https://localhost/pubkeys.gpg"]
    as_json = json.loads(run_tool("actool", "discover", "--json", f"{NAME}:{VERSION}",
                                  env=env.env).stdout)
    assert as_json["aci"] == [{"aci": f"{base}.aci", "signature": f"{base}.aci.asc"}]
    missing = run_tool("actool", "discover", "localhost/nothing-here", env={
        **env.env, "RKT_HTTP_ATTEMPTS": "1"})
    assert_one_line_error(missing, 'meta discovery for "localhost/nothing-here" found no',
                          tool="actool", status=1)


def test_building_twice_gives_the_same_image_id(published: Published, tmp_path: Path) -> None:
    again = tmp_path / "again.aci"
    result = run_tool("actool", "build", "--owner-root", published.layout, again,
                      env={"SOURCE_DATE_EPOCH": "1700000000"})
    assert result.returncode == 0, result.stderr
    assert uncompressed_id(again) == uncompressed_id(published.image)
    assert again.read_bytes() == published.image.read_bytes()


@needs_root
@pytest.mark.slow
@pytest.mark.skipif(shutil.which("systemd-nspawn") is None, reason="needs systemd-nspawn")
def test_trust_fetch_run(env: RktEnv, published: Published) -> None:
    trusted = env.run("trust", "--prefix", NAME, published.key_file, input="yes\n")
    assert trusted.returncode == 0, trusted.stderr
    fetched = env.run("fetch", f"{NAME}:{VERSION}")
    assert fetched.returncode == 0, fetched.stderr
    # rkt shows IDs as sha512- and 32 hex digits
    shown = fetched.stdout.strip()
    assert len(shown) == 39 and uncompressed_id(published.image).startswith(shown)
    ran = env.run("run", f"{NAME}:{VERSION}")
    assert ran.returncode == 0, ran.stderr
    assert GREETING in ran.stdout


def test_fetch_refuses_an_image_signed_by_an_untrusted_key(env: RktEnv) -> None:
    """Nothing trusted yet: the published image is refused and the store stays empty."""
    before = env.store_snapshot()
    refused = env.run("fetch", f"{NAME}:{VERSION}")
    assert_one_line_error(refused)
    assert env.store_snapshot() == before
