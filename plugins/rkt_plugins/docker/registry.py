"""A client for the Docker Registry HTTP API v2 and the OCI distribution spec.

Pulling needs three requests: ``GET /v2/`` (is this a registry, which scheme, which
authentication), ``GET /v2/<name>/manifests/<reference>`` and
``GET /v2/<name>/blobs/<digest>``. Authentication follows the challenge in
``WWW-Authenticate``: ``Basic`` sends the ``dockerAuth`` credentials; ``Bearer``
asks the named token service (with those credentials, if any) for a token scoped to
``repository:<name>:pull`` (the Docker token specification).

Everything received is bounded and verified: manifests and configs have size
limits, every blob is hashed while it streams and compared with its digest, and a
blob longer than its descriptor says is cut off. Dropped connections are retried a
bounded number of times; a blob download resumes where it stopped (``Range``).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import BinaryIO

from rkt.api import FetchError, HttpClient, ImageError
from rkt.http import (
    RETRY_STATUSES,
    ConnectionProblem,
    HttpResponse,
    RangeReader,
    RefusedUrl,
    TlsProblem,
    env_attempts,
    retrying,
)
from rkt_plugins.docker.documents import ACCEPTED_MANIFESTS, Descriptor, digest_of, media_type_of

LOG = logging.getLogger(__name__)

MAX_MANIFEST_SIZE = 4 << 20
MAX_CONFIG_SIZE = 8 << 20
MAX_TOKEN_RESPONSE = 1 << 20
MAX_ERROR_BODY = 64 << 10
_READ_SIZE = 1 << 20


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str
    #: the auth.d file they came from, for error messages
    source: str


@dataclass(frozen=True)
class ManifestDocument:
    data: bytes
    media_type: str
    digest: str


@dataclass(frozen=True)
class _Challenge:
    scheme: str  # "basic" or "bearer"
    params: dict[str, str]


def parse_challenge(header: str) -> _Challenge | None:
    """The first challenge of ``WWW-Authenticate`` (``Bearer realm="...",service="..."``)."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    pos = 0
    while pos < len(rest):
        while pos < len(rest) and rest[pos] in " ,":
            pos += 1
        eq = rest.find("=", pos)
        if eq < 0:
            break
        key = rest[pos:eq].strip().lower()
        pos = eq + 1
        if pos < len(rest) and rest[pos] == '"':
            end = pos + 1
            value = []
            while end < len(rest) and rest[end] != '"':
                if rest[end] == "\\" and end + 1 < len(rest):
                    end += 1
                value.append(rest[end])
                end += 1
            params[key] = "".join(value)
            pos = end + 1
        else:
            end = rest.find(",", pos)
            end = len(rest) if end < 0 else end
            params[key] = rest[pos:end].strip()
            pos = end
    if scheme.lower() not in ("basic", "bearer"):
        return None
    return _Challenge(scheme.lower(), params)


def _error_detail(response: HttpResponse) -> str:
    """The registry's own words from an error body (``{"errors": [{"message": ...}]}``)."""
    try:
        body = response.read_limited(MAX_ERROR_BODY) or b""
        document = json.loads(body)
        messages = [
            str(error.get("message") or error.get("code"))
            for error in document.get("errors", [])
            if isinstance(error, dict)
        ]
        text = "; ".join(m for m in messages if m)
    except (ConnectionProblem, ValueError, AttributeError, TypeError):
        text = ""
    finally:
        response.close()
    return " ".join(text.split())[:300]


class RegistryClient:
    """Pulls from one registry; thread-safe once :meth:`connect` has run."""

    def __init__(
        self,
        registry: str,
        http: HttpClient,
        *,
        credentials: Credentials | None = None,
        allow_http: bool = False,
    ) -> None:
        self.registry = registry
        self.http = http
        self.credentials = credentials
        self.allow_http = allow_http
        self.base = f"https://{registry}"
        self.attempts = env_attempts()
        self._authorization: dict[str, str] = {}  # repository -> Authorization header

    # -- connecting and authenticating -------------------------------------------------
    def connect(self, repository: str) -> None:
        """Ping ``/v2/``, choosing https (or http when allowed) and authenticating."""
        try:
            response = self._get(f"{self.base}/v2/", {})
        except TlsProblem as exc:
            if exc.certificate or not self.allow_http:
                hint = (
                    " (try --insecure-options=tls)" if exc.certificate
                    else " (a plain-HTTP registry needs --insecure-options=http)"
                )
                raise FetchError(
                    f"cannot connect to registry {self.registry} over https: {exc}{hint}"
                ) from exc
            LOG.debug("https to %s failed (%s); trying http", self.registry, exc)
            self.base = f"http://{self.registry}"
            try:
                response = self._get(f"{self.base}/v2/", {})
            except ConnectionProblem as http_exc:
                raise FetchError(
                    f"cannot connect to registry {self.registry}: {http_exc}"
                ) from http_exc
        except ConnectionProblem as exc:
            hint = (
                "" if self.allow_http
                else " (a plain-HTTP registry needs --insecure-options=http)"
            )
            raise FetchError(
                f"cannot connect to registry {self.registry}: {exc}{hint}"
            ) from exc
        with response:
            if response.status == 401:
                self._authenticate(response, repository)
                return
            if response.status == 404:
                raise FetchError(
                    f"{self.registry} is not a Docker registry (no /v2/ API: 404 Not Found)"
                )
            if response.status != 200:
                raise FetchError(
                    f"registry {self.registry} answered /v2/ with {response.status} "
                    f"{response.reason}"
                )
            response.read_limited(MAX_ERROR_BODY)

    def _authenticate(self, response: HttpResponse, repository: str) -> None:
        challenge = parse_challenge(response.header("WWW-Authenticate") or "")
        if challenge is None:
            raise FetchError(
                f"registry {self.registry} requires an authentication scheme rkt does not "
                f"support: {(response.header('WWW-Authenticate') or 'none given')[:100]}"
            )
        if challenge.scheme == "basic":
            if self.credentials is None:
                raise self._needs_credentials()
            pair = f"{self.credentials.user}:{self.credentials.password}".encode()
            self._authorization[repository] = "Basic " + base64.b64encode(pair).decode()
            return
        self._authorization[repository] = "Bearer " + self._token(challenge, repository)

    def _token(self, challenge: _Challenge, repository: str) -> str:
        realm = challenge.params.get("realm", "")
        realm_url = urllib.parse.urlsplit(realm)
        if realm_url.scheme not in ("https", "http") or not realm_url.netloc:
            raise FetchError(f"registry {self.registry} names an invalid token service {realm!r}")
        if realm_url.scheme == "http" and not self.allow_http:
            raise FetchError(
                f"registry {self.registry} names a plain-HTTP token service {realm} "
                "(allow it with --insecure-options=http)"
            )
        query = [("scope", f"repository:{repository}:pull")]
        if "service" in challenge.params:
            query.insert(0, ("service", challenge.params["service"]))
        headers: dict[str, str] = {}
        if self.credentials is not None:
            query.append(("account", self.credentials.user))
            pair = f"{self.credentials.user}:{self.credentials.password}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        separator = "&" if realm_url.query else "?"
        url = realm + separator + urllib.parse.urlencode(query)
        try:
            response = self._get(url, headers)
        except ConnectionProblem as exc:
            raise FetchError(
                f"cannot get a token for registry {self.registry} from {realm}: {exc}"
            ) from exc
        with response:
            if response.status in (401, 403):
                if self.credentials is None:
                    raise self._needs_credentials()
                raise self._bad_credentials(response.status, response.reason)
            if response.status != 200:
                raise FetchError(
                    f"token service {realm} of registry {self.registry} answered "
                    f"{response.status} {response.reason}"
                )
            body = response.read_limited(MAX_TOKEN_RESPONSE)
        try:
            document = json.loads(body or b"")
            token = document.get("token") or document.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token or any(c in token for c in "\r\n"):
            raise FetchError(f"token service {realm} of registry {self.registry} sent no token")
        return token

    def _needs_credentials(self) -> FetchError:
        return FetchError(
            f"registry {self.registry} requires authentication (401 Unauthorized); "
            "add its credentials to a dockerAuth file in auth.d"
        )

    def _bad_credentials(self, status: int, reason: str) -> FetchError:
        assert self.credentials is not None
        return FetchError(
            f'registry {self.registry} rejected the credentials of user '
            f'"{self.credentials.user}" ({status} {reason}; from {self.credentials.source})'
        )

    # -- requests --------------------------------------------------------------------------
    def _get(self, url: str, headers: dict[str, str]) -> HttpResponse:
        """GET with rkt's retries (:func:`rkt.http.retrying`): dropped connections,
        timeouts and busy answers are tried again; the last answer is returned."""

        def attempt(last: bool) -> HttpResponse:
            response = self.http.request("GET", url, headers)
            if response.status in RETRY_STATUSES and not last:
                response.close()
                raise ConnectionProblem(f"HTTP {response.status} {response.reason}")
            return response

        try:
            return retrying(attempt, self.attempts, url)
        except RefusedUrl as exc:
            raise FetchError(
                f"registry {self.registry}: {exc.describe('registry data')}"
            ) from exc

    def _repository_get(
        self, repository: str, path: str, headers: dict[str, str]
    ) -> HttpResponse:
        url = f"{self.base}/v2/{repository}/{path}"
        sent = dict(headers)
        authorization = self._authorization.get(repository)
        if authorization:
            sent["Authorization"] = authorization
        try:
            response = self._get(url, sent)
        except ConnectionProblem as exc:
            raise FetchError(f"cannot reach registry {self.registry}: {exc}") from exc
        if response.status == 401:
            if authorization is None or authorization.startswith("Bearer"):
                # A token can expire during a long pull, and the scope may need a
                # new token: one fresh challenge is answered, never more.
                self._authenticate(response, repository)
                response.close()
                sent["Authorization"] = self._authorization[repository]
                try:
                    response = self._get(url, sent)
                except ConnectionProblem as exc:
                    raise FetchError(f"cannot reach registry {self.registry}: {exc}") from exc
            if response.status == 401:
                response.close()
                if self.credentials is None:
                    raise self._needs_credentials()
                raise self._bad_credentials(401, response.reason)
        return response

    def manifest(self, repository: str, reference: str, shown: str) -> ManifestDocument:
        """The manifest (or index) ``reference`` of ``repository``; ``shown`` names it."""
        response = self._repository_get(
            repository, f"manifests/{reference}", {"Accept": ", ".join(ACCEPTED_MANIFESTS)}
        )
        with response:
            if response.status == 404:
                detail = _error_detail(response)
                raise FetchError(
                    f'docker image "{shown}" not found on registry {self.registry} '
                    f"(404{': ' + detail if detail else ''})"
                )
            if response.status == 403:
                raise FetchError(
                    f'registry {self.registry} denied access to "{shown}" (403 Forbidden)'
                )
            if response.status != 200:
                raise FetchError(
                    f'registry {self.registry} answered {response.status} {response.reason} '
                    f'for the manifest of "{shown}"'
                )
            try:
                data = response.read_limited(MAX_MANIFEST_SIZE)
            except ConnectionProblem as exc:
                raise FetchError(f'manifest of "{shown}" was cut off: {exc}') from exc
            if data is None:
                raise FetchError(
                    f'manifest of "{shown}" is larger than {MAX_MANIFEST_SIZE >> 20} MiB; refused'
                )
            content_type = response.header("Content-Type")
        algorithm = reference.split(":", 1)[0] if ":" in reference else "sha256"
        digest = digest_of(data, algorithm if algorithm in ("sha256", "sha512") else "sha256")
        if ":" in reference and digest != reference:
            raise FetchError(
                f'manifest of "{shown}" does not match its digest {reference} (got {digest})'
            )
        try:
            media_type = media_type_of(data, content_type, f'manifest of "{shown}"')
        except ImageError as exc:
            raise FetchError(str(exc)) from exc
        return ManifestDocument(data, media_type, digest)

    def blob_bytes(
        self, repository: str, descriptor: Descriptor, what: str, limit: int = MAX_CONFIG_SIZE
    ) -> bytes:
        """A small blob (an image config) in memory, verified."""
        if descriptor.size > limit:
            raise FetchError(
                f"{what} {descriptor.digest} is larger than {limit >> 20} MiB; refused"
            )
        sink = io.BytesIO()
        self.download(repository, descriptor, sink, what)
        return sink.getvalue()

    def download(
        self,
        repository: str,
        descriptor: Descriptor,
        sink: BinaryIO,
        what: str,
    ) -> None:
        """Stream a blob into ``sink``, verified (see :class:`BlobStream`)."""
        with self.open_blob(repository, descriptor, what) as stream:
            while chunk := stream.read(_READ_SIZE):
                sink.write(chunk)

    def open_blob(
        self,
        repository: str,
        descriptor: Descriptor,
        what: str,
        *,
        tee: BinaryIO | None = None,
        started: Callable[[], None] | None = None,
        advance: Callable[[int], None] | None = None,
    ) -> BlobStream:
        """A blob as a stream, verified as it is read (see :class:`BlobStream`)."""
        return BlobStream(self, repository, descriptor, what, tee=tee, started=started,
                          advance=advance)

    def _blob_request(
        self, repository: str, descriptor: Descriptor, headers: dict[str, str], what: str
    ) -> HttpResponse:
        """The response to a blob request, checked: 200 or 206 (whose offset
        :class:`rkt.http.RangeReader` checks)."""
        response = self._repository_get(repository, f"blobs/{descriptor.digest}", headers)
        try:
            if response.status == 404:
                raise FetchError(
                    f"{what} {descriptor.digest} not found in {self.registry}/{repository} (404)"
                )
            if response.status not in (200, 206):
                raise FetchError(
                    f"registry {self.registry} answered {response.status} {response.reason} "
                    f"for {what} {descriptor.digest}"
                )
        except BaseException:
            response.close()
            raise
        return response


class BlobStream:
    """A blob read straight from the registry, for a consumer that unpacks as it reads.

    Every byte is hashed, and copied to ``tee`` (the layer cache's staging file) when
    one is given; more bytes than the descriptor's size are refused, and reading to
    the end checks the digest (:class:`FetchError` if it differs). A connection that
    drops mid-blob is resumed by :class:`rkt.http.RangeReader` (``Range``,
    ``RKT_HTTP_ATTEMPTS`` tries in all), so the consumer sees each byte once, in
    order, whatever happened below.
    """

    def __init__(
        self,
        client: RegistryClient,
        repository: str,
        descriptor: Descriptor,
        what: str,
        *,
        tee: BinaryIO | None = None,
        started: Callable[[], None] | None = None,
        advance: Callable[[int], None] | None = None,
    ) -> None:
        self._client = client
        self._repository = repository
        self._descriptor = descriptor
        self._what = what
        self._tee = tee
        self._started = started
        self._advance = advance
        algorithm, _, self._expected = descriptor.digest.partition(":")
        self._hash = hashlib.new(algorithm)
        self._algorithm = algorithm
        self._body = RangeReader(self._open, attempts=client.attempts, size=descriptor.size)
        self._verified = False

    @property
    def _name(self) -> str:
        return f"{self._what} {self._descriptor.digest}"

    def _open(self, headers: Mapping[str, str]) -> HttpResponse:
        response = self._client._blob_request(
            self._repository, self._descriptor, dict(headers), self._what
        )
        if self._started is not None:
            self._started()
            self._started = None
        return response

    def read(self, size: int = -1) -> bytes:
        size = _READ_SIZE if size is None or size < 0 else size
        try:
            data = self._body.read(size)
        except ConnectionProblem as exc:
            raise FetchError(
                f"download of {self._name} from {self._client.registry} failed "
                f"{exc.attempts} times: {exc}"
            ) from exc
        if not data:
            self._finish()
            return b""
        self._hash.update(data)
        if self._tee is not None:
            self._tee.write(data)
        if self._advance is not None:
            self._advance(len(data))
        return data

    def _finish(self) -> None:
        if self._verified:
            return
        # A byte beyond the descriptor's size means the blob is not the one named.
        overrun = self._body.overrun()
        self._body.close()
        if overrun:
            raise FetchError(
                f"{self._name} from {self._client.registry} is longer than the "
                f"{self._descriptor.size} bytes its descriptor gives"
            )
        got = self._hash.hexdigest()
        if got != self._expected:
            raise FetchError(
                f"{self._name} from {self._client.registry} does not match its digest "
                f"(got {self._algorithm}:{got})"
            )
        self._verified = True

    def close(self) -> None:
        self._body.close()

    def __enter__(self) -> BlobStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
