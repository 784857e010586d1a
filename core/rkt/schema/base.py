"""Plumbing shared by the appc schema models: strict JSON parsing, one-line errors, exact output.

Every model derives from :class:`SchemaModel`. The two documents (image and pod manifests)
derive from :class:`SchemaDocument`, which adds ``parse``, ``from_dict`` and ``to_json``.

Rules that hold for every model, and why:

- Input keys are the spec's camelCase names. Unknown keys are ignored and never emitted,
  as the reference Go code does (``encoding/json`` drops them), so manifests written by
  newer tools still load.
- Parsing is strict: a JSON ``"80"`` is not a port and ``4000.0`` is not an integer, as
  in Go. Python callers may build models by field name (``read_only=True``).
- What was absent stays absent on output (``exclude_unset``), and ``null`` stays ``null``
  where a list was ``null``: the reference writes ``"volumes": null`` in pod manifests
  and readers compare manifests byte for byte less often than value for value.
- Defaults the runtime needs are the fields' Python defaults, so ``mount_point.read_only``
  is ``False`` when the manifest says nothing, yet ``to_json`` does not invent the key.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import ErrorDetails

from rkt.errors import ManifestError

LOG = logging.getLogger(__name__)

PathPart = str | int


class FieldProblem(ValueError):
    """A validation failure, optionally located below the field that raised it.

    Validators of lists raise it with the index and key of the offending entry
    (``FieldProblem('duplicate label "os"', 2, "name")``) so the user reads
    ``labels[2].name: ...`` instead of a message about the whole list.
    """

    def __init__(self, message: str, *path: PathPart) -> None:
        super().__init__(message)
        self.message = message
        self.path: tuple[PathPart, ...] = path

    def under(self, *prefix: PathPart) -> FieldProblem:
        """The same problem, located ``prefix`` levels further down."""
        return FieldProblem(self.message, *prefix, *self.path)


def format_path(parts: tuple[PathPart, ...] | list[PathPart]) -> str:
    """``("app", "ports", 0, "port")`` -> ``app.ports[0].port``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def quote(value: object) -> str:
    """A value as it appears in JSON, for error messages (``"Foo"``, ``12``, ``null``)."""
    try:
        text = json.dumps(value, ensure_ascii=True)
    except (TypeError, ValueError):
        text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return text


_SIMPLE_MESSAGES = {
    "missing": "is required",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "bool_type": "must be true or false",
    "list_type": "must be a list",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "dataclass_type": "must be an object",
    "string_too_short": "must be a non-empty string",
    "too_short": "must not be empty",
}


def _describe(error: ErrorDetails) -> tuple[tuple[PathPart, ...], str]:
    loc: tuple[PathPart, ...] = tuple(error["loc"])
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind in ("value_error", "assertion_error"):
        exc = ctx.get("error")
        if isinstance(exc, FieldProblem):
            return loc + exc.path, exc.message
        if isinstance(exc, BaseException):
            return loc, str(exc)
    if kind in _SIMPLE_MESSAGES:
        return loc, _SIMPLE_MESSAGES[kind]
    if kind == "greater_than_equal":
        return loc, f"must be at least {ctx.get('ge')}"
    if kind == "less_than_equal":
        return loc, f"must be at most {ctx.get('le')}"
    message = error["msg"]
    return loc, message[:1].lower() + message[1:]


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One line naming ``source``, the field path and what is wrong with the first error.

    The CLI shows one line per failure, so later errors are only counted; the full
    list goes to the debug log.
    """
    errors = exc.errors()
    LOG.debug("%s: %d schema error(s): %s", source, len(errors), errors)
    path, message = _describe(errors[0])
    where = format_path(path)
    text = f"{source}: {where}: {message}" if where else f"{source}: {message}"
    if len(errors) > 1:
        text += f" (and {len(errors) - 1} more)"
    return text


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _reject_constant(name: str) -> object:
    # Python's json accepts NaN and Infinity; JSON (RFC 4627) and Go do not.
    raise ValueError(f"{name} is not a JSON value")


def _parse_float(text: str) -> float:
    number = float(text)
    if number in (float("inf"), float("-inf")):
        # 1e999 would come back as Infinity, which JSON cannot hold.
        raise ValueError(f"number {text[:40]} is out of range")
    return number


#: Deepest nesting accepted in a document. Manifests need about ten levels; the bound
#: keeps hostile input away from recursion limits in the parser and serialiser.
MAX_JSON_DEPTH = 100


def json_depth(value: object) -> int:
    """How deeply ``value`` nests lists and objects (a scalar is 0), without recursion."""
    deepest = 0
    pending: list[tuple[object, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            children: list[object] = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth + 1)
        pending.extend((child, depth + 1) for child in children)
    return deepest


def load_json_object(data: bytes | str, source: str) -> dict[str, Any]:
    """Decode ``data`` as one JSON object or raise :class:`ManifestError` naming ``source``."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{source}: not valid UTF-8 (byte offset {exc.start})") from exc
    try:
        document = json.loads(text, parse_constant=_reject_constant, parse_float=_parse_float)
    except json.JSONDecodeError as exc:
        raise ManifestError(
            f"{source}: not valid JSON (line {exc.lineno} column {exc.colno}): {exc.msg}"
        ) from exc
    except RecursionError as exc:
        # Hostile input such as 100000 nested arrays must not crash the parser.
        raise ManifestError(
            f"{source}: JSON nested too deeply (more than {MAX_JSON_DEPTH} levels)"
        ) from exc
    except ValueError as exc:
        raise ManifestError(f"{source}: not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ManifestError(f"{source}: must be a JSON object, not {_json_kind(document)}")
    if json_depth(document) > MAX_JSON_DEPTH:
        raise ManifestError(
            f"{source}: JSON nested too deeply (more than {MAX_JSON_DEPTH} levels)"
        )
    return document


class SchemaModel(BaseModel):
    """Base of every appc schema model (see the module docstring for the rules)."""

    model_config = ConfigDict(
        validate_by_alias=True,
        validate_by_name=True,
        serialize_by_alias=True,
        extra="ignore",
        validate_assignment=True,
    )

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of this model: camelCase keys, nothing that was not set."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


class SchemaDocument(SchemaModel):
    """A top-level manifest: parsed from JSON text, serialised back to it exactly."""

    #: Keys that must be present in a parsed document although Python callers get defaults.
    _REQUIRED_KEYS: ClassVar[tuple[str, ...]] = ()
    #: The ``source`` used when no better name is known.
    _DEFAULT_SOURCE: ClassVar[str] = "manifest"

    @classmethod
    def _validate_document(cls, document: Mapping[str, Any], source: str) -> Self:
        for key in cls._REQUIRED_KEYS:
            if key not in document:
                raise ManifestError(f"{source}: {key}: is required", field=key)
        try:
            return cls.model_validate(document, strict=True, by_alias=True, by_name=False)
        except ValidationError as exc:
            field = format_path(_describe(exc.errors()[0])[0])
            raise ManifestError(format_validation_error(exc, source), field=field) from exc

    @classmethod
    def parse(cls, data: bytes | str, *, source: str = "manifest") -> Self:
        """Parse and validate JSON text; raise :class:`~rkt.errors.ManifestError` naming
        ``source`` and the offending field on one line."""
        return cls._validate_document(load_json_object(data, source), source)

    @classmethod
    def from_dict(cls, document: Mapping[str, Any], *, source: str | None = None) -> Self:
        """Validate an already decoded JSON object (camelCase keys).

        Raises :class:`~rkt.errors.ManifestError` like ``parse`` does.
        """
        return cls._validate_document(document, source or cls._DEFAULT_SOURCE)

    def to_json(self, *, indent: int | None = None) -> str:
        """Serialise to JSON text; keys absent when parsed stay absent.

        The document is validated again first, as the reference does on marshalling,
        because Python callers may have mutated lists in place; an invalid document
        raises :class:`~rkt.errors.ManifestError` instead of being written.
        """
        document = self.to_dict()
        type(self)._validate_document(document, self._DEFAULT_SOURCE)
        # ensure_ascii keeps lone surrogates (valid in JSON text) from breaking writers.
        return json.dumps(document, indent=indent)
