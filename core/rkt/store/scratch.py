"""The store's scratch space, where nothing outlives the process that made it.

Every rkt process that writes to the store (downloads, imports, renders, a
Docker conversion) works in a directory of its own, ``cas/tmp/<name>/``, which
it owns through an flock on ``cas/tmp/<name>.lock`` for as long as it lives. A
process that exits removes its directory; one that is killed releases the lock
with its last descriptor, and the next ``rkt gc`` or ``rkt image gc`` removes
whatever it left, at once, whatever its age (issue 10: a ``kill -9`` during a
fetch left hundreds of MB for 24 hours).

The lock file exists before its directory and outlives it, so an entry without a
lock file, or with a lock nobody holds, is a leftover.
"""

from __future__ import annotations

import atexit
import fcntl
import os
from pathlib import Path
from typing import ClassVar

from rkt.datadir import FILE_MODE
from rkt.locks import try_flock

LOCK_SUFFIX = ".lock"


def _try_lock(path: Path) -> int | None:
    """An fd holding the exclusive lock on ``path``; None if it is held or gone."""
    try:
        return try_flock(str(path))
    except FileNotFoundError:
        return None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        import shutil  # here: shutil imports bz2 and lzma, and a pod start removes nothing

        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class ScratchArea:
    """``cas/tmp``: one locked work directory per process, and the sweep of the rest."""

    _by_root: ClassVar[dict[Path, ScratchArea]] = {}

    def __init__(self, root: Path) -> None:
        self.root = root
        self._own: Path | None = None
        self._lock_fd: int | None = None
        self._owner_pid = 0

    @classmethod
    def at(cls, root: Path) -> ScratchArea:
        """The one area a process uses for ``root``, however often the store is opened."""
        key = root.absolute()
        if key not in cls._by_root:
            cls._by_root[key] = cls(root)
        return cls._by_root[key]

    def own_dir(self) -> Path:
        """This process's work directory, made (and locked) on first use."""
        if self._own is not None and self._owner_pid == os.getpid():
            return self._own
        while True:
            name = f"{os.getpid()}-{os.urandom(6).hex()}"
            lock_path = self.root / (name + LOCK_SUFFIX)
            try:
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                             FILE_MODE)
            except FileExistsError:
                continue
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_nlink == 0:
                # a sweep took the lock between our create and flock and removed it
                os.close(fd)
                continue
            break
        own = self.root / name
        os.mkdir(own, 0o700)
        self._own, self._lock_fd, self._owner_pid = own, fd, os.getpid()
        atexit.register(self.release)
        return own

    def release(self) -> None:
        """Remove this process's work directory (called at exit)."""
        if self._own is None or self._owner_pid != os.getpid():
            return  # a forked child does not remove its parent's directory
        import shutil

        shutil.rmtree(self._own, ignore_errors=True)
        (self.root / (self._own.name + LOCK_SUFFIX)).unlink(missing_ok=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
        self._own, self._lock_fd = None, None

    def sweep(self) -> list[str]:
        """Remove every entry whose owner is gone; return their names."""
        removed: list[str] = []
        try:
            entries = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return removed
        names = set(entries)
        for entry in entries:
            if entry.endswith(LOCK_SUFFIX):
                work = entry[: -len(LOCK_SUFFIX)]
                fd = _try_lock(self.root / entry)
                if fd is None:
                    continue  # its owner is alive (or another sweep has it)
                try:
                    if work in names:
                        _remove(self.root / work)
                        removed.append(work)
                    (self.root / entry).unlink(missing_ok=True)
                finally:
                    os.close(fd)
            elif entry + LOCK_SUFFIX not in names and not (
                self.root / (entry + LOCK_SUFFIX)
            ).exists():
                _remove(self.root / entry)  # no owner at all: an older rkt's leftover
                removed.append(entry)
        return removed
