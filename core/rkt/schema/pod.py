"""The pod manifest (appc-spec/pods.md, "Pod Manifest Schema").

``PodManifest.parse(text)`` validates as the reference implementation does
(reference/appc-checklist.md section 4). A *template* may leave ``image.id`` out; a
reified pod (pods.md: before execution) names every image by ID, see
:meth:`PodManifest.is_reified`.
"""

from __future__ import annotations

import logging
import re
from typing import Annotated, ClassVar, Self

from pydantic import AfterValidator, Field, model_validator

from rkt import APPC_VERSION
from rkt.schema.base import FieldProblem, SchemaDocument, SchemaModel, quote
from rkt.schema.image import App, Port
from rkt.schema.types import (
    ACIdentifier,
    ACName,
    Annotations,
    ImageID,
    IPAddress,
    Isolator,
    Labels,
    NonEmptyString,
    SemVer,
    UnsignedID,
    find_value,
)

LOG = logging.getLogger(__name__)

POD_MANIFEST_KIND = "PodManifest"
VOLUME_KINDS = ("empty", "host")
_MODE_MAX = 0o7777
_OCTAL_MODE = re.compile(r"[0-7]+\Z")


class Volume(SchemaModel):
    """A pod volume (pods.md ``volumes``), also a mount's ``appVolume``.

    ``mode``, ``uid`` and ``gid`` apply to ``empty`` volumes only and ``source`` and
    ``recursive`` to ``host`` ones; their defaults are the field defaults, so
    ``volume.mode`` is ``"0755"`` when the manifest says nothing.
    """

    name: ACName
    kind: str
    source: str | None = None
    read_only: bool = Field(False, alias="readOnly")
    #: pods.md: "the executor SHOULD default to recursive".
    recursive: bool = True
    mode: str = "0755"
    uid: UnsignedID = 0
    gid: UnsignedID = 0

    @property
    def mode_bits(self) -> int:
        """``mode`` as an integer (``"0755"`` -> ``0o755``)."""
        return int(self.mode, 8)

    @model_validator(mode="after")
    def _check_kind(self) -> Self:
        given = self.model_fields_set
        if self.kind not in VOLUME_KINDS:
            raise FieldProblem(
                f'unknown volume kind {quote(self.kind)} (must be "empty" or "host")', "kind"
            )
        if self.kind == "empty":
            # The reference reads "" as no source.
            if self.source:
                raise FieldProblem("an empty volume cannot have a source", "source")
            if not _OCTAL_MODE.match(self.mode) or int(self.mode, 8) > _MODE_MAX:
                raise FieldProblem(
                    f'{quote(self.mode)} is not an octal permission mode (such as "0755")', "mode"
                )
        else:
            if not self.source:
                raise FieldProblem("a host volume needs a source", "source")
            if not self.source.startswith("/"):
                raise FieldProblem(f"{quote(self.source)} is not an absolute path", "source")
            if "\x00" in self.source:
                raise FieldProblem("must not contain a NUL character", "source")
            for key, alias in (("mode", "mode"), ("uid", "uid"), ("gid", "gid")):
                if key in given:
                    raise FieldProblem(f"{alias} applies only to empty volumes", alias)
        return self


class Mount(SchemaModel):
    """Which volume fills which path of an app (pods.md ``mounts``).

    A volume name that no pod volume defines is not an error here (the reference does
    not check it; ``appVolume`` or the stage1 may supply it).
    """

    volume: ACName
    path: NonEmptyString
    app_volume: Volume | None = Field(None, alias="appVolume")


class RuntimeImage(SchemaModel):
    """The image an app runs (pods.md ``apps[].image``).

    ``id`` is required by the spec but may be absent in a pod template, as the
    reference allows. When present it must be a real ID (unlike a dependency pin):
    the runtime finds the image's files by it.
    """

    id: ImageID | None = None
    name: ACIdentifier | None = None
    labels: Labels | None = None

    def label(self, name: str) -> str | None:
        """The value of label ``name``, if any."""
        return find_value(self.labels, name)


class RuntimeApp(SchemaModel):
    """One app of the pod (pods.md ``apps``)."""

    name: ACName
    image: RuntimeImage
    #: Overrides the image manifest's ``app`` when present.
    app: App | None = None
    read_only_root_fs: bool = Field(False, alias="readOnlyRootFS")
    mounts: list[Mount] | None = None
    #: Merged over the image's annotations, these winning (pods.md).
    annotations: Annotations | None = None

    def annotation(self, name: str) -> str | None:
        """The value of this app's annotation ``name``, if any."""
        return find_value(self.annotations, name)


class ExposedPort(SchemaModel):
    """A port to forward from the host (pods.md ``ports``)."""

    name: ACName
    host_port: Annotated[int, Field(ge=1, le=65535)] = Field(alias="hostPort")
    host_ip: IPAddress | None = Field(None, alias="hostIP")
    #: Overrides the image's port of the same name.
    pod_port: Port | None = Field(None, alias="podPort")


def _check_apps(apps: list[RuntimeApp]) -> list[RuntimeApp]:
    seen: dict[str, int] = {}
    for index, app in enumerate(apps):
        if app.name in seen:
            raise FieldProblem(
                f"duplicate app name {quote(app.name)} (also at index {seen[app.name]})",
                index,
                "name",
            )
        seen[app.name] = index
    return apps


def _check_volumes(volumes: list[Volume]) -> list[Volume]:
    seen: dict[str, int] = {}
    for index, volume in enumerate(volumes):
        if volume.name in seen:
            raise FieldProblem(
                f"duplicate volume name {quote(volume.name)} (also at index {seen[volume.name]})",
                index,
                "name",
            )
        seen[volume.name] = index
    return volumes


class PodManifest(SchemaDocument):
    """A pod's manifest (pods.md).

    The list fields accept ``null``, which the reference writes for empty lists
    (``"volumes": null``), and keep it on output.
    """

    _REQUIRED_KEYS: ClassVar[tuple[str, ...]] = ("acKind", "acVersion", "apps")
    _DEFAULT_SOURCE: ClassVar[str] = "pod manifest"

    ac_version: SemVer = Field(APPC_VERSION, alias="acVersion")
    ac_kind: str = Field(POD_MANIFEST_KIND, alias="acKind")
    apps: Annotated[list[RuntimeApp], AfterValidator(_check_apps)] | None = Field(
        default_factory=list
    )
    volumes: Annotated[list[Volume], AfterValidator(_check_volumes)] | None = None
    #: Not type-checked at pod level, as in the reference (checklist section 3).
    isolators: list[Isolator] | None = None
    annotations: Annotations | None = None
    ports: list[ExposedPort] | None = None
    user_annotations: dict[str, str] | None = Field(None, alias="userAnnotations")
    user_labels: dict[str, str] | None = Field(None, alias="userLabels")

    @model_validator(mode="after")
    def _check_kind(self) -> Self:
        if self.ac_kind != POD_MANIFEST_KIND:
            raise FieldProblem(
                f'must be "{POD_MANIFEST_KIND}", not {quote(self.ac_kind)}', "acKind"
            )
        self.model_fields_set.update(("ac_kind", "ac_version", "apps"))
        return self

    @classmethod
    def parse(cls, data: bytes | str, *, source: str = "pod manifest") -> Self:
        """Parse and validate pod manifest JSON.

        Raises :class:`~rkt.errors.ManifestError` with one line naming ``source`` and the
        field, e.g. ``pod manifest: volumes[1].source: a host volume needs a source``.
        """
        return super().parse(data, source=source)

    def app(self, name: str) -> RuntimeApp | None:
        """The app called ``name``, if any."""
        return next((a for a in self.apps or () if a.name == name), None)

    def volume(self, name: str) -> Volume | None:
        """The pod volume called ``name``, if any."""
        return next((v for v in self.volumes or () if v.name == name), None)

    def annotation(self, name: str) -> str | None:
        """The value of pod annotation ``name``, if any."""
        return find_value(self.annotations, name)

    def is_reified(self) -> bool:
        """Whether every app names its image by ID (pods.md: required before running)."""
        return all(app.image.id is not None for app in self.apps or ())
