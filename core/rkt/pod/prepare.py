"""stage0's half of running a pod: from images and flags to a prepared pod directory.

Everything that can fail because of the user's input (an unknown image, a bad
volume, an exec missing from the image, a user the image does not know) fails
here, before any pod directory exists or, when it already does, with the pod
left in ``prepare/`` unlocked, which ``gc`` removes as an aborted prepare.

The result is the pod manifest (``pod``, appc's PodManifest) plus
``stage1/rootfs/rkt/apps.json``: the :class:`~rkt.pod.contract.ResolvedPod`
(uids, environment, mounts, rootfs locations) that a backend receives.

Three steps, each its own function: :func:`build_pod_manifest` (images and
flags to the appc pod manifest), :func:`resolve_volumes` and, per app,
``_render_app_rootfs`` then :func:`resolve_app`.
"""

from __future__ import annotations

import fcntl
import json
import os
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rkt import APPC_VERSION, __version__, faults
from rkt.datadir import DIR_MODE, private_dir
from rkt.errors import PodError, UsageError
from rkt.pod.apps import (
    AC_IDENTIFIER,
    AC_NAME,
    DEFAULT_CAPABILITIES,
    AppRequest,
    VolumeSpec,
    app_name_from_image,
    check_app_name,
)
from rkt.pod.cgroups import resolve_resources
from rkt.pod.contract import (
    AppMount,
    AppPort,
    ContractVersionError,
    ResolvedApp,
    ResolvedPod,
    ResolvedVolume,
    SeccompFilter,
)
from rkt.pod.dirs import POD_MANIFEST, Pod
from rkt.pod.supervisor import CAPABILITIES, resolve_in_root
from rkt.stage1 import named_entry

if TYPE_CHECKING:
    from rkt.net.request import PortRequest
    from rkt.store import ImageInfo, ImageStore

APPS_FILE = "apps.json"
MUTABLE_ANNOTATION = "coreos.com/rkt/stage1/mutable"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class PodRequest:
    """Everything ``rkt run`` / ``rkt prepare`` was asked for at pod level."""

    apps: list[AppRequest] = field(default_factory=list)
    volumes: list[VolumeSpec] = field(default_factory=list)
    set_env: list[tuple[str, str]] = field(default_factory=list)
    set_env_file: list[tuple[str, str]] = field(default_factory=list)
    inherit_env: bool = False
    no_overlay: bool = False
    pod_manifest: Path | None = None
    user_annotations: dict[str, str] = field(default_factory=dict)
    user_labels: dict[str, str] = field(default_factory=dict)
    #: ``--port``: recorded in the pod manifest (``ports``), which ``run-prepared`` reads
    ports: tuple[PortRequest, ...] = ()


@dataclass
class ResolvedImage:
    """A stored image and its manifest.

    The manifest is the plain JSON document: it was validated against the appc
    schema when the image entered the store, so running a pod needs no schema
    library at all (importing pydantic would cost more than starting the pod).
    """

    info: ImageInfo
    manifest: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.manifest["name"])


def _exists_in_root(root: Path, path: str) -> bool:
    return os.path.lexists(resolve_in_root(str(root), path))


def _find_in_root(root: Path, command: str, path_env: str) -> bool:
    if "/" in command:
        target = resolve_in_root(str(root), command if command.startswith("/") else "/" + command)
        return os.path.isfile(target)
    for directory in path_env.split(":"):
        target = resolve_in_root(str(root), os.path.join(directory or "/", command))
        if os.path.isfile(target):
            return True
    return False


#: the largest uid or gid (2^32 - 1 is the kernel's "no ID")
MAX_ID = (1 << 32) - 2


def _lookup_id(root: Path, database: str, name: str, what: str) -> int:
    """A user or group name (or number, or file path) -> number, per appc-spec/aci.md."""
    if name.startswith("/"):
        target = resolve_in_root(str(root), name)
        try:
            info = os.lstat(target)
        except FileNotFoundError as exc:
            raise PodError(f'{what} "{name}": no such file in the image') from exc
        return info.st_uid if what == "user" else info.st_gid
    table = resolve_in_root(str(root), f"/etc/{database}")
    try:
        if stat.S_ISREG(os.lstat(table).st_mode):
            with open(table, errors="replace") as handle:
                for line in handle:
                    fields = line.rstrip("\n").split(":")
                    if (len(fields) >= 3 and fields[0] == name and fields[2].isdigit()
                            and int(fields[2]) <= MAX_ID):
                        return int(fields[2])
    except FileNotFoundError:
        pass
    if name.isdigit():
        if int(name) > MAX_ID:
            raise PodError(f'{what} "{name}" is not a valid ID (at most {MAX_ID})')
        return int(name)
    raise PodError(f'{what} "{name}" is not a number and is not in the image\'s /etc/{database}')


def _cap_name(name: str) -> str:
    upper = name.upper()
    return upper if upper.startswith("CAP_") else f"CAP_{upper}"


def _cap_names(app_name: str, isolator: dict[str, Any]) -> list[str]:
    names = [_cap_name(c) for c in (isolator.get("value") or {}).get("set") or []]
    for name in names:
        if name not in CAPABILITIES:
            raise PodError(f'app "{app_name}": {isolator["name"]}: unknown capability "{name}"')
    return names


def _capabilities(app_name: str, app: dict[str, Any], insecure_caps: bool) -> list[str] | None:
    """The app's capability set: the spec's default 14, shaped by its isolators."""
    retain = named_entry(app.get("isolators"), "os/linux/capabilities-retain-set")
    remove = named_entry(app.get("isolators"), "os/linux/capabilities-remove-set")
    # checked even when insecure: a typo must not pass unnoticed until the option goes
    caps = list(DEFAULT_CAPABILITIES)
    if retain is not None:
        caps = _cap_names(app_name, retain)
    if remove is not None:
        dropped = set(_cap_names(app_name, remove))
        caps = [c for c in caps if c not in dropped]
    if insecure_caps:
        return None  # keep every capability (--insecure-options=capabilities)
    return caps


def _seccomp(app_name: str, app: dict[str, Any], insecure_seccomp: bool) -> SeccompFilter | None:
    """The app's compiled seccomp filter (docs/isolators.md), or None."""
    from rkt.pod.seccomp import filter_for

    try:
        compiled = filter_for(app.get("isolators"))
    except UsageError as exc:
        raise PodError(f'app "{app_name}": {exc}') from exc
    return None if insecure_seccomp else compiled


def _check_request(request: AppRequest) -> None:
    if request.name is not None and not AC_NAME.match(request.name):
        raise UsageError(f'--name "{request.name}": not a valid app name (a-z, 0-9 and "-")')
    if request.working_dir is not None and not request.working_dir.startswith("/"):
        raise UsageError(f'--working-dir "{request.working_dir}": must be an absolute path')
    for key in request.annotations:
        if not AC_IDENTIFIER.match(key):
            raise UsageError(f'--annotation "{key}": not a valid annotation name')


def _replace_isolators(app: dict[str, Any], given: list[dict[str, Any]]) -> None:
    """``given`` replaces the image's isolators of the same names."""
    replaced = {i["name"] for i in given}
    app["isolators"] = [i for i in app.get("isolators") or []
                        if i["name"] not in replaced] + given


def _app_definition(image: ResolvedImage, request: AppRequest) -> dict[str, Any]:
    """The image's app (appc-spec/aci.md) with the per-app flags applied."""
    image_app = image.manifest.get("app")
    app: dict[str, Any] = (
        json.loads(json.dumps(image_app)) if image_app else {"user": "0", "group": "0"}
    )
    if request.exec_ is not None:
        app["exec"] = list(request.exec_)
    if request.args is not None:
        app["exec"] = [*(app.get("exec") or [])[:1], *request.args]
    if not app.get("exec"):
        raise UsageError(f'image "{image.name}" has no app to run; use --exec')
    if request.user is not None:
        app["user"] = request.user
    if request.group is not None:
        app["group"] = request.group
    if request.supplementary_gids is not None:
        app["supplementaryGIDs"] = request.supplementary_gids
    if request.working_dir is not None:
        app["workingDirectory"] = request.working_dir
    for isolator_name, caps in (
        ("os/linux/capabilities-retain-set", request.caps_retain),
        ("os/linux/capabilities-remove-set", request.caps_remove),
    ):
        if caps is not None:
            for cap in caps:
                if _cap_name(cap) not in CAPABILITIES:
                    flag = "--caps-retain" if "retain" in isolator_name else "--caps-remove"
                    raise UsageError(f'{flag}: unknown capability "{cap}"')
            # the two capability isolators exclude each other: a flag replaces both
            app["isolators"] = [i for i in app.get("isolators") or []
                                if not i["name"].startswith("os/linux/capabilities-")]
            app["isolators"].append({"name": isolator_name, "value": {"set": caps}})
    if request.seccomp is not None:
        # as with capabilities: --seccomp replaces the image's seccomp isolator
        app["isolators"] = [i for i in app.get("isolators") or []
                            if not i["name"].startswith("os/linux/seccomp-")]
        app["isolators"].append(request.seccomp)
    if request.isolators:
        _replace_isolators(app, list(request.isolators))
    if request.environment:
        env = {e["name"]: e["value"] for e in app.get("environment") or []}
        env.update(request.environment)
        app["environment"] = [{"name": k, "value": v} for k, v in env.items()]
    return app


def _app_mounts(
    app: dict[str, Any], request: AppRequest, volumes: list[dict[str, object]]
) -> list[dict[str, str]]:
    """The app's mounts: ``--mount`` flags, then its image's mount points.

    ace.md: a mount point that no volume fills gets an implicit empty volume,
    appended to ``volumes``.
    """
    declared = {str(v["name"]) for v in volumes}
    for volume_name, _ in request.mounts:
        if volume_name not in declared:
            raise UsageError(f'--mount: no volume named "{volume_name}" (add --volume)')
    mounts = [{"volume": volume, "path": target} for volume, target in request.mounts]
    mounted = {m["volume"] for m in mounts}
    for point in app.get("mountPoints") or []:
        if point["name"] in mounted:
            continue
        if point["name"] not in declared:
            declared.add(point["name"])
            volumes.append(VolumeSpec(point["name"], "empty",
                                      read_only=point.get("readOnly", False)).to_manifest())
        mounts.append({"volume": point["name"], "path": point.get("path") or "/" + point["name"]})
    return mounts


def build_pod_manifest(
    images: list[ResolvedImage], request: PodRequest
) -> tuple[dict[str, Any], list[str]]:
    """The appc pod manifest (as JSON data) for these images and flags, and the app names.

    Plain JSON data, for speed (see :class:`ResolvedImage`); the tests validate
    every shape it produces against ``rkt.schema.pod.PodManifest`` and its
    exact round trip, so it cannot drift from the spec.
    """
    apps: list[dict[str, Any]] = []
    names: list[str] = []
    volumes = [v.to_manifest() for v in request.volumes]
    for image, app_request in zip(images, request.apps, strict=True):
        _check_request(app_request)
        name = app_request.name or app_name_from_image(image.name)
        check_app_name(name, "--name" if app_request.name else f'image "{image.name}": app name')
        if name in names:
            raise UsageError(
                f'two apps would be named "{name}"; give one a different --name'
            )
        names.append(name)
        app = _app_definition(image, app_request)
        runtime_app: dict[str, Any] = {
            "name": name,
            "image": {"name": image.name, "id": image.info.id,
                      "labels": [{"name": k, "value": v}
                                 for k, v in sorted(image.info.labels.items())]},
            "app": app,
            "readOnlyRootFS": bool(app_request.readonly_rootfs),
            "mounts": _app_mounts(app, app_request, volumes),
        }
        if app_request.annotations:
            runtime_app["annotations"] = [
                {"name": k, "value": v} for k, v in app_request.annotations.items()
            ]
        apps.append(runtime_app)
    document: dict[str, Any] = {
        "acVersion": APPC_VERSION, "acKind": "PodManifest", "apps": apps, "volumes": volumes,
        "isolators": None,
        "annotations": [{"name": MUTABLE_ANNOTATION, "value": "false"}],
        "ports": _exposed_ports(request.ports, apps),
    }
    if request.user_annotations:
        document["userAnnotations"] = request.user_annotations
    if request.user_labels:
        document["userLabels"] = request.user_labels
    return document, names


def _exposed_ports(ports: tuple[PortRequest, ...],
                   apps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """pods.md ``ports``: each names a port an app's image declares."""
    declared = {port.get("name") for app in apps for port in app["app"].get("ports") or ()}
    exposed = []
    for port in ports:
        if port.name not in declared:
            known = ", ".join(sorted(str(name) for name in declared)) or "none"
            raise UsageError(f'--port={port.name}:...: the pod\'s apps have no port '
                             f'"{port.name}" (their ports: {known})')
        entry: dict[str, Any] = {"name": port.name, "hostPort": port.host_port}
        if port.host_ip:
            entry["hostIP"] = port.host_ip
        exposed.append(entry)
    return exposed


def copy_tree(source: Path, dest: Path) -> None:
    """A faithful copy (owners, modes, links, xattrs) for --no-overlay pods."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["cp", "-a", "--reflink=auto", "--", str(source), str(dest)],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        raise PodError(f"cannot copy {source}: {result.stderr.strip()}")


def copy_small_tree(source: Path, dest: Path) -> None:
    """:func:`copy_tree` in this process, for a tree of a few dozen entries (a
    stage1's): the fork and exec of ``cp`` cost more than the copy (issue 14).

    Keeps what ``cp -a`` keeps of directories, regular files and symlinks (owner,
    mode, times, extended attributes; a reflink where the filesystem can); a tree
    holding anything else (a device node, a FIFO) is left to ``cp -a``.
    """
    entries: list[tuple[str, os.stat_result]] = []
    for directory, dirs, files in os.walk(source):
        for name in [*dirs, *files]:
            path = os.path.join(directory, name)
            info = os.lstat(path)
            if not (stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)
                    or stat.S_ISLNK(info.st_mode)):
                copy_tree(source, dest)
                return
            entries.append((os.path.relpath(path, source), info))
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(dest)
        # a directory's times last: creating its entries changes them
        directories = [(str(dest), os.lstat(source))]
        for relative, info in entries:
            _copy_entry(os.path.join(source, relative), os.path.join(dest, relative), info,
                        directories)
        for path, info in reversed(directories):
            _copy_metadata(path, path, info)
            os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    except OSError as exc:
        raise PodError(f"cannot copy {source}: {exc.strerror or exc}") from exc


def _copy_entry(source: str, dest: str, info: os.stat_result,
                directories: list[tuple[str, os.stat_result]]) -> None:
    if stat.S_ISDIR(info.st_mode):
        os.mkdir(dest, 0o700)
        directories.append((dest, info))
        return
    if stat.S_ISLNK(info.st_mode):
        os.symlink(os.readlink(source), dest)
        os.lchown(dest, info.st_uid, info.st_gid)
        os.utime(dest, ns=(info.st_atime_ns, info.st_mtime_ns), follow_symlinks=False)
        return
    source_fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        dest_fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.ioctl(dest_fd, _FICLONE, source_fd)
            except OSError:  # no reflinks here: copy the bytes in the kernel
                remaining = info.st_size
                while remaining > 0:
                    copied = os.copy_file_range(source_fd, dest_fd, remaining)
                    if copied == 0:
                        break
                    remaining -= copied
        finally:
            os.close(dest_fd)
    finally:
        os.close(source_fd)
    _copy_metadata(source, dest, info)
    os.utime(dest, ns=(info.st_atime_ns, info.st_mtime_ns))


#: linux/fs.h: share the source file's extents (btrfs, XFS)
_FICLONE = 0x40049409


def _copy_metadata(source: str, dest: str, info: os.stat_result) -> None:
    """Owner, extended attributes (file capabilities among them), then the mode:
    changing the owner clears set-user-ID bits and file capabilities."""
    os.chown(dest, info.st_uid, info.st_gid)
    for name in os.listxattr(source):
        os.setxattr(dest, name, os.getxattr(source, name))
    os.chmod(dest, stat.S_IMODE(info.st_mode))


def _copy_file(source: Path, dest: Path) -> None:
    """``shutil.copyfile`` of a small file (a manifest), without importing shutil."""
    dest.write_bytes(source.read_bytes())


def _write_pod_manifest(pod: Pod, manifest: dict[str, Any]) -> None:
    (pod.path / POD_MANIFEST).write_text(json.dumps(manifest))
    os.chmod(pod.path / POD_MANIFEST, 0o640)


def _install_stage1(pod: Pod, store: ImageStore, stage1: ResolvedImage) -> Path:
    """A private copy of the stage1's (small) rendered tree, the pod's root; its rootfs."""
    stage1_tree = store.render(stage1.info.id)
    stage1_dir = pod.path / "stage1"
    stage1_dir.mkdir(mode=DIR_MODE)
    copy_small_tree(stage1_tree / "rootfs", stage1_dir / "rootfs")
    _copy_file(stage1_tree / "manifest", stage1_dir / "manifest")
    (pod.path / "stage1TreeStoreID").write_text(stage1_tree.name)
    (stage1_dir / "rootfs" / "rkt" / "status").mkdir(parents=True, exist_ok=True)
    return stage1_dir / "rootfs"


def resolve_volumes(pod: Pod, manifest: dict[str, Any]) -> tuple[ResolvedVolume, ...]:
    """The pod manifest's volumes on the host; empty ones are made in the pod dir."""
    resolved = []
    for volume in manifest.get("volumes") or []:
        name = volume["name"]
        read_only = bool(volume.get("readOnly", False))
        if volume["kind"] == "host":
            source = Path(volume.get("source") or "")
            if not source.exists():
                raise PodError(f'volume "{name}": source {source} does not exist')
            real = os.path.realpath(source)
            if real != os.path.normpath(source):
                # ace.md: a symlink (anywhere on the path) is an error, not followed
                raise PodError(f'volume "{name}": source {source} goes through a symbolic '
                               f'link; give its real path ({real})')
            resolved.append(ResolvedVolume(name, "host", str(source), read_only,
                                           bool(volume.get("recursive", True))))
        else:
            shared = private_dir(pod.path / "sharedVolumes") / name
            shared.mkdir()
            os.chmod(shared, int(str(volume.get("mode", "0755")), 8))
            os.chown(shared, int(volume.get("uid", 0)), int(volume.get("gid", 0)))
            # relative to the pod directory, which moves from prepare/ to run/
            resolved.append(ResolvedVolume(name, "empty", f"sharedVolumes/{name}", read_only))
    return tuple(resolved)


def _render_app_rootfs(pod: Pod, store: ImageStore, stage1_rootfs: Path, app_name: str,
                       image_id: str, *, overlay: bool) -> tuple[str, Path]:
    """Render the app's image and give the app its rootfs; (tree store ID, lower dir)."""
    tree = store.render(image_id)
    info_dir = pod.path / "appsinfo" / app_name
    private_dir(info_dir)
    _copy_file(tree / "manifest", info_dir / "manifest")
    (info_dir / "treeStoreID").write_text(tree.name)
    lower = tree / "rootfs"
    app_root = stage1_rootfs / "opt" / "stage2" / app_name
    app_root.mkdir(parents=True)
    _copy_file(tree / "manifest", app_root / "manifest")
    if overlay:
        (app_root / "rootfs").mkdir()
        # upper/<app> becomes the app's "/": it keeps the ordinary mode
        (private_dir(pod.path / "overlay" / tree.name / "upper") / app_name).mkdir()
        (private_dir(pod.path / "overlay" / tree.name / "work") / app_name).mkdir(mode=0o700)
    else:
        copy_tree(lower, app_root / "rootfs")
    return tree.name, lower


def _app_environment(app: dict[str, Any], app_name: str,
                     request: PodRequest) -> tuple[tuple[str, str], ...]:
    """rkt's order: inherited, defaults, image (with --environment), env file, --set-env."""
    env: dict[str, str] = dict(os.environ) if request.inherit_env else {}
    env.update({
        "PATH": DEFAULT_PATH, "AC_APP_NAME": app_name,
        "AC_METADATA_URL": "", "container": "rkt",
    })
    env.update({e["name"]: e["value"] for e in app.get("environment") or []})
    env.update(dict(request.set_env_file))
    env.update(dict(request.set_env))
    return tuple(env.items())


def _ports(app: dict[str, Any]) -> tuple[AppPort, ...]:
    return tuple(
        AppPort(name=p["name"], protocol=p["protocol"], port=int(p["port"]),
                port_count=int(p.get("count", 1)),
                socket_activated=bool(p.get("socketActivated", False)))
        for p in app.get("ports") or []
    )


#: appc isolators rkt cannot enforce (yet): refused, never silently ignored
#: (ace.md lets an executor ignore isolators; rkt's rule is that what it
#: accepts takes effect)
UNENFORCED_ISOLATORS = frozenset({
    "os/linux/selinux-context", "os/linux/apparmor-profile", "os/unix/sysctl",
    "resource/block-bandwidth", "resource/block-iops", "resource/network-bandwidth",
})
#: the isolators a pod manifest may set for the whole pod (rkt.pod.cgroups)
POD_ISOLATORS = frozenset({"resource/memory", "resource/cpu", "os/linux/cpu-shares"})


def refuse_unenforced_isolators(isolators: list[dict[str, Any]] | None, what: str, *,
                                pod: bool = False) -> None:
    """One line naming the first isolator of ``what`` that rkt would not enforce."""
    for isolator in isolators or ():
        name = isolator.get("name")
        if name in UNENFORCED_ISOLATORS or (pod and name not in POD_ISOLATORS):
            raise PodError(f'{what}: isolator "{name}" is not supported (rkt cannot enforce '
                           f'it{" for a whole pod" if pod else ""}, so it does not run the pod)')


def _check_mount_targets(app_name: str, mounts: list[AppMount]) -> None:
    """ace.md: one mount target nested in (or equal to) another is an error."""
    targets = sorted((os.path.normpath("/" + m.target), m.volume) for m in mounts)
    for index, (outer, outer_volume) in enumerate(targets):
        for inner, inner_volume in targets[index + 1:]:
            if inner == outer or inner.startswith(outer.rstrip("/") + "/"):
                raise PodError(f'app "{app_name}": the mounts of volumes "{outer_volume}" '
                               f'({outer}) and "{inner_volume}" ({inner}) overlap')


def masked_paths(app: ResolvedApp) -> list[str]:
    """ace.md asks to warn when a volume hides the image's files: one line per mount."""
    notes = []
    for mount in app.mounts:
        path = resolve_in_root(app.lower, mount.target)
        if os.path.islink(path):
            continue  # resolve_in_root followed every link but a dangling last one
        if os.path.isfile(path) or (os.path.exists(path) and not os.path.isdir(path)):
            notes.append(f'volume "{mount.volume}" masks the file {mount.target} '
                         f'of app "{app.name}"')
        elif os.path.isdir(path) and os.listdir(path):
            notes.append(f'volume "{mount.volume}" masks the non-empty directory '
                         f'{mount.target} of app "{app.name}"')
    return notes


def resolve_app(
    runtime_app: dict[str, Any],
    *,
    tree: str,
    lower: Path,
    overlay: bool,
    volumes: tuple[ResolvedVolume, ...],
    request: PodRequest,
    insecure: frozenset[str],
) -> ResolvedApp:
    """One pod manifest app, resolved against its rendered image; raises on bad input."""
    app_name = runtime_app["name"]
    image_id = runtime_app["image"]["id"]
    image_name = runtime_app["image"].get("name") or image_id
    app: dict[str, Any] = runtime_app["app"]
    env = _app_environment(app, app_name, request)
    exec_ = tuple(app.get("exec") or ())
    if not exec_:
        raise PodError(f'app "{app_name}" has nothing to run')
    manifest_mounts = runtime_app.get("mounts") or []
    if not _find_in_root(lower, exec_[0], dict(env).get("PATH", DEFAULT_PATH)):
        covered = any(exec_[0].startswith(m["path"].rstrip("/") + "/") for m in manifest_mounts)
        if not covered:
            raise PodError(
                f'app "{app_name}": executable "{exec_[0]}" '
                f'not found in image "{image_name}"'
            )
    uid = _lookup_id(lower, "passwd", str(app["user"]), "user")
    gid = _lookup_id(lower, "group", str(app["group"]), "group")
    by_name = {v.name: v for v in volumes}
    mounts = []
    for mount in manifest_mounts:
        volume = by_name.get(mount["volume"])
        if volume is None:
            raise PodError(f'app "{app_name}": no volume named "{mount["volume"]}"')
        mounts.append(AppMount(mount["volume"], mount["path"], volume.read_only,
                               volume.recursive))
    _check_mount_targets(app_name, mounts)
    working_directory = app.get("workingDirectory") or "/"
    if not _exists_in_root(lower, working_directory) and not any(
        working_directory.startswith(m.target) for m in mounts
    ):
        raise PodError(
            f'app "{app_name}": working directory '
            f'"{working_directory}" does not exist in the image'
        )
    refuse_unenforced_isolators(app.get("isolators"), f'app "{app_name}"')
    pre = named_entry(app.get("eventHandlers"), "pre-start")
    post = named_entry(app.get("eventHandlers"), "post-stop")
    no_new_privs = named_entry(app.get("isolators"), "os/linux/no-new-privileges")
    oom_score_adj = named_entry(app.get("isolators"), "os/linux/oom-score-adj")
    capabilities = _capabilities(app_name, app, "capabilities" in insecure)
    seccomp = _seccomp(app_name, app, "seccomp" in insecure)
    return ResolvedApp(
        name=app_name,
        image_name=image_name,
        image_id=image_id,
        tree=tree,
        lower=str(lower),
        overlay=overlay,
        exec=exec_,
        env=env,
        uid=uid,
        gid=gid,
        supplementary_gids=tuple(int(g) for g in app.get("supplementaryGIDs") or ()),
        working_directory=working_directory,
        read_only_rootfs=bool(runtime_app.get("readOnlyRootFS", False)),
        mounts=tuple(mounts),
        capabilities=None if capabilities is None else tuple(capabilities),
        no_new_privileges=bool(no_new_privs and no_new_privs.get("value") is True),
        oom_score_adj=int(oom_score_adj["value"]) if oom_score_adj else None,
        seccomp=seccomp,
        pre_start=tuple(pre["exec"]) if pre else None,
        post_stop=tuple(post["exec"]) if post else None,
        ports=_ports(app),
        resources=resolve_resources(app.get("isolators"), f'app "{app_name}"'),
    )


def prepare_pod(
    pod: Pod,
    store: ImageStore,
    stage1: ResolvedImage,
    manifest: dict[str, Any],
    request: PodRequest,
    *,
    insecure: frozenset[str],
) -> ResolvedPod:
    """Fill the (locked) pod directory in ``prepare/``; raises on bad input.

    Writes the pod manifest, the stage1's rootfs, each app's rootfs, and the
    resolved pod (``stage1/rootfs/rkt/apps.json``), which it returns.
    """
    _write_pod_manifest(pod, manifest)
    refuse_unenforced_isolators(manifest.get("isolators"), "the pod", pod=True)
    pod_resources = resolve_resources(manifest.get("isolators"), "the pod", pod=True)
    stage1_rootfs = _install_stage1(pod, store, stage1)
    faults.point("prepare:stage1")
    volumes = resolve_volumes(pod, manifest)
    overlay = not request.no_overlay
    apps = []
    for runtime_app in manifest["apps"]:
        tree, lower = _render_app_rootfs(pod, store, stage1_rootfs, runtime_app["name"],
                                         runtime_app["image"]["id"], overlay=overlay)
        apps.append(resolve_app(runtime_app, tree=tree, lower=lower, overlay=overlay,
                                volumes=volumes, request=request, insecure=insecure))
    faults.point("prepare:apps")
    resolved = ResolvedPod(uuid=pod.uuid, apps=tuple(apps), volumes=volumes,
                           rkt_version=__version__, resources=pod_resources)
    save_resolved_pod(pod, resolved)
    if overlay:
        (pod.path / "overlay-prepared").touch()
    return resolved


def save_resolved_pod(pod: Pod, resolved: ResolvedPod) -> None:
    """Write ``apps.json``."""
    (pod.stage1_rootfs() / "rkt" / APPS_FILE).write_text(resolved.to_json())


def lift_insecure(resolved: ResolvedPod, insecure: frozenset[str]) -> ResolvedPod:
    """``resolved`` with what ``--insecure-options`` lifts (``capabilities``,
    ``seccomp``) lifted: for options given to ``run-prepared``, not ``prepare``."""
    apps = []
    for app in resolved.apps:
        if "capabilities" in insecure:
            app = app._replace(capabilities=None)
        if "seccomp" in insecure:
            app = app._replace(seccomp=None)
        apps.append(app)
    return resolved._replace(apps=tuple(apps))


def load_apps(pod: Pod) -> dict[str, Any]:
    """``apps.json`` as plain JSON data (see :func:`load_resolved_pod` for the typed pod)."""
    try:
        document: dict[str, Any] = json.loads(
            (pod.stage1_rootfs() / "rkt" / APPS_FILE).read_text()
        )
    except FileNotFoundError as exc:
        raise PodError(f'pod "{pod.uuid}" was not fully prepared') from exc
    return document


def load_resolved_pod(pod: Pod) -> ResolvedPod:
    """The pod as ``rkt prepare`` resolved it; one-line errors for a missing or
    foreign ``apps.json``."""
    try:
        return ResolvedPod.from_json((pod.stage1_rootfs() / "rkt" / APPS_FILE).read_bytes())
    except FileNotFoundError as exc:
        raise PodError(f'pod "{pod.uuid}" was not fully prepared') from exc
    except ContractVersionError as exc:
        raise PodError(f'pod "{pod.uuid}": {exc}') from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise PodError(f'pod "{pod.uuid}" has an unreadable apps.json: {exc}') from exc
