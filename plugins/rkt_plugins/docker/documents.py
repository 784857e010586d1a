"""Docker and OCI image documents: manifests, manifest lists / indexes, configs.

Every document is untrusted JSON from a registry or an archive; it is checked here
for exactly the fields the fetcher uses, with one-line errors naming the document.
Supported: Docker image manifest schema 2 and its manifest list, the OCI image
manifest and index (``opencontainers/image-spec``). Docker schema 1 (signed JSON
with v1 compatibility blobs, deprecated since 2017) is refused with a clear message.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

from rkt.api import ImageError

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_V1 = "application/vnd.docker.distribution.manifest.v1+json"
MANIFEST_V1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

#: What a registry is asked for, most specific first.
ACCEPTED_MANIFESTS = (OCI_INDEX, MANIFEST_LIST, OCI_MANIFEST, MANIFEST_V2)
INDEX_TYPES = frozenset({OCI_INDEX, MANIFEST_LIST})
IMAGE_TYPES = frozenset({OCI_MANIFEST, MANIFEST_V2})

_DIGEST = re.compile(r"(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})\Z")

#: ``uname -m`` to the Go names images use, and the variant for arm.
_HOST_ARCH = {
    "x86_64": ("amd64", None), "amd64": ("amd64", None), "aarch64": ("arm64", None),
    "arm64": ("arm64", None), "armv7l": ("arm", "v7"), "armv6l": ("arm", "v6"),
    "i386": ("386", None), "i686": ("386", None), "ppc64le": ("ppc64le", None),
    "s390x": ("s390x", None), "riscv64": ("riscv64", None), "ppc64": ("ppc64", None),
}


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def check_digest(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _DIGEST.match(value):
        raise ImageError(f"{where}: invalid digest {json.dumps(value)[:150]}")
    return value


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text


def host_platform() -> Platform:
    machine = os.uname().machine.lower()
    arch, variant = _HOST_ARCH.get(machine, (machine, None))
    return Platform("linux", arch, variant)


@dataclass(frozen=True)
class Descriptor:
    """A content descriptor: what a blob or manifest is, its digest and size."""

    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: dict[str, str] = field(default_factory=dict)
    urls: tuple[str, ...] = ()

    @property
    def short(self) -> str:
        """The hex digest, as ``Downloading layer: <hex>`` prints it."""
        return self.digest.split(":", 1)[1]


@dataclass
class ManifestIndex:
    """A Docker manifest list or an OCI index."""

    media_type: str
    manifests: list[Descriptor]

    def select(self, wanted: Platform) -> Descriptor | None:
        """The entry for ``wanted``; the variant decides only among several candidates."""
        candidates = [
            d for d in self.manifests
            if d.platform is not None and d.platform.os == wanted.os
            and d.platform.architecture == wanted.architecture
        ]
        if not candidates:
            return None
        for candidate in candidates:
            assert candidate.platform is not None
            if candidate.platform.variant == wanted.variant:
                return candidate
        return candidates[0]

    def platforms(self) -> list[str]:
        return sorted({str(d.platform) for d in self.manifests if d.platform is not None})


@dataclass
class ImageManifest:
    """A Docker schema 2 or OCI image manifest: a config and layers, base first."""

    media_type: str
    config: Descriptor
    layers: list[Descriptor]


@dataclass
class ImageConfig:
    """The parts of an image config (``application/vnd.docker.container.image.v1+json``
    or ``application/vnd.oci.image.config.v1+json``) that conversion uses."""

    raw: dict[str, Any]
    os: str
    architecture: str
    variant: str | None
    diff_ids: list[str]
    container: dict[str, Any]
    author: str
    created: str
    comment: str


def _load_object(data: bytes, where: str) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ImageError(f"{where} is not valid JSON") from exc
    if not isinstance(document, dict):
        raise ImageError(f"{where} is not a JSON object")
    return document


def _descriptor(value: Any, where: str) -> Descriptor:
    if not isinstance(value, dict):
        raise ImageError(f"{where} is not an object")
    media_type = value.get("mediaType", "")
    if not isinstance(media_type, str):
        raise ImageError(f"{where}: mediaType is not a string")
    size = value.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ImageError(f"{where}: size is not a non-negative integer")
    digest = check_digest(value.get("digest"), where)
    found_platform = None
    raw_platform = value.get("platform")
    if isinstance(raw_platform, dict):
        os_name = raw_platform.get("os")
        arch = raw_platform.get("architecture")
        variant = raw_platform.get("variant")
        if isinstance(os_name, str) and isinstance(arch, str):
            found_platform = Platform(
                os_name, arch, variant if isinstance(variant, str) and variant else None
            )
    annotations = value.get("annotations")
    urls = value.get("urls")
    return Descriptor(
        media_type=media_type,
        digest=digest,
        size=size,
        platform=found_platform,
        annotations={
            k: v for k, v in annotations.items() if isinstance(k, str) and isinstance(v, str)
        } if isinstance(annotations, dict) else {},
        urls=tuple(u for u in urls if isinstance(u, str)) if isinstance(urls, list) else (),
    )


def media_type_of(data: bytes, header_type: str | None, where: str) -> str:
    """The document's media type: its own ``mediaType`` field, else the header's,
    else inferred (an OCI document may carry neither)."""
    document = _load_object(data, where)
    declared = document.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    content_type = (header_type or "").split(";", 1)[0].strip()
    if content_type in ACCEPTED_MANIFESTS or content_type in (MANIFEST_V1, MANIFEST_V1_SIGNED):
        return content_type
    if document.get("schemaVersion") == 1:
        return MANIFEST_V1
    if "manifests" in document:
        return OCI_INDEX
    return OCI_MANIFEST


def parse_index(data: bytes, media_type: str, where: str) -> ManifestIndex:
    document = _load_object(data, where)
    entries = document.get("manifests")
    if not isinstance(entries, list):
        raise ImageError(f"{where}: manifests is not a list")
    return ManifestIndex(
        media_type, [_descriptor(e, f"{where}: manifests[{i}]") for i, e in enumerate(entries)]
    )


def parse_manifest(data: bytes, media_type: str, where: str) -> ImageManifest:
    if media_type in (MANIFEST_V1, MANIFEST_V1_SIGNED):
        raise ImageError(
            f"{where} is a Docker schema 1 manifest, which is not supported "
            "(push the image again with a current Docker or skopeo)"
        )
    if media_type not in IMAGE_TYPES:
        raise ImageError(f"{where} has unsupported media type \"{media_type}\"")
    document = _load_object(data, where)
    if document.get("schemaVersion") != 2:
        raise ImageError(f"{where}: schemaVersion is not 2")
    config = _descriptor(document.get("config"), f"{where}: config")
    layers = document.get("layers")
    if not isinstance(layers, list):
        raise ImageError(f"{where}: layers is not a list")
    parsed = [_descriptor(layer, f"{where}: layers[{i}]") for i, layer in enumerate(layers)]
    for index, layer in enumerate(parsed):
        if layer.media_type == DOCKER_FOREIGN_LAYER or layer.urls:
            raise ImageError(
                f"{where}: layers[{index}] is a foreign layer (Windows base images are "
                "not supported)"
            )
    return ImageManifest(media_type, config, parsed)


def _string(value: Any) -> str:
    return value if isinstance(value, str) else ""


def parse_config(data: bytes, where: str) -> ImageConfig:
    document = _load_object(data, where)
    rootfs = document.get("rootfs")
    diff_ids: list[str] = []
    if isinstance(rootfs, dict) and isinstance(rootfs.get("diff_ids"), list):
        diff_ids = [
            check_digest(d, f"{where}: rootfs.diff_ids[{i}]")
            for i, d in enumerate(rootfs["diff_ids"])
        ]
    container = document.get("config")
    if container is None:
        container = document.get("container_config")
    if container is not None and not isinstance(container, dict):
        raise ImageError(f"{where}: config is not an object")
    variant = document.get("variant")
    return ImageConfig(
        raw=document,
        os=_string(document.get("os")),
        architecture=_string(document.get("architecture")),
        variant=variant if isinstance(variant, str) and variant else None,
        diff_ids=diff_ids,
        container=container or {},
        author=_string(document.get("author")),
        created=_string(document.get("created")),
        comment=_string(document.get("comment")),
    )
