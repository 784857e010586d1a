"""How much an import may write: a reserve of free space, and a per-image limit.

An archive's decompressed size is known only once it has been decompressed, so a
small gzip can hold a bomb that fills the disk (issue 10: 10 GiB were accepted).
Imports therefore stop as soon as what they write would leave less than
``RKT_STORE_RESERVE`` free on the store's filesystem (default 256M), or when the
image grows past ``RKT_IMAGE_SIZE_LIMIT`` (default: no limit but the archive
limits of :mod:`rkt.aci.archive`). Sizes take the suffixes K, M, G and T (powers
of 1024) or are plain bytes.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from rkt.errors import StoreError, UsageError

RESERVE_ENV = "RKT_STORE_RESERVE"
IMAGE_LIMIT_ENV = "RKT_IMAGE_SIZE_LIMIT"
DEFAULT_RESERVE = 256 << 20
_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]?)i?B?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str, what: str) -> int:
    match = _SIZE.match(text)
    if match is None:
        raise UsageError(f"{what}={text!r}: expected a size such as 512M, 10G or 1048576")
    return int(match.group(1)) * _UNITS[match.group(2).upper()]


def _env_size(name: str, default: int | None) -> int | None:
    raw = os.environ.get(name, "")
    return parse_size(raw, name) if raw.strip() else default


@dataclass
class SpaceGuard:
    """Checked as an import writes: raises :class:`StoreError` before it goes too far."""

    directory: Path
    origin: str
    reserve: int = DEFAULT_RESERVE
    limit: int | None = None

    @classmethod
    def from_env(cls, directory: Path, origin: str) -> SpaceGuard:
        return cls(directory, origin, _env_size(RESERVE_ENV, DEFAULT_RESERVE) or 0,
                   _env_size(IMAGE_LIMIT_ENV, None))

    def check(self, size: int, pending: int) -> None:
        """``size`` bytes read so far, ``pending`` of them not yet written (0 when the
        bytes are not copied at all)."""
        if self.limit is not None and size > self.limit:
            raise StoreError(
                f"cannot import {self.origin}: uncompressed, it is larger than "
                f"{IMAGE_LIMIT_ENV} ({self.limit} bytes)"
            )
        if pending <= 0:
            return
        stats = os.statvfs(self.directory)  # a few microseconds per MiB imported
        if stats.f_bavail * stats.f_frsize - pending < self.reserve:
            from rkt.progress import human_size

            raise StoreError(
                f"cannot import {self.origin}: it would leave less than "
                f"{human_size(self.reserve)} free in {self.directory} ({RESERVE_ENV})"
            )
