"""Acceptance 6 of issue 10: what rkt creates under its data directory has no
permission bits for others (rkt 1.x's layout: root and its group only).

Image content keeps the modes the image gives it (a rendered rootfs, the stage1's
rootfs, an app's overlay upper directory, which becomes the app's ``/``, and empty
volumes, whose mode the pod manifest sets); the directories holding them do not
let others reach them.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from rkt_testing import AciBuilder, RktEnv
from rkt_testing.plugin import needs_root

pytestmark = [
    needs_root,
    pytest.mark.root,
    pytest.mark.skipif(shutil.which("systemd-nspawn") is None, reason="needs systemd-nspawn"),
]


def image_content(rel: Path) -> bool:
    """Inside what an image or the pod manifest defines, not rkt's own layout."""
    parts = rel.parts
    if "rootfs" in parts:  # a rootfs is the app's or the stage1's "/"
        return True
    if "sharedVolumes" in parts[:-1]:
        return True
    return "overlay" in parts and len(parts) > parts.index("overlay") + 3


#: files whose mode rkt sets itself; other files it writes sit in directories that
#: others cannot enter, with whatever mode the caller's umask gives them
STORE_FILES = ("cas/blob/", "cas/imageManifest/", "cas/db/", "cas/imagelocks/",
               "cas/treestorelocks/", "locks/")


def open_to_others(data_dir: Path) -> list[str]:
    found = []
    for root, dirs, files in os.walk(data_dir):
        for name in dirs + files:
            path = Path(root) / name
            rel = path.relative_to(data_dir)
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode) or image_content(rel):
                continue
            if not stat.S_ISDIR(mode) and not rel.as_posix().startswith(STORE_FILES):
                continue
            if mode & 0o007:
                found.append(f"{oct(mode & 0o7777)} {rel}")
    return found


def test_nothing_rkt_creates_under_its_data_dir_is_open_to_others(
    rkt_env: RktEnv, aci_builder: AciBuilder
) -> None:
    image = aci_builder.build(busybox=True, exec_=["/bin/true"],
                              manifest=None, name="example.com/private")
    old_umask = os.umask(0o000)  # the worst umask a caller could have
    try:
        for stage1 in ("nspawn", "fly"):
            flag = f"--stage1-name=coreos.com/rkt/stage1-{stage1}"
            ran = rkt_env.run("--insecure-options=image", "run", flag, image,
                              "--volume=scratch,kind=empty", "--mount=volume=scratch,target=/s")
            assert ran.returncode == 0, ran.stderr
            prepared = rkt_env.run("--insecure-options=image", "prepare", flag, "--no-overlay",
                                   image)
            assert prepared.returncode == 0, prepared.stderr
    finally:
        os.umask(old_umask)
    assert list((rkt_env.data_dir / "pods" / "run").iterdir())
    assert list((rkt_env.data_dir / "cas" / "tree").iterdir())
    assert open_to_others(rkt_env.data_dir) == []


def test_a_data_dir_rkt_creates_is_private_too(tmp_path: Path) -> None:
    env = RktEnv(tmp_path / "fresh")  # no data dir yet: rkt makes it
    assert env.run("image", "list").returncode == 0
    assert stat.S_IMODE(env.data_dir.stat().st_mode) & 0o007 == 0
    assert open_to_others(env.data_dir) == []
