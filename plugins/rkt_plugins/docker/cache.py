"""What a Docker fetch keeps for the next one: image configs, and unpacked layers.

Layout, next to the image store's own directories::

    <dir>/cas/docker/blobs/sha256/<hex>       image configs, exactly as downloaded
    <dir>/cas/docker/layers/sha256/<hex>      layers as plain tars, named by diff_id
    <dir>/cas/imagelocks/docker-<kind>-sha256-<hex>   one flock per entry

Layers are kept uncompressed, as Docker itself keeps them (unpacked): converting
an image whose layers are here costs no decompression at all, the squash reads the
cached tars in place, and a layer pushed once with gzip and once with zstd is one
entry. Each is named by its ``diff_id`` (the SHA-256 of the plain tar, from the
image config), verified when it is written and again whenever it is used; one that
no longer matches is removed, so that the next fetch downloads it again.

A fetch stages what it downloads in the store's ``tmp`` directory and moves it here
(an atomic rename) only once the whole image has converted: a failed fetch leaves
the store exactly as it was. Each entry a fetch has to download is locked, configs
first, each kind in sorted order (one global order, so two fetches cannot
deadlock), from the moment it is found missing until it is in place; a concurrent
fetch of an image that shares it waits, then finds it here.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable
from contextlib import ExitStack
from pathlib import Path

from rkt.api import private_dir, private_file
from rkt.locks import key_lock

LOG = logging.getLogger(__name__)

#: the kinds of entries, as directory names
CONFIGS = "blobs"
LAYERS = "layers"


class BlobCache:
    def __init__(self, data_dir: Path, tmp_dir: Path) -> None:
        self.root = data_dir / "cas" / "docker"
        self.lock_dir = data_dir / "cas" / "imagelocks"
        self.tmp_dir = tmp_dir
        self._locks = ExitStack()
        self._staged: dict[tuple[str, str], Path] = {}

    def path(self, kind: str, digest: str) -> Path:
        algorithm, _, hexdigest = digest.partition(":")
        return self.root / kind / algorithm / hexdigest

    def has(self, kind: str, digest: str) -> bool:
        return self.path(kind, digest).is_file()

    def lock_missing(self, kind: str, digests: Iterable[str]) -> set[str]:
        """Lock the entries not cached yet; return those still missing once locked."""
        missing = sorted({d for d in digests if not self.has(kind, d)})
        for digest in missing:
            name = f"docker-{kind}-{digest.replace(':', '-')}"
            self._locks.enter_context(key_lock(self.lock_dir, name))
        return {d for d in missing if not self.has(kind, d)}

    def stage(self, kind: str, digest: str) -> Path:
        """A temp file to write the entry into; moved into place by :meth:`commit`."""
        path = self.tmp_dir / f"docker-{kind}-{digest.replace(':', '-')}-{os.getpid()}"
        path.unlink(missing_ok=True)
        self._staged[(kind, digest)] = path
        return path

    def commit(self) -> None:
        """Move every staged entry into the cache, then release the locks."""
        try:
            for (kind, digest), staged in self._staged.items():
                target = self.path(kind, digest)
                private_dir(target.parent)
                private_file(staged)
                os.rename(staged, target)
            self._staged.clear()
        finally:
            self.release()

    def used(self, kind: str, digest: str) -> Path:
        """The entry's path, marked as just used (its mtime), for :meth:`sweep`."""
        path = self.path(kind, digest)
        with contextlib.suppress(FileNotFoundError):
            os.utime(path)
        return path

    def sweep(self, older_than: float) -> list[str]:
        """Remove entries unused for ``older_than`` seconds; skip any being used now."""
        import time

        from rkt.locks import FileLock, LockBusy

        removed: list[str] = []
        cutoff = time.time() - older_than
        for kind in (CONFIGS, LAYERS):
            for path in sorted((self.root / kind).glob("*/*")):
                digest = f"{path.parent.name}:{path.name}"
                name = f"docker-{kind}-{digest.replace(':', '-')}"
                self.lock_dir.mkdir(parents=True, exist_ok=True)
                try:
                    with FileLock(self.lock_dir / name, blocking=False):
                        if path.stat().st_mtime < cutoff:
                            path.unlink()
                            removed.append(f"{'layer' if kind == LAYERS else 'config'} {digest}")
                except (LockBusy, FileNotFoundError):
                    continue
        return removed

    def evict(self, kind: str, digest: str) -> None:
        """Forget an entry that failed verification."""
        LOG.warning("removing corrupt cached %s %s", kind, digest)
        with contextlib.suppress(FileNotFoundError):
            self.path(kind, digest).unlink()

    def release(self) -> None:
        """Drop staged files and locks (after a failure, or after :meth:`commit`)."""
        for staged in self._staged.values():
            staged.unlink(missing_ok=True)
        self._staged.clear()
        self._locks.close()
        self._locks = ExitStack()
