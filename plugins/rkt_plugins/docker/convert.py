"""A Docker image config as an appc image manifest, mapped the way docker2aci did.

The mapping (``../shared/reference/rkt-behaviour.md`` section 8):

* name ``<registry>/<repository>`` made an AC Identifier; labels ``version`` (the
  tag), ``os`` and ``arch`` (Docker's Go architecture names mapped to appc's);
* ``exec`` is Entrypoint followed by Cmd; ``user``/``group`` come from User
  (``u:g``; ``u`` alone gives group ``u``; empty is root); the environment, working
  directory and Labels (as ``userLabels``) are copied;
* every VOLUME ``P`` becomes mount point ``volume-<P sanitized>`` (``-N`` suffixes
  for duplicates), every exposed ``80/tcp`` a port ``80-tcp``;
* ``appc.io/docker/*`` annotations record where the image came from, plus
  ``authors``, ``created`` and ``docker-comment``.

A stored image is reused for an unchanged Docker manifest only when it was
converted by the same rules: :data:`CONVERTER_VERSION` is part of what the remote
cache remembers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rkt import APPC_VERSION
from rkt.api import ImageError, ManifestError
from rkt_plugins.docker.documents import ImageConfig

#: Bump when the conversion of the same Docker image would produce a different ACI.
CONVERTER_VERSION = "rkt-python-docker/1"

ANNOTATION_PREFIX = "appc.io/docker/"

#: Docker's GOARCH (and arm variant) to appc arch (appc ``types/labels.go``).
_ARCH = {
    ("amd64", None): "amd64", ("386", None): "i386", ("arm64", None): "aarch64",
    ("arm64", "v8"): "aarch64", ("arm", None): "armv6l", ("arm", "v6"): "armv6l",
    ("arm", "v7"): "armv7l", ("ppc64", None): "ppc64", ("ppc64le", None): "ppc64le",
    ("s390x", None): "s390x",
}
_AC_NAME_INVALID = re.compile(r"[^a-z0-9-]")
_AC_NAME_EDGES = re.compile(r"^-+|-+$")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\Z")
_CREATED = re.compile(r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.\d+)?(Z|[+-]\d{2}:\d{2})\Z")


@dataclass(frozen=True)
class Origin:
    """Where an image came from, for its name, labels and annotations."""

    #: the AC Identifier the ACI is named
    name: str
    #: the ``version`` label
    version: str
    #: what the user typed, without ``docker://``
    original_name: str
    registry: str = ""
    repository: str = ""
    tag: str | None = None
    #: the digest of the image manifest the ACI was converted from
    manifest_digest: str = ""
    #: the digest of the image config: Docker's image ID
    image_id: str = ""


def sanitize_ac_name(text: str) -> str:
    """appc's ``SanitizeACName``: lowercase, invalid characters to ``-``, edges trimmed."""
    return _AC_NAME_EDGES.sub("", _AC_NAME_INVALID.sub("-", text.lower()))


def appc_arch(architecture: str, variant: str | None) -> str | None:
    return _ARCH.get((architecture, variant)) or _ARCH.get((architecture, None))


def parse_user(user: str) -> tuple[str, str]:
    """docker2aci's ``parseDockerUser``: ``u:g``, ``u`` (group ``u``), or root."""
    if not user:
        return "0", "0"
    name, sep, group = user.partition(":")
    if not sep:
        return name, name
    return name or "0", group or "0"


def _string_list(value: Any) -> list[str]:
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    if isinstance(value, str) and value:
        return [value]  # an old shell-form Cmd stored as one string
    return []


def _keys(value: Any) -> list[str]:
    return sorted(k for k in value if isinstance(k, str)) if isinstance(value, dict) else []


def _mount_points(volumes: list[str], warn: Callable[[str], None]) -> list[dict[str, Any]]:
    points = []
    seen: dict[str, int] = {}
    for path in volumes:
        if not path.startswith("/"):
            warn(f'ignoring volume "{path[:100]}": not an absolute path')
            continue
        name = sanitize_ac_name("volume/" + path.strip("/")) or "volume"
        if name in seen:
            seen[name] += 1
            name = f"{name}-{seen[name] - 1}"
        else:
            seen[name] = 1
        points.append({"name": name, "path": path})
    return points


def _ports(exposed: list[str], warn: Callable[[str], None]) -> list[dict[str, Any]]:
    ports = []
    for spec in exposed:
        number, _, protocol = spec.partition("/")
        protocol = protocol or "tcp"
        name = sanitize_ac_name(spec)
        if not number.isdigit() or not 1 <= int(number) <= 65535 or not name:
            warn(f'ignoring exposed port "{spec[:100]}": not PORT[/PROTOCOL]')
            continue
        ports.append({"name": name, "protocol": protocol, "port": int(number)})
    return sorted(ports, key=lambda port: port["name"])


def _environment(env: list[str], warn: Callable[[str], None]) -> list[dict[str, str]]:
    values: dict[str, str] = {}
    for item in env:
        name, sep, value = item.partition("=")
        if not sep:
            continue  # docker2aci skips entries without "="
        if not _ENV_NAME.match(name):
            warn(f'ignoring environment variable "{name[:100]}": not a valid name')
            continue
        values.pop(name, None)
        values[name] = value  # the last definition wins, as in Docker
    return [{"name": name, "value": value} for name, value in values.items()]


def _created(value: str) -> str | None:
    match = _CREATED.match(value)
    if match is None or value.startswith("0001-01-01"):
        return None
    return match[1] + match[2]


def created_epoch(config: ImageConfig) -> int:
    """The image's creation time in seconds since the epoch (0 when unknown)."""
    import datetime

    created = _created(config.created)
    if created is None:
        return 0
    try:
        when = datetime.datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return 0
    return max(0, int(when.timestamp()))


def image_manifest(
    origin: Origin, config: ImageConfig, *, warn: Callable[[str], None]
) -> dict[str, Any]:
    """The appc image manifest for an image with ``config`` from ``origin``."""
    container = config.container
    labels = [{"name": "version", "value": origin.version}]
    if config.os:
        labels.append({"name": "os", "value": config.os})
        arch = appc_arch(config.architecture, config.variant)
        if arch:
            labels.append({"name": "arch", "value": arch})
        elif config.architecture:
            warn(f'architecture "{config.architecture[:40]}" has no appc name; no arch label')
    entrypoint = _string_list(container.get("Entrypoint"))
    cmd = _string_list(container.get("Cmd"))
    annotations: list[tuple[str, str]] = [
        ("originalname", origin.original_name),
        ("registryurl", origin.registry),
        ("repository", origin.repository),
        ("tag", origin.tag or ""),
        ("imageid", origin.image_id),
        ("manifesthash", origin.manifest_digest),
        ("entrypoint", json.dumps(entrypoint) if entrypoint else ""),
        ("cmd", json.dumps(cmd) if cmd else ""),
    ]
    notes = [{"name": ANNOTATION_PREFIX + key, "value": value} for key, value in annotations
             if value]
    if config.author:
        notes.append({"name": "authors", "value": config.author})
    created = _created(config.created)
    if created:
        notes.append({"name": "created", "value": created})
    if config.comment:
        notes.append({"name": "docker-comment", "value": config.comment})

    raw_user = container.get("User")
    user, group = parse_user(raw_user if isinstance(raw_user, str) else "")
    app: dict[str, Any] = {"exec": entrypoint + cmd, "user": user, "group": group}
    if not app["exec"]:
        del app["exec"]
    environment = _environment(_string_list(container.get("Env")), warn)
    if environment:
        app["environment"] = environment
    working_dir = container.get("WorkingDir")
    if isinstance(working_dir, str) and working_dir:
        if working_dir.startswith("/"):
            app["workingDirectory"] = working_dir
        else:
            warn(f'ignoring working directory "{working_dir[:100]}": not an absolute path')
    mount_points = _mount_points(_keys(container.get("Volumes")), warn)
    if mount_points:
        app["mountPoints"] = mount_points
    exposed = _keys(container.get("ExposedPorts")) or _string_list(container.get("PortSpecs"))
    ports = _ports(exposed, warn)
    if ports:
        app["ports"] = ports
    user_labels = container.get("Labels")
    if isinstance(user_labels, dict):
        kept = {k: v for k, v in user_labels.items() if isinstance(k, str) and isinstance(v, str)}
        if kept:
            app["userLabels"] = kept
    return {
        "acKind": "ImageManifest",
        "acVersion": APPC_VERSION,
        "name": origin.name,
        "labels": labels,
        "app": app,
        "annotations": notes,
    }


def manifest_bytes(manifest: Mapping[str, Any], where: str) -> bytes:
    """The manifest as JSON, validated against the appc schema first."""
    from rkt.schema.image import ImageManifest

    data = json.dumps(manifest, indent=1, ensure_ascii=False).encode()
    try:
        ImageManifest.parse(data, source=f"{where}: converted manifest")
    except ManifestError as exc:
        raise ImageError(f"cannot convert {where}: {exc}") from exc
    return data
