"""The stage1 contract, stage1 images, and choosing one for a pod.

A stage1 backend is a Python object found by name in the ``rkt.stage1``
entry-point group (only the chosen one is imported). A stage1 *image* is an
ordinary ACI named like ``coreos.com/rkt/stage1-nspawn`` whose annotations name
the backend (``coreos.com/rkt/stage1/backend``) and the interface version it
speaks (``coreos.com/rkt/stage1/interface-version``); ``rkt install`` builds one
per installed backend into the default stage1 directory.

stage0 (the ``rkt`` command) prepares the pod directory and the resolved apps
(``rkt.pod.contract``: the typed stage1 contract); the backend only has to
isolate and start them, normally by running the shared supervisor
(``rkt.pod.supervisor``) inside whatever isolation it provides. stage0 reads a
stage1 image's interface version before it prepares or runs a pod with it, and
refuses one it does not speak (:func:`check_interface_version`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from rkt import APPC_VERSION, __version__
from rkt.errors import (
    ConfigError,
    ImageError,
    ImageNotFoundError,
    RktError,
    Stage1Error,
    UsageError,
)
from rkt.pod.contract import CONTRACT_VERSION, PodRuntime, ResolvedApp, ResolvedPod

if TYPE_CHECKING:
    from rkt.context import Runtime
    from rkt.pod.dirs import Pod
    from rkt.store import ImageInfo, ImageStore

#: the stage0/stage1 interface this rkt speaks (the annotation's value). 2: the
#: typed contract of ``rkt.pod.contract`` (version 1 was untyped dicts).
INTERFACE_VERSION = CONTRACT_VERSION
DEFAULT_STAGE1_DIR = Path("/usr/lib/rkt/stage1-images")
DEFAULT_BACKEND = "nspawn"
STAGE1_NAME_PREFIX = "coreos.com/rkt/stage1-"
BACKEND_ANNOTATION = "coreos.com/rkt/stage1/backend"
INTERFACE_ANNOTATION = "coreos.com/rkt/stage1/interface-version"
SUPERVISOR_PATH = "rkt/supervisor.py"


@contextmanager
def backend_faults(name: str) -> Iterator[None]:
    """A backend's own bug (any exception but an rkt error) becomes one line that
    names the backend; ``--debug`` still shows its traceback (the cause)."""
    try:
        yield
    except RktError:
        raise
    except Exception as exc:
        raise Stage1Error(f'stage1 "{name}" failed: {type(exc).__name__}: {exc}') from exc


class Stage1Backend(Protocol):
    """A way of isolating a pod: containers, virtual machines, or plain chroot.

    A backend may also say which networks it can put a pod in, as a class
    attribute ``network_modes``, a frozenset of ``"host"``, ``"none"`` and
    ``"contained"`` (joining the namespace stage0 prepared, ``PodRuntime.network``);
    without it only ``"host"`` is assumed (docs/stage1.md).

    A backend that cannot do some of what the conformance suite checks says so
    with a class attribute ``unsupported``, a mapping of :data:`STAGE1_FEATURES`
    names to a one-line reason (``{"multi-app": "fly runs exactly one app per
    pod"}``); ``python -m rkt.conformance`` then shows those checks as not
    supported instead of failing them. Without it, a backend claims them all.
    """

    #: the entry-point name, e.g. "nspawn"
    name: str
    #: the stage0/stage1 interface version this backend speaks
    interface_version: int

    def build_image(self, rootfs: Path) -> None:
        """Add the backend's own files to a stage1 image's rootfs being built.

        The common skeleton and ``/rkt/supervisor.py`` are already there. A
        backend with build options (a kernel, say) also defines
        ``configure(options: dict[str, str]) -> None``, which ``rkt install``
        calls first with ``stage1.d``'s ``options.<backend>`` (docs/stage1.md).
        """
        ...

    def run(self, pod: Pod, resolved: ResolvedPod, runtime: PodRuntime) -> int:
        """Run the prepared pod to completion and return its exit code.

        ``pod`` is in ``run/`` and locked by the caller; the lock's fd
        (``pod.lock_fd``) must stay open in whatever process outlives the
        caller, so the pod reads as running exactly as long as it runs. The
        backend records the host PID of the pod's PID 1 in ``<pod>/pid`` and
        each app's exit code in ``stage1/rootfs/rkt/status/<app>``
        (docs/stage1.md).
        """
        ...

    def enter(self, pod: Pod, app: ResolvedApp, command: list[str]) -> int:
        """Run ``command`` in the running app's namespaces, with its isolation."""
        ...

    def stop(self, pod: Pod, *, force: bool) -> None:
        """Ask the running pod to stop (SIGTERM to the apps), or kill it with ``force``."""
        ...

    def gc(self, pod: Pod) -> None:
        """Release anything the backend set up outside the pod directory."""
        ...


#: what a stage1 may declare it does not do (``Stage1Backend.unsupported``), each
#: checked by ``python -m rkt.conformance`` (docs/stage1.md, "Conformance"). The rest
#: (exit codes, a signalled app's 128+N, env, user and group, working directory,
#: ``rkt gc``) every stage1 owes; networks are declared by ``network_modes``.
STAGE1_FEATURES: Mapping[str, str] = {
    "volumes": "host and empty volumes, read-write and read-only",
    "read-only-rootfs": "--readonly-rootfs",
    "event-handlers": "the pre-start and post-stop event handlers",
    "multi-app": "more than one app in a pod",
    "hostname": "a hostname of the pod's own: --hostname, rkt-<uuid> by default",
    "stop": "rkt stop and rkt stop --force",
    "enter": "rkt enter",
    "interactive": "--interactive, and Ctrl+] three times to kill the pod",
    "capabilities": "--caps-retain and --caps-remove",
    "memory-limit": "--memory",
}


def unsupported_features(backend: object) -> dict[str, str]:
    """A backend's ``unsupported`` declaration (feature -> reason), checked:
    :class:`Stage1Error` for a name :data:`STAGE1_FEATURES` lacks or an empty reason."""
    declared: Mapping[str, str] = getattr(backend, "unsupported", None) or {}
    name = getattr(backend, "name", type(backend).__name__)
    for feature, reason in declared.items():
        if feature not in STAGE1_FEATURES:
            raise Stage1Error(
                f'stage1 backend "{name}" declares unknown feature "{feature}" unsupported '
                f"(known: {', '.join(STAGE1_FEATURES)})")
        if not isinstance(reason, str) or not reason.strip():
            raise Stage1Error(f'stage1 backend "{name}" gives no reason why "{feature}" '
                              "is unsupported")
    return dict(declared)


def features_used(resolved: ResolvedPod, runtime: PodRuntime) -> list[str]:
    """The :data:`STAGE1_FEATURES` a pod asks of its stage1 (those stage0 can tell
    from the pod; ``stop`` and ``enter`` are asked by their commands)."""
    apps = resolved.apps
    used = {
        "volumes": bool(resolved.volumes) or any(app.mounts for app in apps),
        "read-only-rootfs": any(app.read_only_rootfs for app in apps),
        "event-handlers": any(app.pre_start or app.post_stop for app in apps),
        "multi-app": len(apps) > 1,
        "hostname": runtime.hostname is not None,
        "interactive": runtime.interactive,
        "memory-limit": resolved.resources.memory_bytes is not None
        or any(app.resources.memory_bytes is not None for app in apps),
    }
    return [feature for feature, asked in used.items() if asked]


def refuse_unsupported(backend: object, features: Iterable[str]) -> None:
    """:class:`UsageError` for the first of ``features`` the backend declares it
    does not support, before anything of the pod runs: a declared gap is refused,
    never silently ignored."""
    declared = getattr(backend, "unsupported", None) or {}
    for feature in features:
        if feature in declared:
            name = getattr(backend, "name", type(backend).__name__)
            raise UsageError(f"the {name} stage1 does not support {STAGE1_FEATURES[feature]}: "
                             f"{declared[feature]}")


# -- building stage1 images ----------------------------------------------------------
def stage1_image_name(backend: str) -> str:
    return STAGE1_NAME_PREFIX + backend


def _host_arch() -> str:
    machine = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "aarch64"}.get(machine, machine)


def build_stage1_image(
    backend: Stage1Backend, out: Path, options: Mapping[str, str] | None = None, *,
    version: str = __version__,
) -> Path:
    """Write ``out`` (an uncompressed ACI) for ``backend``, labelled ``version``
    (its distribution's version, :func:`stage1_source`); atomic.

    ``options`` are the backend's build options from ``stage1.d`` (``"options":
    {"<backend>": {...}}``); they reach a backend that defines
    ``configure(options)`` before its ``build_image`` is called, and are refused
    for one that does not.
    """
    import tarfile  # here: building images is rare, running pods is not
    import tempfile

    configure = getattr(backend, "configure", None)
    if configure is not None:
        configure(dict(options or {}))
    elif options:
        raise ConfigError(
            f'stage1 backend "{backend.name}" takes no options '
            f"(stage1.d: options.{backend.name}.{next(iter(options))})"
        )

    manifest = {
        "acKind": "ImageManifest", "acVersion": APPC_VERSION,
        "name": stage1_image_name(backend.name),
        "labels": [
            {"name": "version", "value": version},
            {"name": "os", "value": "linux"},
            {"name": "arch", "value": _host_arch()},
        ],
        "annotations": [
            {"name": BACKEND_ANNOTATION, "value": backend.name},
            {"name": INTERFACE_ANNOTATION, "value": str(backend.interface_version)},
        ],
    }
    with tempfile.TemporaryDirectory(prefix="rkt-stage1-") as work:
        rootfs = Path(work) / "rootfs"
        for directory in ("usr", "proc", "sys", "dev", "tmp", "etc", "run", "var/tmp",
                          "opt/stage2", "rkt/status", "rkt/pids", "rkt/volumes"):
            (rootfs / directory).mkdir(parents=True, exist_ok=True)
        # merged-/usr links, so the host's /usr (bound read-only) is a working userland
        for link in ("bin", "sbin", "lib", "lib64"):
            os.symlink(f"usr/{link}", rootfs / link)
        (rootfs / "etc" / "os-release").write_text(
            f'NAME="rkt stage1 ({backend.name})"\nID=rkt-stage1\nVERSION_ID={version}\n'
        )
        (rootfs / "etc" / "machine-id").write_text("")
        supervisor = Path(__file__).parent / "pod" / "supervisor.py"
        (rootfs / SUPERVISOR_PATH).write_bytes(supervisor.read_bytes())
        backend.build_image(rootfs)
        (Path(work) / "manifest").write_text(json.dumps(manifest, indent=2))
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            tar.add(Path(work) / "manifest", "manifest")
            tar.add(rootfs, "rootfs")
        os.chmod(tmp, 0o644)
        os.rename(tmp, out)
    return out


@dataclass(frozen=True)
class Stage1Source:
    """What a backend's stage1 image is built from, as ``rkt install`` compares it."""

    #: the distribution that provides the backend's entry point, and its version
    #: (the image's ``version`` label); rkt's own when it cannot be told
    distribution: str
    version: str
    #: a digest of the backend package's files, the supervisor and rkt's version
    digest: str


def _package_files(module: str) -> list[Path]:
    import importlib.util

    spec = importlib.util.find_spec(module.partition(".")[0])
    if spec is None:
        return []
    if spec.submodule_search_locations:
        return sorted(path for top in spec.submodule_search_locations
                      for path in Path(top).rglob("*")
                      if path.is_file() and "__pycache__" not in path.parts)
    return [Path(spec.origin)] if spec.origin and os.path.isfile(spec.origin) else []


def stage1_source(name: str) -> Stage1Source:
    """The distribution, version and content digest of the installed backend ``name``."""
    import hashlib
    from importlib.metadata import entry_points

    from rkt.plugins import STAGE1_GROUP

    found = list(entry_points(group=STAGE1_GROUP, name=name))
    distribution, version, module = "rkt", __version__, ""
    if found:
        module = found[0].value.partition(":")[0]
        dist = found[0].dist
        if dist is not None:
            distribution, version = dist.metadata["Name"] or distribution, dist.version
    digest = hashlib.sha256()
    # the image holds rkt's skeleton (this module) and supervisor besides the backend's files
    here = Path(__file__)
    for path in [here, here.parent / "pod" / "supervisor.py", *_package_files(module)]:
        digest.update(f"{path.name}\0{INTERFACE_VERSION}\0{__version__}\0".encode())
        digest.update(path.read_bytes())
    return Stage1Source(distribution, version, digest.hexdigest())


def ensure_stage1_image(backend: Stage1Backend, out: Path, source: Stage1Source,
                        options: Mapping[str, str] | None = None) -> bool:
    """Build ``out`` unless it was built from ``source`` and ``options`` already;
    True if built.

    What it was built from is recorded beside it (``<out>.source``): an unchanged
    image keeps its file, so it is not imported into the store again.
    """
    stamp = out.with_name(f"{out.name}.source")
    recorded = {"version": source.version, "digest": source.digest,
                "options": dict(options or {})}
    try:
        if out.is_file() and json.loads(stamp.read_text()) == recorded:
            return False
    except (OSError, ValueError):
        pass
    build_stage1_image(backend, out, options, version=source.version)
    tmp = stamp.with_name(f".{stamp.name}.tmp")
    tmp.write_text(json.dumps(recorded) + "\n")
    os.rename(tmp, stamp)
    return True


# -- reading a stage1 image's manifest ---------------------------------------------------
def named_entry(items: list[dict[str, Any]] | None, name: str) -> dict[str, Any] | None:
    """The last entry called ``name`` in an appc list of ``{"name": ...}`` objects
    (annotations, isolators, event handlers; appc: names are unique)."""
    found = None
    for item in items or []:
        if item.get("name") == name:
            found = item
    return found


def _annotation(manifest: dict[str, Any], name: str) -> str | None:
    item = named_entry(manifest.get("annotations"), name)
    value = None if item is None else item.get("value")
    return None if value is None else str(value)


def stage1_backend_name(manifest: dict[str, Any]) -> str:
    """The backend a stage1 image's manifest names; :class:`ImageError` if none."""
    backend = _annotation(manifest, BACKEND_ANNOTATION)
    if not backend:
        raise ImageError(
            f'image "{manifest.get("name")}" is not a stage1 image: '
            f'it has no "{BACKEND_ANNOTATION}" annotation'
        )
    return backend


def check_interface_version(manifest: dict[str, Any], backend: Stage1Backend) -> None:
    """Refuse a stage1 image, or a backend, that speaks another stage1 interface.

    Read before a pod is prepared with the image and again before a prepared
    pod runs, so that neither an old image nor a future one is half used.
    """
    name = manifest.get("name")
    declared = _annotation(manifest, INTERFACE_ANNOTATION)
    if declared is None:
        raise Stage1Error(
            f'stage1 image "{name}" does not say which stage1 interface version it '
            f'speaks (no "{INTERFACE_ANNOTATION}" annotation); this rkt speaks '
            f"{INTERFACE_VERSION}"
        )
    if declared != str(INTERFACE_VERSION):
        hint = ""
        if declared.isdigit() and int(declared) < INTERFACE_VERSION and str(name).startswith(
            STAGE1_NAME_PREFIX
        ):
            hint = " (run 'rkt install' to rebuild the stage1 images)"
        raise Stage1Error(
            f'stage1 image "{name}" speaks stage1 interface version {declared}; '
            f"this rkt speaks {INTERFACE_VERSION}{hint}"
        )
    if backend.interface_version != INTERFACE_VERSION:
        raise Stage1Error(
            f'stage1 backend "{backend.name}" speaks stage1 interface version '
            f"{backend.interface_version}; this rkt speaks {INTERFACE_VERSION}"
        )


# -- choosing the stage1 for a pod -------------------------------------------------------
@dataclass
class Stage1Choice:
    """The ``--stage1-*`` flags (at most one may be given)."""

    image: str | None = None  # --stage1-image (rkt 0.5's flag): path or URL
    name: str | None = None
    path: str | None = None
    url: str | None = None
    hash: str | None = None
    from_dir: str | None = None

    def given(self) -> list[str]:
        return [f"--stage1-{k}" for k in ("image", "name", "path", "url", "hash", "from-dir")
                if getattr(self, k.replace("-", "_"))]


def stage1_images_dir(runtime: Runtime) -> Path:
    configured = runtime.config.paths.get("stage1-images")
    override = os.environ.get("RKT_STAGE1_IMAGES_DIR")
    return Path(override or configured or DEFAULT_STAGE1_DIR)


def _in_dir(path: Path, directory: Path) -> bool:
    try:
        return path.resolve().parent == directory.resolve()
    except OSError:
        return False


def import_trusted_stage1(runtime: Runtime, path: Path) -> ImageInfo:
    """Import a stage1 image from the default directory, which rkt trusts by location.

    The file's device, inode, size, mtime and ctime key a cache row, so an
    unchanged image costs one index lookup per run (no hashing, no re-import), and
    a rebuilt or replaced one (a new rkt; a copy that kept the old mtime) is
    imported again.
    """
    from rkt.fetching import FetchedImage, import_fetched

    store = runtime.store
    try:
        info = path.stat()
    except FileNotFoundError as exc:
        raise Stage1Error(f"stage1 image {path} does not exist (run 'rkt install'?)") from exc
    url = f"file://{path.resolve()}"
    etag = f"{info.st_dev}-{info.st_ino}-{info.st_size}-{info.st_mtime_ns}-{info.st_ctime_ns}"
    cached = store.cached_remote(url)
    if cached is not None and cached[0] == etag:
        with suppress(ImageNotFoundError):  # removed since: import it again
            return store.resolve(cached[1])
    image = import_fetched(runtime, FetchedImage(path=path, origin=str(path)), verify=False)
    store.record_remote(url, etag, image.id)
    _forget_replaced(store, image)
    return image


def _forget_replaced(store: ImageStore, image: ImageInfo) -> None:
    """Drop the names of older imports of this stage1 image's name and version: a
    rebuilt image replaces them. Their files stay for pods that still use them
    (another ``rkt run`` may be choosing one right now, under the shared prepare
    lock); ``rkt image gc`` removes the files once no pod does."""
    version = image.labels.get("version")
    for other in store.list_images():
        if (other.id != image.id and other.name == image.name
                and other.labels.get("version") == version):
            store.forget(other.id)


def _bundled(directory: Path, name: str) -> Path | None:
    """``stage1-<flavor>.aci`` in the stage1 images directory, for rkt's own names."""
    if not name.startswith(STAGE1_NAME_PREFIX):
        return None
    path = directory / f"stage1-{name.removeprefix(STAGE1_NAME_PREFIX)}.aci"
    return path if path.exists() else None


def select_stage1(runtime: Runtime, choice: Stage1Choice) -> ImageInfo:
    """The stage1 image for a new pod, per rkt's rules (rkt-behaviour.md section 4.5)."""
    from rkt.fetching import fetch_image

    given = choice.given()
    if len(given) > 1:
        raise UsageError(f"only one stage1 flag may be given, got {', '.join(given)}")
    directory = stage1_images_dir(runtime)
    if choice.image or choice.path or choice.url:
        location = choice.image or choice.path or choice.url or ""
        candidate = Path(location)
        if candidate.is_absolute() and _in_dir(candidate, directory):
            return import_trusted_stage1(runtime, candidate)
        return fetch_image(runtime, location, pull_policy="new")
    if choice.from_dir:
        return import_trusted_stage1(runtime, directory / choice.from_dir)
    if choice.hash:
        return runtime.store.resolve(choice.hash)
    name = choice.name
    if name is None:
        configured = runtime.config.stage1
        if configured.get("name"):
            with suppress(ImageNotFoundError):
                return runtime.store.find_by_name(
                    configured["name"], {"version": configured["version"]}
                )
            bundled = _bundled(directory, configured["name"])
            if bundled is not None:
                return import_trusted_stage1(runtime, bundled)
        if configured.get("location"):
            location = configured["location"]
            if not (location.startswith("/") or "://" in location):
                raise Stage1Error(
                    "default stage1 image location is either a relative path or a URL "
                    f"without scheme: {location}"
                )
            path = Path(location.removeprefix("file://"))
            if path.is_absolute() and _in_dir(path, directory):
                return import_trusted_stage1(runtime, path)
            return fetch_image(runtime, location, pull_policy="new")
        name = stage1_image_name(DEFAULT_BACKEND)
    name, _, version = name.partition(":")
    labels = {"version": version} if version else {}
    bundled = _bundled(directory, name)
    if bundled is not None:
        return import_trusted_stage1(runtime, bundled)
    try:
        return runtime.store.find_by_name(name, labels)
    except ImageNotFoundError as exc:
        raise Stage1Error(
            f'stage1 image "{name}" is not in the store nor in {directory}'
        ) from exc
