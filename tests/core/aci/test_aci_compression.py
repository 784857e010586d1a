from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard
from aci_tarbuild import MANIFEST, TarBuilder, aci

from rkt.aci.archive import ArchiveLimits, scan_aci
from rkt.aci.compression import Compression, detect, open_decompressed
from rkt.errors import ArchiveError, FetchError

TOOLS = {
    Compression.GZIP: ["gzip", "-c"],
    Compression.BZIP2: ["bzip2", "-c"],
    Compression.XZ: ["xz", "-c", "-T1"],
    Compression.ZSTD: ["zstd", "-q", "-c"],
}

PY_COMPRESS = {
    Compression.GZIP: gzip.compress,
    Compression.BZIP2: bz2.compress,
    Compression.XZ: lzma.compress,
    Compression.ZSTD: lambda data: zstandard.ZstdCompressor(write_checksum=True).compress(data),
    Compression.NONE: lambda data: data,
}


def read_all(stream: io.BufferedIOBase | object, chunk: int = 1 << 20) -> bytes:
    parts = []
    while piece := stream.read(chunk):  # type: ignore[attr-defined]
        parts.append(piece)
    return b"".join(parts)


def sample_tar() -> bytes:
    builder = aci()
    builder.dir("rootfs/bin").file("rootfs/bin/tool", os.urandom(50_000) + bytes(200_000), 0o755)
    return builder.bytes()


@pytest.fixture(scope="module")
def cli_aci(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ACI tree packed by the real tar, as appc-spec/aci.md shows."""
    top = tmp_path_factory.mktemp("cli")
    (top / "rootfs" / "etc").mkdir(parents=True)
    (top / "rootfs" / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    (top / "rootfs" / "big").write_bytes(os.urandom(300_000))
    (top / "manifest").write_bytes(MANIFEST)
    subprocess.run(
        ["tar", "-C", str(top), "-cf", str(top / "image.tar"), "manifest", "rootfs"], check=True
    )
    return top / "image.tar"


@pytest.mark.parametrize("kind", list(TOOLS), ids=lambda k: k.value)
def test_cli_compressed_aci_round_trips(cli_aci: Path, tmp_path: Path, kind: Compression) -> None:
    if shutil.which(TOOLS[kind][0]) is None:
        pytest.skip(f"{TOOLS[kind][0]} is not installed")
    plain = cli_aci.read_bytes()
    packed = tmp_path / "image.aci"
    with packed.open("wb") as out:
        subprocess.run([*TOOLS[kind], str(cli_aci)], stdout=out, check=True)
    with packed.open("rb") as f:
        assert detect(f.read(512)) is kind
    with packed.open("rb") as f:
        data = read_all(open_decompressed(f))
    assert hashlib.sha512(data).digest() == hashlib.sha512(plain).digest()
    with packed.open("rb") as f:
        assert scan_aci(open_decompressed(f)) == MANIFEST


def test_plain_cli_tar_is_detected(cli_aci: Path) -> None:
    with cli_aci.open("rb") as f:
        assert detect(f.read(512)) is Compression.NONE
        f.seek(0)
        assert read_all(open_decompressed(f)) == cli_aci.read_bytes()


@pytest.mark.parametrize("kind", list(PY_COMPRESS), ids=lambda k: k.value)
def test_python_compressed_aci_round_trips(kind: Compression) -> None:
    plain = sample_tar()
    stream = open_decompressed(io.BytesIO(PY_COMPRESS[kind](plain)))
    assert read_all(stream, chunk=4096) == plain


@pytest.mark.parametrize(
    "kind", [k for k in PY_COMPRESS if k is not Compression.NONE], ids=lambda k: k.value
)
def test_concatenated_streams_are_one_stream(kind: Compression) -> None:
    plain = sample_tar()
    half = len(plain) // 2
    packed = PY_COMPRESS[kind](plain[:half]) + PY_COMPRESS[kind](plain[half:])
    assert read_all(open_decompressed(io.BytesIO(packed))) == plain


@pytest.mark.parametrize(
    "kind", [k for k in PY_COMPRESS if k is not Compression.NONE], ids=lambda k: k.value
)
@pytest.mark.parametrize("cut", ["half", "last-byte", "header-only"])
def test_truncated_stream_is_an_archive_error(kind: Compression, cut: str) -> None:
    packed = PY_COMPRESS[kind](sample_tar())
    end = {"half": len(packed) // 2, "last-byte": len(packed) - 1, "header-only": 6}[cut]
    with pytest.raises(ArchiveError, match=rf"^(truncated {kind.value} stream|not an ACI archive)"):
        read_all(open_decompressed(io.BytesIO(packed[:end])))


@pytest.mark.parametrize(
    "kind", [k for k in PY_COMPRESS if k is not Compression.NONE], ids=lambda k: k.value
)
def test_corrupt_stream_is_an_archive_error(kind: Compression) -> None:
    packed = bytearray(PY_COMPRESS[kind](sample_tar()))
    for pos in range(len(packed) // 3, len(packed) // 3 + 16):
        packed[pos] ^= 0x55
    with pytest.raises(ArchiveError) as info:
        read_all(open_decompressed(io.BytesIO(bytes(packed))))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith((f"corrupt {kind.value} data", f"truncated {kind.value} stream"))


@pytest.mark.parametrize(
    "kind", [k for k in PY_COMPRESS if k is not Compression.NONE], ids=lambda k: k.value
)
def test_trailing_garbage_is_refused_but_zero_padding_is_not(kind: Compression) -> None:
    plain = sample_tar()
    packed = PY_COMPRESS[kind](plain)
    if kind is not Compression.ZSTD:  # zstd -d refuses zero padding too
        assert read_all(open_decompressed(io.BytesIO(packed + bytes(1024)))) == plain
    with pytest.raises(ArchiveError):
        read_all(open_decompressed(io.BytesIO(packed + b"garbage!" * 8)))


@pytest.mark.parametrize(
    "head",
    [b"", b"hello world", b"PK\x03\x04" + bytes(600), bytes(1024), b"\x1f"],
    ids=["empty", "text", "zip", "zeros", "one-magic-byte"],
)
def test_unrecognised_format(head: bytes) -> None:
    with pytest.raises(ArchiveError, match=r"^not an ACI archive: unrecognised format$"):
        open_decompressed(io.BytesIO(head))


def test_detect_magic_bytes() -> None:
    assert detect(b"\x1f\x8b\x08") is Compression.GZIP
    assert detect(b"BZh91AY") is Compression.BZIP2
    assert detect(b"\xfd7zXZ\x00\x00") is Compression.XZ
    assert detect(b"\x28\xb5\x2f\xfd") is Compression.ZSTD
    assert detect(bytes(257) + b"ustar\x0000") is Compression.NONE
    assert detect(bytes(257) + b"ustar  \x00") is Compression.NONE


class Dribble(io.RawIOBase):
    """A pipe-like source that returns at most a few bytes per read and cannot seek."""

    def __init__(self, data: bytes, step: int = 7) -> None:
        self._data = memoryview(data)
        self._step = step

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self._step, len(self._data))
        buffer[:n] = self._data[:n]
        self._data = self._data[n:]
        return n


@pytest.mark.parametrize("kind", list(PY_COMPRESS), ids=lambda k: k.value)
def test_short_reads_from_an_unseekable_source(kind: Compression) -> None:
    plain = TarBuilder().file("manifest", MANIFEST).dir("rootfs").bytes()
    source = Dribble(PY_COMPRESS[kind](plain))
    assert read_all(open_decompressed(source)) == plain  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", list(PY_COMPRESS), ids=lambda k: k.value)
@pytest.mark.parametrize(
    "error", [OSError(5, "Input/output error"), FetchError("connection reset")]
)
def test_source_errors_pass_through_unchanged(kind: Compression, error: Exception) -> None:
    class Failing(io.RawIOBase):
        def __init__(self) -> None:
            self._data = PY_COMPRESS[kind](sample_tar())[:2000]

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
            if not self._data:
                raise error
            n = min(len(buffer), len(self._data))
            buffer[:n] = self._data[:n]
            self._data = self._data[n:]
            return n

    with pytest.raises(type(error)) as info:
        read_all(open_decompressed(Failing()))  # type: ignore[arg-type]
    assert info.value is error


def test_gzip_bomb_is_stopped_by_the_scan_limits() -> None:
    # A header declaring 64 MiB of zeros, which squeeze into ~64 KiB of gzip.
    zeros = tarfile.TarInfo("rootfs/zeros")
    zeros.size = 64 << 20
    head = aci().body() + zeros.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict")
    packed = gzip.compress(head + bytes(zeros.size + 1024), compresslevel=1)
    assert len(packed) < 1 << 20
    limits = ArchiveLimits(max_total_size=1 << 20)
    with pytest.raises(ArchiveError, match=r"^archive holds more than 1048576 bytes of data$"):
        scan_aci(open_decompressed(io.BytesIO(packed)), limits=limits)


def test_zero_stream_bomb_after_the_archive_is_bounded() -> None:
    plain = aci().bytes()
    packed = zstandard.ZstdCompressor().compress(plain + bytes(64 << 20))
    limits = ArchiveLimits(max_trailing_size=1 << 20)
    with pytest.raises(ArchiveError, match=r"after the end of the tar archive"):
        scan_aci(open_decompressed(io.BytesIO(packed)), limits=limits)
