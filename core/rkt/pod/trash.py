"""Removing pod directories: renamed into ``<dir>/pods/trash/``, then deleted.

A pod leaves its phase directory by one atomic rename, after everything it held
outside its directory was released; from then on no command sees it, its lock can
go, and what deletes its files may be cut short: the next ``gc`` deletes whatever
is left in the trash.

``gc`` deletes many directories at once (:class:`Remover`): each freed block of a
file or directory can cost the disk a synchronous discard, which overlaps between
directories but not within one, and ``rm -rf`` does the walking in C, without
holding the interpreter while it waits. ``--one-file-system`` keeps a deletion
from reaching into a file system still mounted in a pod (whatever a crashed stage1
left): that pod stays in the trash, and a debug line says so.

A gc of many pods does not wait for their deletion (:func:`delete_detached`):
on the project's machine deleting 1,000 pods' files is 2-3 s of the disk's
discards, which no parallelism brings under 1 s (issue 14). It returns once
every pod it collected is in the trash (out of every listing, its lock and
everything it held outside its directory released), and a process of its own,
in a session of its own, deletes them. Whoever deletes in the trash holds a
shared flock on the trash directory meanwhile; a gc takes what it finds in the
trash as left over (from a killed gc or deleter) only when it can lock the trash
exclusively, so it does not delete again what a running deleter works on, and
deletes those leftovers before it returns (a deleter killed with its gc, as
systemd kills what a oneshot unit leaves, must not make the trash grow).
"""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess

LOG = logging.getLogger(__name__)

TRASH = "trash"

#: directories per ``rm`` process, and ``rm`` processes at once. On the project's
#: machine (ext4 with online discard on a virtual disk) deleting 1,000 pods went
#: from 27 s one at a time to 2.5-3 s 16 at a time; more did not help.
_BATCH = 32
_PROCESSES = 16

_RM = ("rm", "-rf", "--one-file-system", "--")


class Remover:
    """Deletes directory trees in batches, several ``rm`` processes at once.

    :meth:`add` never waits: a batch starts when a process slot is free, so that
    the caller's own work goes on meanwhile; :meth:`finish` waits for all. Failures
    are debug lines: what is left stays in the trash for the next gc.
    """

    def __init__(self) -> None:
        self._pending: list[str] = []
        self._running: list[tuple[subprocess.Popen[bytes], list[str]]] = []

    def add(self, path: str) -> None:
        self._pending.append(path)
        if len(self._pending) >= _BATCH:
            self._reap_finished()
            self._start_batches()

    def finish(self) -> None:
        # what is left is shared among the free slots: a gc of a few pods still
        # deletes them side by side
        free = max(1, _PROCESSES - len(self._running))
        self._start_batches(size=max(1, -(-len(self._pending) // free)))
        while self._pending or self._running:
            self._start_batches()
            if self._running:
                self._reap(self._running[0])
            self._reap_finished()

    def _start_batches(self, size: int = _BATCH) -> None:
        while self._pending and len(self._running) < _PROCESSES:
            batch, self._pending = self._pending[:size], self._pending[size:]
            try:
                process = subprocess.Popen([*_RM, *batch], stdin=subprocess.DEVNULL,
                                           stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL)
            except OSError as exc:  # no rm(1) here: do it ourselves
                LOG.debug("cannot run rm: %s", exc)
                for path in batch:
                    remove_tree(path)
                continue
            self._running.append((process, batch))

    def _reap_finished(self) -> None:
        for entry in [entry for entry in self._running if entry[0].poll() is not None]:
            self._reap(entry)

    def _reap(self, entry: tuple[subprocess.Popen[bytes], list[str]]) -> None:
        process, batch = entry
        self._running.remove(entry)
        if process.wait() != 0:
            left = [path for path in batch if os.path.lexists(path)]
            LOG.debug("rm left %s in the trash (a file system mounted there?)",
                      ", ".join(left) or "nothing")


def remove_tree(path: str) -> None:
    """Delete one tree in this process (``rkt rm``, a pod that never started)."""
    import shutil  # here: shutil imports bz2 and lzma, and only removal needs it

    shutil.rmtree(path, ignore_errors=True)


def lock_trash(trash: str) -> tuple[int, list[str]]:
    """Hold the trash for deleting in it: a shared flock on it (an fd to close),
    and what earlier removals left there (a gc or deleter killed half-way).

    The leftovers are listed only while no one else deletes in the trash (the
    exclusive lock is free); otherwise they are that one's, and the list is empty.
    """
    try:
        fd = os.open(trash, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:  # the first removal in this data dir makes it
        from pathlib import Path

        from rkt.datadir import private_dir

        private_dir(Path(trash))
        fd = os.open(trash, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    found: list[str] = []
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pass  # a deleter is at work: what is in the trash is its own
    else:
        found = [os.path.join(trash, name) for name in sorted(os.listdir(trash))]
    fcntl.flock(fd, fcntl.LOCK_SH)  # (from exclusive: lets other deleters start)
    return fd, found


def delete_detached(paths: list[str], lock_fd: int) -> int:
    """Delete ``paths`` in a process of their own; returns its PID without waiting.

    The process is a grandchild in a new session, reading and writing
    ``/dev/null``, with no other descriptor of ours than ``lock_fd`` (the trash's
    shared flock, which it holds until it is done): nothing waits for it (not a
    pipe reading our output, not a terminal's signals), and no lock of ours stays
    held by it. The caller may close its ``lock_fd`` right after. OSError if no
    process could be made (nothing is deleted then).
    """
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(read_end)
            os.setsid()
            grandchild = os.fork()
            if grandchild:
                os.write(write_end, str(grandchild).encode())
            else:
                _become_deleter(paths, lock_fd, write_end)
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(child, 0)
    # the pipe's end comes when the deleter has let go of everything of ours
    with os.fdopen(read_end, "rb") as pipe:
        text = pipe.read()
    if not text:
        raise OSError("the deleter could not be started")
    return int(text)


def _become_deleter(paths: list[str], lock_fd: int, pipe_fd: int) -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    # every other descriptor closed, among them the locks our caller holds (a
    # flock lasts while any copy of its descriptor does), the pipe last
    low, high = sorted((lock_fd, pipe_fd))
    os.closerange(3, low)
    os.closerange(low + 1, high)
    os.closerange(high + 1, os.sysconf("SC_OPEN_MAX"))
    os.close(pipe_fd)
    logging.disable()  # nothing of ours writes anywhere any more
    remover = Remover()
    for path in paths:
        remover.add(path)
    remover.finish()
    os.close(lock_fd)
