"""Build ACI files for tests, demos and benchmarks.

Everything is made with the standard library's tarfile plus the real
compressors, so the archives are ordinary ones any appc tool would read.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rkt import APPC_VERSION

BUSYBOX = Path("/bin/busybox")
#: applets linked into images built with ``busybox=True``
BUSYBOX_APPLETS = (
    "sh", "echo", "cat", "ls", "sleep", "true", "false", "env", "id", "hostname",
    "touch", "mkdir", "rm", "test", "wc", "grep", "stat", "ps", "mount", "uname",
)


def image_manifest(
    name: str,
    *,
    version: str | None = "1.0.0",
    exec_: list[str] | None = None,
    os_arch: bool = True,
    app: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A valid image manifest as a dict, ready to tweak."""
    labels: list[dict[str, str]] = []
    if version is not None:
        labels.append({"name": "version", "value": version})
    if os_arch:
        labels += [{"name": "os", "value": "linux"}, {"name": "arch", "value": "amd64"}]
    manifest: dict[str, Any] = {"acKind": "ImageManifest", "acVersion": APPC_VERSION, "name": name}
    if labels:
        manifest["labels"] = labels
    if exec_ is not None or app is not None:
        manifest["app"] = {"exec": exec_ or [], "user": "0", "group": "0", **(app or {})}
    manifest.update(extra or {})
    return manifest


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = int(time.time())
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    info.mtime = int(time.time())
    tar.addfile(info)


def build_aci(
    path: Path,
    *,
    manifest: Mapping[str, Any] | bytes,
    files: Mapping[str, bytes | str | Path] | None = None,
    busybox: bool = False,
    compression: str = "gzip",
    extra_tar: Path | None = None,
    symlinks: Mapping[str, str] | None = None,
) -> Path:
    """Write an ACI to ``path``.

    ``files`` maps rootfs-relative paths to contents (a path ending in ``/`` is a
    directory; contents starting with ``#!`` are made executable) or to a host
    file, copied with its mode (a test's compiled helper). ``busybox``
    copies the host's static busybox to ``/bin/busybox`` with the common applets
    linked. ``symlinks`` maps rootfs-relative paths to link targets (stored as
    given, however hostile). ``compression`` is ``gzip``, ``bzip2``, ``xz``, ``zstd`` or ``none``.
    """
    raw = path.with_name(path.name + ".tar")
    with tarfile.open(raw, "w", format=tarfile.PAX_FORMAT) as tar:
        data = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
        _add_bytes(tar, "manifest", data)
        _add_dir(tar, "rootfs")
        made_dirs = {"rootfs"}

        def ensure_parents(rel: str) -> None:
            parts = rel.strip("/").split("/")[:-1]
            for depth in range(1, len(parts) + 1):
                directory = "rootfs/" + "/".join(parts[:depth])
                if directory not in made_dirs:
                    _add_dir(tar, directory)
                    made_dirs.add(directory)

        if busybox:
            ensure_parents("bin/busybox")
            tar.add(str(BUSYBOX), "rootfs/bin/busybox")
            for applet in BUSYBOX_APPLETS:
                link = tarfile.TarInfo(f"rootfs/bin/{applet}")
                link.type = tarfile.SYMTYPE
                link.linkname = "busybox"
                tar.addfile(link)
        for rel, content in (files or {}).items():
            ensure_parents(rel)
            if rel.endswith("/"):
                directory = "rootfs/" + rel.strip("/")
                if directory not in made_dirs:
                    _add_dir(tar, directory)
                    made_dirs.add(directory)
                continue
            if isinstance(content, Path):
                tar.add(str(content), "rootfs/" + rel.lstrip("/"))
                continue
            body = content.encode() if isinstance(content, str) else content
            mode = 0o755 if body.startswith(b"#!") else 0o644
            _add_bytes(tar, "rootfs/" + rel.lstrip("/"), body, mode)
        for rel, target in (symlinks or {}).items():
            ensure_parents(rel)
            link = tarfile.TarInfo("rootfs/" + rel.lstrip("/"))
            link.type = tarfile.SYMTYPE
            link.linkname = target
            tar.addfile(link)
        if extra_tar is not None:
            with tarfile.open(extra_tar) as extra:
                for member in extra.getmembers():
                    tar.addfile(member, extra.extractfile(member) if member.isfile() else None)
    _compress(raw, path, compression)
    return path


def _compress(raw: Path, path: Path, compression: str) -> None:
    import subprocess

    if compression == "none":
        shutil.move(raw, path)
        return
    tools = {"gzip": ["gzip", "-c"], "bzip2": ["bzip2", "-c"], "xz": ["xz", "-c", "-T1"],
             "zstd": ["zstd", "-q", "-c"]}
    with open(path, "wb") as out:
        subprocess.run([*tools[compression], str(raw)], stdout=out, check=True)
    raw.unlink()
class AciBuilder:
    """Builds ACI files into one directory (the ``aci_builder`` fixture)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def build(
        self,
        filename: str = "hello.aci",
        *,
        name: str = "example.com/hello",
        version: str | None = "1.0.0",
        exec_: list[str] | None = None,
        manifest: Mapping[str, Any] | bytes | None = None,
        **kwargs: Any,
    ) -> Path:
        if manifest is None:
            manifest = image_manifest(name, version=version, exec_=exec_)
        return build_aci(self.directory / filename, manifest=manifest, **kwargs)


