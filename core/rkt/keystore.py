"""The trusted-key store: which OpenPGP keys may sign images with which names.

Layout (rkt 1.x, ``Documentation/signing-and-verification-guide.md``), under both
the system (``/usr/lib/rkt``) and the local (``/etc/rkt``) config directory::

    trustedkeys/root.d/<fingerprint>                   trusted for every image
    trustedkeys/prefix.d/<ac-identifier path>/<fingerprint>
                                                       trusted for names under that path

The file name is the primary key's fingerprint in lowercase hex and the content is
the armored public key. rkt only ever writes to the local directory; an *empty*
local file at the same relative path as a system key masks (disables) that key, so
an administrator can withdraw trust in a key the distribution ships.

A prefix covers names by whole path components: ``example.com/hello`` covers
``example.com/hello/world`` but not ``example.com/helloworld``.

Parsing keys needs pysequoia, which is imported inside the functions that parse so
that importing this module stays cheap.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from rkt.errors import KeystoreError, UsageError

if TYPE_CHECKING:
    import pysequoia

    from rkt.http import HttpSession

LOG = logging.getLogger(__name__)

TRUSTED_KEYS_DIR = "trustedkeys"
ROOT_DIR = "root.d"
PREFIX_DIR = "prefix.d"

#: public keys are a few KiB; anything much larger is not what the user meant to trust
MAX_KEY_SIZE = 1 << 20

FILE_MODE = 0o644
DIR_MODE = 0o755

_FINGERPRINT = re.compile(r"^[0-9a-f]{40}$")
# The spec's AC Identifier (appc-spec/spec/types.md). The strict form is used, not the
# reference Go code's looser check: a prefix becomes a directory path, and the strict
# form rules out "..", empty components and a leading "/".
_AC_IDENTIFIER = re.compile(r"^[a-z0-9]+([-._~/][a-z0-9]+)*$")
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True)
class TrustedKey:
    """One trusted public key as found in the keystore."""

    #: the primary key's fingerprint, 40 lowercase hex digits (also the file name)
    fingerprint: str
    #: the key file's content (an armored public key)
    armored: bytes
    #: where the key file is
    path: Path
    #: the name prefix it is trusted for; None for a root key (trusted for every name)
    prefix: str | None


@dataclass(frozen=True)
class KeyDescription:
    """What a user reviews before trusting a key."""

    fingerprint: str
    user_ids: tuple[str, ...]
    subkey_fingerprints: tuple[str, ...]
    #: the primary key's expiry, None if it does not expire
    expires: datetime | None = None
    revoked: bool = False


def format_fingerprint(fingerprint: str) -> str:
    """``8b86de38...`` -> ``8B86 DE38 890D DB72 9186 7B02 5210 BD88 8818 2190``."""
    upper = fingerprint.upper()
    return " ".join(upper[i : i + 4] for i in range(0, len(upper), 4))


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` if it is an AC Identifier path; raise UsageError otherwise."""
    if _URL_SCHEME.match(prefix):
        bare = _URL_SCHEME.sub("", prefix).rstrip("/")
        raise UsageError(
            f'prefix "{prefix}" must not contain a URL scheme; a prefix is an image name '
            f'prefix such as "{bare}"'
        )
    if not _AC_IDENTIFIER.match(prefix):
        raise UsageError(
            f'prefix "{prefix}" is not a valid image name prefix: use lowercase letters, '
            'digits and "-._~/" between them, such as "example.com/app" '
            "(appc-spec/spec/types.md, AC Identifier)"
        )
    return prefix


def first_line(exc: BaseException) -> str:
    """pysequoia's messages carry a Rust backtrace when RUST_BACKTRACE is set."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _is_binary(data: bytes) -> bool:
    # Every binary OpenPGP packet starts with a tag byte whose high bit is set
    # (RFC 9580, section 4.2); armored text never does.
    stripped = data.lstrip()
    return bool(stripped) and stripped[0] & 0x80 != 0


def parse_certificate(data: bytes, *, source: str) -> pysequoia.Cert:
    """Parse exactly one public key (armored or binary); KeystoreError naming ``source``."""
    import pysequoia
    from pysequoia.packet import PacketPile, Tag

    if not data.strip():
        raise KeystoreError(f'key "{source}" is empty')
    try:
        certs = pysequoia.Cert.split_bytes(data)
    except Exception as exc:
        raise KeystoreError(
            f'key "{source}" is not an OpenPGP public key ({first_line(exc)})'
        ) from exc
    if not certs:
        raise KeystoreError(f'key "{source}" contains no OpenPGP public key')
    if len(certs) > 1:
        fingerprints = ", ".join(c.fingerprint.upper() for c in certs)
        raise KeystoreError(
            f'key "{source}" contains {len(certs)} keys ({fingerprints}); '
            "trust them one file at a time"
        )
    try:
        packets = list(PacketPile.from_bytes(data))
    except Exception as exc:
        raise KeystoreError(
            f'key "{source}" is not an OpenPGP public key ({first_line(exc)})'
        ) from exc
    if any(packet.tag in (Tag.SecretKey, Tag.SecretSubkey) for packet in packets):
        raise KeystoreError(
            f'key "{source}" is a secret key; give the public key instead '
            "(gpg --export --armor KEYID)"
        )
    return certs[0]


def subkey_fingerprints(cert: pysequoia.Cert) -> tuple[str, ...]:
    """Lowercase fingerprints of the certificate's subkeys, in file order."""
    from pysequoia.packet import PacketPile, Tag

    return tuple(
        packet.fingerprint
        for packet in PacketPile.from_bytes(bytes(cert))
        if packet.tag == Tag.PublicSubkey and packet.fingerprint
    )


def describe_key(data: bytes, *, source: str) -> KeyDescription:
    """Fingerprint, user IDs and subkeys of a public key (armored or binary)."""
    cert = parse_certificate(data, source=source)
    return KeyDescription(
        fingerprint=cert.fingerprint.lower(),
        user_ids=tuple(str(uid) for uid in cert.user_ids),
        subkey_fingerprints=subkey_fingerprints(cert),
        expires=cert.expiration,
        revoked=cert.is_revoked,
    )


def armored_public_key(data: bytes) -> bytes:
    """The key as an armored block: armored input unchanged, binary input armored."""
    if not _is_binary(data):
        return data
    import pysequoia

    return pysequoia.armor(data, pysequoia.ArmorKind.PublicKey).encode("ascii")


def name_prefixes(name: str) -> list[str]:
    """``a/b/c`` -> ``["a", "a/b", "a/b/c"]``: the prefixes that cover a name."""
    parts = [part for part in name.split("/") if part]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


class TrustedKeystore:
    """The trusted keys under a system and a local config directory."""

    def __init__(self, system_config: Path, local_config: Path) -> None:
        self.system_config = Path(system_config)
        self.local_config = Path(local_config)

    @property
    def local_dir(self) -> Path:
        return self.local_config / TRUSTED_KEYS_DIR

    # -- reading ---------------------------------------------------------------------
    def all_keys(self) -> list[TrustedKey]:
        """Every usable key: root keys and the keys of every prefix, masking applied.

        A key file that is unreadable, is not exactly one public key, or whose
        fingerprint differs from its file name is skipped with a warning naming it:
        rkt 1.x only ever loaded the keys of one image's prefixes, so one broken file
        under an unrelated prefix must not stop every verification here either.
        """
        return self._usable(self._key_files())

    def fingerprints_for(self, name: str) -> set[str]:
        """Fingerprints trusted for the image name ``name`` (root keys included)."""
        covering = set(name_prefixes(name))
        files = [
            (path, prefix)
            for path, prefix in self._key_files()
            if prefix is None or prefix in covering
        ]
        return {key.fingerprint for key in self._usable(files)}

    def _usable(self, files: list[tuple[Path, str | None]]) -> list[TrustedKey]:
        keys = []
        for path, prefix in files:
            try:
                keys.append(self._load(path, prefix))
            except KeystoreError as exc:
                LOG.warning("ignoring trusted key: %s", exc)
        return keys

    def _key_files(self) -> list[tuple[Path, str | None]]:
        """(path, prefix) of every non-empty, unmasked key file; local files win."""
        found: dict[tuple[str | None, str], tuple[Path, int]] = {}
        for config in (self.system_config, self.local_config):
            for path, prefix in _scan(config / TRUSTED_KEYS_DIR):
                try:
                    size = path.stat().st_size
                except OSError as exc:
                    LOG.warning("ignoring trusted key %s: %s", path, exc.strerror)
                    continue
                found[(prefix, path.name)] = (path, size)
        return [
            (path, prefix)
            for (prefix, _), (path, size) in sorted(found.items(), key=_order)
            if size > 0
        ]

    @staticmethod
    def _load(path: Path, prefix: str | None) -> TrustedKey:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise KeystoreError(f"cannot read trusted key {path}: {exc.strerror}") from exc
        cert = parse_certificate(data, source=str(path))
        if cert.fingerprint.lower() != path.name:
            raise KeystoreError(
                f"trusted key {path} has fingerprint {cert.fingerprint.lower()}, "
                "which does not match its file name"
            )
        return TrustedKey(fingerprint=path.name, armored=data, path=path, prefix=prefix)

    # -- writing ---------------------------------------------------------------------
    def store_trusted_key(self, data: bytes, *, prefix: str | None, source: str) -> Path:
        """Trust the public key ``data`` for ``prefix`` (None: every name); return its path.

        Only the local config dir is written. The file appears atomically (temp file
        and rename), so a concurrent verification never reads half a key.
        """
        if prefix is not None:
            validate_prefix(prefix)
        fingerprint = describe_key(data, source=source).fingerprint
        target_dir = (
            self.local_dir / ROOT_DIR if prefix is None else self.local_dir / PREFIX_DIR / prefix
        )
        target = target_dir / fingerprint
        try:
            _make_dirs(target_dir)
            _write_atomically(target, armored_public_key(data))
        except OSError as exc:
            raise KeystoreError(
                f"cannot store key {fingerprint} at {target}: {exc.strerror or exc}"
            ) from exc
        LOG.debug("stored key %s for %s at %s", fingerprint, prefix or "<root>", target)
        return target


def _order(item: tuple[tuple[str | None, str], tuple[Path, int]]) -> tuple[str, str]:
    (prefix, name), _ = item
    return (prefix or "", name)


def _scan(base: Path) -> list[tuple[Path, str | None]]:
    """Key files (named like a fingerprint) under ``base``: (path, prefix)."""
    out: list[tuple[Path, str | None]] = []
    root = base / ROOT_DIR
    if root.is_dir():
        out += [(path, None) for path in _fingerprint_files(root)]
    prefixes = base / PREFIX_DIR
    if prefixes.is_dir():
        for directory, _, _ in os.walk(prefixes):
            here = Path(directory)
            if here == prefixes:
                continue
            prefix = here.relative_to(prefixes).as_posix()
            out += [(path, prefix) for path in _fingerprint_files(here)]
    return out


def _fingerprint_files(directory: Path) -> list[Path]:
    files = []
    for entry in sorted(directory.iterdir()):
        if not entry.is_file():
            continue
        if _FINGERPRINT.match(entry.name):
            files.append(entry)
        elif not entry.name.startswith("."):
            # rkt 1.x failed on such files; an editor's backup should not stop every fetch.
            LOG.warning("ignoring %s: not named like a key fingerprint", entry)
    return files


def _make_dirs(directory: Path) -> None:
    missing = []
    for parent in (directory, *directory.parents):
        if parent.exists():
            break
        missing.append(parent)
    for path in reversed(missing):
        try:
            path.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(path, DIR_MODE)  # mkdir's mode is filtered through the umask


def _write_atomically(target: Path, content: bytes) -> None:
    fd, temp = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fchmod(handle.fileno(), FILE_MODE)
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def download_key(http: HttpSession, url: str, *, shown: str | None = None) -> tuple[bytes, bool]:
    """The key at ``url`` (at most :data:`MAX_KEY_SIZE` bytes), and whether it came
    over https with a verified certificate, judged by the URL that answered after
    redirects. ``rkt trust`` and the keys that discovery offers both fetch this way.
    """
    page = http.get(url, what="key", limit=MAX_KEY_SIZE, shown=shown)
    if page.status != 200:
        raise http.status_error("key", url, page.status, page.reason,
                                answered_by=page.url, shown=shown)
    return page.body, http.client.verify_tls and page.url.lower().startswith("https://")
