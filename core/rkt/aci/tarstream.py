"""A strict, sequential reader of tar archives for hostile input.

Why not :mod:`tarfile`: in stream mode it silently treats a truncated header, or
garbage where a header should be, as the end of the archive (so a cut download
looks like a smaller valid image), and its exceptions for hostile input range over
``ReadError``, ``EOFError``, ``ValueError`` and ``UnicodeError``. This reader
parses the same formats (POSIX ustar, pax ``x``/``g`` records, GNU ``L``/``K`` long
names, base-256 numbers) with stricter rules:

* every header checksum is verified, and the archive must end with a zero block:
  running out of bytes anywhere else is "truncated tar archive";
* only header-only types (links, directories, devices, fifos) and regular files are
  accepted; sparse, multi-volume and unknown types are refused rather than guessed;
* data follows only regular files and metadata headers; a size on any other type is
  ignored, as Go's ``archive/tar`` (which rkt used) and :mod:`tarfile` do, so the
  validator and the extractor can never disagree on where a header starts;
* counts and sizes are bounded by :class:`~rkt.aci.archive.ArchiveLimits` before
  anything is allocated, and metadata (pax records, long names) counts toward the
  size bound too;
* every problem raises :class:`~rkt.errors.ArchiveError` with a one-line message.

Names are ``str`` decoded with :func:`os.fsdecode` (surrogate escapes keep bytes
that are not UTF-8), so passing them back to :mod:`os` reproduces the exact bytes.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Final
from urllib.parse import unquote_to_bytes

from rkt.errors import ArchiveError, UnsafeArchiveError

if TYPE_CHECKING:
    from rkt.aci.archive import ArchiveLimits

LOG = logging.getLogger(__name__)

BLOCK: Final = 512
_FS_ENCODING: Final = sys.getfilesystemencoding()
_FS_ERRORS: Final = sys.getfilesystemencodeerrors()
_ZERO_BLOCK: Final = bytes(BLOCK)

# Normalised type flags of TarEntry.type.
REGULAR: Final = "0"
HARDLINK: Final = "1"
SYMLINK: Final = "2"
CHARDEV: Final = "3"
BLOCKDEV: Final = "4"
DIRECTORY: Final = "5"
FIFO: Final = "6"

_TYPES: Final = {
    b"0": REGULAR,
    b"\0": REGULAR,
    b"7": REGULAR,  # contiguous file: a regular file everywhere but on old Masscomp
    b"1": HARDLINK,
    b"2": SYMLINK,
    b"3": CHARDEV,
    b"4": BLOCKDEV,
    b"5": DIRECTORY,
    b"6": FIFO,
}
_DEVICES: Final = (CHARDEV, BLOCKDEV)
_PAX: Final = (b"x", b"X")  # X: Solaris' name for the same per-file record
_PAX_GLOBAL: Final = b"g"
_GNU_LONGNAME: Final = b"L"
_GNU_LONGLINK: Final = b"K"

# uid_t/gid_t and major/minor numbers are 32 bits (and (uid_t)-1 means "unchanged");
# timestamps must fit the kernel's signed 64-bit nanoseconds.
_MAX_ID: Final = (1 << 32) - 1
_MIN_TIME_NS: Final = -(1 << 63)
_MAX_TIME_NS: Final = (1 << 63) - 1

#: Bound on one pax header or GNU long name (xattrs live there; one is at most 64 KiB).
MAX_METADATA_SIZE: Final = 1 << 20


@dataclass(slots=True)
class TarEntry:
    """One archive member, with pax and GNU extensions already applied."""

    name: str
    type: str
    size: int
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    linkname: str
    devmajor: int
    devminor: int
    xattrs: dict[str, bytes] | None
    #: Offset of the member's data in the uncompressed tar stream.
    offset_data: int

    def describe(self) -> str:
        """The entry's name quoted for an error message."""
        return quote_name(self.name)


def quote_name(name: str, limit: int = 200) -> str:
    """``name`` in double quotes, escaped so that a message stays on one line."""
    text = os.fsencode(name).decode("utf-8", "backslashreplace")
    if len(text) > limit:
        text = text[:limit] + "..."
    escaped = "".join(
        ch if ch.isprintable() and ch not in '"\\' else _escape_char(ch) for ch in text
    )
    return f'"{escaped}"'


def _escape_char(ch: str) -> str:
    if ch in '"\\':
        return "\\" + ch
    if ch == "\n":
        return "\\n"
    if ch == "\t":
        return "\\t"
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def split_name(name: str) -> list[str]:
    """The components of an archive name; raises if it is absolute or has ``..``.

    ``.`` and empty components are dropped, so ``./rootfs//bin/`` gives
    ``["rootfs", "bin"]`` and ``.`` gives ``[]`` (the archive's root). GNU tar
    refuses ``..`` members too; no legitimate image needs them.
    """
    if name.startswith("/"):
        raise UnsafeArchiveError(f"archive entry has an absolute name {quote_name(name)}")
    parts = [part for part in name.split("/") if part and part != "."]
    if ".." in parts:
        raise UnsafeArchiveError(f'archive entry name has a ".." component {quote_name(name)}')
    return parts


# -- byte sources -------------------------------------------------------------------


class StreamSource:
    """Sequential reads from a stream, in large chunks, never seeking."""

    def __init__(self, stream: BinaryIO, bufsize: int = 1 << 20) -> None:
        self._read = stream.read
        self._bufsize = bufsize
        self._buf = b""
        self._off = 0
        #: Offset of the next byte the reader will see.
        self.pos = 0

    def take(self, n: int) -> bytes:
        """The next ``n`` bytes, or fewer at the end of the stream."""
        buf, off = self._buf, self._off
        end = off + n
        if end <= len(buf):
            self._off = end
            self.pos += n
            return buf[off:end]
        parts = [buf[off:]]
        have = len(buf) - off
        self._buf, self._off = b"", 0
        while have < n:
            chunk = self._read(max(self._bufsize, n - have))
            if not chunk:
                break
            need = n - have
            if len(chunk) > need:
                parts.append(chunk[:need])
                self._buf, self._off = chunk, need
                have = n
            else:
                parts.append(chunk)
                have += len(chunk)
        self.pos += have
        return b"".join(parts)

    def chunks(self, n: int) -> Iterator[memoryview]:
        """Yield the next ``n`` bytes in pieces; stops short at the end of the stream."""
        while n > 0:
            if self._off >= len(self._buf):
                self._buf, self._off = self._read(self._bufsize), 0
                if not self._buf:
                    return
            piece = memoryview(self._buf)[self._off : self._off + n]
            self._off += len(piece)
            self.pos += len(piece)
            n -= len(piece)
            yield piece

    def skip(self, n: int) -> int:
        """Skip ``n`` bytes; returns how many there were."""
        skipped = 0
        for piece in self.chunks(n):
            skipped += len(piece)
        return skipped


class FileSource:
    """Positional reads from a regular file, so that member data need not be read.

    The extractor copies data in the kernel (``copy_file_range``) from :attr:`fd`
    at :attr:`TarEntry.offset_data`; headers come from a small read-ahead window,
    which for small members also holds their data.
    """

    _WINDOW = 1 << 16

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.size = os.fstat(fd).st_size
        self.pos = 0
        self._buf = b""
        self._buf_start = 0

    def take(self, n: int) -> bytes:
        start = self.pos - self._buf_start
        if start < 0 or start + n > len(self._buf):
            self._buf = os.pread(self.fd, max(n, self._WINDOW), self.pos)
            self._buf_start = self.pos
            start = 0
        data = self._buf[start : start + n]
        self.pos += len(data)
        return data

    def window(self, offset: int, n: int) -> memoryview | None:
        """The bytes at ``offset`` if the read-ahead window holds all ``n`` of them."""
        start = offset - self._buf_start
        if start < 0 or start + n > len(self._buf):
            return None
        return memoryview(self._buf)[start : start + n]

    def chunks(self, n: int) -> Iterator[memoryview]:
        while n > 0:
            data = os.pread(self.fd, min(n, 1 << 20), self.pos)
            if not data:
                return
            self.pos += len(data)
            n -= len(data)
            yield memoryview(data)

    def skip(self, n: int) -> int:
        skipped = max(0, min(n, self.size - self.pos))
        self.pos += skipped
        return skipped


# -- header parsing -----------------------------------------------------------------


def _number(field: bytes, what: str, offset: int) -> int:
    """A numeric header field: NUL/space terminated octal, or GNU base-256.

    Signs and underscores that ``int`` would accept are harmless: callers bound
    the values (sizes and owners must not be negative, modes are masked).
    """
    if field[0] & 0x80:
        value = int.from_bytes(field[1:], "big")
        if field[0] == 0xFF:
            return value - (1 << (8 * (len(field) - 1)))
        if field[0] != 0x80:
            raise ArchiveError(f"corrupt tar archive: bad {what} field at offset {offset}")
        return value
    try:
        return int(field.split(b"\0", 1)[0] or b"0", 8)
    except ValueError:
        if not field.split(b"\0", 1)[0].strip():
            return 0  # all spaces: some writers leave unused fields blank
        raise ArchiveError(f"corrupt tar archive: bad {what} field at offset {offset}") from None


def _device_number(field: bytes, offset: int) -> int:
    value = _number(field, "device number", offset)
    if not 0 <= value < _MAX_ID:
        raise ArchiveError(f"corrupt tar archive: device number out of range at offset {offset}")
    return value


def _checksum_ok(block: bytes, stored: int) -> bool:
    # The sum of 256 bytes is below adler32's modulus (65521), so the low half of
    # adler32 of each half block is 1 + its exact byte sum: C speed for a hot loop.
    total = (zlib.adler32(block[:256]) & 0xFFFF) + (zlib.adler32(block[256:]) & 0xFFFF) - 2
    unsigned = total - sum(block[148:156]) + 8 * 32
    if unsigned == stored:
        return True
    # Some old tars summed signed chars.
    signed = sum(b - 256 if b > 127 else b for b in block[:148] + block[156:]) + 8 * 32
    return signed == stored


def _cstring(field: bytes) -> bytes:
    return field.split(b"\0", 1)[0]


def _pax_records(data: bytes, offset: int) -> dict[bytes, bytes]:
    """Parse ``"%d %s=%s\\n"`` records (POSIX pax); later keys override earlier ones."""
    records: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos, pos + 20)
        digits = data[pos:space] if space > pos else b""
        if not digits.isdigit():
            if not data[pos:].strip(b"\0"):
                break  # NUL padding after the last record
            raise ArchiveError(f"corrupt tar archive: bad pax header at offset {offset}")
        end = pos + int(digits)
        if end <= space + 1 or end > len(data) or data[end - 1] != 0x0A:
            raise ArchiveError(f"corrupt tar archive: bad pax header at offset {offset}")
        key, eq, value = data[space + 1 : end - 1].partition(b"=")
        if not eq:
            raise ArchiveError(f"corrupt tar archive: bad pax header at offset {offset}")
        records[key] = value
        pos = end
    return records


def _pax_int(value: bytes, key: bytes, offset: int) -> int:
    if not value.isdigit():
        raise ArchiveError(f"corrupt tar archive: bad pax {key.decode()} at offset {offset}")
    return int(value)


def _pax_time_ns(value: bytes, offset: int) -> int:
    sign = -1 if value.startswith(b"-") else 1
    whole, _, frac = value.lstrip(b"-").partition(b".")
    if not whole.isdigit() or (frac and not frac.isdigit()):
        raise ArchiveError(f"corrupt tar archive: bad pax mtime at offset {offset}")
    return sign * (int(whole) * 1_000_000_000 + int((frac[:9] or b"0").ljust(9, b"0")))


def _pax_xattrs(records: dict[bytes, bytes]) -> dict[str, bytes] | None:
    xattrs: dict[str, bytes] = {}
    for key, value in records.items():
        if key.startswith(b"SCHILY.xattr."):
            xattrs[os.fsdecode(key[13:])] = value
        elif key.startswith(b"LIBARCHIVE.xattr."):
            try:
                name = unquote_to_bytes(key[17:].decode("ascii"))
                xattrs[os.fsdecode(name)] = base64.b64decode(value + b"==")
            except (UnicodeDecodeError, binascii.Error):
                LOG.warning("ignoring undecodable xattr record %r", key[:100])
    return xattrs or None


class TarReader:
    """Iterates the members of a tar archive held in ``source``.

    Data of the current member may be consumed with :meth:`data_chunks` (or, for a
    :class:`FileSource`, copied by the caller from ``source.fd``); whatever is left
    unread is skipped when the next member is requested. Iteration ends at the
    end-of-archive block; :meth:`drain` then reads what follows it.
    """

    def __init__(self, source: StreamSource | FileSource, limits: ArchiveLimits) -> None:
        self.source = source
        self._limits = limits
        self._global: dict[bytes, bytes] = {}
        self._pending = 0  # bytes of the current member (data + padding) not yet read
        self._pending_data = 0
        self.entries = 0
        self.total_size = 0

    def __iter__(self) -> Iterator[TarEntry]:
        while (entry := self.next_entry()) is not None:
            yield entry

    def data_chunks(self) -> Iterator[memoryview]:
        """Yield the current member's data; raises if the archive ends inside it."""
        size = self._pending_data
        got = 0
        for piece in self.source.chunks(size):
            got += len(piece)
            yield piece
        self._pending -= got
        self._pending_data = 0
        if got < size:
            raise ArchiveError("truncated tar archive")

    def data_consumed(self) -> None:
        """Note that the caller read the current member's data from the file itself."""
        self.skip_data()

    def skip_data(self) -> None:
        if self._pending:
            if self.source.skip(self._pending) < self._pending_data:
                raise ArchiveError("truncated tar archive")
            self._pending = self._pending_data = 0

    def _take_block(self) -> bytes:
        block = self.source.take(BLOCK)
        if len(block) < BLOCK:
            if self.source.pos == len(block):
                raise ArchiveError("not a tar archive")
            raise ArchiveError("truncated tar archive")
        return block

    def _take_metadata(self, size: int, offset: int) -> bytes:
        if size > MAX_METADATA_SIZE:
            raise ArchiveError(
                f"archive metadata header of {size} bytes at offset {offset} is too large"
            )
        self._count_size(size)
        padded = -(-size // BLOCK) * BLOCK
        data = self.source.take(padded)
        if len(data) < padded:
            raise ArchiveError("truncated tar archive")
        return data[:size]

    def _count_size(self, size: int) -> None:
        self.total_size += size
        if self.total_size > self._limits.max_total_size:
            raise ArchiveError(
                f"archive holds more than {self._limits.max_total_size} bytes of data"
            )

    def next_entry(self) -> TarEntry | None:
        """The next member, or None at the end-of-archive block."""
        self.skip_data()
        pax: dict[bytes, bytes] = {}
        long_name: bytes | None = None
        long_link: bytes | None = None
        while True:
            offset = self.source.pos
            block = self._take_block()
            if block == _ZERO_BLOCK:
                if pax or long_name is not None or long_link is not None:
                    raise ArchiveError("truncated tar archive")
                return None
            try:
                stored = _number(block[148:156], "checksum", offset)
            except ArchiveError:
                stored = -1
            if not _checksum_ok(block, stored):
                if offset == 0:
                    raise ArchiveError("not a tar archive")
                raise ArchiveError(f"corrupt tar archive: bad header checksum at offset {offset}")
            flag = block[156:157]
            size = _number(block[124:136], "size", offset)
            if size < 0:
                raise ArchiveError(f"corrupt tar archive: negative size at offset {offset}")
            if flag in _PAX:
                pax.update(_pax_records(self._take_metadata(size, offset), offset))
                continue
            if flag == _PAX_GLOBAL:
                self._global.update(_pax_records(self._take_metadata(size, offset), offset))
                continue
            if flag == _GNU_LONGNAME:
                long_name = _cstring(self._take_metadata(size, offset))
                continue
            if flag == _GNU_LONGLINK:
                long_link = _cstring(self._take_metadata(size, offset))
                continue
            return self._member(block, flag, size, offset, pax, long_name, long_link)

    def _member(
        self,
        block: bytes,
        flag: bytes,
        size: int,
        offset: int,
        pax: dict[bytes, bytes],
        long_name: bytes | None,
        long_link: bytes | None,
    ) -> TarEntry:
        records = {**self._global, **pax} if self._global else pax
        raw_name = block[0:100].split(b"\0", 1)[0]
        if block[257:263] == b"ustar\0" and block[345] != 0:
            raw_name = block[345:500].split(b"\0", 1)[0] + b"/" + raw_name
        if long_name is not None:
            raw_name = long_name
        raw_link = long_link if long_link is not None else block[157:257].split(b"\0", 1)[0]
        if records:
            raw_name = records.get(b"path") or raw_name
            raw_link = records.get(b"linkpath") or raw_link
        name = raw_name.decode(_FS_ENCODING, _FS_ERRORS)
        kind = _TYPES.get(flag)
        if kind is None:
            raise ArchiveError(
                f"unsupported tar entry type {flag!r} for {quote_name(name)} at offset {offset}"
            )
        if kind == REGULAR and flag == b"\0" and raw_name.endswith(b"/"):
            kind = DIRECTORY  # pre-POSIX tars mark directories by a trailing slash
        limit = self._limits.max_name_length
        if len(raw_name) > limit or len(raw_link) > limit:
            raise ArchiveError(
                f"archive entry name or link longer than {limit} bytes: {quote_name(name)}"
            )
        if b"\0" in raw_name or b"\0" in raw_link or not raw_name:
            raise ArchiveError(f"archive entry at offset {offset} has an invalid name")
        self.entries += 1
        if self.entries > self._limits.max_entries:
            raise ArchiveError(f"archive has more than {self._limits.max_entries} entries")
        uid = _number(block[108:116], "uid", offset)
        gid = _number(block[116:124], "gid", offset)
        mtime_ns = _number(block[136:148], "mtime", offset) * 1_000_000_000
        xattrs = None
        if records:
            if b"size" in records:
                size = _pax_int(records[b"size"], b"size", offset)
            if b"uid" in records:
                uid = _pax_int(records[b"uid"], b"uid", offset)
            if b"gid" in records:
                gid = _pax_int(records[b"gid"], b"gid", offset)
            if records.get(b"mtime"):
                mtime_ns = _pax_time_ns(records[b"mtime"], offset)
            if any(key.startswith(b"GNU.sparse.") for key in records):
                raise ArchiveError(f"unsupported sparse file entry {quote_name(name)}")
            xattrs = _pax_xattrs(records)
        # Out-of-range values would make chown/utime/makedev raise OverflowError later.
        if not (0 <= uid < _MAX_ID and 0 <= gid < _MAX_ID):
            raise ArchiveError(f"corrupt tar archive: owner out of range for {quote_name(name)}")
        if not _MIN_TIME_NS <= mtime_ns <= _MAX_TIME_NS:
            raise ArchiveError(f"corrupt tar archive: mtime out of range for {quote_name(name)}")
        if kind != REGULAR:
            size = 0  # header-only types carry no data, whatever the size field says
        self._count_size(size)
        self._pending_data = size
        self._pending = -(-size // BLOCK) * BLOCK
        return TarEntry(
            name=name,
            type=kind,
            size=size,
            mode=_number(block[100:108], "mode", offset) & 0o7777,
            uid=uid,
            gid=gid,
            mtime_ns=mtime_ns,
            linkname=raw_link.decode(_FS_ENCODING, _FS_ERRORS) if raw_link else "",
            devmajor=_device_number(block[329:337], offset) if kind in _DEVICES else 0,
            devminor=_device_number(block[337:345], offset) if kind in _DEVICES else 0,
            xattrs=xattrs,
            offset_data=self.source.pos,
        )

    def drain(self) -> int:
        """Read everything after the end-of-archive block; returns its length.

        The caller may be hashing the stream, so nothing may be left unread; the
        amount is bounded by ``max_trailing_size`` so that a stream of zeros after
        a valid archive cannot keep us busy forever.
        """
        limit = self._limits.max_trailing_size
        total = 0
        for piece in self.source.chunks(limit + 1):
            total += len(piece)
        if total > limit:
            raise ArchiveError(f"more than {limit} bytes of data after the end of the tar archive")
        return total
