"""The openpgp verifier against keys and signatures made by real GnuPG."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pysequoia
import pytest

from rkt.errors import VerificationError
from rkt.facade import Plugins
from rkt.fetching import Signer
from rkt.keystore import TrustedKey, TrustedKeystore, format_fingerprint
from rkt.plugins import new_plugin_manager
from rkt_plugins.openpgp import OpenPGPVerifier
from rkt_testing.gpg import GpgHome

LONG_AGO = datetime(2020, 1, 1, tzinfo=UTC)
SIGNED_AT = datetime(2020, 1, 1, 1, tzinfo=UTC)


@dataclass
class Keys:
    home: GpgHome
    ed25519: str
    rsa: str
    with_subkey: str
    subkey: str
    stranger: str
    expired: str
    revoked: str
    revoked_sub_primary: str
    revoked_sub: str
    expired_sub_primary: str
    expired_sub: str
    #: signed before the revocations: gpg refuses to sign with a revoked key
    payload: Path
    by_revoked: Path
    by_revoked_sub: Path


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keys]:
    with GpgHome(tmp_path_factory.mktemp("gnupg")) as home:
        ed25519 = home.generate_key("Ed Signer <ed@example.com>")
        home.add_uid(ed25519, "Ed Second <ed2@example.com>")
        rsa = home.generate_key("RSA Signer <rsa@example.com>", algo="rsa2048")
        with_subkey = home.generate_key("Sub Signer <sub@example.com>")
        subkey = home.add_signing_subkey(with_subkey)
        stranger = home.generate_key("Stranger <stranger@example.com>")
        expired = home.generate_key("Old Signer <old@example.com>", expire="1d", at=LONG_AGO)
        revoked = home.generate_key("Revoked Signer <revoked@example.com>")
        revoked_sub_primary = home.generate_key("Revoked Sub <revsub@example.com>")
        revoked_sub = home.add_signing_subkey(revoked_sub_primary)
        expired_sub_primary = home.generate_key("Old Sub <oldsub@example.com>", at=LONG_AGO)
        expired_sub = home.add_signing_subkey(expired_sub_primary, expire="1d", at=LONG_AGO)
        payload = tmp_path_factory.mktemp("payload") / "revoked.aci"
        payload.write_bytes(b"signed before the key was revoked")
        by_revoked = home.sign_detached(revoked, payload, payload.with_name("key.asc"))
        by_revoked_sub = home.sign_detached(
            revoked_sub_primary, payload, payload.with_name("subkey.asc")
        )
        home.revoke_key(revoked)
        home.revoke_subkey(revoked_sub_primary, revoked_sub)
        yield Keys(
            home, ed25519, rsa, with_subkey, subkey, stranger, expired, revoked,
            revoked_sub_primary, revoked_sub, expired_sub_primary, expired_sub,
            payload, by_revoked, by_revoked_sub,
        )


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "hello.aci"
    path.write_bytes(b"not really an ACI, but the verifier only sees bytes\n" * 1000)
    return path


def _trusted(
    keys: Keys, tmp_path: Path, *fingerprints: str, armor: bool = True
) -> list[TrustedKey]:
    keystore = TrustedKeystore(tmp_path / "sys", tmp_path / "local")
    for fp in fingerprints:
        keystore.store_trusted_key(
            keys.home.export_public(fp, armor=armor), prefix="example.com", source=fp
        )
    return keystore.all_keys()


def _verify(data: Path, signature: Path, trusted: list[TrustedKey]) -> Signer:
    return OpenPGPVerifier().verify(data, signature.read_bytes(), trusted)


def _fails(data: Path, signature: Path | bytes, trusted: list[TrustedKey]) -> str:
    raw = signature if isinstance(signature, bytes) else signature.read_bytes()
    with pytest.raises(VerificationError) as caught:
        OpenPGPVerifier().verify(data, raw, trusted)
    message = str(caught.value)
    assert "\n" not in message and "backtrace" not in message.lower(), message
    return message


# -- registration ----------------------------------------------------------------------
def test_registered_as_the_openpgp_verifier() -> None:
    pm = new_plugin_manager(builtins=("rkt_plugins.openpgp",), autoload=False)
    plugins = Plugins(pm)
    assert isinstance(plugins.verifier("openpgp"), OpenPGPVerifier)
    assert plugins.verifiers.provider("openpgp") == "openpgp"


# -- good signatures -------------------------------------------------------------------
def test_ed25519_signature(keys: Keys, image: Path, tmp_path: Path) -> None:
    signature = keys.home.sign_detached(keys.ed25519, image)
    trusted = _trusted(keys, tmp_path, keys.ed25519, keys.rsa)
    signer = _verify(image, signature, trusted)
    assert signer.fingerprint == keys.ed25519.lower()
    assert set(signer.user_ids) == {"Ed Signer <ed@example.com>", "Ed Second <ed2@example.com>"}


def test_rsa_signature_with_binary_key_file(keys: Keys, image: Path, tmp_path: Path) -> None:
    signature = keys.home.sign_detached(keys.rsa, image, tmp_path / "sig.asc")
    trusted = _trusted(keys, tmp_path, keys.rsa, armor=False)
    assert _verify(image, signature, trusted) == Signer(
        fingerprint=keys.rsa.lower(), user_ids=("RSA Signer <rsa@example.com>",)
    )


def test_subkey_signature_names_the_primary_key(keys: Keys, image: Path, tmp_path: Path) -> None:
    signature = keys.home.sign_detached(keys.with_subkey, image)
    assert pysequoia.Sig.from_file(str(signature)).issuer_fingerprint == keys.subkey.lower()
    signer = _verify(image, signature, _trusted(keys, tmp_path, keys.with_subkey))
    assert signer.fingerprint == keys.with_subkey.lower()


def test_primary_key_signature_of_a_key_with_subkeys(
    keys: Keys, image: Path, tmp_path: Path
) -> None:
    signature = keys.home.sign_detached(keys.with_subkey, image, exact_key=True)
    signer = _verify(image, signature, _trusted(keys, tmp_path, keys.with_subkey))
    assert signer.fingerprint == keys.with_subkey.lower()


def test_key_trusted_for_another_prefix_still_verifies(
    keys: Keys, image: Path, tmp_path: Path
) -> None:
    # The verifier names the signer; whether the signer is trusted for the image's
    # *name* is the keystore's and the pipeline's business (fingerprints_for).
    keystore = TrustedKeystore(tmp_path / "sys", tmp_path / "local")
    keystore.store_trusted_key(
        keys.home.export_public(keys.ed25519), prefix="other.org", source="k"
    )
    signature = keys.home.sign_detached(keys.ed25519, image)
    assert _verify(image, signature, keystore.all_keys()).fingerprint == keys.ed25519.lower()
    assert keys.ed25519.lower() not in keystore.fingerprints_for("example.com/hello")
    assert keys.ed25519.lower() in keystore.fingerprints_for("other.org/hello")


# -- failures --------------------------------------------------------------------------
def test_signature_over_other_bytes(keys: Keys, image: Path, tmp_path: Path) -> None:
    signature = keys.home.sign_detached(keys.ed25519, image)
    tampered = tmp_path / "tampered.aci"
    tampered.write_bytes(image.read_bytes() + b"!")
    message = _fails(tampered, signature, _trusted(keys, tmp_path, keys.ed25519))
    assert message.startswith("openpgp: invalid signature: ")
    assert "do not match" in message
    assert format_fingerprint(keys.ed25519) in message


def test_signature_by_an_untrusted_key(keys: Keys, image: Path, tmp_path: Path) -> None:
    signature = keys.home.sign_detached(keys.stranger, image)
    message = _fails(image, signature, _trusted(keys, tmp_path, keys.ed25519, keys.rsa))
    assert message.startswith("openpgp: signature made by unknown entity")
    assert format_fingerprint(keys.stranger) in message
    # the hint (rkt trust --prefix "<name>") is added by the pipeline, which knows the
    # image's name: tests/cli/test_fetch_file.py checks it
    from rkt.errors import UnknownSignerError

    with pytest.raises(UnknownSignerError):
        OpenPGPVerifier().verify(image, signature.read_bytes(), [])


def test_signature_by_an_untrusted_subkey_names_it(
    keys: Keys, image: Path, tmp_path: Path
) -> None:
    signature = keys.home.sign_detached(keys.with_subkey, image)
    message = _fails(image, signature, [])
    assert "unknown entity" in message
    assert format_fingerprint(keys.subkey) in message


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"   \n",
        b"this is not a signature\n",
        b"-----BEGIN PGP SIGNATURE-----\n\nnot base64 at all\n-----END PGP SIGNATURE-----\n",
    ],
)
def test_malformed_signature(
    keys: Keys, image: Path, tmp_path: Path, content: bytes
) -> None:
    message = _fails(image, content, _trusted(keys, tmp_path, keys.ed25519))
    assert message.startswith("openpgp: malformed signature")


def test_a_public_key_is_not_a_signature(keys: Keys, image: Path, tmp_path: Path) -> None:
    key = keys.home.export_public(keys.ed25519)
    message = _fails(image, key, _trusted(keys, tmp_path, keys.ed25519))
    assert message.startswith("openpgp: malformed signature")


def test_expired_key(keys: Keys, image: Path, tmp_path: Path) -> None:
    # Made while the key was valid: OpenPGP would accept it, rkt does not.
    signature = keys.home.sign_detached(keys.expired, image, at=SIGNED_AT)
    message = _fails(image, signature, _trusted(keys, tmp_path, keys.expired))
    assert re.search(r"key .*Old Signer.* expired on 2020-01-02", message), message


def test_expired_signing_subkey(keys: Keys, image: Path, tmp_path: Path) -> None:
    signature = keys.home.sign_detached(keys.expired_sub + "!", image, at=SIGNED_AT)
    message = _fails(image, signature, _trusted(keys, tmp_path, keys.expired_sub_primary))
    assert "signing subkey" in message and "expired on 2020-01-02" in message, message
    assert format_fingerprint(keys.expired_sub) in message


def test_revoked_key(keys: Keys, tmp_path: Path) -> None:
    message = _fails(keys.payload, keys.by_revoked, _trusted(keys, tmp_path, keys.revoked))
    assert message == (
        f"openpgp: key {format_fingerprint(keys.revoked)} "
        "(Revoked Signer <revoked@example.com>) is revoked"
    )


def test_revoked_signing_subkey(keys: Keys, tmp_path: Path) -> None:
    trusted = _trusted(keys, tmp_path, keys.revoked_sub_primary)
    message = _fails(keys.payload, keys.by_revoked_sub, trusted)
    assert "signing subkey" in message and message.endswith("is revoked"), message


def test_weak_hash_is_refused(keys: Keys, image: Path, tmp_path: Path) -> None:
    signature = keys.home.sign_detached(
        keys.rsa, image, tmp_path / "sha1.asc", digest="SHA1"
    )
    message = _fails(image, signature, _trusted(keys, tmp_path, keys.rsa))
    assert message.startswith("openpgp: invalid signature:") and "SHA1" in message


def test_unreadable_data_file(keys: Keys, image: Path, tmp_path: Path) -> None:
    signature = keys.home.sign_detached(keys.ed25519, image)
    message = _fails(tmp_path / "missing.aci", signature, _trusted(keys, tmp_path, keys.ed25519))
    assert message.startswith("openpgp: cannot read") and "missing.aci" in message


def test_broken_trusted_key_is_named(keys: Keys, image: Path, tmp_path: Path) -> None:
    signature = keys.home.sign_detached(keys.ed25519, image)
    broken = TrustedKey(
        fingerprint="ab" * 20, armored=b"garbage", path=tmp_path / ("ab" * 20), prefix=None
    )
    message = _fails(image, signature, [broken])
    assert "unusable trusted key" in message and str(broken.path) in message


def test_large_file_is_verified(keys: Keys, tmp_path: Path) -> None:
    big = tmp_path / "big.aci"
    with big.open("wb") as handle:
        chunk = bytes(range(256)) * 4096
        for _ in range(64):  # 64 MiB
            handle.write(chunk)
    signature = keys.home.sign_detached(keys.rsa, big)
    signer = _verify(big, signature, _trusted(keys, tmp_path, keys.rsa))
    assert signer.fingerprint == keys.rsa.lower()
