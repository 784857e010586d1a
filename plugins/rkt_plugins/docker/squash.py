"""Layers to one ACI without unpacking them: a squash of tar headers.

docker2aci (and a first version of this module) extracted every layer into a
directory and archived the directory again: two passes over the file system per
file, which dominate the conversion of images with many small files (rkt#3831).
Here each layer is only *decompressed*, to a plain tar in the store's tmp
directory, by the download threads; the main thread then applies the layers' tar
*headers*, base first, to an in-memory tree, and writes the ACI from the tree, its
file data copied in the kernel (``copy_file_range``) straight from the plain
layers. Nothing from a layer is ever written as a file, so no layer can make the
conversion touch anything outside its own temp files.

The tree follows the tar-entry rules of :mod:`rkt.aci.entries`, the ones
:func:`rkt.aci.extract.extract_tar` follows with ``whiteouts=True`` (a differential
test checks that the two agree, breakout cases included): each layer is an
:class:`~rkt.aci.entries.ArchivePass` that says what every entry does, and parents
resolve with :class:`~rkt.aci.entries.RootedWalk`, here over dictionaries. A hard
link shares its target's inode, so a later entry over one name does not change the
other.

Times a file system would set to "now" (implicit parents, directories whose
entries changed after their metadata was applied) are written as the image's
creation time instead, so the same layers always give the same bytes and therefore
the same image ID. Entries are written in sorted order, parents before children.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import tarfile
import tempfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

from rkt.aci.archive import DEFAULT_LIMITS
from rkt.aci.compression import open_decompressed
from rkt.aci.entries import (
    IMPLICIT_DIR_MODE,
    PENDING_DIR_MODE,
    ROOT,
    UP,
    ArchivePass,
    RootedWalk,
    Step,
    StepKind,
    kept_xattrs,
    link_to_directory,
    missing_link_target,
    symlink_target,
)
from rkt.aci.tarstream import (
    BLOCKDEV,
    CHARDEV,
    DIRECTORY,
    FIFO,
    HARDLINK,
    REGULAR,
    SYMLINK,
    FileSource,
    TarEntry,
    TarReader,
    quote_name,
)
from rkt.aci.writer import TarWriter, member
from rkt.api import ArchiveError, ImageError, RktError, StoreError

LOG = logging.getLogger(__name__)

_COPY_CHUNK: Final = 1 << 20
#: Resolved parent directories remembered, and the length of their names: enough
#: for the directories of most images, bounded for hostile names.
_MAX_CACHED_DIRS: Final = 1 << 16
_MAX_CACHED_CHARS: Final = 16 << 20
_TAR_TYPES: Final = {
    REGULAR: tarfile.REGTYPE, SYMLINK: tarfile.SYMTYPE, CHARDEV: tarfile.CHRTYPE,
    BLOCKDEV: tarfile.BLKTYPE, FIFO: tarfile.FIFOTYPE,
}


# -- layers and their plain tars ---------------------------------------------------------
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


@dataclass
class PlainLayer:
    """A layer as a plain tar file."""

    describe: str
    path: Path
    #: a temp file of this conversion, deleted with the :class:`SquashedTree`
    #: (False for the layer cache's files)
    owned: bool = True


class _HashingReader:
    """Hashes what is read through it (a ``read``-only view of a stream)."""

    def __init__(self, raw: BinaryIO, digest: str | None) -> None:
        self._raw = raw
        self.hash = hashlib.new(digest.split(":", 1)[0]) if digest else None

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        if self.hash is not None and data:
            self.hash.update(data)
        return data

    def drain(self) -> None:
        while self.read(_COPY_CHUNK):
            pass

    def check(self, digest: str | None, what: str,
              on_mismatch: Callable[[], None] | None = None) -> None:
        if digest is None or self.hash is None:
            return
        got = f"{self.hash.name}:{self.hash.hexdigest()}"
        if got != digest:
            if on_mismatch is not None:
                on_mismatch()
            raise ImageError(f"{what} does not match its digest {digest} (got {got})")


def decompress_layer(layer: Layer, tmp_dir: Path, *, out: Path | None = None) -> PlainLayer:
    """Decompress ``layer`` to a plain tar, verifying its compressed digest and its
    ``diff_id``; safe to call from a worker thread. The tar is a new temp file in
    ``tmp_dir``, or ``out`` (which the caller owns)."""
    if out is None:
        fd, name = tempfile.mkstemp(prefix="docker-layer-", suffix=".tar", dir=tmp_dir)
    else:
        name = str(out)
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as sink, layer.open() as raw:
            compressed = _HashingReader(raw, layer.digest)
            try:
                plain = _HashingReader(open_decompressed(compressed), layer.diff_id)  # type: ignore[arg-type]
                while chunk := plain.read(_COPY_CHUNK):
                    sink.write(chunk)
            except RktError as exc:
                # Bytes that are not what the digest promised explain any error
                # better (a corrupt cached blob first fails as "corrupt gzip data").
                compressed.drain()
                compressed.check(layer.digest, layer.describe, layer.on_mismatch)
                raise type(exc)(f"{layer.describe}: {exc}") from exc
            compressed.drain()
        compressed.check(layer.digest, layer.describe, layer.on_mismatch)
        plain.check(layer.diff_id, f"{layer.describe} (uncompressed)")
    except OSError as exc:
        os.unlink(name)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StoreError(f"no space left on device while unpacking {layer.describe}") from exc
        raise StoreError(f"cannot unpack {layer.describe}: {exc.strerror or exc}") from exc
    except BaseException:
        os.unlink(name)
        raise
    return PlainLayer(layer.describe, Path(name), owned=out is None)


def verified_layer(
    describe: str, path: Path, diff_id: str, on_mismatch: Callable[[], None] | None = None
) -> PlainLayer:
    """A cached plain layer, after checking it still hashes to its ``diff_id``."""
    try:
        with open(path, "rb") as handle:
            reader = _HashingReader(handle, diff_id)
            reader.drain()
    except OSError as exc:
        raise StoreError(f"cannot read {describe}: {exc.strerror or exc}") from exc
    reader.check(diff_id, describe, on_mismatch)
    return PlainLayer(describe, path, owned=False)


# -- the tree ----------------------------------------------------------------------------------
class _Inode:
    """A non-directory; hard links share one."""

    __slots__ = ("data", "entry")

    def __init__(self, entry: TarEntry, data: tuple[int, int, int] | None) -> None:
        self.entry = entry
        #: (plain layer fd, offset, size) of a regular file's bytes
        self.data = data


class _Dir:
    __slots__ = ("children", "gid", "mode", "mtime_ns", "uid", "xattrs")

    def __init__(self, mode: int, uid: int, gid: int, mtime_ns: int | None,
                 xattrs: dict[str, bytes] | None = None) -> None:
        self.children: dict[str, _Dir | _Inode] = {}
        self.mode, self.uid, self.gid = mode, uid, gid
        #: None: "changed when the image was built", written as the image's epoch
        self.mtime_ns = mtime_ns
        self.xattrs = xattrs


class SquashedTree:
    """Layers applied base first to an in-memory tree; see the module docstring."""

    def __init__(self, *, max_entries: int = DEFAULT_LIMITS.max_entries) -> None:
        self.root = _Dir(IMPLICIT_DIR_MODE, 0, 0, None)
        self.max_entries = max_entries
        self.entries = 0
        #: parent paths -> their directories; forgotten whenever a directory or a
        #: symlink leaves the tree, the only changes that can make one wrong
        self._dirs: dict[str, _Dir] = {}
        self._cached_chars = 0
        self._fds: list[int] = []
        self._paths: list[Path] = []

    def close(self) -> None:
        """Close the plain layers, deleting the temporary ones."""
        for fd in self._fds:
            os.close(fd)
        for path in self._paths:
            path.unlink(missing_ok=True)
        self._fds.clear()
        self._paths.clear()

    def __enter__(self) -> SquashedTree:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- applying a layer ------------------------------------------------------------
    def apply(self, layer: PlainLayer) -> None:
        if layer.owned:
            self._paths.append(layer.path)
        fd = os.open(layer.path, os.O_RDONLY | os.O_CLOEXEC)
        self._fds.append(fd)
        reader = TarReader(FileSource(fd), DEFAULT_LIMITS)
        archive = ArchivePass(whiteouts=True)
        place = archive.place
        try:
            for entry in reader:
                step = place(entry)
                if step is not None:
                    self._apply(archive, step, entry, fd)
                reader.skip_data()
            # Directory metadata goes on when the layer ends, last entry first.
            for key, entry in archive.finished_dirs():
                self._finish_dir(key, entry)
        except RktError as exc:
            raise type(exc)(f"{layer.describe}: {exc}") from exc

    def _apply(self, archive: ArchivePass, step: Step, entry: TarEntry, fd: int) -> None:
        if step.kind is StepKind.WHITEOUT:
            found = self._resolve(step.parent, create=False)
            if found is not None:
                self._remove(found, step.name)
            return
        if step.kind is StepKind.OPAQUE:
            found = self._resolve(step.parent, create=False)
            if found is not None:
                for child in archive.earlier(step, list(found.children)):
                    self._remove(found, child)
            return
        parent = self._resolve(step.parent, create=True)
        assert parent is not None
        name = step.name
        kind = entry.type
        if kind == DIRECTORY:
            if not isinstance(parent.children.get(name), _Dir):
                self._put(parent, name, _Dir(PENDING_DIR_MODE, entry.uid, entry.gid, None))
            archive.defer(step.key, entry)
        elif kind == HARDLINK:
            self._hardlink(archive, parent, step, entry)
        else:
            if kind == SYMLINK:
                symlink_target(entry)
            data = (fd, entry.offset_data, entry.size) if kind == REGULAR else None
            self._put(parent, name, _Inode(entry, data))

    def _put(self, parent: _Dir, name: str, node: _Dir | _Inode) -> None:
        old = parent.children.get(name)
        if old is not None:
            self._count_removed(old)
        self.entries += 1
        if self.entries > self.max_entries:
            raise ArchiveError(f"image has more than {self.max_entries} entries")
        parent.children[name] = node
        parent.mtime_ns = None

    def _remove(self, parent: _Dir, name: str) -> None:
        old = parent.children.pop(name, None)
        if old is not None:
            self._count_removed(old)
            parent.mtime_ns = None

    def _count_removed(self, node: _Dir | _Inode) -> None:
        if isinstance(node, _Dir) or node.entry.type == SYMLINK:
            self._forget_dirs()
        stack = [node]
        while stack:
            current = stack.pop()
            self.entries -= 1
            if isinstance(current, _Dir):
                stack.extend(current.children.values())

    def _resolve(self, parts: list[str], *, create: bool) -> _Dir | None:
        """The directory ``parts``, resolved inside the tree; None when it is missing
        (``create`` false) or not a directory."""
        if not parts:
            return self.root
        key = "/".join(parts)
        found = self._dirs.get(key)
        if found is None:
            found = self._walk(parts, create=create)
            if found is not None:
                if len(self._dirs) >= _MAX_CACHED_DIRS or self._cached_chars > _MAX_CACHED_CHARS:
                    self._forget_dirs()
                self._dirs[key] = found
                self._cached_chars += len(key)
        return found

    def _forget_dirs(self) -> None:
        self._dirs.clear()
        self._cached_chars = 0

    def _walk(self, parts: list[str], *, create: bool) -> _Dir | None:
        root = self.root
        here = root
        stack: list[_Dir] = []  # the directories entered, deepest last
        walk = RootedWalk(parts)
        for comp in walk:
            if comp == UP:
                stack.pop()
                here = stack[-1]
                continue
            if comp == ROOT:
                stack.clear()
                here = root
                continue
            child = here.children.get(comp)
            if child is None:
                if not create:
                    return None
                child = _Dir(IMPLICIT_DIR_MODE, 0, 0, None)
                self._put(here, comp, child)
            if isinstance(child, _Dir):
                stack.append(child)
                here = child
            elif child.entry.type == SYMLINK:
                walk.follow(child.entry.linkname)
            elif create:
                raise walk.not_a_directory(comp)
            else:
                return None
        return here

    def _hardlink(self, archive: ArchivePass, parent: _Dir, step: Step, entry: TarEntry) -> None:
        target = archive.link_target(entry, step)
        if target is None:
            return
        node = self._lookup(target)
        if node is None:
            raise missing_link_target(entry)
        if isinstance(node, _Dir):
            raise link_to_directory(entry)
        name = step.name
        if name in parent.children:
            self._remove(parent, name)
            # As linkat after the removal: the target may have gone with the name.
            if self._lookup(target) is not node:
                raise missing_link_target(entry)
        self._put(parent, name, node)

    def _lookup(self, parts: list[str]) -> _Dir | _Inode | None:
        """What is at ``parts``, its last component not followed."""
        parent = self._resolve(parts[:-1], create=False)
        return parent.children.get(parts[-1]) if parent is not None else None

    def _finish_dir(self, key: str, entry: TarEntry) -> None:
        if key:
            parts = key.split("/")
            parent = self._resolve(parts[:-1], create=False)
            node = parent.children.get(parts[-1]) if parent is not None else None
            if not isinstance(node, _Dir):
                return  # replaced or removed by a later entry
        else:
            node = self.root
        node.mode, node.uid, node.gid = entry.mode, entry.uid, entry.gid
        node.mtime_ns = entry.mtime_ns
        node.xattrs = kept_xattrs(entry.xattrs)

    # -- writing the ACI -----------------------------------------------------------------
    def write_aci(self, manifest: bytes, out: Path, *, epoch: int = 0) -> None:
        """Write ``manifest`` and the tree as a plain ACI; "now" times become ``epoch``."""
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            writer = _TreeWriter(fd, epoch)
            writer.add_bytes("manifest", manifest)
            writer.directory("rootfs", self.root)
            stack: list[tuple[str, _Dir]] = [("rootfs", self.root)]
            while stack:
                prefix, directory = stack.pop()
                subdirs = []
                for name in sorted(directory.children, key=os.fsencode):
                    node = directory.children[name]
                    path = f"{prefix}/{name}"
                    if isinstance(node, _Dir):
                        writer.directory(path, node)
                        subdirs.append((path, node))
                    else:
                        writer.inode(path, node)
                stack.extend(reversed(subdirs))
            writer.close()
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StoreError(f"no space left on device while writing {out}") from exc
            raise StoreError(f"cannot write {out}: {exc.strerror or exc}") from exc
        finally:
            os.close(fd)


class _TreeWriter:
    """The squashed tree's nodes as tar members (:class:`rkt.aci.writer.TarWriter`)."""

    def __init__(self, fd: int, epoch: int) -> None:
        self.tar = TarWriter(fd)
        self.epoch = epoch
        self.written: dict[int, str] = {}  # id(inode) -> first name, for hard links

    def _info(self, name: str, mode: int, uid: int, gid: int, mtime_ns: int | None,
              xattrs: dict[str, bytes] | None) -> tarfile.TarInfo:
        info = member(name, mode=mode, uid=uid, gid=gid,
                      mtime=self.epoch if mtime_ns is None else mtime_ns // 1_000_000_000)
        if xattrs:
            # tarfile writes surrogate-escaped values back as the original bytes.
            info.pax_headers = {
                "SCHILY.xattr." + key: value.decode("utf-8", "surrogateescape")
                for key, value in sorted(xattrs.items())
            }
        return info

    def add_bytes(self, name: str, data: bytes) -> None:
        self.tar.add_bytes(member(name, mode=0o644), data)

    def directory(self, name: str, node: _Dir) -> None:
        info = self._info(name, node.mode, node.uid, node.gid, node.mtime_ns, node.xattrs)
        info.type = tarfile.DIRTYPE
        self.tar.add(info)

    def inode(self, name: str, node: _Inode) -> None:
        entry = node.entry
        mode = 0o777 if entry.type == SYMLINK else entry.mode
        info = self._info(name, mode, entry.uid, entry.gid, entry.mtime_ns,
                          None if entry.type == SYMLINK else kept_xattrs(entry.xattrs))
        if entry.type == REGULAR:
            first = self.written.get(id(node))
            if first is not None:
                info.type = tarfile.LNKTYPE
                info.linkname = first
                self.tar.add(info)
                return
            self.written[id(node)] = name
            assert node.data is not None
            source, offset, size = node.data
            info.size = size
            try:
                self.tar.add_data(info, source, offset)
            except ArchiveError:
                raise ArchiveError(f"truncated layer data for {quote_name(name)}") from None
        else:
            info.type = _TAR_TYPES[entry.type]
            info.linkname = entry.linkname if entry.type == SYMLINK else ""
            info.devmajor, info.devminor = entry.devmajor, entry.devminor
            self.tar.add(info)

    def close(self) -> None:
        self.tar.close()


def build_aci(
    tmp_dir: Path,
    manifest: bytes,
    layers: Sequence[Callable[[], PlainLayer]],
    *,
    epoch: int = 0,
) -> Path:
    """Squash the plain ``layers`` (each getter may wait for its layer to be ready)
    under ``manifest`` into a new plain ACI file in ``tmp_dir``; the caller deletes it.
    The plain layers are deleted."""
    with SquashedTree() as tree:
        for get in layers:
            tree.apply(get())
        fd, name = tempfile.mkstemp(prefix="docker-", suffix=".aci", dir=tmp_dir)
        os.close(fd)
        try:
            tree.write_aci(manifest, Path(name), epoch=epoch)
        except BaseException:
            os.unlink(name)
            raise
    return Path(name)


#: layers downloaded and unpacked at the same time (Docker downloads 3 at once)
MAX_WORKERS = 4


def squash_layers(
    tmp_dir: Path,
    manifest: bytes,
    jobs: Sequence[Callable[[], PlainLayer]],
    order: Sequence[int],
    *,
    epoch: int = 0,
    cancelled: threading.Event | None = None,
) -> Path:
    """Run ``jobs`` (each produces one plain layer) on worker threads, and apply their
    layers in ``order`` (indexes into ``jobs``) as each becomes ready; see
    :func:`build_aci`. On failure, ``cancelled`` is set for the jobs still running, and
    every temporary plain layer made is deleted."""
    executor = ThreadPoolExecutor(max_workers=max(1, min(MAX_WORKERS, len(jobs))),
                                  thread_name_prefix="docker-layer")
    futures = [executor.submit(job) for job in jobs]
    try:
        return build_aci(tmp_dir, manifest, [futures[i].result for i in order], epoch=epoch)
    finally:
        if cancelled is not None:
            cancelled.set()
        for future in futures:
            future.cancel()
        executor.shutdown(wait=True)
        for future in futures:
            if future.done() and not future.cancelled() and future.exception() is None:
                made = future.result()
                if made.owned:
                    made.path.unlink(missing_ok=True)
