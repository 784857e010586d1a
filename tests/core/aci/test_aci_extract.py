"""extract_tar: formats, metadata, layering, whiteouts, pathWhitelist, limits."""

from __future__ import annotations

import gzip
import io
import logging
import os
import stat
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from aci_tarbuild import MTIME, Sandbox, TarBuilder, aci, raw_header, tree

from rkt.aci.archive import ArchiveLimits
from rkt.aci.extract import extract_tar
from rkt.errors import ArchiveError, UnsafeArchiveError

IS_ROOT = os.geteuid() == 0
Extract = Callable[..., None]


@pytest.fixture(params=["path", "stream", "gzip-path"])
def extract(request: pytest.FixtureRequest, tmp_path: Path) -> Extract:
    """extract_tar fed from a tar file (copy_file_range), a stream, or a .tar.gz file."""
    counter = iter(range(1000))

    def run(data: bytes, dest: Path, **kwargs: object) -> None:
        n = next(counter)
        if request.param == "stream":
            extract_tar(io.BytesIO(data), dest, **kwargs)  # type: ignore[arg-type]
            return
        archive = tmp_path / f"archive{n}.tar"
        if request.param == "gzip-path":
            data = gzip.compress(data, compresslevel=1)
        archive.write_bytes(data)
        extract_tar(archive, dest, **kwargs)  # type: ignore[arg-type]

    return run


def test_extracts_rootfs_contents_with_metadata(sandbox: Sandbox, extract: Extract) -> None:
    builder = aci().dir("rootfs/bin", mode=0o751, mtime=MTIME + 1)
    builder.file("rootfs/bin/tool", b"#!/bin/sh\n", mode=0o4755, mtime=MTIME + 2)
    builder.file("rootfs/bin/sgid", b"", mode=0o2711)
    builder.dir("rootfs/tmp", mode=0o1777)
    builder.file("rootfs/secret", b"s", mode=0o600, uid=1234, gid=5678)
    builder.file("rootfs/big", bytes(range(256)) * 4096)  # beyond the read-ahead window
    builder.symlink("rootfs/sh", "bin/tool", mtime=MTIME + 3)
    builder.hardlink("rootfs/bin/tool2", "rootfs/bin/tool")
    builder.file("rootfs/empty", b"", mode=0o000)
    extract(builder.bytes(), sandbox.dest)
    d = sandbox.dest
    assert sorted(os.listdir(d)) == ["big", "bin", "empty", "secret", "sh", "tmp"]
    assert (d / "bin/tool").read_bytes() == b"#!/bin/sh\n"
    assert stat.S_IMODE((d / "bin/tool").stat().st_mode) == 0o4755
    assert stat.S_IMODE((d / "bin/sgid").stat().st_mode) == 0o2711
    assert stat.S_IMODE((d / "tmp").stat().st_mode) == 0o1777
    assert stat.S_IMODE((d / "bin").stat().st_mode) == 0o751
    assert stat.S_IMODE((d / "empty").stat().st_mode) == 0o000
    assert (d / "bin").stat().st_mtime == MTIME + 1  # set after its contents
    assert (d / "bin/tool").stat().st_mtime == MTIME + 2
    assert os.readlink(d / "sh") == "bin/tool"
    assert (d / "sh").lstat().st_mtime == MTIME + 3
    assert (d / "bin/tool2").stat().st_ino == (d / "bin/tool").stat().st_ino
    assert (d / "big").read_bytes() == bytes(range(256)) * 4096
    if IS_ROOT:
        info = (d / "secret").stat()
        assert (info.st_uid, info.st_gid) == (1234, 5678)
    # The rootfs entry itself describes dest.
    assert stat.S_IMODE(d.stat().st_mode) == 0o755
    assert d.stat().st_mtime == MTIME


def test_owner_is_kept_only_when_asked(sandbox: Sandbox) -> None:
    data = aci().file("rootfs/f", b"x", uid=4321, gid=4321, mode=0o4755).bytes()
    extract_tar(io.BytesIO(data), sandbox.dest, preserve_owner=False)  # type: ignore[arg-type]
    info = (sandbox.dest / "f").stat()
    assert (info.st_uid, info.st_gid) == (os.geteuid(), os.getegid())
    assert stat.S_IMODE(info.st_mode) == 0o4755


@pytest.mark.skipif(not IS_ROOT, reason="chown and setuid-after-chown need root")
def test_setuid_survives_chown(sandbox: Sandbox, extract: Extract) -> None:
    data = aci().file("rootfs/su", b"x", mode=0o6755, uid=0, gid=42).bytes()
    extract(data, sandbox.dest, preserve_owner=True)
    info = (sandbox.dest / "su").stat()
    assert stat.S_IMODE(info.st_mode) == 0o6755
    assert info.st_gid == 42


@pytest.mark.skipif(not IS_ROOT, reason="mknod needs CAP_MKNOD")
def test_device_nodes_and_fifos_as_root(sandbox: Sandbox, extract: Extract) -> None:
    builder = aci().device("rootfs/null", tarfile.CHRTYPE, 1, 3, mode=0o666)
    builder.device("rootfs/loop9", tarfile.BLKTYPE, 7, 9, mode=0o660)
    builder.device("rootfs/fifo", tarfile.FIFOTYPE, 0, 0, mode=0o620)
    extract(builder.bytes(), sandbox.dest)
    null = (sandbox.dest / "null").lstat()
    assert stat.S_ISCHR(null.st_mode)
    assert (os.major(null.st_rdev), os.minor(null.st_rdev)) == (1, 3)
    assert stat.S_IMODE(null.st_mode) == 0o666
    loop = (sandbox.dest / "loop9").lstat()
    assert stat.S_ISBLK(loop.st_mode)
    assert (os.major(loop.st_rdev), os.minor(loop.st_rdev)) == (7, 9)
    fifo = (sandbox.dest / "fifo").lstat()
    assert stat.S_ISFIFO(fifo.st_mode)
    assert stat.S_IMODE(fifo.st_mode) == 0o620


def test_device_nodes_are_skipped_without_root(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Being root cannot be undone inside a test; what "not root" means to the
    # extractor is geteuid() != 0, so that is the seam.
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    data = aci().device("rootfs/null", tarfile.CHRTYPE, 1, 3).file("rootfs/after", b"a").bytes()
    with caplog.at_level(logging.WARNING, logger="rkt.aci.extract"):
        extract_tar(io.BytesIO(data), sandbox.dest)  # type: ignore[arg-type]
    assert tree(sandbox.dest) == {"after": "f:a"}
    assert "not running as root" in caplog.text


def test_user_xattrs_best_effort(sandbox: Sandbox, extract: Extract) -> None:
    pax = {"SCHILY.xattr.user.rkt": "yes", "SCHILY.xattr.trusted.evil": "no"}
    data = aci().file("rootfs/f", b"x", pax=pax).dir("rootfs/d", pax=pax).bytes()
    extract(data, sandbox.dest)
    for name in ("f", "d"):
        try:
            names = os.listxattr(sandbox.dest / name)
        except OSError:
            pytest.skip("this file system has no xattrs")
        if "user.rkt" not in names:
            pytest.skip("this file system refuses user xattrs")
        assert os.getxattr(sandbox.dest / name, "user.rkt") == b"yes"
        assert "trusted.evil" not in names


def test_strip_prefix_empty_extracts_everything(sandbox: Sandbox, extract: Extract) -> None:
    data = aci().file("rootfs/a", b"a").bytes()
    extract(data, sandbox.dest, strip_prefix="")
    assert tree(sandbox.dest) == {
        "manifest": "f:" + (sandbox.dest / "manifest").read_text(),
        "rootfs": "d",
        "rootfs/a": "f:a",
    }


def test_real_tar_output_extracts_identically(sandbox: Sandbox, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "rootfs/usr/bin").mkdir(parents=True)
    (src / "manifest").write_text("{}")
    (src / "rootfs/usr/bin/prog").write_bytes(os.urandom(100_000))
    (src / "rootfs/usr/bin/prog").chmod(0o4711)
    os.symlink("usr/bin", src / "rootfs/bin")
    os.link(src / "rootfs/usr/bin/prog", src / "rootfs/usr/bin/prog2")
    (src / "rootfs" / ("x" * 200)).write_text("long")
    archive = tmp_path / "image.tar"
    subprocess.run(["tar", "-C", str(src), "-cf", str(archive), "manifest", "rootfs"], check=True)
    extract_tar(archive, sandbox.dest)
    assert tree(sandbox.dest) == tree(src / "rootfs")
    assert stat.S_IMODE((sandbox.dest / "usr/bin/prog").stat().st_mode) == 0o4711
    prog = (sandbox.dest / "usr/bin/prog").stat()
    assert prog.st_nlink == 2
    assert prog.st_mtime_ns // 10**9 == (src / "rootfs/usr/bin/prog").stat().st_mtime_ns // 10**9


# -- layering (appc-spec/ace.md: later files overwrite earlier ones) ------------------


def test_later_layers_overwrite_earlier_ones(sandbox: Sandbox, extract: Extract) -> None:
    lower = aci().dir("rootfs/etc").file("rootfs/etc/conf", b"lower").file("rootfs/keep", b"k")
    upper = aci().dir("rootfs/etc", mode=0o700).file("rootfs/etc/conf", b"upper", mode=0o600)
    extract(lower.bytes(), sandbox.dest)
    extract(upper.bytes(), sandbox.dest)
    assert tree(sandbox.dest) == {"etc": "d", "etc/conf": "f:upper", "keep": "f:k"}
    assert stat.S_IMODE((sandbox.dest / "etc/conf").stat().st_mode) == 0o600
    assert stat.S_IMODE((sandbox.dest / "etc").stat().st_mode) == 0o700


def test_symlink_to_dir_is_replaced_not_followed(sandbox: Sandbox, extract: Extract) -> None:
    lower = aci().dir("rootfs/real").file("rootfs/real/x", b"x").symlink("rootfs/lib", "real")
    upper = aci().dir("rootfs/lib").file("rootfs/lib/y", b"y")
    extract(lower.bytes(), sandbox.dest)
    extract(upper.bytes(), sandbox.dest)
    assert tree(sandbox.dest) == {"real": "d", "real/x": "f:x", "lib": "d", "lib/y": "f:y"}


def test_non_directory_replaces_directory(sandbox: Sandbox, extract: Extract) -> None:
    lower = aci().dir("rootfs/a").dir("rootfs/a/b").file("rootfs/a/b/c", b"c")
    upper = aci().symlink("rootfs/a", "elsewhere")
    extract(lower.bytes(), sandbox.dest)
    extract(upper.bytes(), sandbox.dest)
    assert tree(sandbox.dest) == {"a": "l:elsewhere"}


def test_overwriting_a_hardlinked_file_leaves_its_twin_alone(
    sandbox: Sandbox, extract: Extract
) -> None:
    data = aci().file("rootfs/a", b"original").hardlink("rootfs/b", "rootfs/a")
    data.file("rootfs/b", b"replaced")
    extract(data.bytes(), sandbox.dest)
    assert (sandbox.dest / "a").read_bytes() == b"original"
    assert (sandbox.dest / "b").read_bytes() == b"replaced"


def test_file_below_a_symlinked_parent_lands_inside(sandbox: Sandbox, extract: Extract) -> None:
    # Docker layers rely on this: /lib -> usr/lib in one layer, /lib/x in the next.
    lower = aci().dir("rootfs/usr").dir("rootfs/usr/lib").symlink("rootfs/lib", "/usr/lib")
    upper = aci().file("rootfs/lib/libx.so", b"lib")
    extract(lower.bytes(), sandbox.dest)
    extract(upper.bytes(), sandbox.dest)
    assert (sandbox.dest / "usr/lib/libx.so").read_bytes() == b"lib"
    assert os.readlink(sandbox.dest / "lib") == "/usr/lib"


def test_missing_parents_are_created(sandbox: Sandbox, extract: Extract) -> None:
    extract(aci().file("rootfs/a/b/c", b"c").bytes(), sandbox.dest)
    assert tree(sandbox.dest) == {"a": "d", "a/b": "d", "a/b/c": "f:c"}


def test_file_as_parent_is_an_error(sandbox: Sandbox, extract: Extract) -> None:
    data = aci().file("rootfs/a", b"file").file("rootfs/a/b", b"b").bytes()
    with pytest.raises(ArchiveError, match=r'"a" is not a directory'):
        extract(data, sandbox.dest)


# -- whiteouts (Docker/OCI layers) ----------------------------------------------------------


def layer() -> TarBuilder:
    return TarBuilder()


def test_whiteouts_delete_from_lower_layers(sandbox: Sandbox, extract: Extract) -> None:
    lower = layer().dir("etc").file("etc/a", b"a").file("etc/b", b"b").dir("var")
    lower.file("var/log", b"l").symlink("link", "/etc")
    extract(lower.bytes(), sandbox.dest, strip_prefix="", whiteouts=True)
    upper = layer().file("etc/.wh.a", b"").file(".wh.var", b"").file(".wh.link", b"")
    upper.file(".wh.never-existed", b"")
    extract(upper.bytes(), sandbox.dest, strip_prefix="", whiteouts=True)
    assert tree(sandbox.dest) == {"etc": "d", "etc/b": "f:b"}


def test_opaque_whiteout_keeps_only_this_layers_entries(sandbox: Sandbox, extract: Extract) -> None:
    lower = layer().dir("d").file("d/old1", b"1").dir("d/old2").file("d/old2/x", b"x")
    extract(lower.bytes(), sandbox.dest, strip_prefix="", whiteouts=True)
    upper = layer().dir("d").file("d/new", b"n").file("d/.wh..wh..opq", b"").file("d/newer", b"m")
    extract(upper.bytes(), sandbox.dest, strip_prefix="", whiteouts=True)
    assert tree(sandbox.dest) == {"d": "d", "d/new": "f:n", "d/newer": "f:m"}


def test_aufs_metadata_is_ignored(sandbox: Sandbox, extract: Extract) -> None:
    upper = layer().dir(".wh..wh.plnk").file(".wh..wh.plnk/123.456", b"").file("a", b"a")
    extract(upper.bytes(), sandbox.dest, strip_prefix="", whiteouts=True)
    assert tree(sandbox.dest) == {"a": "f:a"}


def test_whiteout_files_are_plain_files_when_not_asked(sandbox: Sandbox, extract: Extract) -> None:
    extract(aci().file("rootfs/.wh.x", b"w").bytes(), sandbox.dest)
    assert tree(sandbox.dest) == {".wh.x": "f:w"}


# -- pathWhitelist ---------------------------------------------------------------------------


def test_path_whitelist_keeps_listed_files_and_their_directories(
    sandbox: Sandbox, extract: Extract
) -> None:
    builder = aci().dir("rootfs/bin").file("rootfs/bin/sh", b"sh").file("rootfs/bin/ls", b"ls")
    builder.dir("rootfs/etc").file("rootfs/etc/passwd", b"p").symlink("rootfs/sbin", "bin")
    extract(builder.bytes(), sandbox.dest, path_whitelist=["/bin/sh", "/sbin/", "/nothing"])
    assert tree(sandbox.dest) == {"bin": "d", "bin/sh": "f:sh", "sbin": "l:bin"}


def test_whitelisted_hardlink_to_excluded_target(sandbox: Sandbox, tmp_path: Path) -> None:
    builder = aci().dir("rootfs/bin").file("rootfs/bin/ls", b"ls", mode=0o751)
    builder.hardlink("rootfs/bin/dash", "rootfs/bin/ls")
    data = builder.bytes()
    archive = tmp_path / "image.tar"
    archive.write_bytes(data)
    # From a file, the excluded target's bytes are still there to copy.
    extract_tar(archive, sandbox.dest, path_whitelist=["/bin/dash"])
    assert tree(sandbox.dest) == {"bin": "d", "bin/dash": "f:ls"}
    assert stat.S_IMODE((sandbox.dest / "bin/dash").stat().st_mode) == 0o751
    # From a stream they are gone by the time the link comes.
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(ArchiveError, match=r"which pathWhitelist excludes"):
        extract_tar(io.BytesIO(data), other, path_whitelist=["/bin/dash"])  # type: ignore[arg-type]


# -- bad archives ---------------------------------------------------------------------------


def test_duplicate_entries_last_one_wins(sandbox: Sandbox, extract: Extract) -> None:
    data = aci().file("rootfs/f", b"first").file("rootfs/f", b"second", mode=0o600)
    data.dir("rootfs/d", mode=0o700).dir("rootfs/d", mode=0o750)
    extract(data.bytes(), sandbox.dest)
    assert (sandbox.dest / "f").read_bytes() == b"second"
    assert stat.S_IMODE((sandbox.dest / "d").stat().st_mode) == 0o750


def test_truncated_member_data(sandbox: Sandbox, extract: Extract) -> None:
    body = aci().file("rootfs/f", b"z" * 200_000).body()
    with pytest.raises(ArchiveError, match=r"^truncated tar archive$"):
        extract(body[:-70_000], sandbox.dest)


def test_entry_limit_during_extraction(sandbox: Sandbox, extract: Extract) -> None:
    builder = aci()
    for i in range(50):
        builder.file(f"rootfs/f{i}", b"")
    with pytest.raises(ArchiveError, match=r"^archive has more than 10 entries$"):
        extract(builder.bytes(), sandbox.dest, limits=ArchiveLimits(max_entries=10))


def test_negative_size_during_extraction(sandbox: Sandbox, extract: Extract) -> None:
    data = aci().body() + raw_header(b"rootfs/x", size=b"\xff" * 12) + bytes(1024)
    with pytest.raises(ArchiveError, match=r"negative size"):
        extract(data, sandbox.dest)


def test_empty_symlink_target(sandbox: Sandbox, extract: Extract) -> None:
    with pytest.raises(ArchiveError, match=r'^symlink "rootfs/s" has an empty target$'):
        extract(aci().symlink("rootfs/s", "").bytes(), sandbox.dest)


def test_hardlink_to_missing_target(sandbox: Sandbox, extract: Extract) -> None:
    data = aci().hardlink("rootfs/l", "rootfs/nope").bytes()
    with pytest.raises(ArchiveError, match=r'^hard link "rootfs/l" points to a missing file'):
        extract(data, sandbox.dest)


def test_hardlink_to_directory(sandbox: Sandbox, extract: Extract) -> None:
    data = aci().dir("rootfs/d").hardlink("rootfs/l", "rootfs/d").bytes()
    with pytest.raises(ArchiveError, match=r'^hard link "rootfs/l" points to a directory'):
        extract(data, sandbox.dest)


def test_root_entry_must_be_a_directory(sandbox: Sandbox, extract: Extract) -> None:
    data = TarBuilder().symlink("rootfs", "/etc").bytes()
    with pytest.raises(UnsafeArchiveError, match=r"would replace the extraction root"):
        extract(data, sandbox.dest)


def test_name_too_long_for_the_file_system(sandbox: Sandbox, extract: Extract) -> None:
    data = aci().file("rootfs/" + "n" * 300, b"").bytes()
    with pytest.raises(
        ArchiveError, match=r"^cannot extract \"rootfs/n+\.\.\.\": File name too long$"
    ):
        extract(data, sandbox.dest)


def test_nesting_depth_is_bounded(sandbox: Sandbox, extract: Extract) -> None:
    # Deeper trees would break recursive removal (shutil.rmtree) for the caller too.
    data = aci().file("rootfs/" + "d/" * 600 + "f", b"deep").bytes()
    with pytest.raises(ArchiveError, match=r"nested more than 512 deep"):
        extract(data, sandbox.dest)


def test_symlink_expansion_bomb_is_bounded(sandbox: Sandbox, extract: Extract) -> None:
    builder = aci().dir("rootfs/a")
    builder.symlink("rootfs/l0", "a/../" * 400 + "a")
    for i in range(1, 30):
        builder.symlink(f"rootfs/l{i}", "/".join([f"l{i - 1}/.."] * 20) + f"/l{i - 1}")
    builder.file("rootfs/l29/f", b"x")
    with pytest.raises(UnsafeArchiveError, match=r"expand too far|too many levels"):
        extract(builder.bytes(), sandbox.dest)


@pytest.mark.parametrize(
    ("pax", "message"),
    [
        ({"mtime": "9" * 30}, r"mtime out of range"),
        ({"uid": "4294967295"}, r"owner out of range"),
        ({"gid": "99999999999999999999"}, r"owner out of range"),
    ],
    ids=["mtime", "uid", "gid"],
)
def test_out_of_range_metadata(
    sandbox: Sandbox, extract: Extract, pax: dict[str, str], message: str
) -> None:
    data = aci().file("rootfs/f", b"x", pax=pax).bytes()
    with pytest.raises(ArchiveError, match=message):
        extract(data, sandbox.dest)


def test_out_of_range_device_number(sandbox: Sandbox, extract: Extract) -> None:
    # GNU base-256 numbers can say what ustar octal cannot.
    builder = aci(TarBuilder(tarfile.GNU_FORMAT))
    data = builder.device("rootfs/dev", tarfile.CHRTYPE, 1 << 40, 1, mode=0o600).bytes()
    with pytest.raises(ArchiveError, match=r"device number out of range"):
        extract(data, sandbox.dest)
