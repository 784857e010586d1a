"""The store records how each image was verified, and a command that asks for
verification refuses an image that came in without it (issue 10, acceptance 5).

Real GnuPG keys and signatures, a real loopback HTTPS server, the real ``rkt``.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from rkt_testing import AciBuilder, RktEnv, assert_one_line_error
from rkt_testing.aci import image_manifest
from rkt_testing.gpg import GpgHome
from rkt_testing.https_server import HttpsServer
from rkt_testing.signed_site import SignedSite

NAME = "example.com/hello"
FAST = {"RKT_HTTP_TIMEOUT": "1", "RKT_HTTP_ATTEMPTS": "2"}


@pytest.fixture(scope="module")
def site(gpg: GpgHome, signing_key: tuple[str, Path],
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[SignedSite]:
    with HttpsServer() as server:
        yield SignedSite(server, gpg, signing_key[0], tmp_path_factory.mktemp("site"))


@pytest.fixture
def env(rkt_env: RktEnv, site: SignedSite) -> Iterator[RktEnv]:
    rkt_env.env.update({**site.server.env(), **FAST})
    yield rkt_env
    site.server.routes.clear()


@pytest.fixture
def hello(aci_builder: AciBuilder) -> Path:
    return aci_builder.build("hello.aci", busybox=True,
                             manifest=image_manifest(NAME, exec_=["/bin/echo", "hi"]))


def listing(env: RktEnv) -> list[dict[str, object]]:
    records: list[dict[str, object]] = json.loads(
        env.run("image", "list", "--format=json", check=True).stdout)
    return records


def test_unsigned_image_from_the_cache_is_refused_without_the_insecure_flag(
    env: RktEnv, site: SignedSite, hello: Path
) -> None:
    url = site.publish("/hello.aci", hello, signed=False)
    fetched = env.run("--insecure-options=image", "fetch", url)
    assert fetched.returncode == 0, fetched.stderr
    [record] = listing(env)
    assert (record["verification"], record["signer"]) == ("none", None)
    for command in (["fetch", url], ["run", url], ["fetch", "--pull-policy=never", NAME],
                    ["run", NAME], ["run", "--local", str(record["id"])]):
        if command[0] == "run" and os.geteuid() != 0:
            continue
        refused = env.run(*command)
        assert_one_line_error(refused, f'image "{NAME}"', "is in the store unverified")
        assert [r for r in listing(env) if r["name"] == NAME] == [record]
        assert not [p for p in env.store_snapshot() if p.startswith("pods/")]
    # the flag that let it in still lets it run
    again = env.run("--insecure-options=image", "fetch", url)
    assert again.returncode == 0, again.stderr


def test_a_signed_fetch_records_the_signer(env: RktEnv, site: SignedSite, hello: Path,
                                           signing_key: tuple[str, Path]) -> None:
    fingerprint, key_file = signing_key
    env.trust(NAME, key_file)
    url = site.publish("/hello.aci", hello)
    assert env.run("fetch", url).returncode == 0
    [record] = listing(env)
    assert record["verification"] == "signature"
    assert str(record["signer"]).lower() == fingerprint.lower()
    # later fetches answer from the cache: the image was verified, so they may
    assert env.run("fetch", "--pull-policy=never", NAME).returncode == 0
    assert env.run("fetch", url).returncode == 0
    # an insecure import of the same bytes does not erase how it was verified
    assert env.run("--insecure-options=image", "fetch", hello).returncode == 0
    assert listing(env)[0]["signer"] == record["signer"]


def test_an_index_of_the_previous_schema_counts_its_images_as_unverified(
    env: RktEnv, hello: Path
) -> None:
    assert env.run("--insecure-options=image", "fetch", hello).returncode == 0
    index = env.data_dir / "cas" / "db" / "index.sqlite"
    with sqlite3.connect(index) as db:  # back to schema 1, as an older rkt left it
        db.execute("ALTER TABLE images DROP COLUMN signer")
        db.execute("ALTER TABLE images DROP COLUMN verification")
        db.execute("PRAGMA user_version=1")
    [record] = listing(env)
    assert (record["verification"], record["signer"]) == ("none", None)
    assert_one_line_error(env.run("fetch", "--pull-policy=never", NAME),
                          "is in the store unverified")
