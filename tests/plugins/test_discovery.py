"""appc meta discovery against a real HTTPS server, with the spec's own fixture pages.

Names such as ``example.com/myapp`` cannot resolve here, so these in-process tests
route their hosts to loopback servers through ``loopback_dial`` (a seam: TLS,
HTTP and the server are real, only name resolution is replaced). Discovery of
``localhost/...`` names through the real ``rkt`` command is in
``tests/cli/test_fetch_remote.py``.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rkt.context import Runtime, StreamReporter
from rkt.errors import FetchError, UsageError
from rkt.fetching import DiscoveredEndpoints, FetchSession
from rkt.http import HttpSession, session_for
from rkt_plugins.discovery import (
    MetaDiscovery,
    MetaTag,
    discovery_labels,
    host_labels,
    parse_meta_tags,
    render_template,
)
from rkt_testing.https_server import HttpsServer, loopback_dial

TESTDATA = Path(__file__).parent / "data" / "discovery"
STORAGE = "https://storage.example.com/example.com/myapp"
KEYS = "https://example.com/pubkeys.gpg"
LABELS = {"version": "1.0.0", "os": "linux", "arch": "amd64"}


def _pair(url: str) -> tuple[str, str]:
    return (f"{url}.aci", f"{url}.aci.asc")


# Every page of appc-testdata/discovery (the appc spec's own discovery_test.go pages),
# discovered for example.com/myapp version 1.0.0 on linux/amd64, with nothing served
# at the parent name example.com.
SPEC_PAGES: dict[str, DiscoveredEndpoints] = {
    "meta01.html": DiscoveredEndpoints(
        aci=[_pair(f"{STORAGE}-1.0.0-linux-amd64")], keys=[KEYS],
    ),
    # no pubkeys tag: the key walk goes on to example.com, which has nothing
    "meta02.html": DiscoveredEndpoints(aci=[_pair(f"{STORAGE}-1.0.0-linux-amd64")], keys=[]),
    # no ac-discovery tag: only keys
    "meta03.html": DiscoveredEndpoints(aci=[], keys=[KEYS]),
    "meta04.html": DiscoveredEndpoints(
        aci=[_pair("https://another.storage.example.com/example.com/myapp-1.0.0-linux-amd64")],
        keys=[KEYS],
    ),
    # several templates: all of them, in page order
    "meta05.html": DiscoveredEndpoints(
        aci=[_pair(f"{STORAGE}-1.0.0-linux-amd64"), _pair(f"{STORAGE}-1.0.0")], keys=[KEYS],
    ),
    # other schemes are returned too (the client chooses: discovery.md)
    "meta06.html": DiscoveredEndpoints(
        aci=[
            _pair(f"{STORAGE}-1.0.0-linux-amd64"),
            _pair(f"{STORAGE}-1.0.0"),
            _pair("hdfs://storage.example.com/example.com/myapp-1.0.0-linux-amd64"),
        ],
        keys=[KEYS],
    ),
}


@pytest.fixture(scope="module")
def server() -> Iterator[HttpsServer]:
    with HttpsServer(hostnames=("localhost", "example.com")) as running:
        yield running


@pytest.fixture(scope="module")
def plain_server() -> Iterator[HttpsServer]:
    with HttpsServer(tls=False) as running:
        yield running


@pytest.fixture
def fresh(server: HttpsServer, plain_server: HttpsServer) -> Iterator[None]:
    yield
    for running in (server, plain_server):
        running.routes.clear()
        running.clear_log()


def _session(
    tmp_path: Path, server: HttpsServer, *, insecure: frozenset[str] = frozenset(),
    plain: HttpsServer | None = None, allow_http: bool = False,
) -> tuple[FetchSession, MetaDiscovery]:
    options = Runtime(
        data_dir_override=tmp_path / "data", local_config=tmp_path / "etc",
        system_config=tmp_path / "usr", insecure=insecure,
        reporter=StreamReporter(io.StringIO()),
    )
    hosts: dict[str, HttpsServer] = {"example.com": server, "https://example.com": server}
    if plain is not None:
        hosts["http://example.com"] = plain
    dial = loopback_dial(hosts)

    def http(session: FetchSession) -> HttpSession:
        allowed = session.runtime.is_insecure("http") or session.allow_http
        return session_for(session.runtime, dial=dial, allow_http=allowed,
                           timeout=1.0, attempts=2)

    session = FetchSession(runtime=options, tmp_dir=tmp_path, allow_http=allow_http)
    return session, MetaDiscovery(http)


def _ca_env(server: HttpsServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(server.ca_bundle))


# -- pages and templates --------------------------------------------------------------
def test_parse_meta_tags_keeps_ac_names_and_splits_on_first_space() -> None:
    html = """<html><head>
        <meta name="ac-discovery" content="example.com https://a/{name}.{ext}">
        <META NAME="ac-discovery-pubkeys" CONTENT="example.com  https://k/keys.gpg"/>
        <meta name="description" content="example.com not-ours">
        <meta name="ac-discovery" content="no-space-at-all">
        <meta name="ac-other" content="example.com value with spaces">
    </head></html>"""
    assert parse_meta_tags(html) == [
        MetaTag("ac-discovery", "example.com", "https://a/{name}.{ext}"),
        MetaTag("ac-discovery-pubkeys", "example.com", "https://k/keys.gpg"),
        MetaTag("ac-other", "example.com", "value with spaces"),
    ]


@pytest.mark.parametrize(
    ("template", "labels", "expected"),
    [
        ("https://s/{name}-{version}.{ext}", {"version": "1"}, "https://s/a/b-1.aci"),
        # {name} goes first: a label called "name" cannot change it
        ("https://s/{name}.{ext}", {"name": "evil"}, "https://s/a/b.aci"),
        # any label fills its own placeholder
        ("https://s/{name}-{channel}.{ext}", {"channel": "beta"}, "https://s/a/b-beta.aci"),
        # something left unfilled: skipped
        ("https://s/{name}-{channel}.{ext}", {}, None),
        # no {ext}: image and signature would be the same URL; skipped
        ("https://s/{name}.aci", {}, None),
        ("https://s/{name}-{version.{ext}", {"version": "1"}, None),
    ],
)
def test_render_template(template: str, labels: dict[str, str], expected: str | None) -> None:
    assert render_template(template, "a/b", labels, "aci") == expected


def test_discovery_labels_defaults() -> None:
    assert discovery_labels({}) == {"version": "latest", **host_labels()}
    assert discovery_labels({"version": "2", "arch": "arm64"})["arch"] == "arm64"
    assert host_labels()["os"] == "linux"


# -- the spec's pages ------------------------------------------------------------------
@pytest.mark.parametrize("page", sorted(SPEC_PAGES))
def test_spec_discovery_pages(
    page: str, tmp_path: Path, server: HttpsServer, fresh: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _ca_env(server, monkeypatch)
    server.serve("/myapp", (TESTDATA / page).read_bytes(), host="example.com",
                 content_type="text/html")
    session, discovery = _session(tmp_path, server)
    found = discovery.discover("example.com/myapp", {"version": "1.0.0", "os": "linux",
                                                     "arch": "amd64"}, session)
    assert found == SPEC_PAGES[page]
    asked = [(r.host, r.path, r.query) for r in server.requests]
    assert asked[0] == ("example.com", "/myapp", "ac-discovery=1")
    if found.aci and found.keys:
        assert len(asked) == 1  # both kinds found: the walk stops at once
    else:
        # one kind is missing: the parent name is asked once (a 404 is not retried)
        assert asked[1:] == [("example.com", "/", "ac-discovery=1")]


# -- the walk --------------------------------------------------------------------------
def test_walk_up_to_the_first_page_with_tags(
    tmp_path: Path, server: HttpsServer, fresh: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    _ca_env(server, monkeypatch)
    server.serve("/", (TESTDATA / "meta01.html").read_bytes(), host="example.com")
    server.serve("/project", "<html><head><title>no tags here</title></head></html>",
                 host="example.com")
    session, discovery = _session(tmp_path, server)
    found = discovery.discover("example.com/project/sub", LABELS, session)
    assert found.aci == [_pair(f"{STORAGE[:-len('myapp')]}project/sub-1.0.0-linux-amd64")]
    assert found.keys == [KEYS]
    assert [r.path for r in server.requests] == ["/project/sub", "/project", "/"]


def test_endpoints_and_keys_are_walked_independently(
    tmp_path: Path, server: HttpsServer, fresh: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    _ca_env(server, monkeypatch)
    server.serve("/myapp", (TESTDATA / "meta03.html").read_bytes(), host="example.com")
    server.serve("/", (TESTDATA / "meta04.html").read_bytes(), host="example.com")
    session, discovery = _session(tmp_path, server)
    found = discovery.discover("example.com/myapp", LABELS, session)
    # keys from the first page that has keys, templates from the first with templates
    assert found.keys == [KEYS]
    assert found.aci == [
        _pair("https://another.storage.example.com/example.com/myapp-1.0.0-linux-amd64")
    ]


def test_version_defaults_to_latest_and_os_arch_to_the_host(
    tmp_path: Path, server: HttpsServer, fresh: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    _ca_env(server, monkeypatch)
    server.serve("/myapp", (TESTDATA / "meta01.html").read_bytes(), host="example.com")
    session, discovery = _session(tmp_path, server)
    found = discovery.discover("example.com/myapp", {}, session)
    host = host_labels()
    assert found.aci == [_pair(f"{STORAGE}-latest-{host['os']}-{host['arch']}")]


def test_prefix_must_match_the_name(
    tmp_path: Path, server: HttpsServer, fresh: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    _ca_env(server, monkeypatch)
    page = (TESTDATA / "meta01.html").read_text().replace('"example.com ', '"example.org ')
    server.serve("/myapp", page, host="example.com")
    session, discovery = _session(tmp_path, server)
    with pytest.raises(FetchError) as caught:
        discovery.discover("example.com/myapp", LABELS, session)
    assert str(caught.value) == (
        'meta discovery for "example.com/myapp" found no ACI meta tags: '
        "https://example.com/myapp?ac-discovery=1: no matching ac-discovery meta tags; "
        "https://example.com?ac-discovery=1: HTTP 404 Not Found"
    )


def test_plain_http_only_when_allowed(
    tmp_path: Path, server: HttpsServer, plain_server: HttpsServer, fresh: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _ca_env(server, monkeypatch)
    plain_server.serve("/myapp", (TESTDATA / "meta01.html").read_bytes(), host="example.com")
    session, discovery = _session(tmp_path, server, plain=plain_server)
    with pytest.raises(FetchError, match="found no ACI meta tags"):
        discovery.discover("example.com/myapp", LABELS, session)
    assert plain_server.requests == []
    for insecure, allow_http in ((frozenset({"http"}), False), (frozenset(), True)):
        session, discovery = _session(tmp_path, server, plain=plain_server,
                                      insecure=insecure, allow_http=allow_http)
        found = discovery.discover("example.com/myapp", LABELS, session)
        assert found.keys == [KEYS]
    # https is always tried first
    assert [r.path for r in server.requests[-1:]] == ["/myapp"]


# -- bad input -------------------------------------------------------------------------
def _discover_error(tmp_path: Path, server: HttpsServer, name: str = "example.com/myapp") -> str:
    session, discovery = _session(tmp_path, server)
    with pytest.raises(FetchError) as caught:
        discovery.discover(name, LABELS, session)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_broken_html(
    tmp_path: Path, server: HttpsServer, fresh: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    _ca_env(server, monkeypatch)
    server.serve("/myapp", b'<html><head><meta name="ac-discovery" content="example.com htt'
                 b"\x00\xff<<<<>>>&&&</hea", host="example.com")
    assert _discover_error(tmp_path, server).startswith(
        'meta discovery for "example.com/myapp" found no ACI meta tags: '
        "https://example.com/myapp?ac-discovery=1: no matching ac-discovery meta tags"
    )


def test_page_too_large(
    tmp_path: Path, server: HttpsServer, fresh: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    _ca_env(server, monkeypatch)
    big = (TESTDATA / "meta01.html").read_bytes() + b" " * (1 << 20)
    server.serve("/myapp", big, host="example.com")
    assert _discover_error(tmp_path, server) == (
        'meta discovery for "example.com/myapp" found no ACI meta tags: '
        "https://example.com/myapp?ac-discovery=1: larger than 1 MiB; "
        "https://example.com?ac-discovery=1: HTTP 404 Not Found"
    )


def test_redirect_loop(
    tmp_path: Path, server: HttpsServer, fresh: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    _ca_env(server, monkeypatch)
    server.redirect("/myapp", "/loop", host="example.com")
    server.redirect("/loop", "https://example.com/myapp?ac-discovery=1", host="example.com")
    message = _discover_error(tmp_path, server)
    assert "https://example.com/myapp?ac-discovery=1: more than 10 redirects" in message
    assert len(server.requests_for("/loop")) <= 6


def test_redirects_are_followed(
    tmp_path: Path, server: HttpsServer, fresh: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    _ca_env(server, monkeypatch)
    server.redirect("/myapp", "/pages/myapp.html", status=301, host="example.com")
    server.serve("/pages/myapp.html", (TESTDATA / "meta01.html").read_bytes(),
                 host="example.com")
    session, discovery = _session(tmp_path, server)
    assert discovery.discover("example.com/myapp", LABELS, session) == SPEC_PAGES["meta01.html"]


def test_redirect_to_plain_http_is_refused(
    tmp_path: Path, server: HttpsServer, plain_server: HttpsServer, fresh: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _ca_env(server, monkeypatch)
    server.redirect("/myapp", "http://example.com/myapp", host="example.com")
    plain_server.serve("/myapp", (TESTDATA / "meta01.html").read_bytes())
    session, discovery = _session(tmp_path, server, plain=plain_server)
    with pytest.raises(FetchError) as caught:
        discovery.discover("example.com/myapp", LABELS, session)
    assert (
        "refusing to fetch discovery page http://example.com/myapp (redirected from "
        "https://example.com/myapp?ac-discovery=1) over plain http" in str(caught.value)
    )
    assert plain_server.requests == []


def test_server_errors_are_retried_a_bounded_number_of_times(
    tmp_path: Path, server: HttpsServer, fresh: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    _ca_env(server, monkeypatch)
    server.serve("/myapp", "oops", status=500, host="example.com")
    server.serve("/", "oops", status=503, host="example.com")
    assert _discover_error(tmp_path, server) == (
        'meta discovery for "example.com/myapp" found no ACI meta tags: '
        "https://example.com/myapp?ac-discovery=1: HTTP 500 Internal Server Error; "
        "https://example.com?ac-discovery=1: HTTP 503 Service Unavailable"
    )
    assert len(server.requests_for("/myapp")) == 2  # attempts=2 in these tests
    assert len(server.requests_for("/")) == 2


def test_timeouts_are_bounded(
    tmp_path: Path, server: HttpsServer, fresh: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    _ca_env(server, monkeypatch)
    server.serve("/myapp", (TESTDATA / "meta01.html").read_bytes(), host="example.com",
                 delay=3.0)
    started = time.monotonic()
    message = _discover_error(tmp_path, server, "example.com/myapp")
    assert time.monotonic() - started < 8
    assert (
        "https://example.com/myapp?ac-discovery=1: no answer within 1s (2 attempts)" in message
    )


def test_unknown_certificate_authority(
    tmp_path: Path, server: HttpsServer, fresh: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    server.serve("/myapp", (TESTDATA / "meta01.html").read_bytes(), host="example.com")
    message = _discover_error(tmp_path, server)
    assert "https://example.com/myapp?ac-discovery=1: TLS certificate verification failed" in (
        message
    )
    session, discovery = _session(tmp_path, server, insecure=frozenset({"tls"}))
    assert discovery.discover("example.com/myapp", LABELS, session).keys == [KEYS]
    assert "rkt: warning: TLS verification has been disabled" in (
        session.runtime.reporter.stderr.getvalue()  # type: ignore[attr-defined]
    )


@pytest.mark.parametrize("name", ["", "/abs/path", "https://example.com/x"])
def test_not_a_name(tmp_path: Path, server: HttpsServer, name: str) -> None:
    session, discovery = _session(tmp_path, server)
    with pytest.raises(UsageError, match="not an image name"):
        discovery.discover(name, {}, session)


def test_every_fixture_page_has_a_case() -> None:
    assert sorted(p.name for p in TESTDATA.glob("*.html")) == sorted(SPEC_PAGES)
