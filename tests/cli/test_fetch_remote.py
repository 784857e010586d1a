"""Remote images by appc name, through the real ``rkt`` command and the real network stack.

A real HTTPS server listens on ``127.0.0.1:443`` with a throw-away CA, so that names
under ``localhost/`` resolve through appc discovery exactly as ``coreos.com/etcd``
does: discovery pages, ACIs, signatures and armored keys made by real GnuPG. These
are the acceptance tests of remote images (trust by discovery, fetch by name, run
by name/hash/URL, auth.d credentials, dependencies) and their bad input. After
every refused fetch the store holds exactly what it held before.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rkt.keystore import format_fingerprint
from rkt_plugins.discovery import host_labels
from rkt_testing import RktEnv, assert_one_line_error
from rkt_testing.aci import build_aci, image_manifest
from rkt_testing.gpg import GpgHome
from rkt_testing.https_server import HttpsServer
from rkt_testing.plugin import needs_root
from rkt_testing.signed_site import SignedSite

FAST = {"RKT_HTTP_TIMEOUT": "2", "RKT_HTTP_ATTEMPTS": "2"}
HOST = host_labels()
UID = "rkt test signer <signer@example.com>"


def _page(name: str, keys: str | None = "/keys/publisher.gpg") -> str:
    tags = [f'<meta name="ac-discovery" content="{name} '
            'https://localhost/images/{name}-{version}-{os}-{arch}.{ext}">']
    if keys is not None:
        tags.append(f'<meta name="ac-discovery-pubkeys" content="{name} https://localhost{keys}">')
    return "<!DOCTYPE html><html><head><title>x</title>" + "".join(tags) + "</head></html>"


def _image_path(name: str, version: str) -> str:
    return f"/images/{name}-{version}-{HOST['os']}-{HOST['arch']}.aci"


class Site(SignedSite):
    """Images published under ``localhost/`` names for appc discovery."""

    def __init__(self, server: HttpsServer, gpg: GpgHome, fingerprint: str, directory: Path,
                 other_fingerprint: str) -> None:
        super().__init__(server, gpg, fingerprint, directory)
        self.other_fingerprint = other_fingerprint
        self.images: dict[str, Path] = {}

    def publish_name(self, name: str, version: str, image: Path, *, by: str | None = None,
                     signed: bool = True, page: bool = True,
                     keys: str | None = "/keys/publisher.gpg") -> str:
        """Serve ``image`` as NAME:VERSION (and its signature, and a discovery page)."""
        path = _image_path(name, version)
        self.publish(path, image, by=by, signed=signed)
        if page:
            self.server.serve("/" + name.removeprefix("localhost/"), _page(name, keys),
                              content_type="text/html")
        return f"https://localhost{path}"


def _busybox_image(directory: Path, name: str, version: str, **kwargs: Any) -> Path:
    return build_aci(directory / f"{name.replace('/', '_')}-{version}.aci",
                     manifest=image_manifest(name, version=version, **kwargs), busybox=True)


@pytest.fixture(scope="module")
def site(gpg: GpgHome, signing_key: tuple[str, Path],
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    fingerprint, _ = signing_key
    directory = tmp_path_factory.mktemp("site")
    other = gpg.generate_key("remote fetch stranger <stranger-remote@example.com>")
    with HttpsServer(host="127.0.0.1", port=443, hostnames=("localhost",)) as server:
        site = Site(server, gpg, fingerprint, directory, other)
        server.serve("/keys/publisher.gpg", site.key_file.read_bytes())
        hello = _busybox_image(directory, "localhost/hello", "v1.0.0",
                               exec_=["/bin/echo", "hello from a discovered image"])
        site.images["hello"] = hello
        site.publish_name("localhost/hello", "v1.0.0", hello)
        # `rkt fetch localhost/hello` (no version) asks for "latest"
        site.publish_name("localhost/hello", "latest", hello)
        # asked for v2.0.0, the server hands out v1.0.0: a label mismatch
        site.publish_name("localhost/hello", "v2.0.0", hello)
        # a page for localhost/evil whose image is really localhost/hello
        site.publish_name("localhost/evil", "v1.0.0", hello)
        signed_by_other = _busybox_image(directory, "localhost/other", "v1.0.0",
                                         exec_=["/bin/true"])
        site.publish_name("localhost/other", "v1.0.0", signed_by_other, by=other)
        unsigned = _busybox_image(directory, "localhost/unsigned", "v1.0.0",
                                  exec_=["/bin/true"])
        site.publish_name("localhost/unsigned", "v1.0.0", unsigned, signed=False)
        # a publisher whose key URL is plain http
        site.publish_name("localhost/httpkey", "v1.0.0", hello, keys=None)
        server.serve("/httpkey", '<html><head><meta name="ac-discovery" content="localhost/'
                     'httpkey https://localhost/images/{name}-{version}-{os}-{arch}.{ext}">'
                     '<meta name="ac-discovery-pubkeys" content="localhost/httpkey '
                     'http://localhost/keys/publisher.gpg"></head></html>')
        _publish_dependencies(site, directory)
        server.redirect("/loop", "https://localhost/loop2?ac-discovery=1")
        server.redirect("/loop2", "https://localhost/loop?ac-discovery=1")
        yield site


def _publish_dependencies(site: Site, directory: Path) -> None:
    """localhost/app -> [localhost/base (busybox), localhost/extra]: the app has no shell."""
    base = build_aci(directory / "base.aci", busybox=True, files={
        "base.txt": "from base\n", "shared.txt": "base wrote this\n",
    }, manifest=image_manifest("localhost/base", version="1"))
    extra = build_aci(directory / "extra.aci", files={
        "extra.txt": "from extra\n", "shared.txt": "extra wrote this\n",
    }, manifest=image_manifest("localhost/extra", version="1"))
    app_manifest = image_manifest(
        "localhost/app", version="v1",
        exec_=["/bin/sh", "-c", "cat /base.txt /extra.txt /shared.txt /app.txt"],
    )
    app_manifest["dependencies"] = [
        {"imageName": "localhost/base", "labels": [{"name": "version", "value": "1"}]},
        {"imageName": "localhost/extra", "labels": [{"name": "version", "value": "1"}]},
    ]
    app = build_aci(directory / "app.aci", files={"app.txt": "from app\n"},
                    manifest=app_manifest)
    for name, image in (("base", base), ("extra", extra), ("app", app)):
        version = "v1" if name == "app" else "1"
        site.publish_name(f"localhost/{name}", version, image)


@pytest.fixture
def env(rkt_env: RktEnv, site: Site) -> Iterator[RktEnv]:
    rkt_env.env.update({**site.server.env(), **FAST})
    yield rkt_env
    site.server.clear_log()


def _image_id_of(env: RktEnv, name: str) -> str:
    listing = env.run("image", "list", "--no-legend", "--fields=id,name", check=True).stdout
    return next(line.split()[0] for line in listing.splitlines() if line.split()[1] == name)


# -- 1. trust by discovery ---------------------------------------------------------------
def test_trust_discovers_the_key_and_stores_it_after_yes(env: RktEnv, site: Site) -> None:
    result = env.run("trust", "--prefix", "localhost/hello", input="yes\n")
    assert result.returncode == 0, result.stderr
    url = "https://localhost/keys/publisher.gpg"
    assert result.stderr.splitlines() == [
        'Prefix: "localhost/hello"',
        f'Key: "{url}"',
        f"GPG key fingerprint is: {format_fingerprint(site.fingerprint)}",
        f"\t{UID}",
        "Are you sure you want to trust this key (yes/no)?",
        f'Trusting "{url}" for prefix "localhost/hello" after fingerprint review.',
    ]
    path = (env.local_config / "trustedkeys/prefix.d/localhost/hello"
            / site.fingerprint.lower())
    assert result.stdout == f'Added key for prefix "localhost/hello" at "{path}"\n'
    assert path.read_bytes() == site.key_file.read_bytes()
    assert [(r.path, r.query) for r in site.server.requests] == [
        ("/hello", "ac-discovery=1"), ("/keys/publisher.gpg", ""),
    ]


def test_trust_by_discovery_answered_no(env: RktEnv, site: Site) -> None:
    result = env.run("trust", "--prefix", "localhost/hello", input="no\n")
    assert result.returncode == 0
    assert result.stderr.splitlines()[-1] == 'Not trusting "https://localhost/keys/publisher.gpg"'
    assert env.trusted_keys() == []


def test_trust_by_discovery_for_automation(env: RktEnv, site: Site) -> None:
    for flags in (["--trust-keys-from-https", "trust"], ["trust", "--skip-fingerprint-review"]):
        result = env.run(*flags, "--prefix", "localhost/hello")
        assert result.returncode == 0, result.stderr
        assert "Are you sure" not in result.stderr
        assert "without fingerprint review." in result.stderr
    assert env.trusted_keys() == [f"prefix.d/localhost/hello/{site.fingerprint.lower()}"]


def test_trust_without_tty_or_answer_trusts_nothing(env: RktEnv, site: Site) -> None:
    result = env.run("trust", "--prefix", "localhost/hello")
    assert_one_line_error(
        result, status=254,
        message="unable to ask user to review fingerprint: no input",
    )
    assert env.trusted_keys() == []


def test_trust_when_discovery_finds_nothing(env: RktEnv, site: Site) -> None:
    result = env.run("trust", "--prefix", "localhost/nothing", input="yes\n")
    assert_one_line_error(
        result, status=254,
        message='meta discovery for "localhost/nothing" found no ACI meta tags: '
                "https://localhost/nothing?ac-discovery=1: HTTP 404 Not Found; "
                "https://localhost?ac-discovery=1: HTTP 404 Not Found",
    )
    assert env.trusted_keys() == []


# -- 2. fetch by name ----------------------------------------------------------------------
def test_fetch_by_name_stores_the_image_and_refetch_downloads_nothing(
    env: RktEnv, site: Site
) -> None:
    env.run("trust", "--prefix", "localhost/hello", input="yes\n", check=True)
    result = env.run("fetch", "localhost/hello:v1.0.0")
    assert result.returncode == 0, result.stderr
    url = "https://localhost" + _image_path("localhost/hello", "v1.0.0")
    assert result.stderr.splitlines() == [
        "rkt: searching for app image localhost/hello:v1.0.0",
        f"rkt: fetching image from {url}",
        f"Downloading signature from {url}.asc",
        "rkt: signature verified:",
        f"  {UID}",
    ]
    image_id = result.stdout.strip()
    assert image_id.startswith("sha512-") and len(image_id) == 39
    blobs = list((env.data_dir / "cas/blob/sha512").glob("*/sha512-*"))
    assert [b.name[:39] for b in blobs] == [image_id]
    listing = env.run("image", "list", "--no-legend", "--fields=name,version", check=True)
    assert listing.stdout.split() == ["localhost/hello:v1.0.0", "v1.0.0"]

    site.server.clear_log()
    before = env.store_snapshot()
    again = env.run("fetch", "localhost/hello:v1.0.0")
    assert again.returncode == 0, again.stderr
    assert again.stdout == result.stdout
    downloads = [r for r in site.server.requests if r.status == 200 and
                 r.path.startswith("/images/")]
    assert downloads == []
    assert [r.status for r in site.server.requests_for(_image_path("localhost/hello",
                                                                   "v1.0.0"))] == [304]
    assert env.store_snapshot() == before


def test_fetch_without_version_asks_for_latest(env: RktEnv, site: Site) -> None:
    env.trust("localhost/hello", site.key_file)
    result = env.run("fetch", "localhost/hello")
    assert result.returncode == 0, result.stderr
    assert f"rkt: fetching image from https://localhost{_image_path('localhost/hello', 'latest')}" \
        in result.stderr


def test_image_signed_by_another_key_is_refused(env: RktEnv, site: Site) -> None:
    env.trust("localhost", site.key_file)
    before = env.store_snapshot()
    result = env.run("fetch", "localhost/other:v1.0.0")
    assert result.returncode == 254
    assert result.stderr.splitlines()[-1].startswith(
        "rkt: openpgp: signature made by unknown entity"
    )
    assert env.store_snapshot() == before and env.image_ids() == []


def test_unsigned_image_needs_insecure_skip_verify(env: RktEnv, site: Site) -> None:
    env.trust("localhost", site.key_file)
    url = "https://localhost" + _image_path("localhost/unsigned", "v1.0.0")
    before = env.store_snapshot()
    assert_one_line_error(
        env.run("fetch", "localhost/unsigned:v1.0.0"), status=254,
        message=f"no signature for {url} (looked for {url}.asc); pass --signature FILE, "
                "or --insecure-options=image to skip verification",
    )
    assert env.store_snapshot() == before
    accepted = env.run("--insecure-skip-verify", "fetch", "localhost/unsigned:v1.0.0")
    assert accepted.returncode == 0, accepted.stderr
    assert "rkt: warning: image signature verification has been disabled" in accepted.stderr


def test_manifest_name_must_be_the_name_asked_for(env: RktEnv, site: Site) -> None:
    env.trust("localhost", site.key_file)  # trusted for every localhost/ name: still refused
    before = env.store_snapshot()
    url = "https://localhost" + _image_path("localhost/evil", "v1.0.0")
    assert_one_line_error(
        env.run("fetch", "localhost/evil:v1.0.0"), status=254,
        message=f'image name mismatch: asked for "localhost/evil", {url} contains '
                '"localhost/hello"',
    )
    assert env.store_snapshot() == before and env.image_ids() == []


def test_labels_must_be_the_labels_asked_for(env: RktEnv, site: Site) -> None:
    env.trust("localhost", site.key_file)
    before = env.store_snapshot()
    url = "https://localhost" + _image_path("localhost/hello", "v2.0.0")
    assert_one_line_error(
        env.run("fetch", "localhost/hello:v2.0.0"), status=254,
        message=f'image label mismatch: asked for version="v2.0.0", {url} has version="v1.0.0"',
    )
    assert env.store_snapshot() == before and env.image_ids() == []


def test_untrusted_name_without_a_terminal_explains_how_to_trust(
    env: RktEnv, site: Site
) -> None:
    before = env.store_snapshot()
    result = env.run("fetch", "localhost/hello:v1.0.0")
    assert result.returncode == 254
    lines = result.stderr.splitlines()
    assert lines[1:6] == [
        'To trust the key for "localhost/hello", do one of the following:',
        " - call rkt with --trust-keys-from-https",
        ' - run: rkt trust --prefix "localhost/hello"',
        "rkt: error reviewing key: unable to ask user to review fingerprint due to lack of tty",
        "rkt: fetching image from https://localhost"
        + _image_path("localhost/hello", "v1.0.0"),
    ]
    assert lines[-1].startswith("rkt: openpgp: signature made by unknown entity")
    assert env.trusted_keys() == []
    assert env.store_snapshot() == before


def test_trust_keys_from_https_on_fetch(env: RktEnv, site: Site) -> None:
    result = env.run("--trust-keys-from-https", "fetch", "localhost/hello:v1.0.0")
    assert result.returncode == 0, result.stderr
    path = (env.local_config / "trustedkeys/prefix.d/localhost/hello"
            / site.fingerprint.lower())
    assert 'Trusting "https://localhost/keys/publisher.gpg" for prefix "localhost/hello" ' \
        "without fingerprint review." in result.stderr
    assert f'Added key for prefix "localhost/hello" at "{path}"' in result.stderr
    assert path.is_file()
    # the key exists now: it is not fetched again
    site.server.clear_log()
    env.run("--trust-keys-from-https", "fetch", "localhost/hello:v1.0.0", check=True)
    assert site.server.requests_for("/keys/publisher.gpg") == []


def test_key_url_over_plain_http_is_refused(env: RktEnv, site: Site) -> None:
    assert_one_line_error(
        env.run("trust", "--prefix", "localhost/httpkey", input="yes\n"), status=254,
        message='refusing to fetch key "http://localhost/keys/publisher.gpg" over plain http; '
                "use https, or --insecure-allow-http",
    )
    assert env.trusted_keys() == []
    before = env.store_snapshot()
    result = env.run("--trust-keys-from-https", "fetch", "localhost/httpkey:v1.0.0")
    assert result.returncode == 254
    assert (
        'rkt: warning: not fetching key "http://localhost/keys/publisher.gpg" over plain '
        "http (needs --insecure-options=pubkey,http)" in result.stderr
    )
    assert "signature made by unknown entity" in result.stderr.splitlines()[-1]
    assert env.trusted_keys() == [] and env.store_snapshot() == before


def test_fetch_asks_about_the_key_on_a_terminal(env: RktEnv, site: Site) -> None:
    status, output = env.run_on_terminal("fetch", "localhost/hello:v1.0.0",
                                         answer=("Are you sure", "yes\n"))
    assert status == 0, output
    assert f"GPG key fingerprint is: {format_fingerprint(site.fingerprint)}" in output
    assert 'Trusting "https://localhost/keys/publisher.gpg" for prefix "localhost/hello" ' \
        "after fingerprint review." in output
    assert env.trusted_keys() == [f"prefix.d/localhost/hello/{site.fingerprint.lower()}"]
    assert len(env.image_ids()) == 1


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("localhost/nothing",
         'meta discovery for "localhost/nothing" found no ACI meta tags: '
         "https://localhost/nothing?ac-discovery=1: HTTP 404 Not Found; "
         "https://localhost?ac-discovery=1: HTTP 404 Not Found"),
        ("localhost/loop",
         'meta discovery for "localhost/loop" found no ACI meta tags: '
         "https://localhost/loop?ac-discovery=1: more than 10 redirects (a redirect loop?); "
         "https://localhost?ac-discovery=1: HTTP 404 Not Found"),
    ],
)
def test_discovery_failures(env: RktEnv, site: Site, name: str, message: str) -> None:
    before = env.store_snapshot()
    assert_one_line_error(env.run("fetch", name), message=message, status=254)
    assert env.store_snapshot() == before


def test_plain_http_discovery_needs_the_insecure_option(env: RktEnv, site: Site) -> None:
    """Without --insecure-options=http rkt never falls back to http://localhost."""
    result = env.run("fetch", "localhost/nothing")
    assert result.returncode == 254
    assert "http://" not in result.stderr


# -- 3. run by name, by hash, by URL -------------------------------------------------------
@needs_root
def test_run_by_name_hash_and_url(env: RktEnv, site: Site) -> None:
    env.trust("localhost/hello", site.key_file)
    by_name = env.run("run", "localhost/hello:v1.0.0")
    assert by_name.returncode == 0, by_name.stderr
    assert "hello from a discovered image" in by_name.stdout
    assert "rkt: searching for app image localhost/hello:v1.0.0" in by_name.stderr
    image_id = _image_id_of(env, "localhost/hello:v1.0.0")

    site.server.clear_log()
    by_hash = env.run("run", image_id[:39])
    assert by_hash.returncode == 0, by_hash.stderr
    assert "hello from a discovered image" in by_hash.stdout
    by_name_again = env.run("run", "localhost/hello:v1.0.0")  # run's policy: store first
    assert by_name_again.returncode == 0, by_name_again.stderr
    assert site.server.requests == []

    url = "https://localhost" + _image_path("localhost/hello", "v1.0.0")
    fresh = RktEnv(env.root.parent / "by-url", dict(env.env))
    for directory in (fresh.data_dir, fresh.local_config, fresh.system_config):
        directory.mkdir(parents=True)
    fresh.trust("localhost/hello", site.key_file)
    try:
        by_url = fresh.run("run", url)
    finally:
        fresh.run("gc", "--grace-period=0s")  # the pod's network (rkt_env collects env's)
    assert by_url.returncode == 0, by_url.stderr
    assert "hello from a discovered image" in by_url.stdout
    assert f"rkt: fetching image from {url}" in by_url.stderr


# -- 4. auth.d -------------------------------------------------------------------------
BASIC = "Basic " + base64.b64encode(b"alice:wonderland").decode()
BEARER = "Bearer s3cr3t-t0ken"


@pytest.fixture(scope="module")
def protected(site: Site) -> Iterator[dict[str, HttpsServer]]:
    """Two servers on their own ports: one wants basic auth, the other a bearer token."""
    servers = {}
    with HttpsServer(hostnames=("localhost",), ca=site.server.ca) as basic, \
            HttpsServer(hostnames=("localhost",), ca=site.server.ca) as oauth:
        for server, header in ((basic, BASIC), (oauth, BEARER)):
            server.serve("/hello.aci", site.images["hello"], authorization=header)
            signature = site.server.routes[(None, _image_path("localhost/hello", "v1.0.0")
                                            + ".asc")].body
            server.serve("/hello.aci.asc", signature, authorization=header)
            # a redirect to another host name of the same server: credentials stay behind
            server.redirect("/moved.aci", f"{server.base('127.0.0.1')}/hello.aci")
        servers = {"basic": basic, "oauth": oauth}
        yield servers


def _auth_file(directory: Path, name: str, domain: str, kind: str, **credentials: str) -> None:
    auth = directory / "auth.d"
    auth.mkdir(parents=True, exist_ok=True)
    (auth / name).write_text(json.dumps({
        "rktKind": "auth", "rktVersion": "v1", "domains": [domain], "type": kind,
        "credentials": credentials,
    }))


def _domain(server: HttpsServer) -> str:
    return f"localhost:{server.port}"


def test_auth_servers_refuse_without_credentials(
    env: RktEnv, site: Site, protected: dict[str, HttpsServer]
) -> None:
    env.trust("localhost", site.key_file)
    for server in protected.values():
        url = f"{server.base('localhost')}/hello.aci"
        before = env.store_snapshot()
        assert_one_line_error(
            env.run("fetch", url), status=254,
            message=f"cannot fetch signature {url}.asc: localhost answered HTTP 401 Unauthorized "
                    "(no credentials for localhost in auth.d)",
        )
        assert env.store_snapshot() == before


def test_basic_and_oauth_credentials(
    env: RktEnv, site: Site, protected: dict[str, HttpsServer]
) -> None:
    env.trust("localhost", site.key_file)
    basic, oauth = protected["basic"], protected["oauth"]
    _auth_file(env.local_config, "basic.json", _domain(basic), "basic",
               user="alice", password="wonderland")
    _auth_file(env.system_config, "oauth.json", _domain(oauth), "oauth", token="s3cr3t-t0ken")
    for server, header in ((basic, BASIC), (oauth, BEARER)):
        server.clear_log()
        result = env.run("fetch", f"{server.base('localhost')}/hello.aci")
        assert result.returncode == 0, result.stderr
        assert [r.header("Authorization") for r in server.requests] == [header, header]
        # never to the other server
        other = oauth if server is basic else basic
        assert all(r.header("Authorization") != header for r in other.requests)


def test_local_auth_overrides_system_auth(
    env: RktEnv, site: Site, protected: dict[str, HttpsServer]
) -> None:
    env.trust("localhost", site.key_file)
    basic = protected["basic"]
    url = f"{basic.base('localhost')}/hello.aci"
    _auth_file(env.system_config, "a.json", _domain(basic), "basic",
               user="alice", password="wrong")
    _auth_file(env.local_config, "a.json", _domain(basic), "basic",
               user="alice", password="wonderland")
    # files not ending in .json are ignored, even broken ones
    (env.local_config / "auth.d" / "notes.txt").write_text("{ not json")
    assert env.run("fetch", url).returncode == 0
    _auth_file(env.local_config, "a.json", _domain(basic), "basic",
               user="alice", password="wrong")
    _auth_file(env.system_config, "a.json", _domain(basic), "basic",
               user="alice", password="wonderland")
    assert_one_line_error(
        env.run("fetch", "--pull-policy=update", url + "?again"), status=254,
        message=f"cannot fetch signature {url}.asc?again: localhost answered HTTP 401 Unauthorized "
                f"(localhost refused the credentials from {env.local_config / 'auth.d/a.json'})",
    )


def test_credentials_do_not_follow_a_redirect_to_another_host(
    env: RktEnv, site: Site, protected: dict[str, HttpsServer]
) -> None:
    basic = protected["basic"]
    _auth_file(env.local_config, "basic.json", _domain(basic), "basic",
               user="alice", password="wonderland")
    basic.clear_log()
    url = f"{basic.base('localhost')}/moved.aci"
    result = env.run("--insecure-options=image", "fetch", url)
    assert_one_line_error(
        result, status=254,
        message=f"cannot fetch image {url}: 127.0.0.1 answered HTTP 401 Unauthorized "
                "(no credentials for 127.0.0.1 in auth.d)",
    )
    sent = [(r.host, r.header("Authorization")) for r in basic.requests]
    assert sent == [("localhost", BASIC), ("127.0.0.1", None)]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{ not json", "{path}: not valid JSON: Expecting property name enclosed in double "
                       "quotes (line 1)"),
        ('{"rktKind": "secrets", "rktVersion": "v1"}',
         "{path}: unknown rktKind 'secrets' (expected auth or dockerAuth)"),
    ],
)
def test_invalid_auth_files_name_the_file(
    env: RktEnv, site: Site, protected: dict[str, HttpsServer], content: str, message: str
) -> None:
    path = env.local_config / "auth.d" / "broken.json"
    path.parent.mkdir(parents=True)
    path.write_text(content)
    before = env.store_snapshot()
    result = env.run("fetch", f"{protected['basic'].base('localhost')}/hello.aci")
    assert_one_line_error(result, message=message.format(path=path), status=254)
    assert env.store_snapshot() == before


# -- 5. dependencies ---------------------------------------------------------------------
def test_dependencies_are_fetched_and_rendered(env: RktEnv, site: Site) -> None:
    env.trust("localhost", site.key_file)
    result = env.run("fetch", "localhost/app:v1")
    assert result.returncode == 0, result.stderr
    for name in ("localhost/app:v1", "localhost/base,version=1", "localhost/extra,version=1"):
        assert f"rkt: searching for app image {name}" in result.stderr
    assert sorted(env.run("image", "list", "--no-legend", "--fields=name",
                          check=True).stdout.split()) == [
        "localhost/app:v1", "localhost/base:1", "localhost/extra:1",
    ]
    out = env.root / "rendered"
    env.run("image", "render", "localhost/app:v1", out, check=True)
    rootfs = out / "rootfs"
    assert (rootfs / "bin/busybox").is_file()
    assert (rootfs / "app.txt").read_text() == "from app\n"
    # extra comes after base in the list: its files win
    assert (rootfs / "shared.txt").read_text() == "extra wrote this\n"
    assert json.loads((out / "manifest").read_text())["name"] == "localhost/app"


@needs_root
def test_image_with_two_dependencies_runs(env: RktEnv, site: Site) -> None:
    env.trust("localhost", site.key_file)
    result = env.run("run", "localhost/app:v1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-4:] == [
        "from base", "from extra", "extra wrote this", "from app",
    ]


def test_missing_dependency_fails_cleanly(env: RktEnv, site: Site, tmp_path: Path) -> None:
    manifest = image_manifest("localhost/needy", version="v1", exec_=["/bin/true"])
    manifest["dependencies"] = [{"imageName": "localhost/nothing"}]
    needy = build_aci(tmp_path / "needy.aci", manifest=manifest)
    result = env.run("--insecure-options=image", "fetch", needy)
    assert assert_one_line_error(result, status=254).startswith(
        'rkt: dependency "localhost/nothing" of image "localhost/needy": meta discovery for '
        '"localhost/nothing" found no ACI meta tags'
    )

