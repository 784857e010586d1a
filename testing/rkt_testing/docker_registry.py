"""Real Docker registries on loopback for tests and benchmarks.

:class:`RegistryServer` runs Debian's ``docker-registry`` (the Docker distribution
registry) on a free loopback port with a generated configuration: TLS from a
throw-away CA (:class:`TestCA`), and no authentication, htpasswd basic
authentication, or token authentication through :class:`TokenServer`, a small
loopback token service that signs RS256 JWTs the way Docker Hub's does. Images
are pushed with the real ``skopeo copy`` from ``docker-archive:`` tarballs that
:func:`write_docker_archive` builds with :mod:`tarfile`; :meth:`RegistryServer.push_blob`
and :meth:`RegistryServer.push_manifest` push hand-made documents (manifest lists,
odd media types) that skopeo would not write.

Nothing here touches the system's registry service or its configuration: every
process is started from a private directory and stopped by its own PID.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import http.server
import io
import json
import os
import shutil
import socket
import ssl
import subprocess
import tarfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rkt_testing.ports import free_port

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG_V1 = "application/vnd.docker.container.image.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()




# -- building images -------------------------------------------------------------------
@dataclass
class Entry:
    """One layer entry other than a plain file: a directory, link, whiteout or device."""

    type: bytes = tarfile.REGTYPE
    data: bytes = b""
    linkname: str = ""
    mode: int | None = None
    uid: int = 0
    gid: int = 0


def layer_tar(
    files: Mapping[str, bytes | str | Entry], *, mtime: int = 1_600_000_000
) -> bytes:
    """An uncompressed layer tar. Keys are paths without a leading slash, written in
    order; a ``str`` or ``bytes`` value is a regular file (``#!`` makes it executable),
    a path ending in ``/`` a directory. Parents are not added implicitly."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, value in files.items():
            entry = value if isinstance(value, Entry) else None
            if entry is None:
                body = value.encode() if isinstance(value, str) else value
                assert isinstance(body, bytes)
                if name.endswith("/"):
                    entry = Entry(tarfile.DIRTYPE, mode=0o755)
                else:
                    entry = Entry(data=body, mode=0o755 if body.startswith(b"#!") else 0o644)
            info = tarfile.TarInfo(name.rstrip("/") if name != "/" else ".")
            info.type = entry.type
            info.mtime = mtime
            info.uid, info.gid = entry.uid, entry.gid
            info.linkname = entry.linkname
            default_mode = 0o755 if entry.type in (tarfile.DIRTYPE, tarfile.SYMTYPE) else 0o644
            info.mode = default_mode if entry.mode is None else entry.mode
            if entry.type == tarfile.REGTYPE:
                info.size = len(entry.data)
                tar.addfile(info, io.BytesIO(entry.data))
            else:
                tar.addfile(info)
    return buffer.getvalue()


def busybox_layer(applets: Sequence[str] = ("sh", "echo", "cat", "ls", "env", "id", "test",
                                            "sleep", "true", "pwd", "stat")) -> bytes:
    """A layer with the host's static busybox as ``/bin/busybox`` and some applets."""
    files: dict[str, bytes | str | Entry] = {
        "bin/": "",
        "bin/busybox": Entry(data=Path("/bin/busybox").read_bytes(), mode=0o755),
    }
    for applet in applets:
        files[f"bin/{applet}"] = Entry(tarfile.SYMTYPE, linkname="busybox")
    files["etc/"] = ""
    files["etc/passwd"] = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"
    files["etc/group"] = "root:x:0:\nnogroup:x:65534:\n"
    files["tmp/"] = Entry(tarfile.DIRTYPE, mode=0o1777)
    return layer_tar(files)


def image_config(
    layers: Sequence[bytes],
    *,
    cmd: Sequence[str] | None = None,
    entrypoint: Sequence[str] | None = None,
    env: Sequence[str] | None = None,
    user: str = "",
    working_dir: str = "",
    exposed_ports: Sequence[str] = (),
    volumes: Sequence[str] = (),
    labels: Mapping[str, str] | None = None,
    architecture: str = "amd64",
    os_name: str = "linux",
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A Docker image config (``application/vnd.docker.container.image.v1+json``) for
    these uncompressed layers: their diff IDs are computed here."""
    container: dict[str, Any] = {
        "Env": list(env if env is not None else ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]),
        "Cmd": list(cmd) if cmd is not None else None,
        "Entrypoint": list(entrypoint) if entrypoint is not None else None,
        "User": user,
        "WorkingDir": working_dir,
        "Labels": dict(labels) if labels else None,
    }
    if exposed_ports:
        container["ExposedPorts"] = {port: {} for port in exposed_ports}
    if volumes:
        container["Volumes"] = {volume: {} for volume in volumes}
    config: dict[str, Any] = {
        "architecture": architecture,
        "os": os_name,
        "created": "2024-01-02T03:04:05.123456789Z",
        "author": "rkt tests",
        "config": container,
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(layer) for layer in layers]},
        "history": [{"created_by": f"layer {index}"} for index in range(len(layers))],
    }
    config.update(extra or {})
    return config


def write_docker_archive(
    path: Path, layers: Sequence[bytes | Path], config: Mapping[str, Any], repo_tag: str
) -> Path:
    """A ``docker save``-style tarball (``manifest.json``, config, layer tars) that
    ``skopeo copy docker-archive:PATH ...`` reads. Layers given as paths are streamed."""
    with tarfile.open(path, "w") as tar:
        config_bytes = json.dumps(config).encode()
        config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
        names = []
        for index, layer in enumerate(layers):
            name = f"layer{index}/layer.tar"
            names.append(name)
            if isinstance(layer, Path):
                tar.add(str(layer), name)
            else:
                _add(tar, name, layer)
        _add(tar, config_name, config_bytes)
        manifest = [{"Config": config_name, "RepoTags": [repo_tag], "Layers": names}]
        _add(tar, "manifest.json", json.dumps(manifest).encode())
    return path


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def compress_layer(layer: bytes, compression: str, *, oci: bool = False) -> tuple[bytes, str]:
    """A layer as a blob and its media type."""
    if compression == "gzip":
        import gzip

        return gzip.compress(layer, 6, mtime=0), OCI_LAYER_GZIP if oci else LAYER_GZIP
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdCompressor().compress(layer), OCI_LAYER_ZSTD
    if compression == "none":
        return layer, OCI_LAYER
    raise ValueError(f"unknown compression {compression!r}")


# -- TLS -----------------------------------------------------------------------------------
class TestCA:
    """A throw-away CA (trustme) and a server certificate for localhost/127.0.0.1.

    ``bundle`` is the CA in PEM for ``REQUESTS_CA_BUNDLE``; ``cert_dir`` holds it as
    ``ca.crt`` for skopeo's ``--dest-cert-dir``.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path) -> None:
        import trustme

        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.ca = trustme.CA()
        cert = self.ca.issue_cert("localhost", "127.0.0.1")
        self.bundle = directory / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.bundle))
        self.cert_dir = directory / "certs.d"
        self.cert_dir.mkdir(exist_ok=True)
        shutil.copy(self.bundle, self.cert_dir / "ca.crt")
        self.server_cert = directory / "server.pem"
        self.server_key = directory / "server.key"
        cert.private_key_pem.write_to_path(str(self.server_key))
        with open(self.server_cert, "wb") as out:
            for blob in cert.cert_chain_pems:
                out.write(blob.bytes())

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.server_cert, self.server_key)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.bundle))


# -- token service -----------------------------------------------------------------------
def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """A loopback token service for the registry's ``auth: token`` mode.

    ``GET /token?service=S&scope=repository:NAME:ACTIONS`` answers ``{"token": JWT}``.
    When ``users`` is given, requests need matching basic credentials (else 401); with
    ``anonymous_pull`` a request without credentials still gets a pull-only token.
    ``requests`` records every request's path and whether it carried credentials.
    """

    def __init__(
        self,
        directory: Path,
        ca: TestCA,
        *,
        users: Mapping[str, str] | None = None,
        anonymous_pull: bool = False,
        service: str = "rkt-test-registry",
        issuer: str = "rkt-test-token-issuer",
    ) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        directory.mkdir(parents=True, exist_ok=True)
        self.users = dict(users or {})
        self.anonymous_pull = anonymous_pull
        self.service = service
        self.issuer = issuer
        self.requests: list[tuple[str, bool]] = []
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rkt test token signer")])
        now = time.time()
        import datetime

        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(datetime.datetime.fromtimestamp(now - 3600, datetime.UTC))
            .not_valid_after(datetime.datetime.fromtimestamp(now + 86400, datetime.UTC))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self._cert_der = cert.public_bytes(serialization.Encoding.DER)
        self.root_bundle = directory / "token-signer.pem"
        self.root_bundle.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self._ca = ca
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    def token(self, scopes: Sequence[str], subject: str) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            granted = [a for a in actions.split(",") if a]
            if not subject:
                granted = [a for a in granted if a == "pull"]
            access.append({"type": kind, "name": name, "actions": granted})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(self._cert_der).decode()]}
        claims = {
            "iss": self.issuer, "sub": subject, "aud": self.service, "exp": now + 600,
            "nbf": now - 60, "iat": now, "jti": uuid.uuid4().hex, "access": access,
        }
        signing_input = (
            _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
        )
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + _b64url(signature)

    def start(self) -> TokenServer:
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                del format, args

            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(url.query)
                auth = self.headers.get("Authorization", "")
                outer.requests.append((self.path, bool(auth)))
                subject = ""
                if auth.startswith("Basic "):
                    user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                    if outer.users.get(user) != password:
                        self._reply(401, {"errors": [{"code": "UNAUTHORIZED"}]})
                        return
                    subject = user
                elif outer.users and not outer.anonymous_pull:
                    self._reply(401, {"errors": [{"code": "UNAUTHORIZED"}]})
                    return
                if url.path != "/token" or query.get("service") != [outer.service]:
                    self._reply(400, {"errors": [{"code": "BAD_REQUEST"}]})
                    return
                token = outer.token(query.get("scope", []), subject)
                self._reply(200, {"token": token, "access_token": token, "expires_in": 600})

            def _reply(self, status: int, body: Mapping[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                if status == 401:
                    self.send_header("WWW-Authenticate", 'Basic realm="token"')
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.socket = self._ca.server_context().wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"https://localhost:{server.server_address[1]}/token"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None


# -- the registry ----------------------------------------------------------------------
@dataclass
class RegistryServer:
    """``docker-registry serve`` on ``localhost:<free port>`` with a private config.

    ``auth`` is ``None`` (open), ``"htpasswd"`` (basic auth for ``users``, bcrypt
    entries) or ``"token"`` (Bearer tokens from ``token_server``). ``tls=False``
    serves plain HTTP.
    """

    directory: Path
    ca: TestCA | None
    auth: str | None = None
    users: Mapping[str, str] = field(default_factory=dict)
    token_server: TokenServer | None = None
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def tls(self) -> bool:
        return self.ca is not None

    @property
    def host(self) -> str:
        """``localhost:PORT``, as it appears in ``docker://`` references."""
        return f"localhost:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    @property
    def storage(self) -> Path:
        return self.directory / "storage"

    def start(self, *, timeout: float = 20) -> RegistryServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.storage.mkdir(exist_ok=True)
        self.port = self.port or free_port()
        http_section: dict[str, Any] = {
            "addr": f"127.0.0.1:{self.port}", "secret": uuid.uuid4().hex,
            "headers": {"X-Content-Type-Options": ["nosniff"]},
        }
        if self.ca is not None:
            http_section["tls"] = {
                "certificate": str(self.ca.server_cert), "key": str(self.ca.server_key),
            }
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "error", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": http_section,
        }
        if self.auth == "htpasswd":
            import bcrypt

            htpasswd = self.directory / "htpasswd"
            htpasswd.write_text("".join(
                f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()}\n"
                for user, password in self.users.items()
            ))
            config["auth"] = {"htpasswd": {"realm": "rkt-test", "path": str(htpasswd)}}
        elif self.auth == "token":
            assert self.token_server is not None and self.token_server.url
            config["auth"] = {"token": {
                "realm": self.token_server.url, "service": self.token_server.service,
                "issuer": self.token_server.issuer,
                "rootcertbundle": str(self.token_server.root_bundle),
            }}
        # JSON is YAML: no YAML writer needed for the registry's config file.
        config_path = self.directory / "config.yml"
        config_path.write_text(json.dumps(config, indent=1))
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        log = open(self.directory / "registry.log", "ab")  # noqa: SIM115 (owned by the child)
        try:
            self.process = subprocess.Popen(
                ["docker-registry", "serve", str(config_path)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            )
        finally:
            log.close()
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {self.log_tail()}")
            try:
                status, _, _ = self.request("GET", "/v2/", auth=False)
                if status in (200, 401):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"docker-registry did not start: {self.log_tail()}")
            time.sleep(0.05)

    def log_tail(self) -> str:
        try:
            return (self.directory / "registry.log").read_text()[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def __enter__(self) -> RegistryServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- pushing -------------------------------------------------------------------------
    def credentials(self) -> tuple[str, str] | None:
        return next(iter(self.users.items()), None)

    def push_archive(
        self, archive: Path, reference: str, *, extra_args: Sequence[str] = ()
    ) -> None:
        """``skopeo copy docker-archive:ARCHIVE docker://HOST/REFERENCE``."""
        command = ["skopeo", "copy", "--quiet", "--insecure-policy"]
        if self.ca is not None:
            command.append(f"--dest-cert-dir={self.ca.cert_dir}")
        else:
            command.append("--dest-tls-verify=false")
        creds = self.credentials()
        if creds is not None:
            command.append(f"--dest-creds={creds[0]}:{creds[1]}")
        command += [*extra_args, f"docker-archive:{archive}", f"docker://{self.host}/{reference}"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            raise RuntimeError(f"skopeo copy failed: {result.stderr.strip()}")

    def push_image(
        self,
        reference: str,
        layers: Sequence[bytes],
        config: Mapping[str, Any],
        work_dir: Path,
        *,
        extra_args: Sequence[str] = (),
    ) -> None:
        """Build a docker-archive of ``layers`` and ``config`` and push it with skopeo."""
        work_dir.mkdir(parents=True, exist_ok=True)
        archive = work_dir / f"{uuid.uuid4().hex}.tar"
        write_docker_archive(archive, layers, config, "rkt-test/image:latest")
        try:
            self.push_archive(archive, reference, extra_args=extra_args)
        finally:
            archive.unlink()

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        auth: bool = True,
    ) -> tuple[int, dict[str, str], bytes]:
        """One HTTP request to the registry (basic credentials when it has users)."""
        all_headers = dict(headers or {})
        creds = self.credentials()
        if auth and creds is not None and self.auth == "htpasswd":
            token = base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
            all_headers["Authorization"] = f"Basic {token}"
        connection: http.client.HTTPConnection
        if self.ca is not None:
            connection = http.client.HTTPSConnection(
                "localhost", self.port, context=self.ca.client_context(), timeout=30
            )
        else:
            connection = http.client.HTTPConnection("localhost", self.port, timeout=30)
        try:
            connection.request(method, path, body=body, headers=all_headers)
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, (
                response.read()
            )
        finally:
            connection.close()

    def push_blob(self, repository: str, data: bytes) -> str:
        """Upload ``data`` as a blob of ``repository`` (monolithic upload); its digest."""
        digest = sha256_digest(data)
        status, headers, body = self.request("POST", f"/v2/{repository}/blobs/uploads/")
        if status != 202:
            raise RuntimeError(f"blob upload refused: {status} {body!r}")
        location = headers["location"]
        split = urllib.parse.urlsplit(location)
        separator = "&" if split.query else "?"
        target = f"{split.path}?{split.query}{separator}digest={digest}".replace("?&", "?")
        status, _, body = self.request(
            "PUT", target, body=data, headers={"Content-Type": "application/octet-stream"}
        )
        if status != 201:
            raise RuntimeError(f"blob upload failed: {status} {body!r}")
        return digest

    def push_manifest(
        self, repository: str, reference: str, document: bytes, media_type: str
    ) -> str:
        status, _, body = self.request(
            "PUT", f"/v2/{repository}/manifests/{reference}", body=document,
            headers={"Content-Type": media_type},
        )
        if status != 201:
            raise RuntimeError(f"manifest upload failed: {status} {body!r}")
        return sha256_digest(document)

    def push_layers(
        self,
        reference: str,
        layers: Sequence[bytes],
        config: Mapping[str, Any],
        *,
        compression: str = "gzip",
        oci: bool = False,
    ) -> tuple[str, int]:
        """Push an image by hand: ``layers`` (uncompressed tars) compressed with
        ``compression`` (``gzip``, ``zstd`` or ``none``), a Docker schema 2 or an OCI
        manifest. Returns the manifest's digest and size."""
        repository, _, tag = reference.rpartition(":")
        config_bytes = json.dumps(config).encode()
        config_type = OCI_CONFIG if oci else CONFIG_V1
        descriptors = []
        for layer in layers:
            blob, media_type = compress_layer(layer, compression, oci=oci)
            descriptors.append({"mediaType": media_type, "size": len(blob),
                                "digest": self.push_blob(repository, blob)})
        manifest_type = OCI_MANIFEST if oci else MANIFEST_V2
        manifest = {
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": {"mediaType": config_type, "size": len(config_bytes),
                       "digest": self.push_blob(repository, config_bytes)},
            "layers": descriptors,
        }
        body = json.dumps(manifest).encode()
        return self.push_manifest(repository, tag, body, manifest_type), len(body)

    def push_index(
        self, reference: str, entries: Sequence[tuple[str, int, Mapping[str, str]]],
        *, oci: bool = False,
    ) -> str:
        """Push a manifest list (or OCI index) of ``(digest, size, platform)`` entries
        already pushed to the same repository."""
        repository, _, tag = reference.rpartition(":")
        media_type = OCI_INDEX if oci else MANIFEST_LIST
        index = {
            "schemaVersion": 2,
            "mediaType": media_type,
            "manifests": [
                {"mediaType": OCI_MANIFEST if oci else MANIFEST_V2, "digest": digest,
                 "size": size, "platform": dict(platform)}
                for digest, size, platform in entries
            ],
        }
        return self.push_manifest(repository, tag, json.dumps(index).encode(), media_type)

    def manifest_digest(self, repository: str, tag: str) -> str:
        """The digest a tag points to, read from the registry's storage."""
        link = (self.storage / "docker/registry/v2/repositories" / repository / "_manifests"
                / "tags" / tag / "current" / "link")
        return link.read_text().strip()

    def blob_file(self, digest: str) -> Path:
        """Where the registry keeps a blob's bytes (tests tamper with it)."""
        hexdigest = digest.split(":", 1)[1]
        return (self.storage / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest
                / "data")


class DroppingProxy:
    """A loopback TCP proxy that cuts connections in the middle of a response.

    Every connection is forwarded to ``127.0.0.1:target_port``; once a connection has
    sent the client more than ``cut_after`` bytes it is closed abruptly, for the first
    ``times`` connections that get that far (every one when ``times`` is None).
    ``cuts`` counts the connections cut so far.
    """

    def __init__(self, target_port: int, *, cut_after: int, times: int | None = None) -> None:
        self.target_port = target_port
        self.cut_after = cut_after
        self.times = times
        self.cuts = 0
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port: int = self._listener.getsockname()[1]
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def host(self) -> str:
        return f"localhost:{self.port}"

    def start(self) -> DroppingProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._listener.close()
        self._thread.join(timeout=5)

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _should_cut(self) -> bool:
        with self._lock:
            if self.times is not None and self.cuts >= self.times:
                return False
            self.cuts += 1
            return True

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=30)
        except OSError:
            client.close()
            return
        done = threading.Event()

        def upload() -> None:
            try:
                while data := client.recv(65536):
                    upstream.sendall(data)
            except OSError:
                pass
            finally:
                done.set()

        threading.Thread(target=upload, daemon=True).start()
        sent = 0
        try:
            while data := upstream.recv(65536):
                if sent + len(data) > self.cut_after and self._should_cut():
                    client.sendall(data[: max(0, self.cut_after - sent)])
                    # RST rather than FIN: the client sees a reset connection mid-body.
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                      b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    break
                client.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            client.close()
            upstream.close()
