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

The rules themselves (which names are refused, how parents, hard links and
whiteouts resolve, what an opaque whiteout removes, when directory metadata is
applied) are :mod:`rkt.aci.entries`, shared with the Docker plugin's squash; here
they are carried out on the file system:

* **A parent component that is a symlink** in ``dest`` (from this archive or from a
  layer extracted before) is resolved by :class:`~rkt.aci.entries.RootedWalk`, one
  ``openat`` per component: only real directories are entered, symlinks are read
  with ``readlinkat`` and their targets walked inside ``dest``. Docker and rkt
  (which extracted inside ``chroot(dest)``) behave the same, so layered images keep
  working.
* **An entry over an existing path** replaces it after removing what was there;
  removal never follows symlinks (``shutil.rmtree`` with ``dir_fd``).
* **Hard links** are made with ``linkat`` without following the target's last
  component (a link to a symlink links the symlink itself), and no metadata is
  applied to them, so a link cannot be used to chmod a file elsewhere.
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
from pathlib import Path
from typing import BinaryIO, Final

from rkt.aci.archive import DEFAULT_LIMITS, READ_SIZE, ArchiveLimits
from rkt.aci.compression import Compression, detect, open_decompressed
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
    StreamSource,
    TarEntry,
    TarReader,
    quote_name,
)
from rkt.errors import ArchiveError, StoreError

LOG = logging.getLogger(__name__)

_DIR_FLAGS: Final = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_META_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_CACHED_DIRS: Final = 256
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
        self.is_root = os.geteuid() == 0
        self.chown = self.is_root if preserve_owner is None else preserve_owner
        self.umask = _current_umask()
        self.dirs: dict[str, int] = {}
        self.stale = False
        self.keep: frozenset[str] = frozenset()
        self.keep_dirs: frozenset[str] = frozenset()
        if path_whitelist is not None:
            self._set_whitelist(path_whitelist)
        self.archive = ArchivePass(
            strip_prefix,
            whiteouts=whiteouts,
            keep=self._kept if path_whitelist is not None else None,
        )
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
        place = self.archive.place
        try:
            for entry in self.reader:
                step = place(entry)
                if step is None:
                    continue
                if self.stale:
                    self._forget_dirs()
                try:
                    self._apply(step, entry)
                except OSError as exc:
                    raise _os_error(exc, entry.describe()) from exc
            self.reader.drain()
            self._forget_dirs()
            self._finish_dirs()
        finally:
            self._forget_dirs()

    def _apply(self, step: Step, entry: TarEntry) -> None:
        if step.kind is StepKind.WHITEOUT:
            self._whiteout(step)
            return
        if step.kind is StepKind.OPAQUE:
            self._opaque(step)
            return
        parent = self._parent(step.parent, create=True)
        assert parent is not None
        name = step.name
        kind = entry.type
        if kind == REGULAR:
            self._file(parent, name, entry)
        elif kind == DIRECTORY:
            self._directory(parent, name, step.key, entry)
        elif kind == SYMLINK:
            self._symlink(parent, name, entry)
        elif kind == HARDLINK:
            self._hardlink(parent, step, entry)
        else:
            self._special(parent, name, entry)

    def _kept(self, entry: TarEntry, key: str) -> bool:
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
        """Resolve ``parts`` from dest with :class:`RootedWalk`; returns a new O_PATH fd.

        Returns None when a component is missing (and ``create`` is false) or is
        not a directory. Only real directories are ever entered, so the kernel's
        ``..`` of a directory below dest is the one we came from, and no stack of
        descriptors is needed.
        """
        root = self.root_fd
        cur = root  # any other descriptor here is ours to close
        walk = RootedWalk(parts)
        try:
            for comp in walk:
                if comp == UP:
                    up = os.open("..", _DIR_FLAGS, dir_fd=cur)
                    os.close(cur)
                    cur = up
                    continue
                if comp == ROOT:
                    if cur != root:
                        os.close(cur)
                        cur = root
                    continue
                try:
                    nxt = os.open(comp, _DIR_FLAGS, dir_fd=cur)
                except FileNotFoundError:
                    if not create:
                        return None
                    os.mkdir(comp, IMPLICIT_DIR_MODE, dir_fd=cur)
                    nxt = os.open(comp, _DIR_FLAGS, dir_fd=cur)
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    info = os.stat(comp, dir_fd=cur, follow_symlinks=False)
                    if not stat.S_ISLNK(info.st_mode):
                        if create:
                            raise walk.not_a_directory(comp) from None
                        return None
                    walk.follow(os.readlink(comp, dir_fd=cur))
                    continue
                if cur != root:
                    os.close(cur)
                cur = nxt
            result = cur if cur != root else os.dup(root)
            cur = root  # the caller owns it now
            return result
        finally:
            if cur != root:
                os.close(cur)

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
            os.mkdir(name, PENDING_DIR_MODE, dir_fd=parent)
        except FileExistsError:
            info = os.stat(name, dir_fd=parent, follow_symlinks=False)
            if not stat.S_ISDIR(info.st_mode):
                # Includes a symlink to a directory: replaced, not followed (ace.md).
                self._remove(parent, name)
                os.mkdir(name, PENDING_DIR_MODE, dir_fd=parent)
        self.archive.defer(key, entry)

    def _symlink(self, parent: int, name: str, entry: TarEntry) -> None:
        target = symlink_target(entry)
        try:
            os.symlink(target, name, dir_fd=parent)
        except FileExistsError:
            self._remove(parent, name)
            os.symlink(target, name, dir_fd=parent)
        if self.chown:
            os.chown(name, entry.uid, entry.gid, dir_fd=parent, follow_symlinks=False)
        os.utime(name, ns=(entry.mtime_ns, entry.mtime_ns), dir_fd=parent, follow_symlinks=False)

    def _hardlink(self, parent: int, step: Step, entry: TarEntry) -> None:
        target = self.archive.link_target(entry, step)
        if target is None:
            return
        name = step.name
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
        if tparent is None:
            raise missing_link_target(entry)
        try:
            self._link(tparent, target[-1], parent, name)
        except FileExistsError:
            self._remove(parent, name)
            self._link(tparent, target[-1], parent, name)
        except FileNotFoundError:
            raise missing_link_target(entry) from None
        except PermissionError:
            raise link_to_directory(entry) from None

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

    def _whiteout(self, step: Step) -> None:
        parent = self._parent(step.parent, create=False)
        if parent is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self._remove(parent, step.name)

    def _opaque(self, step: Step) -> None:
        """Empty a directory of what earlier layers put there (OCI opaque whiteout)."""
        parent = self._parent(step.parent, create=False)
        if parent is None:
            return
        fd = os.open(".", _META_DIR_FLAGS, dir_fd=parent)
        try:
            names = os.listdir(fd)
        finally:
            os.close(fd)
        for child in self.archive.earlier(step, names):
            self._remove(parent, child)

    # -- metadata --------------------------------------------------------------------

    def _finish_dirs(self) -> None:
        for key, entry in self.archive.finished_dirs():
            try:
                self._finish_dir(key, entry)
            except OSError as exc:
                raise _os_error(exc, quote_name(key or ".")) from exc

    def _finish_dir(self, key: str, entry: TarEntry) -> None:
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
                os.fchown(fd, entry.uid, entry.gid)
            os.fchmod(fd, entry.mode)
            if entry.xattrs:
                self._set_xattrs(fd, entry)
            os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))
        finally:
            os.close(fd)

    def _set_xattrs(self, fd: int, entry: TarEntry) -> None:
        for name, value in (kept_xattrs(entry.xattrs) or {}).items():
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
