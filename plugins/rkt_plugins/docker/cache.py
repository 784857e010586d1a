"""Downloaded Docker blobs (layers and configs), kept by digest for the next fetch.

Layout, next to the image store's own directories::

    <dir>/cas/docker/blobs/sha256/<hex>      verified blobs, exactly as downloaded
    <dir>/cas/imagelocks/docker-sha256-<hex> one flock per digest

A fetch stages what it downloads in the store's ``tmp`` directory and moves the
blobs here (an atomic rename) only once the whole image has converted: a failed
fetch leaves the store exactly as it was. Each digest a fetch has to download is
locked (in sorted order, so two fetches cannot deadlock) from the moment it is
found missing until the blob is in place; a concurrent fetch of an image that
shares the layer waits, then finds it here instead of downloading it again.

Blobs are immutable once renamed into place, so reading needs no lock; a reader
still re-verifies the digest as it streams a blob (:mod:`.squash`), and a blob that
fails is removed so that the next fetch downloads it again.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable
from contextlib import ExitStack
from pathlib import Path

from rkt.locks import FileLock, key_lock

LOG = logging.getLogger(__name__)


class BlobCache:
    def __init__(self, data_dir: Path, tmp_dir: Path) -> None:
        self.root = data_dir / "cas" / "docker" / "blobs"
        self.lock_dir = data_dir / "cas" / "imagelocks"
        self.tmp_dir = tmp_dir
        self._locks = ExitStack()
        self._staged: dict[str, Path] = {}

    def path(self, digest: str) -> Path:
        algorithm, _, hexdigest = digest.partition(":")
        return self.root / algorithm / hexdigest

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def lock_missing(self, digests: Iterable[str]) -> list[str]:
        """Lock the digests not cached yet; return those still missing once locked."""
        missing = sorted({d for d in digests if not self.has(d)})
        for digest in missing:
            lock: FileLock = key_lock(self.lock_dir, "docker-" + digest.replace(":", "-"))
            self._locks.enter_context(lock)
        return [d for d in missing if not self.has(d)]

    def stage(self, digest: str) -> Path:
        """A new temp file to download ``digest`` into; committed by :meth:`commit`."""
        path = self.tmp_dir / f"docker-blob-{digest.replace(':', '-')}-{os.getpid()}"
        path.unlink(missing_ok=True)
        self._staged[digest] = path
        return path

    def staged_or_cached(self, digest: str) -> Path:
        return self._staged.get(digest) or self.path(digest)

    def commit(self) -> None:
        """Move every staged blob into the cache, then release the locks."""
        try:
            for digest, staged in self._staged.items():
                target = self.path(digest)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.chmod(staged, 0o644)
                os.rename(staged, target)
            self._staged.clear()
        finally:
            self.release()

    def evict(self, digest: str) -> None:
        """Forget a cached blob that failed verification."""
        LOG.warning("removing corrupt cached blob %s", digest)
        with contextlib.suppress(FileNotFoundError):
            self.path(digest).unlink()

    def release(self) -> None:
        """Drop staged files and locks (after a failure, or after :meth:`commit`)."""
        for staged in self._staged.values():
            staged.unlink(missing_ok=True)
        self._staged.clear()
        self._locks.close()
        self._locks = ExitStack()
