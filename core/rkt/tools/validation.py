"""What ``actool validate`` checks, and which appc rule a failure breaks.

A file is an *appimage* (an ACI: any compression the store reads, then the tar
layout of :func:`rkt.aci.archive.scan_aci` and the manifest inside), a *layout*
(a directory, :func:`rkt.aci.layout.read_layout`) or a *manifest* (an image or
pod manifest, by its ``acKind``). The checks are the runtime's own: a file this
accepts is one ``rkt fetch`` accepts.

Each failure names the rule it breaks: the appc-spec document and lines that state
it (the citations of ``reference/appc-checklist.md``), found from the offending
field the schema reports (``app.ports[0].port`` → ``aci.md:240-245 app.ports``).
"""

from __future__ import annotations

import enum
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from rkt.aci.archive import DEFAULT_LIMITS, scan_aci
from rkt.aci.compression import detect, open_decompressed
from rkt.aci.layout import read_layout
from rkt.errors import ArchiveError, ImageError, ManifestError, UsageError


class FileType(enum.Enum):
    APPIMAGE = "appimage"
    LAYOUT = "layout"
    MANIFEST = "manifest"


#: field (indexes dropped) -> the spec's text for it; the longest matching prefix wins
_IMAGE_RULES: Final = {
    "": "aci.md:60-270 image manifest",
    "acKind": "aci.md:223 acKind",
    "acVersion": "types.md:58-59 AC Version",
    "name": "aci.md:225 name (types.md:7-9 AC Identifier)",
    "labels": "aci.md:226-228 labels",
    "app": "aci.md:229 app",
    "app.exec": "aci.md:230 app.exec",
    "app.user": "aci.md:231 app.user",
    "app.group": "aci.md:231 app.group",
    "app.supplementaryGIDs": "aci.md:232 app.supplementaryGIDs",
    "app.eventHandlers": "aci.md:233-235 app.eventHandlers",
    "app.workingDirectory": "aci.md:236 app.workingDirectory",
    "app.environment": "aci.md:237 app.environment",
    "app.isolators": "aci.md:238 app.isolators (types.md:70-72 Isolator)",
    "app.mountPoints": "aci.md:239 app.mountPoints",
    "app.mountPoints.name": "aci.md:239 app.mountPoints.name (types.md:24-26 AC Name)",
    "app.ports": "aci.md:240-245 app.ports",
    "app.userAnnotations": "aci.md:246 app.userAnnotations",
    "app.userLabels": "aci.md:247 app.userLabels",
    "dependencies": "aci.md:248-252 dependencies",
    "dependencies.imageID": "aci.md:250 dependencies.imageID (types.md:64-65 Image ID)",
    "pathWhitelist": "aci.md:253 pathWhitelist",
    "annotations": "aci.md:254-259 annotations",
}
_POD_RULES: Final = {
    "": "pods.md:150-193 pod manifest",
    "acVersion": "pods.md:159 acVersion (types.md:58-59 AC Version)",
    "acKind": "pods.md:160 acKind",
    "apps": "pods.md:161-173 apps",
    "apps.name": "pods.md:162 apps.name (types.md:24-26 AC Name)",
    "apps.image": "pods.md:163-166 apps.image",
    "apps.image.id": "pods.md:164 apps.image.id (types.md:64-65 Image ID)",
    "apps.app": "pods.md:167 apps.app (aci.md:229-247)",
    "apps.mounts": "pods.md:170 apps.mounts",
    "apps.mounts.volume": "pods.md:170 apps.mounts.volume (types.md:24-26 AC Name)",
    "apps.annotations": "pods.md:172-173 apps.annotations",
    "volumes": "pods.md:174-184 volumes",
    "volumes.name": "pods.md:175 volumes.name (types.md:24-26 AC Name)",
    "isolators": "pods.md:185 isolators",
    "annotations": "pods.md:186 annotations",
    "ports": "pods.md:187-191 ports",
    "ports.name": "pods.md:188 ports.name (types.md:24-26 AC Name)",
    "userAnnotations": "pods.md:192 userAnnotations",
    "userLabels": "pods.md:193 userLabels",
}
_ARCHIVE_RULE: Final = "aci.md:9-27 image archive"
_LAYOUT_RULE: Final = "aci.md:9-16 image layout"
_INDEX: Final = re.compile(r"\[\d+\]")


@dataclass(frozen=True)
class Verdict:
    """What ``actool validate`` says about one file."""

    path: str
    type: FileType | None
    #: None when the file is valid
    problem: str | None = None
    rule: str | None = None
    #: what a valid file is, when more precise than its type ("pod manifest")
    what: str | None = None

    @property
    def valid(self) -> bool:
        return self.problem is None

    def describe(self) -> str:
        if self.problem is None:
            what = self.what or (self.type.value if self.type else "file")
            return f"{self.path}: valid {what}"
        rule = f" [rule: {self.rule}]" if self.rule else ""
        return f"{self.path}: {self.problem}{rule}"


def rule_for(kind: str, field: str) -> str:
    """The spec's statement of the rule a manifest's ``field`` broke (``kind``:
    ``ImageManifest`` or ``PodManifest``)."""
    rules = _POD_RULES if kind == "PodManifest" else _IMAGE_RULES
    key = _INDEX.sub("", field)
    while key not in rules:
        key = key.rpartition(".")[0]
    return rules[key]


def detect_type(path: Path) -> FileType:
    """A directory is a layout; a file by its first bytes: compressed or tar is an
    image, ``{`` a manifest."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file or directory") from None
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}") from exc
    if stat.S_ISDIR(st.st_mode):
        return FileType.LAYOUT
    try:
        with open(path, "rb") as handle:
            head = handle.read(512)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from exc
    if head.lstrip()[:1] == b"{":
        return FileType.MANIFEST
    if not head:
        raise ImageError("empty file: neither an image, a layout nor a manifest")
    try:
        detect(head)
    except ArchiveError:
        raise ImageError("neither an image (no known compression, not a tar archive) nor a "
                         "manifest (not JSON)") from None
    return FileType.APPIMAGE


def validate(path: Path, wanted: FileType | None = None) -> Verdict:
    """Check ``path`` (of type ``wanted``, or the type it looks like)."""
    kind = wanted
    document_kind = "ImageManifest"
    try:
        if kind is None:
            kind = detect_type(path)
        if kind is FileType.LAYOUT:
            if not path.is_dir():
                raise ImageError("not a directory, so not an image layout")
            read_layout(path)
        elif kind is FileType.APPIMAGE:
            _validate_image(path)
        else:
            if not path.is_file():
                raise ImageError("not a regular file, so not a manifest")
            if path.stat().st_size > DEFAULT_LIMITS.max_manifest_size:
                raise ManifestError(f"larger than {DEFAULT_LIMITS.max_manifest_size} bytes")
            data = path.read_bytes()
            document_kind = _document_kind(data)
            _validate_manifest(data, "invalid manifest")
    except ManifestError as exc:
        return Verdict(str(path), kind, _strip(str(exc), path), rule_for(document_kind, exc.field))
    except ArchiveError as exc:
        return Verdict(str(path), kind, _strip(str(exc), path), _ARCHIVE_RULE)
    except (ImageError, UsageError) as exc:
        rule = _LAYOUT_RULE if kind is FileType.LAYOUT else None
        return Verdict(str(path), kind, _strip(str(exc), path), rule)
    except OSError as exc:
        return Verdict(str(path), kind, f"cannot read: {exc.strerror or exc}")
    what = ("pod manifest" if document_kind == "PodManifest" else "image manifest") \
        if kind is FileType.MANIFEST else None
    return Verdict(str(path), kind, what=what)


def _strip(message: str, path: Path) -> str:
    """Messages that start with the file's name already get it from :meth:`Verdict.describe`."""
    return message.removeprefix(f"{path}: ")


def _validate_image(path: Path) -> None:
    with open(path, "rb") as handle:
        manifest = scan_aci(open_decompressed(handle), limits=DEFAULT_LIMITS)
    _validate_manifest(manifest, "invalid manifest in image", pods=False)


def _document_kind(data: bytes) -> str:
    """``PodManifest`` or ``ImageManifest`` (the default, for whatever is not a pod)."""
    from rkt.schema.base import load_json_object

    try:
        kind = load_json_object(data, "manifest").get("acKind")
    except ManifestError:
        return "ImageManifest"
    return "PodManifest" if kind == "PodManifest" else "ImageManifest"


def _validate_manifest(data: bytes, source: str, *, pods: bool = True) -> None:
    """Validate an image (or, with ``pods``, a pod) manifest, as its ``acKind`` says."""
    from rkt.schema.base import load_json_object
    from rkt.schema.image import ImageManifest
    from rkt.schema.pod import PodManifest

    document = load_json_object(data, source)
    if pods and document.get("acKind") == "PodManifest":
        PodManifest.from_dict(document, source=source)
    else:
        ImageManifest.from_dict(document, source=source)
