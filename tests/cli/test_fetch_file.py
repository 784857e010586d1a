"""``rkt fetch FILE.aci`` through the real command: trust, verification, bad input.

Keys and signatures are made by real GnuPG. After every refused import the store
must hold exactly what it held before.
"""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from rkt_testing import AciBuilder, RktEnv, assert_one_line_error
from rkt_testing.aci import image_manifest


@pytest.fixture(scope="module")
def other_key(gpg, tmp_path_factory):  # type: ignore[no-untyped-def]
    fingerprint = gpg.generate_key("someone else <else@example.com>")
    key_file = tmp_path_factory.mktemp("other") / "other.asc"
    key_file.write_bytes(gpg.export_public(fingerprint))
    return fingerprint, key_file


def sign(gpg, fingerprint: str, path: Path, out: Path | None = None) -> Path:  # type: ignore[no-untyped-def]
    result: Path = gpg.sign_detached(fingerprint, path, out)
    return result


# -- acceptance: trust, fetch, list, rm -------------------------------------------------
def test_trusted_signed_image_is_fetched_into_the_cas(
    rkt_env: RktEnv, aci_builder: AciBuilder, gpg, signing_key  # type: ignore[no-untyped-def]
) -> None:
    fingerprint, key_file = signing_key
    rkt_env.trust("example.com/hello", key_file)
    stored_key = (rkt_env.local_config / "trustedkeys" / "prefix.d" / "example.com" / "hello"
                  / fingerprint.lower())
    assert stored_key.is_file()
    image = aci_builder.build(busybox=True, exec_=["/bin/true"])
    sign(gpg, fingerprint, image)
    result = rkt_env.run("fetch", image)
    assert result.returncode == 0, result.stderr
    image_id = result.stdout.strip()
    assert image_id.startswith("sha512-") and len(image_id) == len("sha512-") + 32
    assert "signature verified" in result.stderr
    blobs = list((rkt_env.data_dir / "cas" / "blob" / "sha512").glob("*/sha512-*"))
    assert len(blobs) == 1
    assert blobs[0].name.startswith(image_id) and len(blobs[0].name) == len("sha512-") + 64
    assert blobs[0].parent.name == image_id[7:9]
    # the ID is the SHA-512 of the uncompressed tar
    import hashlib

    assert hashlib.sha512(gzip.decompress(image.read_bytes())).hexdigest().startswith(
        image_id[7:]
    )

    listing = rkt_env.run("image", "list", check=True).stdout
    assert "example.com/hello:1.0.0" in listing
    assert listing.splitlines()[0].split() == ["ID", "NAME", "SIZE", "IMPORT", "TIME", "LAST",
                                               "USED"]
    removed = rkt_env.run("image", "rm", image_id, check=True).stdout
    assert f'successfully removed aci for image: "{blobs[0].name}"' in removed
    assert "1 image(s) successfully removed" in removed
    assert not blobs[0].exists()
    assert "example.com/hello" not in rkt_env.run("image", "list", check=True).stdout


def test_image_rm_removes_the_rendered_tree(rkt_env: RktEnv, aci_builder: AciBuilder) -> None:
    image = aci_builder.build(busybox=True, exec_=["/bin/true"])
    image_id = rkt_env.run("--insecure-options=image", "fetch", image, check=True).stdout.strip()
    render_dir = rkt_env.root / "rendered"
    rkt_env.run("image", "render", image_id, render_dir, check=True)
    assert (render_dir / "rootfs" / "bin" / "busybox").is_file()
    # render into the tree store, as a pod would
    from rkt.store.cas import CasStore

    store = CasStore(rkt_env.data_dir)
    tree = store.render(store.resolve(image_id).id)
    assert (tree / "rendered").exists()
    rkt_env.run("image", "rm", "example.com/hello:1.0.0", check=True)
    assert not tree.exists()
    assert list((rkt_env.data_dir / "cas" / "tree").iterdir()) == []


def test_signature_given_with_flag(
    rkt_env: RktEnv, aci_builder: AciBuilder, gpg, signing_key, tmp_path  # type: ignore[no-untyped-def]
) -> None:
    fingerprint, key_file = signing_key
    rkt_env.trust("example.com/hello", key_file)
    image = aci_builder.build()
    elsewhere = sign(gpg, fingerprint, image, tmp_path / "sig-elsewhere.asc")
    without = rkt_env.run("fetch", image)
    assert_one_line_error(without, "no signature")
    result = rkt_env.run("fetch", image, "--signature", elsewhere)
    assert result.returncode == 0, result.stderr


def test_unsigned_image_needs_the_insecure_flag(
    rkt_env: RktEnv, aci_builder: AciBuilder
) -> None:
    image = aci_builder.build("unsigned.aci")
    before = rkt_env.store_snapshot()
    refused = rkt_env.run("fetch", image)
    assert_one_line_error(refused, "no signature", "unsigned.aci")
    assert rkt_env.store_snapshot() == before
    for flag in ("--insecure-skip-verify", "--insecure-options=image"):
        accepted = rkt_env.run(flag, "fetch", image)
        assert accepted.returncode == 0, accepted.stderr
        assert accepted.stdout.startswith("sha512-")
        assert "signature verification has been disabled" in accepted.stderr


def test_untrusted_key_is_refused_and_nothing_stored(
    rkt_env: RktEnv, aci_builder: AciBuilder, gpg, other_key  # type: ignore[no-untyped-def]
) -> None:
    image = aci_builder.build()
    sign(gpg, other_key[0], image)
    before = rkt_env.store_snapshot()
    result = rkt_env.run("fetch", image)
    assert_one_line_error(result, "openpgp: signature made by unknown entity",
                          'add it with: rkt trust --prefix "example.com/hello" KEYFILE')
    assert rkt_env.store_snapshot() == before


def test_key_trusted_for_another_prefix_is_refused(
    rkt_env: RktEnv, aci_builder: AciBuilder, gpg, signing_key  # type: ignore[no-untyped-def]
) -> None:
    fingerprint, key_file = signing_key
    rkt_env.trust("example.com/other", key_file)
    rkt_env.trust("example.com/hel", key_file)  # a string prefix, not a path prefix
    image = aci_builder.build()
    sign(gpg, fingerprint, image)
    before = rkt_env.store_snapshot()
    result = rkt_env.run("fetch", image)
    assert_one_line_error(result, "not trusted", 'rkt trust --prefix "example.com/hello"')
    assert rkt_env.store_snapshot() == before


def test_root_key_trusts_every_image(
    rkt_env: RktEnv, aci_builder: AciBuilder, gpg, signing_key  # type: ignore[no-untyped-def]
) -> None:
    fingerprint, key_file = signing_key
    rkt_env.run("trust", "--root", key_file, input="yes\n", check=True)
    image = aci_builder.build()
    sign(gpg, fingerprint, image)
    assert rkt_env.run("fetch", image).returncode == 0


def test_signature_over_other_bytes_is_refused(
    rkt_env: RktEnv, aci_builder: AciBuilder, gpg, signing_key  # type: ignore[no-untyped-def]
) -> None:
    fingerprint, key_file = signing_key
    rkt_env.trust("example.com/hello", key_file)
    image = aci_builder.build()
    signature = sign(gpg, fingerprint, image)
    other = aci_builder.build("other.aci", version="2.0.0")
    other.with_name("other.aci.asc").write_bytes(signature.read_bytes())
    before = rkt_env.store_snapshot()
    result = rkt_env.run("fetch", other)
    assert_one_line_error(result, "openpgp: invalid signature")
    assert rkt_env.store_snapshot() == before


def test_signed_by_trusted_key_but_tampered_after_signing(
    rkt_env: RktEnv, aci_builder: AciBuilder, gpg, signing_key  # type: ignore[no-untyped-def]
) -> None:
    fingerprint, key_file = signing_key
    rkt_env.trust("example.com/hello", key_file)
    image = aci_builder.build()
    sign(gpg, fingerprint, image)
    data = bytearray(image.read_bytes())
    data[-20] ^= 0xFF
    image.write_bytes(bytes(data))
    before = rkt_env.store_snapshot()
    assert_one_line_error(rkt_env.run("fetch", image), "openpgp")
    assert rkt_env.store_snapshot() == before


# -- hostile and broken archives ---------------------------------------------------------
def _raw_tar(entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _dir(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    return info, None


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


MANIFEST = json.dumps(image_manifest("example.com/bad")).encode()
BAD_ARCHIVES = {
    "empty file": (b"", "not an ACI archive"),
    "random bytes": (b"\x00\x01garbage" * 100, "not an ACI archive"),
    "truncated gzip": (gzip.compress(_raw_tar([_file("manifest", MANIFEST), _dir("rootfs")]))
                       [:60], "truncated"),
    "extra top-level entry": (
        _raw_tar([_file("manifest", MANIFEST), _dir("rootfs"), _file("etc/passwd", b"x")]),
        "etc/passwd",
    ),
    "no manifest": (_raw_tar([_dir("rootfs"), _file("rootfs/a", b"a")]), "manifest"),
    "manifest not JSON": (_raw_tar([_file("manifest", b"{nope"), _dir("rootfs")]),
                          "not valid JSON"),
    "manifest fails the schema": (
        _raw_tar([_file("manifest", json.dumps({"acKind": "ImageManifest",
                                                "acVersion": "0.8.11",
                                                "name": "Bad Name"}).encode()),
                  _dir("rootfs")]),
        "name",
    ),
    "duplicate entry": (
        _raw_tar([_file("manifest", MANIFEST), _dir("rootfs"), _file("rootfs/a", b"1"),
                  _file("rootfs/a", b"2")]),
        "duplicate",
    ),
    "dot-dot name": (
        _raw_tar([_file("manifest", MANIFEST), _dir("rootfs"), _file("rootfs/../../evil", b"x")]),
        "evil",
    ),
    "absolute name": (
        _raw_tar([_file("manifest", MANIFEST), _dir("rootfs"), _file("/rootfs/abs", b"x")]),
        "abs",
    ),
    "hardlink to outside": (
        _raw_tar([_file("manifest", MANIFEST), _dir("rootfs"),
                  _link("rootfs/passwd", "../../../etc/passwd", tarfile.LNKTYPE)]),
        "passwd",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_ARCHIVES))
def test_bad_archive_is_refused_and_nothing_stored(
    case: str, rkt_env: RktEnv, tmp_path: Path
) -> None:
    data, fragment = BAD_ARCHIVES[case]
    image = tmp_path / "bad.aci"
    image.write_bytes(data)
    rkt_env.run("--insecure-options=image", "fetch", "/dev/null/none.aci")  # creates the store
    before = rkt_env.store_snapshot()
    result = rkt_env.run("--insecure-options=image", "fetch", image)
    assert_one_line_error(result, fragment)
    assert rkt_env.store_snapshot() == before
    assert list((rkt_env.data_dir / "cas" / "tmp").iterdir()) == []


def test_missing_file_is_a_clear_error(rkt_env: RktEnv, tmp_path: Path) -> None:
    result = rkt_env.run("--insecure-options=image", "fetch", tmp_path / "nope.aci")
    assert_one_line_error(result, "no such file", "nope.aci")


def test_every_compression_of_one_tar_imports_to_the_same_id(
    rkt_env: RktEnv, aci_builder: AciBuilder
) -> None:
    plain = aci_builder.build("hello.aci", compression="none")
    ids = {rkt_env.run("--insecure-options=image", "fetch", "--full", plain,
                       check=True).stdout.strip()}
    for tool in (["gzip"], ["bzip2"], ["xz", "-T1"], ["zstd", "-q"]):
        compressed = plain.with_name(f"hello-{tool[0]}.aci")
        with open(compressed, "wb") as out:
            subprocess.run([*tool, "-c", str(plain)], stdout=out, check=True)
        result = rkt_env.run("--insecure-options=image", "fetch", "--full", compressed,
                             check=True)
        ids.add(result.stdout.strip())
    assert len(ids) == 1  # the ID is the hash of the uncompressed tar
    assert len(ids.pop()) == len("sha512-") + 64
    assert len(list((rkt_env.data_dir / "cas" / "blob").rglob("sha512-*"))) == 1


def test_same_image_twice_is_stored_once(rkt_env: RktEnv, aci_builder: AciBuilder) -> None:
    image = aci_builder.build()
    first = rkt_env.run("--insecure-options=image", "fetch", image, check=True).stdout
    second = rkt_env.run("--insecure-options=image", "fetch", image, check=True).stdout
    assert first == second
    assert len(list((rkt_env.data_dir / "cas" / "blob").rglob("sha512-*"))) == 1


def test_concurrent_fetches_from_several_processes(
    rkt_env: RktEnv, aci_builder: AciBuilder
) -> None:
    images = [aci_builder.build(f"img{i}.aci", name=f"example.com/img{i % 3}",
                                version=str(i)) for i in range(6)]
    processes = [
        subprocess.Popen(
            [RktEnv.rkt_binary(), *rkt_env.global_flags(), "--insecure-options=image", "fetch",
             str(images[i % 6])],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(12)  # every image fetched twice, all at once
    ]
    results = [(*p.communicate(timeout=120), p.returncode) for p in processes]
    assert all(code == 0 for _, _, code in results), results
    listing = rkt_env.run("image", "list", "--no-legend", check=True).stdout.splitlines()
    assert len(listing) == 6
    assert list((rkt_env.data_dir / "cas" / "tmp").iterdir()) == []


@pytest.mark.skipif(subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip()
                    != "0", reason="needs root to mount a small tmpfs")
def test_full_disk_leaves_the_store_consistent(aci_builder: AciBuilder, tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)], check=True)
    try:
        # no reserve: this is about a write that fails, not about stopping before it
        env = RktEnv(tmp_path / "env", env={"RKT_STORE_RESERVE": "0"})
        env.local_config.mkdir(parents=True)
        env.system_config.mkdir(parents=True)
        env.data_dir.symlink_to(small)
        fits = aci_builder.build("fits.aci", name="example.com/fits")
        env.run("--insecure-options=image", "fetch", fits, check=True)
        big = aci_builder.build("big.aci", name="example.com/big",
                                files={"blob": bytes(range(256)) * 16384}, compression="none")
        before = env.store_snapshot()
        result = env.run("--insecure-options=image", "fetch", big)
        assert_one_line_error(result, "no space left on device")
        assert env.store_snapshot() == before
        listing = env.run("image", "list", "--no-legend", check=True).stdout
        assert "example.com/fits" in listing and "example.com/big" not in listing
    finally:
        subprocess.run(["umount", str(small)], check=False)


# -- the other image commands -------------------------------------------------------------
def test_cat_manifest_export_extract(rkt_env: RktEnv, aci_builder: AciBuilder,
                                     tmp_path: Path) -> None:
    image = aci_builder.build(files={"etc/greeting": "hi\n"}, compression="none")
    image_id = rkt_env.run("--insecure-options=image", "fetch", image, check=True).stdout.strip()
    manifest = json.loads(rkt_env.run("image", "cat-manifest", image_id, check=True).stdout)
    assert manifest["name"] == "example.com/hello"
    compact = rkt_env.run("image", "cat-manifest", "--pretty-print=false", "example.com/hello",
                          check=True).stdout
    assert "\n" not in compact.strip()

    exported = tmp_path / "out.aci"
    rkt_env.run("image", "export", image_id, exported, check=True)
    assert exported.read_bytes() == image.read_bytes()  # the uncompressed ACI, byte for byte
    again = rkt_env.run("image", "export", image_id, exported)
    assert_one_line_error(again, "already exists")

    extracted = tmp_path / "extracted"
    rkt_env.run("image", "extract", image_id, extracted, check=True)
    assert (extracted / "manifest").is_file()
    assert (extracted / "rootfs" / "etc" / "greeting").read_text() == "hi\n"
    rootfs_only = tmp_path / "rootfs-only"
    rkt_env.run("image", "extract", "--rootfs-only", image_id, rootfs_only, check=True)
    assert (rootfs_only / "etc" / "greeting").is_file()


def test_image_list_formats(rkt_env: RktEnv, aci_builder: AciBuilder) -> None:
    image = aci_builder.build()
    full_id = rkt_env.run("--insecure-options=image", "fetch", "--full", image,
                          check=True).stdout.strip()
    records = json.loads(rkt_env.run("image", "list", "--format=json", check=True).stdout)
    assert records[0]["id"] == full_id
    assert records[0]["name"] == "example.com/hello"
    assert records[0]["version"] == "1.0.0"
    assert records[0]["size"] > 0
    full = rkt_env.run("image", "list", "--full", "--no-legend", check=True).stdout
    assert full_id in full
    short = rkt_env.run("image", "list", "--no-legend", check=True).stdout
    assert full_id[: len("sha512-") + 12] in short and full_id not in short


def test_image_commands_on_unknown_images(rkt_env: RktEnv) -> None:
    for args in (("image", "rm", "sha512-abcdef"), ("image", "cat-manifest", "example.com/x"),
                 ("image", "export", "sha512-ab", "/tmp/x.aci")):
        assert_one_line_error(rkt_env.run(*args), status=254)


def test_config_prints_merged_configuration(rkt_env: RktEnv) -> None:
    (rkt_env.system_config / "paths.d").mkdir()
    (rkt_env.system_config / "paths.d" / "p.json").write_text(
        json.dumps({"rktKind": "paths", "rktVersion": "v1", "data": "/srv/rkt"}))
    (rkt_env.local_config / "auth.d").mkdir()
    (rkt_env.local_config / "auth.d" / "a.json").write_text(json.dumps({
        "rktKind": "auth", "rktVersion": "v1", "domains": ["example.com"], "type": "basic",
        "credentials": {"user": "u", "password": "p"}}))
    (rkt_env.local_config / "auth.d" / "ignored.txt").write_text("not json")
    document = json.loads(rkt_env.run("config", check=True).stdout)
    kinds = {entry["rktKind"] for entry in document["stage0"]}
    assert kinds == {"paths", "auth"}
    (rkt_env.local_config / "auth.d" / "broken.json").write_text("{")
    result = rkt_env.run("config")
    assert_one_line_error(result, "broken.json", "not valid JSON")


def test_image_verify_detects_and_repairs_a_changed_tree(
    rkt_env: RktEnv, aci_builder: AciBuilder
) -> None:
    from rkt.store.cas import CasStore

    image = aci_builder.build(files={"etc/greeting": "hi\n", "etc/other": "x\n"})
    image_id = rkt_env.run("--insecure-options=image", "fetch", image, check=True).stdout.strip()
    store = CasStore(rkt_env.data_dir)
    tree = store.render(store.resolve(image_id).id)
    ok = rkt_env.run("image", "verify", image_id)
    assert ok.returncode == 0, ok.stderr
    assert "successfully verified checksum for image" in ok.stdout
    (tree / "rootfs" / "etc" / "greeting").unlink()
    (tree / "rootfs" / "etc" / "other").write_text("tampered\n")
    bad = rkt_env.run("image", "verify", image_id)
    assert_one_line_error(bad, "differs from the image", "removed it")
    assert not tree.exists()


@pytest.mark.root
def test_image_verify_keeps_a_changed_tree_that_a_pod_uses(
    rkt_env: RktEnv, aci_builder: AciBuilder
) -> None:
    """A prepared pod's rootfs is built on the tree: it is reported, not pulled away."""
    image = aci_builder.build(files={"etc/greeting": "hi\n"}, exec_=["/bin/true"],
                              busybox=True)
    image_id = rkt_env.run("--insecure-options=image", "fetch", image, check=True).stdout.strip()
    rkt_env.run("--insecure-options=image", "prepare", image_id, check=True)
    tree = next(rkt_env.data_dir.glob("cas/tree/deps-*/rootfs/etc/greeting")).parents[2]
    (tree / "rootfs" / "etc" / "greeting").write_text("tampered\n")
    bad = rkt_env.run("image", "verify", image_id)
    assert_one_line_error(bad, "differs from the image", "a pod still uses it")
    assert tree.exists()


def test_image_gc_removes_unused_trees_and_old_images(
    rkt_env: RktEnv, aci_builder: AciBuilder
) -> None:
    from rkt.store.cas import CasStore

    image = aci_builder.build()
    image_id = rkt_env.run("--insecure-options=image", "fetch", image, check=True).stdout.strip()
    store = CasStore(rkt_env.data_dir)
    tree = store.render(store.resolve(image_id).id)
    kept = rkt_env.run("image", "gc", check=True).stdout  # default grace: 24h
    assert f'removed treestore "{tree.name}"' in kept
    assert "example.com/hello" in rkt_env.run("image", "list", check=True).stdout
    gone = rkt_env.run("image", "gc", "--grace-period=0s", check=True).stdout
    assert "successfully removed aci for image" in gone
    assert "example.com/hello" not in rkt_env.run("image", "list", check=True).stdout


def test_import_progress_bar_only_on_a_terminal(rkt_env: RktEnv,
                                                aci_builder: AciBuilder) -> None:
    image = aci_builder.build(busybox=True)
    status, output = rkt_env.run_on_terminal("--insecure-options=image", "fetch", image)
    assert status == 0, output
    assert "Importing ACI: [" in output and "MB" in output
    piped = rkt_env.run("--insecure-options=image", "fetch", image, check=True)
    assert "Importing ACI" not in piped.stderr
    assert piped.stdout.startswith("sha512-")
