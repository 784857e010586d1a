"""A pod's private copy of its stage1 tree, made in rkt's process (issue 14): the same
files, owners, modes, times, links and extended attributes as ``cp -a`` makes."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from rkt.pod.prepare import copy_small_tree
from rkt_testing.plugin import needs_root


def _tree(root: Path) -> Path:
    source = root / "source"
    (source / "rkt" / "status").mkdir(parents=True)
    (source / "etc").mkdir()
    (source / "rkt" / "supervisor.py").write_text("print('hi')\n")
    (source / "etc" / "machine-id").write_text("")
    tool = source / "rkt" / "tool"
    tool.write_bytes(b"\x7fELF" + bytes(range(256)) * 64)
    os.chmod(tool, 0o4750)
    os.chown(tool, 0, 1234)
    os.chmod(tool, 0o4750)  # chown cleared set-user-ID
    os.setxattr(tool, "user.rkt-test", b"kept")
    os.symlink("usr/lib", source / "lib")
    os.chmod(source / "etc", 0o711)
    os.utime(source / "etc" / "machine-id", ns=(1_000_000_000, 2_000_000_000))
    os.utime(source / "etc", ns=(3_000_000_000, 4_000_000_000))
    return source


def _describe(root: Path) -> dict[str, tuple[object, ...]]:
    seen: dict[str, tuple[object, ...]] = {}
    for directory, dirs, files in os.walk(root):
        for name in [*dirs, *files, ""]:
            path = os.path.join(directory, name) if name else directory
            info = os.lstat(path)
            relative = os.path.relpath(path, root)
            content: object = None
            xattrs: object = None
            if stat.S_ISREG(info.st_mode):
                content = Path(path).read_bytes()
            if stat.S_ISLNK(info.st_mode):
                content = os.readlink(path)
            else:
                xattrs = sorted((n, os.getxattr(path, n)) for n in os.listxattr(path))
            mtime = None if relative == "." else info.st_mtime_ns
            seen[relative] = (info.st_mode, info.st_uid, info.st_gid, mtime, content, xattrs)
    return seen


@needs_root
def test_the_copy_is_what_cp_a_makes(tmp_path: Path) -> None:
    source = _tree(tmp_path)
    subprocess.run(["cp", "-a", "--", str(source), str(tmp_path / "by-cp")], check=True)
    copy_small_tree(source, tmp_path / "pod" / "stage1" / "rootfs")
    ours = _describe(tmp_path / "pod" / "stage1" / "rootfs")
    assert ours == _describe(tmp_path / "by-cp")
    assert ours["rkt/tool"][0] == stat.S_IFREG | 0o4750
    # a private copy: writing the pod's file leaves the tree store's alone
    (tmp_path / "pod" / "stage1" / "rootfs" / "etc" / "machine-id").write_text("x")
    assert (source / "etc" / "machine-id").read_text() == ""


@needs_root
def test_a_tree_with_a_fifo_is_left_to_cp(tmp_path: Path) -> None:
    source = _tree(tmp_path)
    os.mkfifo(source / "rkt" / "fifo")
    copy_small_tree(source, tmp_path / "copy")
    assert stat.S_ISFIFO(os.lstat(tmp_path / "copy" / "rkt" / "fifo").st_mode)
    assert (tmp_path / "copy" / "rkt" / "supervisor.py").read_text() == "print('hi')\n"


def test_an_unreadable_source_is_one_clear_error(tmp_path: Path) -> None:
    from rkt.errors import PodError

    with pytest.raises(PodError, match="cannot copy"):
        copy_small_tree(tmp_path / "missing", tmp_path / "copy")
