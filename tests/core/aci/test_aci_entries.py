"""The tar-entry rules on their own, without a tree on disk or in memory.

Both appliers (the extractor, test_aci_extract.py and test_aci_breakouts.py; the
Docker squash, tests/plugins/docker/test_squash.py) are tested end to end; these
tests pin the decisions themselves, so that a rule changes in one place, knowingly.
"""

from __future__ import annotations

from typing import Any

import pytest

from rkt.aci.entries import (
    MAX_DEPTH,
    MAX_SYMLINK_HOPS,
    ROOT,
    UP,
    ArchivePass,
    RootedWalk,
    StepKind,
    kept_xattrs,
    symlink_target,
)
from rkt.aci.tarstream import DIRECTORY, HARDLINK, REGULAR, SYMLINK, TarEntry
from rkt.errors import ArchiveError, UnsafeArchiveError


def entry(name: str, kind: str = REGULAR, link: str = "") -> TarEntry:
    return TarEntry(name, kind, 0, 0o644, 0, 0, 0, link, 0, 0, None, 0)


def test_names_are_relative_to_the_prefix() -> None:
    archive = ArchivePass("rootfs/")
    assert archive.place(entry("manifest")) is None
    assert archive.place(entry("rootfsX/a")) is None
    step = archive.place(entry("./rootfs//usr/bin/env"))
    assert step is not None
    assert (step.kind, step.parent, step.name, step.key) == (
        StepKind.MEMBER,
        ["usr", "bin"],
        "env",
        "usr/bin/env",
    )


@pytest.mark.parametrize("name", ["/etc/passwd", "rootfs/../x", "../rootfs/x", "manifest/../.."])
def test_escaping_names_are_refused_even_outside_the_prefix(name: str) -> None:
    with pytest.raises(UnsafeArchiveError):
        ArchivePass("rootfs/").place(entry(name))


def test_the_root_entry_must_be_a_directory_and_is_deferred() -> None:
    archive = ArchivePass("rootfs")
    assert archive.place(entry("rootfs/", DIRECTORY)) is None
    assert [key for key, _ in archive.finished_dirs()] == [""]
    with pytest.raises(UnsafeArchiveError, match="would replace the extraction root"):
        archive.place(entry("rootfs"))


def test_whiteouts_only_when_asked() -> None:
    step = ArchivePass().place(entry("d/.wh.x"))
    assert step is not None and step.kind is StepKind.MEMBER and step.name == ".wh.x"
    archive = ArchivePass(whiteouts=True)
    step = archive.place(entry("d/.wh.x"))
    assert step is not None and (step.kind, step.parent, step.name) == (
        StepKind.WHITEOUT,
        ["d"],
        "x",
    )
    opaque = archive.place(entry("d/.wh..wh..opq"))
    assert opaque is not None and (opaque.kind, opaque.key) == (StepKind.OPAQUE, "d")
    assert archive.place(entry(".wh..wh.plnk/123")) is None
    assert archive.place(entry("d/.wh..wh.aufs")) is None


@pytest.mark.parametrize("name", [".wh.", "d/.wh..", "d/.wh..."])
def test_whiteouts_of_nothing_dot_and_dot_dot_are_refused(name: str) -> None:
    with pytest.raises(UnsafeArchiveError, match="invalid whiteout"):
        ArchivePass(whiteouts=True).place(entry(name))


def test_an_opaque_whiteout_keeps_what_this_archive_made() -> None:
    kept: list[str] = []

    def keep(found: TarEntry, key: str) -> bool:
        kept.append(key)
        return key != "d/skipped"

    archive = ArchivePass(whiteouts=True, keep=keep)
    for name in ("d/new", "d/skipped", "e/other"):
        archive.place(entry(name))
    opaque = archive.place(entry("d/.wh..wh..opq"))
    assert opaque is not None
    assert archive.earlier(opaque, ["old", "new", "skipped"]) == ["old", "skipped"]
    assert kept == ["d/new", "d/skipped", "e/other"]


def test_the_last_directory_entry_wins_and_children_finish_first() -> None:
    archive = ArchivePass()
    first, second = entry("a", DIRECTORY), entry("a", DIRECTORY)
    archive.defer("a", first)
    archive.defer("a/b", entry("a/b", DIRECTORY))
    archive.defer("a", second)
    assert [(key, found is second) for key, found in archive.finished_dirs()] == [
        ("a", True),
        ("a/b", False),
    ]


@pytest.mark.parametrize("link", ["../../etc/passwd", "/etc/passwd", "rootfs", "other/x", ""])
def test_hard_links_stay_in_the_tree(link: str) -> None:
    archive = ArchivePass("rootfs/")
    found = entry("rootfs/l", HARDLINK, link)
    step = archive.place(found)
    assert step is not None
    with pytest.raises(UnsafeArchiveError, match="points outside the extracted tree"):
        archive.link_target(found, step)


def test_hard_link_targets() -> None:
    archive = ArchivePass("rootfs/")
    found = entry("rootfs/bin/l", HARDLINK, "./rootfs/usr/bin/x")
    step = archive.place(found)
    assert step is not None
    assert archive.link_target(found, step) == ["usr", "bin", "x"]
    itself = entry("rootfs/bin/l", HARDLINK, "rootfs/bin//l")
    assert archive.link_target(itself, step) is None


def test_empty_symlinks_and_kept_xattrs() -> None:
    with pytest.raises(ArchiveError, match="empty target"):
        symlink_target(entry("s", SYMLINK))
    assert symlink_target(entry("s", SYMLINK, "/x")) == "/x"
    xattrs = {
        "user.a": b"1",
        "security.capability": b"c",
        "security.capabilityx": b"",
        "trusted.b": b"2",
        "security.selinux": b"s",
    }
    assert kept_xattrs(xattrs) == {"user.a": b"1", "security.capability": b"c"}
    assert kept_xattrs({"trusted.b": b"2"}) is None


# -- RootedWalk, over a tree of dicts (a directory) and strings (a symlink) -------------
Tree = dict[str, Any]


def resolve(tree: Tree, path: str) -> list[str]:
    """Walk ``path`` in ``tree``: the directories it ends in, from the root."""
    stack: list[str] = []
    here = tree
    walk = RootedWalk(path.split("/"))
    for name in walk:
        if name == UP:
            stack.pop()
        elif name == ROOT:
            stack.clear()
        else:
            child = here.get(name)  # None: missing, or not a directory
            if isinstance(child, str):
                walk.follow(child)
                continue
            if child is None:
                raise walk.not_a_directory(name)
            stack.append(name)
        here = tree
        for part in stack:
            here = here[part]
    return stack


TREE: Tree = {
    "usr": {"lib": {}, "up": "../../../..", "abs": "/usr/lib", "rel": "../usr/lib"},
    "lib": "usr/lib",
    "loop": "loop",
    "file": None,  # a regular file
}


@pytest.mark.parametrize(
    ("path", "lands"),
    [
        ("usr/lib", ["usr", "lib"]),
        ("lib", ["usr", "lib"]),
        ("usr/up", []),
        ("usr/up/usr", ["usr"]),
        ("usr/abs", ["usr", "lib"]),
        ("usr/rel", ["usr", "lib"]),
        ("./usr//lib/", ["usr", "lib"]),
    ],
)
def test_symlinks_resolve_inside_the_root(path: str, lands: list[str]) -> None:
    assert resolve(TREE, path) == lands


def test_walk_bounds() -> None:
    with pytest.raises(UnsafeArchiveError, match="too many levels"):
        resolve(TREE, "loop")
    assert MAX_SYMLINK_HOPS == 40
    deep: Tree = {}
    here = deep
    for _ in range(MAX_DEPTH + 1):
        here["d"] = {}
        here = here["d"]
    assert len(resolve(deep, "/".join(["d"] * MAX_DEPTH))) == MAX_DEPTH
    with pytest.raises(ArchiveError, match=f"nested more than {MAX_DEPTH} deep"):
        resolve(deep, "/".join(["d"] * (MAX_DEPTH + 1)))
    bomb: Tree = {"a": {}, "l": "/".join(["a/.."] * 5000)}
    with pytest.raises(UnsafeArchiveError, match="expand too far"):
        resolve(bomb, "l")
    with pytest.raises(ArchiveError, match='"file" is not a directory'):
        resolve(TREE, "file/x")
