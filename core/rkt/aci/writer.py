"""Writing tar archives (ACIs) whose bytes depend only on what is put in them.

One writer serves everything that makes an ACI: the Docker plugin's layer squash
and ``actool build``. It writes the members it is given in the order it is given
them; it never reads the clock, the user database or the host's umask, so the same
members give the same bytes, and therefore the same image ID (the SHA-512 of the
uncompressed tar, appc-spec/aci.md). Owners are numeric only (no ``uname`` or
``gname``: host names would leak into the image and differ between hosts).

Output is plain, or gzip through ISA-L (``compress_level``) with a header that holds
no file name and a zero mtime, so the compressed file is reproducible too. File data
is copied from a source descriptor: in the kernel (``copy_file_range``) for a plain
output, through the compressor otherwise.
"""

from __future__ import annotations

import errno
import os
import tarfile
from typing import TYPE_CHECKING, Final

from rkt.aci.tarstream import quote_name
from rkt.errors import ArchiveError

if TYPE_CHECKING:
    from isal.isal_zlib import Compress

BLOCK: Final = 512
_SMALL_FILE: Final = 64 << 10
_FLUSH_AT: Final = 1 << 20
_COPY_CHUNK: Final = 1 << 20
_OCTAL_7: Final = 8**7
_OCTAL_11: Final = 8**11
#: wbits for a gzip wrapper (16 + the 32 KiB window): zlib's own header, no name, mtime 0
_GZIP_WBITS: Final = 31


def ustar_header(info: tarfile.TarInfo) -> bytes | None:
    """``info.tobuf(tarfile.PAX_FORMAT)``, byte for byte, for the common member that
    needs no pax record (short ASCII names, small numbers, no xattrs), about ten
    times faster; None for any other member."""
    if info.pax_headers:
        return None
    name = info.name + "/" if info.type == tarfile.DIRTYPE and not info.name.endswith("/") \
        else info.name
    if len(name) > 100 or len(info.linkname) > 100 or not (name + info.linkname).isascii():
        return None
    if not (0 <= info.uid < _OCTAL_7 and 0 <= info.gid < _OCTAL_7
            and 0 <= info.size < _OCTAL_11 and 0 <= info.mtime < _OCTAL_11):
        return None
    if info.type in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        if not (0 <= info.devmajor < _OCTAL_7 and 0 <= info.devminor < _OCTAL_7):
            return None
        devices = b"%07o\0%07o\0" % (info.devmajor, info.devminor)
    else:
        devices = bytes(16)
    header = bytearray(b"".join((
        name.encode().ljust(100, b"\0"),
        b"%07o\0%07o\0%07o\0%011o\0%011o\0" % (
            info.mode & 0o7777, info.uid, info.gid, info.size, int(info.mtime)),
        b"        ",
        info.type,
        info.linkname.encode().ljust(100, b"\0"),
        b"ustar\x0000",
        bytes(64),  # uname, gname: never written, owners are numeric
        devices,
        bytes(167),  # prefix and padding
    )))
    header[148:155] = b"%06o\0" % sum(header)
    return bytes(header)


def member(name: str, *, mode: int, uid: int = 0, gid: int = 0, mtime: int = 0,
           type_: bytes = tarfile.REGTYPE, linkname: str = "", size: int = 0) -> tarfile.TarInfo:
    """A tar member's header fields, with numeric owners only."""
    info = tarfile.TarInfo(name)
    info.type = type_
    info.mode = mode
    info.uid, info.gid = uid, gid
    info.uname = info.gname = ""
    info.mtime = mtime
    info.linkname = linkname
    info.size = size
    return info


class TarWriter:
    """Tar members to a file descriptor, plain or gzip-compressed (see the module doc).

    The caller closes ``fd``; :meth:`close` writes the end-of-archive blocks.
    """

    def __init__(self, fd: int, *, compress_level: int | None = None) -> None:
        self.fd = fd
        self.pending = bytearray()
        self._compressor: Compress | None = None
        if compress_level is not None:
            from isal import isal_zlib

            self._compressor = isal_zlib.compressobj(
                compress_level, isal_zlib.DEFLATED, _GZIP_WBITS)

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        if self._compressor is not None:
            data = self._compressor.compress(data)
        done, total = 0, len(data)
        with memoryview(data) as view:
            while done < total:
                done += os.write(self.fd, view[done:])

    def flush(self) -> None:
        if self.pending:
            self._write(self.pending)
            self.pending.clear()

    def add(self, info: tarfile.TarInfo) -> None:
        """A member without data: a directory, a link, a device, a FIFO."""
        self.pending += ustar_header(info) or info.tobuf(
            tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        if len(self.pending) >= _FLUSH_AT:
            self.flush()

    def add_bytes(self, info: tarfile.TarInfo, data: bytes) -> None:
        """A regular file holding ``data`` (``info.size`` is set here)."""
        info.size = len(data)
        self.add(info)
        self.pending += data + bytes(-len(data) % BLOCK)

    def add_data(self, info: tarfile.TarInfo, source: int, offset: int = 0) -> None:
        """A regular file whose ``info.size`` bytes are read from ``source`` at ``offset``.

        ``source`` ending early (a file that shrank while it was archived, a cut
        layer) is an :class:`ArchiveError` naming the member.
        """
        self.add(info)
        size = info.size
        if size <= _SMALL_FILE:
            data = os.pread(source, size, offset)
            if len(data) != size:
                raise _ended_early(info.name)
            self.pending += data
        else:
            self.flush()
            self._copy(source, offset, size, info.name)
        self.pending += bytes(-size % BLOCK)
        if len(self.pending) >= _FLUSH_AT:
            self.flush()

    def add_raw(self, source: int, offset: int, size: int) -> None:
        """``size`` bytes of tar stream copied as they are (members of another archive)."""
        self.flush()
        self._copy(source, offset, size, "archive")

    def _copy(self, source: int, offset: int, size: int, name: str) -> None:
        done = 0
        if self._compressor is not None:
            while done < size:
                data = os.pread(source, min(_COPY_CHUNK, size - done), offset + done)
                if not data:
                    raise _ended_early(name)
                self._write(data)
                done += len(data)
            return
        while done < size:
            try:
                copied = os.copy_file_range(source, self.fd, size - done, offset + done)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                    raise
                copied = os.sendfile(self.fd, source, offset + done, size - done)
            if copied == 0:
                raise _ended_early(name)
            done += copied

    def close(self, *, end_archive: bool = True) -> None:
        """End the archive (two zero blocks, unless the raw copy of a whole archive
        brought its own) and the gzip stream, if any."""
        if end_archive:
            self.pending += bytes(2 * BLOCK)
        self.flush()
        if self._compressor is not None:
            tail = self._compressor.flush()
            self._compressor = None
            self._write(tail)


def _ended_early(name: str) -> ArchiveError:
    return ArchiveError(f"data of {quote_name(name)} ended early (did it shrink while "
                        "it was being archived?)")
