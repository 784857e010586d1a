"""A real HTTPS server on loopback, with a throw-away CA, for tests and benchmarks.

It serves what a test registers (discovery pages, ACIs, signatures, keys) and can
misbehave on purpose: redirects, credentials, ETags and ``304``, ``Range``
requests, answers cut in the middle, slow answers, arbitrary statuses. Every
request is recorded (method, host, path, headers, status) so a test can assert
what rkt asked for and what it sent.

The certificate comes from a `trustme <https://trustme.readthedocs.io>`_ CA;
point the ``rkt`` process at :attr:`HttpsServer.ca_bundle` with :meth:`env`.
Names that appc discovery must resolve (``localhost/hello``) need the server on
port 443 of ``127.0.0.1``; :meth:`HttpsServer.start` then holds a lock file, so
that test runs sharing a machine take turns instead of failing to bind.

This module must not import pytest: benchmark scripts use it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import http.server
import os
import re
import shutil
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

#: where the lock for a fixed port lives (one file per port)
LOCK_DIR = Path(tempfile.gettempdir())
#: how long :meth:`HttpsServer.start` waits for a fixed port held by another test run
PORT_WAIT = 240.0
_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


@dataclass
class Recorded:
    """One request as the server saw it."""

    method: str
    host: str
    path: str
    query: str
    headers: dict[str, str]
    status: int = 0

    def header(self, name: str) -> str | None:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None


@dataclass
class Route:
    """What the server answers for one path (and optionally one host)."""

    body: bytes | Path = b""
    status: int = 200
    content_type: str = "application/octet-stream"
    headers: dict[str, str] = field(default_factory=dict)
    #: send an ETag and answer If-None-Match with 304
    etag: bool = True
    #: honour Range requests (and advertise Accept-Ranges)
    ranges: bool = True
    #: the exact Authorization header required, if any
    authorization: str | None = None
    #: cut the connection after this many body bytes, for the next ``cut_times`` answers
    cut_after: int | None = None
    cut_times: int = 0
    #: seconds to wait before answering
    delay: float = 0.0
    #: a function answering instead: (handler, recorded) -> None
    handler: Callable[[_Handler, Recorded], None] | None = None
    #: filled in by the server
    etag_value: str | None = None

    def size(self) -> int:
        return self.body.stat().st_size if isinstance(self.body, Path) else len(self.body)


class HttpsServer:
    """A threaded HTTPS (or plain HTTP) server; use as a context manager.

    ``hostnames`` are put in the certificate besides ``host`` itself. With
    ``port=0`` the kernel picks a free port; :attr:`url` is the base URL
    (without ``:443`` on the default port, so it matches appc names).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: bool = True,
        hostnames: Iterable[str] = ("localhost",),
        ca: Any | None = None,
        workdir: Path | None = None,
    ) -> None:
        self.host = host
        self.requested_port = port
        self.tls = tls
        self.hostnames = [host, *hostnames]
        self._ca = ca
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(
            tempfile.mkdtemp(prefix="rkt-https-")
        )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.routes: dict[tuple[str | None, str], Route] = {}
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port_lock: int | None = None
        self.ca_bundle = self.workdir / "ca.pem"

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> HttpsServer:
        context: ssl.SSLContext | None = None
        if self.tls:
            import trustme

            if self._ca is None:
                self._ca = trustme.CA()
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._ca.issue_cert(*dict.fromkeys(self.hostnames)).configure_cert(context)
            self._ca.cert_pem.write_to_path(str(self.ca_bundle))
        if self.requested_port:
            self._port_lock = _lock_port(self.host, self.requested_port)
        server = _Server((self.host, self.requested_port), _Handler, self)
        if context is not None:
            # The handshake runs in the request thread: a stalled client never
            # blocks the accept loop.
            server.socket = context.wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False
            )
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True,
                                        kwargs={"poll_interval": 0.1})
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self._port_lock is not None:
            os.close(self._port_lock)
            self._port_lock = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> HttpsServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def ca(self) -> Any:
        """The ``trustme.CA`` behind the certificate (share it with another server)."""
        return self._ca

    # -- addresses ---------------------------------------------------------------------
    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return int(self._server.server_address[1])

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    def base(self, host: str | None = None) -> str:
        """``https://HOST[:PORT]``, the port omitted when it is the scheme's default."""
        name = host or self.host
        default = 443 if self.tls else 80
        return f"{self.scheme}://{name}" + ("" if self.port == default else f":{self.port}")

    @property
    def url(self) -> str:
        return self.base()

    def env(self) -> dict[str, str]:
        """Environment for a client process that must trust this server's CA."""
        return {"REQUESTS_CA_BUNDLE": str(self.ca_bundle), "SSL_CERT_FILE": str(self.ca_bundle)}

    # -- what to serve -----------------------------------------------------------------
    def serve(self, path: str, body: bytes | str | Path = b"", *, host: str | None = None,
              **options: Any) -> Route:
        """Answer GET ``path`` (query ignored) with ``body``; options are :class:`Route`'s."""
        data = body.encode() if isinstance(body, str) else body
        route = Route(body=data, **options)
        if route.etag:
            route.etag_value = _etag_of(data)
        with self._lock:
            self.routes[(host, path)] = route
        return route

    def redirect(self, path: str, location: str, *, status: int = 302,
                 host: str | None = None) -> Route:
        return self.serve(path, b"", host=host, status=status, etag=False,
                          headers={"Location": location})

    def remove(self, path: str, *, host: str | None = None) -> None:
        with self._lock:
            self.routes.pop((host, path), None)

    def requests_for(self, path: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def clear_log(self) -> None:
        with self._lock:
            self.requests.clear()

    def _route(self, host: str, path: str) -> Route | None:
        with self._lock:
            return self.routes.get((host, path)) or self.routes.get((None, path))

    def _record(self, recorded: Recorded) -> None:
        with self._lock:
            self.requests.append(recorded)


def _etag_of(body: bytes | Path) -> str:
    if isinstance(body, Path):
        info = body.stat()
        seed = f"{body}:{info.st_size}:{info.st_mtime_ns}".encode()
    else:
        seed = body
    return '"' + hashlib.sha256(seed).hexdigest()[:24] + '"'


def _lock_port(host: str, port: int) -> int:
    """Hold a lock for ``host:port`` so concurrent test runs take turns."""
    path = LOCK_DIR / f"rkt-test-server-{host}-{port}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    deadline = time.monotonic() + PORT_WAIT
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise RuntimeError(f"{host}:{port} stayed busy for {PORT_WAIT:g}s") from None
            time.sleep(0.2)
            continue
        break
    # The lock says no other test run holds the port; wait briefly for a straggler.
    probe_deadline = time.monotonic() + 10
    while True:
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
            return fd
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or time.monotonic() > probe_deadline:
                os.close(fd)
                raise
            time.sleep(0.2)
        finally:
            probe.close()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type[_Handler],
                 owner: HttpsServer) -> None:
        self.owner = owner
        super().__init__(address, handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    #: idle keep-alive connections are dropped after this long
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:
        del format, args

    def setup(self) -> None:
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            try:
                self.connection.do_handshake()
            except (ssl.SSLError, OSError):
                self.close_connection = True
                raise

    def handle(self) -> None:
        # The client went away or refused our certificate: its business.
        with contextlib.suppress(ssl.SSLError, ConnectionError, TimeoutError):
            super().handle()

    def do_GET(self) -> None:
        owner = self.server.owner
        parts = urlsplit(self.path)
        host = (self.headers.get("Host") or "").split(":")[0]
        recorded = Recorded("GET", host, parts.path, parts.query, dict(self.headers.items()))
        owner._record(recorded)
        route = owner._route(host, parts.path)
        if route is None:
            self.reply(recorded, 404, b"not found\n", content_type="text/plain")
            return
        if route.delay:
            time.sleep(route.delay)
        if route.handler is not None:
            route.handler(self, recorded)
            return
        if route.authorization is not None and (
            self.headers.get("Authorization") != route.authorization
        ):
            self.reply(recorded, 401, b"unauthorized\n", content_type="text/plain",
                       headers={"WWW-Authenticate": 'Basic realm="rkt-test"'})
            return
        self.serve_route(route, recorded)

    def reply(self, recorded: Recorded, status: int, body: bytes = b"", *,
              content_type: str = "text/plain", headers: Mapping[str, str] | None = None) -> None:
        recorded.status = status
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def serve_route(self, route: Route, recorded: Recorded) -> None:
        headers = dict(route.headers)
        if route.etag_value:
            headers["ETag"] = route.etag_value
            if self.headers.get("If-None-Match") == route.etag_value and route.status == 200:
                recorded.status = 304
                self.send_response(304)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                return
        size = route.size()
        start, status = 0, route.status
        wanted = _RANGE.match(self.headers.get("Range", ""))
        if route.ranges and route.status == 200:
            headers["Accept-Ranges"] = "bytes"
            if_range = self.headers.get("If-Range")
            if wanted and (if_range is None or if_range == route.etag_value):
                start = int(wanted.group(1))
                if start >= size:
                    headers["Content-Range"] = f"bytes */{size}"
                    self.reply(recorded, 416, b"", headers=headers)
                    return
                status = 206
                headers["Content-Range"] = f"bytes {start}-{size - 1}/{size}"
        recorded.status = status
        self.send_response(status)
        self.send_header("Content-Type", route.content_type)
        self.send_header("Content-Length", str(size - start))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        limit: int | None = None
        with self.server.owner._lock:
            if route.cut_after is not None and route.cut_times > 0:
                route.cut_times -= 1
                limit = route.cut_after
        self._send_body(route.body, start, limit)

    def _send_body(self, body: bytes | Path, start: int, limit: int | None) -> None:
        sent = 0
        chunk_size = 1 << 20
        if isinstance(body, Path):
            with open(body, "rb") as source:
                source.seek(start)
                while True:
                    want = chunk_size if limit is None else min(chunk_size, limit - sent)
                    chunk = source.read(want) if want > 0 else b""
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    sent += len(chunk)
        else:
            view = memoryview(body)[start:]
            if limit is not None:
                view = view[:limit]
            self.wfile.write(view)
            sent = len(view)
        if limit is not None:
            self.wfile.flush()
            self.close_connection = True
            # The client sees the connection end before Content-Length bytes arrived.
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)


def loopback_dial(servers: Mapping[str, HttpsServer]) -> Callable[[str, str, int], tuple[str, int]]:
    """A ``dial`` for :class:`rkt.http.HttpClient` that sends the given hosts to loopback servers.

    ``servers`` maps a host name (``example.com``, or ``http://example.com`` for one
    scheme only) to the server that plays it; any other host is refused. Only the
    socket moves: the ``Host`` header, the TLS server name and the URLs stay the
    names asked for. A seam for in-process tests of names that cannot resolve here;
    TLS and HTTP stay real. Pass it as ``session_for(..., dial=loopback_dial(...))``.
    """

    def dial(scheme: str, host: str, port: int) -> tuple[str, int]:
        del port
        server = servers.get(f"{scheme}://{host}") or servers.get(host)
        if server is not None and server.scheme == scheme:
            return ("127.0.0.1", server.port)
        return ("127.0.0.1", 9)  # nothing listens: refused

    return dial
