"""``rkt metadata-service`` as a process, and ``--mds-register`` on the command line.

Every service gets its own socket (in the test's temp dir) and a free port, since
other rkt tests run on this machine at the same time.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rkt_testing import AciBuilder, RktEnv, assert_one_line_error
from rkt_testing.metadata import (
    MetadataServiceProcess,
    metadata_request,
    register,
    registration_request,
)
from rkt_testing.plugin import needs_root
from rkt_testing.ports import free_port

UUID = "0f1e2d3c-4b5a-4697-8877-665544332211"
ENDED = "0f1e2d3c-4b5a-4697-8877-000000000000"


def manifests() -> tuple[dict[str, object], dict[str, dict[str, object]]]:
    pod = {"acVersion": "0.8.11", "acKind": "PodManifest", "annotations": [],
           "apps": [{"name": "app", "image": {"name": "example.com/app",
                                              "id": "sha512-" + "0" * 128}}]}
    return pod, {"app": {"acKind": "ImageManifest", "acVersion": "0.8.11",
                         "name": "example.com/app"}}


@pytest.fixture
def service(rkt_env: RktEnv, tmp_path: Path) -> Iterator[MetadataServiceProcess]:
    process = MetadataServiceProcess(rkt_env, tmp_path / "run" / "mds.sock")
    yield process
    process.close()


def running_pod(env: RktEnv, uuid: str) -> int:
    """A pod directory in ``run/`` locked as ``rkt run`` locks the pod it runs (the
    test process stands in for that rkt run); returns the fd holding the lock."""
    path = env.data_dir / "pods" / "run" / uuid
    path.mkdir(parents=True)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def test_serves_and_stops_cleanly(service: MetadataServiceProcess) -> None:
    service.start()
    pod, images = manifests()
    token = register(service.socket_path, UUID, "127.0.0.1", pod, images)
    reply = metadata_request(service.port, token, "pod/uuid")
    assert (reply.status, reply.body) == (200, UUID.encode())
    status, out, err = service.stop()
    assert status == 0, err
    assert out == "Metadata service stopped\n"
    assert not service.socket_path.exists()


def test_one_service_per_socket_and_port(service: MetadataServiceProcess, rkt_env: RktEnv,
                                         tmp_path: Path) -> None:
    service.start()
    same_socket = rkt_env.run("metadata-service", f"--socket={service.socket_path}",
                              f"--listen-port={free_port()}")
    assert_one_line_error(same_socket, "a metadata service is already listening on",
                          str(service.socket_path))
    same_port = rkt_env.run("metadata-service", f"--socket={tmp_path / 'other.sock'}",
                            f"--listen-port={service.port}")
    assert_one_line_error(same_port, f"cannot listen on port {service.port}")
    assert not (tmp_path / "other.sock").exists()
    assert_one_line_error(rkt_env.run("metadata-service", "--listen-port=70000"),
                          "invalid port")


def test_killed_service_restarts_with_the_running_pods_registrations(
    service: MetadataServiceProcess, rkt_env: RktEnv
) -> None:
    lock = running_pod(rkt_env, UUID)
    try:
        service.start()
        pod, images = manifests()
        token = register(service.socket_path, UUID, "127.0.0.1", pod, images)
        ended = register(service.socket_path, ENDED, "127.0.0.2", pod, images)
        service.kill()  # no clean-up: the socket file stays, nobody listens on it
        assert service.socket_path.exists()
        restarted = MetadataServiceProcess(rkt_env, service.socket_path, service.port)
        try:
            restarted.start()
            assert metadata_request(restarted.port, token, "pod/uuid").body == UUID.encode()
            # the pod with no running rkt behind it ended while the service was down
            assert metadata_request(restarted.port, ended, "pod/uuid",
                                    source="127.0.0.2").status == 403
        finally:
            restarted.close()
    finally:
        os.close(lock)


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None,
                    reason="needs systemd-socket-activate")
def test_socket_activation(rkt_env: RktEnv, tmp_path: Path) -> None:
    socket_path = tmp_path / "activated.sock"
    port = free_port()
    activator = subprocess.Popen(
        ["systemd-socket-activate", "-l", str(socket_path), RktEnv.rkt_binary(),
         *rkt_env.global_flags(), "metadata-service", f"--listen-port={port}",
         f"--socket={tmp_path / 'unused.sock'}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not socket_path.exists() and activator.poll() is None:
            assert time.monotonic() < deadline, "systemd-socket-activate made no socket"
            time.sleep(0.05)
        pod, images = manifests()
        token = register(socket_path, UUID, "127.0.0.1", pod, images)  # starts the service
        assert metadata_request(port, token, "pod/uuid").body == UUID.encode()
        assert not (tmp_path / "unused.sock").exists()
    finally:
        activator.terminate()
        activator.communicate(timeout=20)


def test_junk_on_the_socket_does_not_stop_the_service(service: MetadataServiceProcess) -> None:
    service.start()
    for junk in (b"\x16\x03\x01\x02\x00" + os.urandom(512), b"GET\r\n\r\n", b""):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(10)
            client.connect(str(service.socket_path))
            client.sendall(junk)
            client.shutdown(socket.SHUT_WR)
            client.recv(4096)
    reply = registration_request(service.socket_path, "PUT", f"/pods/{UUID}", {"ip": "x"})
    assert reply.status == 400
    assert service.process is not None and service.process.poll() is None
    pod, images = manifests()
    assert register(service.socket_path, UUID, "127.0.0.1", pod, images)


# -- rkt run --mds-register -------------------------------------------------------------
@pytest.fixture
def image(aci_builder: AciBuilder) -> Path:
    return aci_builder.build(busybox=True, exec_=["/bin/true"])


@needs_root
@pytest.mark.parametrize("net", ["none", "host"])
@pytest.mark.parametrize("command", ["run", "run-prepared"])
def test_mds_register_needs_a_private_network(rkt_env: RktEnv, image: Path, net: str,
                                              command: str) -> None:
    target = image if command == "run" else "0f1e2d3c"
    result = rkt_env.run("--insecure-options=image", command, "--mds-register", f"--net={net}",
                         target)
    assert_one_line_error(result, f"--mds-register flag does not work with --net={net}",
                          "private network")
    assert list((rkt_env.data_dir / "pods").glob("*/*")) == []


@needs_root
def test_mds_register_fails_cleanly_without_a_service(rkt_env: RktEnv, image: Path,
                                                      tmp_path: Path) -> None:
    missing = tmp_path / "no-service.sock"
    result = rkt_env.run("--insecure-options=image", "run", "--mds-register",
                         f"--mds-socket={missing}", "--net=default", image)
    assert_one_line_error(result, message=f"no metadata service listens on {missing} "
                                          "(start it with 'rkt metadata-service')")
    assert list((rkt_env.data_dir / "pods").glob("*/*")) == []
    stray = rkt_env.run("--insecure-options=image", "run", f"--mds-socket={missing}", image)
    assert_one_line_error(stray, "--mds-socket is only used with --mds-register")
