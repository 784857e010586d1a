"""``rkt trust``: review a public key and trust it for an image name prefix.

rkt 1.x behaviour (``Documentation/subcommands/trust.md``, ``rkt/pubkey/pubkey.go``):
each PUBKEY (a local file or an https URL) is shown with its fingerprint, subkeys and
user IDs, and stored only after the user types exactly ``yes``. Declining a key is not
an error: rkt logs ``Not trusting`` and goes on with the next key, exiting 0.

Keys are written only to the local config dir (``--local-config``), as
``trustedkeys/prefix.d/<prefix>/<fingerprint>`` or ``trustedkeys/root.d/<fingerprint>``.
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

from rkt.cli.context import GlobalOptions, RktArgumentParser
from rkt.errors import FetchError, UsageError
from rkt.keystore import MAX_KEY_SIZE, describe_key, validate_prefix

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def add_arguments(command: str, parser: RktArgumentParser) -> None:
    del command
    parser.usage = (
        "rkt trust --prefix PREFIX [--skip-fingerprint-review] [--insecure-allow-http] "
        "[PUBKEY...]\n       rkt trust --root PUBKEY..."
    )
    parser.add_argument(
        "--prefix", default=None, metavar="PREFIX",
        help="image name prefix the keys are trusted for (e.g. example.com/app)",
    )
    parser.add_bool_flag("--root", help="trust the keys for every image name (root keys)")
    parser.add_bool_flag(
        "--skip-fingerprint-review", help="trust the keys without asking to review them"
    )
    parser.add_bool_flag(
        "--insecure-allow-http", help="allow fetching keys over plain http (insecure)"
    )
    parser.add_argument(
        "pubkeys", nargs="*", metavar="PUBKEY", help="a public key file or an https URL"
    )


def run(command: str, options: GlobalOptions, args: argparse.Namespace) -> int:
    del command
    prefix: str | None = args.prefix or None
    if prefix is not None and args.root:
        raise UsageError("--prefix and --root cannot be used together")
    if prefix is None and not args.root:
        raise UsageError(
            "aborting due to implicit unbounded trust (root domain); use --prefix or --root"
        )
    if prefix is not None:
        validate_prefix(prefix)
    locations: list[str] = list(args.pubkeys) or _discover_keys(
        options, prefix, allow_http=bool(args.insecure_allow_http)
    )
    for location in locations:
        data, over_verified_https = _read_key(options, location, args.insecure_allow_http)
        description = describe_key(data, source=location)
        unreviewed = bool(args.skip_fingerprint_review) or (
            options.trust_keys_from_https and over_verified_https
        )
        if unreviewed:
            options.reporter.show_key(prefix, location, description)
        elif not options.reporter.review_key(prefix, location, description):
            options.info(f'Not trusting "{location}"')
            continue
        review = "without" if unreviewed else "after"
        target = f'for prefix "{prefix}"' if prefix is not None else "as a root key"
        options.info(f'Trusting "{location}" {target} {review} fingerprint review.')
        path = options.keystore.store_trusted_key(data, prefix=prefix, source=location)
        if prefix is None:
            print(f'Added root key at "{path}"', file=options.stdout, flush=True)
        else:
            print(f'Added key for prefix "{prefix}" at "{path}"', file=options.stdout, flush=True)
    return 0


# -- getting the key -------------------------------------------------------------------
def _read_key(options: GlobalOptions, location: str, allow_http: bool) -> tuple[bytes, bool]:
    """The key's bytes, and whether they came over https with a verified certificate."""
    match = _SCHEME.match(location)
    scheme = match.group(1).lower() if match else ""
    if scheme == "":
        return _read_file(Path(location), location), False
    if scheme == "file":
        from urllib.parse import unquote, urlsplit

        return _read_file(Path(unquote(urlsplit(location).path)), location), False
    if scheme == "http" and not allow_http:
        raise UsageError(
            f'refusing to fetch key "{location}" over plain http; '
            "use https, or --insecure-allow-http"
        )
    if scheme not in ("http", "https"):
        raise UsageError(
            f'unsupported key location "{location}": give a file path or an https URL'
        )
    return _download(options, location, allow_http)


def _read_file(path: Path, location: str) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_KEY_SIZE + 1)
    except OSError as exc:
        raise FetchError(f'cannot read key "{location}": {exc.strerror or exc}') from exc
    if len(data) > MAX_KEY_SIZE:
        raise FetchError(f'key "{location}" is larger than {MAX_KEY_SIZE} bytes')
    return data


def _download(options: GlobalOptions, url: str, allow_http: bool) -> tuple[bytes, bool]:
    """The key at ``url``, through :mod:`rkt.http`: auth.d credentials, retries, redirects."""
    from rkt.http import session_for
    from rkt.keystore import download_key

    with session_for(options, allow_http=allow_http, http_flag="--insecure-allow-http") as web:
        return download_key(web, url, shown=f'key "{url}"')


def _discover_keys(
    options: GlobalOptions, prefix: str | None, *, allow_http: bool = False
) -> list[str]:
    """Key URLs for ``prefix`` from appc discovery (``ac-discovery-pubkeys``).

    ``--insecure-allow-http`` also lets discovery fall back to plain http.
    """
    if prefix is None:
        raise UsageError("--root needs at least one PUBKEY: a key file or an https URL")
    discovery = options.plugins.discovery
    if not discovery.names():
        raise UsageError(
            f'no PUBKEY given and no discovery method is installed to find the keys of '
            f'"{prefix}"; pass a key file or an https URL: rkt trust --prefix "{prefix}" PUBKEY'
        )
    from rkt.fetching import FetchSession

    with tempfile.TemporaryDirectory(prefix="rkt-trust-") as tmp:
        session = FetchSession(runtime=options, tmp_dir=Path(tmp), allow_http=allow_http)
        for name in discovery.names():
            discoverer = discovery.get(name)
            if discoverer is None:
                continue
            keys = discoverer.discover(prefix, {}, session).keys
            if keys:
                return list(keys)
    raise FetchError(
        f'--prefix meta discovery error: found no public keys for "{prefix}"; '
        "pass a key file or an https URL"
    )
