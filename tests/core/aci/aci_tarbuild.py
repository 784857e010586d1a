"""Builders for the (often hostile) tar archives the ACI tests feed to rkt.aci.

Archives are made with the real :mod:`tarfile` writer wherever it can express the
case; :func:`raw_header` forges what no honest writer produces (negative sizes,
bad checksums).
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path

MTIME = 1_500_000_000
MANIFEST = b'{"acKind":"ImageManifest","acVersion":"0.8.11","name":"example.com/test"}'


class TarBuilder:
    """Collects entries and returns the archive bytes."""

    def __init__(self, fmt: int = tarfile.PAX_FORMAT) -> None:
        self._buf = io.BytesIO()
        # Kept open across calls on purpose; bytes() closes it.
        self._tar = tarfile.open(fileobj=self._buf, mode="w", format=fmt)  # noqa: SIM115

    def _info(self, name: str, kind: bytes, mode: int, **kw: object) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = mode
        info.mtime = kw.pop("mtime", MTIME)  # type: ignore[assignment]
        info.uid = kw.pop("uid", 0)  # type: ignore[assignment]
        info.gid = kw.pop("gid", 0)  # type: ignore[assignment]
        info.uname = info.gname = ""
        pax = kw.pop("pax", None)
        if pax:
            info.pax_headers = dict(pax)  # type: ignore[arg-type]
        for key, value in kw.items():
            setattr(info, key, value)
        return info

    def file(self, name: str, data: bytes = b"", mode: int = 0o644, **kw: object) -> TarBuilder:
        info = self._info(name, tarfile.REGTYPE, mode, **kw)
        info.size = len(data)
        self._tar.addfile(info, io.BytesIO(data))
        return self

    def dir(self, name: str, mode: int = 0o755, **kw: object) -> TarBuilder:
        self._tar.addfile(self._info(name, tarfile.DIRTYPE, mode, **kw))
        return self

    def symlink(self, name: str, target: str, **kw: object) -> TarBuilder:
        self._tar.addfile(self._info(name, tarfile.SYMTYPE, 0o777, linkname=target, **kw))
        return self

    def hardlink(self, name: str, target: str, mode: int = 0o644, **kw: object) -> TarBuilder:
        self._tar.addfile(self._info(name, tarfile.LNKTYPE, mode, linkname=target, **kw))
        return self

    def device(
        self, name: str, kind: bytes, major: int, minor: int, mode: int = 0o666
    ) -> TarBuilder:
        info = self._info(name, kind, mode, devmajor=major, devminor=minor)
        self._tar.addfile(info)
        return self

    def raw(self, data: bytes) -> TarBuilder:
        """Append raw bytes (whole 512-byte blocks) at the current position."""
        self._tar.fileobj.write(data)  # type: ignore[union-attr]
        self._tar.offset += len(data)
        return self

    def body(self) -> bytes:
        """The entries so far, without the end-of-archive blocks."""
        return self._buf.getvalue()[: self._tar.offset]

    def bytes(self) -> bytes:
        self._tar.close()
        return self._buf.getvalue()


def aci(rootfs: TarBuilder | None = None, manifest: bytes = MANIFEST) -> TarBuilder:
    """A builder that already holds a valid ACI's manifest and rootfs directory."""
    builder = rootfs or TarBuilder()
    builder.file("manifest", manifest)
    builder.dir("rootfs")
    return builder


def raw_header(
    name: bytes,
    *,
    size: bytes = b"00000000000",
    typeflag: bytes = b"0",
    mode: bytes = b"0000644",
    checksum: int | None = None,
    magic: bytes = b"ustar\x0000",
) -> bytes:
    """A forged 512-byte ustar header; the checksum is right unless given."""
    block = bytearray(512)
    block[0 : len(name)] = name
    block[100 : 100 + len(mode)] = mode
    block[108:115] = b"0000000"
    block[116:123] = b"0000000"
    block[124 : 124 + len(size)] = size
    block[136:147] = b"13000000000"
    block[156:157] = typeflag
    block[257 : 257 + len(magic)] = magic
    block[148:156] = b" " * 8
    value = sum(block) if checksum is None else checksum
    block[148:156] = b"%06o\x00 " % value
    return bytes(block)


@dataclass(frozen=True)
class PathState:
    kind: int
    mode: int
    uid: int
    gid: int
    nlink: int
    mtime_ns: int
    content: str


def snapshot(top: Path, exclude: Path) -> dict[str, PathState]:
    """Everything under ``top`` except ``exclude``: kind, mode, owner, links, mtime, bytes."""
    state: dict[str, PathState] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        if Path(dirpath) == exclude:
            dirnames[:] = []
            continue
        for name in [*dirnames, *filenames, "."]:
            path = Path(dirpath, name)
            if path == exclude:
                continue
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                content = os.readlink(path)
            elif stat.S_ISREG(info.st_mode):
                content = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                content = ""
            state[str(path.relative_to(top))] = PathState(
                stat.S_IFMT(info.st_mode),
                stat.S_IMODE(info.st_mode),
                info.st_uid,
                info.st_gid,
                info.st_nlink if not stat.S_ISDIR(info.st_mode) else 0,
                info.st_mtime_ns,
                content,
            )
    return state


def tree(root: Path) -> dict[str, str]:
    """A compact description of a tree: path -> "f:<content>", "d", "l:<target>"."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath, name)
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = "l:" + os.readlink(path)
            elif path.is_dir():
                out[rel] = "d"
            elif path.is_file():
                out[rel] = "f:" + path.read_bytes().decode(errors="replace")
            else:
                out[rel] = "other"
    return out


@dataclass
class Sandbox:
    """An extraction directory with canaries beside it that must never change.

    ``outside`` holds a canary file, a directory and a file inside it; ``dest``
    is where archives are extracted. Everything under ``top`` except
    ``dest`` is snapshotted (kind, mode, owner, link count, mtime, content) and
    compared after the test: nothing may change or appear outside ``dest``.
    """

    top: Path
    dest: Path
    outside: Path
    before: dict[str, PathState]

    @property
    def canary(self) -> Path:
        return self.outside / "canary"

    def check_outside(self) -> None:
        after = snapshot(self.top, self.dest)
        assert after == self.before
