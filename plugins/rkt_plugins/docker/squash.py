"""Layers to one ACI: apply them base first into a rootfs, then write the ACI tar.

Each layer goes through :func:`rkt.aci.extract.extract_tar` with ``whiteouts=True``,
the foundation's hostile-input extractor: names with ``..`` or absolute names are
refused, symlinked parents and whiteouts resolve inside the rootfs only, hard links
must stay inside it. While a layer streams through it is hashed twice, compressed
(its blob digest) and uncompressed (its ``diff_id`` in the image config), so a
cached or archived layer that changed is caught as surely as a download.

The ACI is then written from the squashed tree as a plain tar (the store imports a
plain tar fastest): entries in sorted order, so the same layers always give the same
bytes and therefore the same image ID; file data is copied in the kernel.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import stat
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from rkt.aci.compression import open_decompressed
from rkt.aci.extract import extract_tar
from rkt.errors import ImageError, RktError, StoreError

LOG = logging.getLogger(__name__)

_BLOCK = 512
_SMALL_FILE = 64 << 10
_FLUSH_AT = 1 << 20
_XATTR_PREFIXES = ("user.", "security.capability")


@dataclass
class Layer:
    """One layer to apply: how to open its (possibly compressed) bytes, and what to
    check them against."""

    #: for messages: ``layer sha256:...`` or ``layer 2 of archive.tar``
    describe: str
    open: Callable[[], BinaryIO]
    #: digest of the bytes ``open`` returns; None when they were verified already
    digest: str | None = None
    #: digest of the uncompressed tar (the config's ``rootfs.diff_ids`` entry)
    diff_id: str | None = None
    #: called when the bytes do not match ``digest`` (a corrupt cache entry)
    on_mismatch: Callable[[], None] | None = None


class _HashingReader:
    """Hashes what is read through it (a ``read``-only view of a stream)."""

    def __init__(self, raw: BinaryIO, algorithm: str | None) -> None:
        self._raw = raw
        self.hash = hashlib.new(algorithm) if algorithm else None

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        if self.hash is not None and data:
            self.hash.update(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


def _algorithm(digest: str | None) -> str | None:
    return digest.split(":", 1)[0] if digest else None


def _check(
    reader: _HashingReader, digest: str | None, what: str,
    on_mismatch: Callable[[], None] | None = None,
) -> None:
    if digest is None or reader.hash is None:
        return
    got = f"{reader.hash.name}:{reader.hash.hexdigest()}"
    if got != digest:
        if on_mismatch is not None:
            on_mismatch()
        raise ImageError(f"{what} does not match its digest {digest} (got {got})")


def apply_layer(layer: Layer, rootfs: Path) -> None:
    """Extract ``layer`` over ``rootfs``, verifying both of its digests."""
    with layer.open() as raw:
        compressed = _HashingReader(raw, _algorithm(layer.digest))
        plain = open_decompressed(compressed)  # type: ignore[arg-type]
        uncompressed = _HashingReader(plain, _algorithm(layer.diff_id))
        try:
            extract_tar(uncompressed, rootfs, strip_prefix="", whiteouts=True)  # type: ignore[arg-type]
        except RktError as exc:
            # Bytes that are not what the digest promised explain any error better
            # (a corrupt cached blob fails as "corrupt gzip data" first).
            if layer.digest is not None:
                compressed.drain()
                _check(compressed, layer.digest, layer.describe, layer.on_mismatch)
            raise type(exc)(f"{layer.describe}: {exc}") from exc
        uncompressed.drain()
        compressed.drain()
    _check(compressed, layer.digest, layer.describe, layer.on_mismatch)
    _check(uncompressed, layer.diff_id, f"{layer.describe} (uncompressed)")


def make_rootfs(work_dir: Path) -> Path:
    """An empty rootfs directory (mode 0755, which apps see as ``/``)."""
    rootfs = work_dir / "rootfs"
    rootfs.mkdir(mode=0o755)
    os.chmod(rootfs, 0o755)
    return rootfs


def remove_tree(path: Path) -> None:
    """Remove a work tree, even directories that a layer made unreadable."""

    def retry(function: Callable[..., object], failed: str, exc: object) -> None:
        parent = os.path.dirname(failed)
        try:
            os.chmod(parent, 0o700)
            if function in (os.rmdir, os.unlink):
                function(failed)
            else:
                shutil.rmtree(failed, ignore_errors=True)
        except OSError:
            LOG.debug("cannot remove %s: %s", failed, exc)

    if path.exists():
        shutil.rmtree(path, onerror=retry)


def build_aci(
    tmp_dir: Path, manifest: bytes, layers: Sequence[Callable[[], Layer]], *, epoch: int = 0
) -> Path:
    """Squash ``layers`` (each getter may block until its layer is downloaded) under
    ``manifest`` into a new plain ACI file in ``tmp_dir``; the caller deletes it.

    Directories the layers do not list (the root, implicit parents) and directories
    whose content changed get the time of extraction; those times become ``epoch``
    (the image's creation time), so that the same layers give the same image ID.
    """
    started = time.time_ns()
    work = Path(tempfile.mkdtemp(prefix="docker-", dir=tmp_dir))
    try:
        rootfs = make_rootfs(work)
        for get in layers:
            apply_layer(get(), rootfs)
        fd, name = tempfile.mkstemp(prefix="docker-", suffix=".aci", dir=tmp_dir)
        os.close(fd)
        try:
            write_aci(manifest, rootfs, Path(name), clamp=(started, epoch))
        except BaseException:
            os.unlink(name)
            raise
        return Path(name)
    finally:
        remove_tree(work)


# -- writing the ACI ---------------------------------------------------------------------
class _TarWriter:
    """Writes tar members to a file descriptor; data is copied in the kernel."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pending = bytearray()
        self.links: dict[tuple[int, int], str] = {}

    def flush(self) -> None:
        done, total = 0, len(self.pending)
        with memoryview(self.pending) as view:
            while done < total:
                done += os.write(self.fd, view[done:])
        self.pending.clear()

    def header(self, info: tarfile.TarInfo) -> None:
        self.pending += info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        if len(self.pending) >= _FLUSH_AT:
            self.flush()

    def data(self, source: int, size: int, name: str) -> None:
        if size <= _SMALL_FILE:
            data = os.pread(source, size, 0)
            if len(data) != size:
                raise ImageError(f"file {name} changed size while the ACI was written")
            self.pending += data
        else:
            self.flush()
            done = 0
            while done < size:
                try:
                    copied = os.copy_file_range(source, self.fd, size - done, done)
                except OSError as exc:
                    if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS,
                                         errno.EOPNOTSUPP):
                        raise
                    copied = os.sendfile(self.fd, source, done, size - done)
                if copied == 0:
                    raise ImageError(f"file {name} changed size while the ACI was written")
                done += copied
        padding = -size % _BLOCK
        if padding:
            self.pending += bytes(padding)
        if len(self.pending) >= _FLUSH_AT:
            self.flush()

    def close(self) -> None:
        self.pending += bytes(2 * _BLOCK)
        self.flush()


def _xattrs(path: str) -> dict[str, str]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    found = {}
    for name in sorted(names):
        if name.startswith(_XATTR_PREFIXES):
            try:
                value = os.getxattr(path, name, follow_symlinks=False)
            except OSError:
                continue
            # tarfile writes surrogate-escaped values back as the original bytes.
            found["SCHILY.xattr." + name] = value.decode("utf-8", "surrogateescape")
    return found


def _info(name: str, st: os.stat_result, clamp: tuple[int, int]) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    after, epoch = clamp
    info.mtime = epoch if st.st_mtime_ns >= after else st.st_mtime_ns // 1_000_000_000
    info.uname = info.gname = ""
    return info


def write_aci(
    manifest: bytes, rootfs: Path, out: Path, *, clamp: tuple[int, int] = (1 << 62, 0)
) -> None:
    """Write ``manifest`` and the tree at ``rootfs`` as an uncompressed ACI to ``out``.

    ``clamp`` is ``(after_ns, epoch)``: a modification time at or after ``after_ns``
    is written as ``epoch`` (seconds) instead.
    """
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        writer = _TarWriter(fd)
        info = tarfile.TarInfo("manifest")
        info.size = len(manifest)
        info.mode = 0o644
        info.mtime = 0
        writer.header(info)
        writer.pending += manifest + bytes(-len(manifest) % _BLOCK)
        root = os.lstat(rootfs)
        info = _info("rootfs", root, clamp)
        info.type = tarfile.DIRTYPE
        writer.header(info)
        _write_dir(writer, str(rootfs), "rootfs", clamp)
        writer.close()
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StoreError(f"no space left on device while writing {out}") from exc
        raise StoreError(f"cannot write {out}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)


def _write_dir(writer: _TarWriter, path: str, name: str, clamp: tuple[int, int]) -> None:
    # Iterative, so a deep tree cannot exhaust the interpreter's stack.
    stack = [(path, name)]
    while stack:
        directory, prefix = stack.pop()
        entries = sorted(os.scandir(directory), key=lambda e: os.fsencode(e.name))
        subdirs = []
        for entry in entries:
            full = entry.path
            member = f"{prefix}/{entry.name}"
            st = entry.stat(follow_symlinks=False)
            info = _info(member, st, clamp)
            mode = st.st_mode
            xattrs = _xattrs(full) if not stat.S_ISLNK(mode) else {}
            if xattrs:
                info.pax_headers = xattrs
            if stat.S_ISDIR(mode):
                info.type = tarfile.DIRTYPE
                writer.header(info)
                subdirs.append((full, member))
            elif stat.S_ISREG(mode):
                key = (st.st_dev, st.st_ino)
                first = writer.links.get(key) if st.st_nlink > 1 else None
                if first is not None:
                    info.type = tarfile.LNKTYPE
                    info.linkname = first
                    writer.header(info)
                    continue
                if st.st_nlink > 1:
                    writer.links[key] = member
                info.size = st.st_size
                source = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                try:
                    writer.header(info)
                    writer.data(source, st.st_size, member)
                finally:
                    os.close(source)
            elif stat.S_ISLNK(mode):
                info.type = tarfile.SYMTYPE
                info.linkname = os.readlink(full)
                writer.header(info)
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
                info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
                writer.header(info)
            elif stat.S_ISFIFO(mode):
                info.type = tarfile.FIFOTYPE
                writer.header(info)
            else:
                LOG.debug("not archiving %s: sockets cannot be stored in a tar", member)
        # Depth first in sorted order: push the subdirectories in reverse.
        stack.extend(reversed(subdirs))
