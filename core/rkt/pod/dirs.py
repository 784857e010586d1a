"""Pod directories and their lifecycle, as rkt kept them (``Documentation/devel/pod-lifecycle.md``).

A pod is a directory ``<dir>/pods/<phase>/<uuid>``; its phase is the parent
directory, moved with atomic ``rename(2)``; an flock on the pod directory says
whether someone is working on it:

=================  ===================  ================================
phase dir          locked               unlocked
=================  ===================  ================================
embryo/            (being created)      (being created)
prepare/           preparing            aborted prepare
prepared/          -                    prepared
run/               running              exited
exited-garbage/    exited, deleting     exited, marked for gc
garbage/           deleting             marked for gc (failed prepare)
=================  ===================  ================================

So ``list``, ``status`` and ``gc`` never see a half state: a rename is atomic and a
crashed process releases its lock. Losing a rename race (ENOENT) is normal.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

from rkt import faults
from rkt.datadir import private_dir
from rkt.errors import PodError, PodNotFoundError
from rkt.locks import try_flock

PHASES = ("embryo", "prepare", "prepared", "run", "exited-garbage", "garbage")
_UUID_PREFIX = re.compile(r"^[0-9a-f-]{1,36}$")

# files in a pod directory (rkt's names, so its docs still describe ours)
POD_MANIFEST = "pod"
POD_CREATED = "pod-created"
PID_FILE = "pid"
PPID_FILE = "ppid"
STARTED_FILE = "pod-started"
#: written by stage0 when the pod failed once it was in ``run/``: its stage1 raised,
#: hung or broke its contract (docs/stage1.md). One line, which ``rkt status``
#: shows; the pod's apps without exit codes are then of unknown state, not "exited"
STAGE1_ERROR_FILE = "stage1-error"
#: rkt 1.x's record of the pod's networks (written by ``rkt.net.pod``)
NET_INFO_FILE = "net-info.json"


def new_uuid() -> str:
    # RFC 4122 version 4, without importing uuid (it pulls in platform and socket)
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


class Pod:
    """A pod directory; ``phase`` is where it was when last looked at.

    (A plain class rather than a dataclass, as in :mod:`rkt.pod.status`.)
    """

    def __init__(self, pods_dir: Path, uuid: str, phase: str, lock_fd: int | None = None) -> None:
        self.pods_dir = pods_dir
        self.uuid = uuid
        self.phase = phase
        #: an open fd holding this pod's flock, when we hold it
        self.lock_fd = lock_fd
        self._path: tuple[str, Path] | None = None  # (phase, path): see path

    def __repr__(self) -> str:
        return f"Pod({self.pods_dir!r}, {self.uuid!r}, {self.phase!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pod) and (
            other.pods_dir, other.uuid, other.phase, other.lock_fd
        ) == (self.pods_dir, self.uuid, self.phase, self.lock_fd)

    __hash__ = None  # type: ignore[assignment]  # mutable, as the dataclass was

    @property
    def path(self) -> Path:
        # kept while the phase is the same: pathlib's joins were a good part of
        # what gc spends per pod (issue 14)
        cached = self._path
        if cached is None or cached[0] != self.phase:
            cached = self._path = (self.phase, self.pods_dir / self.phase / self.uuid)
        return cached[1]

    @property
    def path_text(self) -> str:
        """:attr:`path` as a string, without pathlib's joins (for what runs per pod)."""
        return f"{self.pods_dir}/{self.phase}/{self.uuid}"

    # -- locking -------------------------------------------------------------------
    def lock(self, *, shared: bool = False, blocking: bool = False) -> bool:
        """Take the pod lock; False if someone else holds it (non-blocking)."""
        fd = try_flock(self.path_text, shared=shared, blocking=blocking)
        if fd is None:
            return False
        self.release()
        self.lock_fd = fd
        return True

    def release(self) -> None:
        if self.lock_fd is not None:
            os.close(self.lock_fd)  # closing the fd releases the flock
            self.lock_fd = None

    def is_locked_by_other(self) -> bool:
        """True if another process holds the lock (probes with a shared lock)."""
        if self.lock_fd is not None:
            return False
        try:
            fd = try_flock(self.path_text, shared=True, blocking=False)
        except FileNotFoundError:
            return False
        if fd is None:
            return True
        os.close(fd)
        return False

    def move(self, phase: str) -> None:
        """Atomically move the pod to another phase (the lock, on the dir, moves along)."""
        os.rename(self.path_text, f"{self.pods_dir}/{phase}/{self.uuid}")
        self.phase = phase

    # -- state ---------------------------------------------------------------------
    def state(self) -> str:
        """rkt's state words: preparing, prepared, running, exited, ..."""
        locked = self.is_locked_by_other() or self.lock_fd is not None
        return {
            "embryo": "embryo",
            "prepare": "preparing" if locked else "aborted prepare",
            "prepared": "prepared",
            "run": "running" if locked else "exited",
            "exited-garbage": "exited deleting" if locked else "exited garbage",
            "garbage": "deleting" if locked else "garbage",
        }[self.phase]

    def is_exited(self) -> bool:
        return self.phase in ("run", "exited-garbage") and self.state() not in ("running",)

    def manifest_json(self) -> dict[str, object]:
        try:
            data: dict[str, object] = json.loads((self.path / POD_MANIFEST).read_bytes())
        except FileNotFoundError as exc:
            raise PodError(f'pod "{self.uuid}" has no manifest (state {self.phase})') from exc
        return data

    def created(self) -> float | None:
        try:
            return (self.path / POD_CREATED).stat().st_mtime
        except FileNotFoundError:
            return None

    def started(self) -> float | None:
        for name in (STARTED_FILE, PID_FILE, PPID_FILE):
            try:
                return (self.path / name).stat().st_mtime
            except FileNotFoundError:
                continue
        return None

    def read_int(self, name: str) -> int | None:
        try:
            return int((self.path / name).read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def pid(self) -> int | None:
        """The host PID of the pod's PID 1, as the stage1 recorded it."""
        return self.read_int(PID_FILE)

    def stage1_rootfs(self) -> Path:
        return self.path / "stage1" / "rootfs"

    def stage1_error(self) -> str | None:
        """What stage0 recorded about its stage1 failing this pod, if anything."""
        try:
            return (self.path / STAGE1_ERROR_FILE).read_text().strip() or None
        except OSError:
            return None

    def app_exit_codes(self) -> dict[str, int]:
        status_dir = self.stage1_rootfs() / "rkt" / "status"
        codes: dict[str, int] = {}
        try:
            entries = sorted(status_dir.iterdir())
        except FileNotFoundError:
            return codes
        for entry in entries:
            if "-" in entry.name and entry.name.rsplit("-", 1)[1] in ("created", "started",
                                                                        "oom"):
                continue
            try:
                codes[entry.name] = int(entry.read_text().strip())
            except ValueError:
                continue
        return codes


    def oom_killed_apps(self) -> set[str]:
        """The apps the supervisor saw killed by the OOM killer (``status/<app>-oom``)."""
        status_dir = self.stage1_rootfs() / "rkt" / "status"
        return {entry.name[:-len("-oom")] for entry in status_dir.glob("*-oom")}


class PodStore:
    """All pods under ``<dir>/pods``."""

    def __init__(self, data_dir: Path) -> None:
        self.pods_dir = data_dir / "pods"
        for phase in PHASES:
            private_dir(self.pods_dir / phase)

    def create_embryo(self, uuid: str | None = None) -> Pod:
        """A new, exclusively locked pod in ``prepare/`` (created as an embryo first)."""
        for _ in range(8):
            pod = Pod(self.pods_dir, uuid or new_uuid(), "embryo")
            pod.path.mkdir(mode=0o750)
            faults.point("prepare:embryo")
            # ``rkt gc`` collects an embryo whose lock is free, which ours is until we
            # take it: if a gc won, it holds or moved the directory, and we start over
            try:
                if pod.lock():
                    (pod.path / POD_CREATED).touch()
                    pod.move("prepare")
                    return pod
            except FileNotFoundError:
                pass
            pod.release()
            if uuid is not None:
                break
        raise PodError(f"cannot lock new pod {pod.uuid}: rkt gc is collecting it")

    def iter_pods(self, phases: tuple[str, ...] = PHASES) -> Iterator[Pod]:
        for phase in phases:
            try:
                names = sorted(os.listdir(f"{self.pods_dir}/{phase}"))
            except FileNotFoundError:
                continue
            for name in names:
                yield Pod(self.pods_dir, name, phase)

    def find(self, uuid: str) -> Pod:
        """The pod with this UUID or unambiguous UUID prefix, wherever it is."""
        text = uuid.strip().lower()
        if not text or not _UUID_PREFIX.match(text):
            raise PodNotFoundError(f'invalid pod UUID "{uuid}"')
        if len(text) == 36:
            # a whole UUID, as schedulers pass it: look it up, not through every pod
            try:
                return self.refresh(Pod(self.pods_dir, text, "run"))
            except PodNotFoundError:
                raise PodNotFoundError(f'no pod with UUID "{uuid}"') from None
        matches = {p.uuid: p for p in self.iter_pods() if p.uuid.startswith(text)}
        if not matches:
            raise PodNotFoundError(f'no pod with UUID "{uuid}"')
        if len(matches) > 1:
            raise PodNotFoundError(
                f'UUID prefix "{uuid}" is ambiguous: it matches {len(matches)} pods'
            )
        pod = next(iter(matches.values()))
        return self.refresh(pod)

    def refresh(self, pod: Pod) -> Pod:
        """Find where the pod is now (another process may have moved it)."""
        if os.path.isdir(f"{self.pods_dir}/{pod.phase}/{pod.uuid}"):
            return pod  # still where it was last seen, as nearly always
        for phase in PHASES:
            if (self.pods_dir / phase / pod.uuid).is_dir():
                pod.phase = phase
                return pod
        raise PodNotFoundError(f'pod "{pod.uuid}" disappeared')

    def delete(self, pod: Pod) -> None:
        """Remove the pod's directory (through the trash: see :mod:`rkt.pod.trash`)."""
        from rkt.pod.trash import remove_tree

        remove_tree(self.discard(pod))

    def discard(self, pod: Pod) -> str:
        """Move the pod into the trash, out of every phase; returns its new path,
        for the caller to delete (a gc deletes what an earlier one left there)."""
        from rkt.pod.trash import TRASH

        trash = f"{self.pods_dir}/{TRASH}"
        target = f"{trash}/{pod.uuid}"
        try:
            os.rename(pod.path_text, target)
        except FileNotFoundError:
            if not os.path.isdir(trash):  # the first removal in this data dir
                private_dir(Path(trash))
                return self.discard(pod)
            raise
        except OSError:  # a pod of that UUID is in the trash already: delete it in place
            return pod.path_text
        pod.phase = TRASH
        return target

    def trash_dir(self) -> str:
        from rkt.pod.trash import TRASH

        return f"{self.pods_dir}/{TRASH}"


def uuid_from_file(path: str) -> str:
    try:
        text = Path(path).read_text().strip()
    except OSError as exc:
        raise PodNotFoundError(f"cannot read UUID file {path}: {exc.strerror}") from exc
    if not text:
        raise PodNotFoundError(f"UUID file {path} is empty")
    return text
