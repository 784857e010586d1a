"""What ``rkt list`` and ``rkt status`` show about a pod, and waiting for it to change.

Everything comes from the pod directory alone (its manifest, its lock, a few
timestamps, the exit codes the supervisor recorded): no image is read, so
listing stays fast with thousands of pods.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from rkt.errors import PodError
from rkt.pod.contract import NetAttachment
from rkt.pod.dirs import Pod, PodStore

#: rkt 1.x's record of the pod's networks (written by ``rkt.net.pod``)
NET_INFO_FILE = "net-info.json"

#: phases whose pods have started (and may have exit codes)
_STARTED_PHASES = ("run", "exited-garbage")
#: how often a wait looks at the pod again, in seconds
_POLL_INTERVAL = 0.1


@dataclass(frozen=True)
class AppStatus:
    name: str | None
    image_name: str
    image_id: str
    #: the pod's state, or "exited" once the app's exit code is recorded
    state: str
    exit_code: int | None = None
    #: the kernel's OOM killer ended it (its memory limit, the pod's, or the host's)
    oom_killed: bool = False


@dataclass(frozen=True)
class PodStatus:
    uuid: str
    #: rkt's state words (:meth:`rkt.pod.dirs.Pod.state`)
    state: str
    apps: tuple[AppStatus, ...]
    #: seconds since the epoch
    created: float | None
    started: float | None
    #: the CNI networks the pod was attached to (``net-info.json``)
    networks: tuple[NetAttachment, ...] = ()

    @property
    def app_names(self) -> list[str | None]:
        return [app.name for app in self.apps]


def pod_status(pod: Pod) -> PodStatus:
    try:
        manifest: dict[str, Any] = pod.manifest_json()
    except PodError:
        manifest = {}
    state = pod.state()
    started = pod.phase in _STARTED_PHASES
    codes = pod.app_exit_codes() if started else {}
    oom_killed = pod.oom_killed_apps() if started else set()
    apps = []
    for app in manifest.get("apps") or []:
        image = app.get("image") or {}
        name = app.get("name")
        code = codes.get(name)
        apps.append(AppStatus(
            name=name,
            image_name=image.get("name", ""),
            image_id=image.get("id", ""),
            state="running" if state == "running" else "exited" if code is not None else state,
            exit_code=code,
            oom_killed=name in oom_killed,
        ))
    return PodStatus(
        uuid=pod.uuid,
        state=state,
        apps=tuple(apps),
        created=pod.created(),
        started=pod.started() if started else None,
        networks=pod_networks(pod),
    )


def pod_networks(pod: Pod) -> tuple[NetAttachment, ...]:
    """The attachments ``net-info.json`` records: none for host networking or ``none``."""
    try:
        document = json.loads((pod.path / NET_INFO_FILE).read_text())
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
    """Wait until the pod is neither being prepared nor running; False on timeout."""
    deadline = time.monotonic() + timeout
    while pod.state() in ("embryo", "preparing", "prepared", "running"):
        if time.monotonic() > deadline:
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
