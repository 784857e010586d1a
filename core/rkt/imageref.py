"""What an image string on the command line means.

rkt 1.x's order (``rkt/image/common.go``), kept here so users get the same answer:
a ``sha512-`` hash is a store lookup; ``http``/``https``/``file`` URLs are archives;
any other ``scheme:`` string that a plugin registered a fetcher for (``docker://``
and ``docker:`` are the Docker plugin's) goes to that plugin, and so does any
``scheme://`` string, so that a missing plugin is named; without a scheme an
absolute path, an existing file, a ``./`` path or an ``.aci`` name is a file, and
everything else is an appc name ``name[:version][,label=value...]``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from rkt.errors import UsageError

_HASH = re.compile(r"^sha512-[0-9a-f]{1,128}$")
_SCHEME = re.compile(r"^([a-z][a-z0-9+.-]*):")


@dataclass(frozen=True)
class ImageRef:
    """One image as the user named it."""

    text: str
    #: "hash", "file", "https", "http", "name", or a plugin's scheme ("docker")
    kind: str
    #: appc name for kind "name"
    name: str | None = None
    #: appc labels asked for (``version`` from ``name:version``)
    labels: dict[str, str] = field(default_factory=dict)
    #: local path for kind "file"
    path: Path | None = None
    #: the URL for URL kinds (https, http, plugin schemes)
    url: str | None = None


#: appc-spec/spec/types.md, AC Identifier: what an image name must look like
_AC_IDENTIFIER = re.compile(r"^[a-z0-9]+([-._~/][a-z0-9]+)*$")


def parse_appc_name(text: str) -> tuple[str, dict[str, str]]:
    """Split ``name[:version][,label=value...]`` into the name and its labels."""
    head, *label_parts = text.split(",")
    labels: dict[str, str] = {}
    for part in label_parts:
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise UsageError(f'invalid image label "{part}" in "{text}": expected name=value')
        labels[key] = value
    name, sep, version = head.partition(":")
    if sep:
        if not version:
            raise UsageError(f'invalid image name "{text}": empty version after ":"')
        labels["version"] = version
    if not _AC_IDENTIFIER.match(name):
        raise UsageError(f'invalid image name "{text}": an appc name is lowercase letters, '
                         'digits and "-._~/" (example.com/hello)')
    return name, labels


def has_scheme(text: str) -> bool:
    """Whether ``text`` starts like ``scheme:``, so that the plugins' schemes matter to
    :func:`parse_image_ref` (a caller need not load the fetchers to ask them)."""
    return _SCHEME.match(text) is not None


def parse_image_ref(text: str, *, plugin_schemes: Collection[str] = ()) -> ImageRef:
    """Classify an image string; see the module docstring for the rules."""
    if not text:
        raise UsageError("empty image name")
    if _HASH.match(text):
        return ImageRef(text, "hash")
    scheme_match = _SCHEME.match(text)
    scheme = scheme_match.group(1) if scheme_match else None
    if scheme in ("http", "https"):
        return ImageRef(text, scheme, url=text)
    if scheme == "file":
        return ImageRef(text, "file", path=Path(unquote(urlsplit(text).path)))
    if scheme is not None and (
        scheme in plugin_schemes or text[len(scheme) + 1 :].startswith("//")
    ):
        return ImageRef(text, scheme, url=text)
    if text.startswith("/") or os.path.isfile(text) or "./" in text:
        return ImageRef(text, "file", path=Path(os.path.abspath(text)))
    if scheme is None and text.endswith(".aci"):
        return ImageRef(text, "file", path=Path(os.path.abspath(text)))
    name, labels = parse_appc_name(text)
    return ImageRef(text, "name", name=name, labels=labels)
