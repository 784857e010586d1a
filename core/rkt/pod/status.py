"""What ``rkt list`` and ``rkt status`` show about a pod, and waiting for it to change.

Everything comes from the pod directory alone (its manifest, its lock, a few
timestamps, the exit codes the supervisor recorded): no image is read, so
listing stays fast with thousands of pods.
"""

from __future__ import annotations

import json
import os
import time

from rkt.errors import PodError
from rkt.pod.dirs import NET_INFO_FILE, Pod, PodStore

# Neither typing nor dataclasses at run time: `rkt status` is what schedulers poll,
# and those two (with the inspect, ast and dis that dataclasses imports) cost more
# than the rest of it (see rkt.context). Type checkers treat this name like typing's.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from rkt.pod.contract import NetAttachment

#: phases whose pods have started (and may have exit codes)
_STARTED_PHASES = ("run", "exited-garbage")
#: how often a wait looks at the pod again, in seconds
_POLL_INTERVAL = 0.1
#: seconds ``status --wait`` gives ``run-prepared`` to take a prepared pod
PREPARED_PATIENCE = 3.0


class _Record:
    """A read-only record with keyword construction, equality and a repr (what the
    frozen dataclasses these were gave, without importing dataclasses)."""

    __slots__: tuple[str, ...] = ()

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._values() == self._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only")

    def _set(self, **values: object) -> None:
        for name, value in values.items():
            object.__setattr__(self, name, value)


class AppMountStatus(_Record):
    """A volume mounted into an app, as rkt's api/v1 ``Mount`` describes it."""

    __slots__ = ("container_path", "host_path", "read_only", "volume")
    volume: str
    container_path: str
    #: the host path of a host volume; "" for an empty volume (rkt's convention)
    host_path: str
    read_only: bool

    def __init__(self, volume: str, container_path: str, host_path: str,
                 read_only: bool) -> None:
        self._set(volume=volume, container_path=container_path, host_path=host_path,
                  read_only=read_only)


class AppStatus(_Record):
    __slots__ = (
        "created",
        "exit_code",
        "finished",
        "image_id",
        "image_name",
        "mounts",
        "name",
        "oom_killed",
        "started",
        "state",
        "user_annotations",
        "user_labels",
    )
    name: str | None
    image_name: str
    image_id: str
    #: rkt's app states: unknown, created, running, exited (api/v1 ``AppState``)
    state: str
    exit_code: int | None
    #: the kernel's OOM killer ended it (its memory limit, the pod's, or the host's)
    oom_killed: bool
    #: seconds since the epoch
    created: float | None
    started: float | None
    finished: float | None
    mounts: tuple[AppMountStatus, ...]
    user_annotations: tuple[tuple[str, str], ...]
    user_labels: tuple[tuple[str, str], ...]

    def __init__(self, name: str | None, image_name: str, image_id: str, state: str,
                 exit_code: int | None = None, oom_killed: bool = False,
                 created: float | None = None, started: float | None = None,
                 finished: float | None = None, mounts: tuple[AppMountStatus, ...] = (),
                 user_annotations: tuple[tuple[str, str], ...] = (),
                 user_labels: tuple[tuple[str, str], ...] = ()) -> None:
        self._set(name=name, image_name=image_name, image_id=image_id, state=state,
                  exit_code=exit_code, oom_killed=oom_killed, created=created,
                  started=started, finished=finished, mounts=mounts,
                  user_annotations=user_annotations, user_labels=user_labels)


class PodStatus(_Record):
    __slots__ = (
        "apps",
        "created",
        "error",
        "networks",
        "started",
        "state",
        "user_annotations",
        "user_labels",
        "uuid",
    )
    uuid: str
    #: rkt's state words (:meth:`rkt.pod.dirs.Pod.state`)
    state: str
    apps: tuple[AppStatus, ...]
    #: seconds since the epoch
    created: float | None
    started: float | None
    #: the CNI networks the pod was attached to (``net-info.json``)
    networks: tuple[NetAttachment, ...]
    user_annotations: tuple[tuple[str, str], ...]
    user_labels: tuple[tuple[str, str], ...]
    #: what stage0 recorded about the stage1 failing the pod (``rkt.pod.lifecycle``)
    error: str | None

    def __init__(self, uuid: str, state: str, apps: tuple[AppStatus, ...],
                 created: float | None, started: float | None,
                 networks: tuple[NetAttachment, ...] = (),
                 user_annotations: tuple[tuple[str, str], ...] = (),
                 user_labels: tuple[tuple[str, str], ...] = (),
                 error: str | None = None) -> None:
        self._set(uuid=uuid, state=state, apps=apps, created=created, started=started,
                  networks=networks, user_annotations=user_annotations,
                  user_labels=user_labels, error=error)

    @property
    def app_names(self) -> list[str | None]:
        return [app.name for app in self.apps]


def _app_state(pod_state: str, exit_code: int | None, *, unknown: bool = False) -> str:
    """rkt 1.x's app state for a pod whose apps are fixed at prepare time.

    ``unknown``: the stage1 failed or wrote garbage, so an exited pod's app
    without an exit code may never have run, or ended any way.
    """
    if exit_code is not None:
        return "exited"
    if unknown and pod_state != "running":
        return "unknown"
    return {"prepared": "created", "running": "running"}.get(
        pod_state, "unknown" if pod_state in ("embryo", "preparing", "aborted prepare")
        else "exited")


def _mtime(path: str) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def _pairs(value: object) -> tuple[tuple[str, str], ...]:
    if isinstance(value, dict):
        return tuple((str(k), str(v)) for k, v in value.items())
    return ()


def _mounts(app: dict[str, Any], volumes: dict[str, dict[str, Any]]) -> tuple[AppMountStatus, ...]:
    mounts = []
    for mount in app.get("mounts") or []:
        volume = mount.get("appVolume") or volumes.get(mount.get("volume", ""), {})
        mounts.append(AppMountStatus(
            volume=str(mount.get("volume", "")),
            container_path=str(mount.get("path", "")),
            host_path=str(volume.get("source") or ""),
            read_only=bool(volume.get("readOnly")),
        ))
    return tuple(mounts)


def _recorded_exits(status_dir: str) -> tuple[dict[str, int], set[str], dict[str, float]]:
    """What the supervisor recorded in ``rkt/status``, in one pass over it: each
    app's exit code, the apps the OOM killer ended, and each file's mtime (for
    when an app started and finished)."""
    codes: dict[str, int] = {}
    oom: set[str] = set()
    mtimes: dict[str, float] = {}
    try:
        entries = sorted(os.scandir(status_dir), key=lambda entry: entry.name)
    except (FileNotFoundError, NotADirectoryError):
        return codes, oom, mtimes
    for entry in entries:
        name = entry.name
        try:
            mtimes[name] = entry.stat().st_mtime
        except OSError:
            continue
        suffix = name.rsplit("-", 1)[1] if "-" in name else ""
        if suffix == "oom":
            oom.add(name[:-len("-oom")])
        if suffix in ("created", "started", "oom"):
            continue
        try:
            with open(entry.path, "rb") as file:
                codes[name] = int(file.read().strip())
        except (OSError, ValueError):
            continue
    return codes, oom, mtimes


def pod_status(pod: Pod) -> PodStatus:
    # plain strings rather than pathlib's joins: `rkt list` does this for every pod
    path = pod.path_text
    try:
        with open(f"{path}/pod", "rb") as file:
            manifest: dict[str, Any] = json.loads(file.read())
    except FileNotFoundError:
        manifest = {}
    state = pod.state()
    started = pod.phase in _STARTED_PHASES
    codes: dict[str, int] = {}
    oom_killed: set[str] = set()
    mtimes: dict[str, float] = {}
    if started:
        codes, oom_killed, mtimes = _recorded_exits(f"{path}/stage1/rootfs/rkt/status")
    created = _mtime(f"{path}/pod-created")
    pod_started = _started(path) if started else None
    error = pod.stage1_error() if started else None
    volumes = {v.get("name", ""): v for v in manifest.get("volumes") or []}
    apps = []
    for app in manifest.get("apps") or []:
        image = app.get("image") or {}
        name = app.get("name")
        code = codes.get(name)
        runtime_app = app.get("app") or {}
        apps.append(AppStatus(
            name=name,
            image_name=image.get("name", ""),
            image_id=image.get("id", ""),
            # an exit code file that holds no number counts as garbage too
            state=_app_state(state, code, unknown=error is not None
                             or (started and str(name) in mtimes)),
            exit_code=code,
            oom_killed=name in oom_killed,
            created=created,
            started=(mtimes.get(f"{name}-started") or pod_started) if started else None,
            finished=mtimes.get(str(name)) if code is not None else None,
            mounts=_mounts(app, volumes),
            user_annotations=_pairs(runtime_app.get("userAnnotations")),
            user_labels=_pairs(runtime_app.get("userLabels")),
        ))
    return PodStatus(
        uuid=pod.uuid,
        state=state,
        apps=tuple(apps),
        created=created,
        started=pod_started,
        user_annotations=_pairs(manifest.get("userAnnotations")),
        user_labels=_pairs(manifest.get("userLabels")),
        networks=_networks(f"{path}/{NET_INFO_FILE}"),
        error=error,
    )


def _started(path: str) -> float | None:
    """:meth:`Pod.started` on a path string."""
    for name in ("pod-started", "pid", "ppid"):
        when = _mtime(f"{path}/{name}")
        if when is not None:
            return when
    return None


def _nanoseconds(when: float | None) -> int | None:
    return None if when is None else int(when * 1_000_000_000)


def api_v1_record(status: PodStatus, *, pid: int | None = None) -> dict[str, Any]:
    """The pod as rkt 1.x's ``rkt list/status --format=json`` gave it (``api/v1``
    ``Pod``), which clients such as Nomad's rkt driver decode.

    Times are nanoseconds since the epoch, as api/v1 documents them (rkt 1.x
    itself printed the pod's two in seconds). Keys rkt leaves out when empty
    are left out; ``networks`` (``net-info.json``'s entries) is always there.
    ``pid``, and an app's ``image_name`` and ``oom_killed``, are extensions a Go
    client ignores.
    """
    apps: list[dict[str, Any]] = []
    for app in status.apps:
        entry: dict[str, Any] = {"name": app.name, "state": app.state,
                                 "image_id": app.image_id, "image_name": app.image_name}
        for key, value in (("created_at", app.created), ("started_at", app.started),
                           ("finished_at", app.finished)):
            if value is not None:
                entry[key] = _nanoseconds(value)
        if app.exit_code is not None:
            entry["exit_code"] = app.exit_code
        if app.oom_killed:
            entry["oom_killed"] = True  # an extension: rkt 1.x's api had no such mark
        if app.mounts:
            entry["mounts"] = [
                {"name": m.volume, "container_path": m.container_path,
                 "host_path": m.host_path, "read_only": m.read_only}
                for m in app.mounts
            ]
        if app.user_annotations:
            entry["user_annotations"] = dict(app.user_annotations)
        if app.user_labels:
            entry["user_labels"] = dict(app.user_labels)
        apps.append(entry)
    record: dict[str, Any] = {
        "name": status.uuid,
        "state": status.state,
        "networks": [n.to_json() for n in status.networks],
    }
    if status.apps:
        record["app_names"] = status.app_names
        record["apps"] = apps
    if status.created is not None:
        record["created_at"] = _nanoseconds(status.created)
    if status.started is not None:
        record["started_at"] = _nanoseconds(status.started)
    if status.user_annotations:
        record["user_annotations"] = dict(status.user_annotations)
    if status.user_labels:
        record["user_labels"] = dict(status.user_labels)
    if pid is not None:
        record["pid"] = pid
    if status.error is not None:
        record["error"] = status.error  # an extension, as pid is
    return record


def pod_networks(pod: Pod) -> tuple[NetAttachment, ...]:
    """The attachments ``net-info.json`` records: none for host networking or ``none``."""
    return _networks(str(pod.path / NET_INFO_FILE))


def _networks(path: str) -> tuple[NetAttachment, ...]:
    try:
        with open(path, "rb") as file:
            document = json.loads(file.read())
        if not document:
            return ()  # --net=host or none: no need for the contract module (and typing)
        from rkt.pod.contract import NetAttachment

        return tuple(NetAttachment.from_json(entry) for entry in document)
    except (OSError, ValueError, KeyError, TypeError):
        return ()


def networks_summary(networks: tuple[NetAttachment, ...]) -> str:
    """``default:ip4=172.16.28.7,other:ip4=10.1.0.2``, as ``list`` and ``status`` show them."""
    return ",".join(f"{n.name}:ip4={n.ip}" for n in networks if n.ip)



def wait_until_ready(pods: PodStore, pod: Pod, timeout: float) -> bool:
    """Wait until the pod runs (with its PID recorded) or has exited; False on timeout."""
    deadline = time.monotonic() + timeout
    while pod.state() not in ("running", "exited", "exited garbage") or (
        pod.state() == "running" and pod.pid() is None
    ):
        if time.monotonic() > deadline:
            return False
        time.sleep(_POLL_INTERVAL)
        pods.refresh(pod)
    return True


def wait_until_exited(pods: PodStore, pod: Pod, timeout: float) -> bool:
    """Wait until the pod is neither being prepared nor running; False on timeout.

    A pod that stays prepared for :data:`PREPARED_PATIENCE` seconds, which nobody
    is starting, would be waited for for ever: that is a :class:`PodError`.
    """
    deadline = time.monotonic() + timeout
    prepared_since: float | None = None
    while (state := pod.state()) in ("embryo", "preparing", "prepared", "running"):
        now = time.monotonic()
        if state == "prepared" and not pod.is_locked_by_other():
            prepared_since = prepared_since if prepared_since is not None else now
            if now - prepared_since > PREPARED_PATIENCE:
                raise PodError(f'pod "{pod.uuid}" is prepared and nobody is starting it: '
                               "it cannot exit before rkt run-prepared runs it")
        else:
            prepared_since = None
        if now > deadline:
            return False
        time.sleep(_POLL_INTERVAL)
        pods.refresh(pod)
    return True


def oom_kill_messages(pod: Pod) -> list[str]:
    """One line per app the OOM killer ended, naming the limit it hit (for ``rkt run``)."""
    from rkt.pod.cgroups import size_text
    from rkt.pod.prepare import load_resolved_pod

    killed = pod.oom_killed_apps()
    if not killed:
        return []
    try:
        resolved = load_resolved_pod(pod)
    except PodError:
        return [f'app "{name}" was killed by the kernel: out of memory' for name in killed]
    messages = []
    for app in resolved.apps:
        if app.name not in killed:
            continue
        if app.resources.memory_bytes is not None:
            limit = f"its memory limit ({size_text(app.resources.memory_bytes)})"
        elif resolved.resources.memory_bytes is not None:
            limit = f"the pod's memory limit ({size_text(resolved.resources.memory_bytes)})"
        else:
            limit = "the memory the host could give it"
        messages.append(f'app "{app.name}" was killed by the kernel: it hit {limit}')
    return messages
