"""stage0's side of the metadata service: register a pod, unregister it.

``rkt run --mds-register`` sends the pod's manifest, its apps' image manifests
and the pod's address over the registration socket, gets the pod's token and
the service's public port back, and gives every app
``AC_METADATA_URL=http://<host address on the pod's network>:<port>/<token>``.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
from pathlib import Path
from typing import Any, NamedTuple

from rkt.errors import MetadataError
from rkt.metadata import POD_REGISTRATION_FILE
from rkt.pod.contract import PodRuntime, ResolvedPod
from rkt.pod.dirs import POD_MANIFEST, Pod

LOG = logging.getLogger(__name__)

#: seconds to wait for the service; it answers in milliseconds when it is there
TIMEOUT = 5.0


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=TIMEOUT)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(TIMEOUT)
        try:
            sock.connect(str(self.socket_path))
        except OSError:
            sock.close()
            raise
        self.sock = sock


def probe_service(path: Path) -> None:
    """Raise :class:`MetadataError` unless a metadata service listens on ``path``."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    try:
        sock.connect(str(path))
    except OSError as exc:
        raise MetadataError(
            f"no metadata service listens on {path} (start it with 'rkt metadata-service')"
        ) from exc
    finally:
        sock.close()


def _request(path: Path, method: str, url: str, body: bytes | None = None) -> tuple[int, bytes]:
    connection = _UnixConnection(path)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, url, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise MetadataError(
            f"no metadata service listens on {path} (start it with 'rkt metadata-service')"
        ) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise MetadataError(f"the metadata service on {path} failed: {exc}") from exc
    finally:
        connection.close()


class PodRegistration(NamedTuple):
    """What the service answered: the pod's token and the port pods reach it on."""

    token: str
    port: int

    def url(self, host: str) -> str:
        """``AC_METADATA_URL`` for a pod that reaches the host at ``host`` (no trailing
        slash: apps append ``/acMetadata/v1/...``)."""
        where = f"[{host}]" if ":" in host else host
        return f"http://{where}:{self.port}/{self.token}"


def register_pod(socket_path: Path, pod: Pod, resolved: ResolvedPod, ip: str) -> PodRegistration:
    """Register ``pod`` (at address ``ip`` on its network) with the service on
    ``socket_path``; the pod directory remembers the socket for unregistering."""
    try:
        manifest: dict[str, Any] = json.loads((pod.path / POD_MANIFEST).read_bytes())
        images = {app.name: json.loads((pod.path / "appsinfo" / app.name / "manifest")
                                       .read_bytes())
                  for app in resolved.apps}
    except (OSError, ValueError) as exc:
        raise MetadataError(f'pod "{pod.uuid}": cannot read its manifests: {exc}') from exc
    body = json.dumps({"ip": ip, "manifest": manifest, "apps": images}).encode()
    status, answer = _request(socket_path, "PUT", f"/pods/{pod.uuid}", body)
    if status != 201:
        reason = answer.decode(errors="replace").strip().splitlines()[:1]
        raise MetadataError(f"the metadata service refused pod {pod.uuid}: "
                            f"{reason[0] if reason else status}")
    try:
        document = json.loads(answer)
        registration = PodRegistration(str(document["token"]), int(document["port"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise MetadataError(f"the metadata service on {socket_path} answered nonsense") from exc
    (pod.path / POD_REGISTRATION_FILE).write_text(str(socket_path))
    return registration


def unregister_pod(pod_dir: Path, uuid: str) -> None:
    """Unregister a pod that was registered (nothing to do otherwise). Best effort:
    a service that is not running has nothing to forget, and one that restarts
    drops the registrations of pods that ended meanwhile."""
    marker = pod_dir / POD_REGISTRATION_FILE
    try:
        socket_path = Path(marker.read_text().strip())
    except OSError:
        return
    try:
        status, _ = _request(socket_path, "DELETE", f"/pods/{uuid}")
    except MetadataError as exc:
        LOG.debug("unregistering pod %s: %s", uuid, exc)
        return
    LOG.debug("unregistered pod %s from %s (%d)", uuid, socket_path, status)
    marker.unlink(missing_ok=True)


def with_metadata_url(resolved: ResolvedPod, url: str) -> ResolvedPod:
    """``resolved`` with every app's ``AC_METADATA_URL`` set to ``url``."""
    apps = tuple(
        app._replace(env=tuple((name, url if name == "AC_METADATA_URL" else value)
                               for name, value in app.env))
        for app in resolved.apps
    )
    return resolved._replace(apps=apps)


def pod_address(runtime: PodRuntime) -> tuple[str, str]:
    """(the pod's address, the host's address as the pod reaches it) on the pod's
    first private network that gives both; a pod that shares the host's network,
    or has none, cannot be told apart from others by its address, so it cannot
    register."""
    network = runtime.network
    if network.mode == "contained":
        for attachment in network.attachments:
            if attachment.ip and attachment.gateway:
                return attachment.ip.split("/")[0], attachment.gateway.split("/")[0]
        raise MetadataError("--mds-register: the pod's networks gave it no address with a "
                            "gateway to reach the metadata service through")
    raise MetadataError(
        f"--mds-register flag does not work with --net={','.join(runtime.net)}: the "
        "metadata service tells pods apart by their address on a private network; "
        "use --net=default or another contained network"
    )


def register_for_run(pod: Pod, resolved: ResolvedPod, runtime: PodRuntime,
                     socket_path: Path) -> ResolvedPod:
    """``rkt run --mds-register``: register the pod and give its apps
    ``AC_METADATA_URL``; the returned pod is also written to ``apps.json``, so that
    ``rkt enter`` sees the same environment."""
    from rkt.pod.prepare import save_resolved_pod

    ip, host = pod_address(runtime)
    registration = register_pod(socket_path, pod, resolved, ip)
    updated = with_metadata_url(resolved, registration.url(host))
    try:
        save_resolved_pod(pod, updated)
    except OSError as exc:
        unregister_pod(pod.path, pod.uuid)
        raise MetadataError(f'pod "{pod.uuid}": cannot write its apps.json: {exc}') from exc
    return updated
