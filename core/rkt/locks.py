"""flock(2)-based locks on files and directories, as rkt used them.

Advisory locks tie a lock's lifetime to a file descriptor: a process that dies
releases its locks, so a crashed ``rkt fetch`` never leaves the store locked.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from types import TracebackType


class LockBusy(Exception):
    """A non-blocking lock attempt found the lock held by someone else."""


def try_flock(path: str, *, shared: bool = False, blocking: bool = False) -> int | None:
    """An fd holding the flock of ``path`` (a file or directory that exists), or
    None if someone else holds it; FileNotFoundError when it is gone.

    :class:`FileLock` without its ``stat`` and object: polled commands lock or
    probe every pod, and the store probes every scratch directory.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    operation = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if blocking else fcntl.LOCK_NB)
    try:
        fcntl.flock(fd, operation)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return None
        raise
    return fd


class FileLock:
    """An exclusive or shared flock on ``path``: a file (created if missing, unless
    ``create`` is false) or a directory (a pod's lock is on its directory)."""

    def __init__(
        self, path: Path, *, shared: bool = False, blocking: bool = True, create: bool = True
    ) -> None:
        self.path = path
        self.shared = shared
        self.blocking = blocking
        self.create = create
        self.fd: int | None = None

    def acquire(self) -> FileLock:
        if self.path.is_dir():
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        elif self.create:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        else:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)  # FileNotFoundError
        operation = fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX
        if not self.blocking:
            operation |= fcntl.LOCK_NB
        try:
            fcntl.flock(fd, operation)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise LockBusy(str(self.path)) from exc
            raise
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the last fd releases the flock
            self.fd = None

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def key_lock(lock_dir: Path, key: str, *, shared: bool = False) -> FileLock:
    """A lock named by a key (an image ID, a tree ID) in ``lock_dir``."""
    from rkt.datadir import private_dir

    private_dir(lock_dir)
    return FileLock(lock_dir / key, shared=shared)


def prepare_lock(data_dir: Path, *, shared: bool = False) -> FileLock:
    """rkt's ``prepareLock``: ``rkt prepare``/``run`` hold it shared from choosing
    their images until the pod records them; ``rkt image gc`` and ``rkt image rm``
    hold it exclusively while deciding what no pod uses, so neither removes an image
    or a tree that a pod being prepared is built from."""
    return key_lock(data_dir / "locks", "prepareLock", shared=shared)
