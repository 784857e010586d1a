"""Mutated archives: every failure is a one-line RktError, never a stray exception.

A small, seeded version of containerd's FuzzApply/FuzzDecompressStream
(anchors.md 2.3): flip, insert and delete bytes of valid archives and feed them to
open_decompressed, scan_aci and extract_tar. Longer runs of the same loop found
nothing either; these iterations keep the property checked on every test run.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import random
import shutil
import tarfile
from pathlib import Path

import pytest
import zstandard
from aci_tarbuild import Sandbox, TarBuilder, aci

from rkt.aci.archive import ArchiveLimits, scan_aci
from rkt.aci.compression import open_decompressed
from rkt.aci.extract import extract_tar
from rkt.errors import RktError

LIMITS = ArchiveLimits(max_total_size=1 << 24)


def sample(fmt: int) -> bytes:
    b = aci(TarBuilder(fmt)).dir("rootfs/etc").file("rootfs/etc/passwd", b"root:x:0:0\n" * 20)
    b.symlink("rootfs/lib", "usr/lib").dir("rootfs/usr").dir("rootfs/usr/lib")
    b.file("rootfs/lib/x", b"x").hardlink("rootfs/etc/pw2", "rootfs/etc/passwd")
    b.file("rootfs/" + "long/" * 30 + "f", b"deep").file("rootfs/.wh.gone", b"")
    b.file("rootfs/px", b"p", pax={"SCHILY.xattr.user.a": "1", "mtime": "123.5"})
    return b.bytes()


def mutate(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        if not out:
            break
        pos = rng.randrange(len(out))
        op = rng.random()
        if op < 0.6:
            out[pos] = rng.randrange(256)
        elif op < 0.8:
            del out[pos : pos + rng.randint(1, 600)]
        else:
            out[pos:pos] = bytes(rng.randint(1, 600))
    return bytes(out)


def check_failure(exc: BaseException) -> None:
    assert isinstance(exc, RktError), f"{type(exc).__name__}: {exc}"
    assert "\n" not in str(exc)


@pytest.mark.parametrize("seed", range(4))
def test_mutated_tars(sandbox: Sandbox, tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    samples = [sample(f) for f in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT)]
    archive = tmp_path / "mutated.tar"
    for _ in range(40):
        data = mutate(rng.choice(samples), rng)
        archive.write_bytes(data)
        for child in sandbox.dest.iterdir():  # emptied in place: its parent is watched
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        for run in range(3):
            try:
                if run == 0:
                    scan_aci(io.BytesIO(data), limits=LIMITS)  # type: ignore[arg-type]
                elif run == 1:
                    extract_tar(archive, sandbox.dest, limits=LIMITS)
                else:
                    stream = io.BytesIO(data)
                    extract_tar(
                        stream,  # type: ignore[arg-type]
                        sandbox.dest,
                        limits=LIMITS,
                        whiteouts=True,
                        strip_prefix="",
                    )
            except BaseException as exc:
                check_failure(exc)


COMPRESSORS = [
    gzip.compress,
    bz2.compress,
    lzma.compress,
    lambda data: zstandard.ZstdCompressor(write_checksum=True).compress(data),
]


@pytest.mark.parametrize("seed", range(4))
def test_mutated_compressed_streams(seed: int) -> None:
    rng = random.Random(seed)
    plain = random.Random(99).randbytes(20_000) + bytes(50_000)
    packed = [compress(plain) for compress in COMPRESSORS]
    for _ in range(150):
        data = mutate(rng.choice(packed), rng)
        try:
            stream = open_decompressed(io.BytesIO(data))
            while stream.read(1 << 16):
                pass
        except BaseException as exc:
            check_failure(exc)
