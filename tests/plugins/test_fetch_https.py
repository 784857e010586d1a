"""``rkt fetch https://...`` through the real command against a real loopback HTTPS server.

Keys and signatures are made by real GnuPG; the server's certificate comes from a
throw-away CA that only the ``rkt`` process under test trusts. After every refused
fetch the store holds exactly what it held before.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rkt_testing import RktEnv, assert_one_line_error
from rkt_testing.aci import build_aci, image_manifest
from rkt_testing.gpg import GpgHome
from rkt_testing.https_server import HttpsServer, Recorded
from rkt_testing.signed_site import SignedSite

NAME = "example.com/hello"
#: small timeouts and attempts so that no test waits long
FAST = {"RKT_HTTP_TIMEOUT": "1", "RKT_HTTP_ATTEMPTS": "2"}


class World(SignedSite):
    """The site, plus images and signatures made once per module."""

    other_key_file: Path
    uid = "rkt test signer <signer@example.com>"
    images: dict[str, Path]
    signatures: dict[str, Path]


@pytest.fixture(scope="module")
def world(gpg: GpgHome, signing_key: tuple[str, Path],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    fingerprint, _ = signing_key
    directory = tmp_path_factory.mktemp("https-images")
    other = gpg.generate_key("https fetch stranger <stranger-https@example.com>")
    with HttpsServer() as server:
        world = World(server, gpg, fingerprint, directory)
        world.other_key_file = world.export_key(other)
        world.images = {
            "hello": build_aci(directory / "hello.aci", manifest=image_manifest(
                NAME, exec_=["/bin/true"]), files={"hello.txt": "hello\n"}),
            "bye": build_aci(directory / "bye.aci", manifest=image_manifest(
                NAME, version="2.0.0", exec_=["/bin/true"]), files={"bye.txt": "bye\n"}),
        }
        world.signatures = {
            "hello": world.sign(world.images["hello"]),
            "bye": world.sign(world.images["bye"]),
            "hello-by-other": world.sign(world.images["hello"], by=other),
        }
        yield world


@pytest.fixture
def env(rkt_env: RktEnv, world: World) -> Iterator[RktEnv]:
    rkt_env.env.update({**world.server.env(), **FAST})
    yield rkt_env
    world.server.routes.clear()
    world.server.clear_log()


def _serve_signed(world: World, path: str = "/hello.aci", image: str = "hello",
                  signature: str | None = None, **options: Any) -> str:
    return world.publish(path, world.images[image],
                         signature=world.signatures[signature or image], **options)


def _statuses(world: World, path: str) -> list[int]:
    return [r.status for r in world.server.requests_for(path)]


# -- the happy path ----------------------------------------------------------------------
def test_fetch_signed_image_by_url(env: RktEnv, world: World) -> None:
    env.trust(NAME, world.key_file)
    url = _serve_signed(world)
    result = env.run("fetch", url)
    assert result.returncode == 0, result.stderr
    image_id = result.stdout.strip()
    assert image_id.startswith("sha512-") and len(image_id) == 39
    assert result.stderr.splitlines() == [
        f"rkt: fetching image from {url}",
        f"Downloading signature from {url}.asc",
        "rkt: signature verified:",
        f"  {world.uid}",
    ]
    blobs = list((env.data_dir / "cas/blob/sha512").glob("*/sha512-*"))
    assert [b.name[:39] for b in blobs] == [image_id]
    assert [r.path for r in world.server.requests] == ["/hello.aci.asc", "/hello.aci"]


def test_second_fetch_downloads_nothing(env: RktEnv, world: World) -> None:
    env.trust(NAME, world.key_file)
    url = _serve_signed(world)
    first = env.run("fetch", url, check=True).stdout
    before = env.store_snapshot()
    again = env.run("fetch", url)
    assert again.returncode == 0, again.stderr
    assert again.stdout == first
    assert f"rkt: {url} has not changed: using the stored image" in again.stderr
    assert _statuses(world, "/hello.aci") == [200, 304]
    assert _statuses(world, "/hello.aci.asc") == [200]  # no signature for a 304
    assert env.store_snapshot() == before


def test_changed_image_is_downloaded_and_verified_again(env: RktEnv, world: World) -> None:
    env.trust(NAME, world.key_file)
    url = _serve_signed(world)
    first = env.run("fetch", url, check=True).stdout
    _serve_signed(world, image="bye")  # same URL, new content and ETag
    second = env.run("fetch", url)
    assert second.returncode == 0, second.stderr
    assert second.stdout != first
    assert "rkt: signature verified:" in second.stderr
    assert _statuses(world, "/hello.aci") == [200, 200]
    assert len(env.image_ids()) == 2


def test_max_age_answers_from_the_cache_without_asking(env: RktEnv, world: World) -> None:
    env.trust(NAME, world.key_file)
    url = _serve_signed(world, headers={"Cache-Control": "max-age=3600"})
    first = env.run("fetch", url, check=True).stdout
    world.server.clear_log()
    again = env.run("fetch", url)
    assert again.returncode == 0, again.stderr
    assert again.stdout == first
    assert world.server.requests == []


def test_pull_policies_for_urls(env: RktEnv, world: World) -> None:
    env.trust(NAME, world.key_file)
    url = _serve_signed(world)
    never = env.run("fetch", "--pull-policy=never", url)
    assert_one_line_error(
        never, status=254,
        message=f'image "{url}" is not in the store and --pull-policy=never',
    )
    assert world.server.requests == []
    first = env.run("fetch", "--pull-policy=new", url, check=True).stdout
    world.server.clear_log()
    for policy in ("new", "never"):
        result = env.run("fetch", f"--pull-policy={policy}", url)
        assert result.returncode == 0, result.stderr
        assert result.stdout == first
    assert world.server.requests == []


def test_signature_given_with_flag(env: RktEnv, world: World) -> None:
    env.trust(NAME, world.key_file)
    world.server.serve("/nosig.aci", world.images["hello"])
    result = env.run("fetch", world.url("/nosig.aci"), "--signature",
                     world.signatures["hello"])
    assert result.returncode == 0, result.stderr
    assert _statuses(world, "/nosig.aci.asc") == []


def test_deferred_signature(env: RktEnv, world: World) -> None:
    """202 Accepted for the signature: download the image, then ask once more."""
    env.trust(NAME, world.key_file)
    world.server.serve("/hello.aci", world.images["hello"])
    answers: list[int] = []

    def deferred(handler: Any, recorded: Recorded) -> None:
        if not answers:
            answers.append(202)
            handler.reply(recorded, 202, b"")
        else:
            handler.reply(recorded, 200, world.signatures["hello"].read_bytes())

    world.server.serve("/hello.aci.asc", handler=deferred)
    result = env.run("fetch", world.url("/hello.aci"))
    assert result.returncode == 0, result.stderr
    assert [r.path for r in world.server.requests] == [
        "/hello.aci.asc", "/hello.aci", "/hello.aci.asc",
    ]


def test_cut_download_is_resumed(env: RktEnv, world: World) -> None:
    env.trust(NAME, world.key_file)
    size = world.images["hello"].stat().st_size
    url = _serve_signed(world, cut_after=size // 2, cut_times=1)
    result = env.run("fetch", url)
    assert result.returncode == 0, result.stderr
    _, second = world.server.requests_for("/hello.aci")
    assert second.header("Range") == f"bytes={size // 2}-" and second.status == 206


def test_unsigned_image_needs_insecure_skip_verify(env: RktEnv, world: World) -> None:
    world.server.serve("/unsigned.aci", world.images["hello"])
    url = world.url("/unsigned.aci")
    before = env.store_snapshot()
    assert_one_line_error(
        env.run("fetch", url), status=254,
        message=f"no signature for {url} (looked for {url}.asc); pass --signature FILE, or "
                "--insecure-options=image to skip verification",
    )
    assert env.store_snapshot() == before
    accepted = env.run("--insecure-skip-verify", "fetch", url)
    assert accepted.returncode == 0, accepted.stderr
    assert "rkt: warning: image signature verification has been disabled" in accepted.stderr
    assert "Downloading signature" not in accepted.stderr
    assert _statuses(world, "/unsigned.aci.asc") == [404]  # only the refused attempt asked


# -- bad input ---------------------------------------------------------------------------
def test_signature_by_unknown_key(env: RktEnv, world: World) -> None:
    env.trust(NAME, world.key_file)
    url = _serve_signed(world, signature="hello-by-other")
    before = env.store_snapshot()
    result = env.run("fetch", url)
    assert result.returncode == 254
    assert "rkt: openpgp: signature made by unknown entity" in result.stderr.splitlines()[-1]
    assert env.store_snapshot() == before and env.image_ids() == []


def test_signature_over_other_bytes(env: RktEnv, world: World) -> None:
    env.trust(NAME, world.key_file)
    url = _serve_signed(world, signature="bye")
    before = env.store_snapshot()
    result = env.run("fetch", url)
    assert assert_one_line_error(result, status=254).startswith("rkt: openpgp: ")
    assert env.store_snapshot() == before and env.image_ids() == []


def test_key_trusted_only_for_another_prefix(env: RktEnv, world: World) -> None:
    env.trust("example.com/other", world.key_file)
    url = _serve_signed(world)
    before = env.store_snapshot()
    result = env.run("fetch", url)
    assert result.returncode == 254
    assert "which is not trusted for this name" in result.stderr.splitlines()[-1]
    assert env.store_snapshot() == before and env.image_ids() == []


@pytest.mark.parametrize(
    ("status", "message", "attempts"),
    [(404, "HTTP 404 Not Found", 1), (500, "HTTP 500 Internal Server Error (2 attempts)", 2)],
)
def test_error_status(env: RktEnv, world: World, status: int, message: str,
                      attempts: int) -> None:
    world.server.serve("/hello.aci", "no", status=status)
    world.server.serve("/hello.aci.asc", world.signatures["hello"])
    url = world.url("/hello.aci")
    before = env.store_snapshot()
    assert_one_line_error(
        env.run("fetch", url), status=254,
        message=f"cannot fetch image {url}: {message}",
    )
    assert len(world.server.requests_for("/hello.aci")) == attempts
    assert env.store_snapshot() == before


def test_timeout(env: RktEnv, world: World) -> None:
    url = _serve_signed(world, delay=3)
    before = env.store_snapshot()
    started = time.monotonic()
    result = env.run("--insecure-options=image", "fetch", url)
    assert time.monotonic() - started < 10
    assert_one_line_error(
        result, status=254,
        message=f"cannot fetch image {url}: no answer within 1s (2 attempts)",
    )
    assert env.store_snapshot() == before


def test_download_cut_every_time(env: RktEnv, world: World) -> None:
    env.trust(NAME, world.key_file)
    size = world.images["hello"].stat().st_size
    url = _serve_signed(world, ranges=False, cut_after=size // 3, cut_times=5)
    before = env.store_snapshot()
    assert_one_line_error(
        env.run("fetch", url), status=254,
        message=f"cannot fetch image {url}: connection lost after {size // 3} bytes of "
                f"{size} bytes (2 attempts)",
    )
    assert env.store_snapshot() == before


def test_truncated_archive_is_refused(env: RktEnv, world: World) -> None:
    """A server that closes early without a Content-Length: the archive check catches it."""
    data = world.images["hello"].read_bytes()[:-100]

    def short(handler: Any, recorded: Recorded) -> None:
        recorded.status = 200
        handler.send_response(200)
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.write(data)
        handler.close_connection = True

    world.server.serve("/short.aci", handler=short)
    before = env.store_snapshot()
    result = env.run("--insecure-options=image", "fetch", world.url("/short.aci"))
    assert_one_line_error(result, status=254)
    assert env.store_snapshot() == before


def test_plain_http_needs_the_insecure_option(env: RktEnv, world: World) -> None:
    with HttpsServer(tls=False) as plain:
        plain.serve("/hello.aci", world.images["hello"])
        url = f"{plain.url}/hello.aci"
        assert_one_line_error(
            env.run("--insecure-options=image", "fetch", url), status=254,
            message=f"refusing to fetch image {url} over plain http; use https, or "
                    "--insecure-options=http",
        )
        assert plain.requests == []
        result = env.run("--insecure-options=image,http", "fetch", url)
        assert result.returncode == 0, result.stderr


def test_redirect_to_plain_http_is_refused(env: RktEnv, world: World) -> None:
    with HttpsServer(tls=False) as plain:
        plain.serve("/hello.aci", world.images["hello"])
        world.server.redirect("/hello.aci", f"{plain.url}/hello.aci")
        url = world.url("/hello.aci")
        assert_one_line_error(
            env.run("--insecure-options=image", "fetch", url), status=254,
            message=f"refusing to fetch image {plain.url}/hello.aci (redirected from {url}) over "
                    "plain http; use https, or --insecure-options=http",
        )
        assert plain.requests == []


def test_unknown_certificate_authority(env: RktEnv, world: World) -> None:
    url = _serve_signed(world)
    system = {"REQUESTS_CA_BUNDLE": "", "SSL_CERT_FILE": "", "SSL_CERT_DIR": ""}
    result = env.run("--insecure-options=image", "fetch", url, env=system)
    assert result.returncode == 254
    assert result.stderr.splitlines()[-1].startswith(
        f"rkt: cannot fetch image {url}: TLS certificate verification failed"
    )
    assert result.stderr.splitlines()[-1].endswith("--insecure-options=tls skips it)")
    accepted = env.run("--insecure-options=image,tls", "fetch", url, env=system)
    assert accepted.returncode == 0, accepted.stderr
    assert "rkt: warning: TLS verification has been disabled" in accepted.stderr
    assert "InsecureRequestWarning" not in accepted.stderr


# -- the terminal --------------------------------------------------------------------------
def test_progress_bar_only_on_a_terminal(
    env: RktEnv, world: World, tmp_path: Path
) -> None:
    from rkt.progress import human_size

    big = build_aci(tmp_path / "big.aci", manifest=image_manifest(NAME),
                    files={"blob": os.urandom(3_000_000)})
    world.server.serve("/big.aci", big)
    url = world.url("/big.aci")
    status, output = env.run_on_terminal("--insecure-options=image", "fetch", url)
    assert status == 0, output
    size = human_size(big.stat().st_size)
    assert size.endswith(" MB")
    assert "\rDownloading ACI: [====" in output and f"=] {size}/{size}\r\n" in output
    plain = env.run("--insecure-options=image", "fetch", url)
    assert "Downloading ACI" not in plain.stderr and "\r" not in plain.stderr
