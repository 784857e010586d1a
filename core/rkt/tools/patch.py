"""``actool patch-manifest``: change an ACI's manifest, keep every other byte of it.

The flags take appc actool's syntax:

* ``--exec="/app --debug"`` (split on spaces), ``--name``, ``--user``, ``--group``;
* ``--capability=CAP_NET_ADMIN,CAP_SYS_ADMIN``: an ``os/linux/capabilities-retain-set``;
* ``--mounts=NAME,path=/p[,readOnly=true][:NAME,...]``;
* ``--ports=NAME,protocol=tcp,port=80[,count=N][,socketActivated=true][:...]``;
* ``--isolators=NAME,key=value[,key=value][:NAME,...]`` (``resource/cpu,limit=100m``);
* ``--supplementary-groups=10,20``;
* or ``--manifest=FILE``: the whole new manifest.

The patched manifest is validated with the runtime's schema before anything is
written. The archive is rewritten around it: every other member is copied as raw
tar bytes, so the rootfs cannot change; the output is gzip-compressed when the input
was compressed in any way, plain otherwise.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rkt.aci.archive import DEFAULT_LIMITS, MANIFEST, scan_aci
from rkt.aci.compression import Compression, detect, open_decompressed
from rkt.aci.layout import DEFAULT_COMPRESS_LEVEL, AtomicOutput, check_output
from rkt.aci.tarstream import BLOCK, REGULAR, FileSource, TarReader, split_name
from rkt.aci.writer import TarWriter, member
from rkt.errors import ImageError, UsageError

_CAPABILITIES_RETAIN = "os/linux/capabilities-retain-set"


@dataclass
class Patch:
    """The flags of ``patch-manifest``; unset ones leave the manifest as it was."""

    manifest_file: Path | None = None
    name: str | None = None
    exec_: str | None = None
    user: str | None = None
    group: str | None = None
    capabilities: str | None = None
    mounts: str | None = None
    ports: str | None = None
    isolators: str | None = None
    supplementary_groups: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def is_empty(self) -> bool:
        return all(getattr(self, name) is None for name in (
            "manifest_file", "name", "exec_", "user", "group", "capabilities", "mounts",
            "ports", "isolators", "supplementary_groups"))


def _key_values(text: str, flag: str, first: str) -> tuple[str, dict[str, str]]:
    """``NAME,k=v,k=v`` -> the name and the pairs."""
    head, *rest = text.split(",")
    if not head or "=" in head:
        raise UsageError(f'--{flag}: "{text}" does not start with the {first}')
    pairs: dict[str, str] = {}
    for item in rest:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f'--{flag}: "{item}" in "{text}" is not KEY=VALUE')
        pairs[key] = value
    return head, pairs


def _boolean(value: str, flag: str, key: str) -> bool:
    if value not in ("true", "false"):
        raise UsageError(f'--{flag}: {key} must be true or false, not "{value}"')
    return value == "true"


def _integer(value: str, flag: str, key: str) -> int:
    try:
        return int(value, 10)
    except ValueError:
        raise UsageError(f'--{flag}: {key} must be a number, not "{value}"') from None


def _mounts(text: str) -> list[dict[str, Any]]:
    points = []
    for item in text.split(":"):
        name, pairs = _key_values(item, "mounts", "mount point's name")
        point: dict[str, Any] = {"name": name}
        for key, value in pairs.items():
            if key == "path":
                point["path"] = value
            elif key == "readOnly":
                point["readOnly"] = _boolean(value, "mounts", key)
            else:
                raise UsageError(f'--mounts: unknown key "{key}" (path, readOnly)')
        if "path" not in point:
            raise UsageError(f'--mounts: "{item}" has no path=')
        points.append(point)
    return points


def _ports(text: str) -> list[dict[str, Any]]:
    ports = []
    for item in text.split(":"):
        name, pairs = _key_values(item, "ports", "port's name")
        port: dict[str, Any] = {"name": name}
        for key, value in pairs.items():
            if key == "protocol":
                port["protocol"] = value
            elif key in ("port", "count"):
                port[key] = _integer(value, "ports", key)
            elif key == "socketActivated":
                port[key] = _boolean(value, "ports", key)
            else:
                raise UsageError(
                    f'--ports: unknown key "{key}" (protocol, port, count, socketActivated)')
        for required in ("protocol", "port"):
            if required not in port:
                raise UsageError(f'--ports: "{item}" has no {required}=')
        ports.append(port)
    return ports


def _isolators(text: str) -> list[dict[str, Any]]:
    isolators = []
    for item in text.split(":"):
        name, pairs = _key_values(item, "isolators", "isolator's name")
        value: dict[str, Any] = {}
        for key, raw in pairs.items():
            # "default=true" for block and network isolators (appc-spec/ace.md)
            value[key] = _boolean(raw, "isolators", key) if raw in ("true", "false") else raw
        isolators.append({"name": name, "value": value})
    return isolators


def _groups(text: str) -> list[int]:
    return [_integer(item, "supplementary-groups", "a group ID") for item in text.split(",")]


def patched_manifest(original: bytes, patch: Patch) -> bytes:
    """The new manifest: ``patch`` applied to ``original``, validated."""
    from rkt.schema.base import load_json_object
    from rkt.schema.image import ImageManifest

    if patch.manifest_file is not None:
        try:
            data = patch.manifest_file.read_bytes()
        except OSError as exc:
            raise UsageError(f"--manifest: cannot read {patch.manifest_file}: "
                             f"{exc.strerror}") from exc
        ImageManifest.parse(data, source=f"--manifest {patch.manifest_file}")
        return data
    document = load_json_object(original, "manifest")
    if patch.name is not None:
        document["name"] = patch.name
    app_flags = (patch.exec_, patch.user, patch.group, patch.capabilities, patch.mounts,
                 patch.ports, patch.isolators, patch.supplementary_groups)
    if any(flag is not None for flag in app_flags):
        app = document.get("app")
        if not isinstance(app, dict):
            app = document["app"] = {}
        if patch.exec_ is not None:
            app["exec"] = patch.exec_.split()
        if patch.user is not None:
            app["user"] = patch.user
        if patch.group is not None:
            app["group"] = patch.group
        if patch.supplementary_groups is not None:
            app["supplementaryGIDs"] = _groups(patch.supplementary_groups)
        if patch.mounts is not None:
            app["mountPoints"] = _mounts(patch.mounts)
        if patch.ports is not None:
            app["ports"] = _ports(patch.ports)
        isolators = _isolators(patch.isolators) if patch.isolators is not None else None
        if patch.capabilities is not None:
            names = [c for c in patch.capabilities.split(",") if c]
            isolators = [i for i in (isolators or app.get("isolators") or [])
                         if isinstance(i, dict) and i.get("name") != _CAPABILITIES_RETAIN]
            isolators.append({"name": _CAPABILITIES_RETAIN, "value": {"set": names}})
        if isolators is not None:
            app["isolators"] = isolators
    data = json.dumps(document, indent=4, ensure_ascii=False).encode() + b"\n"
    ImageManifest.parse(data, source="patched manifest")
    return data


def read_manifest(image: Path) -> bytes:
    """The manifest of the ACI ``image``, after checking the archive's layout."""
    try:
        with open(image, "rb") as handle:
            return scan_aci(open_decompressed(handle))
    except FileNotFoundError:
        raise UsageError(f"{image}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{image} is a directory, not an image") from None
    except OSError as exc:
        raise ImageError(f"cannot read {image}: {exc.strerror}") from exc


def patch_image(image: Path, out: Path | None, patch: Patch, *, overwrite: bool) -> None:
    """Write ``image`` with its manifest patched to ``out``, or over ``image`` itself
    when ``out`` is None (``--replace``)."""
    if out is not None:
        check_output(out, overwrite=overwrite)
    else:
        out = image
    if not out.name.endswith(".aci"):
        raise UsageError(f"{out}: an image file name must end in .aci (appc-spec/aci.md)")
    manifest = read_manifest(image)
    new_manifest = patched_manifest(manifest, patch)
    with open(image, "rb") as handle:
        compressed = detect(handle.read(512)) is not Compression.NONE
        handle.seek(0)
        # the members are found and copied in place: a plain copy of the tar first
        with tempfile.TemporaryFile(dir=out.parent or ".") as plain:
            stream = open_decompressed(handle)
            while chunk := stream.read(1 << 20):
                plain.write(chunk)
            plain.flush()
            with AtomicOutput(out) as fd:
                tar = TarWriter(fd, compress_level=DEFAULT_COMPRESS_LEVEL if compressed
                                else None)
                _copy_members(plain.fileno(), tar, new_manifest)
                tar.close()


def _copy_members(fd: int, tar: TarWriter, manifest: bytes) -> None:
    source = FileSource(fd)
    reader = TarReader(source, DEFAULT_LIMITS)
    while True:
        reader.skip_data()
        start = source.pos
        entry = reader.next_entry()
        if entry is None:
            return
        end = entry.offset_data + (-(-entry.size // BLOCK) * BLOCK if entry.type == REGULAR else 0)
        if split_name(entry.name) == [MANIFEST]:
            tar.add_bytes(member(MANIFEST, mode=entry.mode, uid=entry.uid, gid=entry.gid,
                                 mtime=entry.mtime_ns // 1_000_000_000), manifest)
        else:
            tar.add_raw(fd, start, end - start)

