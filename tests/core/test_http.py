"""``rkt.http``, the HTTP layer every remote fetch goes through, against a real loopback
HTTPS server: retries, timeouts, resume, ETags, redirects, credentials and TLS."""

from __future__ import annotations

import base64
import io
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rkt.context import Runtime, StreamReporter
from rkt.errors import ConfigError, FetchError
from rkt.http import (
    ConnectionProblem,
    HttpClient,
    HttpSession,
    RangeReader,
    parse_max_age,
    session_for,
)
from rkt_testing.https_server import HttpsServer, Recorded, Route

BODY = os.urandom(3 * (1 << 20) + 12345)


@pytest.fixture(scope="module")
def server() -> Iterator[HttpsServer]:
    with HttpsServer(hostnames=("localhost",)) as running:
        yield running


@pytest.fixture
def srv(server: HttpsServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[HttpsServer]:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(server.ca_bundle))
    yield server
    server.routes.clear()
    server.clear_log()


def _options(tmp_path: Path, insecure: frozenset[str] = frozenset()) -> Runtime:
    for sub in ("etc", "usr"):
        (tmp_path / sub).mkdir(exist_ok=True)
    return Runtime(
        data_dir_override=tmp_path / "data", local_config=tmp_path / "etc",
        system_config=tmp_path / "usr", insecure=insecure,
        reporter=StreamReporter(io.StringIO()),
    )


def _http(tmp_path: Path, **kwargs: object) -> HttpSession:
    insecure = kwargs.pop("insecure", frozenset())
    kwargs.setdefault("timeout", 1.0)
    kwargs.setdefault("attempts", 3)
    return session_for(_options(tmp_path, insecure), **kwargs)  # type: ignore[arg-type]


def _downloads(tmp_path: Path) -> Path:
    directory = tmp_path / "tmp"
    directory.mkdir(exist_ok=True)
    return directory


# -- downloads ---------------------------------------------------------------------------
def test_download_and_revalidate_with_etag(tmp_path: Path, srv: HttpsServer) -> None:
    srv.serve("/x.aci", BODY, headers={"Cache-Control": "public, max-age=600"})
    http = _http(tmp_path)
    first = http.download(f"{srv.url}/x.aci", _downloads(tmp_path))
    assert first.path is not None and first.path.read_bytes() == BODY
    assert first.etag is not None and first.max_age == 600 and first.size == len(BODY)
    again = http.download(f"{srv.url}/x.aci", _downloads(tmp_path), etag=first.etag)
    assert again.not_modified and again.etag == first.etag
    assert [r.status for r in srv.requests] == [200, 304]
    assert srv.requests[1].header("If-None-Match") == first.etag
    assert sorted(os.listdir(tmp_path / "tmp")) == [first.path.name]


def test_cut_download_resumes_with_range(tmp_path: Path, srv: HttpsServer) -> None:
    srv.serve("/x.aci", BODY, cut_after=1 << 20, cut_times=1)
    result = _http(tmp_path).download(f"{srv.url}/x.aci", _downloads(tmp_path))
    assert result.path is not None and result.path.read_bytes() == BODY
    first, second = srv.requests
    assert first.status == 200 and second.status == 206
    assert second.header("Range") == f"bytes={1 << 20}-"
    assert second.header("If-Range") == srv.routes[(None, "/x.aci")].etag_value


def test_cut_download_without_range_support_starts_again(
    tmp_path: Path, srv: HttpsServer
) -> None:
    srv.serve("/x.aci", BODY, ranges=False, cut_after=1 << 20, cut_times=2)
    result = _http(tmp_path).download(f"{srv.url}/x.aci", _downloads(tmp_path))
    assert result.path is not None and result.path.read_bytes() == BODY
    assert [r.header("Range") for r in srv.requests] == [None, None, None]


def test_changed_file_is_not_spliced(tmp_path: Path, srv: HttpsServer) -> None:
    """If-Range: when the file changed between two attempts, it comes whole again."""
    other = os.urandom(len(BODY))
    first = Route(body=BODY, cut_after=1 << 20, cut_times=1, etag_value='"v1"')
    second = Route(body=other, etag_value='"v2"')
    seen: list[Recorded] = []

    def changing(handler: object, recorded: Recorded) -> None:
        seen.append(recorded)
        route = first if len(seen) == 1 else second
        handler.serve_route(route, recorded)  # type: ignore[attr-defined]

    srv.serve("/x.aci", handler=changing)
    result = _http(tmp_path).download(f"{srv.url}/x.aci", _downloads(tmp_path))
    assert result.path is not None and result.path.read_bytes() == other
    assert result.etag == '"v2"'
    assert seen[1].header("If-Range") == '"v1"' and seen[1].status == 200


def test_download_cut_every_time_fails_and_leaves_nothing(
    tmp_path: Path, srv: HttpsServer
) -> None:
    srv.serve("/x.aci", BODY, ranges=False, cut_after=1000, cut_times=10)
    with pytest.raises(FetchError) as caught:
        _http(tmp_path).download(f"{srv.url}/x.aci", _downloads(tmp_path))
    assert str(caught.value) == (
        f"cannot fetch image {srv.url}/x.aci: connection lost after 1000 bytes of "
        f"{len(BODY)} bytes (3 attempts)"
    )
    assert os.listdir(tmp_path / "tmp") == []
    assert len(srv.requests) == 3


def test_server_errors_are_retried(tmp_path: Path, srv: HttpsServer) -> None:
    calls: list[int] = []

    def flaky(handler: object, recorded: Recorded) -> None:
        calls.append(1)
        if len(calls) < 3:
            handler.reply(recorded, 503, b"busy")  # type: ignore[attr-defined]
        else:
            handler.serve_route(srv.routes[(None, "/ok.aci")], recorded)  # type: ignore[attr-defined]

    srv.serve("/ok.aci", BODY)
    srv.serve("/x.aci", handler=flaky)
    result = _http(tmp_path).download(f"{srv.url}/x.aci", _downloads(tmp_path))
    assert result.path is not None and result.path.read_bytes() == BODY
    assert [r.status for r in srv.requests] == [503, 503, 200]


@pytest.mark.parametrize(
    ("status", "message", "requests"),
    [
        (404, "HTTP 404 Not Found", 1),
        (403, "HTTP 403 Forbidden", 1),
        (500, "HTTP 500 Internal Server Error (3 attempts)", 3),
    ],
)
def test_error_statuses(
    tmp_path: Path, srv: HttpsServer, status: int, message: str, requests: int
) -> None:
    srv.serve("/x.aci", "no", status=status)
    with pytest.raises(FetchError) as caught:
        _http(tmp_path).download(f"{srv.url}/x.aci", _downloads(tmp_path))
    assert str(caught.value) == f"cannot fetch image {srv.url}/x.aci: {message}"
    assert len(srv.requests) == requests
    assert os.listdir(tmp_path / "tmp") == []


def test_timeout(tmp_path: Path, srv: HttpsServer) -> None:
    srv.serve("/x.aci", BODY, delay=2.0)
    started = time.monotonic()
    with pytest.raises(FetchError) as caught:
        _http(tmp_path, timeout=0.5, attempts=2).download(
            f"{srv.url}/x.aci", _downloads(tmp_path)
        )
    assert time.monotonic() - started < 5
    assert str(caught.value) == (
        f"cannot fetch image {srv.url}/x.aci: no answer within 0.5s (2 attempts)"
    )


def test_connection_refused(tmp_path: Path) -> None:
    with pytest.raises(FetchError) as caught:
        _http(tmp_path, attempts=2).download("https://127.0.0.1:9/x.aci", _downloads(tmp_path))
    assert str(caught.value) == (
        "cannot fetch image https://127.0.0.1:9/x.aci: Connection refused (2 attempts)"
    )


def test_content_encoding_is_not_undone(tmp_path: Path, srv: HttpsServer) -> None:
    import gzip

    packed = gzip.compress(BODY)
    srv.serve("/x.aci", packed, headers={"Content-Encoding": "gzip"})
    result = _http(tmp_path).download(f"{srv.url}/x.aci", _downloads(tmp_path))
    assert result.path is not None and result.path.read_bytes() == packed
    assert srv.requests[0].header("Accept-Encoding") == "identity"


# -- redirects and credentials ---------------------------------------------------------
def _auth_config(tmp_path: Path, domain: str, document: str | None = None) -> None:
    auth = tmp_path / "etc" / "auth.d"
    auth.mkdir(parents=True, exist_ok=True)
    (auth / "test.json").write_text(document or json.dumps({
        "rktKind": "auth", "rktVersion": "v1", "domains": [domain], "type": "basic",
        "credentials": {"user": "bob", "password": "secret"},
    }))


BASIC = "Basic " + base64.b64encode(b"bob:secret").decode()


def test_credentials_go_only_to_their_host(tmp_path: Path, srv: HttpsServer) -> None:
    _auth_config(tmp_path, "localhost")
    srv.serve("/x.aci", BODY, authorization=BASIC)
    srv.redirect("/away.aci", f"{srv.base('127.0.0.1')}/open.aci")
    srv.serve("/open.aci", BODY)
    http = _http(tmp_path)
    assert http.download(f"{srv.base('localhost')}/x.aci", _downloads(tmp_path)).size == len(BODY)
    http.download(f"{srv.base('localhost')}/away.aci", _downloads(tmp_path))
    sent = {(r.host, r.path): r.header("Authorization") for r in srv.requests}
    assert sent == {
        ("localhost", "/x.aci"): BASIC,
        ("localhost", "/away.aci"): BASIC,
        ("127.0.0.1", "/open.aci"): None,  # another host behind a redirect: no credentials
    }


def test_unauthorized_names_the_host(tmp_path: Path, srv: HttpsServer) -> None:
    srv.serve("/x.aci", BODY, authorization=BASIC)
    url = f"{srv.base('localhost')}/x.aci"
    with pytest.raises(FetchError) as caught:
        _http(tmp_path).download(url, _downloads(tmp_path))
    assert str(caught.value) == (
        f"cannot fetch image {url}: localhost answered HTTP 401 Unauthorized "
        "(no credentials for localhost in auth.d)"
    )
    _auth_config(tmp_path, "localhost", '{"rktKind": "auth", "rktVersion": "v1", '
                 '"domains": ["localhost"], "type": "oauth", "credentials": {"token": "t"}}')
    with pytest.raises(FetchError) as caught:
        _http(tmp_path).download(url, _downloads(tmp_path))
    assert str(caught.value) == (
        f"cannot fetch image {url}: localhost answered HTTP 401 Unauthorized "
        f"(localhost refused the credentials from {tmp_path / 'etc/auth.d/test.json'})"
    )
    assert srv.requests[-1].header("Authorization") == "Bearer t"


def test_bad_auth_config_names_the_file(tmp_path: Path, srv: HttpsServer) -> None:
    srv.serve("/x.aci", BODY)
    _auth_config(tmp_path, "localhost", "{not json")
    with pytest.raises(ConfigError, match=r"test\.json: not valid JSON"):
        _http(tmp_path).download(f"{srv.base('localhost')}/x.aci", _downloads(tmp_path))
    assert os.listdir(tmp_path / "tmp") == []


def test_plain_http_refused_unless_allowed(tmp_path: Path) -> None:
    with HttpsServer(tls=False) as plain:
        plain.serve("/x.aci", BODY)
        with pytest.raises(FetchError) as caught:
            _http(tmp_path).download(f"{plain.url}/x.aci", _downloads(tmp_path))
        assert str(caught.value) == (
            f"refusing to fetch image {plain.url}/x.aci over plain http; "
            "use https, or --insecure-options=http"
        )
        assert plain.requests == []
        result = _http(tmp_path, allow_http=True).download(
            f"{plain.url}/x.aci", _downloads(tmp_path)
        )
        assert result.size == len(BODY)


def test_credentials_are_not_sent_over_plain_http(tmp_path: Path) -> None:
    _auth_config(tmp_path, "127.0.0.1")
    with HttpsServer(tls=False) as plain:
        plain.serve("/x.aci", BODY)
        _http(tmp_path, allow_http=True).download(f"{plain.url}/x.aci", _downloads(tmp_path))
        assert plain.requests[0].header("Authorization") is None


def test_small_documents_are_bounded(tmp_path: Path, srv: HttpsServer) -> None:
    srv.serve("/key.gpg", b"k" * 5000)
    page = _http(tmp_path).get(f"{srv.url}/key.gpg", what="key", limit=5000)
    assert page.status == 200 and page.body == b"k" * 5000
    with pytest.raises(FetchError) as caught:
        _http(tmp_path).get(f"{srv.url}/key.gpg", what="key", limit=4096)
    assert str(caught.value) == f"cannot fetch key {srv.url}/key.gpg: larger than 4 KiB"


def test_unknown_ca_and_insecure_tls(
    tmp_path: Path, srv: HttpsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    srv.serve("/x.aci", BODY)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    with pytest.raises(FetchError, match="TLS certificate verification failed"):
        _http(tmp_path).download(f"{srv.url}/x.aci", _downloads(tmp_path))
    monkeypatch.setenv("SSL_CERT_FILE", str(srv.ca_bundle))
    assert _http(tmp_path).download(f"{srv.url}/x.aci", _downloads(tmp_path)).size == len(BODY)
    monkeypatch.delenv("SSL_CERT_FILE")
    options = _options(tmp_path, frozenset({"tls"}))
    http = session_for(options, timeout=1.0)
    assert http.download(f"{srv.url}/x.aci", _downloads(tmp_path)).size == len(BODY)
    session_for(options)  # warned once per invocation, however many sessions
    assert options.reporter.stderr.getvalue() == (  # type: ignore[attr-defined]
        "rkt: warning: TLS verification has been disabled\n"
    )


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, 0), ("max-age=60", 60), ("public, max-age=3600", 3600), ('max-age="5"', 5),
        ("no-cache, max-age=60", 0), ("no-store", 0), ("s-maxage=9", 0), ("max-age=x", 0),
    ],
)
def test_parse_max_age(header: str | None, seconds: int) -> None:
    assert parse_max_age(header) == seconds


def test_small_document_dripping_slowly_is_bounded(tmp_path: Path, srv: HttpsServer) -> None:
    def drip(handler: Any, recorded: Recorded) -> None:
        recorded.status = 200
        handler.send_response(200)
        handler.send_header("Content-Length", "50")
        handler.end_headers()
        for _ in range(50):
            try:
                handler.wfile.write(b"x")
                handler.wfile.flush()
            except OSError:
                return
            time.sleep(0.2)

    srv.serve("/page", handler=drip)
    started = time.monotonic()
    with pytest.raises(FetchError) as caught:
        _http(tmp_path, timeout=0.5, attempts=2).get(f"{srv.url}/page", what="discovery page",
                                                     limit=1000)
    assert time.monotonic() - started < 5
    assert str(caught.value) == (
        f"cannot fetch discovery page {srv.url}/page: answer not complete after 1s (2 attempts)"
    )


# -- streaming resume (docker blobs) ----------------------------------------------------
def _range_reader(srv: HttpsServer, path: str, attempts: int = 3) -> tuple[RangeReader, Any]:
    client = HttpClient(timeout=1.0)
    reader = RangeReader(lambda headers: client.request("GET", f"{srv.url}{path}", headers),
                         attempts=attempts, size=len(BODY))
    return reader, client


def _read_all(reader: RangeReader) -> bytes:
    data = bytearray()
    while chunk := reader.read(1 << 20):
        data += chunk
    return bytes(data)


@pytest.mark.parametrize("ranges", [True, False])
def test_range_reader_gives_each_byte_once_across_cuts(srv: HttpsServer, ranges: bool) -> None:
    srv.serve("/blob", BODY, ranges=ranges, cut_after=1 << 20, cut_times=1)
    reader, client = _range_reader(srv, "/blob")
    assert _read_all(reader) == BODY and not reader.overrun()
    client.close()
    # the rest is asked for; a server without Range support sends it all again, and
    # the start is skipped
    assert [r.header("Range") for r in srv.requests] == [None, f"bytes={1 << 20}-"]
    assert [r.status for r in srv.requests] == [200, 206 if ranges else 200]


def test_range_reader_gives_up_after_its_attempts(srv: HttpsServer) -> None:
    srv.serve("/blob", BODY, ranges=False, cut_after=1000, cut_times=10)
    reader, client = _range_reader(srv, "/blob", attempts=2)
    with pytest.raises(ConnectionProblem) as caught:
        _read_all(reader)
    client.close()
    assert caught.value.attempts == 2 and len(srv.requests) == 2
