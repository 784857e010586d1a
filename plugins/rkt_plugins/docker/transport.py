"""A small HTTP/1.1 client for registries: kept-alive connections, redirects, TLS.

Built on :mod:`http.client` rather than requests/urllib3 because a re-fetch of an
unchanged image is one manifest request, and importing requests costs more than
that request takes on a LAN. The client is safe to share between the layer
download threads: idle connections are pooled per ``(scheme, host, port)``.

TLS and limits follow the rest of rkt (``rkt_plugins.http_session``): certificates are
checked against ``REQUESTS_CA_BUNDLE``, else ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``, else
the system store; ``--insecure-options=tls`` turns checking off. ``RKT_HTTP_TIMEOUT``
(seconds per connect or read) and ``RKT_HTTP_ATTEMPTS`` (tries of a request) apply.
Redirects keep the ``Authorization`` header only on the same host, since registries
redirect blob downloads to storage that must not see the registry's credentials.
Proxies come from ``https_proxy`` / ``http_proxy`` / ``no_proxy``; https goes through
them with ``CONNECT``, so certificates are still checked end to end.
"""

from __future__ import annotations

import http.client
import logging
import os
import socket
import ssl
import threading
from collections.abc import Mapping
from email.message import Message
from urllib.parse import urljoin, urlsplit

from rkt.errors import FetchError
from rkt_plugins.http_session import env_timeout  # the same knobs as every download

LOG = logging.getLogger(__name__)

MAX_REDIRECTS = 5
USER_AGENT = "rkt-python (docker fetcher)"
_REDIRECTS = (301, 302, 303, 307, 308)


class ConnectionProblem(Exception):
    """The connection failed or dropped (worth a retry); ``str()`` is one line."""


class TlsProblem(ConnectionProblem):
    """The TLS handshake failed: a bad certificate, or a server that speaks plain HTTP."""

    def __init__(self, message: str, *, certificate: bool) -> None:
        super().__init__(message)
        #: the server's certificate was refused (as opposed to a protocol failure)
        self.certificate = certificate


def tls_context(verify: bool) -> ssl.SSLContext:
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


class HttpResponse:
    """A response whose body is read on demand; close it (or read it all) to reuse the
    connection."""

    def __init__(
        self,
        client: HttpClient,
        key: tuple[str, str, int],
        connection: http.client.HTTPConnection,
        response: http.client.HTTPResponse,
        url: str,
    ) -> None:
        self._client = client
        self._key = key
        self._connection: http.client.HTTPConnection | None = connection
        self._response = response
        self.url = url
        self.status = response.status
        self.reason = response.reason
        self.headers: Message = response.msg

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        if value is None or not value.strip().isdigit():
            return None
        return int(value)

    def read(self, size: int) -> bytes:
        try:
            data = self._response.read(size)
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise ConnectionProblem(_describe(exc)) from exc
        if not data:
            self.close()
        return data

    def readinto(self, buffer: memoryview) -> int:
        try:
            count = self._response.readinto(buffer)
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise ConnectionProblem(_describe(exc)) from exc
        if not count:
            self.close()
        return count

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

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        # A connection is reusable only when its response was read to the end.
        if self._response.isclosed() and not self._response.will_close:
            self._client._release(self._key, connection)
        else:
            self._response.close()
            connection.close()

    def __enter__(self) -> HttpResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class HttpClient:
    """Requests over pooled connections; see the module docstring."""

    def __init__(self, *, verify_tls: bool = True, timeout: float | None = None) -> None:
        self.verify_tls = verify_tls
        self.timeout = env_timeout() if timeout is None else timeout
        self._context: ssl.SSLContext | None = None
        self._idle: dict[tuple[str, str, int], list[http.client.HTTPConnection]] = {}
        self._proxies: dict[tuple[str, str, int], tuple[str, int, str | None] | None] = {}
        self._lock = threading.Lock()

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        *,
        allow_downgrade: bool = False,
    ) -> HttpResponse:
        """Send one request, following redirects; raises ConnectionProblem.

        A redirect from https to http is refused unless ``allow_downgrade``.
        """
        current = url
        sent = dict(headers or {})
        sent.setdefault("User-Agent", USER_AGENT)
        for _ in range(MAX_REDIRECTS + 1):
            response = self._send(method, current, sent)
            location = response.header("Location")
            if response.status not in _REDIRECTS or not location:
                return response
            response.close()
            target = urljoin(current, location)
            old, new = urlsplit(current), urlsplit(target)
            if new.scheme not in ("http", "https"):
                raise ConnectionProblem(f"redirect from {current} to unsupported {target}")
            if old.scheme == "https" and new.scheme == "http" and not allow_downgrade:
                raise ConnectionProblem(f"refusing redirect from {current} to plain-HTTP {target}")
            if (old.scheme, old.netloc) != (new.scheme, new.netloc):
                sent.pop("Authorization", None)
            if response.status == 303:
                method = "GET"
            current = target
        raise ConnectionProblem(f"too many redirects from {url}")

    def _send(self, method: str, url: str, headers: Mapping[str, str]) -> HttpResponse:
        parts = urlsplit(url)
        scheme = parts.scheme
        host = parts.hostname or ""
        port = parts.port or (443 if scheme == "https" else 80)
        key = (scheme, host, port)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        proxy = self._proxy(key)
        if proxy is not None and scheme == "http":
            # Through a plain-HTTP proxy the request names the whole URL.
            path = f"http://{parts.netloc}{path}"
            if proxy[2]:
                headers = {**headers, "Proxy-Authorization": proxy[2]}
        # A pooled connection may have been closed by the server meanwhile: then
        # the request is sent once more on a fresh one (safe: only GETs are sent).
        for fresh in (False, True):
            connection = self._acquire(key, fresh=fresh)
            reused = not fresh and connection.sock is not None
            try:
                connection.request(method, path, headers=dict(headers))
                response = connection.getresponse()
            except ssl.SSLCertVerificationError as exc:
                connection.close()
                raise TlsProblem(
                    f"TLS certificate of {host}:{port} is not trusted: {exc.verify_message}",
                    certificate=True,
                ) from exc
            except ssl.SSLError as exc:
                connection.close()
                raise TlsProblem(
                    f"TLS handshake with {host}:{port} failed: {exc.reason}", certificate=False
                ) from exc
            except (OSError, http.client.HTTPException) as exc:
                connection.close()
                if reused and isinstance(
                    exc, (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)
                ):
                    continue
                raise ConnectionProblem(f"{host}:{port}: {_describe(exc)}") from exc
            return HttpResponse(self, key, connection, response, url)
        raise AssertionError("unreachable")

    def _acquire(self, key: tuple[str, str, int], *, fresh: bool) -> http.client.HTTPConnection:
        if not fresh:
            with self._lock:
                idle = self._idle.get(key)
                if idle:
                    return idle.pop()
        scheme, host, port = key
        proxy = self._proxy(key)
        if scheme == "https":
            if self._context is None:
                self._context = tls_context(self.verify_tls)
            if proxy is None:
                return http.client.HTTPSConnection(
                    host, port, timeout=self.timeout, context=self._context
                )
            # CONNECT through the proxy; TLS (and the certificate check) is end to end.
            tunnelled = http.client.HTTPSConnection(
                proxy[0], proxy[1], timeout=self.timeout, context=self._context
            )
            tunnelled.set_tunnel(
                host, port, headers={"Proxy-Authorization": proxy[2]} if proxy[2] else None
            )
            return tunnelled
        if proxy is not None:
            return http.client.HTTPConnection(proxy[0], proxy[1], timeout=self.timeout)
        return http.client.HTTPConnection(host, port, timeout=self.timeout)

    def _proxy(self, key: tuple[str, str, int]) -> tuple[str, int, str | None] | None:
        """(host, port, Proxy-Authorization) of the proxy for ``key``, if one applies.

        ``https_proxy`` / ``http_proxy`` / ``no_proxy`` (either case), as curl, Go
        programs (rkt 1.x) and requests read them.
        """
        if key in self._proxies:
            return self._proxies[key]
        found: tuple[str, int, str | None] | None = None
        if any(name.lower().endswith("_proxy") for name in os.environ):
            import urllib.request
            from urllib.parse import unquote

            scheme, host, port = key
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
        self._proxies[key] = found
        return found

    def _release(self, key: tuple[str, str, int], connection: http.client.HTTPConnection) -> None:
        with self._lock:
            self._idle.setdefault(key, []).append(connection)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, http.client.IncompleteRead):
        return f"connection closed after {len(exc.partial)} bytes of a response"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "connection closed by the server"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host name ({exc.strerror})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower() if exc.strerror[:1].isupper() else exc.strerror
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
