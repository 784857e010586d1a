"""``rkt export``: an exited pod's app, as it ended, as a new ACI.

The ACI has the app's image manifest and its rootfs with the changes the app
made: with overlayfs the image's tree merged with the app's upper directory, as
the app saw it; without, the app's private copy. It is unsigned and
uncompressed, and written beside the target and renamed into place.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from rkt.errors import PodError, UsageError
from rkt.pod.dirs import Pod

#: file type bits of a character device (``stat.S_IFCHR``)
_CHAR_DEVICE = 0o020000
_FILE_TYPE = 0o170000


def export_app(pod: Pod, output: Path, *, app_name: str | None = None,
               overwrite: bool = False) -> None:
    """Write the app ``app_name`` (needed when the pod has several) of ``pod`` to ``output``."""
    from rkt.pod.prepare import load_apps

    if pod.state() not in ("exited", "exited garbage"):
        raise PodError(f'pod "{pod.uuid}" has not exited (state: {pod.state()})')
    if output.suffix != ".aci":
        raise UsageError(f"export: output file must end in .aci: {output}")
    if output.exists() and not overwrite:
        raise UsageError(f"export: {output} already exists (use --overwrite)")
    apps = load_apps(pod)["apps"]
    if app_name:
        apps = [a for a in apps if a["name"] == app_name]
        if not apps:
            raise UsageError(f'pod "{pod.uuid}" has no app "{app_name}"')
    elif len(apps) > 1:
        raise UsageError("the pod has several apps: choose one with --app")
    app = apps[0]
    manifest = (pod.path / "appsinfo" / app["name"] / "manifest").read_bytes()
    with tempfile.TemporaryDirectory(dir=pod.path) as work:
        rootfs = Path(work) / "rootfs"
        if app["overlay"]:
            merge_overlay(Path(app["lower"]),
                          pod.path / "overlay" / app["tree"] / "upper" / app["name"], rootfs)
        else:
            shutil.copytree(pod.stage1_rootfs() / "opt" / "stage2" / app["name"] / "rootfs",
                            rootfs, symlinks=True)
        tmp = output.with_name(f".{output.name}.tmp")
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            manifest_file = Path(work) / "manifest"
            manifest_file.write_bytes(manifest)
            tar.add(manifest_file, "manifest")
            tar.add(rootfs, "rootfs")
        os.rename(tmp, output)


def _is_whiteout(path: Path, info: os.stat_result) -> bool:
    # overlayfs marks a deleted entry with a 0:0 character device in the upper dir
    return (os.major(info.st_rdev) == 0 and os.minor(info.st_rdev) == 0
            and not path.is_dir() and (info.st_mode & _FILE_TYPE) == _CHAR_DEVICE)


def merge_overlay(lower: Path, upper: Path, dest: Path) -> None:
    """Copy ``lower`` + ``upper`` into ``dest`` as overlayfs would show them."""
    from rkt.pod.prepare import copy_tree

    copy_tree(lower, dest)
    for root, dirs, files in os.walk(upper):
        rel = Path(root).relative_to(upper)
        for name in [*files, *dirs]:
            source = Path(root) / name
            target = dest / rel / name
            is_whiteout = _is_whiteout(source, source.lstat())
            if target.is_dir() and not target.is_symlink() and (is_whiteout or not
                                                                 source.is_dir()):
                shutil.rmtree(target)
            elif (target.exists() or target.is_symlink()) and not (
                source.is_dir() and target.is_dir()
            ):
                target.unlink()
            if is_whiteout:
                continue
            if source.is_dir() and not source.is_symlink():
                target.mkdir(exist_ok=True)
                shutil.copystat(source, target)
            else:
                shutil.copy2(source, target, follow_symlinks=False)
