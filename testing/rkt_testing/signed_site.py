"""An HTTPS site that publishes ACIs signed with a real GnuPG key.

What every test of remote images sets up, and the HTTPS benchmark too: a signing
key, its armored public half in a file (for ``rkt trust``), a loopback
:class:`~rkt_testing.https_server.HttpsServer`, and images served next to their
detached ``.asc`` signatures, as appc-spec/spec/discovery.md expects them.

This module must not import pytest: benchmark scripts use it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rkt_testing.gpg import GpgHome
from rkt_testing.https_server import HttpsServer


class SignedSite:
    """Images on ``server`` signed by ``fingerprint`` (a key in ``gpg``).

    Signatures and the exported public key are written to ``directory``.
    """

    def __init__(self, server: HttpsServer, gpg: GpgHome, fingerprint: str,
                 directory: Path) -> None:
        self.server = server
        self.gpg = gpg
        self.fingerprint = fingerprint
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        #: the publisher's armored public key, what a user gives ``rkt trust``
        self.key_file = self.export_key(fingerprint)

    def export_key(self, fingerprint: str) -> Path:
        """Write the armored public key ``fingerprint`` to a file named after it."""
        key_file = self.directory / f"{fingerprint.lower()}.asc"
        key_file.write_bytes(self.gpg.export_public(fingerprint))
        return key_file

    def sign(self, image: Path, *, by: str | None = None) -> Path:
        """A detached armored signature of ``image`` by ``by`` (default: the site's key)."""
        signer = by or self.fingerprint
        return self.gpg.sign_detached(
            signer, image, self.directory / f"{image.name}.{signer[:16].lower()}.asc")

    def url(self, path: str) -> str:
        return f"{self.server.url}{path}"

    def publish(self, path: str, image: Path, *, by: str | None = None,
                signature: Path | None = None, signed: bool = True, **options: Any) -> str:
        """Serve ``image`` at ``path`` and its signature at ``path.asc``; return the URL.

        The signature is ``signature`` if given, else made by ``by`` (default: the
        site's key); ``signed=False`` serves no signature. ``options`` are the
        image route's (:class:`~rkt_testing.https_server.Route`).
        """
        self.server.serve(path, image, **options)
        if signed:
            self.server.serve(path + ".asc", signature or self.sign(image, by=by))
        return self.url(path)
