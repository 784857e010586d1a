"""Extraction of (hostile) tar archives into a directory.

:func:`extract_tar` unpacks an image's rootfs, a dependency or a Docker layer into
``dest``. The archive is treated as hostile: nothing outside ``dest`` may be
created, modified, chmod'ed, chown'ed, deleted or linked to, whatever the entries
say. The threat is the archive, not a concurrent process: nothing runs in ``dest``
while it is being extracted (rendering happens before any app starts).

How containment works
---------------------
Every operation is relative to a directory file descriptor, never a path string
that the kernel would resolve: ``dest`` is opened once, and each parent directory
is reached component by component with ``openat(O_PATH|O_DIRECTORY|O_NOFOLLOW)``;
entries are then made with ``mkdirat``/``symlinkat``/``linkat``/``mknodat`` or
``openat(O_CREAT|O_EXCL|O_NOFOLLOW)`` after removing what was there, and their
metadata is set on the new file's descriptor (``fchmod``/``fchown``/``futimens``)
or with ``AT_SYMLINK_NOFOLLOW``. The final component of an entry is therefore never
followed.

Decisions, per kind of hostile input:

* **Names** that are absolute or contain a ``..`` component are *rejected*
  (:class:`~rkt.errors.UnsafeArchiveError`), as GNU tar refuses them.
* **Symlinks** are created exactly as written; their targets are never followed
  during extraction (apps see them later inside their chroot).
* **A parent component that is a symlink** in ``dest`` (from this archive or from a
  layer extracted before) is *contained*: it is resolved the way the kernel would
  resolve it if ``dest`` were the root directory (chroot semantics, like
  ``openat2(RESOLVE_IN_ROOT)``): absolute targets restart at ``dest``, ``..`` never
  climbs above it, more than 40 hops is an error. Docker and rkt (which extracted
  inside ``chroot(dest)``) behave the same, so layered images keep working.
  Missing parent directories are created (mode 0755).
* **An entry over an existing path** replaces it (appc-spec/ace.md, rendering: later
  files overwrite earlier ones, and a symlink to a directory is replaced, not
  followed); only a directory over a directory merges. Removal never follows
  symlinks (``shutil.rmtree`` with ``dir_fd``).
* **Hard links** must name an entry under ``strip_prefix``; the target is resolved
  inside ``dest`` like a parent, its last component is not followed (a link to a
  symlink links the symlink itself), and no metadata is applied to it, so a link
  cannot be used to chmod a file elsewhere (CVE-2021-32760).
* **Whiteouts** (``whiteouts=True``) delete inside ``dest`` only; their parents are
  resolved like any parent and the name they delete is never followed. ``.wh..``
  and ``.wh...`` (whiteouts of ``.`` and ``..``) are rejected; other
  ``.wh..wh.`` names are AUFS metadata and are ignored.
* **Devices and fifos** are made only when running as root; otherwise they are
  skipped with a warning.
* **pathWhitelist**: a whitelisted hard link whose target is not whitelisted gets
  a copy of the target's data when ``source`` is a file; from a stream, whose
  data is gone by then, it is an error (rkt 1.x failed on it in both cases).

Metadata: modes including setuid/setgid/sticky, mtimes (a directory's after its
contents, at the end), owners when ``preserve_owner`` (default: when root), and
``user.*`` / ``security.capability`` xattrs, best effort. The entry for the prefix
itself (``rootfs``) describes ``dest``, whose mode, owner and mtime it sets.
Directories nest at most 512 deep (deeper trees break recursive removal, the
caller's included); owners, device numbers and times must fit the kernel's types.

On any error extraction stops and the exception propagates, leaving ``dest`` half
written: **the caller deletes** ``dest`` (the tree store marks a tree complete only
after a successful render).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import posixpath
import shutil
import stat
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

from rkt.aci.archive import DEFAULT_LIMITS, READ_SIZE, ArchiveLimits
from rkt.aci.compression import Compression, detect, open_decompressed
from rkt.aci.tarstream import (
    BLOCKDEV,
    CHARDEV,
    DIRECTORY,
    FIFO,
    HARDLINK,
    REGULAR,
    SYMLINK,
    FileSource,
    StreamSource,
    TarEntry,
    TarReader,
    quote_name,
    split_name,
)
from rkt.errors import ArchiveError, StoreError, UnsafeArchiveError

LOG = logging.getLogger(__name__)

_DIR_FLAGS: Final = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_META_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_SYMLINK_HOPS: Final = 40
#: Deeper trees break recursive removal (shutil.rmtree) and no real image needs them.
_MAX_DEPTH: Final = 512
_MAX_WALK_STEPS: Final = 8192
_MAX_CACHED_DIRS: Final = 256
_WHITEOUT: Final = ".wh."
_WHITEOUT_META: Final = ".wh..wh."
_WHITEOUT_OPAQUE: Final = ".wh..wh..opq"
#: Failures of the machine rather than of the archive.
_STORE_ERRNOS: Final = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS})


def extract_tar(
    source: Path | BinaryIO,
    dest: Path,
    *,
    strip_prefix: str = "rootfs/",
    whiteouts: bool = False,
    path_whitelist: Collection[str] | None = None,
    limits: ArchiveLimits = DEFAULT_LIMITS,
    preserve_owner: bool | None = None,
) -> None:
    """Extract the entries of a tar archive under ``strip_prefix`` into ``dest``.

    ``source`` is a path (a plain tar is then read with ``copy_file_range``; a
    compressed one is decompressed on the fly) or an uncompressed tar stream, read
    sequentially to its end. ``dest`` must be an existing directory and may hold
    files already: entries overwrite them, in archive order (appc-spec/ace.md).
    ``strip_prefix=""`` extracts every entry. ``whiteouts`` applies Docker/OCI
    whiteout files instead of creating them. ``path_whitelist`` (appc
    ``pathWhitelist``: absolute paths) keeps only those files and the directories
    leading to them. ``preserve_owner=None`` chowns only when running as root.

    Raises :class:`~rkt.errors.UnsafeArchiveError` for entries that try to escape,
    :class:`~rkt.errors.ArchiveError` for a bad archive and
    :class:`~rkt.errors.StoreError` when ``dest``'s file system fails (disk full).
    On error ``dest`` is left partly written; the caller removes it.
    """

    def extract(reader_source: StreamSource | FileSource) -> None:
        reader = TarReader(reader_source, limits)
        options = (strip_prefix, whiteouts, path_whitelist, preserve_owner)
        _Extractor(root_fd, reader, *options).run()

    root_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if not isinstance(source, Path):
            extract(StreamSource(source, READ_SIZE))
            return
        src_fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
        try:
            head = os.pread(src_fd, 512, 0)
            if detect(head) is Compression.NONE and stat.S_ISREG(os.fstat(src_fd).st_mode):
                extract(FileSource(src_fd))
            else:
                with open(src_fd, "rb", closefd=False) as raw:
                    extract(StreamSource(open_decompressed(raw), READ_SIZE))
        finally:
            os.close(src_fd)
    finally:
        os.close(root_fd)


@dataclass(slots=True)
class _DirMeta:
    """A directory's metadata, applied when extraction ends (after its contents)."""

    mode: int
    uid: int
    gid: int
    mtime_ns: int
    xattrs: dict[str, bytes] | None


class _Extractor:
    def __init__(
        self,
        root_fd: int,
        reader: TarReader,
        strip_prefix: str,
        whiteouts: bool,
        path_whitelist: Collection[str] | None,
        preserve_owner: bool | None,
    ) -> None:
        self.root_fd = root_fd
        self.reader = reader
        self.prefix = split_name(strip_prefix)
        self.whiteouts = whiteouts
        self.is_root = os.geteuid() == 0
        self.chown = self.is_root if preserve_owner is None else preserve_owner
        self.umask = _current_umask()
        self.dirs: dict[str, int] = {}
        self.stale = False
        self.deferred: dict[str, _DirMeta] = {}
        self.unpacked: set[str] = set()
        self.keep: frozenset[str] | None = None
        self.keep_dirs: frozenset[str] = frozenset()
        if path_whitelist is not None:
            self._set_whitelist(path_whitelist)
        self.skipped_files: dict[str, TarEntry] = {}
        self.file_source = reader.source if isinstance(reader.source, FileSource) else None
        self.copy = _KernelCopy()
        self.warned: set[str] = set()

    def _set_whitelist(self, whitelist: Collection[str]) -> None:
        keep: set[str] = set()
        ancestors: set[str] = {""}
        for path in whitelist:
            norm = posixpath.normpath("/" + path).lstrip("/")
            if not norm or norm.startswith("../"):
                continue
            keep.add(norm)
            parts = norm.split("/")
            for i in range(1, len(parts)):
                ancestors.add("/".join(parts[:i]))
        self.keep = frozenset(keep)
        self.keep_dirs = frozenset(ancestors)

    # -- driver -------------------------------------------------------------------

    def run(self) -> None:
        prefix = self.prefix
        plen = len(prefix)
        try:
            for entry in self.reader:
                parts = split_name(entry.name)
                if parts[:plen] != prefix:
                    continue
                rel = parts[plen:]
                if self.stale:
                    self._forget_dirs()
                try:
                    self._entry(entry, rel)
                except OSError as exc:
                    raise _os_error(exc, entry.describe()) from exc
            self.reader.drain()
            self._forget_dirs()
            self._finish_dirs()
        finally:
            self._forget_dirs()

    def _entry(self, entry: TarEntry, rel: list[str]) -> None:
        key = "/".join(rel)
        if not rel:
            if entry.type != DIRECTORY:
                raise UnsafeArchiveError(
                    f"archive entry {entry.describe()} would replace the extraction root"
                )
            self._defer(key, entry)
            return
        name = rel[-1]
        if self.whiteouts:
            if name.startswith(_WHITEOUT):
                self._whiteout(entry, rel[:-1], name)
                return
            if any(part.startswith(_WHITEOUT_META) for part in rel):
                LOG.debug("ignoring whiteout metadata entry %s", entry.describe())
                return
        if self.keep is not None and not self._kept(entry, key):
            return
        if self.whiteouts:
            self.unpacked.add(key)
        parent = self._parent(rel[:-1], create=True)
        assert parent is not None
        kind = entry.type
        if kind == REGULAR:
            self._file(parent, name, entry)
        elif kind == DIRECTORY:
            self._directory(parent, name, key, entry)
        elif kind == SYMLINK:
            self._symlink(parent, name, entry)
        elif kind == HARDLINK:
            self._hardlink(parent, name, rel, entry)
        else:
            self._special(parent, name, entry)

    def _kept(self, entry: TarEntry, key: str) -> bool:
        assert self.keep is not None
        if key in self.keep:
            return True
        if entry.type == DIRECTORY and key in self.keep_dirs:
            return True
        if entry.type == REGULAR:
            # A whitelisted hard link may still need these bytes.
            self.skipped_files[key] = entry
        return False

    # -- resolving directories inside dest -----------------------------------------

    def _parent(self, parts: list[str], *, create: bool) -> int | None:
        """A descriptor of directory ``parts`` resolved inside dest (cached)."""
        if not parts:
            return self.root_fd
        key = "/".join(parts)
        fd = self.dirs.get(key)
        if fd is None:
            fd = self._walk(parts, create=create)
            if fd is None:
                return None
            if len(self.dirs) >= _MAX_CACHED_DIRS:
                self._forget_dirs()
            self.dirs[key] = fd
        return fd

    def _walk(self, parts: list[str], *, create: bool) -> int | None:
        """Resolve ``parts`` from dest with chroot semantics; returns a new O_PATH fd.

        Returns None when a component is missing (and ``create`` is false) or is
        not a directory. Symlinks met on the way are followed *inside* dest: their
        targets are spliced into the components still to walk, an absolute one
        restarts at dest, and ``..`` at dest stays there. Only real directories are
        ever entered, so the kernel's ``..`` of a directory below dest is the one we
        came from, and no stack of descriptors is needed.
        """
        cur = self.root_fd
        depth = 0
        todo = list(reversed(parts))
        hops = steps = 0
        try:
            while todo:
                comp = todo.pop()
                if comp in ("", "."):
                    continue
                steps += 1
                if steps > _MAX_WALK_STEPS:
                    raise UnsafeArchiveError(
                        f"symbolic links below {quote_name('/'.join(parts))} expand too far"
                    )
                if comp == "..":
                    if depth:
                        up = self.root_fd if depth == 1 else os.open("..", _DIR_FLAGS, dir_fd=cur)
                        os.close(cur)
                        cur, depth = up, depth - 1
                    continue
                if depth >= _MAX_DEPTH:
                    raise ArchiveError(
                        f"cannot extract below {quote_name('/'.join(parts))}: "
                        f"directories nested more than {_MAX_DEPTH} deep"
                    )
                try:
                    nxt = os.open(comp, _DIR_FLAGS, dir_fd=cur)
                except FileNotFoundError:
                    if not create:
                        return None
                    os.mkdir(comp, 0o755, dir_fd=cur)
                    nxt = os.open(comp, _DIR_FLAGS, dir_fd=cur)
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    target = self._symlink_target(cur, comp, parts, create=create)
                    if target is None:
                        return None
                    hops += 1
                    if hops > _MAX_SYMLINK_HOPS:
                        raise UnsafeArchiveError(
                            f"too many levels of symbolic links in {quote_name('/'.join(parts))}"
                        ) from None
                    if target.startswith("/") and depth:
                        os.close(cur)
                        cur, depth = self.root_fd, 0
                    todo.extend(reversed(target.split("/")))
                    continue
                if depth:
                    os.close(cur)
                cur, depth = nxt, depth + 1
            result = cur if depth else os.dup(self.root_fd)
            depth = 0  # the caller owns it now
            return result
        finally:
            if depth:
                os.close(cur)

    @staticmethod
    def _symlink_target(dir_fd: int, name: str, parts: list[str], *, create: bool) -> str | None:
        """The target of symlink ``name``; None (or an error when creating) otherwise."""
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISLNK(info.st_mode):
            return os.readlink(name, dir_fd=dir_fd)
        if create:
            raise ArchiveError(
                f"cannot extract below {quote_name('/'.join(parts))}: "
                f"{quote_name(name)} is not a directory"
            )
        return None

    def _forget_dirs(self) -> None:
        """Close cached directory fds: a removal may have made some of them stale."""
        for fd in self.dirs.values():
            os.close(fd)
        self.dirs.clear()
        self.stale = False

    def _remove(self, parent: int, name: str) -> None:
        """Remove whatever ``name`` is in ``parent``, never following a symlink."""
        info = os.stat(name, dir_fd=parent, follow_symlinks=False)
        if stat.S_ISDIR(info.st_mode):
            shutil.rmtree(name, dir_fd=parent)
            self.stale = True
        else:
            os.unlink(name, dir_fd=parent)
            if stat.S_ISLNK(info.st_mode):
                self.stale = True

    # -- making entries ----------------------------------------------------------------

    def _file(
        self, parent: int, name: str, entry: TarEntry, data_of: TarEntry | None = None
    ) -> None:
        mode = entry.mode
        try:
            fd = os.open(name, _FILE_FLAGS, mode, dir_fd=parent)
        except FileExistsError:
            self._remove(parent, name)
            fd = os.open(name, _FILE_FLAGS, mode, dir_fd=parent)
        try:
            self._write_data(fd, data_of or entry, from_reader=data_of is None)
            if self.chown:
                os.fchown(fd, entry.uid, entry.gid)
            # open() applied the umask, and chown() clears setuid/setgid.
            if mode & self.umask or mode & 0o7000:
                os.fchmod(fd, mode)
            if entry.xattrs:
                self._set_xattrs(fd, entry)
            os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))
        finally:
            os.close(fd)

    def _write_data(self, fd: int, entry: TarEntry, *, from_reader: bool) -> None:
        size = entry.size
        source = self.file_source
        if source is None:
            for piece in self.reader.data_chunks():
                _write_all(fd, piece)
            return
        if size:
            window = source.window(entry.offset_data, size)
            if window is not None:
                _write_all(fd, window)
            elif not self.copy.copy(source.fd, fd, entry.offset_data, size):
                raise ArchiveError("truncated tar archive")
        if from_reader:
            self.reader.data_consumed()

    def _directory(self, parent: int, name: str, key: str, entry: TarEntry) -> None:
        try:
            os.mkdir(name, 0o700, dir_fd=parent)
        except FileExistsError:
            info = os.stat(name, dir_fd=parent, follow_symlinks=False)
            if not stat.S_ISDIR(info.st_mode):
                # Includes a symlink to a directory: replaced, not followed (ace.md).
                self._remove(parent, name)
                os.mkdir(name, 0o700, dir_fd=parent)
        self._defer(key, entry)

    def _defer(self, key: str, entry: TarEntry) -> None:
        self.deferred.pop(key, None)  # the last entry for a path wins
        self.deferred[key] = _DirMeta(
            entry.mode, entry.uid, entry.gid, entry.mtime_ns, entry.xattrs
        )

    def _symlink(self, parent: int, name: str, entry: TarEntry) -> None:
        if not entry.linkname:
            raise ArchiveError(f"symlink {entry.describe()} has an empty target")
        try:
            os.symlink(entry.linkname, name, dir_fd=parent)
        except FileExistsError:
            self._remove(parent, name)
            os.symlink(entry.linkname, name, dir_fd=parent)
        if self.chown:
            os.chown(name, entry.uid, entry.gid, dir_fd=parent, follow_symlinks=False)
        os.utime(name, ns=(entry.mtime_ns, entry.mtime_ns), dir_fd=parent, follow_symlinks=False)

    def _hardlink(self, parent: int, name: str, rel: list[str], entry: TarEntry) -> None:
        try:
            target = split_name(entry.linkname)
        except UnsafeArchiveError:
            target = []
        plen = len(self.prefix)
        if len(target) <= plen or target[:plen] != self.prefix:
            raise UnsafeArchiveError(
                f"hard link {entry.describe()} points outside the extracted tree: "
                f"{quote_name(entry.linkname)}"
            )
        target = target[plen:]
        if target == rel:
            return  # a link to itself: the file is already there
        skipped = self.skipped_files.get("/".join(target))
        if skipped is not None:
            if self.file_source is None:
                raise ArchiveError(
                    f"hard link {entry.describe()} points to {quote_name(entry.linkname)}, "
                    "which pathWhitelist excludes (extract from a file to allow this)"
                )
            # The whitelist dropped the target; its bytes are still in the archive file.
            self._file(parent, name, skipped, data_of=skipped)
            return
        tparent = self._parent(target[:-1], create=False)
        missing = ArchiveError(
            f"hard link {entry.describe()} points to a missing file {quote_name(entry.linkname)}"
        )
        if tparent is None:
            raise missing
        try:
            self._link(tparent, target[-1], parent, name)
        except FileExistsError:
            self._remove(parent, name)
            self._link(tparent, target[-1], parent, name)
        except FileNotFoundError:
            raise missing from None
        except PermissionError:
            raise ArchiveError(
                f"hard link {entry.describe()} points to a directory {quote_name(entry.linkname)}"
            ) from None

    @staticmethod
    def _link(tparent: int, tname: str, parent: int, name: str) -> None:
        os.link(tname, name, src_dir_fd=tparent, dst_dir_fd=parent, follow_symlinks=False)

    def _special(self, parent: int, name: str, entry: TarEntry) -> None:
        if not self.is_root:
            self._warn_once(entry.type, "skipping device nodes and fifos: not running as root")
            LOG.debug("skipped %s", entry.describe())
            return
        kind = {CHARDEV: stat.S_IFCHR, BLOCKDEV: stat.S_IFBLK, FIFO: stat.S_IFIFO}[entry.type]
        device = os.makedev(entry.devmajor, entry.devminor) if kind != stat.S_IFIFO else 0
        try:
            os.mknod(name, kind | entry.mode, device, dir_fd=parent)
        except FileExistsError:
            self._remove(parent, name)
            os.mknod(name, kind | entry.mode, device, dir_fd=parent)
        # ``name`` is the node just made (mknod fails on anything already there), and
        # nothing else writes in dest meanwhile, so these calls follow no symlink.
        if self.chown:
            os.chown(name, entry.uid, entry.gid, dir_fd=parent, follow_symlinks=False)
        os.chmod(name, entry.mode, dir_fd=parent)
        os.utime(name, ns=(entry.mtime_ns, entry.mtime_ns), dir_fd=parent, follow_symlinks=False)

    # -- whiteouts -----------------------------------------------------------------

    def _whiteout(self, entry: TarEntry, parent_parts: list[str], name: str) -> None:
        if name == _WHITEOUT_OPAQUE:
            self._opaque(parent_parts)
            return
        if name.startswith(_WHITEOUT_META):
            LOG.debug("ignoring whiteout metadata entry %s", entry.describe())
            return
        victim = name[len(_WHITEOUT) :]
        if victim in ("", ".", ".."):
            raise UnsafeArchiveError(f"invalid whiteout entry {entry.describe()}")
        parent = self._parent(parent_parts, create=False)
        if parent is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self._remove(parent, victim)

    def _opaque(self, parts: list[str]) -> None:
        """Empty a directory of what earlier layers put there (OCI opaque whiteout)."""
        parent = self._parent(parts, create=False)
        if parent is None:
            return
        base = "/".join(parts)
        fd = os.open(".", _META_DIR_FLAGS, dir_fd=parent)
        try:
            names = os.listdir(fd)
        finally:
            os.close(fd)
        for child in names:
            key = f"{base}/{child}" if base else child
            if key not in self.unpacked:
                self._remove(parent, child)

    # -- metadata --------------------------------------------------------------------

    def _finish_dirs(self) -> None:
        for key, meta in reversed(self.deferred.items()):
            try:
                self._finish_dir(key, meta)
            except OSError as exc:
                raise _os_error(exc, quote_name(key or ".")) from exc

    def _finish_dir(self, key: str, meta: _DirMeta) -> None:
        if key:
            parts = key.split("/")
            parent = self._parent(parts[:-1], create=False)
            if parent is None:
                return
            try:
                fd = os.open(parts[-1], _META_DIR_FLAGS, dir_fd=parent)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                    return  # replaced or removed by a later entry
                raise
        else:
            fd = os.dup(self.root_fd)
        try:
            if self.chown:
                os.fchown(fd, meta.uid, meta.gid)
            os.fchmod(fd, meta.mode)
            if meta.xattrs:
                self._set_xattrs(fd, meta)
            os.utime(fd, ns=(meta.mtime_ns, meta.mtime_ns))
        finally:
            os.close(fd)

    def _set_xattrs(self, fd: int, entry: TarEntry | _DirMeta) -> None:
        assert entry.xattrs is not None
        for name, value in entry.xattrs.items():
            if not (name.startswith("user.") or name == "security.capability"):
                continue
            try:
                os.setxattr(fd, name, value)
            except OSError as exc:
                self._warn_once(
                    "xattr", f"cannot set extended attributes here ({exc.strerror}); skipping them"
                )

    def _warn_once(self, topic: str, message: str) -> None:
        if topic not in self.warned:
            self.warned.add(topic)
            LOG.warning("%s", message)


class _KernelCopy:
    """Copies file data in the kernel, falling back as the file systems require."""

    def __init__(self) -> None:
        self.method = "copy_file_range"

    def copy(self, src: int, dst: int, offset: int, size: int) -> bool:
        """Copy ``size`` bytes at ``offset`` of ``src`` to ``dst``; False if src is short."""
        done = 0
        while done < size:
            try:
                n = self._copy_once(src, dst, offset + done, size - done)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                    raise
                if self.method == "copy_file_range":
                    self.method = "sendfile"
                elif self.method == "sendfile":
                    self.method = "read"
                else:
                    raise
                continue
            if n == 0:
                return False
            done += n
        return True

    def _copy_once(self, src: int, dst: int, offset: int, count: int) -> int:
        if self.method == "copy_file_range":
            return os.copy_file_range(src, dst, count, offset_src=offset)
        if self.method == "sendfile":
            return os.sendfile(dst, src, offset, count)
        data = os.pread(src, min(count, 1 << 20), offset)
        _write_all(dst, memoryview(data))
        return len(data)


def _write_all(fd: int, data: memoryview | bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _current_umask() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    # Reading the umask means setting it; only done where /proc is missing.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _os_error(exc: OSError, what: str) -> ArchiveError | StoreError:
    reason = exc.strerror or str(exc)
    if exc.errno in _STORE_ERRNOS:
        return StoreError(f"cannot extract {what}: {reason}")
    return ArchiveError(f"cannot extract {what}: {reason}")
