"""Hostile archives must not touch anything outside the extraction directory.

The case list follows containerd's ``archive/tar_test.go`` ``TestBreakouts``
(anchors.md 2.3) plus moby's invalid-filename/symlink/hardlink tests. containerd's
``/etc`` (inside its root) becomes either a directory inside ``dest`` or, to make
an escape observable, the host path of the sandbox's ``outside`` directory, whose
canary files the ``sandbox`` fixture checks after *every* case: content, mode,
owner, link count and mtime unchanged, and nothing new beside ``dest``.

Outcomes follow rkt.aci.extract's documented model: names that are absolute or
have ``..`` are rejected (containerd cleans them instead, so those cases expect an
error here); symlinks in parent paths are resolved inside ``dest`` (containment).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aci_tarbuild import Sandbox, TarBuilder

from rkt.aci.extract import extract_tar
from rkt.errors import ArchiveError, UnsafeArchiveError


def inside(box: Sandbox, path: str) -> Path:
    """Where an absolute path lands under chroot semantics."""
    return box.dest / path.lstrip("/")


def same_file(a: Path, b: Path) -> bool:
    return a.lstat().st_ino == b.lstat().st_ino


def escape(box: Sandbox) -> str:
    """A relative path from dest's root that leads to ``outside`` on the host."""
    return "../" * 12 + str(box.outside).lstrip("/")


def etc_passwd(box: Sandbox) -> None:
    (box.dest / "etc").mkdir()
    (box.dest / "etc/passwd").write_text("inside")


@dataclass
class Case:
    name: str
    tar: Callable[[Sandbox], TarBuilder]
    raises: type[Exception] | None = None
    check: Callable[[Sandbox], object] | None = None
    setup: Callable[[Sandbox], object] | None = None
    whiteouts: bool = False


def tar() -> TarBuilder:
    return TarBuilder()


CASES = [
    # -- containerd TestBreakouts -----------------------------------------------------
    Case(
        "SymlinkAbsolute",
        lambda b: (
            tar().dir("etc").symlink("localetc", str(b.outside)).file("localetc/canary", b"broken")
        ),
        check=lambda b: inside(b, str(b.outside) + "/canary").read_bytes() == b"broken",
    ),
    Case(
        "SymlinkUpAndOut",
        lambda b: (
            tar()
            .dir("dummy")
            .symlink("localetc", "dummy/../../outside")
            .file("localetc/canary", b"x")
        ),
        check=lambda b: (b.dest / "outside/canary").read_bytes() == b"x",
    ),
    Case(
        "SymlinkMultipleAbsolute",
        lambda b: (
            tar()
            .dir("dummy")
            .symlink("dummy/etc", str(b.outside))
            .symlink("localetc", "/dummy/etc")
            .file("localetc/canary", b"x")
        ),
        check=lambda b: inside(b, str(b.outside) + "/canary").read_bytes() == b"x",
    ),
    Case(
        "SymlinkMultipleRelative",
        lambda b: (
            tar()
            .dir("dummy")
            .symlink("dummy/etc", "../../../outside")
            .symlink("localetc", "./dummy/etc")
            .file("localetc/canary", b"x")
        ),
        check=lambda b: (b.dest / "outside/canary").read_bytes() == b"x",
    ),
    Case(
        "SymlinkEmptyFile",
        lambda b: tar().symlink("localcanary", str(b.canary)).file("localcanary", b""),
        check=lambda b: (
            (b.dest / "localcanary").is_file() and not (b.dest / "localcanary").is_symlink()
        ),
    ),
    Case(
        "SymlinkEmptyFileInDir",
        lambda b: (
            tar()
            .dir("etc")
            .file("etc/emptied", b"full")
            .symlink("localetc", "/etc")
            .file("localetc/emptied", b"")
        ),
        check=lambda b: (b.dest / "etc/emptied").read_bytes() == b"",
    ),
    Case(
        "HardlinkRelative",
        lambda b: (
            tar()
            .dir("etc")
            .file("etc/passwd", b"inside")
            .dir("breakouts")
            .symlink("breakouts/d1", "../../etc")
            .hardlink("breakouts/mypasswd", "breakouts/d1/passwd")
        ),
        check=lambda b: same_file(b.dest / "breakouts/mypasswd", b.dest / "etc/passwd"),
    ),
    Case(
        "HardlinkRelativeToOutside",
        lambda b: (
            tar()
            .dir("breakouts")
            .symlink("breakouts/d1", "../../outside")
            .hardlink("breakouts/stolen", "breakouts/d1/canary")
        ),
        raises=ArchiveError,  # resolves to dest/outside/canary, which does not exist
    ),
    Case(
        "HardlinkDownAndOut",
        lambda b: (
            tar()
            .dir("etc")
            .file("etc/passwd", b"inside")
            .dir("breakouts")
            .dir("downandout")
            .symlink("breakouts/d1", "../downandout/../../etc")
            .hardlink("breakouts/mypasswd", "breakouts/d1/passwd")
        ),
        check=lambda b: same_file(b.dest / "breakouts/mypasswd", b.dest / "etc/passwd"),
    ),
    Case(
        "HardlinkAbsolute",
        lambda b: (
            tar()
            .dir("etc")
            .file("etc/passwd", b"inside")
            .symlink("localetc", "/etc")
            .hardlink("localpasswd", "localetc/passwd")
        ),
        check=lambda b: same_file(b.dest / "localpasswd", b.dest / "etc/passwd"),
    ),
    Case(
        "HardlinkAbsoluteToOutside",
        lambda b: tar().symlink("localout", str(b.outside)).hardlink("stolen", "localout/canary"),
        raises=ArchiveError,
    ),
    Case(
        "HardlinkRelativeLong",
        lambda b: (
            tar()
            .dir("etc")
            .file("etc/passwd", b"inside")
            .symlink("localetc", "../../../../../../../etc")
            .hardlink("localpasswd", "localetc/passwd")
        ),
        check=lambda b: same_file(b.dest / "localpasswd", b.dest / "etc/passwd"),
    ),
    Case(
        "HardlinkRelativeUpAndOut",
        # "upandout" does not exist, so the kernel would fail this path too.
        lambda b: (
            tar()
            .dir("etc")
            .file("etc/passwd", b"inside")
            .symlink("localetc", "upandout/../../../etc")
            .hardlink("localpasswd", "localetc/passwd")
        ),
        raises=ArchiveError,
    ),
    Case(
        "HardlinkDirectRelative",
        lambda b: tar().hardlink("localpasswd", "../../../../../etc/passwd"),
        raises=UnsafeArchiveError,
    ),
    Case(
        "HardlinkDirectRelativeCanary",
        lambda b: tar().hardlink("stolen", "../outside/canary"),
        raises=UnsafeArchiveError,
    ),
    Case(
        "HardlinkDirectAbsolute",
        lambda b: tar().hardlink("stolen", str(b.canary)),
        raises=UnsafeArchiveError,
    ),
    Case(
        "SymlinkParentDirectory",
        lambda b: tar().symlink("..", str(b.outside)).file("../canary", b"x"),
        raises=UnsafeArchiveError,
    ),
    Case(
        "SymlinkEmptyFilename",
        lambda b: tar().symlink("", str(b.outside)).hardlink("localpasswd", "canary"),
        raises=ArchiveError,
    ),
    Case(
        "SymlinkParentRelative",
        lambda b: tar().symlink("localetc/sub/..", str(b.outside)).file("localetc/canary", b"x"),
        raises=UnsafeArchiveError,
    ),
    Case(
        "SymlinkSlashEnded",
        lambda b: (
            tar()
            .dir("etc")
            .file("etc/passwd", b"inside")
            .dir("localetc/")
            .hardlink("localetc/localpasswd", "etc/passwd")
        ),
        check=lambda b: same_file(b.dest / "localetc/localpasswd", b.dest / "etc/passwd"),
    ),
    Case(
        "SymlinkSlashEndedToOutside",
        lambda b: tar().symlink("localetc/", "../outside").file("localetc/canary", b"x"),
        check=lambda b: (b.dest / "outside/canary").read_bytes() == b"x",
    ),
    Case(
        "SymlinkOverrideDirectory",
        lambda b: tar().symlink("localetc", "/etc").hardlink("localetc/localpasswd", "etc/passwd"),
        setup=lambda b: (etc_passwd(b), (b.dest / "localetc").mkdir()),
        check=lambda b: same_file(b.dest / "etc/localpasswd", b.dest / "etc/passwd"),
    ),
    Case(
        "SymlinkOverrideDirectoryRelative",
        lambda b: (
            tar().symlink("localetc", "../../etc").hardlink("localetc/localpasswd", "etc/passwd")
        ),
        setup=lambda b: (etc_passwd(b), (b.dest / "localetc").mkdir()),
        check=lambda b: same_file(b.dest / "etc/localpasswd", b.dest / "etc/passwd"),
    ),
    Case(
        "SymlinkOverrideDirectoryToOutside",
        lambda b: (
            tar().symlink("localetc", str(b.outside)).file("localetc/canary", b"x", mode=0o777)
        ),
        setup=lambda b: (b.dest / "localetc").mkdir(),
        check=lambda b: inside(b, str(b.outside) + "/canary").read_bytes() == b"x",
    ),
    Case(
        "DirectoryOverrideSymlink",
        lambda b: tar().dir("localetc", mode=0o777).hardlink("localetc/localpasswd", "etc/passwd"),
        setup=lambda b: (etc_passwd(b), os.symlink(str(b.outside), b.dest / "localetc")),
        check=lambda b: (
            not (b.dest / "localetc").is_symlink()
            and same_file(b.dest / "localetc/localpasswd", b.dest / "etc/passwd")
        ),
    ),
    Case(
        "DirectoryOverrideSymlinkAndHardlink",
        lambda b: tar().dir("localetc").file("localetc/localpasswd", b"different"),
        setup=lambda b: (
            etc_passwd(b),
            os.symlink("etc", b.dest / "localetc"),
            os.link(b.dest / "etc/passwd", b.dest / "etc/localpasswd"),
        ),
        check=lambda b: (
            (b.dest / "etc/passwd").read_text() == "inside"
            and not same_file(b.dest / "localetc/localpasswd", b.dest / "etc/passwd")
        ),
    ),
    Case(
        "WhiteoutRootParent",
        lambda b: tar().file(".wh...", b""),
        raises=UnsafeArchiveError,
        whiteouts=True,
    ),
    Case(
        "WhiteoutParent",
        lambda b: tar().file("etc/.wh...", b""),
        setup=etc_passwd,
        raises=UnsafeArchiveError,
        whiteouts=True,
    ),
    Case(
        "WhiteoutRoot",
        lambda b: tar().file(".wh..", b""),
        raises=UnsafeArchiveError,
        whiteouts=True,
    ),
    Case(
        "WhiteoutCurrentDirectory",
        lambda b: tar().file("etc/.wh..", b""),
        setup=etc_passwd,
        raises=UnsafeArchiveError,
        whiteouts=True,
    ),
    Case(
        "WhiteoutSymlink",
        lambda b: tar().file(".wh.localetc", b""),
        setup=lambda b: (etc_passwd(b), os.symlink(str(b.outside), b.dest / "localetc")),
        check=lambda b: not (b.dest / "localetc").is_symlink() and (b.dest / "etc/passwd").exists(),
        whiteouts=True,
    ),
    Case(
        "WhiteoutSymlinkPath",
        lambda b: tar().file("localetc/.wh.whitedout", b""),
        setup=lambda b: (
            etc_passwd(b),
            (b.dest / "etc/whitedout").write_text("x"),
            os.symlink("/etc", b.dest / "localetc"),
        ),
        check=lambda b: (
            not (b.dest / "etc/whitedout").exists() and (b.dest / "etc/passwd").exists()
        ),
        whiteouts=True,
    ),
    Case(
        "WhiteoutSymlinkPathToOutside",
        lambda b: (
            tar()
            .file("localout/.wh.canary", b"")
            .file("up/.wh.canary", b"")
            .file("up/.wh.dir", b"")
        ),
        setup=lambda b: (
            os.symlink(str(b.outside), b.dest / "localout"),
            os.symlink("../outside", b.dest / "up"),
        ),
        whiteouts=True,
    ),
    Case(
        "WhiteoutDirectoryName",
        lambda b: tar().file(".wh.etc/somefile", b"non-empty"),
        setup=etc_passwd,
        check=lambda b: (
            (b.dest / "etc/passwd").exists()
            and (b.dest / ".wh.etc/somefile").read_bytes() == b"non-empty"
        ),
        whiteouts=True,
    ),
    Case(
        "WhiteoutDeadSymlinkParent",
        lambda b: tar().file("localetc/.wh.etc", b""),
        setup=lambda b: (etc_passwd(b), os.symlink("/dne", b.dest / "localetc")),
        check=lambda b: (b.dest / "etc/passwd").read_text() == "inside",
        whiteouts=True,
    ),
    Case(
        "WhiteoutRelativePath",
        lambda b: tar().file("dne/../.wh.etc", b""),
        setup=lambda b: (etc_passwd(b), os.symlink("/dne", b.dest / "localetc")),
        raises=UnsafeArchiveError,
        whiteouts=True,
    ),
    Case(
        "OpaqueWhiteoutThroughSymlink",
        lambda b: tar().file("localout/.wh..wh..opq", b"").file("up/.wh..wh..opq", b""),
        setup=lambda b: (
            os.symlink(str(b.outside), b.dest / "localout"),
            os.symlink("../outside", b.dest / "up"),
        ),
        whiteouts=True,
    ),
    Case(
        "HardlinkSymlinkBeforeCreateTarget",
        lambda b: (
            tar()
            .dir("etc")
            .symlink("localpasswd", "/etc/passwd")
            .hardlink("localpasswd-dup", "localpasswd")
            .file("etc/passwd", b"after")
        ),
        check=lambda b: (
            os.readlink(b.dest / "localpasswd-dup") == "/etc/passwd"
            and same_file(b.dest / "localpasswd-dup", b.dest / "localpasswd")
            and (b.dest / "etc/passwd").read_bytes() == b"after"
        ),
    ),
    Case(
        "HardlinkSymlinkThenWrite",
        lambda b: (
            tar()
            .symlink("localcanary", str(b.canary))
            .hardlink("dup", "localcanary")
            .file("dup", b"overwritten", mode=0o777)
        ),
        check=lambda b: (
            (b.dest / "dup").read_bytes() == b"overwritten"
            and os.readlink(b.dest / "localcanary") == str(b.canary)
        ),
    ),
    Case(
        "HardlinkSymlinkRelative",
        lambda b: (
            tar()
            .symlink("passwdlink", "../../../../../outside/canary")
            .hardlink("localpasswd", "passwdlink")
        ),
        check=lambda b: same_file(b.dest / "localpasswd", b.dest / "passwdlink"),
    ),
    Case(
        "HardlinkSymlinkAbsolute",
        lambda b: (
            tar()
            .symlink("passwdlink", str(b.canary))
            .hardlink("localpasswd", "passwdlink", mode=0o777)
        ),
        check=lambda b: same_file(b.dest / "localpasswd", b.dest / "passwdlink"),
    ),
    Case(
        # CVE-2021-32760: a hard link to a symlink must not chmod/chown its target.
        "HardlinkSymlinkChmod",
        lambda b: (
            tar()
            .symlink("link", str(b.canary))
            .hardlink("sketchylink", "link", mode=0o777, uid=4242, gid=4242)
            .symlink("dirlink", str(b.outside / "dir"))
            .hardlink("sketchydir", "dirlink", mode=0o777)
        ),
        check=lambda b: same_file(b.dest / "sketchylink", b.dest / "link"),
    ),
    # -- moby pkg/archive TestUntarInvalid* and more -------------------------------------
    Case(
        "NameDotDot", lambda b: tar().file("../outside/canary", b"pwned"), raises=UnsafeArchiveError
    ),
    Case(
        "NameDotDotDeep",
        lambda b: tar().dir("a").file("a/../../outside/canary", b"p"),
        raises=UnsafeArchiveError,
    ),
    Case("NameAbsolute", lambda b: tar().file(str(b.canary), b"pwned"), raises=UnsafeArchiveError),
    Case(
        "NameAbsoluteDotDot",
        lambda b: tar().file("/../outside/canary", b"pwned"),
        raises=UnsafeArchiveError,
    ),
    Case(
        "DirectoryNameDotDot",
        lambda b: tar().dir("../outside/dir", mode=0o777),
        raises=UnsafeArchiveError,
    ),
    Case(
        "SymlinkThenWrite",
        lambda b: tar().symlink("loophole", "../outside").file("loophole/canary", b"pwned"),
        check=lambda b: (b.dest / "outside/canary").read_bytes() == b"pwned",
    ),
    Case(
        "SymlinkThenChmodDirectory",
        lambda b: tar().symlink("loophole", str(b.outside / "dir")).dir("loophole", mode=0o777),
        check=lambda b: (b.dest / "loophole").is_dir() and not (b.dest / "loophole").is_symlink(),
    ),
    Case(
        "SymlinkThenHardlinkThenWrite",
        lambda b: (
            tar().symlink("sym", "../outside/canary").hardlink("hard", "sym").file("hard", b"pwned")
        ),
        check=lambda b: (b.dest / "hard").read_bytes() == b"pwned",
    ),
    Case(
        "EarlierLayerSymlinkThenWrite",
        lambda b: tar().file("etc/canary", b"pwned", mode=0o777).dir("etc/dir", mode=0o777),
        setup=lambda b: os.symlink(str(b.outside), b.dest / "etc"),
        check=lambda b: inside(b, str(b.outside) + "/canary").read_bytes() == b"pwned",
    ),
    Case(
        "SymlinkToFileAsParent",
        lambda b: tar().symlink("f", str(b.canary)).file("f/x", b"x"),
        check=lambda b: inside(b, str(b.canary) + "/x").read_bytes() == b"x",
    ),
    Case(
        "SymlinkLoop",
        lambda b: tar().symlink("a", "b").symlink("b", "a").file("a/x", b"x"),
        raises=UnsafeArchiveError,
    ),
    Case(
        "HardlinkIntoSymlinkedDirectory",
        lambda b: (
            tar()
            .file("secret", b"s")
            .symlink("out", str(b.outside))
            .hardlink("out/stolen", "secret")
        ),
        check=lambda b: same_file(inside(b, str(b.outside) + "/stolen"), b.dest / "secret"),
    ),
    Case(
        "EscapeChainThroughManyLinks",
        lambda b: (
            tar()
            .symlink("l1", escape(b))
            .symlink("l2", "l1/../../..")
            .symlink("l3", "/l2/dir")
            .file("l3/inner", b"pwned")
        ),
        check=lambda b: [p.read_bytes() for p in b.dest.rglob("inner")] == [b"pwned"],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
@pytest.mark.parametrize("via", ["file", "stream"])
def test_breakout(case: Case, via: str, sandbox: Sandbox, tmp_path: Path) -> None:
    if case.setup is not None:
        case.setup(sandbox)
    data = case.tar(sandbox).bytes()
    source: Path | io.BytesIO
    if via == "file":
        source = tmp_path / "hostile.tar"
        source.write_bytes(data)
    else:
        source = io.BytesIO(data)

    def run() -> None:
        extract_tar(source, sandbox.dest, strip_prefix="", whiteouts=case.whiteouts)  # type: ignore[arg-type]

    if case.raises is not None:
        with pytest.raises(case.raises) as info:
            run()
        assert "\n" not in str(info.value)
    else:
        run()
        if case.check is not None:
            assert case.check(sandbox)
    # The sandbox fixture then checks that nothing outside dest changed.
    sandbox.check_outside()
