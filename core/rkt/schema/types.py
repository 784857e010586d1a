"""The appc shared types (appc-spec/types.md) and the small objects built from them.

Validators are plain functions (``validate_ac_identifier`` and friends) that return the
value or raise ValueError with a one-line message; the ``Annotated`` types wrap them
for pydantic models. Where the reference implementation and the spec text disagree
(reference/appc-checklist.md section 1) the choice is documented on the function.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import logging
import re
from collections.abc import Sequence
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, Field

from rkt.schema import isolators as _isolators
from rkt.schema.base import MAX_JSON_DEPTH, FieldProblem, SchemaModel, json_depth, quote

LOG = logging.getLogger(__name__)

# --------------------------------------------------------------------------- identifiers

_AC_IDENTIFIER_CHARS = re.compile(r"[a-z0-9._~/-]+\Z")
_AC_NAME_CHARS = re.compile(r"[a-z0-9-]+\Z")
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")


def validate_ac_identifier(value: str) -> str:
    """Return ``value`` if it is an AC Identifier (types.md), else raise ValueError.

    The spec's regex is ``^[a-z0-9]+([-._~/][a-z0-9]+)*$``. The reference implementation
    checks two looser rules instead: only ``[a-z0-9-._~/]`` characters, and an
    alphanumeric first and last character, so it accepts ``a..b`` and ``a/-b``. Real
    images were built with it, so we accept what it accepts, with one exception: a
    ``/``-separated segment may not be empty, ``.`` or ``..``. Names become URL paths
    (discovery) and key store directories, where ``example.com/../x`` or ``a//b``
    would name something other than what they appear to.
    """
    if not isinstance(value, str):
        raise ValueError(f"{quote(value)} is not an AC Identifier: must be a string")
    if not value:
        raise ValueError("must not be empty")
    if not _AC_IDENTIFIER_CHARS.match(value):
        raise ValueError(
            f'{quote(value)} is not an AC Identifier: only lowercase letters, digits and "-._~/"'
            " are allowed"
        )
    if value[0] not in _ALNUM or value[-1] not in _ALNUM:
        raise ValueError(
            f"{quote(value)} is not an AC Identifier: must start and end with a lowercase"
            " letter or digit"
        )
    if any(segment in ("", ".", "..") for segment in value.split("/")):
        raise ValueError(
            f'{quote(value)} is not an AC Identifier: "/"-separated parts must not be empty,'
            ' "." or ".."'
        )
    return value


def validate_ac_name(value: str) -> str:
    """Return ``value`` if it is an AC Name (types.md), else raise ValueError.

    Like the reference implementation we check ``[a-z0-9-]`` characters and an
    alphanumeric first and last character, so ``a--b`` is accepted although the spec's
    regex ``^[a-z0-9]+([-][a-z0-9]+)*$`` rejects it; that is harmless anywhere a name
    is used (file names, unit names, environment values).
    """
    if not isinstance(value, str):
        raise ValueError(f"{quote(value)} is not an AC Name: must be a string")
    if not value:
        raise ValueError("must not be empty")
    if not _AC_NAME_CHARS.match(value):
        raise ValueError(
            f'{quote(value)} is not an AC Name: only lowercase letters, digits and "-" are allowed'
        )
    if value[0] not in _ALNUM or value[-1] not in _ALNUM:
        raise ValueError(
            f"{quote(value)} is not an AC Name: must start and end with a lowercase letter"
            " or digit"
        )
    return value


_IMAGE_ID = re.compile(r"sha512-(?:[0-9a-f]{64}|[0-9a-f]{128})\Z")


def validate_image_id(value: str) -> str:
    """Return ``value`` if it is ``sha512-`` plus 64 or 128 lowercase hex digits.

    128 digits is the full SHA-512 (types.md, aci.md); 64 is the store's key length
    (DESIGN.md). The reference checks neither digits nor length; we do, because image
    IDs of pods and store entries become paths. See :data:`DependencyImageID` for the
    one looser place.
    """
    if not isinstance(value, str) or not _IMAGE_ID.match(value):
        raise ValueError(
            f'{quote(value)} is not an image ID: must be "sha512-" followed by 64 or 128'
            " lowercase hex digits"
        )
    return value


_DEPENDENCY_IMAGE_ID = re.compile(r"sha512-[A-Za-z0-9._~]+\Z")


def validate_dependency_image_id(value: str) -> str:
    """Return ``value`` if it is acceptable as a dependency's ``imageID`` pin.

    The reference accepts ``sha512-`` and any non-empty value without another ``-``;
    the spec's own example uses ``"sha512-..."``, and images carry such pins. We accept
    those too, restricted to URL-unreserved characters so the value can never act as a
    path. A pin that is not a real ID simply never matches an image
    (:meth:`rkt.schema.image.Dependency.matches`).
    """
    if not isinstance(value, str) or not _DEPENDENCY_IMAGE_ID.match(value):
        raise ValueError(f'{quote(value)} is not an image ID: must be "sha512-" and a hex digest')
    return value


# semver.org 2.0.0, with ASCII digits only.
_SEMVER = re.compile(
    r"(?P<major>0|[1-9][0-9]*)\.(?P<minor>0|[1-9][0-9]*)\.(?P<patch>0|[1-9][0-9]*)"
    r"(?:-(?P<pre>(?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)"
    r"(?:\.(?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+(?P<build>[0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?\Z"
)


def validate_semver(value: str) -> str:
    """Return ``value`` if it is a SemVer 2.0.0 version other than ``0.0.0`` (types.md).

    ``0.0.0`` is rejected as the reference does (it is Go's "unset" value). The major
    series is not compared with ours here: the reference only refuses major < 0, and
    the spec example pod template still says ``0.3.0``.
    """
    if not isinstance(value, str):
        raise ValueError(f"{quote(value)} is not a semantic version: must be a string")
    match = _SEMVER.match(value)
    if match is None:
        raise ValueError(f'{quote(value)} is not a semantic version (such as "0.8.11")')
    if (match["major"], match["minor"], match["patch"], match["pre"]) == ("0", "0", "0", None):
        raise ValueError("0.0.0 is not allowed as a version")
    return value


def semver_major(value: str) -> int:
    """The major number of a valid SemVer string (``"0.8.11"`` -> ``0``)."""
    return int(validate_semver(value).split(".", 1)[0])


_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?"
    r"(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))\Z"
)


def validate_timestamp(value: str) -> str:
    """Return ``value`` if it is an RFC 3339 ``date-time`` with the ``T`` (types.md)."""
    match = _RFC3339.match(value) if isinstance(value, str) else None
    valid = match is not None
    if match is not None:
        year, month, day, hour, minute, second = (int(match[i]) for i in range(1, 7))
        try:
            _dt.datetime(year, month, day, hour, minute, second)
        except ValueError:
            valid = False
        if match[8] and (int(match[9]) > 23 or int(match[10]) > 59):
            valid = False
    if not valid:
        raise ValueError(
            f'{quote(value)} is not an RFC 3339 date-time (such as "2014-10-27T19:32:27Z")'
        )
    return value


def validate_http_url(value: str) -> str:
    """Return ``value`` if its scheme is http or https (aci.md, annotations)."""
    scheme = urlsplit(value).scheme.lower() if isinstance(value, str) else ""
    if scheme not in ("http", "https"):
        raise ValueError(f"{quote(value)} is not an http or https URL")
    return value


def validate_absolute_path(value: str) -> str:
    """Return ``value`` if it is an absolute path."""
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(f"{quote(value)} is not an absolute path")
    if "\x00" in value:
        raise ValueError(f"{quote(value)} must not contain a NUL character")
    return value


def validate_ip_address(value: str) -> str:
    """Return ``value`` if it is an IP address.

    pods.md asks for an IPv4 dotted quad; the reference accepts anything Go's
    ``net.ParseIP`` does, IPv6 included, and so do we.
    """
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(
            f'{quote(value)} is not an IP address (such as "203.0.113.23")'
        ) from None
    return value


def _non_empty_string(value: Any) -> Any:
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty string")
    return value


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\Z")


def validate_environment_name(value: str) -> str:
    """Return ``value`` if it is a valid environment variable name (aci.md ``environment``).

    The spec allows letters, digits, ``_``, ``.`` and ``-``; like the reference we also
    refuse a leading digit, ``.`` or ``-``, which shells cannot name.
    """
    if not isinstance(value, str) or not _ENV_NAME.match(value):
        raise ValueError(
            f"{quote(value)} is not an environment variable name: use letters, digits, "
            '"_", "." and "-", starting with a letter or "_"'
        )
    return value


ACIdentifier = Annotated[str, AfterValidator(validate_ac_identifier)]
ACName = Annotated[str, AfterValidator(validate_ac_name)]
ImageID = Annotated[str, AfterValidator(validate_image_id)]
#: A dependency's ``imageID``: see :func:`validate_dependency_image_id`.
DependencyImageID = Annotated[str, AfterValidator(validate_dependency_image_id)]
SemVer = Annotated[str, AfterValidator(validate_semver)]
AbsolutePath = Annotated[str, AfterValidator(validate_absolute_path)]
NonEmptyString = Annotated[str, BeforeValidator(_non_empty_string)]
IPAddress = Annotated[str, AfterValidator(validate_ip_address)]
EnvironmentName = Annotated[str, AfterValidator(validate_environment_name)]
#: Unsigned 32-bit integers, as uid_t and gid_t are on Linux.
UnsignedID = Annotated[int, Field(ge=0, le=2**32 - 1)]

# ------------------------------------------------------------------------------ objects


class Label(SchemaModel):
    """``{"name": <AC Identifier>, "value": <string>}`` (aci.md ``labels``)."""

    name: ACIdentifier
    value: str


class Annotation(SchemaModel):
    """``{"name": <AC Identifier>, "value": <string>}`` (aci.md ``annotations``).

    pods.md says pod annotation names are AC Names; the reference checks them as AC
    Identifiers everywhere, and so do we.
    """

    name: ACIdentifier
    value: str


class EnvironmentVariable(SchemaModel):
    """``{"name": ..., "value": ...}`` (aci.md ``environment``)."""

    name: EnvironmentName
    value: str


def _check_json_value(value: Any) -> Any:
    # Iterative on purpose: isolator values are free-form, and a recursive walk (or
    # pydantic's JsonValue) over a hostile, deeply nested value would hit the recursion
    # limit. Parsed JSON always passes; this catches Python callers passing non-JSON.
    if json_depth(value) > MAX_JSON_DEPTH:
        raise ValueError(f"nested too deeply (more than {MAX_JSON_DEPTH} levels)")
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            if not all(isinstance(key, str) for key in item):
                raise ValueError("object keys must be strings")
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, float):
            if item != item or item in (float("inf"), float("-inf")):
                raise ValueError("must be a finite number")
        elif item is not None and not isinstance(item, str | int):
            raise ValueError(f"a {type(item).__name__} is not a JSON value")
    return value


#: Any JSON value, as json.loads returns it.
JSONValue = Annotated[Any, AfterValidator(_check_json_value)]


class Isolator(SchemaModel):
    """``{"name": <AC Identifier>, "value": <any JSON>}`` (types.md, ace.md).

    ``value`` keeps the JSON exactly as given. :meth:`parsed_value` returns the typed
    form of a known isolator (see :mod:`rkt.schema.isolators`).
    """

    name: ACIdentifier
    value: JSONValue

    @property
    def known(self) -> bool:
        """Whether this runtime knows the isolator's name."""
        return self.name in _isolators.KNOWN_ISOLATORS

    def parsed_value(self) -> _isolators.IsolatorValue | None:
        """The typed value, or ``None`` for an unknown name.

        Raises :class:`~rkt.schema.base.FieldProblem` (a ValueError) for a bad value;
        an app's isolators were already checked when the manifest was parsed.
        """
        return _isolators.parse_isolator_value(self.name, self.value)


# ------------------------------------------------------------------------- list rules

#: Operating systems and architectures a manifest may name: the spec's whitelist plus
#: what the reference's ``types.ValidOSArch`` adds for linux (aci.md ``labels``).
VALID_OS_ARCH: dict[str, tuple[str, ...]] = {
    "linux": (
        "amd64",
        "i386",
        "aarch64",
        "aarch64_be",
        "armv6l",
        "armv7l",
        "armv7b",
        "ppc64",
        "ppc64le",
        "s390x",
    ),
    "freebsd": ("amd64", "i386", "arm"),
    "darwin": ("x86_64", "i386"),
}


def _first_duplicate(names: Sequence[str]) -> tuple[int, int] | None:
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        if name in seen:
            return seen[name], index
        seen[name] = index
    return None


def check_labels(labels: list[Label]) -> list[Label]:
    """Unique names, none called ``name``, and a known os/arch pair (aci.md ``labels``).

    Like the reference, an unknown ``os`` is an error, and ``arch`` is checked only
    when ``os`` is present, since it means nothing without it.
    """
    for index, label in enumerate(labels):
        if label.name == "name":
            raise FieldProblem('"name" cannot be a label (it is the image name)', index, "name")
    duplicate = _first_duplicate([label.name for label in labels])
    if duplicate:
        first, index = duplicate
        raise FieldProblem(
            f"duplicate label {quote(labels[index].name)} (also at index {first})", index, "name"
        )
    values = {label.name: (index, label.value) for index, label in enumerate(labels)}
    if "os" in values:
        os_index, os_name = values["os"]
        if os_name not in VALID_OS_ARCH:
            raise FieldProblem(
                f"unsupported os {quote(os_name)} (supported: {', '.join(sorted(VALID_OS_ARCH))})",
                os_index,
                "value",
            )
        if "arch" in values:
            arch_index, arch = values["arch"]
            if arch not in VALID_OS_ARCH[os_name]:
                raise FieldProblem(
                    f"unsupported arch {quote(arch)} for os {quote(os_name)} "
                    f"(supported: {', '.join(VALID_OS_ARCH[os_name])})",
                    arch_index,
                    "value",
                )
    return labels


_ANNOTATION_CHECKS = {
    "created": validate_timestamp,
    "homepage": validate_http_url,
    "documentation": validate_http_url,
}


def check_annotations(annotations: list[Annotation]) -> list[Annotation]:
    """Unique names; ``created``, ``homepage`` and ``documentation`` well formed (aci.md).

    ``appc.io/executor/supports-systemd-notify`` is not checked, as in the reference;
    anything but ``"true"`` means false.
    """
    duplicate = _first_duplicate([annotation.name for annotation in annotations])
    if duplicate:
        first, index = duplicate
        raise FieldProblem(
            f"duplicate annotation {quote(annotations[index].name)} (also at index {first})",
            index,
            "name",
        )
    for index, annotation in enumerate(annotations):
        check = _ANNOTATION_CHECKS.get(annotation.name)
        if check is not None:
            try:
                check(annotation.value)
            except ValueError as exc:
                raise FieldProblem(str(exc), index, "value") from exc
    return annotations


def check_environment(environment: list[EnvironmentVariable]) -> list[EnvironmentVariable]:
    """Unique names (the reference rejects duplicates)."""
    duplicate = _first_duplicate([variable.name for variable in environment])
    if duplicate:
        first, index = duplicate
        raise FieldProblem(
            f"duplicate environment variable {quote(environment[index].name)} "
            f"(also at index {first})",
            index,
            "name",
        )
    return environment


def _check_app_isolator(isolator: Isolator) -> Isolator:
    _isolators.check_app_isolator(isolator.name, isolator.value)
    return isolator


def _check_app_isolator_set(isolators: list[Isolator]) -> list[Isolator]:
    _isolators.check_app_isolator_set([isolator.name for isolator in isolators])
    return isolators


Labels = Annotated[list[Label], AfterValidator(check_labels)]
Annotations = Annotated[list[Annotation], AfterValidator(check_annotations)]
Environment = Annotated[list[EnvironmentVariable], AfterValidator(check_environment)]
#: An app's isolators: every name known, every value well formed, no repeats or
#: conflicts (checklist section 3, ace.md). Pod-level isolators use ``list[Isolator]``.
AppIsolators = Annotated[
    list[Annotated[Isolator, AfterValidator(_check_app_isolator)]],
    AfterValidator(_check_app_isolator_set),
]


def find_value(items: Sequence[Label] | Sequence[Annotation] | None, name: str) -> str | None:
    """The value of the entry called ``name`` in a label or annotation list, if any."""
    for item in items or ():
        if item.name == name:
            return item.value
    return None
