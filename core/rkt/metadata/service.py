"""``rkt metadata-service``: the registration socket and the public HTTP port.

Both are the standard library's threading HTTP server: a request costs a thread
and a dictionary lookup, so answers take well under a millisecond, and a slow
or broken client holds only its own thread (and only until ``REQUEST_TIMEOUT``).
Whatever a client sends, the handlers answer with a status and a one-line
reason; an unexpected exception becomes a 500 for that request, never the end
of the service.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import stat
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from rkt.errors import MetadataError
from rkt.metadata.registrations import (
    Registration,
    RegistrationError,
    RegistrationStore,
    new_registration,
    normalise_ip,
)

LOG = logging.getLogger(__name__)

#: seconds a client may take to send its request
REQUEST_TIMEOUT = 10
#: the largest request body accepted (a pod manifest with its image manifests)
MAX_BODY = 4 << 20
#: connections served at once on each door; more are closed at once, so a pod that
#: opens thousands costs a bounded number of threads
MAX_CONNECTIONS = 256
#: systemd's first passed file descriptor (sd_listen_fds(3))
LISTEN_FDS_START = 3

JSON = "application/json"
ASCII = "text/plain; charset=us-ascii"
TEXT = "text/plain; charset=utf-8"


class _Handler(BaseHTTPRequestHandler):
    """What both doors share: bounded bodies, one-line answers, no crash."""

    server: _Server
    protocol_version = "HTTP/1.1"
    default_request_version = "HTTP/1.0"  # so that even junk gets a status line
    timeout = REQUEST_TIMEOUT
    error_content_type = TEXT
    error_message_format = "%(code)d %(message)s: %(explain)s\n"

    def log_message(self, format: str, *args: Any) -> None:
        LOG.debug("%s: " + format, self.server.name, *args)

    def reply(self, status: HTTPStatus, body: bytes | str = b"",
              content_type: str = TEXT) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def refuse(self, status: HTTPStatus, reason: str) -> None:
        self.close_connection = True
        self.reply(status, f"{int(status)} {status.phrase}: {reason}\n")

    def body(self) -> bytes | None:
        """The request body, or None after refusing it (missing length, too large)."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self.refuse(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length")
            return None
        try:
            length = int(self.headers.get("Content-Length") or "0")
        except ValueError:
            self.refuse(HTTPStatus.BAD_REQUEST, "invalid Content-Length")
            return None
        if length < 0 or length > MAX_BODY:
            self.refuse(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"bodies are limited to {MAX_BODY}")
            return None
        return self.rfile.read(length)

    def dispatch(self, method: Callable[[], None]) -> None:
        try:
            method()
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception:
            LOG.exception("%s: %s %s failed", self.server.name, self.command, self.path)
            try:
                self.refuse(HTTPStatus.INTERNAL_SERVER_ERROR, "the request failed")
            except OSError:
                self.close_connection = True


class RegistrationHandler(_Handler):
    """The registration socket: ``PUT /pods/<uuid>`` and ``DELETE /pods/<uuid>``."""

    def address_string(self) -> str:
        return "registration client"  # unix socket peers have no address

    def do_PUT(self) -> None:
        self.dispatch(self._register)

    def do_DELETE(self) -> None:
        self.dispatch(self._unregister)

    def do_GET(self) -> None:
        self.refuse(HTTPStatus.METHOD_NOT_ALLOWED, "register with PUT /pods/<uuid>")

    do_POST = do_GET

    def _uuid(self) -> str | None:
        parts = urlsplit(self.path).path.strip("/").split("/")
        if len(parts) != 2 or parts[0] != "pods":
            self.refuse(HTTPStatus.NOT_FOUND, "the registration paths are /pods/<uuid>")
            return None
        return parts[1]

    def _register(self) -> None:
        uuid = self._uuid()
        body = self.body() if uuid is not None else None
        if uuid is None or body is None:
            return
        try:
            document = json.loads(body)
        except ValueError:
            self.refuse(HTTPStatus.BAD_REQUEST, "the registration is not JSON")
            return
        try:
            registration = new_registration(uuid, document)
        except RegistrationError as exc:
            self.refuse(HTTPStatus.BAD_REQUEST, str(exc))
            return
        replaced = self.server.store.add(registration)
        for other in replaced:
            LOG.info("pod %s had address %s: its registration is replaced", other,
                     registration.ip)
        LOG.info("registered pod %s at %s", uuid, registration.ip)
        answer = {"token": registration.token, "port": self.server.public_port}
        self.reply(HTTPStatus.CREATED, json.dumps(answer), JSON)

    def _unregister(self) -> None:
        uuid = self._uuid()
        if uuid is None:
            return
        if not self.server.store.remove(uuid):
            self.refuse(HTTPStatus.NOT_FOUND, f"pod {uuid} is not registered")
            return
        LOG.info("unregistered pod %s", uuid)
        self.reply(HTTPStatus.NO_CONTENT)


class PublicHandler(_Handler):
    """The pods' door: ``/<token>/acMetadata/v1/...`` (appc-spec/ace.md)."""

    def do_GET(self) -> None:
        self.dispatch(lambda: self._serve("GET"))

    def do_POST(self) -> None:
        self.dispatch(lambda: self._serve("POST"))

    def do_HEAD(self) -> None:
        self.dispatch(lambda: self._serve("GET"))

    def do_PUT(self) -> None:
        self.refuse(HTTPStatus.METHOD_NOT_ALLOWED, "the metadata service is read-only")

    do_DELETE = do_PUT

    def _pod(self, token: str) -> Registration | None:
        """The pod this request comes from: its token *and* its address must match."""
        registration = self.server.store.by_token(token)
        try:
            address = normalise_ip(self.client_address[0])
        except ValueError:
            address = ""
        if registration is None or registration.ip != address:
            # one answer for both, so the port tells nobody which tokens exist
            self.refuse(HTTPStatus.FORBIDDEN, "no pod registered with this token at this "
                        "address")
            return None
        return registration

    def _serve(self, method: str) -> None:
        token, _, rest = urlsplit(self.path).path.lstrip("/").partition("/")
        pod = self._pod(unquote(token))
        if pod is None:
            return
        prefix = "acMetadata/v1/"
        if not rest.startswith(prefix):
            self.refuse(HTTPStatus.NOT_FOUND, "metadata is under acMetadata/v1/")
            return
        path = [unquote(part) for part in rest[len(prefix):].rstrip("/").split("/")]
        if path[:2] == ["pod", "hmac"] and len(path) == 3 and path[2] in ("sign", "verify"):
            if method != "POST":
                self.refuse(HTTPStatus.METHOD_NOT_ALLOWED, f"POST a form to hmac/{path[2]}")
            elif path[2] == "sign":
                self._sign(pod)
            else:
                self._verify()
            return
        if method != "GET":
            self.refuse(HTTPStatus.METHOD_NOT_ALLOWED, "metadata is read with GET")
            return
        if path[0] == "pod":
            self._pod_entry(pod, path[1:])
        elif path[0] == "apps" and len(path) >= 3:
            self._app_entry(pod, path[1], path[2:])
        else:
            self.refuse(HTTPStatus.NOT_FOUND, "no such metadata")

    def _json(self, value: Any) -> None:
        self.reply(HTTPStatus.OK, json.dumps(value, separators=(",", ":")), JSON)

    def _annotation(self, annotations: list[dict[str, Any]] | None, name: str,
                    owner: str) -> None:
        for annotation in annotations or []:
            if annotation["name"] == name:
                self.reply(HTTPStatus.OK, annotation["value"], TEXT)
                return
        self.refuse(HTTPStatus.NOT_FOUND, f"{owner} has no annotation {name!r}")

    def _pod_entry(self, pod: Registration, path: list[str]) -> None:
        if path == ["uuid"]:
            self.reply(HTTPStatus.OK, pod.uuid, ASCII)
        elif path == ["manifest"]:
            self._json(pod.manifest)
        elif path == ["annotations"]:
            # exactly the manifest's: null (or absent) and [] stay distinct
            self._json(pod.manifest.get("annotations"))
        elif len(path) >= 2 and path[0] == "annotations":
            self._annotation(pod.manifest.get("annotations"), "/".join(path[1:]), "the pod")
        else:
            self.refuse(HTTPStatus.NOT_FOUND, "no such pod metadata")

    def _app_entry(self, pod: Registration, name: str, path: list[str]) -> None:
        runtime_app = pod.runtime_app(name)
        if runtime_app is None:
            self.refuse(HTTPStatus.NOT_FOUND, f"the pod has no app {name!r}")
        elif path == ["image", "manifest"]:
            self._json(pod.image_manifests[name])
        elif path == ["image", "id"]:
            self.reply(HTTPStatus.OK, runtime_app["image"]["id"], ASCII)
        elif path == ["annotations"]:
            self._json(pod.app_annotations(name))
        elif len(path) >= 2 and path[0] == "annotations":
            self._annotation(pod.app_annotations(name), "/".join(path[1:]), f"app {name!r}")
        else:
            self.refuse(HTTPStatus.NOT_FOUND, "no such app metadata")

    def _form(self) -> dict[str, str] | None:
        body = self.body()
        if body is None:
            return None
        kind = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if kind not in ("", "application/x-www-form-urlencoded"):
            self.refuse(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                        "POST an application/x-www-form-urlencoded form")
            return None
        try:
            return dict(parse_qsl(body.decode(), keep_blank_values=True, errors="strict"))
        except (UnicodeDecodeError, ValueError):
            self.refuse(HTTPStatus.BAD_REQUEST, "the form is not valid UTF-8 form data")
            return None

    def _sign(self, pod: Registration) -> None:
        form = self._form()
        if form is None:
            return
        if "content" not in form:
            self.refuse(HTTPStatus.BAD_REQUEST, 'the form has no "content"')
            return
        signature = base64.b64encode(pod_hmac(pod.hmac_key, form["content"].encode()))
        self.reply(HTTPStatus.OK, signature, ASCII)

    def _verify(self) -> None:
        form = self._form()
        if form is None:
            return
        uuid = form.get("uuid", form.get("uid"))  # "uid" is what rkt 1.x read
        missing = [f for f, v in (("content", form.get("content")), ("uuid", uuid),
                                  ("signature", form.get("signature"))) if v is None]
        if missing:
            self.refuse(HTTPStatus.BAD_REQUEST, f"the form has no {', '.join(missing)}")
            return
        signer = self.server.store.by_uuid(str(uuid).strip().lower())
        # base64 has no spaces: a space is a "+" that an unencoded form turned into one
        text = str(form["signature"]).replace(" ", "+").strip()
        try:
            signature = base64.b64decode(text, validate=True)
        except ValueError:
            signature = b""
        if signer is None or not pod_hmac_matches(signer.hmac_key, str(form["content"]).encode(),
                                                  signature):
            self.refuse(HTTPStatus.FORBIDDEN, "the signature does not verify")
            return
        self.reply(HTTPStatus.OK, b"", ASCII)


def pod_hmac(key: bytes, content: bytes) -> bytes:
    """HMAC-SHA512 of ``content`` under a pod's key (appc-spec/ace.md "Identity Endpoint")."""
    from cryptography.hazmat.primitives import hashes, hmac

    mac = hmac.HMAC(key, hashes.SHA512())
    mac.update(content)
    return mac.finalize()


def pod_hmac_matches(key: bytes, content: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is the pod's HMAC of ``content`` (compared in constant time)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, hmac

    mac = hmac.HMAC(key, hashes.SHA512())
    mac.update(content)
    try:
        mac.verify(signature)
    except InvalidSignature:
        return False
    return True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    store: RegistrationStore
    public_port: int
    name: str

    def __init__(self, sock: socket.socket, handler: type[_Handler], name: str,
                 store: RegistrationStore, public_port: int) -> None:
        # the socket is bound and listening already (by us or by systemd)
        super().__init__(sock.getsockname(), handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.address_family = sock.family
        self.name = name
        self.store = store
        self.public_port = public_port
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            LOG.debug("%s: %d connections open: closing one from %r", self.name,
                      MAX_CONNECTIONS, client_address)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that breaks its connection mid-request is its own problem
        LOG.debug("%s: request from %r failed", self.name, client_address, exc_info=True)


# -- the listening sockets ----------------------------------------------------------------
def activated_sockets(environ: dict[str, str] | None = None) -> list[socket.socket]:
    """The sockets systemd passed (``LISTEN_PID``/``LISTEN_FDS``), if they are ours.

    The variables are removed, as sd_listen_fds(3) does, so that nothing this
    process starts takes the sockets for its own.
    """
    env = os.environ if environ is None else environ
    try:
        pid, count = int(env.get("LISTEN_PID", "")), int(env.get("LISTEN_FDS", ""))
    except ValueError:
        return []
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(name, None)
    if pid != os.getpid() or count < 1:
        return []
    sockets = []
    for fd in range(LISTEN_FDS_START, LISTEN_FDS_START + count):
        try:
            os.set_inheritable(fd, False)
            sockets.append(socket.socket(fileno=fd))
        except OSError as exc:  # a FIFO or a file: nothing this service serves on
            LOG.warning("ignoring passed file descriptor %d: %s", fd, exc)
    return sockets


def listen_unix(path: Path) -> socket.socket:
    """Bind the registration socket (root only: whoever registers decides what a pod
    is told about itself). A socket left by a service that died is replaced; one a
    live service listens on is not."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        if path.exists() or path.is_symlink():
            if not stat.S_ISSOCK(path.lstat().st_mode):
                raise MetadataError(f"{path} exists and is not a socket")
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(str(path))
            except OSError:
                path.unlink()  # nobody listens: left by a service that was killed
            else:
                raise MetadataError(f"a metadata service is already listening on {path}")
            finally:
                probe.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            sock.bind(str(path))
            sock.listen(64)
        except OSError:
            sock.close()
            raise
        finally:
            os.umask(old_umask)
    except OSError as exc:
        raise MetadataError(f"cannot listen on {path}: {exc.strerror or exc}") from exc
    return sock


def listen_tcp(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("0.0.0.0", port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise MetadataError(f"cannot listen on port {port}: {exc.strerror or exc}") from exc
    return sock


class MetadataService:
    """The two servers over one :class:`RegistrationStore`.

    ``registration`` is a listening unix socket, ``public`` a listening TCP
    socket; :meth:`serve` runs both until :meth:`shutdown`.
    """

    def __init__(self, store: RegistrationStore, registration: socket.socket,
                 public: socket.socket, *, socket_path: Path | None = None) -> None:
        self.store = store
        #: the socket file this service made (and removes when it stops), if any
        self.socket_path = socket_path
        self.public_port = int(public.getsockname()[1])
        self.servers = [
            _Server(registration, RegistrationHandler, "registration", store, self.public_port),
            _Server(public, PublicHandler, "public", store, self.public_port),
        ]
        self._stopped = threading.Event()
        pod_hmac(b"warm", b"up")  # import the HMAC code now, not in a pod's first request

    def serve(self) -> None:
        threads = [threading.Thread(target=server.serve_forever, name=server.name, daemon=True)
                   for server in self.servers]
        for thread in threads:
            thread.start()
        self._stopped.wait()
        for server in self.servers:
            server.shutdown()
            server.server_close()
        if self.socket_path is not None:
            self.socket_path.unlink(missing_ok=True)

    def shutdown(self) -> None:
        """Stop serving (safe from a signal handler: it only sets an event)."""
        self._stopped.set()


def open_service(*, socket_path: Path, port: int, state_dir: Path | None,
                 keep: Callable[[str], bool]) -> MetadataService:
    """Listen (or take systemd's sockets), load the kept registrations; not serving yet.

    With socket activation the unix socket systemd passed is the registration
    socket and a TCP one, if passed too, the public port; the service then leaves
    the socket file alone when it stops (systemd owns it: ``RemoveOnStop=``).
    """
    store = RegistrationStore(state_dir)
    try:
        store.load(keep)
    except OSError as exc:
        raise MetadataError(f"cannot read registrations in {state_dir}: {exc.strerror}") from exc
    activated = activated_sockets()
    unix = [s for s in activated if s.family == socket.AF_UNIX]
    tcp = [s for s in activated if s.family in (socket.AF_INET, socket.AF_INET6)]
    registration = unix[0] if unix else listen_unix(socket_path)
    try:
        public = tcp[0] if tcp else listen_tcp(port)
    except BaseException:
        registration.close()
        if not unix:
            socket_path.unlink(missing_ok=True)
        raise
    return MetadataService(store, registration, public,
                           socket_path=None if unix else socket_path)


def running_pods_of(data_dir: Path) -> Callable[[str], bool]:
    """Whether a pod of this data dir still runs (in ``run/`` and locked by its rkt)."""
    from rkt.pod.dirs import Pod

    def running(uuid: str) -> bool:
        pod = Pod(data_dir / "pods", uuid, "run")
        return pod.path.is_dir() and pod.is_locked_by_other()

    return running
