"""HTTP(S) for remote images, signatures, discovery pages and keys.

One place decides, for every request rkt makes to a web server:

* **TLS**: certificates are checked against ``REQUESTS_CA_BUNDLE``, else
  ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``, else the system trust store (never a CA
  bundle shipped inside a Python package); ``--insecure-options=tls`` accepts any
  certificate, with a warning.
* **Plain http** only when the caller allows it (``--insecure-options=http``), for
  the first URL and for every redirect hop.
* **Credentials** from ``auth.d`` (``rktKind: auth``) go only to the host they are
  configured for, only over https, and are recomputed at every redirect hop, so a
  redirect to another host never carries them. Redirects are followed here, not by
  ``requests``, for that reason (at most :data:`MAX_REDIRECTS`).
* **Bounded retries**: connection failures, timeouts, cut downloads and 5xx answers
  are retried :data:`DEFAULT_ATTEMPTS` times in all, with a short backoff; every
  other status fails at once. Each read waits at most the timeout.
* **Resume**: a download cut in the middle continues with an HTTP ``Range``
  request (``If-Range`` guarded by the ETag) when the server advertised
  ``Accept-Ranges: bytes``; otherwise it starts again.

The timeout and the number of attempts can be changed with ``RKT_HTTP_TIMEOUT``
(seconds) and ``RKT_HTTP_ATTEMPTS``; tests use small values.
"""

from __future__ import annotations

import logging
import os
import re
import ssl
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

from rkt.errors import FetchError, UsageError

if TYPE_CHECKING:
    import requests

    from rkt.config import AuthEntry
    from rkt.context import Runtime
    from rkt.progress import ProgressBar

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

_warned_tls: set[int] = set()


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


class _Retry(Exception):
    """An attempt failed in a way that another attempt may fix."""


def env_timeout() -> float:
    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT
    except ValueError as exc:
        raise UsageError(f"{TIMEOUT_ENV}={raw!r}: expected a number of seconds") from exc
    return value if value > 0 else DEFAULT_TIMEOUT


def env_attempts() -> int:
    raw = os.environ.get(ATTEMPTS_ENV, "")
    try:
        value = int(raw) if raw else DEFAULT_ATTEMPTS
    except ValueError as exc:
        raise UsageError(f"{ATTEMPTS_ENV}={raw!r}: expected a whole number") from exc
    return max(1, value)


def parse_max_age(cache_control: str | None) -> int:
    """Seconds a response may be reused without asking (0 with no-cache/no-store)."""
    if not cache_control or _NO_CACHE.search(cache_control):
        return 0
    match = _MAX_AGE.search(cache_control)
    return int(match.group(1)) if match else 0


def host_of(url: str) -> str:
    return urlsplit(url).hostname or url


class HttpSession:
    """GET requests with rkt's rules for TLS, http, credentials, redirects and retries.

    ``transport`` replaces the ``requests.Session`` underneath; tests use it to route
    names such as ``example.com`` to a loopback server (the TLS and HTTP layers stay
    real). ``allow_http`` defaults to ``--insecure-options=http``.
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        allow_http: bool | None = None,
        transport: requests.Session | None = None,
        timeout: float | None = None,
        attempts: int | None = None,
    ) -> None:
        self.runtime = runtime
        self.allow_http = runtime.is_insecure("http") if allow_http is None else allow_http
        self.timeout = env_timeout() if timeout is None else timeout
        self.attempts = env_attempts() if attempts is None else max(1, attempts)
        self._transport = transport
        self._auth: dict[str, AuthEntry] | None = None

    # -- plumbing --------------------------------------------------------------------
    @property
    def transport(self) -> requests.Session:
        if self._transport is None:
            import requests

            session = requests.Session()
            # Proxies are taken from the environment per request below; netrc and
            # the CA environment variables are not requests' business here.
            session.trust_env = False
            self._transport = session
        return self._transport

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _verify(self) -> bool | str:
        if self.runtime.is_insecure("tls"):
            key = id(self.runtime)
            if key not in _warned_tls:
                _warned_tls.add(key)
                self.runtime.reporter.warn("TLS verification has been disabled")
            import urllib3

            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
            return False
        for variable in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR"):
            value = os.environ.get(variable)
            if value:
                return value
        defaults = ssl.get_default_verify_paths()
        for candidate in (defaults.cafile, defaults.capath):
            if candidate and os.path.exists(candidate):
                return candidate
        return True

    def auth_for(self, url: str) -> AuthEntry | None:
        """The ``auth.d`` entry for ``url``'s host, if it may be sent there."""
        parts = urlsplit(url)
        if parts.scheme != "https":
            return None  # never put credentials on the wire in clear text
        if self._auth is None:
            self._auth = dict(self.runtime.config.auth)
        host = (parts.hostname or "").lower()
        for candidate in (parts.netloc.lower(), host):
            entry = self._auth.get(candidate)
            if entry is not None:
                return entry
        return None

    def _check_scheme(self, url: str, first: str, what: str) -> None:
        scheme = urlsplit(url).scheme.lower()
        if scheme == "https" or (scheme == "http" and self.allow_http):
            return
        if scheme == "http":
            hop = "" if url == first else f" (redirected from {first})"
            raise FetchError(
                f"refusing to fetch {what} {url}{hop} over plain http; "
                "use https, or --insecure-options=http"
            )
        raise FetchError(f"cannot fetch {what} {url}: unsupported URL scheme {scheme!r}")

    def _send(self, url: str, headers: Mapping[str, str], what: str) -> requests.Response:
        """One GET, following redirects here so the rules apply at every hop."""
        import requests

        from rkt import __version__

        current = url
        verify = self._verify()
        for _ in range(MAX_REDIRECTS + 1):
            self._check_scheme(current, url, what)
            hop = {
                "User-Agent": f"rkt/{__version__}",
                "Accept-Encoding": "identity",
                **headers,
            }
            auth = self.auth_for(current)
            if auth is not None:
                hop.update(auth.headers())
            try:
                response = self.transport.get(
                    current, headers=hop, stream=True, allow_redirects=False,
                    timeout=(self.timeout, self.timeout), verify=verify,
                    proxies=requests.utils.get_environ_proxies(current),
                )
            except requests.exceptions.SSLError as exc:
                raise FetchError(
                    f"cannot fetch {what} {current}: TLS certificate verification failed "
                    f"({_tls_reason(exc)}; --insecure-options=tls skips it)"
                ) from exc
            except requests.exceptions.Timeout as exc:
                raise _Retry(f"no answer within {self.timeout:g}s") from exc
            except requests.exceptions.ConnectionError as exc:
                raise _Retry(reason(exc)) from exc
            except requests.exceptions.InvalidURL as exc:
                raise FetchError(f"cannot fetch {what} {current}: invalid URL") from exc
            except requests.exceptions.RequestException as exc:
                raise FetchError(f"cannot fetch {what} {current}: {reason(exc)}") from exc
            except OSError as exc:  # e.g. the CA bundle named by the environment is missing
                raise FetchError(f"cannot fetch {what} {current}: {exc}") from exc
            location = response.headers.get("Location")
            if response.status_code in _REDIRECTS and location:
                response.close()
                current = urljoin(current, location)
                continue
            return response
        raise FetchError(
            f"cannot fetch {what} {url}: more than {MAX_REDIRECTS} redirects (a redirect loop?)"
        )

    def _pause(self, attempt: int) -> None:
        time.sleep(min(RETRY_DELAY * 2 ** (attempt - 1), MAX_RETRY_DELAY))

    def status_error(
        self, what: str, url: str, status: int, reason_text: str, *,
        answered_by: str | None = None,
    ) -> FetchError:
        """The one-line error for an answer the caller cannot use.

        ``answered_by`` is the URL that gave the answer, after redirects.
        """
        message = f"cannot fetch {what} {url}: HTTP {status} {reason_text}".rstrip()
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
            message = f"cannot fetch {what} {url}: {host} answered HTTP 401 Unauthorized ({hint})"
        return FetchError(message)

    # -- small documents ---------------------------------------------------------------
    def get(self, url: str, *, what: str, limit: int) -> Page:
        """GET a small document whole, whatever its status; retries transient failures.

        Raises :class:`FetchError` when every attempt failed, or when the body is
        larger than ``limit`` bytes.
        """
        failure = ""
        for attempt in range(1, self.attempts + 1):
            try:
                response = self._send(url, {}, what)
                with response:
                    if response.status_code in RETRY_STATUSES and attempt < self.attempts:
                        failure = f"HTTP {response.status_code} {response.reason}"
                        raise _Retry(failure)
                    body = self._read_small(response, url, what, limit)
                    return Page(
                        url=response.url, status=response.status_code,
                        reason=response.reason or "", body=body,
                        headers=dict(response.headers),
                    )
            except _Retry as exc:
                failure = str(exc)
                if attempt < self.attempts:
                    LOG.debug("attempt %d at %s failed: %s", attempt, url, failure)
                    self._pause(attempt)
        raise FetchError(f"cannot fetch {what} {url}: {failure} ({self.attempts} attempts)")

    def _read_small(self, response: requests.Response, url: str, what: str, limit: int) -> bytes:
        import requests
        import urllib3

        data = bytearray()
        # Each read waits at most the timeout; a server dripping a byte at a time must
        # not stretch a small document forever either.
        deadline = time.monotonic() + SMALL_DOCUMENT_TIMEOUTS * self.timeout
        try:
            while True:
                # read1: whatever one read brings, so the deadline is checked as the
                # bytes trickle in (read() would wait for the whole amount)
                chunk = response.raw.read1(64 * 1024, decode_content=True)
                if not chunk:
                    break
                data += chunk
                if len(data) > limit:
                    raise FetchError(
                        f"cannot fetch {what} {url}: larger than {_limit_text(limit)}"
                    )
                if time.monotonic() > deadline:
                    raise _Retry(
                        f"answer not complete after {SMALL_DOCUMENT_TIMEOUTS * self.timeout:g}s"
                    )
        except (urllib3.exceptions.ReadTimeoutError, TimeoutError) as exc:
            raise _Retry(f"no data for {self.timeout:g}s") from exc
        except (urllib3.exceptions.HTTPError, requests.exceptions.RequestException,
                OSError) as exc:
            raise _Retry(f"connection lost: {reason(exc)}") from exc
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
        fd, name = tempfile.mkstemp(prefix="download-", dir=directory)
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                result, modified = self._download_into(url, out, what, etag, progress)
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

    def _download_into(
        self,
        url: str,
        out: IO[bytes],
        what: str,
        etag: str | None,
        progress: ProgressBar | None,
    ) -> tuple[Download, bool]:
        received = 0
        total: int | None = None
        validator: str | None = None
        resumable = False
        result = Download(url=url, final_url=url, path=None)
        failure = ""
        for attempt in range(1, self.attempts + 1):
            if attempt > 1:
                LOG.debug("attempt %d at %s failed: %s", attempt - 1, url, failure)
                self._pause(attempt - 1)
            headers: dict[str, str] = {}
            if received and resumable:
                headers["Range"] = f"bytes={received}-"
                if validator:
                    headers["If-Range"] = validator
            elif etag is not None:
                headers["If-None-Match"] = etag
            try:
                response = self._send(url, headers, what)
            except _Retry as exc:
                failure = str(exc)
                continue
            with response:
                status = response.status_code
                if status == 304 and "If-None-Match" in headers:
                    result.final_url = response.url
                    result.etag = response.headers.get("ETag", etag)
                    result.max_age = parse_max_age(response.headers.get("Cache-Control"))
                    return result, False
                if status == 206 and "Range" in headers:
                    start = _range_start(response.headers.get("Content-Range"))
                    if start != received:  # not the part we asked for: start over
                        failure = f"server resumed at byte {start}, not {received}"
                        received = _restart(out, progress)
                        resumable = False
                        continue
                    LOG.debug("resuming %s at byte %d", url, received)
                elif status == 200:
                    if received:
                        received = _restart(out, progress)
                    total = _content_length(response)
                    validator = _strong_etag(response.headers.get("ETag"))
                    accept = response.headers.get("Accept-Ranges", "").lower()
                    resumable = "bytes" in accept and validator is not None
                    result.etag = response.headers.get("ETag")
                    result.max_age = parse_max_age(response.headers.get("Cache-Control"))
                    if progress is not None:
                        progress.total = total
                elif status == 416:
                    failure = "server refused to resume the download (HTTP 416)"
                    received = _restart(out, progress)
                    resumable = False
                    continue
                elif status in RETRY_STATUSES:
                    failure = f"HTTP {status} {response.reason}"
                    continue
                else:
                    raise self.status_error(what, url, status, response.reason or "",
                                            answered_by=response.url)
                result.final_url = response.url
                try:
                    received = self._copy_body(response, out, received, progress)
                except _Retry as exc:
                    received = out.tell()
                    failure = f"{exc} after {_count(received)} of {_count(total)}"
                    continue
                if total is not None and received < total:
                    failure = f"connection closed after {_count(received)} of {_count(total)}"
                    continue
                if total is not None and received > total:
                    raise FetchError(
                        f"cannot fetch {what} {url}: server sent {received} bytes "
                        f"but announced {total}"
                    )
                out.flush()
                result.size = received
                return result, True
        raise FetchError(f"cannot fetch {what} {url}: {failure} ({self.attempts} attempts)")

    def _copy_body(
        self, response: requests.Response, out: IO[bytes], received: int,
        progress: ProgressBar | None,
    ) -> int:
        import requests
        import urllib3

        raw = response.raw
        try:
            while True:
                # The exact bytes the server stores: never undo a Content-Encoding,
                # the signature is over the file itself.
                chunk = raw.read(CHUNK, decode_content=False)
                if not chunk:
                    return received
                out.write(chunk)
                received += len(chunk)
                if progress is not None:
                    progress.advance(len(chunk))
        except (urllib3.exceptions.ReadTimeoutError, requests.exceptions.Timeout,
                TimeoutError) as exc:
            out.flush()
            raise _Retry(f"no data for {self.timeout:g}s") from exc
        except (urllib3.exceptions.HTTPError, requests.exceptions.RequestException,
                OSError) as exc:
            out.flush()
            raise _Retry("connection lost") from exc


def _restart(out: IO[bytes], progress: ProgressBar | None) -> int:
    out.seek(0)
    out.truncate()
    if progress is not None:
        progress.done = 0
    return 0


def _content_length(response: requests.Response) -> int | None:
    value = response.headers.get("Content-Length")
    return int(value) if value and value.isdigit() else None


def _range_start(content_range: str | None) -> int | None:
    match = _CONTENT_RANGE.match(content_range or "")
    return int(match.group(1)) if match else None


def _strong_etag(etag: str | None) -> str | None:
    # If-Range needs a strong validator (RFC 9110 13.1.5): weak ETags cannot resume.
    return etag if etag and not etag.startswith("W/") else None


def _count(size: int | None) -> str:
    return "?" if size is None else f"{size} bytes"


def _limit_text(limit: int) -> str:
    return f"{limit // 1024} KiB" if limit < 1 << 20 else f"{limit >> 20} MiB"


def _tls_reason(exc: BaseException) -> str:
    text = reason(exc)
    # "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: <why> (_ssl.c:1006)"
    found = re.search(r"certificate verify failed: (.*?)(?: \(_ssl\.c:\d+\))?$", text)
    return found.group(1) if found else text


def reason(exc: BaseException) -> str:
    """The innermost, actionable message of a requests/urllib3 error ("Connection refused")."""
    inner: BaseException = exc
    for _ in range(10):
        nested: Any = getattr(inner, "reason", None)
        if not isinstance(nested, BaseException) and inner.args:
            nested = inner.args[0] if isinstance(inner.args[0], BaseException) else None
        if not isinstance(nested, BaseException):
            break
        inner = nested
    lines = str(inner).strip().splitlines()
    message = lines[0] if lines else type(inner).__name__
    # urllib3 prefixes "<urllib3.connection.HTTPSConnection object at 0x...>: "
    message = message.split(">: ", 1)[-1]
    # "...: Failed to establish a new connection: [Errno 111] Connection refused"
    errno_text = re.search(r"\[Errno -?\d+\] ([^)\]]+)", message)
    return errno_text.group(1).strip() if errno_text else message

