"""Real GnuPG in a throw-away home, for tests, demos and benchmarks.

Keys and signatures that rkt verifies in the wild are made by ``gpg``, so the tests
make theirs with ``gpg`` too rather than with the library rkt verifies with: a
quirk of real gpg output (signing subkeys, issuer subpackets, armor headers) then
shows up in our tests before it shows up for a user.

Every operation runs ``gpg --batch`` with an empty passphrase against its own
home directory. gpg starts a ``gpg-agent`` for that home; call :meth:`GpgHome.close`
(or use the object as a context manager) to stop it.

This module must not import pytest: benchmark scripts use it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

#: gpg's ``--quick-gen-key`` algorithm names that :meth:`GpgHome.generate_key` accepts
ALGORITHMS = ("ed25519", "rsa2048", "rsa3072", "rsa4096", "nistp256")

# A unix socket path holds at most 107 bytes, and gpg-agent puts its sockets in the
# home directory; pytest's tmp_path is often too deep for that, so such homes are
# reached through a short symlink instead.
_MAX_HOME_LEN = 80


class GpgError(RuntimeError):
    """A gpg command failed; the message carries gpg's own stderr."""


class GpgHome:
    """A GNUPGHOME of its own: generate keys, export them, sign files."""

    def __init__(self, home: Path) -> None:
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        os.chmod(self.home, 0o700)
        self._link_dir: str | None = None
        if len(os.fsencode(self.home.absolute())) > _MAX_HOME_LEN:
            self._link_dir = tempfile.mkdtemp(prefix="rkt-gpg-")
            link = os.path.join(self._link_dir, "h")
            os.symlink(self.home.absolute(), link)
            self._gpg_home = link
        else:
            self._gpg_home = str(self.home.absolute())

    # -- lifecycle -------------------------------------------------------------------
    def close(self) -> None:
        """Stop this home's gpg-agent and remove the short symlink, if any."""
        subprocess.run(
            ["gpgconf", "--homedir", self._gpg_home, "--kill", "gpg-agent"],
            capture_output=True, check=False,
        )
        if self._link_dir is not None:
            shutil.rmtree(self._link_dir, ignore_errors=True)
            self._link_dir = None

    def __enter__(self) -> GpgHome:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- keys ------------------------------------------------------------------------
    def generate_key(
        self,
        uid: str,
        *,
        algo: str = "ed25519",
        expire: str = "never",
        at: datetime | None = None,
    ) -> str:
        """Create a signing-capable primary key; return its fingerprint (40 uppercase hex).

        ``expire`` is gpg's expiry syntax (``never``, ``1d``, ``2y``, an ISO date);
        ``at`` runs gpg with a faked clock, to make keys that have already expired.
        """
        if algo not in ALGORITHMS:
            raise ValueError(f"unsupported key algorithm {algo!r}; use one of {ALGORITHMS}")
        status = self._gpg(
            ["--passphrase", "", "--quick-gen-key", uid, algo, "sign", expire], at=at
        )
        return _created_fingerprint(status, "P")

    def add_signing_subkey(
        self,
        fingerprint: str,
        *,
        algo: str = "ed25519",
        expire: str = "never",
        at: datetime | None = None,
    ) -> str:
        """Add a signing subkey to ``fingerprint``'s key; return the subkey's fingerprint.

        gpg signs with the newest signing subkey by default, so after this call
        :meth:`sign_detached` makes subkey signatures.
        """
        status = self._gpg(
            ["--passphrase", "", "--quick-add-key", fingerprint, algo, "sign", expire], at=at
        )
        return _created_fingerprint(status, "S")

    def add_uid(self, fingerprint: str, uid: str) -> None:
        self._gpg(["--passphrase", "", "--quick-add-uid", fingerprint, uid])

    def revoke_key(self, fingerprint: str) -> None:
        """Revoke the whole key with the revocation certificate gpg made at generation."""
        rev = self.home / "openpgp-revocs.d" / f"{fingerprint.upper()}.rev"
        # gpg prefixes the armor line with ":" so the file cannot be imported by accident.
        text = rev.read_text().replace(":-----BEGIN", "-----BEGIN", 1)
        self._gpg(["--import"], stdin=text.encode())

    def revoke_subkey(self, fingerprint: str, subkey_fingerprint: str) -> None:
        """Revoke one subkey (``gpg --edit-key``, driven through the command fd)."""
        listing = self._gpg(["--list-keys", "--with-colons", fingerprint])
        subkeys = [
            line.split(":")[9].lower()
            for line in listing.splitlines()
            if line.startswith("fpr:")
        ][1:]
        index = subkeys.index(subkey_fingerprint.lower()) + 1
        commands = f"key {index}\nrevkey\ny\n0\n\ny\nsave\n"
        self._gpg(
            ["--passphrase", "", "--command-fd", "0", "--edit-key", fingerprint],
            stdin=commands.encode(),
        )

    def export_public(self, fingerprint: str, *, armor: bool = True) -> bytes:
        """The public key (with its subkeys and user IDs), armored or binary."""
        return self._gpg_bytes(["--export", *(["--armor"] if armor else []), fingerprint])

    def export_secret(self, fingerprint: str, *, armor: bool = True) -> bytes:
        """The secret key: only for testing that it is refused where a public key belongs."""
        return self._gpg_bytes(
            ["--passphrase", "", "--export-secret-keys", *(["--armor"] if armor else []),
             fingerprint]
        )

    # -- signatures ------------------------------------------------------------------
    def sign_detached(
        self,
        fingerprint: str,
        path: Path,
        out: Path | None = None,
        *,
        at: datetime | None = None,
        digest: str | None = None,
        exact_key: bool = False,
    ) -> Path:
        """Write an armored detached signature of ``path`` (default ``<path>.asc``).

        gpg picks the newest signing subkey of ``fingerprint``; ``exact_key`` forces the
        primary key (gpg's ``FPR!`` syntax). ``digest`` forces a hash (``SHA1``, ...).
        """
        target = Path(out) if out is not None else path.with_name(path.name + ".asc")
        key = f"{fingerprint}!" if exact_key else fingerprint
        args = ["--passphrase", "", "--yes", "--local-user", key, "--armor"]
        if digest is not None:
            args += ["--digest-algo", digest]
        self._gpg([*args, "--output", str(target), "--detach-sign", str(path)], at=at)
        return target

    # -- plumbing --------------------------------------------------------------------
    def _command(
        self, args: Sequence[str], at: datetime | None, *, status: bool = True
    ) -> list[str]:
        command = [
            "gpg", "--homedir", self._gpg_home, "--batch", "--no-tty",
            "--pinentry-mode", "loopback",
        ]
        if status:
            command += ["--status-fd", "1"]
        if at is not None:
            stamp = at.astimezone(UTC).strftime("%Y%m%dT%H%M%S")
            command += ["--faked-system-time", f"{stamp}!"]
        return [*command, *args]

    def _gpg(self, args: Sequence[str], *, at: datetime | None = None,
             stdin: bytes | None = None) -> str:
        result = subprocess.run(
            self._command(args, at), input=stdin, capture_output=True, check=False
        )
        if result.returncode != 0:
            raise GpgError(
                f"gpg {' '.join(args)} failed ({result.returncode}): "
                f"{result.stderr.decode(errors='replace').strip()}"
            )
        return result.stdout.decode(errors="replace")

    def _gpg_bytes(self, args: Sequence[str]) -> bytes:
        result = subprocess.run(
            self._command(args, None, status=False), capture_output=True, check=False
        )
        if result.returncode != 0 or not result.stdout:
            raise GpgError(
                f"gpg {' '.join(args)} failed ({result.returncode}): "
                f"{result.stderr.decode(errors='replace').strip() or 'no output'}"
            )
        return result.stdout


def _created_fingerprint(status: str, kind: str) -> str:
    # "[GNUPG:] KEY_CREATED <B|P|S> <fingerprint>" (doc/DETAILS in the GnuPG sources)
    for line in status.splitlines():
        parts = line.split()
        if parts[:2] == ["[GNUPG:]", "KEY_CREATED"] and parts[2:3] in ([kind], ["B"]):
            return parts[3]
    raise GpgError(f"gpg did not report the new key: {status.strip()!r}")
