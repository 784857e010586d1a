"""The ``openpgp`` verifier: detached OpenPGP signatures over an image's exact bytes.

Cryptography and packet parsing are pysequoia's (Sequoia-PGP, under its standard
policy); this module decides which keys to offer it and turns its outcome into one
line a user can act on. pysequoia reports every failed check the same way ("no valid
signatures found"), so before and after asking it we look at the signature's issuer
and at the matching key to say *why*: unknown signer, revoked or expired key, weak
hash, or bytes that do not match.

rkt's rule on expiry is stricter than OpenPGP's: OpenPGP accepts a signature made
while the key was valid, but a key that has expired (or a signing subkey that has)
can no longer vouch for an image here, because anyone holding an old key could
backdate a signature.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from rkt.api import (
    KeystoreError,
    Signer,
    TrustedKey,
    UnknownSignerError,
    VerificationError,
    hookimpl,
)
from rkt.keystore import first_line, format_fingerprint, parse_certificate

if TYPE_CHECKING:
    import pysequoia

    from rkt.api import VerifierRegistry

LOG = logging.getLogger(__name__)

#: hashes Sequoia's standard policy refuses for document signatures
_WEAK_HASHES = ("MD5", "SHA1", "RipeMD")


class OpenPGPVerifier:
    """Implements :class:`rkt.fetching.Verifier` for armored detached signatures."""

    def verify(self, data: Path, signature: bytes, keys: Sequence[TrustedKey]) -> Signer:
        import pysequoia

        sig = _parse_signature(signature)
        certs = _load_certs(keys)
        issuers = {h for h in (sig.issuer_fingerprint, sig.issuer_key_id) if h}
        candidates = [cert for cert in certs if issuers & _key_handles(cert)] if issuers else certs
        if not candidates:
            # the pipeline adds how to trust it, naming the image's prefix
            raise UnknownSignerError(
                f"openpgp: signature made by unknown entity ({_describe_issuer(sig)})"
            )
        try:
            result = pysequoia.verify(
                file=str(data), signature=sig, store=lambda _ids: candidates
            )
        except OSError as exc:
            raise VerificationError(f"openpgp: cannot read {data}: {exc.strerror}") from exc
        except RuntimeError as exc:
            message = first_line(exc)
            if message.startswith("Reading"):
                raise VerificationError(f"openpgp: cannot read {data}: {message}") from exc
            raise VerificationError(_explain_failure(sig, candidates)) from exc
        if not result.valid_sigs:
            raise VerificationError(_explain_failure(sig, candidates))
        valid = result.valid_sigs[0]
        primary = str(valid.certificate).lower()
        signing_key = str(valid.signing_key).lower()
        cert = next((c for c in candidates if c.fingerprint.lower() == primary), None)
        if cert is None:  # pysequoia only ever uses the certificates we hand it
            raise VerificationError(f"openpgp: signature over {data} names an unexpected key")
        _refuse_expired(cert, signing_key)
        user_ids = tuple(str(uid) for uid in cert.user_ids)
        LOG.debug("signature over %s verified: key %s (%s)", data, primary, signing_key)
        return Signer(fingerprint=primary, user_ids=user_ids)


@hookimpl
def rkt_register_verifiers(registry: VerifierRegistry) -> None:
    registry.add("openpgp", OpenPGPVerifier())


# -- helpers ---------------------------------------------------------------------------
def _parse_signature(signature: bytes) -> pysequoia.Sig:
    import pysequoia

    if not signature.strip():
        raise VerificationError("openpgp: malformed signature: the signature file is empty")
    try:
        return pysequoia.Sig.from_bytes(signature)
    except Exception as exc:
        raise VerificationError(
            f"openpgp: malformed signature: not an OpenPGP signature ({first_line(exc)})"
        ) from exc


def _load_certs(keys: Sequence[TrustedKey]) -> list[pysequoia.Cert]:
    certs = []
    for key in keys:
        try:
            certs.append(parse_certificate(key.armored, source=str(key.path)))
        except KeystoreError as exc:
            raise VerificationError(f"openpgp: unusable trusted key: {exc}") from exc
    return certs


def _packets(cert: pysequoia.Cert) -> list[pysequoia.packet.Packet]:
    from pysequoia.packet import PacketPile

    return list(PacketPile.from_bytes(bytes(cert)))


def _key_handles(cert: pysequoia.Cert) -> set[str]:
    """Fingerprints and key IDs of the primary key and every subkey, lowercase."""
    handles: set[str] = set()
    for packet in _packets(cert):
        if packet.fingerprint:
            handles.add(packet.fingerprint.lower())
        if packet.key_id:
            handles.add(packet.key_id.lower())
    return handles


def _describe_issuer(sig: pysequoia.Sig) -> str:
    if sig.issuer_fingerprint:
        return f"signing key fingerprint {format_fingerprint(sig.issuer_fingerprint)}"
    if sig.issuer_key_id:
        return f"signing key ID {sig.issuer_key_id.upper()}"
    return "the signature does not name its key"


def _key_name(cert: pysequoia.Cert) -> str:
    uids = [str(uid) for uid in cert.user_ids]
    label = f" ({uids[0]})" if uids else ""
    return f"{format_fingerprint(cert.fingerprint)}{label}"


def _subkey_state(
    cert: pysequoia.Cert, subkey: str
) -> tuple[bool, datetime | None]:
    """(revoked, expiry) of one subkey, read from its newest binding signature.

    pysequoia exposes neither for subkeys, so this reads the packets pysequoia parsed.
    It only explains a failure or tightens acceptance; it never makes a bad signature good.
    """
    from pysequoia.packet import SignatureType, Tag

    revoked = False
    created: datetime | None = None
    binding: tuple[datetime, datetime | None] | None = None
    current = False
    for packet in _packets(cert):
        if packet.tag in (Tag.PublicKey, Tag.PublicSubkey, Tag.UserID, Tag.UserAttribute):
            current = packet.tag == Tag.PublicSubkey and packet.fingerprint == subkey
            if current:
                created = packet.key_created
            continue
        if not current or packet.tag != Tag.Signature:
            continue
        if packet.signature_type == SignatureType.SubkeyRevocation:
            revoked = True
        elif packet.signature_type == SignatureType.SubkeyBinding:
            made = packet.signature_created
            if made is not None and (binding is None or made > binding[0]):
                period = packet.key_validity_period
                expiry = created + period if created is not None and period else None
                binding = (made, expiry)
    return revoked, binding[1] if binding else None


def _refuse_expired(cert: pysequoia.Cert, signing_key: str) -> None:
    now = datetime.now(UTC)
    expiry = cert.expiration
    if expiry is not None and expiry <= now:
        raise VerificationError(
            f"openpgp: key {_key_name(cert)} expired on {expiry:%Y-%m-%d}; "
            "a signature by an expired key is not accepted"
        )
    if signing_key != cert.fingerprint.lower():
        _, sub_expiry = _subkey_state(cert, signing_key)
        if sub_expiry is not None and sub_expiry <= now:
            raise VerificationError(
                f"openpgp: signing subkey {format_fingerprint(signing_key)} of key "
                f"{_key_name(cert)} expired on {sub_expiry:%Y-%m-%d}; "
                "a signature by an expired key is not accepted"
            )


def _explain_failure(sig: pysequoia.Sig, candidates: Sequence[pysequoia.Cert]) -> str:
    """Why pysequoia found no valid signature, as precisely as we can tell."""
    now = datetime.now(UTC)
    for cert in candidates:
        if cert.is_revoked:
            return f"openpgp: key {_key_name(cert)} is revoked"
        expiry = cert.expiration
        if expiry is not None and sig.created is not None and expiry <= sig.created:
            return (
                f"openpgp: key {_key_name(cert)} had expired on {expiry:%Y-%m-%d}, "
                "before the signature was made"
            )
        issuer = (sig.issuer_fingerprint or "").lower()
        if issuer and issuer != cert.fingerprint.lower():
            revoked, sub_expiry = _subkey_state(cert, issuer)
            if revoked:
                return (
                    f"openpgp: signing subkey {format_fingerprint(issuer)} of key "
                    f"{_key_name(cert)} is revoked"
                )
            if sub_expiry is not None and sig.created is not None and sub_expiry <= sig.created:
                return (
                    f"openpgp: signing subkey {format_fingerprint(issuer)} of key "
                    f"{_key_name(cert)} had expired on {sub_expiry:%Y-%m-%d}, "
                    "before the signature was made"
                )
    hash_name = repr(sig.hash_algorithm).rsplit(".", 1)[-1]
    if hash_name in _WEAK_HASHES:
        return f"openpgp: invalid signature: it uses the weak hash {hash_name}, which is refused"
    if sig.expiration is not None and sig.expiration <= now:
        return f"openpgp: invalid signature: it expired on {sig.expiration:%Y-%m-%d}"
    if sig.created is not None and sig.created > now:
        return (
            f"openpgp: invalid signature: it claims to be made in the future "
            f"({sig.created:%Y-%m-%d %H:%M:%S} UTC); check the clock"
        )
    # No file name: the verifier sees a private copy in the store's tmp dir, a name
    # that means nothing to the user.
    return (
        "openpgp: invalid signature: the image's bytes do not match the signature made with "
        f"{_describe_issuer(sig)} (the image was changed, or the signature is for another file)"
    )
