"""Images by appc name: ``rkt fetch example.com/app:v1.0.0``.

rkt 1.x's flow (``rkt/image/namefetcher.go``): ``rkt: searching for app image
NAME``, discovery (``appc-spec/discovery.md``) of the ACI, signature and key URLs,
then the signing keys: if no key is trusted yet for the name (or a prefix of it),
the discovered ones are offered. With ``--trust-keys-from-https`` and a verified
https key URL they are trusted without review; on a terminal the user is asked;
otherwise rkt says how to trust them and carries on, so that verification decides.
A key is never trusted silently. Then the ACI is downloaded like any https image
(:mod:`rkt_plugins.https_fetcher`) and must carry the name and the labels that
were asked for: a valid signature proves the signer, not that this is the image
that was asked for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from rkt.api import (
    FetchedImage,
    FetcherRegistry,
    FetchError,
    FetchSession,
    ImageRef,
    RktError,
    discover_endpoints,
    hookimpl,
)
from rkt_plugins.https_fetcher import default_http, fetch_remote_aci

if TYPE_CHECKING:
    from rkt.api import HttpSession, Runtime

LOG = logging.getLogger(__name__)

HttpFactory = Callable[[FetchSession], "HttpSession"]


def _usable(runtime: Runtime, endpoints: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """https endpoints first, then http ones if allowed; other schemes (hdfs...) skipped."""
    https = [e for e in endpoints if urlsplit(e[0]).scheme == "https"]
    http = [e for e in endpoints if urlsplit(e[0]).scheme == "http"]
    return https + (http if runtime.is_insecure("http") else [])


class NameFetcher:
    """Implements :class:`rkt.fetching.Fetcher` for appc names (kind ``name``)."""

    def __init__(self, http_factory: HttpFactory = default_http) -> None:
        self._http_factory = http_factory

    def fetch(self, ref: ImageRef, session: FetchSession) -> FetchedImage:
        from rkt_plugins.discovery import host_labels

        runtime = session.runtime
        name = ref.name or ref.text
        runtime.reporter.info(f"rkt: searching for app image {ref.text}")
        endpoints = discover_endpoints(runtime, name, dict(ref.labels), session)
        candidates = _usable(runtime, endpoints.aci)
        if not candidates:
            if endpoints.aci:
                found = ", ".join(aci for aci, _ in endpoints.aci)
                raise FetchError(
                    f'no usable ACI URL discovered for "{name}" (found: {found}; '
                    "plain http needs --insecure-options=http)"
                )
            raise FetchError(f'meta discovery for "{name}" found no ac-discovery template')
        http = self._http_factory(session)
        try:
            self._offer_keys(runtime, http, name, endpoints.keys)
            # rkt sets os and arch to the host's when they are not asked for.
            expected = {**host_labels(), **ref.labels}
            errors: list[FetchError] = []
            for aci_url, signature_url in candidates:
                try:
                    return fetch_remote_aci(
                        session, http, aci_url, signature_url,
                        expected_name=name, expected_labels=expected,
                    )
                except FetchError as exc:
                    LOG.debug("endpoint %s failed: %s", aci_url, exc)
                    errors.append(exc)
            raise errors[0]
        finally:
            http.close()

    # -- keys ------------------------------------------------------------------------
    def _offer_keys(
        self, runtime: Runtime, http: HttpSession, name: str, key_urls: list[str]
    ) -> None:
        if runtime.is_insecure("image") or not key_urls:
            return
        if runtime.keystore.fingerprints_for(name):
            LOG.debug('keys already exist for prefix "%s", not fetching again', name)
            return
        if runtime.is_insecure("pubkey"):
            runtime.reporter.warn("signing keys may be downloaded from an insecure connection")
        try:
            for url in key_urls:
                self._offer_key(runtime, http, name, url)
        except _NoTerminal:
            runtime.reporter.info(f'To trust the key for "{name}", do one of the following:')
            runtime.reporter.info(" - call rkt with --trust-keys-from-https")
            runtime.reporter.info(f' - run: rkt trust --prefix "{name}"')
            runtime.reporter.info(
                "rkt: error reviewing key: unable to ask user to review fingerprint "
                "due to lack of tty"
            )
        except RktError as exc:
            # rkt 1.x: a key that cannot be fetched is reported; verification decides.
            runtime.reporter.warn(f'cannot offer the discovered keys for "{name}": {exc}')

    def _offer_key(self, runtime: Runtime, http: HttpSession, name: str, url: str) -> None:
        from rkt.keystore import describe_key, download_key

        scheme = urlsplit(url).scheme.lower()
        if scheme == "http" and not (runtime.is_insecure("pubkey") and http.allow_http):
            runtime.reporter.warn(
                f'not fetching key "{url}" over plain http '
                "(needs --insecure-options=pubkey,http)"
            )
            return
        if scheme not in ("https", "http"):
            runtime.reporter.warn(f'not fetching key "{url}": unsupported URL scheme {scheme!r}')
            return
        verified_https = scheme == "https" and not runtime.is_insecure("tls")
        unreviewed = runtime.trust_keys_from_https and verified_https
        if not unreviewed and not runtime.reporter.can_ask():
            raise _NoTerminal
        key, over_verified_https = download_key(http, url)
        verified_https = verified_https and over_verified_https
        description = describe_key(key, source=url)
        if unreviewed and verified_https:
            review = "without"
        else:
            if not runtime.reporter.review_key(name, url, description):
                runtime.reporter.info(f'Not trusting "{url}"')
                return
            review = "after"
        runtime.reporter.info(f'Trusting "{url}" for prefix "{name}" {review} fingerprint review.')
        path = runtime.keystore.store_trusted_key(key, prefix=name, source=url)
        runtime.reporter.info(f'Added key for prefix "{name}" at "{path}"')


class _NoTerminal(Exception):
    """Nobody can be asked to review a key."""


@hookimpl
def rkt_register_fetchers(registry: FetcherRegistry) -> None:
    registry.add("name", NameFetcher())
