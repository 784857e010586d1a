"""rkt's one HTTP client: every request to a web server or registry goes through here.

The https, name and docker fetchers, meta discovery and ``rkt trust`` use it; a
plugin that downloads something should too, so that the user's TLS, proxy and
credential settings apply to it. The rules, decided once:

* **TLS**: certificates are checked against ``REQUESTS_CA_BUNDLE``, else
  ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``, else the system trust store (never a CA
  bundle shipped inside a Python package); ``--insecure-options=tls`` accepts any
  certificate (:func:`tls_context`).
* **Plain http** only when the client allows it (``--insecure-options=http``), for
  the first URL and for every redirect hop.
* **Redirects** are followed here (at most :data:`MAX_REDIRECTS`), with the
  credentials worked out again for every hop: an ``Authorization`` header the caller
  set stays on the origin it was meant for, and ``auth.d`` credentials
  (:class:`HttpSession`) go only to the host they are configured for, only over
  https. A redirect to another host never carries them.
* **Retries**: dropped connections, timeouts and the answers in
  :data:`RETRY_STATUSES` are tried again, :data:`DEFAULT_ATTEMPTS` times in all,
  with a doubling pause (:func:`retrying`, :func:`retry_pause`); a refused
  certificate or any other status fails at once.
* **Timeouts**: each connect and each read waits at most :data:`DEFAULT_TIMEOUT`
  seconds; a small document must arrive whole within two of them.
* **Resume**: a download cut in the middle continues with a ``Range`` request
  (``If-Range`` guarded by the ETag when the file may change), else starts again.
* **Proxies** from ``https_proxy`` / ``http_proxy`` / ``no_proxy`` (either case);
  https goes through them with ``CONNECT``, so certificates are checked end to end.
* **Connections** are kept alive and pooled per ``(scheme, host, port)``; a client
  may be shared between threads.

``RKT_HTTP_TIMEOUT`` (seconds) and ``RKT_HTTP_ATTEMPTS`` change the timeout and the
number of attempts; tests use small values.

Built on :mod:`http.client`, not requests: ``python -X importtime`` gives about
0.13-0.2 s for requests against 0.035 s for :mod:`http.client` with :mod:`ssl`, and
a whole re-fetch of an unchanged docker image takes about 0.2 s. Proxy lookups
(:mod:`urllib.request`) are imported only when a proxy variable is set.

Two layers: :class:`HttpClient` sends requests and follows redirects;
:class:`HttpSession` adds ``auth.d`` credentials, bounded small documents
(:meth:`HttpSession.get`) and resumable downloads to a file
(:meth:`HttpSession.download`), with one-line :class:`~rkt.errors.FetchError`
messages.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, TypeVar
from urllib.parse import urljoin, urlsplit

from rkt.errors import FetchError, UsageError

if TYPE_CHECKING:
    import ssl
    from email.message import Message
    from pathlib import Path

    from rkt.config import AuthEntry
    from rkt.context import Runtime
    from rkt.progress import ProgressBar

__all__ = [
    "ATTEMPTS_ENV",
    "DEFAULT_ATTEMPTS",
    "DEFAULT_TIMEOUT",
    "MAX_REDIRECTS",
    "RETRY_STATUSES",
    "TIMEOUT_ENV",
    "ConnectionProblem",
    "Dial",
    "Download",
    "HttpClient",
    "HttpResponse",
    "HttpSession",
    "Page",
    "RangeReader",
    "RefusedUrl",
    "TlsProblem",
    "client_for",
    "env_attempts",
    "env_timeout",
    "host_of",
    "parse_max_age",
    "range_start",
    "resume_headers",
    "retry_pause",
    "retrying",
    "session_for",
    "tls_context",
]

LOG = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
DEFAULT_ATTEMPTS = 3
TIMEOUT_ENV = "RKT_HTTP_TIMEOUT"
ATTEMPTS_ENV = "RKT_HTTP_ATTEMPTS"
MAX_REDIRECTS = 10
#: first pause between attempts (doubled each time, at most :data:`MAX_RETRY_DELAY`)
RETRY_DELAY = 0.2
MAX_RETRY_DELAY = 2.0
#: a discovery page, signature or key must arrive whole within this many timeouts
SMALL_DOCUMENT_TIMEOUTS = 2
#: bytes per read while downloading
CHUNK = 1 << 20
#: answers worth asking again: the server may do better a moment later
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?\s*(?:,|$)", re.IGNORECASE)
_NO_CACHE = re.compile(r"(?:^|,)\s*(?:no-cache|no-store)\s*(?:,|$)", re.IGNORECASE)
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")

_T = TypeVar("_T")
#: ``(scheme, host, port)`` of a URL: the key of the connection pool
_Origin = tuple[str, str, int]
#: where to open the socket for an origin, instead of resolving its host name
Dial = Callable[[str, str, int], tuple[str, int]]
#: extra headers (credentials) for one hop of a request, from its URL
HopHeaders = Callable[[str], Mapping[str, str]]


# -- policy ------------------------------------------------------------------------------
def env_timeout() -> float:
    """Seconds a connect or a read may wait (``RKT_HTTP_TIMEOUT``, default 30)."""
    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT
    except ValueError as exc:
        raise UsageError(f"{TIMEOUT_ENV}={raw!r}: expected a number of seconds") from exc
    return value if value > 0 else DEFAULT_TIMEOUT


def env_attempts() -> int:
    """Tries of one request in all (``RKT_HTTP_ATTEMPTS``, default 3)."""
    raw = os.environ.get(ATTEMPTS_ENV, "")
    try:
        value = int(raw) if raw else DEFAULT_ATTEMPTS
    except ValueError as exc:
        raise UsageError(f"{ATTEMPTS_ENV}={raw!r}: expected a whole number") from exc
    return max(1, value)


def retry_pause(attempt: int) -> None:
    """Wait before the attempt after ``attempt`` (1-based): 0.2 s, doubling, at most 2 s."""
    time.sleep(min(RETRY_DELAY * 2 ** (attempt - 1), MAX_RETRY_DELAY))


def retrying(operation: Callable[[bool], _T], attempts: int, what: str) -> _T:
    """Run ``operation(last_attempt)`` until it returns, at most ``attempts`` times.

    A :class:`ConnectionProblem` means "try again" after :func:`retry_pause`, except
    a :class:`TlsProblem`, which no second attempt fixes. The last problem is
    raised with its ``attempts`` set. ``what`` names the request in debug lines.
    """
    for attempt in range(1, attempts + 1):
        try:
            return operation(attempt == attempts)
        except TlsProblem:
            raise
        except ConnectionProblem as exc:
            if attempt == attempts:
                exc.attempts = attempts
                raise
            LOG.debug("attempt %d of %s failed: %s", attempt, what, exc)
            retry_pause(attempt)
    raise AssertionError("attempts must be at least 1")


def tls_context(verify: bool) -> ssl.SSLContext:
    """The TLS settings of every https connection (see the module docstring)."""
    import ssl

    if not verify:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    for variable in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR"):
        value = os.environ.get(variable)
        if not value:
            continue
        try:
            if os.path.isdir(value):
                return ssl.create_default_context(capath=value)
            return ssl.create_default_context(cafile=value)
        except (OSError, ssl.SSLError) as exc:
            raise FetchError(f"cannot load the CA certificates in {value} ({variable}): "
                             f"{getattr(exc, 'strerror', None) or exc}") from exc
    return ssl.create_default_context()


def parse_max_age(cache_control: str | None) -> int:
    """Seconds a response may be reused without asking (0 with no-cache/no-store)."""
    if not cache_control or _NO_CACHE.search(cache_control):
        return 0
    match = _MAX_AGE.search(cache_control)
    return int(match.group(1)) if match else 0


def host_of(url: str) -> str:
    return urlsplit(url).hostname or url


def range_start(content_range: str | None) -> int | None:
    """The first byte of a ``206`` answer (``Content-Range: bytes 100-199/200``)."""
    match = _CONTENT_RANGE.match(content_range or "")
    return int(match.group(1)) if match else None


def resume_headers(received: int, validator: str | None = None) -> dict[str, str]:
    """The headers that ask for the rest of a resource from byte ``received`` on.

    ``validator`` (a strong ETag) makes the server send the whole resource instead
    when it changed meanwhile (``If-Range``), so that two versions are never spliced.
    """
    if not received:
        return {}
    headers = {"Range": f"bytes={received}-"}
    if validator:
        headers["If-Range"] = validator
    return headers


# -- errors ------------------------------------------------------------------------------
class ConnectionProblem(Exception):
    """The connection failed, timed out or dropped: worth another attempt.

    ``str()`` is one line. Callers turn it into a :class:`~rkt.errors.FetchError`
    that names what they were fetching.
    """

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        #: no answer (or no data) within the timeout
        self.timed_out = timed_out
        #: set by :func:`retrying` when every attempt failed
        self.attempts = 1


class TlsProblem(ConnectionProblem):
    """The TLS handshake failed: a bad certificate, or a server that speaks plain HTTP."""

    def __init__(self, message: str, *, certificate: bool, reason: str = "") -> None:
        super().__init__(message)
        #: the server's certificate was refused (as opposed to a protocol failure)
        self.certificate = certificate
        #: why, in OpenSSL's words ("unable to get local issuer certificate")
        self.reason = reason or message


class RefusedUrl(Exception):
    """A URL this client will not fetch: plain http when not allowed, another scheme,
    or a redirect loop. Not worth another attempt."""

    def __init__(self, url: str, first: str, *, plain_http: bool = False,
                 loop: bool = False) -> None:
        super().__init__(url)
        self.url = url
        #: the URL asked for, when ``url`` is a redirect hop
        self.first = first
        #: refused for being plain http
        self.plain_http = plain_http
        #: more than :data:`MAX_REDIRECTS` redirects
        self.loop = loop

    def describe(self, what: str, flag: str = "--insecure-options=http") -> str:
        """The one-line error: ``refusing to fetch image http://... over plain http; ...``.

        ``flag`` is the option that would allow plain http.
        """
        if self.loop:
            return (f"cannot fetch {what} {self.first}: more than {MAX_REDIRECTS} redirects "
                    "(a redirect loop?)")
        if self.plain_http:
            hop = "" if self.url == self.first else f" (redirected from {self.first})"
            return (f"refusing to fetch {what} {self.url}{hop} over plain http; "
                    f"use https, or {flag}")
        scheme = urlsplit(self.url).scheme
        return f"cannot fetch {what} {self.url}: unsupported URL scheme {scheme!r}"


# -- the client --------------------------------------------------------------------------
class HttpResponse:
    """A response whose body is read on demand; close it (or read it all) to reuse the
    connection. Reads raise :class:`ConnectionProblem`, also when the connection ends
    before the ``Content-Length`` announced."""

    def __init__(
        self,
        client: HttpClient,
        origin: _Origin,
        connection: http.client.HTTPConnection,
        response: http.client.HTTPResponse,
        url: str,
    ) -> None:
        self._client = client
        self._origin = origin
        self._connection: http.client.HTTPConnection | None = connection
        self._response = response
        #: the URL that answered (after redirects)
        self.url = url
        self.status = response.status
        self.reason = response.reason
        self.headers: Message = response.msg
        # bytes still due by Content-Length (None: chunked, or up to the connection's end)
        self._remaining: int | None = response.length

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        if value is None or not value.strip().isdigit():
            return None
        return int(value)

    def _account(self, count: int, asked: int) -> None:
        if self._remaining is None:
            if not count and asked:
                self.close()
            return
        self._remaining -= count
        if not count and asked and self._remaining > 0:
            announced = self.content_length or 0
            self._discard()
            raise ConnectionProblem(
                f"connection closed after {announced - self._remaining} of "
                f"{announced} bytes of a response"
            )
        if self._remaining <= 0:
            self.close()

    def _failed(self, exc: BaseException) -> ConnectionProblem:
        self._discard()
        return ConnectionProblem(_describe(exc), timed_out=_is_timeout(exc))

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes (b"" at the end), waiting for all of them."""
        try:
            data = self._response.read(size)
        except (OSError, http.client.HTTPException) as exc:
            raise self._failed(exc) from exc
        self._account(len(data), size)
        return data

    def read1(self, size: int) -> bytes:
        """Whatever one read brings, at most ``size`` bytes (b"" at the end)."""
        try:
            data = self._response.read1(size)
        except (OSError, http.client.HTTPException) as exc:
            raise self._failed(exc) from exc
        self._account(len(data), size)
        return data

    def read_limited(self, limit: int) -> bytes | None:
        """The whole body, or None when it is longer than ``limit`` bytes."""
        length = self.content_length
        if length is not None and length > limit:
            self.close()
            return None
        chunks: list[bytes] = []
        have = 0
        while chunk := self.read(min(1 << 20, limit + 1 - have)):
            chunks.append(chunk)
            have += len(chunk)
            if have > limit:
                self.close()
                return None
        return b"".join(chunks)

    def _discard(self) -> None:
        """Close the connection for good: the response was cut, it cannot be reused."""
        connection, self._connection = self._connection, None
        self._response.close()
        if connection is not None:
            connection.close()

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        # A connection is reusable only when its response was read to the end.
        if self._response.isclosed() and not self._response.will_close:
            self._client._release(self._origin, connection)
        else:
            self._response.close()
            connection.close()

    def __enter__(self) -> HttpResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class HttpClient:
    """Requests over pooled connections, following redirects; see the module docstring.

    ``dial`` is a seam for tests: it maps ``(scheme, host, port)`` to the address to
    connect to, while the ``Host`` header, the TLS server name and the certificate
    check keep the name from the URL (like ``curl --connect-to``).
    """

    def __init__(
        self,
        *,
        verify_tls: bool = True,
        allow_http: bool = False,
        timeout: float | None = None,
        dial: Dial | None = None,
    ) -> None:
        self.verify_tls = verify_tls
        self.allow_http = allow_http
        self.timeout = env_timeout() if timeout is None else timeout
        self._dial = dial
        self._context: ssl.SSLContext | None = None
        self._idle: dict[_Origin, list[http.client.HTTPConnection]] = {}
        self._proxies: dict[_Origin, tuple[str, int, str | None] | None] = {}
        self._lock = threading.Lock()

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        *,
        hop_headers: HopHeaders | None = None,
    ) -> HttpResponse:
        """Send one request, following redirects.

        The caller's ``Authorization`` header is sent only while the hops stay on the
        origin of ``url``; ``hop_headers(hop_url)`` adds headers (credentials) worked
        out for each hop. Raises :class:`ConnectionProblem` (including
        :class:`TlsProblem`) or :class:`RefusedUrl`.
        """
        from rkt import __version__

        current = url
        origin = _origin_of(url)
        sent = {"User-Agent": f"rkt/{__version__}", "Accept-Encoding": "identity",
                **(headers or {})}
        for _ in range(MAX_REDIRECTS + 1):
            self._check_scheme(current, url)
            hop = dict(sent)
            if hop_headers is not None:
                hop.update(hop_headers(current))
            response = self._send(method, current, hop)
            location = response.header("Location")
            if response.status not in _REDIRECTS or not location:
                return response
            response.close()
            current = urljoin(current, location)
            if _origin_of(current) != origin:
                # once the request has left the origin, it does not carry its token
                sent.pop("Authorization", None)
            if response.status == 303:
                method = "GET"
        raise RefusedUrl(current, url, loop=True)

    def _check_scheme(self, url: str, first: str) -> None:
        scheme = urlsplit(url).scheme.lower()
        if scheme == "https" or (scheme == "http" and self.allow_http):
            return
        raise RefusedUrl(url, first, plain_http=scheme == "http")

    def _send(self, method: str, url: str, headers: Mapping[str, str]) -> HttpResponse:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        host = parts.hostname or ""
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError as exc:
            raise ConnectionProblem(f"invalid port in {url}") from exc
        origin = (scheme, host, port)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        proxy = self._proxy(origin)
        if proxy is not None and scheme == "http":
            # Through a plain-HTTP proxy the request names the whole URL.
            path = f"http://{parts.netloc}{path}"
            if proxy[2]:
                headers = {**headers, "Proxy-Authorization": proxy[2]}
        # A pooled connection may have been closed by the server meanwhile: then
        # the request is sent once more on a fresh one (safe: only GETs are sent).
        for fresh in (False, True):
            connection = self._acquire(origin, fresh=fresh)
            reused = not fresh and connection.sock is not None
            try:
                connection.request(method, path, headers=dict(headers))
                response = connection.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                connection.close()
                if reused and not _is_timeout(exc):
                    continue  # closed by the server while idle (a reset, a TLS EOF...)
                tls = _tls_problem(exc, host, port)
                if tls is not None:
                    raise tls from exc
                raise ConnectionProblem(_describe(exc), timed_out=_is_timeout(exc)) from exc
            return HttpResponse(self, origin, connection, response, url)
        raise AssertionError("unreachable")

    def _acquire(self, origin: _Origin, *, fresh: bool) -> http.client.HTTPConnection:
        if not fresh:
            with self._lock:
                idle = self._idle.get(origin)
                if idle:
                    return idle.pop()
        scheme, host, port = origin
        proxy = self._proxy(origin)
        connection: http.client.HTTPConnection
        if scheme == "https":
            if self._context is None:
                self._context = tls_context(self.verify_tls)
            if proxy is None:
                connection = http.client.HTTPSConnection(
                    host, port, timeout=self.timeout, context=self._context
                )
            else:
                # CONNECT through the proxy; TLS (and the certificate check) is end to end.
                connection = http.client.HTTPSConnection(
                    proxy[0], proxy[1], timeout=self.timeout, context=self._context
                )
                connection.set_tunnel(
                    host, port, headers={"Proxy-Authorization": proxy[2]} if proxy[2] else None
                )
        elif proxy is not None:
            connection = http.client.HTTPConnection(proxy[0], proxy[1], timeout=self.timeout)
        else:
            connection = http.client.HTTPConnection(host, port, timeout=self.timeout)
        if self._dial is not None and proxy is None:
            target = self._dial(scheme, host, port)
            # http.client opens its socket through this attribute; replacing it moves
            # only the socket, the Host header and TLS server name stay the URL's.
            connection._create_connection = (  # type: ignore[attr-defined]
                lambda _address, *args: socket.create_connection(target, *args)
            )
        return connection

    def _proxy(self, origin: _Origin) -> tuple[str, int, str | None] | None:
        """(host, port, Proxy-Authorization) of the proxy for ``origin``, if one applies.

        ``https_proxy`` / ``http_proxy`` / ``no_proxy`` (either case), as curl, Go
        programs (rkt 1.x) and requests read them.
        """
        if origin in self._proxies:
            return self._proxies[origin]
        found: tuple[str, int, str | None] | None = None
        if any(name.lower().endswith("_proxy") for name in os.environ):
            import urllib.request
            from urllib.parse import unquote

            scheme, host, port = origin
            proxies = urllib.request.getproxies_environment()
            proxy = proxies.get(scheme)
            if proxy and not urllib.request.proxy_bypass(f"{host}:{port}"):
                parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
                authorization = None
                if parts.username:
                    import base64

                    pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
                    authorization = "Basic " + base64.b64encode(pair.encode()).decode()
                found = (parts.hostname or "", parts.port or 80, authorization)
        self._proxies[origin] = found
        return found

    def _release(self, origin: _Origin, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            self._idle.setdefault(origin, []).append(connection)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()


def _origin_of(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError)


def _tls_problem(exc: BaseException, host: str, port: int) -> TlsProblem | None:
    import ssl

    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = str(exc.verify_message)
        return TlsProblem(f"TLS certificate of {host}:{port} is not trusted: {reason}",
                          certificate=True, reason=reason)
    if isinstance(exc, ssl.SSLError):
        return TlsProblem(f"TLS handshake with {host}:{port} failed: {exc.reason}",
                          certificate=False, reason=str(exc.reason))
    return None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, http.client.IncompleteRead):
        return f"connection closed after {len(exc.partial)} bytes of a response"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "connection closed by the server"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host name ({exc.strerror})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


# -- sessions: auth.d, small documents, downloads ------------------------------------------
@dataclass(frozen=True)
class Page:
    """A small response read whole: a discovery page, a signature, a key."""

    url: str
    status: int
    reason: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Download:
    """The outcome of :meth:`HttpSession.download`."""

    #: the URL asked for, and the one that answered (after redirects)
    url: str
    final_url: str
    #: the downloaded bytes; None when the server said "not modified"
    path: Path | None
    etag: str | None = None
    #: Cache-Control max-age in seconds (0: revalidate every time)
    max_age: int = 0
    size: int = 0

    @property
    def not_modified(self) -> bool:
        return self.path is None


_warned_tls: set[int] = set()


def _verify_tls(runtime: Runtime) -> bool:
    """Whether to check certificates; with ``--insecure-options=tls`` the user is
    warned, once per ``runtime``."""
    verify_tls = not runtime.is_insecure("tls")
    if not verify_tls and id(runtime) not in _warned_tls:
        _warned_tls.add(id(runtime))
        runtime.reporter.warn("TLS verification has been disabled")
    return verify_tls


def client_for(runtime: Runtime) -> HttpClient:
    """A client with the runtime's ``--insecure-options`` (tls, http) and no
    ``auth.d`` credentials: for servers with credentials of their own (Docker
    registries and their ``dockerAuth``)."""
    return HttpClient(verify_tls=_verify_tls(runtime), allow_http=runtime.is_insecure("http"))


def session_for(
    runtime: Runtime,
    *,
    allow_http: bool | None = None,
    timeout: float | None = None,
    attempts: int | None = None,
    dial: Dial | None = None,
    http_flag: str = "--insecure-options=http",
) -> HttpSession:
    """A session with the runtime's settings: ``--insecure-options`` and ``auth.d``.

    ``allow_http`` defaults to ``--insecure-options=http``. With
    ``--insecure-options=tls`` the user is warned, once per ``runtime``.
    """
    return HttpSession(
        verify_tls=_verify_tls(runtime),
        allow_http=runtime.is_insecure("http") if allow_http is None else allow_http,
        auth=lambda: runtime.config.auth,
        timeout=timeout, attempts=attempts, dial=dial, http_flag=http_flag,
    )


class HttpSession:
    """GET requests with ``auth.d`` credentials, bounded pages and resumable downloads.

    ``auth`` gives the ``auth.d`` entries by domain; it is called on the first
    request, so that a broken ``auth.d`` file fails the fetch that needs it.
    ``http_flag`` is the option errors name for allowing plain http.

    Errors name what was fetched as ``{what} {url}`` (``image https://...``), or as
    ``shown`` where a method takes it.
    """

    def __init__(
        self,
        *,
        verify_tls: bool = True,
        allow_http: bool = False,
        auth: Callable[[], Mapping[str, AuthEntry]] | None = None,
        timeout: float | None = None,
        attempts: int | None = None,
        dial: Dial | None = None,
        http_flag: str = "--insecure-options=http",
    ) -> None:
        self.http_flag = http_flag
        self.client = HttpClient(
            verify_tls=verify_tls, allow_http=allow_http, timeout=timeout, dial=dial
        )
        self.attempts = env_attempts() if attempts is None else max(1, attempts)
        self._load_auth = auth
        self._auth: Mapping[str, AuthEntry] | None = None

    @property
    def allow_http(self) -> bool:
        return self.client.allow_http

    @property
    def timeout(self) -> float:
        return self.client.timeout

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> HttpSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- credentials -------------------------------------------------------------------
    def auth_for(self, url: str) -> AuthEntry | None:
        """The ``auth.d`` entry for ``url``'s host, if it may be sent there."""
        parts = urlsplit(url)
        if parts.scheme != "https":
            return None  # never put credentials on the wire in clear text
        if self._auth is None:
            self._auth = dict(self._load_auth()) if self._load_auth is not None else {}
        host = (parts.hostname or "").lower()
        for candidate in (parts.netloc.lower(), host):
            entry = self._auth.get(candidate)
            if entry is not None:
                return entry
        return None

    def credentials(self, url: str) -> Mapping[str, str]:
        """The headers that carry ``url``'s credentials (none for another host)."""
        entry = self.auth_for(url)
        return entry.headers() if entry is not None else {}

    def _send(
        self, url: str, headers: Mapping[str, str], what: str, shown: str | None = None
    ) -> HttpResponse:
        subject = shown or f"{what} {url}"
        try:
            return self.client.request("GET", url, headers, hop_headers=self.credentials)
        except RefusedUrl as exc:
            raise FetchError(exc.describe(what, self.http_flag)) from exc
        except TlsProblem as exc:
            if exc.certificate:
                raise FetchError(
                    f"cannot fetch {subject}: TLS certificate verification failed "
                    f"({exc.reason}; --insecure-options=tls skips it)"
                ) from exc
            raise FetchError(f"cannot fetch {subject}: {exc}") from exc
        except ConnectionProblem as exc:
            if exc.timed_out:
                raise ConnectionProblem(f"no answer within {self.timeout:g}s",
                                        timed_out=True) from exc
            raise

    def status_error(
        self, what: str, url: str, status: int, reason_text: str, *,
        answered_by: str | None = None, shown: str | None = None,
    ) -> FetchError:
        """The one-line error for an answer the caller cannot use.

        ``answered_by`` is the URL that gave the answer, after redirects.
        """
        subject = shown or f"{what} {url}"
        message = f"cannot fetch {subject}: HTTP {status} {reason_text}".rstrip()
        if status == 401:
            source = answered_by or url
            host = host_of(source)
            entry = self.auth_for(source)
            if entry is None:
                hint = f"no credentials for {host} in auth.d"
                if urlsplit(source).scheme != "https":
                    hint = "credentials are only sent over https"
            else:
                hint = f"{host} refused the credentials from {entry.source}"
            message = f"cannot fetch {subject}: {host} answered HTTP 401 Unauthorized ({hint})"
        return FetchError(message)

    def _exhausted(self, subject: str, exc: ConnectionProblem) -> FetchError:
        return FetchError(f"cannot fetch {subject}: {exc} ({exc.attempts} attempts)")

    # -- small documents ---------------------------------------------------------------
    def get(self, url: str, *, what: str, limit: int, shown: str | None = None) -> Page:
        """GET a small document whole, whatever its status; retries transient failures.

        Raises :class:`FetchError` when every attempt failed, or when the body is
        larger than ``limit`` bytes.
        """
        subject = shown or f"{what} {url}"

        def attempt(last: bool) -> Page:
            with self._send(url, {}, what, shown) as response:
                if response.status in RETRY_STATUSES and not last:
                    raise ConnectionProblem(f"HTTP {response.status} {response.reason}")
                body = self._read_small(response, subject, limit)
                return Page(
                    url=response.url, status=response.status,
                    reason=response.reason or "", body=body,
                    headers=dict(response.headers.items()),
                )

        try:
            return retrying(attempt, self.attempts, url)
        except ConnectionProblem as exc:
            raise self._exhausted(subject, exc) from exc

    def _read_small(self, response: HttpResponse, subject: str, limit: int) -> bytes:
        data = bytearray()
        # Each read waits at most the timeout; a server dripping a byte at a time must
        # not stretch a small document forever either.
        allowed = SMALL_DOCUMENT_TIMEOUTS * self.timeout
        deadline = time.monotonic() + allowed
        try:
            # read1: whatever one read brings, so the deadline is checked as the bytes
            # trickle in (read() would wait for the whole amount)
            while chunk := response.read1(64 * 1024):
                data += chunk
                if len(data) > limit:
                    raise FetchError(
                        f"cannot fetch {subject}: larger than {_limit_text(limit)}"
                    )
                if time.monotonic() > deadline:
                    raise ConnectionProblem(f"answer not complete after {allowed:g}s")
        except ConnectionProblem as exc:
            if exc.timed_out:
                raise ConnectionProblem(f"no data for {self.timeout:g}s",
                                        timed_out=True) from exc
            raise
        return bytes(data)

    # -- downloads ---------------------------------------------------------------------
    def download(
        self,
        url: str,
        directory: Path,
        *,
        what: str = "image",
        etag: str | None = None,
        progress: ProgressBar | None = None,
    ) -> Download:
        """Download ``url`` into a new file in ``directory``.

        With ``etag`` the request is conditional; a ``304 Not Modified`` answer gives
        a :class:`Download` without a path. The file is removed on any failure.
        """
        from pathlib import Path

        fd, name = tempfile.mkstemp(prefix="download-", dir=directory)
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                result, modified = _Resumable(self, url, what, out, etag, progress).run()
            if modified:
                result.path = path
            else:
                path.unlink()
            return result
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        finally:
            if progress is not None:
                progress.finish()


class _Resumable:
    """One download into ``out``, resumed with ``Range`` across attempts."""

    def __init__(
        self, session: HttpSession, url: str, what: str, out: IO[bytes],
        etag: str | None, progress: ProgressBar | None,
    ) -> None:
        self.session = session
        self.url = url
        self.what = what
        self.out = out
        self.etag = etag
        self.progress = progress
        self.received = 0
        self.total: int | None = None
        #: the strong ETag that guards a resumed request (``If-Range``)
        self.validator: str | None = None
        self.resumable = False
        self.result = Download(url=url, final_url=url, path=None)

    def run(self) -> tuple[Download, bool]:
        try:
            return retrying(self._attempt, self.session.attempts, self.url)
        except ConnectionProblem as exc:
            raise self.session._exhausted(f"{self.what} {self.url}", exc) from exc

    def _headers(self) -> dict[str, str]:
        if self.received and self.resumable:
            return resume_headers(self.received, self.validator)
        if self.etag is not None:
            return {"If-None-Match": self.etag}
        return {}

    def _restart(self) -> None:
        self.out.seek(0)
        self.out.truncate()
        self.received = 0
        if self.progress is not None:
            self.progress.done = 0

    def _attempt(self, last: bool) -> tuple[Download, bool]:
        headers = self._headers()
        result = self.result
        with self.session._send(self.url, headers, self.what) as response:
            status = response.status
            if status == 304 and "If-None-Match" in headers:
                result.final_url = response.url
                result.etag = response.header("ETag") or self.etag
                result.max_age = parse_max_age(response.header("Cache-Control"))
                return result, False
            if status == 206 and "Range" in headers:
                start = range_start(response.header("Content-Range"))
                if start != self.received:  # not the part we asked for: start over
                    self._restart()
                    self.resumable = False
                    raise ConnectionProblem(f"server resumed at byte {start}, "
                                            f"not {self.received}")
                LOG.debug("resuming %s at byte %d", self.url, self.received)
            elif status == 200:
                if self.received:
                    self._restart()
                self.total = response.content_length
                self.validator = _strong_etag(response.header("ETag"))
                accept = (response.header("Accept-Ranges") or "").lower()
                self.resumable = "bytes" in accept and self.validator is not None
                result.etag = response.header("ETag")
                result.max_age = parse_max_age(response.header("Cache-Control"))
                if self.progress is not None:
                    self.progress.total = self.total
            elif status == 416:
                self._restart()
                self.resumable = False
                raise ConnectionProblem("server refused to resume the download (HTTP 416)")
            elif status in RETRY_STATUSES:
                raise ConnectionProblem(f"HTTP {status} {response.reason}")
            else:
                raise self.session.status_error(self.what, self.url, status,
                                                response.reason or "", answered_by=response.url)
            result.final_url = response.url
            self._copy_body(response)
        total = self.total
        if total is not None and self.received < total:
            raise ConnectionProblem(
                f"connection closed after {_count(self.received)} of {_count(total)}"
            )
        if total is not None and self.received > total:
            raise FetchError(
                f"cannot fetch {self.what} {self.url}: server sent {self.received} bytes "
                f"but announced {total}"
            )
        self.out.flush()
        result.size = self.received
        return result, True

    def _copy_body(self, response: HttpResponse) -> None:
        try:
            # The exact bytes the server stores: never undo a Content-Encoding, the
            # signature is over the file itself (http.client leaves bodies as sent).
            while chunk := response.read(CHUNK):
                self.out.write(chunk)
                self.received += len(chunk)
                if self.progress is not None:
                    self.progress.advance(len(chunk))
        except ConnectionProblem as exc:
            self.out.flush()
            self.received = self.out.tell()
            lost = f"no data for {self.session.timeout:g}s" if exc.timed_out else "connection lost"
            raise ConnectionProblem(
                f"{lost} after {_count(self.received)} of {_count(self.total)}",
                timed_out=exc.timed_out,
            ) from exc


class RangeReader:
    """A resource that cannot change (a blob named by its digest), read once to its end
    across dropped connections, for a consumer that uses the bytes as they come.

    ``open(headers)`` sends the request (with :func:`resume_headers` after a drop)
    and checks the answer: it returns a ``200`` or ``206`` response, or raises. A
    ``206`` must start at the byte reached; a server that ignores ``Range`` sends
    the resource whole again, and the bytes already read are skipped. At most
    ``attempts`` openings, :func:`retry_pause` between them; then the last
    :class:`ConnectionProblem` is raised with its ``attempts`` set. ``size`` is the
    length expected, so that a clean but early end counts as a drop.
    """

    def __init__(
        self, open: Callable[[Mapping[str, str]], HttpResponse], *, attempts: int,
        size: int | None = None,
    ) -> None:
        self._open_response = open
        self.attempts = attempts
        self.size = size
        #: bytes handed to the consumer so far
        self.received = 0
        self._opened = 0
        self._response: HttpResponse | None = None
        self._problem: ConnectionProblem | None = None

    def _open(self) -> HttpResponse:
        while True:
            if self._opened == self.attempts:
                problem = self._problem or ConnectionProblem("no answer")
                problem.attempts = self.attempts
                raise problem
            if self._opened:
                LOG.debug("reopening at byte %d: %s", self.received, self._problem)
                retry_pause(self._opened)
            self._opened += 1
            headers = resume_headers(self.received)
            try:
                response = self._open_response(headers)
                if response.status == 206:
                    start = range_start(response.header("Content-Range"))
                    if start != self.received:
                        response.close()
                        raise ConnectionProblem(
                            f"the server resumed at byte {start}, not {self.received}"
                        )
                else:
                    self._skip(response, self.received)
            except ConnectionProblem as exc:
                self._problem = exc
                continue
            return response

    @staticmethod
    def _skip(response: HttpResponse, count: int) -> None:
        while count:
            dropped = response.read(min(count, CHUNK))
            if not dropped:
                raise ConnectionProblem("connection closed while resending")
            count -= len(dropped)

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes; b"" only at the real end (``size`` bytes, if known)."""
        while True:
            if self.size is not None and self.received >= self.size:
                return b""
            if self._response is None:
                self._response = self._open()
            want = size if self.size is None else min(size, self.size - self.received)
            try:
                data = self._response.read(want)
            except ConnectionProblem as exc:
                self._problem = exc
                self._response = None
                continue
            if not data and self.size is not None:
                self._problem = ConnectionProblem(
                    f"connection closed after {self.received} of {self.size} bytes"
                )
                self.close()
                continue
            self.received += len(data)
            return data

    def overrun(self) -> bool:
        """Whether the server has more than ``size`` bytes: read after the end."""
        if self._response is None:
            return False
        try:
            return bool(self._response.read(1))
        except ConnectionProblem:
            return False  # every byte promised has arrived

    def close(self) -> None:
        response, self._response = self._response, None
        if response is not None:
            response.close()


def _strong_etag(etag: str | None) -> str | None:
    # If-Range needs a strong validator (RFC 9110 13.1.5): weak ETags cannot resume.
    return etag if etag and not etag.startswith("W/") else None


def _count(size: int | None) -> str:
    return "?" if size is None else f"{size} bytes"


def _limit_text(limit: int) -> str:
    return f"{limit // 1024} KiB" if limit < 1 << 20 else f"{limit >> 20} MiB"
