"""scan_aci: the ACI layout rules of appc-spec/aci.md and the archive limits."""

from __future__ import annotations

import io
import tarfile

import pytest
from aci_tarbuild import MANIFEST, TarBuilder, aci, raw_header

from rkt.aci.archive import DEFAULT_LIMITS, ArchiveLimits, scan_aci
from rkt.errors import ArchiveError, UnsafeArchiveError


class CountingReader(io.RawIOBase):
    """Records every read so a test can check the stream was read to its end."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)
        self.total = 0
        self.saw_eof = False

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        data = self._data.read(size)
        self.total += len(data)
        if not data and size != 0:
            self.saw_eof = True
        return data

    def seek(self, *args: object) -> int:  # pragma: no cover - the point is it is never called
        raise AssertionError("scan_aci must not seek")


def scan(data: bytes, **limits: int) -> bytes:
    return scan_aci(io.BytesIO(data), limits=ArchiveLimits(**limits))  # type: ignore[arg-type]


def test_valid_aci_returns_raw_manifest_and_reads_everything() -> None:
    builder = aci().dir("rootfs/etc").file("rootfs/etc/hosts", b"x" * 5000)
    builder.symlink("rootfs/bin", "usr/bin").hardlink("rootfs/etc/hosts2", "rootfs/etc/hosts")
    data = builder.bytes() + bytes(3000)  # trailing padding must be read too
    reader = CountingReader(data)
    assert scan_aci(reader) == MANIFEST  # type: ignore[arg-type]
    assert reader.total == len(data)
    assert reader.saw_eof


def test_dot_prefixes_and_root_entry_are_accepted() -> None:
    builder = TarBuilder().dir(".").dir("./rootfs").file("./manifest", MANIFEST)
    builder.file("./rootfs/a", b"a")
    assert scan(builder.bytes()) == MANIFEST


def test_rootfs_implied_by_its_contents() -> None:
    data = TarBuilder().file("manifest", MANIFEST).file("rootfs/a", b"a").bytes()
    assert scan(data) == MANIFEST


def test_gnu_and_ustar_formats() -> None:
    for fmt in (tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT):
        data = aci(TarBuilder(fmt)).file("rootfs/" + "d/" * 60 + "f", b"deep").bytes()
        assert scan(data) == MANIFEST


@pytest.mark.parametrize(
    ("builder", "message"),
    [
        (
            aci().file("etc/passwd", b"root"),
            r'^invalid ACI: unexpected top-level entry "etc/passwd"$',
        ),
        (aci().file("rootfsX", b""), r'^invalid ACI: unexpected top-level entry "rootfsX"$'),
        (aci().file("manifest/x", b""), r'^invalid ACI: unexpected top-level entry "manifest/x"$'),
        (
            aci().file("rootfs/bin/sh", b"1").file("./rootfs/bin/sh", b"2"),
            r'^invalid ACI: duplicate entry "rootfs/bin/sh"$',
        ),
        (aci().dir("rootfs/"), r'^invalid ACI: duplicate entry "rootfs"$'),
        (TarBuilder().dir("rootfs"), r"^invalid ACI: no manifest$"),
        (TarBuilder().file("manifest", MANIFEST), r"^invalid ACI: no rootfs$"),
        (
            TarBuilder().dir("manifest").dir("rootfs"),
            r"^invalid ACI: manifest is not a regular file$",
        ),
        (
            TarBuilder().file("manifest", MANIFEST).file("rootfs", b""),
            r"^invalid ACI: rootfs is not a directory$",
        ),
        (
            TarBuilder().symlink("manifest", "/etc/passwd").dir("rootfs"),
            r"manifest is not a regular",
        ),
        (TarBuilder(), r"^invalid ACI: no manifest$"),
        (aci().file(".", b""), r'^invalid ACI: root entry "." is not a directory$'),
    ],
    ids=[
        "extra-top-level",
        "rootfs-prefix-only",
        "under-manifest",
        "duplicate",
        "duplicate-rootfs",
        "no-manifest",
        "no-rootfs",
        "manifest-dir",
        "rootfs-file",
        "manifest-symlink",
        "empty-archive",
        "root-file",
    ],
)
def test_layout_violations(builder: TarBuilder, message: str) -> None:
    with pytest.raises(ArchiveError, match=message):
        scan(builder.bytes())


@pytest.mark.parametrize(
    ("builder", "message"),
    [
        (
            aci().file("/rootfs/etc/passwd", b""),
            r'^archive entry has an absolute name "/rootfs/etc/passwd"$',
        ),
        (aci().file("rootfs/../etc/passwd", b""), r'".." component "rootfs/../etc/passwd"$'),
        (aci().file("rootfs/a/../../x", b""), r'".." component'),
        (
            aci().hardlink("rootfs/x", "/etc/passwd"),
            r'^invalid ACI: hard link "rootfs/x" points outside',
        ),
        (aci().hardlink("rootfs/x", "manifest"), r"points outside the rootfs$"),
        (aci().hardlink("rootfs/x", "rootfs/../../etc/passwd"), r"points outside the rootfs$"),
    ],
    ids=[
        "absolute",
        "dotdot",
        "dotdot-deep",
        "hardlink-absolute",
        "hardlink-manifest",
        "hardlink-up",
    ],
)
def test_unsafe_names(builder: TarBuilder, message: str) -> None:
    with pytest.raises(UnsafeArchiveError, match=message):
        scan(builder.bytes())


def test_manifest_size_limit() -> None:
    data = TarBuilder().file("manifest", b" " * 2000).dir("rootfs").bytes()
    with pytest.raises(ArchiveError, match=r"^invalid ACI: manifest is larger than 1000 bytes$"):
        scan(data, max_manifest_size=1000)
    assert DEFAULT_LIMITS.max_manifest_size == 1 << 20


def test_entry_count_bomb() -> None:
    builder = aci()
    for i in range(200):
        builder.dir(f"rootfs/d{i}")
    with pytest.raises(ArchiveError, match=r"^archive has more than 100 entries$"):
        scan(builder.bytes(), max_entries=100)


def test_total_size_limit_counts_file_data() -> None:
    data = aci().file("rootfs/a", b"a" * 6000).file("rootfs/b", b"b" * 6000).bytes()
    with pytest.raises(ArchiveError, match=r"^archive holds more than 10000 bytes of data$"):
        scan(data, max_total_size=10_000)


def test_name_length_limit() -> None:
    data = aci().file("rootfs/" + "n" * 300, b"").bytes()
    with pytest.raises(ArchiveError, match=r"longer than 200 bytes"):
        scan(data, max_name_length=200)


def test_trailing_data_limit() -> None:
    data = aci().bytes() + bytes(100_000)
    with pytest.raises(ArchiveError, match=r"^more than 50000 bytes of data after the end"):
        scan(data, max_trailing_size=50_000)


@pytest.mark.parametrize(
    "data",
    [b"", b"x" * 100, b"garbage!" * 200, raw_header(b"rootfs/a", checksum=1) + bytes(1024)],
    ids=["empty", "short", "garbage", "bad-checksum"],
)
def test_not_a_tar_archive(data: bytes) -> None:
    with pytest.raises(ArchiveError, match=r"^not a tar archive$"):
        scan(data)


def test_truncated_archives() -> None:
    full = aci().file("rootfs/data", b"d" * 3000).bytes()
    body = aci().file("rootfs/data", b"d" * 3000).body()
    cuts = {
        "in-header": 512 + 100,
        "in-data": len(body) - 1500,
        "no-end-blocks": len(body),
    }
    for where, cut in cuts.items():
        with pytest.raises(ArchiveError, match=r"^truncated tar archive$"):
            scan(full[:cut])
        assert where  # for the failure message
    # A single end block is accepted, as GNU tar does ("A lone zero block").
    assert scan(body + bytes(512)) == MANIFEST


def test_corrupt_later_header_is_reported_with_its_offset() -> None:
    body = aci().body()
    data = body + raw_header(b"rootfs/x", checksum=7) + bytes(1024)
    with pytest.raises(
        ArchiveError, match=rf"^corrupt tar archive: bad header checksum at offset {len(body)}$"
    ):
        scan(data)


def test_negative_size_is_refused() -> None:
    body = aci().body()
    negative = b"\xff" * 12  # base-256 -1
    data = body + raw_header(b"rootfs/x", size=negative) + bytes(1024)
    with pytest.raises(ArchiveError, match=r"^corrupt tar archive: negative size at offset"):
        scan(data)


def test_huge_size_is_refused_before_reading() -> None:
    body = aci().body()
    huge = b"\x80" + (1 << 80).to_bytes(11, "big")
    data = body + raw_header(b"rootfs/x", size=huge) + bytes(1024)
    with pytest.raises(ArchiveError, match=r"^archive holds more than \d+ bytes of data$"):
        scan(data)


def test_bad_octal_field() -> None:
    data = aci().body() + raw_header(b"rootfs/x", size=b"0000000009z") + bytes(1024)
    with pytest.raises(ArchiveError, match=r"^corrupt tar archive: bad size field at offset"):
        scan(data)


@pytest.mark.parametrize("flag", [b"S", b"V", b"M", b"D", b"Q"])
def test_unsupported_entry_types(flag: bytes) -> None:
    data = aci().body() + raw_header(b"rootfs/x", typeflag=flag) + bytes(1024)
    with pytest.raises(ArchiveError, match=r"^unsupported tar entry type .* for \"rootfs/x\""):
        scan(data)


def test_pax_sparse_file_is_refused() -> None:
    data = aci().file("rootfs/sparse", b"", pax={"GNU.sparse.major": "1"}).bytes()
    with pytest.raises(ArchiveError, match=r'^unsupported sparse file entry "rootfs/sparse"$'):
        scan(data)


def test_messages_stay_on_one_line() -> None:
    data = aci().file("evil\nname\x1b[31m", b"").bytes()
    with pytest.raises(ArchiveError) as info:
        scan(data)
    assert str(info.value) == r'invalid ACI: unexpected top-level entry "evil\nname\x1b[31m"'


def test_symlink_targets_are_not_validated() -> None:
    # They are interpreted inside the rootfs at render time (appc-spec/ace.md).
    data = aci().symlink("rootfs/hosts", "/../../../etc/hosts").symlink("rootfs/up", "../../..")\
        .bytes()
    assert scan(data) == MANIFEST


@pytest.mark.parametrize(
    ("builder", "message"),
    [
        (aci().dir("rootfs/etc").hardlink("rootfs/x", "rootfs/etc"),
         r'^invalid ACI: hard link "rootfs/x" .*points to a directory$'),
        (aci().symlink("rootfs/a", "a"),
         r'^invalid ACI: symlink "rootfs/a" resolves through a loop'),
        (aci().symlink("rootfs/a", "b").symlink("rootfs/b", "/a"), r'symlink "rootfs/a"'),
        (aci().symlink("rootfs/x", "../x/.."), r'symlink "rootfs/x"'),
        (aci().dir("rootfs/d").symlink("rootfs/d/l", "../d/l/x"), r'symlink "rootfs/d/l"'),
        (aci().symlink("rootfs/d", ".").symlink("rootfs/l", "d/d/d/l"), r'symlink "rootfs/l"'),
    ],
    ids=["hardlink-to-dir", "self", "pair", "up-and-back", "through-parent", "through-dot"],
)
def test_hardlinks_to_directories_and_symlink_loops_are_refused(
    builder: TarBuilder, message: str
) -> None:
    with pytest.raises(UnsafeArchiveError, match=message):
        scan(builder.bytes())


def test_symlink_chains_and_dangling_links_are_fine() -> None:
    builder = aci().dir("rootfs/bin").file("rootfs/bin/busybox", b"")
    for index in range(30):  # a long chain is not a loop
        builder.symlink(f"rootfs/l{index}", f"l{index + 1}")
    builder.symlink("rootfs/l30", "/bin/busybox").symlink("rootfs/gone", "/no/such/file")
    builder.symlink("rootfs/bin/sh", "busybox").hardlink("rootfs/sh2", "rootfs/bin/sh")
    assert scan(builder.bytes()) == MANIFEST
