"""Docker image references: ``docker://[HOST[:PORT]/]NAME[:TAG|@DIGEST]``.

The grammar is the Docker distribution one (``distribution/reference``): the first
``/``-separated component is a registry host when it contains a ``.`` or a ``:``, is
``localhost``, or has an uppercase letter; otherwise the image is on Docker Hub.
Hub defaults are rkt's (``../shared/reference/rkt-behaviour.md`` section 8):
registry ``registry-1.docker.io``, ``library/`` for one-component names, tag
``latest``. ``docker:NAME`` is accepted as well as ``docker://NAME``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from rkt.api import UsageError

DOCKER_HUB_REGISTRY = "registry-1.docker.io"
#: Names users give Docker Hub, in references and in ``dockerAuth`` files.
DOCKER_HUB_ALIASES = frozenset({
    "docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com",
})
DEFAULT_TAG = "latest"
SYNTAX = "docker://[REGISTRY_HOST[:REGISTRY_PORT]/]IMAGE_NAME[:TAG|@DIGEST]"
#: distribution/reference's bound on the whole name (host and path).
MAX_NAME_LENGTH = 255

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:]+\])(?::[0-9]{{1,5}})?\Z"
)
_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*\Z")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
_DIGEST = re.compile(r"(?:sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})\Z")
_DIGEST_SHAPE = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]+\Z")
_AC_INVALID = re.compile(r"[^a-z0-9._~/-]")
_AC_EDGES = re.compile(r"^[-._~/]+|[-._~/]+$")


@dataclass(frozen=True)
class DockerReference:
    """One image in one registry, as a user named it."""

    #: the host (and port) requests go to: ``registry-1.docker.io``, ``localhost:5443``
    registry: str
    #: ``library/busybox``
    repository: str
    #: the tag; None only when the image is named by digest alone
    tag: str | None = DEFAULT_TAG
    #: ``sha256:<hex>`` when the user pinned a digest
    digest: str | None = None

    @property
    def reference(self) -> str:
        """What goes after ``/manifests/``: the digest when pinned, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    @property
    def url(self) -> str:
        """``docker://registry/repository:tag[@digest]``, with every default spelled out."""
        return f"docker://{self}"

    @property
    def aci_name(self) -> str:
        """``<registry>/<repository>`` made an AC Identifier, as docker2aci named images."""
        return sanitize_ac_identifier(f"{self.registry}/{self.repository}")

    @property
    def version(self) -> str:
        """The ACI's ``version`` label: the tag, or the digest for digest-only names."""
        return self.tag or self.digest or DEFAULT_TAG

    def pinned(self, digest: str) -> DockerReference:
        return replace(self, digest=digest)

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def sanitize_ac_identifier(text: str) -> str:
    """appc's ``SanitizeACIdentifier``: lowercase, invalid characters to ``_``, edges trimmed."""
    return _AC_EDGES.sub("", _AC_INVALID.sub("_", text.lower()))


def strip_scheme(text: str) -> str:
    for prefix in ("docker://", "docker:"):
        if text.startswith(prefix):
            return text[len(prefix):]
    return text


def parse_docker_reference(text: str, *, what: str = "docker URL") -> DockerReference:
    """Parse ``docker://...`` (or a bare ``NAME[:TAG]``); UsageError names the problem."""

    def bad(why: str) -> UsageError:
        shown = text if len(text) <= 300 else text[:300] + "..."
        return UsageError(f'invalid {what} "{shown}": {why}; expected syntax is "{SYNTAX}"')

    rest = strip_scheme(text)
    if not rest:
        raise bad("no image name")
    if any(ch.isspace() for ch in rest):
        raise bad("whitespace is not allowed")
    name, at, digest = rest.partition("@")
    if at:
        if not _DIGEST_SHAPE.match(digest):
            raise bad(f'"{digest}" is not a digest')
        if not _DIGEST.match(digest):
            raise bad(f'unsupported digest "{digest}" (sha256 or sha512, lowercase hex)')
    tag: str | None = None
    slash, colon = name.rfind("/"), name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1:]
        if not _TAG.match(tag):
            raise bad(f'invalid tag "{tag}"')
    first, sep, remainder = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        if not _DOMAIN.match(first):
            raise bad(f'invalid registry host "{first}"')
        domain, path = first.lower(), remainder
    else:
        domain, path = "docker.io", name
    if not path:
        raise bad("no repository name")
    for component in path.split("/"):
        if not _PATH_COMPONENT.match(component):
            if component.lower() != component and _PATH_COMPONENT.match(component.lower()):
                raise bad("repository name must be lowercase")
            raise bad(f'invalid repository name component "{component}"')
    if len(domain) + 1 + len(path) > MAX_NAME_LENGTH:
        raise bad(f"name longer than {MAX_NAME_LENGTH} characters")
    if domain in DOCKER_HUB_ALIASES:
        domain = DOCKER_HUB_REGISTRY
        if "/" not in path:
            path = "library/" + path
    if tag is None and not at:
        tag = DEFAULT_TAG
    return DockerReference(domain, path, tag, digest if at else None)
