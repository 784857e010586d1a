"""Image layouts (a directory holding ``manifest`` and ``rootfs/``) and ACIs built from them.

appc-spec/aci.md, "Image Layout": the layout is what an ACI holds once unpacked,
and ``actool build`` archives one. :func:`read_layout` checks a layout the way the
store checks an archive (only ``manifest``, a regular file, and ``rootfs``, a
directory; the manifest valid). :func:`build_aci` then writes the archive
reproducibly through :class:`rkt.aci.writer.TarWriter`:

* entries in a fixed order: ``manifest``, ``rootfs``, then the rootfs depth first,
  each directory's names sorted by their bytes;
* numeric owners only, or all ``0:0`` with ``owner_root`` (appc's ``actool build
  --owner-root``); modes and symlink targets as on disk; hard links as tar links to
  the first name written;
* every time set to ``mtime`` when given (``SOURCE_DATE_EPOCH``), else each file's own;
* the manifest's exact bytes (appc's actool re-serialised it, with the time of the
  build, so two builds never matched; checklist section 2);
* no sockets (they cannot be archived) and no device nodes (the runtime makes the
  pod's ``/dev``, appc-spec/OS-SPEC.md): each one skipped is reported;
* no xattrs, as ``tar`` writes none by default.

The archive is written to a temporary file next to the output and renamed into
place, so a failed build leaves no half image.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from rkt.aci.archive import DEFAULT_LIMITS, MANIFEST, ROOTFS
from rkt.aci.tarstream import quote_name
from rkt.aci.writer import TarWriter, member
from rkt.errors import ImageError, ManifestError, UsageError

LOG = logging.getLogger(__name__)

#: ISA-L's highest level: within about 15% of gzip -6's size at ten times its speed
DEFAULT_COMPRESS_LEVEL: Final = 3


@dataclass(frozen=True)
class BuildOptions:
    compress: bool = True
    #: every entry owned by 0:0 instead of the files' owners
    owner_root: bool = False
    #: every entry's mtime (seconds since the epoch); None keeps each file's own
    mtime: int | None = None
    overwrite: bool = False


def read_layout(directory: Path) -> bytes:
    """Check that ``directory`` is an image layout with a valid image manifest; return
    the manifest's bytes. Raises :class:`ImageError` (:class:`ManifestError` for the
    manifest) naming what is wrong."""
    from rkt.schema.image import ImageManifest

    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        raise ImageError(f"{directory}: no such directory") from None
    except NotADirectoryError:
        raise ImageError(f"{directory}: not a directory") from None
    except OSError as exc:
        raise ImageError(f"{directory}: cannot read: {exc.strerror}") from exc
    extra = [name for name in names if name not in (MANIFEST, ROOTFS)]
    if extra:
        raise ImageError(
            f"invalid image layout {directory}: unexpected {quote_name(extra[0])} (a layout "
            "holds only manifest and rootfs/, appc-spec/aci.md)")
    manifest_path = directory / MANIFEST
    rootfs = directory / ROOTFS
    if MANIFEST not in names:
        raise ImageError(f"invalid image layout {directory}: no manifest")
    if ROOTFS not in names:
        raise ImageError(f"invalid image layout {directory}: no rootfs directory")
    if not stat.S_ISDIR(rootfs.lstat().st_mode):
        raise ImageError(f"invalid image layout {directory}: rootfs is not a directory")
    info = manifest_path.lstat()
    if not stat.S_ISREG(info.st_mode):
        raise ImageError(f"invalid image layout {directory}: manifest is not a regular file")
    if info.st_size > DEFAULT_LIMITS.max_manifest_size:
        raise ManifestError(f"{manifest_path}: larger than "
                            f"{DEFAULT_LIMITS.max_manifest_size} bytes")
    try:
        data = manifest_path.read_bytes()
    except OSError as exc:
        raise ImageError(f"{manifest_path}: cannot read: {exc.strerror}") from exc
    ImageManifest.parse(data, source=str(manifest_path))
    return data


def check_output(out: Path, *, overwrite: bool) -> None:
    """The rules of an ACI file name (checklist section 2) and of not clobbering one."""
    if not out.name.endswith(".aci"):
        raise UsageError(f"{out}: an image file name must end in .aci (appc-spec/aci.md)")
    if out.is_dir():
        raise UsageError(f"{out} is a directory")
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise UsageError(f"{out} already exists (use --overwrite to replace it)")


def build_aci(directory: Path, out: Path, options: BuildOptions,
              warn: Callable[[str], None]) -> None:
    """Archive the layout ``directory`` as the ACI ``out`` (see the module docstring)."""
    check_output(out, overwrite=options.overwrite)
    manifest = read_layout(directory)
    root = directory.resolve()
    target = out.parent.resolve() / out.name
    if target.is_relative_to(root):
        raise UsageError(f"{out} is inside the layout {directory}: write the image elsewhere")
    with AtomicOutput(out) as fd:
        tar = TarWriter(fd, compress_level=DEFAULT_COMPRESS_LEVEL if options.compress
                        else None)
        _LayoutWriter(tar, options, warn).write(root, manifest)
        tar.close()


class AtomicOutput:
    """A temporary file next to ``out``, renamed onto it on success, removed otherwise."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.fd = -1
        self.temp = ""

    def __enter__(self) -> int:
        try:
            self.fd, self.temp = tempfile.mkstemp(prefix=f".{self.out.name}.", dir=self.out.parent
                                                  or ".")
        except OSError as exc:
            raise ImageError(f"cannot write {self.out}: {exc.strerror}") from exc
        return self.fd

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        try:
            if kind is None:
                os.fchmod(self.fd, 0o644 & ~_umask())
                os.close(self.fd)
                self.fd = -1
                os.replace(self.temp, self.out)
                return
        except OSError as error:
            _remove(self.temp)
            raise _write_error(self.out, error) from error
        finally:
            if self.fd >= 0:
                os.close(self.fd)
        _remove(self.temp)
        if isinstance(exc, OSError):
            raise _write_error(self.out, exc) from exc


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _write_error(out: Path, exc: OSError) -> ImageError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ImageError(f"no space left on device while writing {out}")
    if exc.filename:
        return ImageError(f"cannot build {out}: {os.fsdecode(exc.filename)}: "
                          f"{exc.strerror or exc}")
    return ImageError(f"cannot write {out}: {exc.strerror or exc}")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class _LayoutWriter:
    def __init__(self, tar: TarWriter, options: BuildOptions,
                 warn: Callable[[str], None]) -> None:
        self.tar = tar
        self.options = options
        self.warn = warn
        self.links: dict[tuple[int, int], str] = {}

    def _info(self, name: str, st: os.stat_result, type_: bytes) -> tarfile.TarInfo:
        owner_root = self.options.owner_root
        mtime = self.options.mtime
        return member(
            name, mode=stat.S_IMODE(st.st_mode), type_=type_,
            uid=0 if owner_root else st.st_uid, gid=0 if owner_root else st.st_gid,
            mtime=int(st.st_mtime) if mtime is None else mtime)

    def write(self, root: Path, manifest: bytes) -> None:
        self.tar.add_bytes(self._info(MANIFEST, (root / MANIFEST).lstat(), tarfile.REGTYPE),
                           manifest)
        rootfs = root / ROOTFS
        self.tar.add(self._info(ROOTFS, rootfs.lstat(), tarfile.DIRTYPE))
        for path, name, st in _walk(os.fsencode(rootfs), ROOTFS):
            self._entry(path, name, st)

    def _entry(self, path: bytes, name: str, st: os.stat_result) -> None:
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            self.tar.add(self._info(name, st, tarfile.DIRTYPE))
        elif stat.S_ISREG(mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1:
                first = self.links.get(key)
                if first is not None:
                    info = self._info(name, st, tarfile.LNKTYPE)
                    info.linkname = first
                    self.tar.add(info)
                    return
                self.links[key] = name
            info = self._info(name, st, tarfile.REGTYPE)
            info.size = st.st_size
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                self.tar.add_data(info, fd)
            finally:
                os.close(fd)
        elif stat.S_ISLNK(mode):
            info = self._info(name, st, tarfile.SYMTYPE)
            info.linkname = os.fsdecode(os.readlink(path))
            self.tar.add(info)
        elif stat.S_ISFIFO(mode):
            self.tar.add(self._info(name, st, tarfile.FIFOTYPE))
        elif stat.S_ISSOCK(mode):
            self.warn(f"skipping socket {quote_name(name)}: sockets cannot be archived")
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            self.warn(f"skipping device node {quote_name(name)}: the runtime provides the "
                      "pod's /dev (appc-spec/OS-SPEC.md)")
        else:
            self.warn(f"skipping {quote_name(name)}: not a file, directory, link or FIFO")


def _walk(top: bytes, top_name: str) -> Iterator[tuple[bytes, str, os.stat_result]]:
    """Below ``top``, depth first, parents before children, names sorted by bytes."""
    stack: list[Iterator[tuple[bytes, str, os.stat_result]]] = [_children(top, top_name)]
    while stack:
        found = next(stack[-1], None)
        if found is None:
            stack.pop()
            continue
        yield found
        path, name, st = found
        if stat.S_ISDIR(st.st_mode):
            stack.append(_children(path, name))


def _children(directory: bytes, name: str) -> Iterator[tuple[bytes, str, os.stat_result]]:
    with os.scandir(directory) as entries:
        found = sorted((entry.name, entry.path, entry.stat(follow_symlinks=False))
                       for entry in entries)
    for child, path, st in found:
        yield path, f"{name}/{os.fsdecode(child)}", st
