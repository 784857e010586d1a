"""Validation of an ACI's tar layout (appc-spec/aci.md, "Image Archives").

:func:`scan_aci` reads an uncompressed tar stream once, front to back, and checks
what the spec requires of an image archive before anything from it is trusted:

* only two top-level names, ``manifest`` (a regular file) and ``rootfs`` (a
  directory, with everything else below it); a leading ``./`` and a ``.`` entry are
  fine, as ``tar -C dir .`` writes them;
* a manifest and a rootfs are present. Unlike appc's ``aci/layout.go``, which
  requires an explicit ``rootfs`` entry and accepts any name that merely starts with
  ``rootfs`` (``rootfsX``), an entry below ``rootfs/`` implies the rootfs, and
  ``rootfsX`` is refused;
* no duplicate entries (names compared after normalisation: ``./rootfs/a`` and
  ``rootfs/a/`` are the same entry), no absolute names, no ``..`` components, and
  hard links that point inside ``rootfs/``;
* no hard link to a directory, and no symlink that resolves through a loop;
* the :class:`ArchiveLimits`: entry count, bytes of file data (decompression bombs
  stop here), manifest size, name length, and bytes after the end-of-archive block.

Symlink targets may point anywhere: they are interpreted inside the rootfs, which
the extractor (:mod:`rkt.aci.extract`) guarantees; only loops are refused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import BinaryIO

from rkt.aci.tarstream import (
    DIRECTORY,
    HARDLINK,
    REGULAR,
    SYMLINK,
    StreamSource,
    TarReader,
    quote_name,
    split_name,
)
from rkt.errors import ArchiveError, UnsafeArchiveError

LOG = logging.getLogger(__name__)

MANIFEST = "manifest"
ROOTFS = "rootfs"


@dataclass(frozen=True)
class ArchiveLimits:
    """Bounds on what an archive may hold; exceeding one is an :class:`ArchiveError`."""

    #: Members, directories and links included (metadata headers excluded).
    max_entries: int = 1_000_000
    #: Bytes of file data, pax records and long names included.
    max_total_size: int = 64 << 30
    max_manifest_size: int = 1 << 20
    #: Bytes of an entry's name or link target.
    max_name_length: int = 4096
    #: Bytes after the end-of-archive block (tar pads to its record size, 10 KiB
    #: by default; 1 MiB at most with ``-b 2048``).
    max_trailing_size: int = 16 << 20


DEFAULT_LIMITS = ArchiveLimits()

#: Read size for the tar stream: the caller hashes what we read, and big reads keep
#: the per-call overhead of the decompressor and the hash out of the profile.
READ_SIZE = 1 << 20


def scan_aci(tar_stream: BinaryIO, *, limits: ArchiveLimits = DEFAULT_LIMITS) -> bytes:
    """Validate the ACI layout of an uncompressed tar stream; return the raw manifest.

    The stream is read strictly sequentially and to its very end (until ``read``
    returns ``b""``), so a caller hashing or storing what passes through sees every
    byte. Raises :class:`ArchiveError` (or :class:`UnsafeArchiveError` for names
    that would escape) with a one-line message naming the entry.
    """
    reader = TarReader(StreamSource(tar_stream, READ_SIZE), limits)
    seen: set[str] = set()
    directories: set[str] = set()
    #: rootfs-relative path -> link target, for the loop check at the end
    symlinks: dict[tuple[str, ...], str] = {}
    manifest: bytes | None = None
    has_rootfs = False
    for entry in reader:
        parts = split_name(entry.name)
        if not parts:
            if entry.type != DIRECTORY:
                raise ArchiveError(f"invalid ACI: root entry {entry.describe()} is not a directory")
            continue
        key = "/".join(parts)
        if key in seen:
            raise ArchiveError(f"invalid ACI: duplicate entry {quote_name(key)}")
        seen.add(key)
        top = parts[0]
        if top == MANIFEST and len(parts) == 1:
            if entry.type != REGULAR:
                raise ArchiveError("invalid ACI: manifest is not a regular file")
            if entry.size > limits.max_manifest_size:
                raise ArchiveError(
                    f"invalid ACI: manifest is larger than {limits.max_manifest_size} bytes"
                )
            manifest = b"".join(bytes(piece) for piece in reader.data_chunks())
        elif top == ROOTFS:
            if len(parts) == 1 and entry.type != DIRECTORY:
                raise ArchiveError("invalid ACI: rootfs is not a directory")
            has_rootfs = True
            if entry.type == DIRECTORY:
                directories.add(key)
            elif entry.type == HARDLINK:
                _check_hardlink(entry.linkname, entry.describe(), directories)
            elif entry.type == SYMLINK:
                symlinks[tuple(parts[1:])] = entry.linkname
        else:
            raise ArchiveError(f"invalid ACI: unexpected top-level entry {quote_name(key)}")
    trailing = reader.drain()
    if manifest is None:
        raise ArchiveError("invalid ACI: no manifest")
    if not has_rootfs:
        raise ArchiveError("invalid ACI: no rootfs")
    _check_symlink_loops(symlinks)
    LOG.debug(
        "scanned ACI: %d entries, %d bytes of data, %d trailing bytes",
        reader.entries,
        reader.total_size,
        trailing,
    )
    return manifest


def _check_hardlink(linkname: str, described: str, directories: set[str]) -> None:
    try:
        target = split_name(linkname)
    except UnsafeArchiveError:
        raise UnsafeArchiveError(
            f"invalid ACI: hard link {described} points outside the rootfs"
        ) from None
    if len(target) < 2 or target[0] != ROOTFS:
        raise UnsafeArchiveError(f"invalid ACI: hard link {described} points outside the rootfs")
    if "/".join(target) in directories:
        # no filesystem allows it; refused here rather than half-way through a render
        raise UnsafeArchiveError(f"invalid ACI: hard link {described} points to a directory")


#: symlinks followed to resolve one path before it counts as a loop (the kernel's ELOOP)
MAX_SYMLINK_HOPS = 40


def _check_symlink_loops(symlinks: dict[tuple[str, ...], str]) -> None:
    """Refuse a symlink that resolves, inside the rootfs, through itself again.

    Such a link is harmless to extract but makes every lookup through it fail
    with ELOOP, in the app and in rkt's own path resolution; appc images have no
    use for one. Targets are resolved as the extractor does: inside the rootfs,
    ``..`` stopping at its root, absolute targets from its root.
    """
    for link in symlinks:
        hops = 0
        done: list[str] = []
        todo = list(link)
        while todo:
            part = todo.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if done:
                    done.pop()
                continue
            target = symlinks.get((*done, part))
            if target is None:
                done.append(part)
                continue
            hops += 1
            if hops > MAX_SYMLINK_HOPS:
                name = quote_name("/".join((ROOTFS, *link)))
                raise UnsafeArchiveError(
                    f"invalid ACI: symlink {name} resolves through a loop (or more than "
                    f"{MAX_SYMLINK_HOPS} links)"
                )
            if target.startswith("/"):
                done = []
            todo = target.split("/") + todo
