"""``actool build``, ``cat-manifest`` and ``patch-manifest`` through the real command.

What a publisher sees: the same layout always gives the same image ID (and the same
gzip bytes), owners and times are normalised as asked, what cannot be archived is
skipped with a note, and every bad input is one line, exit 1, and no file written.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import socket
import subprocess
import tarfile
from pathlib import Path

import pytest

from rkt_testing import assert_one_line_error, run_tool
from rkt_testing.aci import BUSYBOX, image_manifest
from rkt_testing.plugin import needs_root


def actool(*args: str | os.PathLike[str], env: dict[str, str] | None = None
           ) -> subprocess.CompletedProcess[str]:
    return run_tool("actool", *args, env=env)


def make_layout(directory: Path, manifest: dict[str, object] | None = None) -> Path:
    rootfs = directory / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    (rootfs / "etc").mkdir()
    (rootfs / "bin" / "busybox").write_bytes(BUSYBOX.read_bytes())
    (rootfs / "bin" / "busybox").chmod(0o755)
    (rootfs / "bin" / "sh").symlink_to("busybox")
    os.link(rootfs / "bin" / "busybox", rootfs / "bin" / "true")
    (rootfs / "etc" / "motd").write_text("hello\n")
    (rootfs / "etc" / "big").write_bytes(os.urandom(300_000))
    os.mkfifo(rootfs / "etc" / "fifo")
    data = manifest or image_manifest("example.com/hello", exec_=["/bin/sh", "-c", "true"])
    (directory / "manifest").write_text(json.dumps(data))
    return directory


def image_id(path: Path) -> str:
    with open(path, "rb") as handle:
        head = handle.read(2)
    data = gzip.decompress(path.read_bytes()) if head == b"\x1f\x8b" else path.read_bytes()
    return "sha512-" + hashlib.sha512(data).hexdigest()


def members(path: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(path) as tar:
        return tar.getmembers()


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_build_is_reproducible(tmp_path: Path) -> None:
    layout = make_layout(tmp_path / "layout")
    out = tmp_path / "out"
    out.mkdir()
    first = actool("build", layout, out / "a.aci", env={"SOURCE_DATE_EPOCH": "1000"})
    assert (first.returncode, first.stdout, first.stderr) == (0, "", "")
    actool("build", layout, out / "b.aci", env={"SOURCE_DATE_EPOCH": "1000"})
    assert (out / "a.aci").read_bytes() == (out / "b.aci").read_bytes()
    # a copy of the layout made later (new times, new inodes) gives the same image
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", "--no-preserve=timestamps", layout, copy], check=True)
    actool("build", "--mtime=1000", copy, out / "c.aci")
    assert image_id(out / "c.aci") == image_id(out / "a.aci")
    # the gzip header names no file and no time
    header = (out / "a.aci").read_bytes()[:10]
    assert header[3] & 0x08 == 0 and header[4:8] == bytes(4)
    names = [m.name for m in members(out / "a.aci")]
    assert names == ["manifest", "rootfs", "rootfs/bin", "rootfs/bin/busybox", "rootfs/bin/sh",
                     "rootfs/bin/true", "rootfs/etc", "rootfs/etc/big", "rootfs/etc/fifo",
                     "rootfs/etc/motd"]
    found = {m.name: m for m in members(out / "a.aci")}
    assert {m.mtime for m in found.values()} == {1000}
    assert found["rootfs/bin/true"].islnk() and found["rootfs/bin/true"].linkname == \
        "rootfs/bin/busybox"
    assert found["rootfs/bin/sh"].issym() and found["rootfs/etc/fifo"].isfifo()
    assert found["rootfs/bin/busybox"].mode == 0o755
    assert {m.uname for m in found.values()} == {""}
    assert leftovers(out) == []
    # the image is one the runtime accepts
    assert actool("validate", out / "a.aci").returncode == 0


def test_times_and_owners_kept_unless_normalised(tmp_path: Path) -> None:
    layout = make_layout(tmp_path / "layout")
    motd = layout / "rootfs" / "etc" / "motd"
    os.utime(motd, (1234567, 1234567))
    actool("build", "--no-compression", layout, tmp_path / "kept.aci", env={
        "SOURCE_DATE_EPOCH": ""})
    found = {m.name: m for m in members(tmp_path / "kept.aci")}
    assert found["rootfs/etc/motd"].mtime == 1234567
    assert (tmp_path / "kept.aci").read_bytes()[257:262] == b"ustar"  # not compressed
    if os.geteuid() == 0:
        os.chown(motd, 1000, 2000)
        actool("build", layout, tmp_path / "owners.aci")
        actool("build", "--owner-root", layout, tmp_path / "root.aci")
        owners = {m.name: (m.uid, m.gid) for m in members(tmp_path / "owners.aci")}
        assert owners["rootfs/etc/motd"] == (1000, 2000)
        assert {(m.uid, m.gid) for m in members(tmp_path / "root.aci")} == {(0, 0)}


def test_sockets_are_skipped_with_a_note(tmp_path: Path) -> None:
    layout = make_layout(tmp_path / "layout")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(layout / "rootfs" / "etc" / "control.sock"))
        result = actool("build", layout, tmp_path / "a.aci")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ('actool: warning: skipping socket "rootfs/etc/control.sock": '
                             "sockets cannot be archived\n")
    assert "rootfs/etc/control.sock" not in [m.name for m in members(tmp_path / "a.aci")]


@needs_root
def test_device_nodes_are_skipped_with_a_note(tmp_path: Path) -> None:
    layout = make_layout(tmp_path / "layout")
    (layout / "rootfs" / "dev").mkdir()
    os.mknod(layout / "rootfs" / "dev" / "null", 0o666 | 0o020000, os.makedev(1, 3))
    result = actool("build", layout, tmp_path / "a.aci")
    assert result.returncode == 0, result.stderr
    assert 'skipping device node "rootfs/dev/null"' in result.stderr
    assert "rootfs/dev/null" not in [m.name for m in members(tmp_path / "a.aci")]


def test_build_refuses_bad_input(tmp_path: Path) -> None:
    layout = make_layout(tmp_path / "layout")
    out = tmp_path / "out"
    out.mkdir()

    def refused(*args: str | Path, fragment: str, env: dict[str, str] | None = None) -> None:
        assert_one_line_error(actool("build", *args, env=env), fragment, tool="actool",
                              status=1)
        assert sorted(p.name for p in out.iterdir()) == ["exists.aci"]

    (out / "exists.aci").write_text("precious")
    refused(layout, out / "exists.aci", fragment="already exists (use --overwrite")
    assert (out / "exists.aci").read_text() == "precious"
    refused(layout, out / "image.tar.gz", fragment="must end in .aci")
    refused(layout, layout / "rootfs" / "self.aci", fragment="inside the layout")
    refused(tmp_path / "nowhere", out / "x.aci", fragment="no such directory")
    refused(layout, out / "x.aci", "--mtime=yesterday", fragment="--mtime")
    refused(layout, out / "x.aci", env={"SOURCE_DATE_EPOCH": "soon"},
            fragment='SOURCE_DATE_EPOCH="soon"')
    bare = tmp_path / "bare"
    (bare / "rootfs").mkdir(parents=True)
    refused(bare, out / "x.aci", fragment="no manifest")
    (bare / "manifest").write_text(json.dumps(image_manifest("example.com/x")))
    (bare / "rootfs").rmdir()
    refused(bare, out / "x.aci", fragment="no rootfs directory")
    (bare / "rootfs").mkdir()
    (bare / "Dockerfile").write_text("FROM scratch")
    refused(bare, out / "x.aci", fragment='unexpected "Dockerfile"')
    (bare / "Dockerfile").unlink()
    (bare / "manifest").write_text(json.dumps(image_manifest("Example.com/x")))
    refused(bare, out / "x.aci", fragment='name: "Example.com/x" is not an AC Identifier')
    (bare / "manifest").write_text("{")
    refused(bare, out / "x.aci", fragment="not valid JSON")
    # --overwrite replaces
    result = actool("build", "--overwrite", layout, out / "exists.aci")
    assert result.returncode == 0, result.stderr
    assert actool("validate", out / "exists.aci").returncode == 0


def test_cat_and_patch_manifest(tmp_path: Path) -> None:
    layout = make_layout(tmp_path / "layout")
    image = tmp_path / "app.aci"
    actool("build", layout, image)
    raw = actool("cat-manifest", image)
    assert raw.stdout.strip() == (layout / "manifest").read_text()
    pretty = actool("cat-manifest", "--pretty-print", image)
    assert json.loads(pretty.stdout) == json.loads(raw.stdout)
    assert pretty.stdout.startswith('{\n    "acKind"')

    patched = tmp_path / "patched.aci"
    result = actool("patch-manifest", "--exec=/bin/echo patched", "--user=1000",
                    "--capability=CAP_NET_BIND_SERVICE,CAP_CHOWN",
                    "--ports=http,protocol=tcp,port=8080:dns,protocol=udp,port=53,count=2",
                    "--mounts=data,path=/var/data,readOnly=true",
                    "--isolators=resource/memory,limit=64M",
                    "--supplementary-groups=10,20", image, patched)
    assert result.returncode == 0, result.stderr
    app = json.loads(actool("cat-manifest", patched).stdout)["app"]
    assert app["exec"] == ["/bin/echo", "patched"] and app["user"] == "1000"
    assert app["ports"][1] == {"name": "dns", "protocol": "udp", "port": 53, "count": 2}
    assert app["mountPoints"] == [{"name": "data", "path": "/var/data", "readOnly": True}]
    assert app["supplementaryGIDs"] == [10, 20]
    assert app["isolators"] == [
        {"name": "resource/memory", "value": {"limit": "64M"}},
        {"name": "os/linux/capabilities-retain-set",
         "value": {"set": ["CAP_NET_BIND_SERVICE", "CAP_CHOWN"]}}]
    # every member but the manifest is byte for byte the one it was
    before = {m.name: m.get_info() for m in members(image) if m.name != "manifest"}
    after = {m.name: m.get_info() for m in members(patched) if m.name != "manifest"}
    assert before == after
    with tarfile.open(image) as old, tarfile.open(patched) as new:
        for name in ("rootfs/bin/busybox", "rootfs/etc/big"):
            assert old.extractfile(name).read() == new.extractfile(name).read()  # type: ignore[union-attr]
    assert actool("validate", patched).returncode == 0

    # --replace patches in place; --manifest replaces the whole manifest
    other = image_manifest("example.com/other", exec_=["/bin/true"])
    (tmp_path / "other.json").write_text(json.dumps(other))
    assert actool("patch-manifest", "--replace", "--manifest", tmp_path / "other.json",
                  patched).returncode == 0
    assert json.loads(actool("cat-manifest", patched).stdout) == other
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(("flags", "fragment"), [
    (["--ports=http,protocol=tcp,port=eighty"], '--ports: port must be a number, not "eighty"'),
    (["--ports=http,port=80"], "has no protocol="),
    (["--mounts=data"], '--mounts: "data" has no path='),
    (["--mounts=data,path=/d,readOnly=maybe"], "readOnly must be true or false"),
    (["--supplementary-groups=wheel"], "--supplementary-groups: a group ID must be a number"),
    (["--isolators=,limit=1"], "does not start with the isolator's name"),
    (["--user="], "patched manifest: app.user: must be a non-empty string"),
    (["--name=Bad Name"], 'patched manifest: name: "Bad Name" is not an AC Identifier'),
    (["--capability="], "app.isolators[0].value.set: must be a non-empty list"),
    ([], "nothing to patch"),
], ids=["port-number", "port-protocol", "mount-path", "mount-readonly", "groups",
        "isolator-name", "empty-user", "bad-name", "empty-capabilities", "nothing"])
def test_patch_manifest_refuses_unparsable_values(tmp_path: Path, flags: list[str],
                                                  fragment: str) -> None:
    layout = make_layout(tmp_path / "layout")
    image = tmp_path / "app.aci"
    actool("build", layout, image)
    before = image.read_bytes()
    assert_one_line_error(actool("patch-manifest", *flags, image, tmp_path / "out.aci"),
                          fragment, tool="actool", status=1)
    assert not (tmp_path / "out.aci").exists()
    assert image.read_bytes() == before
    assert leftovers(tmp_path) == []


def test_patch_and_cat_refuse_bad_images(tmp_path: Path) -> None:
    junk = tmp_path / "junk.aci"
    junk.write_bytes(b"\x00" * 1024)
    assert_one_line_error(actool("cat-manifest", junk), "not an ACI archive", tool="actool")
    assert_one_line_error(actool("patch-manifest", "--user=1", junk, tmp_path / "o.aci"),
                          "not an ACI archive", tool="actool", status=1)
    assert_one_line_error(actool("cat-manifest", tmp_path / "none.aci"), "no such file",
                          tool="actool")
    layout = make_layout(tmp_path / "layout")
    image = tmp_path / "app.aci"
    actool("build", layout, image)
    assert_one_line_error(actool("patch-manifest", "--user=1", image), "give OUT.aci",
                          tool="actool")
    assert_one_line_error(actool("patch-manifest", "--user=1", image, image), "already exists",
                          tool="actool")
