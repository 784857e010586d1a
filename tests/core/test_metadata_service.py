"""The metadata service over real sockets: a unix registration socket in a temp
dir and the public port on an ephemeral loopback port.

Pods are stood in for by the test process: pod A's requests come from
127.0.0.1 and pod B's from 127.0.0.2 (both loopback), which is how the service
tells pods apart on their private network.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rkt.metadata import service as service_module
from rkt.metadata.registrations import RegistrationStore
from rkt_testing.metadata import (
    InProcessMetadataService,
    metadata_request,
    register,
    registration_request,
)

UUID_A = "6f4c8a4e-1b2d-4c3e-9f00-aaaaaaaaaaaa"
UUID_B = "6f4c8a4e-1b2d-4c3e-9f00-bbbbbbbbbbbb"
IMAGE_ID = "sha512-" + "ab" * 64


def pod_manifest(app: str = "web", annotations: Any = None, **extra: Any) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "acVersion": "0.8.11", "acKind": "PodManifest",
        "apps": [{"name": app, "image": {"name": "example.com/web", "id": IMAGE_ID},
                  "app": {"exec": ["/bin/web"], "user": "0", "group": "0"},
                  "annotations": [{"name": "zeta", "value": "from-pod"},
                                  {"name": "example.com/new", "value": "pod-only"}]}],
        "volumes": None, "isolators": None, "ports": None,
    }
    if annotations is not None or "no_annotations" not in extra:
        manifest["annotations"] = annotations
    return manifest


def image_manifest() -> dict[str, Any]:
    return {"acKind": "ImageManifest", "acVersion": "0.8.11", "name": "example.com/web",
            "labels": [{"name": "version", "value": "1.0.0"}],
            "annotations": [{"name": "zeta", "value": "from-image"},
                            {"name": "alpha", "value": "image-only"}]}


class Service(InProcessMetadataService):
    def register(self, uuid: str, ip: str, manifest: dict[str, Any] | None = None) -> str:
        return register(self.socket_path, uuid, ip, manifest or pod_manifest(),
                        {"web": image_manifest()})


@pytest.fixture
def mds(tmp_path: Path) -> Iterator[Service]:
    service = Service(tmp_path)
    yield service
    service.close()
    assert not service.socket_path.exists(), "the service leaves no socket behind"


def test_pod_metadata_exact_bodies_and_content_types(mds: Service) -> None:
    token = mds.register(UUID_A, "127.0.0.1", pod_manifest(
        annotations=[{"name": "b", "value": "2"}, {"name": "a", "value": "1"}]))
    uuid = mds.get(token, "pod/uuid")
    assert (uuid.status, uuid.content_type, uuid.body) == (
        200, "text/plain; charset=us-ascii", UUID_A.encode())  # no newline
    annotations = mds.get(token, "pod/annotations")
    assert annotations.content_type == "application/json"
    assert annotations.body == b'[{"name":"b","value":"2"},{"name":"a","value":"1"}]'
    one = mds.get(token, "pod/annotations/a")
    assert (one.status, one.body) == (200, b"1")
    assert mds.get(token, "pod/annotations/missing").status == 404
    manifest = mds.get(token, "pod/manifest")
    assert manifest.content_type == "application/json"
    assert list(manifest.json()) == list(pod_manifest(annotations=[]))  # key order kept
    assert manifest.json()["volumes"] is None


@pytest.mark.parametrize(("annotations", "expected"), [([], b"[]"), (None, b"null")])
def test_null_and_empty_annotations_stay_distinct(mds: Service, annotations: Any,
                                                  expected: bytes) -> None:
    token = mds.register(UUID_A, "127.0.0.1", pod_manifest(annotations=annotations))
    assert mds.get(token, "pod/annotations").body == expected


def test_app_metadata_merges_pod_annotations_over_the_image(mds: Service) -> None:
    token = mds.register(UUID_A, "127.0.0.1")
    merged = mds.get(token, "apps/web/annotations")
    assert merged.content_type == "application/json"
    assert merged.json() == [{"name": "zeta", "value": "from-pod"},
                             {"name": "alpha", "value": "image-only"},
                             {"name": "example.com/new", "value": "pod-only"}]
    by_name = mds.get(token, "apps/web/annotations/example.com/new")
    assert (by_name.status, by_name.body) == (200, b"pod-only")
    image_id = mds.get(token, "apps/web/image/id")
    assert (image_id.content_type, image_id.body) == ("text/plain; charset=us-ascii",
                                                      IMAGE_ID.encode())
    assert mds.get(token, "apps/web/image/manifest").json() == image_manifest()
    assert mds.get(token, "apps/other/image/id").status == 404
    assert mds.get(token, "apps/web/nothing").status == 404


def test_a_pod_reads_only_its_own_metadata(mds: Service) -> None:
    token_a = mds.register(UUID_A, "127.0.0.1")
    token_b = mds.register(UUID_B, "127.0.0.2")
    assert mds.get(token_b, "pod/uuid", source="127.0.0.2").body == UUID_B.encode()
    # B knows A's token (say it leaked): from B's address it is refused
    stolen = mds.get(token_a, "pod/manifest", source="127.0.0.2")
    assert stolen.status == 403
    assert UUID_A.encode() not in stolen.body and b"acKind" not in stolen.body
    # A's address with B's token, or an unknown token: refused the same way
    assert mds.get(token_b, "pod/manifest", source="127.0.0.1").status == 403
    assert mds.get("x" * 32, "pod/uuid").status == 403
    assert mds.get("", "pod/uuid").status == 403


def test_hmac_sign_and_verify(mds: Service) -> None:
    token_a = mds.register(UUID_A, "127.0.0.1")
    token_b = mds.register(UUID_B, "127.0.0.2")
    signed = metadata_request(mds.port, token_a, "pod/hmac/sign", form={"content": "hello"})
    assert signed.status == 200 and signed.content_type == "text/plain; charset=us-ascii"
    signature = signed.text
    assert len(base64.b64decode(signature, validate=True)) == 64  # SHA-512

    def verify(form: dict[str, str], token: str = token_b, source: str = "127.0.0.2") -> int:
        return metadata_request(mds.port, token, "pod/hmac/verify", source=source,
                                form=form).status

    # another pod verifies A's signature with A's UUID
    assert verify({"content": "hello", "signature": signature, "uuid": UUID_A}) == 200
    assert verify({"content": "hello", "signature": signature, "uid": UUID_A}) == 200
    forged = bytearray(base64.b64decode(signature))
    forged[0] ^= 1
    assert verify({"content": "hello", "signature": base64.b64encode(forged).decode(),
                   "uuid": UUID_A}) == 403
    assert verify({"content": "hellp", "signature": signature, "uuid": UUID_A}) == 403
    assert verify({"content": "hello", "signature": signature, "uuid": UUID_B}) == 403
    assert verify({"content": "hello", "signature": "not base64!", "uuid": UUID_A}) == 403
    assert verify({"content": "hello", "signature": signature,
                   "uuid": "00000000-0000-4000-8000-000000000000"}) == 403
    assert verify({"content": "hello", "signature": signature}) == 400
    # B signing the same content gets another signature (a per-pod key)
    other = metadata_request(mds.port, token_b, "pod/hmac/sign", source="127.0.0.2",
                             form={"content": "hello"}).text
    assert other != signature
    # a shell's unencoded form (wget --post-data "...signature=$SIG") turns + into space
    raw = f"content=hello&signature={signature}&uuid={UUID_A}"
    assert metadata_request(mds.port, token_a, "pod/hmac/verify", raw_form=raw).status == 200
    # ... also where the signature starts (or ends) with a "+"
    for attempt in range(2000):
        content = f"content {attempt}"
        leading = metadata_request(mds.port, token_a, "pod/hmac/sign",
                                   form={"content": content}).text
        if leading.startswith("+"):
            break
    else:
        pytest.fail("no signature starting with + in 2000 tries")
    raw = f"content={content}&signature={leading}&uuid={UUID_A}"
    assert metadata_request(mds.port, token_a, "pod/hmac/verify", raw_form=raw).status == 200
    assert metadata_request(mds.port, token_a, "pod/hmac/sign", form={}).status == 400
    assert mds.get(token_a, "pod/hmac/sign").status == 405


def test_junk_on_the_registration_socket_is_answered_and_survived(mds: Service) -> None:
    def put(document: Any, uuid: str = UUID_A) -> tuple[int, str]:
        reply = registration_request(mds.socket_path, "PUT", f"/pods/{uuid}", document)
        return reply.status, reply.text

    assert put(None) == (400, "400 Bad Request: the registration is not JSON\n")
    assert put({"ip": "127.0.0.1"}, uuid="not-a-uuid")[1].endswith("invalid pod UUID "
                                                                    "'not-a-uuid'\n")
    assert "invalid pod address" in put({"ip": "1.2.3", "manifest": pod_manifest()})[1]
    assert "must be a pod manifest" in put({"ip": "127.0.0.1", "manifest": [1]})[1]
    assert 'app "web" has no image manifest' in put(
        {"ip": "127.0.0.1", "manifest": pod_manifest(), "apps": {}})[1]
    bad_annotations = pod_manifest(annotations=[{"name": 1}])
    assert "annotations are malformed" in put(
        {"ip": "127.0.0.1", "manifest": bad_annotations, "apps": {"web": image_manifest()}})[1]
    assert registration_request(mds.socket_path, "GET", "/pods").status == 405
    assert registration_request(mds.socket_path, "DELETE", f"/pods/{UUID_B}").status == 404
    assert registration_request(mds.socket_path, "PUT", "/elsewhere", {}).status == 404
    for junk in (os.urandom(4096), b"\x00\xff garbage\r\n\r\n", b"PUT /pods/x HTTP/1.1\r\n"
                 b"Content-Length: 999999999\r\n\r\n", b"PUT /pods/x HTTP/1.1\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(10)
            client.connect(str(mds.socket_path))
            client.sendall(junk)
            client.shutdown(socket.SHUT_WR)
            answer = client.recv(65536)
        assert answer.startswith(b"HTTP/1.") and b" 4" in answer.split(b"\r\n")[0], answer
    assert len(mds.store) == 0
    token = mds.register(UUID_A, "127.0.0.1")  # and it still works
    assert mds.get(token, "pod/uuid").status == 200


def test_unregistered_pods_and_reused_addresses(mds: Service) -> None:
    token_a = mds.register(UUID_A, "127.0.0.1")
    # B gets the address A had (A is gone, its IP was given again): A's token is void
    token_b = mds.register(UUID_B, "127.0.0.1")
    assert mds.get(token_a, "pod/uuid").status == 403
    assert mds.get(token_b, "pod/uuid").body == UUID_B.encode()
    assert registration_request(mds.socket_path, "DELETE", f"/pods/{UUID_B}").status == 204
    assert mds.get(token_b, "pod/uuid").status == 403
    assert list(mds.state_dir.iterdir()) == []


def test_registrations_are_kept_on_disk_for_a_restart(mds: Service) -> None:
    token = mds.register(UUID_A, "127.0.0.1")
    saved = mds.state_dir / f"{UUID_A}.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600  # it holds the token and the key
    assert json.loads(saved.read_text())["token"] == token
    again = RegistrationStore(mds.state_dir)
    assert again.load(keep=lambda uuid: True) == [UUID_A]
    restored = again.by_token(token)
    assert restored is not None and restored == mds.store.by_uuid(UUID_A)
    # a pod that ended while the service was down is dropped, its file too
    assert RegistrationStore(mds.state_dir).load(keep=lambda uuid: False) == []
    assert not saved.exists()


def test_idle_connections_cost_a_bounded_number_of_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "MAX_CONNECTIONS", 4)
    mds = Service(tmp_path)
    try:
        token = mds.register(UUID_A, "127.0.0.1")
        idle = [socket.create_connection(("127.0.0.1", mds.port)) for _ in range(4)]
        try:
            with socket.create_connection(("127.0.0.1", mds.port)) as extra:
                extra.settimeout(10)
                extra.sendall(b"GET / HTTP/1.1\r\n\r\n")
                assert extra.recv(100) == b""  # closed at once, unanswered
        finally:
            for connection in idle:
                connection.close()
        for _ in range(200):  # the slots come back as the idle connections end
            try:
                if mds.get(token, "pod/uuid").status == 200:
                    break
            except (ConnectionError, http.client.HTTPException):
                time.sleep(0.05)
        assert mds.get(token, "pod/uuid").body == UUID_A.encode()
    finally:
        mds.close()
