"""appc meta discovery: an image name to ACI, signature and public key URLs.

``appc-spec/discovery.md``: for ``example.com/app`` rkt GETs
``https://example.com/app?ac-discovery=1`` and reads the
``<meta name="ac-discovery" content="PREFIX TEMPLATE">`` and
``<meta name="ac-discovery-pubkeys" content="PREFIX URL">`` tags whose PREFIX
starts the name. When a page fails (any non-200 answer, a transport error, a page
too large) or has no tag of a kind, the parent name is tried (``example.com``).
ACI templates and key URLs are looked for independently: each kind stops at the
first name that yields at least one (appc/spec's discovery package does the same).
Plain ``http://`` is tried only when ``--insecure-options=http`` allows it, after
https failed for that name.

Template rules (appc/spec ``discovery/discovery.go``, see
``reference/appc-checklist.md`` section 5): ``{name}`` is replaced first, then
``{version}`` (default ``latest``), ``{os}`` and ``{arch}`` (default: this host)
and any other label, then ``{ext}`` (``aci`` or ``aci.asc``); a template with
anything still in braces, or without ``{ext}``, is skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rkt.api import (
    DiscoveredEndpoints,
    DiscoveryRegistry,
    FetchError,
    FetchSession,
    UsageError,
    hookimpl,
)
from rkt.keystore import name_prefixes

if TYPE_CHECKING:
    from rkt.api import HttpSession

LOG = logging.getLogger(__name__)

#: a discovery page is a few hundred bytes; anything this large is not one
MAX_PAGE_SIZE = 1 << 20
#: ``platform.machine()`` -> appc's ``arch`` label values (appc-spec/OS-SPEC.md)
_ARCHES = {
    "x86_64": "amd64", "amd64": "amd64", "i386": "i386", "i486": "i386", "i586": "i386",
    "i686": "i386", "aarch64": "aarch64", "arm64": "aarch64", "armv6l": "armv6l",
    "armv7l": "armv7l", "ppc64": "ppc64", "ppc64le": "ppc64le", "s390x": "s390x",
}

HttpFactory = Callable[[FetchSession], "HttpSession"]


def host_labels() -> dict[str, str]:
    """The ``os`` and ``arch`` labels of this machine, in appc's spelling."""
    import platform

    machine = platform.machine().lower()
    return {"os": platform.system().lower(), "arch": _ARCHES.get(machine, machine)}


@dataclass(frozen=True)
class MetaTag:
    name: str  # "ac-discovery" or "ac-discovery-pubkeys" (any "ac-" name is kept)
    prefix: str
    value: str


def parse_meta_tags(html: str) -> list[MetaTag]:
    """Every ``<meta name="ac-...">`` tag of a page, in document order."""
    # Imported here: plugins load on every rkt command, discovery runs on few.
    from html.parser import HTMLParser

    tags: list[MetaTag] = []

    class MetaParser(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag != "meta":
                return
            values = {key.lower(): value or "" for key, value in attrs}
            name = values.get("name", "")
            if not name.startswith("ac-"):
                return
            # appc/spec splits content on the first space: "PREFIX URL".
            prefix, _, value = values.get("content", "").strip().partition(" ")
            value = value.strip()
            if prefix and value:
                tags.append(MetaTag(name, prefix, value))

        handle_startendtag = handle_starttag

    parser = MetaParser(convert_charrefs=True)
    parser.feed(html)
    parser.close()
    return tags


def render_template(template: str, name: str, labels: dict[str, str], ext: str) -> str | None:
    """Fill a discovery template; None when something stays unfilled or ``{ext}`` is absent."""
    if "{ext}" not in template:
        return None
    # {name} first, as appc/spec does: a label called "name" cannot change it.
    url = template.replace("{name}", name)
    for label, value in labels.items():
        url = url.replace("{" + label + "}", value)
    url = url.replace("{ext}", ext)
    if "{" in url or "}" in url:
        return None
    return url


def discovery_labels(labels: dict[str, str]) -> dict[str, str]:
    """The labels discovery fills templates with: version ``latest`` and the host's os/arch
    unless given."""
    return {"version": "latest", **host_labels(), **labels}


class MetaDiscovery:
    """Implements :class:`rkt.fetching.Discoverer` with HTML meta tags."""

    def __init__(self, http_factory: HttpFactory | None = None) -> None:
        self._http_factory = http_factory

    def _http(self, session: FetchSession) -> HttpSession:
        if self._http_factory is not None:
            return self._http_factory(session)
        from rkt.api import session_for

        allow_http = session.runtime.is_insecure("http") or session.allow_http
        return session_for(session.runtime, allow_http=allow_http)

    def discover(
        self, name: str, labels: dict[str, str], session: FetchSession
    ) -> DiscoveredEndpoints:
        if not name or name.startswith("/") or "://" in name:
            raise UsageError(f'cannot discover "{name}": not an image name')
        filled = discovery_labels(labels)
        found = DiscoveredEndpoints()
        failures: list[str] = []
        http = self._http(session)
        try:
            for prefix in reversed(name_prefixes(name)):
                if found.aci and found.keys:
                    break
                tags = self._page_tags(http, prefix, failures)
                if tags is None:
                    continue
                matching = [tag for tag in tags if name.startswith(tag.prefix)]
                if not found.aci:
                    found.aci = _endpoints(matching, name, filled)
                if not found.keys:
                    found.keys = [t.value for t in matching if t.name == "ac-discovery-pubkeys"]
                if not found.aci and not found.keys:
                    failures.append(f"{_page_url(prefix)}: no matching ac-discovery meta tags")
        finally:
            http.close()
        if not found.aci and not found.keys:
            raise FetchError(
                f'meta discovery for "{name}" found no ACI meta tags: ' + "; ".join(failures)
            )
        LOG.debug("discovered for %s: %s", name, found)
        return found

    def _page_tags(
        self, http: HttpSession, prefix: str, failures: list[str]
    ) -> list[MetaTag] | None:
        schemes = ["https", "http"] if http.allow_http else ["https"]
        for scheme in schemes:
            url = _page_url(prefix, scheme)
            try:
                page = http.get(url, what="discovery page", limit=MAX_PAGE_SIZE)
            except FetchError as exc:
                failures.append(str(exc).removeprefix("cannot fetch discovery page "))
                continue
            if page.status != 200:
                failures.append(f"{url}: HTTP {page.status} {page.reason}".rstrip())
                continue
            return parse_meta_tags(page.body.decode("utf-8", errors="replace"))
        return None


def _page_url(prefix: str, scheme: str = "https") -> str:
    return f"{scheme}://{prefix}?ac-discovery=1"


def _endpoints(
    tags: list[MetaTag], name: str, labels: dict[str, str]
) -> list[tuple[str, str]]:
    endpoints = []
    for tag in tags:
        if tag.name != "ac-discovery":
            continue
        aci = render_template(tag.value, name, labels, "aci")
        asc = render_template(tag.value, name, labels, "aci.asc")
        if aci is None or asc is None:
            LOG.debug("skipping template %s for %s: not fully filled", tag.value, name)
            continue
        endpoints.append((aci, asc))
    return endpoints


@hookimpl
def rkt_register_discovery(registry: DiscoveryRegistry) -> None:
    registry.add("meta", MetaDiscovery())
