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
"""

from __future__ import annotations

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


def leftovers(trash: str) -> list[str]:
    """What earlier removals left in the trash (a gc killed half-way)."""
    try:
        return [os.path.join(trash, name) for name in sorted(os.listdir(trash))]
    except FileNotFoundError:
        return []
