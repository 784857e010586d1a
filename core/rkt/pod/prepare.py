"""stage0's half of running a pod: from images and flags to a prepared pod directory.

Everything that can fail because of the user's input (an unknown image, a bad
volume, an exec missing from the image, a user the image does not know) fails
here, before any pod directory exists or, when it already does, with the pod
left in ``prepare/`` unlocked, which ``gc`` removes as an aborted prepare.

The result is the pod manifest (``pod``, appc's PodManifest) plus
``stage1/rootfs/rkt/apps.json``: the fully resolved apps (uids, environment,
mounts, rootfs locations) that any backend turns into its runtime spec.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rkt import __version__
from rkt.errors import ImageError, PodError, UsageError
from rkt.pod.apps import (
    AC_IDENTIFIER,
    AC_NAME,
    DEFAULT_CAPABILITIES,
    AppRequest,
    VolumeSpec,
    app_name_from_image,
)
from rkt.pod.dirs import POD_MANIFEST, Pod
from rkt.pod.supervisor import resolve_in_root

if TYPE_CHECKING:
    from rkt.store import ImageInfo, ImageStore

APPS_FILE = "apps.json"
STAGE1_BACKEND_ANNOTATION = "coreos.com/rkt/stage1/backend"
INTERFACE_VERSION_ANNOTATION = "coreos.com/rkt/stage1/interface-version"
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
                    if len(fields) >= 3 and fields[0] == name and fields[2].isdigit():
                        return int(fields[2])
    except FileNotFoundError:
        pass
    if name.isdigit():
        return int(name)
    raise PodError(f'{what} "{name}" is not a number and is not in the image\'s /etc/{database}')


def _named(items: list[dict[str, Any]] | None, name: str) -> dict[str, Any] | None:
    """The last entry called ``name`` in a list of {"name": ...} objects."""
    found = None
    for item in items or []:
        if item.get("name") == name:
            found = item
    return found


def _cap_name(name: str) -> str:
    upper = name.upper()
    return upper if upper.startswith("CAP_") else f"CAP_{upper}"


def _capabilities(app: dict[str, Any], insecure_caps: bool) -> list[str] | None:
    """The app's bounding set: the spec's default 14, shaped by its isolators."""
    if insecure_caps:
        return None  # keep every capability (--insecure-options=capabilities)
    caps = list(DEFAULT_CAPABILITIES)
    retain = _named(app.get("isolators"), "os/linux/capabilities-retain-set")
    remove = _named(app.get("isolators"), "os/linux/capabilities-remove-set")
    if retain is not None:
        caps = [_cap_name(c) for c in retain["value"].get("set", [])]
    if remove is not None:
        dropped = {_cap_name(c) for c in remove["value"].get("set", [])}
        caps = [c for c in caps if c not in dropped]
    return caps


def _check_request(request: AppRequest) -> None:
    if request.name is not None and not AC_NAME.match(request.name):
        raise UsageError(f'--name "{request.name}": not a valid app name (a-z, 0-9 and "-")')
    if request.working_dir is not None and not request.working_dir.startswith("/"):
        raise UsageError(f'--working-dir "{request.working_dir}": must be an absolute path')
    for key in request.annotations:
        if not AC_IDENTIFIER.match(key):
            raise UsageError(f'--annotation "{key}": not a valid annotation name')


def build_pod_manifest(
    images: list[ResolvedImage], request: PodRequest
) -> tuple[dict[str, Any], list[str]]:
    """The appc pod manifest (as JSON data) for these images and flags, and the app names."""
    apps: list[dict[str, Any]] = []
    names: list[str] = []
    declared = {v.name for v in request.volumes}
    volumes = [v.to_manifest() for v in request.volumes]
    for resolved, app_request in zip(images, request.apps, strict=True):
        _check_request(app_request)
        name = app_request.name or app_name_from_image(resolved.name)
        if name in names:
            raise UsageError(
                f'two apps would be named "{name}"; give one a different --name'
            )
        names.append(name)
        image_app = resolved.manifest.get("app")
        app: dict[str, Any] = (
            json.loads(json.dumps(image_app)) if image_app else {"user": "0", "group": "0"}
        )
        if app_request.exec_ is not None:
            app["exec"] = list(app_request.exec_)
        if app_request.args is not None:
            app["exec"] = [*(app.get("exec") or [])[:1], *app_request.args]
        if not app.get("exec"):
            raise UsageError(f'image "{resolved.name}" has no app to run; use --exec')
        if app_request.user is not None:
            app["user"] = app_request.user
        if app_request.group is not None:
            app["group"] = app_request.group
        if app_request.supplementary_gids is not None:
            app["supplementaryGIDs"] = app_request.supplementary_gids
        if app_request.working_dir is not None:
            app["workingDirectory"] = app_request.working_dir
        for isolator_name, caps in (
            ("os/linux/capabilities-retain-set", app_request.caps_retain),
            ("os/linux/capabilities-remove-set", app_request.caps_remove),
        ):
            if caps is not None:
                isolators = [i for i in app.get("isolators", []) if not i["name"].startswith(
                    "os/linux/capabilities-")]
                isolators.append({"name": isolator_name, "value": {"set": caps}})
                app["isolators"] = isolators
        if app_request.isolators:
            replaced = {i["name"] for i in app_request.isolators}
            app["isolators"] = [i for i in app.get("isolators", [])
                                if i["name"] not in replaced] + app_request.isolators
        if app_request.environment:
            env = {e["name"]: e["value"] for e in app.get("environment", [])}
            env.update(app_request.environment)
            app["environment"] = [{"name": k, "value": v} for k, v in env.items()]
        mounts = [{"volume": volume, "path": target} for volume, target in app_request.mounts]
        mounted = {m["volume"] for m in mounts}
        for volume_name, _ in app_request.mounts:
            if volume_name not in declared:
                raise UsageError(f'--mount: no volume named "{volume_name}" (add --volume)')
        # ace.md: a mount point with no volume gets an implicit empty one
        for point in app.get("mountPoints") or []:
            if point["name"] in mounted:
                continue
            if point["name"] not in declared:
                declared.add(point["name"])
                volumes.append(VolumeSpec(point["name"], "empty",
                                          read_only=point.get("readOnly", False)).to_manifest())
            mounts.append({"volume": point["name"],
                           "path": point.get("path") or "/" + point["name"]})
        runtime_app: dict[str, Any] = {
            "name": name,
            "image": {"name": resolved.name, "id": resolved.info.id,
                      "labels": [{"name": k, "value": v}
                                 for k, v in sorted(resolved.info.labels.items())]},
            "app": app,
            "readOnlyRootFS": bool(app_request.readonly_rootfs),
            "mounts": mounts,
        }
        if app_request.annotations:
            runtime_app["annotations"] = [
                {"name": k, "value": v} for k, v in app_request.annotations.items()
            ]
        apps.append(runtime_app)
    document: dict[str, Any] = {
        "acVersion": "0.8.11", "acKind": "PodManifest", "apps": apps, "volumes": volumes,
        "isolators": None,
        "annotations": [{"name": MUTABLE_ANNOTATION, "value": "false"}],
        "ports": [],
    }
    if request.user_annotations:
        document["userAnnotations"] = request.user_annotations
    if request.user_labels:
        document["userLabels"] = request.user_labels
    return document, names


def copy_tree(source: Path, dest: Path) -> None:
    """A faithful copy (owners, modes, links, xattrs) for --no-overlay pods."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["cp", "-a", "--reflink=auto", "--", str(source), str(dest)],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        raise PodError(f"cannot copy {source}: {result.stderr.strip()}")


def prepare_pod(
    pod: Pod,
    store: ImageStore,
    stage1: ResolvedImage,
    manifest: dict[str, Any],
    request: PodRequest,
    *,
    insecure: frozenset[str],
) -> None:
    """Fill the (locked) pod directory in ``prepare/``; raises on bad input."""
    path = pod.path
    (path / POD_MANIFEST).write_text(json.dumps(manifest))
    os.chmod(path / POD_MANIFEST, 0o640)

    # stage1: a private copy of its (small) rendered tree is the pod's root
    stage1_tree = store.render(stage1.info.id)
    stage1_dir = path / "stage1"
    stage1_dir.mkdir()
    copy_tree(stage1_tree / "rootfs", stage1_dir / "rootfs")
    shutil.copyfile(stage1_tree / "manifest", stage1_dir / "manifest")
    (path / "stage1TreeStoreID").write_text(stage1_tree.name)
    (stage1_dir / "rootfs" / "rkt" / "status").mkdir(parents=True, exist_ok=True)

    resolved_volumes: dict[str, dict[str, Any]] = {}
    for volume in manifest.get("volumes") or []:
        name = volume["name"]
        read_only = bool(volume.get("readOnly", False))
        if volume["kind"] == "host":
            source = Path(volume.get("source") or "")
            if not source.exists():
                raise PodError(f'volume "{name}": source {source} does not exist')
            resolved_volumes[name] = {
                "kind": "host", "source": str(source), "read_only": read_only,
                "recursive": bool(volume.get("recursive", True)),
            }
        else:
            shared = path / "sharedVolumes" / name
            shared.mkdir(parents=True)
            os.chmod(shared, int(str(volume.get("mode", "0755")), 8))
            os.chown(shared, int(volume.get("uid", 0)), int(volume.get("gid", 0)))
            # relative to the pod directory, which moves from prepare/ to run/
            resolved_volumes[name] = {
                "kind": "empty", "source": f"sharedVolumes/{name}",
                "read_only": read_only, "recursive": True,
            }

    base_env: list[tuple[str, str]] = []
    if request.inherit_env:
        base_env += list(os.environ.items())
    apps: list[dict[str, Any]] = []
    overlay = not request.no_overlay
    for runtime_app in manifest["apps"]:
        app_name = runtime_app["name"]
        image_id = runtime_app["image"]["id"]
        image_name = runtime_app["image"].get("name") or image_id
        tree = store.render(image_id)
        info_dir = path / "appsinfo" / app_name
        info_dir.mkdir(parents=True)
        shutil.copyfile(tree / "manifest", info_dir / "manifest")
        (info_dir / "treeStoreID").write_text(tree.name)
        lower = tree / "rootfs"
        app_root = stage1_dir / "rootfs" / "opt" / "stage2" / app_name
        app_root.mkdir(parents=True)
        shutil.copyfile(tree / "manifest", app_root / "manifest")
        if overlay:
            (app_root / "rootfs").mkdir()
            upper = path / "overlay" / tree.name / "upper" / app_name
            work = path / "overlay" / tree.name / "work" / app_name
            upper.mkdir(parents=True)
            work.mkdir(parents=True)
        else:
            copy_tree(lower, app_root / "rootfs")
        app: dict[str, Any] = runtime_app["app"]
        env: dict[str, str] = {}
        for key, value in base_env:
            env[key] = value
        env.update({
            "PATH": DEFAULT_PATH, "AC_APP_NAME": app_name,
            "AC_METADATA_URL": "", "container": "rkt",
        })
        env.update({e["name"]: e["value"] for e in app.get("environment") or []})
        env.update(dict(request.set_env_file))
        env.update(dict(request.set_env))
        exec_ = list(app.get("exec") or [])
        if not exec_:
            raise PodError(f'app "{app_name}" has nothing to run')
        if not _find_in_root(lower, exec_[0], env.get("PATH", DEFAULT_PATH)):
            covered = any(exec_[0].startswith(m["path"].rstrip("/") + "/")
                          for m in runtime_app.get("mounts") or [])
            if not covered:
                raise PodError(
                    f'app "{app_name}": executable "{exec_[0]}" '
                    f'not found in image "{image_name}"'
                )
        uid = _lookup_id(lower, "passwd", str(app["user"]), "user")
        gid = _lookup_id(lower, "group", str(app["group"]), "group")
        mounts = []
        for mount in runtime_app.get("mounts") or []:
            resolved = resolved_volumes.get(mount["volume"])
            if resolved is None:
                raise PodError(f'app "{app_name}": no volume named "{mount["volume"]}"')
            mounts.append({"volume": mount["volume"], "target": mount["path"],
                           "read_only": resolved["read_only"],
                           "recursive": resolved["recursive"]})
        pre = _named(app.get("eventHandlers"), "pre-start")
        post = _named(app.get("eventHandlers"), "post-stop")
        no_new_privs = _named(app.get("isolators"), "os/linux/no-new-privileges")
        oom_score_adj = _named(app.get("isolators"), "os/linux/oom-score-adj")
        working_directory = app.get("workingDirectory") or "/"
        apps.append({
            "name": app_name,
            "image_id": image_id,
            "image_name": image_name,
            "tree": tree.name,
            "lower": str(lower),
            "overlay": overlay,
            "exec": exec_,
            "env": list(env.items()),
            "uid": uid,
            "gid": gid,
            "supplementary_gids": list(app.get("supplementaryGIDs") or []),
            "working_directory": working_directory,
            "read_only_rootfs": bool(runtime_app.get("readOnlyRootFS", False)),
            "pre_start": list(pre["exec"]) if pre else None,
            "post_stop": list(post["exec"]) if post else None,
            "mounts": mounts,
            "capabilities": _capabilities(app, "capabilities" in insecure),
            "no_new_privileges": bool(no_new_privs and no_new_privs.get("value") is True),
            "oom_score_adj": oom_score_adj["value"] if oom_score_adj else None,
        })
        if not _exists_in_root(lower, working_directory) and not any(
            working_directory.startswith(m["target"]) for m in mounts
        ):
            raise PodError(
                f'app "{app_name}": working directory '
                f'"{working_directory}" does not exist in the image'
            )
    document = {
        "version": 1, "uuid": pod.uuid, "rkt_version": __version__, "volumes": resolved_volumes,
        "apps": apps,
    }
    (stage1_dir / "rootfs" / "rkt" / APPS_FILE).write_text(json.dumps(document, indent=1))
    if overlay:
        (path / "overlay-prepared").touch()


def load_apps(pod: Pod) -> dict[str, Any]:
    try:
        document: dict[str, Any] = json.loads(
            (pod.stage1_rootfs() / "rkt" / APPS_FILE).read_text()
        )
    except FileNotFoundError as exc:
        raise PodError(f'pod "{pod.uuid}" was not fully prepared') from exc
    return document


def stage1_backend_name(manifest: dict[str, Any]) -> str:
    annotation = _named(manifest.get("annotations"), STAGE1_BACKEND_ANNOTATION)
    if not annotation or not annotation.get("value"):
        raise ImageError(
            f'image "{manifest.get("name")}" is not a stage1 image: '
            f'it has no "{STAGE1_BACKEND_ANNOTATION}" annotation'
        )
    return str(annotation["value"])
