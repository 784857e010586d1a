"""rkt.keystore: layout, masking, prefix matching, atomic writes, key parsing.

Keys come from real GnuPG (rkt_testing.gpg), as the keys users trust do.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rkt.errors import KeystoreError, UsageError
from rkt.keystore import (
    KeyDescription,
    TrustedKeystore,
    describe_key,
    format_fingerprint,
    name_prefixes,
    validate_prefix,
)
from rkt_testing.gpg import GpgHome


class Keys:
    """Keys made once per module: generation is the slow part."""

    def __init__(self, home: GpgHome) -> None:
        self.home = home
        self.alice = home.generate_key("Alice <alice@example.com>").lower()
        home.add_uid(self.alice, "Alice Work <alice@work.example.com>")
        self.alice_sub = home.add_signing_subkey(self.alice).lower()
        self.bob = home.generate_key("Bob <bob@example.com>", algo="rsa2048").lower()

    def public(self, fp: str, *, armor: bool = True) -> bytes:
        return self.home.export_public(fp, armor=armor)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keys]:
    with GpgHome(tmp_path_factory.mktemp("gnupg")) as home:
        yield Keys(home)


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "usr-lib-rkt", tmp_path / "etc-rkt"


@pytest.fixture
def keystore(dirs: tuple[Path, Path]) -> TrustedKeystore:
    return TrustedKeystore(*dirs)


def _put(config: Path, relative: str, content: bytes) -> Path:
    path = config / "trustedkeys" / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def _tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) if root.exists() else []


# -- describing keys -------------------------------------------------------------------
def test_format_fingerprint_matches_the_seed_article() -> None:
    assert (
        format_fingerprint("8b86de38890ddb7291867b025210bd8888182190")
        == "8B86 DE38 890D DB72 9186 7B02 5210 BD88 8818 2190"
    )


def test_describe_armored_and_binary_key_alike(keys: Keys) -> None:
    armored = describe_key(keys.public(keys.alice), source="alice.asc")
    binary = describe_key(keys.public(keys.alice, armor=False), source="alice.gpg")
    assert armored == binary
    assert isinstance(armored, KeyDescription)
    assert armored.fingerprint == keys.alice
    assert armored.subkey_fingerprints == (keys.alice_sub,)
    assert set(armored.user_ids) == {
        "Alice <alice@example.com>", "Alice Work <alice@work.example.com>",
    }
    assert not armored.revoked


def test_describe_rsa_key(keys: Keys) -> None:
    described = describe_key(keys.public(keys.bob), source="bob.asc")
    assert described.fingerprint == keys.bob
    assert described.user_ids == ("Bob <bob@example.com>",)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "is empty"),
        (b"   \n", "is empty"),
        (b"this is not a key\n", "is not an OpenPGP public key"),
        (os.urandom(64).replace(b"\x99", b"\x00"), "OpenPGP public key"),
    ],
)
def test_describe_rejects_garbage_naming_the_source(content: bytes, expected: str) -> None:
    with pytest.raises(KeystoreError, match=expected) as caught:
        describe_key(content, source="/keys/thing.asc")
    assert '"/keys/thing.asc"' in str(caught.value)
    assert "\n" not in str(caught.value)


def test_describe_rejects_a_signature(keys: Keys, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_bytes(b"x")
    sig = keys.home.sign_detached(keys.alice, data)
    expected = re.escape('key "sig.asc" is not an OpenPGP public key')
    with pytest.raises(KeystoreError, match=expected):
        describe_key(sig.read_bytes(), source="sig.asc")


def test_describe_rejects_a_secret_key(keys: Keys) -> None:
    with pytest.raises(KeystoreError, match=re.escape('key "secret.asc" is a secret key')):
        describe_key(keys.home.export_secret(keys.alice), source="secret.asc")


def test_describe_rejects_two_keys_in_one_file(keys: Keys) -> None:
    both = keys.public(keys.alice, armor=False) + keys.public(keys.bob, armor=False)
    with pytest.raises(KeystoreError, match=re.escape('key "both.gpg" contains 2 keys')):
        describe_key(both, source="both.gpg")


# -- prefixes --------------------------------------------------------------------------
def test_name_prefixes_are_whole_components() -> None:
    assert name_prefixes("example.com/hello/world") == [
        "example.com", "example.com/hello", "example.com/hello/world",
    ]


@pytest.mark.parametrize("prefix", ["example.com", "example.com/hello", "a-b.c_d~e/f1"])
def test_valid_prefixes(prefix: str) -> None:
    assert validate_prefix(prefix) == prefix


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        ("https://example.com/hello", "must not contain a URL scheme"),
        ("http://example.com", "must not contain a URL scheme"),
        ("Example.com", "not a valid image name prefix"),
        ("example.com/../etc", "not a valid image name prefix"),
        ("/example.com", "not a valid image name prefix"),
        ("example.com/", "not a valid image name prefix"),
        ("example.com//x", "not a valid image name prefix"),
        ("example.com/hello world", "not a valid image name prefix"),
    ],
)
def test_invalid_prefixes(prefix: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        validate_prefix(prefix)


# -- storing ---------------------------------------------------------------------------
def test_store_prefix_key_layout_modes_and_content(
    keys: Keys, keystore: TrustedKeystore, dirs: tuple[Path, Path]
) -> None:
    system, local = dirs
    old_umask = os.umask(0o077)  # modes must not depend on the caller's umask
    try:
        path = keystore.store_trusted_key(
            keys.public(keys.alice), prefix="example.com/hello", source="alice.asc"
        )
    finally:
        os.umask(old_umask)
    assert path == local / "trustedkeys/prefix.d/example.com/hello" / keys.alice
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    for directory in (
        local, local / "trustedkeys", local / "trustedkeys/prefix.d",
        local / "trustedkeys/prefix.d/example.com", path.parent,
    ):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o755, directory
    assert path.read_bytes() == keys.public(keys.alice)  # armored input kept as given
    assert not system.exists()
    assert _tree(local / "trustedkeys") == [
        "prefix.d", "prefix.d/example.com", "prefix.d/example.com/hello",
        f"prefix.d/example.com/hello/{keys.alice}",
    ]


def test_store_root_key_armors_binary_input(
    keys: Keys, keystore: TrustedKeystore, dirs: tuple[Path, Path]
) -> None:
    _, local = dirs
    path = keystore.store_trusted_key(
        keys.public(keys.bob, armor=False), prefix=None, source="bob.gpg"
    )
    assert path == local / "trustedkeys/root.d" / keys.bob
    content = path.read_bytes()
    assert content.startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK-----")
    assert describe_key(content, source=str(path)).fingerprint == keys.bob


def test_store_overwrites_and_leaves_no_temp_files(
    keys: Keys, keystore: TrustedKeystore
) -> None:
    first = keystore.store_trusted_key(keys.public(keys.alice), prefix="a.com", source="k")
    second = keystore.store_trusted_key(
        keys.public(keys.alice, armor=False), prefix="a.com", source="k"
    )
    assert first == second
    assert sorted(p.name for p in first.parent.iterdir()) == [keys.alice]


def test_store_is_atomic(
    keys: Keys, keystore: TrustedKeystore, dirs: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, local = dirs
    renames: list[tuple[str, str]] = []
    real_replace = os.replace

    def recording_replace(src: str, dst: str) -> None:
        # At the moment of the rename the temp file is complete and the target absent.
        assert Path(src).parent == Path(dst).parent
        assert Path(src).read_bytes() == keys.public(keys.alice)
        assert not Path(dst).exists()
        renames.append((str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", recording_replace)
    path = keystore.store_trusted_key(keys.public(keys.alice), prefix=None, source="k")
    assert renames == [(renames[0][0], str(path))]

    def failing_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(KeystoreError, match="No space left on device") as caught:
        keystore.store_trusted_key(keys.public(keys.bob), prefix="b.com", source="k")
    assert keys.bob in str(caught.value)
    assert list((local / "trustedkeys/prefix.d/b.com").iterdir()) == []


def test_store_rejects_bad_prefix_and_bad_key_writing_nothing(
    keys: Keys, keystore: TrustedKeystore, dirs: tuple[Path, Path]
) -> None:
    _, local = dirs
    with pytest.raises(UsageError, match="URL scheme"):
        keystore.store_trusted_key(
            keys.public(keys.alice), prefix="https://example.com", source="k"
        )
    with pytest.raises(UsageError):
        keystore.store_trusted_key(keys.public(keys.alice), prefix="../../etc", source="k")
    with pytest.raises(KeystoreError, match=re.escape('key "junk.asc"')):
        keystore.store_trusted_key(b"junk", prefix="example.com", source="junk.asc")
    assert not local.exists()


# -- reading ---------------------------------------------------------------------------
def test_all_keys_from_both_dirs_with_prefixes(
    keys: Keys, keystore: TrustedKeystore, dirs: tuple[Path, Path]
) -> None:
    system, local = dirs
    _put(system, f"root.d/{keys.alice}", keys.public(keys.alice))
    _put(system, f"prefix.d/example.com/{keys.bob}", keys.public(keys.bob))
    _put(local, f"prefix.d/example.com/hello/{keys.alice}", keys.public(keys.alice))
    found = {(k.prefix, k.fingerprint, k.path) for k in keystore.all_keys()}
    assert found == {
        (None, keys.alice, system / "trustedkeys/root.d" / keys.alice),
        ("example.com", keys.bob, system / "trustedkeys/prefix.d/example.com" / keys.bob),
        ("example.com/hello", keys.alice,
         local / "trustedkeys/prefix.d/example.com/hello" / keys.alice),
    }
    by_prefix = {k.prefix: k for k in keystore.all_keys()}
    assert by_prefix["example.com"].armored == keys.public(keys.bob)


def test_empty_local_file_masks_the_system_key(
    keys: Keys, keystore: TrustedKeystore, dirs: tuple[Path, Path]
) -> None:
    system, local = dirs
    _put(system, f"root.d/{keys.alice}", keys.public(keys.alice))
    _put(system, f"prefix.d/example.com/{keys.bob}", keys.public(keys.bob))
    _put(local, f"root.d/{keys.alice}", b"")
    # An empty file at a *different* path does not mask the key.
    _put(local, f"prefix.d/other.com/{keys.bob}", b"")
    assert [(k.prefix, k.fingerprint) for k in keystore.all_keys()] == [
        ("example.com", keys.bob),
    ]
    assert keystore.fingerprints_for("example.com/app") == {keys.bob}
    assert keystore.fingerprints_for("other.com/app") == set()


def test_local_key_overrides_the_system_copy(
    keys: Keys, keystore: TrustedKeystore, dirs: tuple[Path, Path]
) -> None:
    system, local = dirs
    _put(system, f"root.d/{keys.bob}", keys.public(keys.bob))
    local_path = _put(local, f"root.d/{keys.bob}", keys.public(keys.bob, armor=False))
    assert [k.path for k in keystore.all_keys()] == [local_path]


def test_empty_and_unrelated_files_are_not_keys(
    keys: Keys, keystore: TrustedKeystore, dirs: tuple[Path, Path]
) -> None:
    system, local = dirs
    _put(system, f"root.d/{keys.bob}", b"")
    _put(local, "root.d/README", b"keys live here")
    _put(local, f"root.d/.tmp-{keys.alice}", b"half a key")
    assert keystore.all_keys() == []
    assert keystore.fingerprints_for("example.com") == set()


def test_key_file_with_wrong_fingerprint_is_skipped_with_a_warning(
    keys: Keys, keystore: TrustedKeystore, dirs: tuple[Path, Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, local = dirs
    path = _put(local, f"prefix.d/example.com/{keys.alice}", keys.public(keys.bob))
    good = _put(local, f"prefix.d/example.com/{keys.bob}", keys.public(keys.bob))
    with caplog.at_level(logging.WARNING, logger="rkt.keystore"):
        assert [k.path for k in keystore.all_keys()] == [good]
        assert keystore.fingerprints_for("example.com/app") == {keys.bob}
    assert f"trusted key {path} has fingerprint {keys.bob}" in caplog.text
    assert "does not match its file name" in caplog.text


def test_garbage_key_file_is_skipped_naming_it(
    keys: Keys, keystore: TrustedKeystore, dirs: tuple[Path, Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # One broken file must not stop the verification of every other image.
    _, local = dirs
    broken = _put(local, "prefix.d/broken.org/" + "ab" * 20, b"not a key")
    good = _put(local, f"root.d/{keys.alice}", keys.public(keys.alice))
    with caplog.at_level(logging.WARNING, logger="rkt.keystore"):
        assert [k.path for k in keystore.all_keys()] == [good]
    assert f'key "{broken}" is not an OpenPGP public key' in caplog.text
    assert keystore.fingerprints_for("broken.org/app") == {keys.alice}


def test_fingerprints_for_matches_whole_path_components(
    keys: Keys, keystore: TrustedKeystore
) -> None:
    keystore.store_trusted_key(keys.public(keys.alice), prefix="example.com/hello", source="k")
    keystore.store_trusted_key(keys.public(keys.bob), prefix="example.com/hel", source="k")
    name = "example.com/hello/world"
    assert keystore.fingerprints_for(name) == {keys.alice}
    assert keystore.fingerprints_for("example.com/hello") == {keys.alice}
    assert keystore.fingerprints_for("example.com/helloworld") == set()
    assert keystore.fingerprints_for("example.com") == set()
    # Both keys are usable for verification; trust for a *name* is decided separately.
    assert {k.fingerprint for k in keystore.all_keys()} == {keys.alice, keys.bob}


@pytest.mark.parametrize("prefix", ["example.com", "example.com/hello", "example.com/hello/world"])
def test_every_covering_prefix_trusts_the_name(
    keys: Keys, keystore: TrustedKeystore, prefix: str
) -> None:
    keystore.store_trusted_key(keys.public(keys.alice), prefix=prefix, source="k")
    assert keystore.fingerprints_for("example.com/hello/world") == {keys.alice}


def test_root_keys_trust_every_name(keys: Keys, keystore: TrustedKeystore) -> None:
    keystore.store_trusted_key(keys.public(keys.bob), prefix=None, source="k")
    keystore.store_trusted_key(keys.public(keys.alice), prefix="other.org", source="k")
    assert keystore.fingerprints_for("example.com/hello") == {keys.bob}
    assert keystore.fingerprints_for("other.org/x") == {keys.alice, keys.bob}


def test_missing_config_dirs_mean_no_keys(tmp_path: Path) -> None:
    keystore = TrustedKeystore(tmp_path / "nope1", tmp_path / "nope2")
    assert keystore.all_keys() == []
    assert keystore.fingerprints_for("example.com") == set()


def test_importing_the_keystore_is_cheap() -> None:
    code = (
        "import sys, rkt.keystore; "
        "assert 'pysequoia' not in sys.modules and 'requests' not in sys.modules, "
        "sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
