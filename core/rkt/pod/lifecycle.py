"""Creating, preparing and running pods: what ``rkt prepare``, ``run`` and ``run-prepared`` do.

Order matters for "nothing half-written": every image (and the stage1) is
fetched and verified, and the pod manifest built and validated, before a pod
directory exists. If preparing the directory then fails, it is removed again.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rkt import faults
from rkt.errors import PodError, PodInterrupted, RktError, Stage1Error, UsageError
from rkt.locks import prepare_lock
from rkt.log import get_logger
from rkt.metadata import forget_pod
from rkt.pod.cgroups import PARENT_KEY, remove_pod_cgroups, setup_pod_cgroups, stage1_cgroup
from rkt.pod.contract import PodRuntime, ResolvedPod
from rkt.pod.dirs import PID_FILE, STAGE1_ERROR_FILE, STARTED_FILE, Pod, PodStore
from rkt.pod.lifetime import current_lifetime, start_deadline
from rkt.pod.prepare import (
    PodRequest,
    ResolvedImage,
    build_pod_manifest,
    lift_insecure,
    load_resolved_pod,
    masked_paths,
    prepare_pod,
    save_resolved_pod,
)
from rkt.stage1 import (
    Stage1Backend,
    Stage1Choice,
    backend_faults,
    check_interface_version,
    features_used,
    refuse_unsupported,
    select_stage1,
    stage1_backend_name,
)

if TYPE_CHECKING:
    from rkt.context import Runtime
    from rkt.net.request import NetworkRequest, PortRequest
    from rkt.pod.gc import Stage1Lookup

LOG = get_logger(__name__)

#: how long a backend's ``run`` may take to write ``<pod>/pid`` before stage0
#: gives up on it (a VM booting under TCG writes it when qemu starts)
DEFAULT_START_TIMEOUT = 60.0
START_TIMEOUT_ENV = "RKT_STAGE1_START_TIMEOUT"


@dataclass
class PreparedPod:
    pod: Pod
    backend: Stage1Backend
    #: known when this process prepared the pod; else read from ``apps.json``
    resolved: ResolvedPod | None = None


def _resolve(runtime: Runtime, image_id: str) -> ResolvedImage:
    info = runtime.store.resolve(image_id)
    # validated when it was imported; see ResolvedImage
    return ResolvedImage(info, json.loads(runtime.store.manifest_bytes(info.id)))


def backend_for(runtime: Runtime, stage1_manifest: dict[str, Any]) -> Stage1Backend:
    """The backend a stage1 image names, if both speak this rkt's stage1 interface."""
    backend = runtime.plugins.stage1_backend(stage1_backend_name(stage1_manifest))
    check_interface_version(stage1_manifest, backend)
    return backend


def create_pod(
    runtime: Runtime,
    request: PodRequest,
    stage1_choice: Stage1Choice,
    *,
    pull_policy: str = "new",
    uuid: str | None = None,
) -> PreparedPod:
    """Fetch everything, then prepare a pod; it is returned locked, in ``prepare/``.

    The shared prepare lock, from choosing the images until the pod records them,
    keeps ``rkt image gc`` and ``rkt image rm`` from removing any of them meanwhile.
    """
    with prepare_lock(runtime.data_dir, shared=True):
        return _create_pod(runtime, request, stage1_choice, pull_policy=pull_policy, uuid=uuid)


def _create_pod(
    runtime: Runtime,
    request: PodRequest,
    stage1_choice: Stage1Choice,
    *,
    pull_policy: str,
    uuid: str | None,
) -> PreparedPod:
    from rkt.fetching import fetch_image

    stage1 = _resolve(runtime, select_stage1(runtime, stage1_choice).id)
    backend = backend_for(runtime, stage1.manifest)
    LOG.debug('stage1 image "%s" (%s), backend "%s"', stage1.info.name, stage1.info.id,
              backend.name)
    manifest: dict[str, Any]
    if request.pod_manifest is not None:
        manifest = _load_pod_manifest(runtime, request.pod_manifest)
    else:
        images = []
        for app in request.apps:
            info = fetch_image(runtime, app.image, signature_file=app.signature,
                               pull_policy=pull_policy)
            images.append(_resolve(runtime, info.id))
        manifest, _ = build_pod_manifest(images, request)
    pods = PodStore(runtime.data_dir)
    pod = pods.create_embryo(uuid)
    try:
        resolved = prepare_pod(pod, runtime.store, stage1, manifest, request,
                               insecure=runtime.insecure)
        lifetime = current_lifetime()
        if lifetime is not None:
            # the pod is whole: a stop signal now waits for run_pod's checkpoints
            # (or is moot once prepare has printed the UUID)
            lifetime.defer()
    except BaseException:
        pod.release()
        pods.delete(pod)
        raise
    for resolved_app in resolved.apps:
        for note in masked_paths(resolved_app):
            runtime.reporter.warn(note)
    for runtime_app in manifest["apps"]:
        runtime.store.touch(runtime_app["image"]["id"])
    return PreparedPod(pod, backend, resolved)


def _load_pod_manifest(runtime: Runtime, path: Path) -> dict[str, Any]:
    """A user's pod manifest: validated against the schema (it is input), reified."""
    from rkt.fetching import require_verified
    from rkt.schema.pod import PodManifest

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"--pod-manifest {path}: {exc.strerror}") from exc
    manifest = PodManifest.parse(data, source=f"pod manifest {path}")
    if not manifest.apps:
        raise UsageError(f"pod manifest {path} has no apps")
    for app in manifest.apps:
        if not app.image.id:
            raise UsageError(f'pod manifest {path}: app "{app.name}" has no image id')
        info = require_verified(runtime, runtime.store.resolve(app.image.id))
        app.image.id = info.id
        if app.app is None:
            from rkt.schema.image import ImageManifest

            image = ImageManifest.parse(runtime.store.manifest_bytes(info.id))
            if image.app is None:
                raise UsageError(f'pod manifest {path}: app "{app.name}" has nothing to run')
            app.app = image.app
    document: dict[str, Any] = json.loads(manifest.to_json())
    return document


def run_pod(runtime: Runtime, prepared: PreparedPod, pod_runtime: PodRuntime,
            *, uuid_file: str | None = None,
            network: NetworkRequest | None = None,
            metadata_socket: Path | None = None,
            exits_after: bool = False) -> int:
    """Set up the pod's network, move the locked pod to ``run/`` and hand it to its
    stage1; return the exit code.

    A network that cannot be set up is torn down again before this raises; a
    pod this process prepared is then removed, a ``run-prepared`` one stays
    prepared. With ``metadata_socket`` (``--mds-register``) the pod is
    registered with the metadata service listening there once its network is
    up (and unregistered when it ends). ``exits_after``: the caller exits when
    this returns (the ``rkt`` command), so it need not leave the pod's stage1
    cgroups (see :func:`rkt.pod.cgroups.stage1_cgroup`); it keeps the pod locked
    until it exits, so the pod reads as running as long as it is in them.
    The same holds when a stop signal (:mod:`rkt.pod.lifetime`) arrives before
    the stage1 process started: what was set up is undone.
    """
    pod = prepared.pod
    lifetime = current_lifetime()
    if network is None:
        from rkt.net.request import NetworkRequest

        network = NetworkRequest()
    try:
        resolved = prepared.resolved or load_resolved_pod(pod)
        if lifetime is not None:
            lifetime.defer()
        lifted = lift_insecure(resolved, pod_runtime.insecure)
        if lifted != resolved:
            # run-prepared's --insecure-options: apps.json says what the apps get,
            # for the backend now and for rkt enter later
            save_resolved_pod(pod, lifted)
            resolved = lifted
        refuse_unsupported(prepared.backend, features_used(resolved, pod_runtime))
        pod_runtime = _with_network(runtime, prepared, resolved, pod_runtime, network)
        if metadata_socket is not None:
            resolved = _register_metadata(pod, resolved, pod_runtime, metadata_socket)
        time_limit = start_timeout()
        if uuid_file:
            save_uuid(uuid_file, pod.uuid)
    except BaseException:
        _abandon(runtime, prepared)
        raise
    pod.move("run")
    faults.point("run:started")
    backend = prepared.backend
    try:
        (pod.path / STARTED_FILE).touch()
        cgroups = setup_pod_cgroups(pod, resolved, runtime.config.paths.get(PARENT_KEY))
        with stage1_cgroup(cgroups, move_back=not exits_after), \
                start_deadline(pod.path / PID_FILE, backend.name, time_limit), \
                backend_faults(backend.name):
            code = backend.run(pod, resolved, pod_runtime._replace(cgroups=cgroups))
        check_obligations(pod, resolved, backend.name, code,
                          stopped=lifetime is not None and lifetime.received is not None)
        return code
    except PodInterrupted:
        if lifetime is not None and lifetime.process is None:
            _undo_start(runtime, prepared)
        raise
    except RktError as exc:
        # the pod has run/ behind it: it reads as exited, and status says why
        _record_stage1_error(pod, str(exc))
        raise
    finally:
        forget_pod(pod.path, pod.uuid)
        if not exits_after:
            pod.release()
        # else the lock goes when this process exits. It stays in the pod's stage1
        # cgroups until then, and gc, free to collect an unlocked pod, would kill it
        # there as a straggler: rkt would exit -9 instead of with the app's code.


def save_uuid(path: str, uuid: str) -> None:
    """``--uuid-file-save``: the file appears whole, for a scheduler that polls for
    it (a plain write shows it created and still empty for a moment)."""
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        try:
            with open(temporary, "x") as handle:
                handle.write(uuid)
            os.replace(temporary, path)
        except PermissionError:
            # a file this user may write, in a directory it may not add to
            Path(path).write_text(uuid)
    except OSError as exc:
        raise PodError(f"--uuid-file-save {path}: {exc.strerror or exc}") from exc
    finally:
        if os.path.lexists(temporary):
            os.unlink(temporary)


def check_obligations(pod: Pod, resolved: ResolvedPod, backend: str, code: int, *,
                      stopped: bool = False) -> None:
    """Check what a backend owes once its ``run`` returned (docs/stage1.md): the
    pod's PID in ``<pod>/pid`` and each app's exit code in
    ``stage1/rootfs/rkt/status/<app>``; :class:`Stage1Error` naming the first file
    missing or garbled.

    A few small reads. An app's exit code is owed when the pod succeeded (every
    app ran) or the app was started (``<app>-started``), except after a stop
    signal to rkt (``stopped``: rkt may have killed the stage1 before it wrote
    them); a pod that failed before anything started owes neither file (the
    stage1's own error output said why).
    """
    status_dir = pod.stage1_rootfs() / "rkt" / "status"
    owed_codes = []
    any_started = False
    for app in resolved.apps:
        path = status_dir / app.name
        text = _read_small(path)
        started = text is not None or (status_dir / f"{app.name}-started").exists()
        any_started = any_started or started
        if text is not None:
            if not text.strip().isdigit():
                raise Stage1Error(f'stage1 "{backend}" wrote a garbled {path}: '
                                  f"{text[:40]!r} is not an exit code")
        elif (code == 0 or started) and not stopped:
            owed_codes.append(path)
    pid_path = pod.path / PID_FILE
    pid = _read_small(pid_path)
    if pid is None and (code == 0 or any_started):
        raise Stage1Error(f'stage1 "{backend}" did not write {pid_path} '
                          "(the host PID of the pod's PID 1)")
    if pid is not None and not pid.strip().isdigit():
        raise Stage1Error(f'stage1 "{backend}" wrote a garbled {pid_path}: '
                          f"{pid[:40]!r} is not a process ID")
    if owed_codes:
        raise Stage1Error(f'stage1 "{backend}" did not write {owed_codes[0]} '
                          "(the app's exit code)")


def _read_small(path: Path) -> str | None:
    try:
        with open(path, "rb") as handle:
            return handle.read(64).decode(errors="replace")
    except FileNotFoundError:
        return None


def _record_stage1_error(pod: Pod, message: str) -> None:
    try:
        (pod.path / STAGE1_ERROR_FILE).write_text(message + "\n")
    except OSError as exc:  # a pod directory gone or read-only: the error is still shown
        LOG.debug("cannot record the stage1 error of %s: %s", pod.uuid, exc)


def start_timeout() -> float:
    """Seconds a backend's ``run`` has to write ``<pod>/pid`` (``RKT_STAGE1_START_TIMEOUT``,
    0 for no limit); a pod that started may run for as long as it likes."""
    value = os.environ.get(START_TIMEOUT_ENV, "")
    if not value:
        return DEFAULT_START_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < 1e9:  # also NaN
        raise UsageError(f"{START_TIMEOUT_ENV}={value!r} is not a number of seconds")
    return seconds


def network_modes(backend: Stage1Backend) -> frozenset[str]:
    """What networks a backend can put a pod in (``Stage1Backend.network_modes``);
    a backend that does not say shares the host's network only."""
    modes: frozenset[str] = getattr(backend, "network_modes", frozenset({"host"}))
    return modes


def _with_network(runtime: Runtime, prepared: PreparedPod, resolved: ResolvedPod,
                  pod_runtime: PodRuntime, request: NetworkRequest) -> PodRuntime:
    """Check the request against the backend, then set the network up (rkt.net)."""
    from rkt.net.request import DEFAULT, HOST, NONE, NetSelection

    modes = network_modes(prepared.backend)
    if not request.ports:
        # the ports `rkt prepare --port` recorded in the pod manifest (pods.md)
        request = request._replace(ports=_manifest_ports(prepared.pod))
    if not request.nets:
        # the backend's best: CNI's default network, else the host's, else its own
        # loopback (kvm: a VM cannot share the host's network stack)
        default = DEFAULT if "contained" in modes else HOST if HOST in modes else NONE
        request = request._replace(nets=(NetSelection(default),))
    mode = request.special or "contained"
    if mode not in modes:
        supported = ", ".join(f"--net={m}" if m != "contained" else "CNI networks"
                              for m in sorted(modes))
        raise UsageError(f"the {prepared.backend.name} stage1 supports only {supported}; "
                         f"not --net={','.join(request.names())}")
    from rkt.net.pod import setup_pod_network

    hostname = pod_runtime.pod_hostname(prepared.pod.uuid)
    network = setup_pod_network(prepared.pod, resolved, request, hostname=hostname,
                                local_config=runtime.local_config,
                                stage1_rootfs=prepared.pod.stage1_rootfs())
    return pod_runtime._replace(net=request.names(), network=network)


def _register_metadata(pod: Pod, resolved: ResolvedPod, pod_runtime: PodRuntime,
                       socket_path: Path) -> ResolvedPod:
    """Register the pod (rkt.metadata.client); a pod that cannot be registered does
    not start, and its network, set up already, is torn down again."""
    from rkt.metadata.client import register_for_run

    try:
        return register_for_run(pod, resolved, pod_runtime, socket_path)
    except BaseException:
        if (pod.path / "netns").exists():
            from rkt.net.pod import teardown_pod_network

            for error in teardown_pod_network(pod):
                LOG.warning("pod %s: %s", pod.uuid, error)
        raise


def _manifest_ports(pod: Pod) -> tuple[PortRequest, ...]:
    from rkt.net.request import PortRequest

    ports = pod.manifest_json().get("ports")
    return tuple(PortRequest(str(p["name"]), int(p["hostPort"]), p.get("hostIP"))
                 for p in ports if isinstance(p, dict)) if isinstance(ports, list) else ()


def _undo_start(runtime: Runtime, prepared: PreparedPod) -> None:
    """Undo what ``run_pod`` set up for a stage1 that never started (a stop signal
    came first): cgroups, network, the move to ``run/``."""
    pod = prepared.pod
    forget_pod(pod.path, pod.uuid)
    remove_pod_cgroups(pod)
    if (pod.path / "netns").exists():
        from rkt.net.pod import NETNS_FILE, STATE_FILE, teardown_pod_network
        from rkt.pod.dirs import NET_INFO_FILE

        for error in teardown_pod_network(pod):
            LOG.warning("%s", error)
        for name in (NET_INFO_FILE, STATE_FILE, NETNS_FILE):
            (pod.path / name).unlink(missing_ok=True)
    (pod.path / STARTED_FILE).unlink(missing_ok=True)
    if prepared.resolved is None:
        pod.move("prepared")
    _abandon(runtime, prepared)


def _abandon(runtime: Runtime, prepared: PreparedPod) -> None:
    """Give up a pod that never started: ``run`` removes the pod it made, and
    ``run-prepared`` leaves its pod prepared."""
    if prepared.resolved is not None:
        PodStore(runtime.data_dir).delete(prepared.pod)
    prepared.pod.release()


def mark_prepared(prepared: PreparedPod) -> None:
    prepared.pod.move("prepared")
    prepared.pod.release()


def open_prepared(runtime: Runtime, uuid: str) -> PreparedPod:
    """Lock a pod in ``prepared/`` for ``run-prepared``."""
    pods = PodStore(runtime.data_dir)
    pod = pods.find(uuid)
    if pod.phase != "prepared":
        raise PodError(f'pod "{pod.uuid}" is not prepared (state: {pod.state()})')
    if not pod.lock():
        raise PodError(f'pod "{pod.uuid}" is being used by another rkt process')
    pods.refresh(pod)
    if pod.phase != "prepared":
        pod.release()
        raise PodError(f'pod "{pod.uuid}" is no longer prepared')
    try:
        # prepared by another rkt, perhaps: refuse before anything moves
        backend = backend_for(runtime, _stage1_manifest(pod))
    except BaseException:
        pod.release()
        raise
    return PreparedPod(pod, backend)


def _stage1_manifest(pod: Pod) -> dict[str, Any]:
    try:
        manifest: dict[str, Any] = json.loads((pod.path / "stage1" / "manifest").read_text())
    except (OSError, ValueError) as exc:
        raise PodError(f'pod "{pod.uuid}" has no readable stage1 manifest') from exc
    return manifest


def backend_of(runtime: Runtime, pod: Pod) -> Stage1Backend:
    """The backend of an existing pod, whatever interface version it speaks
    (``stop`` and ``gc`` must work for pods an older rkt started)."""
    return runtime.plugins.stage1_backend(stage1_backend_name(_stage1_manifest(pod)))


def stop_pod(pod: Pod, stage1_backend: Stage1Lookup, *, force: bool) -> bool:
    """Ask a running pod's stage1 to stop it (kill it with ``force``); False if not running."""
    if pod.state() != "running":
        return False
    backend = stage1_backend(pod)
    refuse_unsupported(backend, ["stop"])
    with backend_faults(backend.name):
        backend.stop(pod, force=force)
    forget_pod(pod.path, pod.uuid)
    return True


def ensure_root(command: str) -> None:
    if os.geteuid() != 0:
        raise PodError(f"{command}: cannot run as unprivileged user")
