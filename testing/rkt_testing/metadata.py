"""A real ``rkt metadata-service`` process on a private socket and port, and clients
for both of its doors (the registration socket, the public port).

Tests on a shared machine must not use the default socket or port: each
:class:`MetadataServiceProcess` gets a socket in its own directory and a free
port.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from rkt_testing.env import RktEnv
from rkt_testing.ports import free_port


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=10)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(str(self.path))


@dataclass
class Reply:
    status: int
    content_type: str
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> Any:
        return json.loads(self.body)


def _reply(connection: http.client.HTTPConnection, method: str, path: str,
           body: bytes | None = None, headers: dict[str, str] | None = None) -> Reply:
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return Reply(response.status, response.getheader("Content-Type") or "",
                     response.read())
    finally:
        connection.close()


def registration_request(socket_path: Path, method: str, path: str,
                         document: Any = None) -> Reply:
    """A request on the registration socket (``PUT``/``DELETE /pods/<uuid>``)."""
    body = None if document is None else json.dumps(document).encode()
    return _reply(_UnixConnection(socket_path), method, path, body)


def register(socket_path: Path, uuid: str, ip: str, manifest: dict[str, Any],
             images: dict[str, dict[str, Any]]) -> str:
    """Register a pod as ``rkt run --mds-register`` does; returns its token."""
    reply = registration_request(socket_path, "PUT", f"/pods/{uuid}",
                                 {"ip": ip, "manifest": manifest, "apps": images})
    assert reply.status == 201, reply.text
    token: str = reply.json()["token"]
    return token


class _SourceConnection(http.client.HTTPConnection):
    """HTTP from a chosen local address (127.0.0.2 is as much loopback as 127.0.0.1)."""

    def __init__(self, port: int, source: str) -> None:
        super().__init__("127.0.0.1", port, timeout=10, source_address=(source, 0))


def metadata_request(port: int, token: str, path: str, *, source: str = "127.0.0.1",
                     form: dict[str, str] | None = None, raw_form: str | None = None) -> Reply:
    """``GET`` (or, with a form, ``POST``) ``/<token>/acMetadata/v1/<path>`` from ``source``."""
    url = f"/{token}/acMetadata/v1/{path}"
    if form is None and raw_form is None:
        return _reply(_SourceConnection(port, source), "GET", url)
    body = (raw_form if raw_form is not None else urlencode(form or {})).encode()
    return _reply(_SourceConnection(port, source), "POST", url, body,
                  {"Content-Type": "application/x-www-form-urlencoded"})


@dataclass
class MetadataServiceProcess:
    """``rkt metadata-service`` for ``env``, on ``socket_path`` and ``port``."""

    env: RktEnv
    socket_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 20) -> MetadataServiceProcess:
        command = [self.env.rkt_binary(), *self.env.global_flags(), "metadata-service",
                   f"--socket={self.socket_path}", f"--listen-port={self.port}"]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **self.env.env},
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # printed once both doors listen
        if "running" not in line:
            _, errors = self.process.communicate(timeout=timeout)
            raise AssertionError(f"rkt metadata-service did not start: {line}{errors}")
        return self

    def stop(self) -> tuple[int, str, str]:
        """SIGTERM; returns (status, rest of stdout, stderr)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        out, err = self.process.communicate(timeout=20)
        return self.process.returncode, out, err

    def kill(self) -> None:
        """SIGKILL: the service gets no chance to clean up."""
        assert self.process is not None
        self.process.kill()
        self.process.communicate(timeout=20)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()


class InProcessMetadataService:
    """The service's servers on threads of the test process: a socket under ``root``,
    the public port on a free port, registrations in ``root/state``."""

    def __init__(self, root: Path) -> None:
        from rkt.metadata.registrations import RegistrationStore
        from rkt.metadata.service import MetadataService, listen_tcp, listen_unix

        self.socket_path = root / "run" / "mds.sock"
        self.state_dir = root / "state"
        self.store = RegistrationStore(self.state_dir)
        self.service = MetadataService(self.store, listen_unix(self.socket_path), listen_tcp(0),
                                       socket_path=self.socket_path)
        self.port = self.service.public_port
        self._thread = threading.Thread(target=self.service.serve, daemon=True)
        self._thread.start()

    def get(self, token: str, path: str, source: str = "127.0.0.1") -> Reply:
        return metadata_request(self.port, token, path, source=source)

    def close(self) -> None:
        self.service.shutdown()
        self._thread.join(timeout=10)
