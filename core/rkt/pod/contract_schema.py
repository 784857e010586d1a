"""The stage1 contract as a JSON Schema (draft 2020-12), generated from :mod:`rkt.pod.contract`.

The schema is derived from the records' annotations (``str`` is a string,
``X | None`` may be ``null``, ``tuple[X, ...]`` is an array, a record is an
object) and from the shape their ``to_json`` writes, where it differs from the
fields: a few renamed keys (AppPort's ``count``, NetAttachment's rkt 1.x names),
``apps.json``'s volumes keyed by name, runtime.json's apps flattening the
resolved app. :func:`contract_schema` checks itself against ``to_json`` of a
record filled in from its annotations, so a field added to a record without
its JSON (or the other way round) fails here rather than in the docs.

Not on the run path: ``python -m rkt.pod.contract_schema`` prints the schema,
checked in as ``docs/stage1-contract.schema.json`` (tests/pods/test_contract_schema.py
regenerates and compares it); docs/stage1.md describes each field.
"""

from __future__ import annotations

import json
import types
import typing
from typing import Any, NamedTuple

from rkt.pod import contract
from rkt.pod.contract import CONTRACT_VERSION

SCHEMA_ID = "https://rkt.invalid/stage1-contract.schema.json"

#: the records, in the order the schema lists them
RECORDS: tuple[type[tuple[Any, ...]], ...] = (
    contract.ResolvedPod, contract.ResolvedApp, contract.ResolvedVolume, contract.AppMount,
    contract.AppPort, contract.Resources, contract.SeccompFilter,
    contract.SupervisorJob, contract.PlacedApp, contract.OverlayDirs,
    contract.PodRuntime, contract.PodCgroups, contract.PodNetwork, contract.NetAttachment,
)
#: records whose ``to_json`` is a whole document (it carries the interface version)
DOCUMENTS = {"ResolvedPod": "apps.json", "SupervisorJob": "runtime.json"}
#: records a backend receives as Python objects only (no JSON of theirs crosses a
#: process boundary): their schema is of their fields
OBJECTS = ("PodRuntime", "PodCgroups", "PodNetwork")


class Shape(NamedTuple):
    """Where a record's JSON differs from its fields."""

    #: field -> the key ``to_json`` writes it under
    rename: dict[str, str] = {}
    #: fields left out of the JSON
    omit: frozenset[str] = frozenset()
    #: field -> the schema of the key, when the annotation does not say it
    override: dict[str, dict[str, Any]] = {}
    #: keys written before the fields (a document's version)
    leading: dict[str, dict[str, Any]] = {}


_PAIRS_AS_OBJECT = {"type": "object", "additionalProperties": {"type": "string"}}
#: runtime.json's apps: the resolved app's process fields as ``ResolvedApp``'s,
#: mounts with the volume's source placed by the backend
_PLACED_MOUNT = {
    "type": "object",
    "properties": {"source": {"type": "string"}, "target": {"type": "string"},
                   "read_only": {"type": "boolean"}, "recursive": {"type": "boolean"}},
    "required": ["source", "target", "read_only", "recursive"],
    "additionalProperties": False,
}
_VERSION = {"version": {"const": CONTRACT_VERSION}}

SHAPES: dict[str, Shape] = {
    "ResolvedPod": Shape(
        leading=_VERSION,
        override={"volumes": {"type": "object",
                              "additionalProperties": {"$ref": "#/$defs/ResolvedVolume"}}},
    ),
    "ResolvedVolume": Shape(omit=frozenset({"name"})),  # the key in apps.json's volumes
    "AppPort": Shape(rename={"port_count": "count"}),
    "SupervisorJob": Shape(leading=_VERSION),
    "PlacedApp": Shape(
        omit=frozenset({"app", "mount_sources"}),
        override={"etc_files": _PAIRS_AS_OBJECT, "etc_overrides": _PAIRS_AS_OBJECT},
    ),
    "NetAttachment": Shape(rename={"name": "netName", "conf_path": "netConf",
                                   "plugin_path": "pluginPath", "ifname": "ifName"}),
}

_SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean",
            type(None): "null"}


def _type_schema(annotation: Any) -> dict[str, Any]:
    """The JSON Schema of a value annotated ``annotation`` in a record."""
    if annotation in _SCALARS:
        return {"type": _SCALARS[annotation]}
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [_type_schema(a) for a in args]
        kinds = [m.get("type") for m in members]
        if all(isinstance(k, str) for k in kinds):
            return {"type": kinds}
        return {"anyOf": members}
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return {"type": "array", "items": _type_schema(args[0])}
    if origin is tuple:
        return {"type": "array", "prefixItems": [_type_schema(a) for a in args],
                "items": False, "minItems": len(args)}
    if origin is frozenset:
        return {"type": "array", "items": _type_schema(args[0]), "uniqueItems": True}
    if isinstance(annotation, type) and issubclass(annotation, tuple) and hasattr(
            annotation, "_fields"):
        return {"$ref": f"#/$defs/{annotation.__name__}"}
    raise TypeError(f"no JSON Schema for {annotation!r}")


def _record_schema(record: type[tuple[Any, ...]]) -> dict[str, Any]:
    name = record.__name__
    shape = SHAPES.get(name, Shape())
    hints = typing.get_type_hints(record, vars(contract))
    properties: dict[str, Any] = dict(shape.leading)
    for field in record._fields:  # type: ignore[attr-defined]
        if field in shape.omit:
            continue
        key = shape.rename.get(field, field)
        properties[key] = shape.override.get(field) or _type_schema(hints[field])
    if name == "PlacedApp":
        properties = _placed_app(properties)
    doc = (record.__doc__ or "").strip().split("\n\n")[0]
    # to_json writes every key, null and all; a Python object has every field
    return {"description": " ".join(doc.split()), "type": "object",
            "properties": properties, "required": list(properties),
            "additionalProperties": False}


def _placed_app(own: dict[str, Any]) -> dict[str, Any]:
    """runtime.json's app: its name, where it was placed, and the resolved app's
    process fields (``ResolvedApp.process_json``), in ``to_json``'s order."""
    app = _record_schema(contract.ResolvedApp)["properties"]
    process = list(_sample(contract.ResolvedApp).process_json())
    placed = {"name": app["name"], "root": own["root"], "overlay": own["overlay"]}
    placed.update((key, app[key]) for key in process)
    placed["mounts"] = {"type": "array", "items": _PLACED_MOUNT}
    placed.update((key, own[key]) for key in ("etc_files", "cgroups", "etc_overrides"))
    return placed


# -- filling records in from their annotations, to check the schema against to_json -----
def _sample_value(annotation: Any) -> Any:
    if annotation is str:
        return "x"
    if annotation in (int, float):
        return annotation(1)
    if annotation is bool:
        return True
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return _sample_value(next(a for a in args if a is not type(None)))
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return (_sample_value(args[0]),)
    if origin is tuple:
        return tuple(_sample_value(a) for a in args)
    if origin is frozenset:
        return frozenset({_sample_value(args[0])})
    return _sample(annotation)


def _sample(record: Any) -> Any:
    """``record`` with every field set (none ``None``, every array one item long)."""
    hints = typing.get_type_hints(record, vars(contract))
    values = {f: _sample_value(hints[f]) for f in record._fields}
    if record is contract.ResolvedPod:
        # apps mount the pod's volumes by name
        values["volumes"] = (contract.ResolvedVolume("x", "host", "/x"),)
    return record(**values)


def _json_of(record: Any) -> Any:
    """What ``to_json`` writes for a filled-in ``record`` (as data), or None for
    the Python-only records."""
    sample = _sample(record)
    to_json = getattr(sample, "to_json", None)
    if to_json is None:
        return None
    written = to_json()
    return json.loads(written) if isinstance(written, str) else written


def _follow_to_json(schema: dict[str, Any]) -> None:
    """List each record's keys in the order its ``to_json`` writes them, and fail
    unless it writes exactly the keys its schema lists."""
    for record in RECORDS:
        data = _json_of(record)
        if data is None:
            continue
        definition = schema["$defs"][record.__name__]
        listed = definition["properties"]
        if set(data) != set(listed):
            raise AssertionError(f"{record.__name__}.to_json writes {sorted(data)}; "
                                 f"its schema lists {sorted(listed)}")
        definition["properties"] = {key: listed[key] for key in data}
        definition["required"] = list(data)


def contract_schema() -> dict[str, Any]:
    """The whole contract: every record under ``$defs``, the documents by file name."""
    defs: dict[str, Any] = {}
    for record in RECORDS:
        defs[record.__name__] = _record_schema(record)
    files = {
        "pid": {"description": "<pod>/pid: the host PID of the pod's PID 1, in decimal",
                "type": "string", "pattern": "^[0-9]+\\n?$"},
        "status": {"description": "stage1/rootfs/rkt/status/<app>: the app's exit code, in "
                   "decimal (128 + N for an app killed by signal N)",
                   "type": "string", "pattern": "^[0-9]+\\n?$"},
        "oom": {"description": "stage1/rootfs/rkt/status/<app>-oom: how many OOM kills the "
                "app's cgroup counted, written before its exit code",
                "type": "string", "pattern": "^[0-9]+\\n?$"},
    }
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": f"rkt stage1 contract, interface version {CONTRACT_VERSION}",
        "description": (
            "Generated by `python -m rkt.pod.contract_schema` from rkt.pod.contract; "
            "docs/stage1.md explains every field. Documents: apps.json is "
            "#/$defs/ResolvedPod, runtime.json is #/$defs/SupervisorJob; PodRuntime, "
            "PodCgroups and PodNetwork are the objects a backend's run receives (their "
            "fields, not JSON); #/$defs/files are the text files a backend writes."
        ),
        "$defs": {**defs, "files": {"type": "object", "properties": files}},
        "oneOf": [{"$ref": f"#/$defs/{name}"} for name in DOCUMENTS],
    }
    _follow_to_json(schema)
    return schema


def render() -> str:
    return json.dumps(contract_schema(), indent=2) + "\n"


if __name__ == "__main__":
    print(render(), end="")
