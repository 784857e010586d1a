"""The header squash against the real extractor: the same layers must give the same tree.

Reference: every layer extracted with :func:`rkt.aci.extract.extract_tar` (whiteouts
on) into one directory, as docker2aci-style converters do. Squash: the layers applied
to a :class:`SquashedTree`, written as an ACI, and that ACI rendered by the same
extractor, as the store renders images. Trees are compared by type, mode, owner,
content, link target, hard-link groups and times; errors by class. Hand-written
cases cover the breakout checklist; a seeded random walk covers the rest.
"""

from __future__ import annotations

import io
import os
import random
import stat
import tarfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from rkt.aci.extract import extract_tar
from rkt.aci.writer import ustar_header
from rkt.errors import RktError
from rkt_plugins.docker.squash import PlainLayer, SquashedTree
from rkt_testing.plugin import needs_root

MTIME = 1_500_000_000
EPOCH = 1_234_567_890

Member = tuple[str, bytes, dict[str, Any]]  # name, type, fields


def member(name: str, kind: bytes = tarfile.REGTYPE, **fields: Any) -> Member:
    return (name, kind, fields)


def tar_bytes(members: Sequence[Member]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, fields in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mtime = fields.get("mtime", MTIME)
            info.mode = fields.get("mode", 0o755 if kind == tarfile.DIRTYPE else 0o644)
            info.uid = fields.get("uid", 0)
            info.gid = fields.get("gid", 0)
            info.linkname = fields.get("link", "")
            info.devmajor, info.devminor = fields.get("dev", (0, 0))
            if "xattrs" in fields:
                info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in fields["xattrs"].items()}
            data = fields.get("data", b"")
            if kind == tarfile.REGTYPE:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return buffer.getvalue()


def snapshot(root: Path, started: float) -> dict[str, Any]:
    """Everything observable about a tree; "now" times are normalised to "changed"."""
    found: dict[str, Any] = {}
    inodes: dict[tuple[int, int], list[str]] = {}
    for directory, dirs, files in os.walk(root):
        for name in sorted(dirs + files):
            path = Path(directory, name)
            rel = path.relative_to(root).as_posix()
            st = path.lstat()
            mtime = "changed" if st.st_mtime >= started - 1 or st.st_mtime == EPOCH \
                else int(st.st_mtime)
            record: dict[str, Any] = {
                "type": stat.S_IFMT(st.st_mode), "mode": stat.S_IMODE(st.st_mode),
                "owner": (st.st_uid, st.st_gid), "mtime": mtime,
            }
            if stat.S_ISLNK(st.st_mode):
                record["target"] = os.readlink(path)
                del record["mode"]
            elif stat.S_ISREG(st.st_mode):
                record["data"] = path.read_bytes()
                if st.st_nlink > 1:
                    inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                record["dev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
            if not stat.S_ISLNK(st.st_mode):
                names = os.listxattr(path)
                record["xattrs"] = {n: os.getxattr(path, n) for n in sorted(names)
                                    if n.startswith("user.")}
            found[rel] = record
    found["<hard links>"] = sorted(sorted(group) for group in inodes.values())
    root_st = root.lstat()
    found["<root>"] = (stat.S_IMODE(root_st.st_mode), root_st.st_uid)
    return found


def reference(layers: list[bytes], work: Path) -> tuple[dict[str, Any] | None, str | None]:
    rootfs = work / "reference"
    rootfs.mkdir(mode=0o755)
    os.chmod(rootfs, 0o755)
    started = time.time()
    try:
        for layer in layers:
            extract_tar(io.BytesIO(layer), rootfs, strip_prefix="", whiteouts=True)  # type: ignore[arg-type]
    except RktError as exc:
        return None, type(exc).__name__
    return snapshot(rootfs, started), None


def squashed(layers: list[bytes], work: Path) -> tuple[dict[str, Any] | None, str | None]:
    started = time.time()
    aci = work / "image.aci"
    try:
        with SquashedTree() as tree:
            for index, layer in enumerate(layers):
                path = work / f"layer{index}.tar"
                path.write_bytes(layer)
                tree.apply(PlainLayer(f"layer {index}", path))
            tree.write_aci(b'{"acKind": "ImageManifest"}', aci, epoch=EPOCH)
    except RktError as exc:
        return None, type(exc).__name__
    rendered = work / "rendered"
    rendered.mkdir()
    extract_tar(aci, rendered, strip_prefix="rootfs/")
    result = snapshot(rendered, started)
    return result, None


def compare(layers: list[bytes], work: Path) -> None:
    (work / "a").mkdir()
    (work / "b").mkdir()
    expected, expected_error = reference(layers, work / "a")
    got, error = squashed(layers, work / "b")
    assert error == expected_error
    if expected is not None:
        assert got is not None
        assert set(got) == set(expected)
        for key in expected:
            assert got[key] == expected[key], key


# -- hand-written cases -------------------------------------------------------------------
D, F, S, H = tarfile.DIRTYPE, tarfile.REGTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE

CASES: dict[str, list[list[Member]]] = {
    "files and directories": [
        [member("etc", D), member("etc/a", data=b"a"), member("bin", D, mode=0o700),
         member("bin/x", mode=0o4755, uid=7, gid=8, data=b"#!x")],
    ],
    "whiteouts": [
        [member("etc", D), member("etc/a", data=b"a"), member("etc/b", data=b"b"),
         member("var", D), member("var/d", D), member("var/d/x", data=b"x")],
        [member("etc/.wh.a"), member("var/.wh.d"), member("var/.wh.missing"),
         member("nowhere/.wh.x")],
    ],
    "opaque directory": [
        [member("d", D), member("d/old", data=b"1"), member("d/sub", D),
         member("d/sub/x", data=b"2")],
        [member("d", D), member("d/new", data=b"3"), member("d/.wh..wh..opq"),
         member("d/later", data=b"4")],
    ],
    "replacements": [
        [member("f", data=b"file"), member("d", D), member("d/x", data=b"x"),
         member("s", S, link="d"), member("t", D)],
        [member("f", D), member("d", data=b"now a file"), member("s", D),
         member("s/inside", data=b"i"), member("t", S, link="/f")],
    ],
    "symlinked parents stay inside": [
        [member("a", S, link="b"), member("b", D), member("abs", S, link="/b"),
         member("up", S, link="../../../.."), member("dangling", S, link="/made/here")],
        [member("a/1", data=b"1"), member("abs/2", data=b"2"), member("up/3", data=b"3"),
         member("dangling/4", data=b"4")],
    ],
    "absolute symlink below the root": [
        [member("d", D), member("d/abs", S, link="/b"), member("d/rel", S, link="../b"),
         member("b", D), member("d/deep", S, link="/d/abs/..//./b/")],
        [member("d/abs/1", data=b"1"), member("d/rel/2", data=b"2"),
         member("d/deep/3", data=b"3"), member("d/abs/.wh.2")],
    ],
    "whiteout through a symlink": [
        [member("tmp", D), member("tmp/canary", data=b"c"), member("esc", S, link="/tmp")],
        [member("esc/.wh.canary"), member("esc/written", data=b"w")],
    ],
    "hard links": [
        [member("a", data=b"shared"), member("b", H, link="a"), member("s", S, link="a"),
         member("ls", H, link="s")],
        [member("c", H, link="a"), member("a", data=b"replaced"), member("d", H, link="./b")],
    ],
    "hard link to itself and over its name": [
        [member("a", data=b"x"), member("a", H, link="a"), member("b", data=b"y"),
         member("b", H, link="a")],
    ],
    "directory metadata at the end of the layer": [
        [member("d", D, mode=0o700, uid=5), member("d/x", data=b"x"),
         member("d", D, mode=0o750, uid=6, mtime=1_400_000_000)],
        [member("d/y", data=b"y")],
        [member("e", D), member("e", S, link="d")],
    ],
    "root entry": [[member(".", D, mode=0o750, uid=3), member("x", data=b"x")]],
    "aufs metadata": [
        [member(".wh..wh.plnk", D), member(".wh..wh.plnk/123", data=b"x"),
         member("d", D), member("d/.wh..wh.aufs", data=b"")],
    ],
    "devices": [
        [member("dev", D), member("dev/null", tarfile.CHRTYPE, mode=0o666, dev=(1, 3)),
         member("dev/loop", tarfile.BLKTYPE, dev=(7, 0)),
         member("dev/fifo", tarfile.FIFOTYPE)],
    ],
    "xattrs": [
        [member("f", data=b"x", xattrs={"user.comment": "hello", "trusted.no": "x"}),
         member("d", D, xattrs={"user.dir": "yes"})],
    ],
    # -- refused ----------------------------------------------------------------------
    "dot-dot name": [[member("../escape", data=b"x")]],
    "absolute name": [[member("/etc/passwd", data=b"x")]],
    "hard link outside": [[member("l", H, link="../../etc/passwd")]],
    "absolute hard link": [[member("l", H, link="/etc/passwd")]],
    "hard link to a missing file": [[member("l", H, link="nothing")]],
    "hard link to a directory": [[member("d", D), member("l", H, link="d")]],
    "hard link that replaces its target": [
        [member("d", D), member("d/f", data=b"x"), member("s", S, link="d")],
        [member("s/f", H, link="d/f")],
    ],
    "whiteout of dot-dot": [[member("d", D), member("d/.wh..."), member("x", data=b"x")]],
    "empty whiteout": [[member(".wh.")]],
    "symlink loop": [[member("a", S, link="b"), member("b", S, link="a"),
                      member("a/x", data=b"x")]],
    "file as a parent": [[member("f", data=b"x"), member("f/x", data=b"y")]],
    "root replaced by a file": [[member(".", data=b"x")]],
    "empty symlink": [[member("s", S, link="")]],
    "hard link over the directory of its target": [
        [member("d", D), member("d/f", data=b"x")],
        [member("d", H, link="d/f")],
    ],
    "hard link over the directory of its target, one layer": [
        [member("d", D), member("d/f", data=b"x"), member("d", H, link="d/f")],
    ],
    "nesting too deep": [[member("d/" * 600 + "f", data=b"x")]],
    "symlink expansion bomb": [
        [member("a", D), member("l0", S, link="a/../" * 400 + "a"),
         *(member(f"l{i}", S, link="/".join([f"l{i - 1}/.."] * 20) + f"/l{i - 1}")
           for i in range(1, 30)),
         member("l29/f", data=b"x")],
    ],
}


@needs_root
@pytest.mark.parametrize("case", sorted(CASES))
def test_same_tree_as_the_extractor(case: str, tmp_path: Path) -> None:
    compare([tar_bytes(layer) for layer in CASES[case]], tmp_path)


@needs_root
def test_random_layers_give_the_same_tree(tmp_path: Path) -> None:
    rng = random.Random(20240521)
    names = ["a", "b", "c", "d/e", "d/f", "a/x", "b/y", "d", "s/t", "d/e/z", "s/t/u"]
    targets = ["a", "b", "d", "/d", "../d", "/", "d/e", "missing", "../../..", "s", "/s/t",
               "..", "/a/x", "e"]
    for round_number in range(300):
        layers = []
        for _ in range(rng.randint(1, 4)):
            members: list[Member] = []
            for _ in range(rng.randint(1, 8)):
                name = rng.choice(names)
                op = rng.random()
                if op < 0.3:
                    members.append(member(name, data=rng.choice([b"1", b"22", b""]),
                                          mode=rng.choice([0o644, 0o600, 0o4755])))
                elif op < 0.55:
                    members.append(member(name, D, mode=rng.choice([0o755, 0o700])))
                elif op < 0.72:
                    members.append(member(name, S, link=rng.choice(targets)))
                elif op < 0.77:
                    members.append(member(name, H, link=rng.choice(names)))
                elif op < 0.92:
                    parent, _, leaf = name.rpartition("/")
                    members.append(member(f"{parent}/.wh.{leaf}" if parent else f".wh.{leaf}"))
                else:
                    parent = name.rpartition("/")[0]
                    members.append(member(f"{parent}/.wh..wh..opq" if parent
                                          else ".wh..wh..opq"))
            layers.append(tar_bytes(members))
        work = tmp_path / f"round{round_number}"
        work.mkdir()
        compare(layers, work)


def test_fast_headers_equal_tarfile_headers() -> None:
    checked = 0
    for name, kind, link in [
        ("rootfs/a", F, ""), ("rootfs/dir", D, ""), ("rootfs/dir/", D, ""),
        ("rootfs/l", S, "../x"), ("rootfs/h", H, "rootfs/a"),
        ("rootfs/c", tarfile.CHRTYPE, ""), ("rootfs/b", tarfile.BLKTYPE, ""),
        ("rootfs/f", tarfile.FIFOTYPE, ""), ("x" * 100, F, ""), ("x" * 101, F, ""),
        ("é", F, ""), ("rootfs/l2", S, "y" * 101),
    ]:
        for mode, uid, size, mtime in [(0o4755, 0, 0, 0), (0o644, 1000, 12345, 1_600_000_000),
                                       (0o777, 8**7 - 1, 8**11 - 1, 8**11 - 1),
                                       (0o1777, 8**7, 5, 5), (0o644, 0, 0, -1)]:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.mode = kind, link, mode
            info.uid, info.gid, info.mtime = uid, uid // 2, mtime
            info.size = size if kind == F else 0
            info.uname = info.gname = ""
            info.devmajor, info.devminor = 8, 1
            fast = ustar_header(info)
            if fast is not None:
                checked += 1
                assert fast == info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    assert checked >= 20


def test_entry_bound(tmp_path: Path) -> None:
    layer = tmp_path / "layer.tar"
    layer.write_bytes(tar_bytes([member(f"f{i}", data=b"") for i in range(20)]))
    with SquashedTree(max_entries=10) as tree, pytest.raises(RktError, match="more than 10"):
        tree.apply(PlainLayer("layer", layer))
