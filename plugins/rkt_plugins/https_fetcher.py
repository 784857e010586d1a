"""Images from ``https://`` (and, when allowed, ``http://``) URLs, with their signatures.

rkt 1.x's order (``rkt/image/httpfetcher.go``): the signature is downloaded first
(``Downloading signature from URL``), then the ACI with a progress bar on a
terminal. A ``202 Accepted`` answer for the signature means "not ready yet": the
ACI is downloaded and the signature asked for once more. The signature of
``x.aci`` is ``x.aci.asc`` unless ``--signature FILE`` is given.

The remote cache (``rkt/image/common.go`` useCached, ``image-fetching-behavior.md``):
after a download the store remembers the URL's ETag and Cache-Control max-age.
With ``--pull-policy=new`` a URL fetched before is not asked again; with ``update``
a max-age that has not expired also answers from the store, otherwise the request
carries ``If-None-Match`` and a ``304 Not Modified`` reuses the stored image
without downloading it (or its signature) again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

from rkt.api import (
    FetchedImage,
    FetcherRegistry,
    FetchError,
    FetchSession,
    ImageNotFoundError,
    ImageRef,
    RemoteRecord,
    UsageError,
    hookimpl,
)

if TYPE_CHECKING:
    from rkt.api import HttpSession, ImageStore, Runtime
    from rkt.store.index import RemoteEntry

LOG = logging.getLogger(__name__)

#: an armored detached signature is well under a KiB; refuse anything absurd
MAX_SIGNATURE_SIZE = 1 << 20

HttpFactory = Callable[[FetchSession], "HttpSession"]


@runtime_checkable
class _RemoteDetails(Protocol):
    """Stores that keep max-age and download times (the built-in one does)."""

    def remote_entry(self, url: str) -> RemoteEntry | None: ...


def signature_url_for(url: str) -> str:
    """``https://h/x.aci`` -> ``https://h/x.aci.asc`` (query and fragment kept apart)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=parts.path + ".asc"))


def default_http(session: FetchSession) -> HttpSession:
    from rkt.api import session_for

    return session_for(session.runtime)


def _cached(store: ImageStore, url: str) -> tuple[str, str | None, bool] | None:
    """(image ID, ETag, still fresh) of a usable remote cache entry for ``url``."""
    if isinstance(store, _RemoteDetails):
        entry = store.remote_entry(url)
        if entry is None:
            return None
        image_id, etag, fresh = entry.image_id, entry.etag, entry.fresh()
    else:
        row = store.cached_remote(url)
        if row is None:
            return None
        etag, image_id = row
        fresh = False
    try:
        store.resolve(image_id)
    except ImageNotFoundError:
        return None  # the image was removed since: download it again
    return image_id, etag, fresh


def fetch_remote_aci(
    session: FetchSession,
    http: HttpSession,
    aci_url: str,
    signature_url: str,
    *,
    expected_name: str | None = None,
    expected_labels: dict[str, str] | None = None,
) -> FetchedImage:
    """Download ``aci_url`` and its signature (or answer from the remote cache)."""
    from rkt.api import ProgressBar

    runtime = session.runtime
    store = runtime.store
    verify = not runtime.is_insecure("image")
    cached = _cached(store, aci_url)
    etag: str | None = None
    if cached is not None:
        image_id, cached_etag, fresh = cached
        if session.pull_policy == "new" or fresh:
            LOG.debug("using %s for %s from the remote cache", image_id, aci_url)
            return FetchedImage.unchanged(image_id, aci_url)
        etag = cached_etag

    runtime.reporter.info(f"rkt: fetching image from {aci_url}")
    signature: bytes | None = None
    deferred = False
    # With an ETag the image is asked for first: a 304 needs no signature at all.
    asked = False
    if verify and session.signature_file is not None:
        signature = _read_signature_file(session.signature_file)
    elif verify and etag is None:
        signature, deferred = _download_signature(runtime, http, signature_url)
        asked = True

    progress = ProgressBar("Downloading ACI", None, runtime.reporter.stderr)
    download = http.download(aci_url, session.tmp_dir, what="image", etag=etag,
                             progress=progress)
    remote = RemoteRecord(
        url=aci_url, etag=download.etag, max_age=download.max_age,
        signature_url=None if session.signature_file else signature_url,
    )
    if download.path is None:
        assert cached is not None
        runtime.reporter.info(f"rkt: {aci_url} has not changed: using the stored image")
        return FetchedImage.unchanged(cached[0], aci_url, remote)
    try:
        if verify and session.signature_file is None and (deferred or not asked):
            # A deferred signature, or a changed image after a conditional request.
            signature, deferred = _download_signature(runtime, http, signature_url)
            if deferred:
                raise FetchError(
                    f"cannot fetch signature {signature_url}: the server still answers "
                    "202 Accepted after the image was downloaded"
                )
    except BaseException:
        download.path.unlink(missing_ok=True)
        raise
    return FetchedImage(
        path=download.path,
        origin=aci_url,
        signature=signature,
        signature_origin=str(session.signature_file or signature_url),
        temporary=True,
        expected_name=expected_name,
        expected_labels=dict(expected_labels or {}),
        remote=remote,
    )


def _read_signature_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"no such signature file: {path}") from None
    except OSError as exc:
        raise FetchError(f"error opening signature file {path}: {exc.strerror}") from exc


def _download_signature(
    runtime: Runtime, http: HttpSession, url: str
) -> tuple[bytes | None, bool]:
    """(signature or None when the server has none, deferred by ``202 Accepted``)."""
    runtime.reporter.info(f"Downloading signature from {url}")
    page = http.get(url, what="signature", limit=MAX_SIGNATURE_SIZE)
    if page.status == 200:
        return page.body, False
    if page.status == 202:
        LOG.debug("signature %s deferred (202): downloading the image first", url)
        return None, True
    if page.status in (404, 410):
        return None, False
    raise http.status_error("signature", url, page.status, page.reason,
                            answered_by=page.url)


class HttpsFetcher:
    """Implements :class:`rkt.fetching.Fetcher` for ``https`` and ``http`` URLs."""

    def __init__(self, http_factory: HttpFactory = default_http) -> None:
        self._http_factory = http_factory

    def fetch(self, ref: ImageRef, session: FetchSession) -> FetchedImage:
        assert ref.url is not None
        url = ref.url
        runtime = session.runtime
        if ref.kind == "http" and not runtime.is_insecure("http"):
            raise UsageError(
                f"refusing to fetch image {url} over plain http; "
                "use https, or --insecure-options=http"
            )
        http = self._http_factory(session)
        try:
            return fetch_remote_aci(session, http, url, signature_url_for(url))
        finally:
            http.close()


@hookimpl
def rkt_register_fetchers(registry: FetcherRegistry) -> None:
    fetcher = HttpsFetcher()
    registry.add("https", fetcher)
    registry.add("http", fetcher)
