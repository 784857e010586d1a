"""Compression of ACI archives: detection by magic bytes and streaming decompression.

appc-spec/aci.md allows gzip, bzip2 and xz; zstd is accepted as an extension
(DESIGN.md). Detection looks only at magic bytes, as the reference implementation
does (appc ``aci/file.go``): a file name or a Content-Type says nothing here.

The image ID is the SHA-512 of the *uncompressed* tar, so every byte of an image
passes through :func:`open_decompressed` while it is hashed; gzip therefore goes
through ISA-L (``isal.igzip``), several times faster than zlib.

Whatever the input, reading the returned stream raises only
:class:`~rkt.errors.ArchiveError` for bad data (truncated or corrupt streams,
trailing garbage); ``EOFError``, ``zlib.error``, ``lzma.LZMAError`` and friends never
escape. Errors raised by the *source* stream itself (an ``OSError`` from the disk, a
:class:`~rkt.errors.RktError` from a fetcher) pass through unchanged: they are not
the archive's fault. The output is not bounded here: decompression bombs are bounded
by the consumer (:func:`rkt.aci.archive.scan_aci` and its
:class:`~rkt.aci.archive.ArchiveLimits`); what this module guarantees is that no
single ``read(n)`` holds much more than ``n`` bytes (or a few MiB for zstd) in memory.
"""

from __future__ import annotations

import bz2
import enum
import io
import logging
import lzma
import zlib
from collections.abc import Callable
from typing import BinaryIO, Protocol, cast

from rkt.errors import ArchiveError, RktError

LOG = logging.getLogger(__name__)

#: How many leading bytes :func:`detect` looks at (a tar header's magic ends at 263).
HEAD_SIZE = 512

_TAR_MAGIC_OFFSET = 257

_XZ_MEMLIMIT = 1 << 30


class Compression(enum.Enum):
    """How an ACI archive is compressed; the value is the name used in messages."""

    GZIP = "gzip"
    BZIP2 = "bzip2"
    XZ = "xz"
    ZSTD = "zstd"
    NONE = "none"


_MAGICS: tuple[tuple[bytes, Compression], ...] = (
    (b"\x1f\x8b", Compression.GZIP),
    (b"BZh", Compression.BZIP2),
    (b"\xfd7zXZ\x00", Compression.XZ),
    (b"\x28\xb5\x2f\xfd", Compression.ZSTD),
)


def detect(head: bytes) -> Compression:
    """Return the compression of an archive whose first bytes are ``head``.

    ``head`` should hold at least :data:`HEAD_SIZE` bytes (or the whole file, when
    shorter). Raises :class:`ArchiveError` when it is neither a known compressed
    format nor a POSIX/GNU tar.
    """
    for magic, kind in _MAGICS:
        if head.startswith(magic):
            return kind
    if head[_TAR_MAGIC_OFFSET : _TAR_MAGIC_OFFSET + 5] == b"ustar":
        return Compression.NONE
    raise ArchiveError("not an ACI archive: unrecognised format")


class _SourceError(Exception):
    """Carries an exception raised by the caller's source stream through a decompressor.

    The decompressors' own corruption errors are ``OSError`` subclasses too (bz2,
    gzip), so a real I/O error of the source is boxed to tell the two apart.
    """

    def __init__(self, original: BaseException) -> None:
        super().__init__(str(original))
        self.original = original


class _Rewound(io.RawIOBase):
    """``source`` as if the ``head`` already read from it had never been taken."""

    def __init__(self, head: bytes, source: BinaryIO) -> None:
        super().__init__()
        self._head = memoryview(head)
        self._source = source
        #: Set when a decompressor reads from us (see _SourceError).
        self.box_errors = False
        # Decompressors fill their buffers with readinto: skip a copy when we can.
        self._readinto: Callable[[memoryview], int | None] | None = getattr(
            source, "readinto", None
        )

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if self._head:
            if size is None or size < 0 or size >= len(self._head):
                chunk = bytes(self._head)
                self._head = memoryview(b"")
                if size is None or size < 0:
                    return chunk + self._read_source(-1)
                return chunk
            chunk = bytes(self._head[:size])
            self._head = self._head[size:]
            return chunk
        return self._read_source(-1 if size is None else size)

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        if self._head:
            n = min(len(view), len(self._head))
            view[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        if self._readinto is not None:
            try:
                return self._readinto(view) or 0
            except (OSError, RktError) as exc:
                if self.box_errors:
                    raise _SourceError(exc) from exc
                raise
        data = self._read_source(len(view))
        view[: len(data)] = data
        return len(data)

    def _read_source(self, size: int) -> bytes:
        try:
            data = self._source.read(size)
        except (OSError, RktError) as exc:
            if self.box_errors:
                raise _SourceError(exc) from exc
            raise
        return data or b""

    def close(self) -> None:
        # The caller owns the source stream; closing the view of it must not close it.
        self._head = memoryview(b"")
        super().close()


class _ZstdReader(io.RawIOBase):
    """Multi-frame zstd decoder that notices truncation.

    ``zstandard``'s ``stream_reader`` silently returns a short result for a
    truncated frame, so frames are decoded with ``decompressobj`` whose ``eof``
    tells a finished frame from a cut one. ``decompressobj`` has no output bound,
    so input is fed in small slices: a zstd block of at most 128 KiB can be encoded
    in 4 bytes (RLE), which caps the output of one slice at 32768 times its size.
    """

    _INPUT_SLICE = 2048
    _READ_SIZE = 1 << 17

    def __init__(self, source: io.RawIOBase) -> None:
        super().__init__()
        import zstandard

        self._zstd = zstandard
        self._source = source
        self._dctx = zstandard.ZstdDecompressor()
        self._dobj = self._dctx.decompressobj()
        self._in_frame = False
        self._input = memoryview(b"")
        self._output = memoryview(b"")
        self._source_done = False

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            chunks = []
            while chunk := self.read(1 << 20):
                chunks.append(chunk)
            return b"".join(chunks)
        while not self._output:
            if not self._decode_more():
                return b""
        chunk = bytes(self._output[:size])
        self._output = self._output[size:]
        return chunk

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def _decode_more(self) -> bool:
        """Decode one input slice; False at a clean end of input."""
        if not self._input:
            if self._source_done:
                if self._in_frame:
                    raise ArchiveError("truncated zstd stream")
                return False
            data = self._source.read(self._READ_SIZE)
            if not data:
                self._source_done = True
                return True
            self._input = memoryview(data)
        piece = self._input[: self._INPUT_SLICE]
        self._input = self._input[self._INPUT_SLICE :]
        self._in_frame = True
        try:
            self._output = memoryview(self._dobj.decompress(piece))
        except self._zstd.ZstdError as exc:
            raise ArchiveError(f"corrupt zstd data: {exc}") from exc
        if self._dobj.eof:
            # The frame ended inside this slice: what follows starts the next frame.
            rest = self._dobj.unused_data
            self._dobj = self._dctx.decompressobj()
            self._in_frame = False
            if rest:
                self._input = memoryview(bytes(rest) + bytes(self._input))
        return True


class _StreamDecoder(io.RawIOBase):
    """Decodes concatenated xz or bzip2 streams, as ``xz -d`` and ``bzip2 -d`` do.

    Written here rather than taken from ``lzma.LZMAFile``/``bz2.BZ2File`` for two
    reasons: those cannot set an xz memory limit, and they silently ignore
    garbage after the first stream, which we report instead.
    """

    _READ_SIZE = 1 << 17

    def __init__(self, source: io.RawIOBase, new_decoder: Callable[[], _Decoder]) -> None:
        super().__init__()
        self._source = source
        self._new_decoder = new_decoder
        self._decoder = new_decoder()
        self._started = False

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            chunks = []
            while chunk := self.read(1 << 20):
                chunks.append(chunk)
            return b"".join(chunks)
        if size == 0:
            return b""
        while True:
            if self._decoder.eof:
                data = self._decoder.unused_data or self._source.read(self._READ_SIZE)
                if not data:
                    return b""
                # Zero bytes between or after streams are padding (xz's stream
                # padding, a tape's block fill), as gzip readers also allow.
                data = data.lstrip(b"\0")
                if not data:
                    self._decoder = _Finished()
                    continue
                self._decoder = self._new_decoder()
            elif self._decoder.needs_input:
                data = self._source.read(self._READ_SIZE)
                if not data:
                    raise EOFError("stream ends inside a compressed block")
            else:
                data = b""
            out = self._decoder.decompress(data, size)
            if out:
                return out

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)


class _Finished:
    """Stands for a decoder whose stream ended, while padding is being skipped."""

    eof = True
    needs_input = False
    unused_data = b""

    def decompress(self, data: bytes, max_length: int = -1) -> bytes:
        raise AssertionError("a finished stream takes no input")


class _Decoder(Protocol):
    @property
    def eof(self) -> bool: ...

    @property
    def needs_input(self) -> bool: ...

    @property
    def unused_data(self) -> bytes: ...

    def decompress(self, data: bytes, max_length: int = -1) -> bytes: ...


class _TranslatedReader(io.BufferedIOBase):
    """Turns a decompressor's own exceptions into one-line :class:`ArchiveError`."""

    def __init__(
        self,
        inner: io.BufferedIOBase | io.RawIOBase,
        kind: Compression,
        corrupt: tuple[type[BaseException], ...],
    ) -> None:
        super().__init__()
        self._inner = inner
        self._kind = kind
        self._corrupt = corrupt
        self._read: Callable[[int], bytes | None] = inner.read

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        try:
            return self._read(-1 if size is None else size) or b""
        except _SourceError as exc:
            raise exc.original from None
        except ArchiveError:
            raise
        except EOFError as exc:
            raise ArchiveError(f"truncated {self._kind.value} stream") from exc
        except self._corrupt as exc:
            raise ArchiveError(f"corrupt {self._kind.value} data: {_one_line(exc)}") from exc

    def read1(self, size: int = -1) -> bytes:
        return self.read(size)

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            super().close()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def read_head(source: BinaryIO) -> tuple[bytes, BinaryIO]:
    """Read up to :data:`HEAD_SIZE` bytes of ``source`` without losing them.

    Returns the head and a stream that yields the whole of ``source`` from where it
    stood, head included. Works on pipes and sockets (no seek is needed).
    """
    chunks: list[bytes] = []
    have = 0
    while have < HEAD_SIZE:
        chunk = source.read(HEAD_SIZE - have)
        if not chunk:
            break
        chunks.append(chunk)
        have += len(chunk)
    head = b"".join(chunks)
    return head, cast(BinaryIO, _Rewound(head, source))


def open_decompressed(f: BinaryIO) -> BinaryIO:
    """Return a readable stream of the uncompressed bytes of the archive in ``f``.

    The format is detected from the first bytes (see :func:`detect`); ``f`` needs
    only ``read`` and is read sequentially. Closing the returned stream does not
    close ``f``. Reading raises :class:`ArchiveError` on truncated or corrupt data.
    """
    head, source = read_head(f)
    kind = detect(head)
    LOG.debug("archive compression: %s", kind.value)
    if kind is Compression.NONE:
        return source
    rewound = cast(_Rewound, source)
    rewound.box_errors = True
    raw: io.RawIOBase = rewound
    # bz2 and gzip report corrupt data as OSError (BadGzipFile is one), zlib-style
    # inflaters as their own ``error`` classes, which derive from Exception only.
    corrupt: tuple[type[BaseException], ...] = (OSError, lzma.LZMAError, zlib.error)
    inner: io.BufferedIOBase | io.RawIOBase
    if kind is Compression.GZIP:
        from isal import igzip, isal_zlib

        corrupt = (*corrupt, cast("type[BaseException]", isal_zlib.error))
        inner = igzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[no-untyped-call]
    elif kind is Compression.BZIP2:
        inner = _StreamDecoder(raw, bz2.BZ2Decompressor)
    elif kind is Compression.XZ:
        # A hostile header may ask for a dictionary of several GiB; xz -9 needs 65 MiB.
        inner = _StreamDecoder(
            raw, lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ, memlimit=_XZ_MEMLIMIT)
        )
    else:
        inner = _ZstdReader(raw)
    return cast(BinaryIO, _TranslatedReader(inner, kind, corrupt))
