"""The image manifest (appc-spec/aci.md, "Image Manifest Schema").

``ImageManifest.parse(text)`` validates a manifest as the reference implementation does
(reference/appc-checklist.md section 3) and ``to_json()`` gives the same JSON back.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, ClassVar, Self

from pydantic import AfterValidator, Field, model_validator

from rkt import APPC_VERSION
from rkt.schema.base import FieldProblem, SchemaDocument, SchemaModel, quote
from rkt.schema.types import (
    AbsolutePath,
    ACIdentifier,
    ACName,
    Annotations,
    AppIsolators,
    DependencyImageID,
    Environment,
    Isolator,
    Labels,
    NonEmptyString,
    SemVer,
    UnsignedID,
    find_value,
    validate_image_id,
)

LOG = logging.getLogger(__name__)

IMAGE_MANIFEST_KIND = "ImageManifest"
EVENT_HANDLER_NAMES = ("pre-start", "post-stop")


class EventHandler(SchemaModel):
    """``{"name": "pre-start" | "post-stop", "exec": [...]}`` (aci.md ``eventHandlers``)."""

    name: str
    exec: list[str]

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.name not in EVENT_HANDLER_NAMES:
            raise FieldProblem(
                f'unknown event handler {quote(self.name)} (must be "pre-start" or "post-stop")',
                "name",
            )
        if not self.exec:
            raise FieldProblem("must not be empty", "exec")
        return self


class MountPoint(SchemaModel):
    """Where the app expects a volume (aci.md ``mountPoints``).

    ``path`` may be absent, as the reference allows; the pod's ``mounts`` give the path.
    """

    name: ACName
    path: str | None = None
    #: aci.md: "defaults to false if unsupplied".
    read_only: bool = Field(False, alias="readOnly")


class Port(SchemaModel):
    """A port or port range the app listens on (aci.md ``ports``)."""

    name: ACName
    protocol: NonEmptyString
    port: Annotated[int, Field(ge=1, le=65535)]
    #: The raw ``count``; 0 is accepted because the reference reads it as 1 and tools
    #: built on it (docker2aci) write it. Use :attr:`effective_count`.
    count: Annotated[int, Field(ge=0)] = 1
    socket_activated: bool = Field(False, alias="socketActivated")

    @property
    def effective_count(self) -> int:
        """How many ports the range holds (aci.md: default 1)."""
        return self.count or 1

    @property
    def port_range(self) -> range:
        """``port`` .. ``port + count - 1``."""
        return range(self.port, self.port + self.effective_count)

    @model_validator(mode="after")
    def _check_range(self) -> Self:
        if self.port + self.effective_count > 65536:
            raise FieldProblem(
                f"port range {self.port}-{self.port + self.effective_count - 1} ends above 65535",
                "count",
            )
        return self


def _check_event_handlers(handlers: list[EventHandler]) -> list[EventHandler]:
    seen: dict[str, int] = {}
    for index, handler in enumerate(handlers):
        if handler.name in seen:
            raise FieldProblem(
                f"only one {quote(handler.name)} event handler is allowed "
                f"(another is at index {seen[handler.name]})",
                index,
                "name",
            )
        seen[handler.name] = index
    return handlers


def _check_working_directory(value: str) -> str:
    # The reference treats "" as unset, but Go never writes it (omitempty); the spec
    # says "must be an absolute path", so a present value must be one.
    if not value.startswith("/"):
        raise ValueError(f"{quote(value)} is not an absolute path")
    return value


class App(SchemaModel):
    """How to run the image (aci.md ``app``); also a pod app's override (pods.md)."""

    #: Empty or absent is valid (checklist, CHANGELOG 0.8.x): the pod supplies one.
    exec: list[str] | None = None
    event_handlers: Annotated[list[EventHandler], AfterValidator(_check_event_handlers)] | None = (
        Field(None, alias="eventHandlers")
    )
    user: NonEmptyString
    group: NonEmptyString
    # The Go field is "supplementaryGIDs"; the spec's example says "supplementaryGids"
    # and Go reads keys case-insensitively, so both are read and the first is written.
    supplementary_gids: list[UnsignedID] | None = Field(
        None,
        validation_alias="supplementaryGIDs",
        serialization_alias="supplementaryGIDs",
    )
    #: aci.md: "defaults to "/"".
    working_directory: Annotated[str, AfterValidator(_check_working_directory)] = Field(
        "/", alias="workingDirectory"
    )
    environment: Environment | None = None
    isolators: AppIsolators | None = None
    mount_points: list[MountPoint] | None = Field(None, alias="mountPoints")
    ports: list[Port] | None = None
    user_annotations: dict[str, str] | None = Field(None, alias="userAnnotations")
    user_labels: dict[str, str] | None = Field(None, alias="userLabels")

    @model_validator(mode="before")
    @classmethod
    def _accept_spec_spelling(cls, data: Any) -> Any:
        if (
            isinstance(data, dict)
            and "supplementaryGids" in data
            and "supplementaryGIDs" not in data
            and "supplementary_gids" not in data
        ):
            data = dict(data)
            data["supplementaryGIDs"] = data.pop("supplementaryGids")
        return data

    def env(self) -> dict[str, str]:
        """The environment as a dict, in manifest order."""
        return {variable.name: variable.value for variable in self.environment or ()}

    def event_handler(self, name: str) -> EventHandler | None:
        """The ``pre-start`` or ``post-stop`` handler, if any."""
        return next((h for h in self.event_handlers or () if h.name == name), None)

    def isolator(self, name: str) -> Isolator | None:
        """The last isolator called ``name`` (the reference's ``GetByName``), if any."""
        return next((i for i in reversed(self.isolators or ()) if i.name == name), None)

    def mount_point(self, name: str) -> MountPoint | None:
        """The mount point called ``name``, if any."""
        return next((m for m in self.mount_points or () if m.name == name), None)

    def port(self, name: str) -> Port | None:
        """The port called ``name``, if any."""
        return next((p for p in self.ports or () if p.name == name), None)


class Dependency(SchemaModel):
    """An image to lay down before this one (aci.md ``dependencies``)."""

    image_name: ACIdentifier = Field(alias="imageName")
    image_id: DependencyImageID | None = Field(None, alias="imageID")
    labels: Labels | None = None
    #: The ACE SHOULD check it to stop "endless data" attacks (aci.md).
    size: Annotated[int, Field(ge=0, le=2**63 - 1)] | None = None

    def label(self, name: str) -> str | None:
        """The value of label ``name``, if any."""
        return find_value(self.labels, name)

    def matches(self, image_id: str) -> bool:
        """Whether a fetched image with ``image_id`` satisfies this dependency's pin.

        No pin matches anything. A pin matches the same full ID or the 64-digit store
        key that starts it; a pin that is not a real ID (``"sha512-..."``) matches nothing.
        """
        if self.image_id is None:
            return True
        try:
            validate_image_id(self.image_id)
            validate_image_id(image_id)
        except ValueError:
            return False
        shorter, longer = sorted((self.image_id, image_id), key=len)
        return longer.startswith(shorter)


class ImageManifest(SchemaDocument):
    """An ACI's ``manifest`` file (aci.md)."""

    _REQUIRED_KEYS: ClassVar[tuple[str, ...]] = ("acKind", "acVersion")
    _DEFAULT_SOURCE: ClassVar[str] = "manifest"

    ac_kind: str = Field(IMAGE_MANIFEST_KIND, alias="acKind")
    ac_version: SemVer = Field(APPC_VERSION, alias="acVersion")
    name: ACIdentifier
    labels: Labels | None = None
    app: App | None = None
    dependencies: list[Dependency] | None = None
    #: aci.md: an empty list means the same as an absent one (keep everything).
    path_whitelist: list[AbsolutePath] | None = Field(None, alias="pathWhitelist")
    annotations: Annotations | None = None

    @model_validator(mode="after")
    def _check_kind(self) -> Self:
        if self.ac_kind != IMAGE_MANIFEST_KIND:
            raise FieldProblem(
                f'must be "{IMAGE_MANIFEST_KIND}", not {quote(self.ac_kind)}', "acKind"
            )
        # Always written, even when a Python caller relied on the defaults.
        self.model_fields_set.update(("ac_kind", "ac_version"))
        return self

    @classmethod
    def parse(cls, data: bytes | str, *, source: str = "manifest") -> Self:
        """Parse and validate manifest JSON.

        Raises :class:`~rkt.errors.ManifestError` with one line naming ``source`` and the
        field, e.g. ``manifest: app.user: must be a non-empty string``.
        """
        return super().parse(data, source=source)

    def label(self, name: str) -> str | None:
        """The value of label ``name``, if any."""
        return find_value(self.labels, name)

    def annotation(self, name: str) -> str | None:
        """The value of annotation ``name``, if any."""
        return find_value(self.annotations, name)

    @property
    def version(self) -> str | None:
        """The ``version`` label, if any."""
        return self.label("version")

    @property
    def os(self) -> str | None:
        """The ``os`` label, if any (absent: the image is OS-independent)."""
        return self.label("os")

    @property
    def arch(self) -> str | None:
        """The ``arch`` label, if any; meaningful only with ``os`` (aci.md)."""
        return self.label("arch")
