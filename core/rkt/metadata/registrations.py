"""The pods the metadata service knows, looked up by token, kept on disk.

A :class:`Registration` is what ``rkt run --mds-register`` sent (the pod
manifest, each app's image manifest, the pod's address) plus what the service
made for it: the token that goes into ``AC_METADATA_URL`` and the pod's HMAC
key. Each is a file ``<state dir>/<uuid>.json`` (mode 0600: it holds secrets),
written through a temporary file and a rename, so a service killed at any
moment restarts with every registration it had acknowledged.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import os
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOG = logging.getLogger(__name__)

UUID_PATTERN = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
#: appc-spec/types.md, AC Name
APP_NAME_PATTERN = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
HMAC_KEY_SIZE = 64  # SHA-512's block is 128 bytes; its output size is plenty of key


class RegistrationError(ValueError):
    """A registration request that cannot be accepted; the message says why, in one line."""


def normalise_ip(text: str) -> str:
    """The canonical text of an address (IPv4-mapped IPv6 as plain IPv4)."""
    address = ipaddress.ip_address(text)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


@dataclass(frozen=True)
class Registration:
    """One registered pod. ``manifest`` and ``image_manifests`` are kept as they
    were sent (key order and ``null`` versus ``[]`` included)."""

    uuid: str
    ip: str
    token: str
    hmac_key: bytes
    manifest: dict[str, Any]
    #: app name -> that app's image manifest
    image_manifests: dict[str, dict[str, Any]]

    # -- what the endpoints serve ------------------------------------------------------
    def runtime_app(self, name: str) -> dict[str, Any] | None:
        for app in self.manifest.get("apps") or []:
            if app.get("name") == name:
                return dict(app)
        return None

    def app_annotations(self, name: str) -> list[dict[str, Any]]:
        """The image's annotations with the pod manifest's app annotations merged
        over them (appc-spec/ace.md "App Metadata"): a name both have keeps the
        image's position and takes the pod's value; new names come after."""
        merged: dict[str, Any] = {}
        for source in ((self.image_manifests.get(name) or {}).get("annotations"),
                       (self.runtime_app(name) or {}).get("annotations")):
            for annotation in source or []:
                merged[annotation["name"]] = annotation["value"]
        return [{"name": key, "value": value} for key, value in merged.items()]

    # -- on disk ---------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps({
            "uuid": self.uuid, "ip": self.ip, "token": self.token,
            "hmac_key": base64.b64encode(self.hmac_key).decode(),
            "manifest": self.manifest, "image_manifests": self.image_manifests,
        })

    @classmethod
    def from_json(cls, text: str) -> Registration:
        data = json.loads(text)
        return cls(uuid=data["uuid"], ip=data["ip"], token=data["token"],
                   hmac_key=base64.b64decode(data["hmac_key"]), manifest=data["manifest"],
                   image_manifests=data["image_manifests"])


def _annotations_ok(value: Any) -> bool:
    return value is None or (isinstance(value, list) and all(
        isinstance(a, dict) and isinstance(a.get("name"), str) and isinstance(a.get("value"), str)
        for a in value))


def new_registration(uuid: str, document: Any) -> Registration:
    """Check a registration request (``PUT /pods/<uuid>``'s JSON body) and make the
    pod's token and HMAC key; raises :class:`RegistrationError`.

    The body is ``{"ip": ..., "manifest": <pod manifest>, "apps": {<app name>:
    <image manifest>}}``; every app of the manifest needs its image manifest.
    """
    if not UUID_PATTERN.match(uuid):
        raise RegistrationError(f"invalid pod UUID {uuid!r}")
    if not isinstance(document, dict):
        raise RegistrationError("the registration must be a JSON object")
    try:
        ip = normalise_ip(str(document.get("ip")))
    except ValueError as exc:
        raise RegistrationError(f"invalid pod address {document.get('ip')!r}") from exc
    manifest, images = document.get("manifest"), document.get("apps")
    if not isinstance(manifest, dict) or manifest.get("acKind") != "PodManifest":
        raise RegistrationError('"manifest" must be a pod manifest')
    apps = manifest.get("apps")
    if not isinstance(apps, list) or not apps:
        raise RegistrationError("the pod manifest has no apps")
    if not isinstance(images, dict):
        raise RegistrationError('"apps" must map app names to image manifests')
    if not _annotations_ok(manifest.get("annotations")):
        raise RegistrationError("the pod manifest's annotations are malformed")
    names = []
    for app in apps:
        name = app.get("name") if isinstance(app, dict) else None
        if not isinstance(name, str) or not APP_NAME_PATTERN.match(name):
            raise RegistrationError(f"invalid app name {name!r} in the pod manifest")
        image_id = (app.get("image") or {}).get("id") if isinstance(app.get("image"), dict) \
            else None
        if not isinstance(image_id, str) or not image_id:
            raise RegistrationError(f'app "{name}" has no image ID')
        if not _annotations_ok(app.get("annotations")):
            raise RegistrationError(f'app "{name}": annotations are malformed')
        image = images.get(name)
        if not isinstance(image, dict) or image.get("acKind") != "ImageManifest":
            raise RegistrationError(f'app "{name}" has no image manifest')
        if not _annotations_ok(image.get("annotations")):
            raise RegistrationError(f'app "{name}": image annotations are malformed')
        names.append(name)
    return Registration(
        uuid=uuid, ip=ip, token=secrets.token_urlsafe(24),
        hmac_key=secrets.token_bytes(HMAC_KEY_SIZE), manifest=manifest,
        image_manifests={name: images[name] for name in names},
    )


class RegistrationStore:
    """The registered pods, by token and by UUID; thread-safe, persisted when
    ``state_dir`` is given."""

    def __init__(self, state_dir: Path | None) -> None:
        self.state_dir = state_dir
        self._lock = threading.Lock()
        self._by_uuid: dict[str, Registration] = {}
        self._by_token: dict[str, Registration] = {}

    def load(self, keep: Callable[[str], bool]) -> list[str]:
        """Read the registrations left by an earlier run; those of pods for which
        ``keep(uuid)`` is false (the pod has ended meanwhile) are deleted.
        Returns the UUIDs loaded."""
        if self.state_dir is None:
            return []
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        loaded = []
        for path in sorted(self.state_dir.glob("*.json")):
            try:
                registration = Registration.from_json(path.read_text())
            except (OSError, ValueError, KeyError, TypeError) as exc:
                LOG.warning("ignoring unreadable registration %s: %s", path, exc)
                continue
            if not keep(registration.uuid):
                LOG.info("pod %s has ended: dropping its registration", registration.uuid)
                path.unlink(missing_ok=True)
                continue
            with self._lock:
                self._index(registration)
            loaded.append(registration.uuid)
        return loaded

    def add(self, registration: Registration) -> list[str]:
        """Register a pod, replacing an earlier registration of the same UUID and of
        any other pod with the same address (that pod is gone: its address was given
        to this one). Returns the UUIDs of the pods it replaced."""
        with self._lock:
            replaced = [r.uuid for r in self._by_uuid.values()
                        if r.uuid == registration.uuid or r.ip == registration.ip]
            for uuid in replaced:
                self._drop(uuid)
            self._write(registration)
            self._index(registration)
        return [uuid for uuid in replaced if uuid != registration.uuid]

    def remove(self, uuid: str) -> bool:
        with self._lock:
            return self._drop(uuid)

    def by_token(self, token: str) -> Registration | None:
        with self._lock:
            return self._by_token.get(token)

    def by_uuid(self, uuid: str) -> Registration | None:
        with self._lock:
            return self._by_uuid.get(uuid)

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_uuid)

    # -- under the lock --------------------------------------------------------------
    def _index(self, registration: Registration) -> None:
        self._by_uuid[registration.uuid] = registration
        self._by_token[registration.token] = registration

    def _drop(self, uuid: str) -> bool:
        registration = self._by_uuid.pop(uuid, None)
        if registration is None:
            return False
        self._by_token.pop(registration.token, None)
        if self.state_dir is not None:
            (self.state_dir / f"{uuid}.json").unlink(missing_ok=True)
        return True

    def _write(self, registration: Registration) -> None:
        if self.state_dir is None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        final = self.state_dir / f"{registration.uuid}.json"
        temporary = final.with_name(f".{final.name}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(registration.to_json())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, final)
