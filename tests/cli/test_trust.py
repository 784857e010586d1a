"""``rkt trust`` through the real ``rkt`` command: dialogue, storage, errors, https keys."""

from __future__ import annotations

import base64
import functools
import http.server
import io
import json
import ssl
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from rkt.cli import trust
from rkt.cli.context import GlobalOptions, RktArgumentParser, TerminalReporter
from rkt.errors import FetchError, UsageError
from rkt.facade import Plugins
from rkt.fetching import DiscoveredEndpoints
from rkt.hookspecs import hookimpl
from rkt.keystore import format_fingerprint
from rkt.plugins import new_plugin_manager
from rkt_testing import RktEnv, assert_one_line_error
from rkt_testing.gpg import GpgHome
from rkt_testing.https_server import HttpsServer


@dataclass
class Keys:
    home: GpgHome
    dir: Path
    plain: str  # one user ID, no subkey
    rich: str  # two user IDs and a signing subkey
    rich_sub: str

    def file(self, name: str) -> Path:
        return self.dir / name


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keys]:
    directory = tmp_path_factory.mktemp("keys")
    with GpgHome(tmp_path_factory.mktemp("gnupg")) as home:
        plain = home.generate_key("Test Key <t@example.com>")
        rich = home.generate_key("Rich Key <rich@example.com>", algo="rsa2048")
        home.add_uid(rich, "Rich Other <other@example.com>")
        rich_sub = home.add_signing_subkey(rich)
        (directory / "plain.asc").write_bytes(home.export_public(plain))
        (directory / "plain.gpg").write_bytes(home.export_public(plain, armor=False))
        (directory / "rich.asc").write_bytes(home.export_public(rich))
        (directory / "secret.asc").write_bytes(home.export_secret(plain))
        (directory / "garbage.asc").write_bytes(b"this is not a key\n")
        yield Keys(home, directory, plain.lower(), rich.lower(), rich_sub.lower())


def _assert_clean_failure(result: Any, env: RktEnv, message: str) -> None:
    assert_one_line_error(result, message=message, status=254)
    assert env.trusted_keys() == []
    assert not any(env.system_config.rglob("*"))


# -- the dialogue ----------------------------------------------------------------------
def test_trust_prefix_after_review(rkt_env: RktEnv, keys: Keys) -> None:
    key = keys.file("plain.asc")
    result = rkt_env.run("trust", "--prefix", "example.com/hello", key, input="yes\n")
    assert result.returncode == 0, result.stderr
    path = rkt_env.local_config / "trustedkeys/prefix.d/example.com/hello" / keys.plain
    assert result.stderr.splitlines() == [
        'Prefix: "example.com/hello"',
        f'Key: "{key}"',
        f"GPG key fingerprint is: {format_fingerprint(keys.plain)}",
        "\tTest Key <t@example.com>",
        "Are you sure you want to trust this key (yes/no)?",
        f'Trusting "{key}" for prefix "example.com/hello" after fingerprint review.',
    ]
    assert result.stdout == f'Added key for prefix "example.com/hello" at "{path}"\n'
    assert path.read_bytes() == key.read_bytes()
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert not any(rkt_env.system_config.rglob("*"))


def test_subkeys_and_user_ids_are_shown(rkt_env: RktEnv, keys: Keys) -> None:
    result = rkt_env.run("trust", "--prefix", "example.com", keys.file("rich.asc"), input="yes\n")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[2] == f"GPG key fingerprint is: {format_fingerprint(keys.rich)}"
    assert lines[3] == f"\tSubkey fingerprint: {format_fingerprint(keys.rich_sub)}"
    assert sorted(lines[4:6]) == [
        "\tRich Key <rich@example.com>", "\tRich Other <other@example.com>",
    ]
    assert rkt_env.trusted_keys() == [f"prefix.d/example.com/{keys.rich}"]


def test_answer_no_trusts_nothing(rkt_env: RktEnv, keys: Keys) -> None:
    key = keys.file("plain.asc")
    result = rkt_env.run("trust", "--prefix", "example.com/hello", key, input="no\n")
    # rkt 1.x logs the refusal and carries on: declining is not an error.
    assert result.returncode == 0
    assert result.stderr.splitlines()[-1] == f'Not trusting "{key}"'
    assert result.stdout == ""
    assert rkt_env.trusted_keys() == []


@pytest.mark.parametrize("answers", ["maybe\nyes\n", "YES\ny\n yes\nyes\n"])
def test_only_exact_yes_or_no_is_accepted(rkt_env: RktEnv, keys: Keys, answers: str) -> None:
    result = rkt_env.run(
        "trust", "--prefix", "example.com/hello", keys.file("plain.asc"), input=answers
    )
    assert result.returncode == 0, result.stderr
    retries = answers.count("\n") - 1
    assert result.stderr.count("Please enter 'yes' or 'no'") == retries
    assert result.stderr.count("Are you sure you want to trust this key (yes/no)?") == retries + 1
    assert rkt_env.trusted_keys() == [f"prefix.d/example.com/hello/{keys.plain}"]


@pytest.mark.parametrize("answers", ["", "maybe\n", "yes please\n"])
def test_no_answer_is_an_error(rkt_env: RktEnv, keys: Keys, answers: str) -> None:
    result = rkt_env.run(
        "trust", "--prefix", "example.com/hello", keys.file("plain.asc"), input=answers
    )
    _assert_clean_failure(result, rkt_env, "unable to ask user to review fingerprint: no input")


def test_several_keys_are_reviewed_in_turn(rkt_env: RktEnv, keys: Keys) -> None:
    plain, rich = keys.file("plain.asc"), keys.file("rich.asc")
    result = rkt_env.run("trust", "--prefix", "example.com", plain, rich, input="no\nyes\n")
    assert result.returncode == 0, result.stderr
    assert f'Not trusting "{plain}"' in result.stderr
    assert f'Trusting "{rich}" for prefix "example.com" after fingerprint review.' in result.stderr
    assert result.stderr.count("Are you sure") == 2
    assert rkt_env.trusted_keys() == [f"prefix.d/example.com/{keys.rich}"]


def test_root_key(rkt_env: RktEnv, keys: Keys) -> None:
    result = rkt_env.run("trust", "--root", keys.file("plain.gpg"), input="yes\n")
    assert result.returncode == 0, result.stderr
    path = rkt_env.local_config / "trustedkeys/root.d" / keys.plain
    assert result.stdout == f'Added root key at "{path}"\n'
    assert path.read_bytes().startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK-----")


@pytest.mark.parametrize("flag", ["--skip-fingerprint-review", "--skip-fingerprint-review=true"])
def test_skip_fingerprint_review(rkt_env: RktEnv, keys: Keys, flag: str) -> None:
    key = keys.file("plain.asc")
    result = rkt_env.run("trust", "--prefix=example.com", flag, key)
    assert result.returncode == 0, result.stderr
    assert "Are you sure" not in result.stderr
    assert f"GPG key fingerprint is: {format_fingerprint(keys.plain)}" in result.stderr
    assert (
        f'Trusting "{key}" for prefix "example.com" without fingerprint review.'
        in result.stderr
    )
    assert rkt_env.trusted_keys() == [f"prefix.d/example.com/{keys.plain}"]


def test_explicit_false_flags(rkt_env: RktEnv, keys: Keys) -> None:
    result = rkt_env.run(
        "trust", "--root=false", "--skip-fingerprint-review=false", "--prefix", "example.com",
        keys.file("plain.asc"), input="yes\n",
    )
    assert result.returncode == 0, result.stderr
    assert "after fingerprint review." in result.stderr


def test_trust_keys_from_https_does_not_apply_to_files(rkt_env: RktEnv, keys: Keys) -> None:
    result = rkt_env.run(
        "--trust-keys-from-https", "trust", "--prefix", "example.com", keys.file("plain.asc")
    )
    _assert_clean_failure(result, rkt_env, "unable to ask user to review fingerprint: no input")


# -- refusals --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "aborting due to implicit unbounded trust (root domain); use --prefix or --root"),
        (["--prefix="], "aborting due to implicit unbounded trust (root domain); "
         "use --prefix or --root"),
        (["--root", "--prefix", "example.com"], "--prefix and --root cannot be used together"),
        (["--prefix", "https://example.com/hello"],
         'prefix "https://example.com/hello" must not contain a URL scheme; a prefix is an '
         'image name prefix such as "example.com/hello"'),
    ],
)
def test_bad_flags(rkt_env: RktEnv, keys: Keys, args: list[str], message: str) -> None:
    result = rkt_env.run("trust", *args, keys.file("plain.asc"), input="yes\n")
    _assert_clean_failure(result, rkt_env, message)
    assert "Are you sure" not in result.stderr


def test_invalid_prefix(rkt_env: RktEnv, keys: Keys) -> None:
    result = rkt_env.run("trust", "--prefix", "../etc", keys.file("plain.asc"), input="yes\n")
    assert result.returncode == 254
    assert 'rkt: prefix "../etc" is not a valid image name prefix' in result.stderr
    assert rkt_env.trusted_keys() == []


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("garbage.asc", 'key "{path}" is not an OpenPGP public key (unexpected EOF)'),
        ("secret.asc", 'key "{path}" is a secret key; give the public key instead '
         "(gpg --export --armor KEYID)"),
        ("missing.asc", 'cannot read key "{path}": No such file or directory'),
    ],
)
def test_bad_key_files(rkt_env: RktEnv, keys: Keys, name: str, message: str) -> None:
    path = keys.file(name)
    result = rkt_env.run("trust", "--prefix", "example.com", path, input="yes\n")
    _assert_clean_failure(result, rkt_env, message.format(path=path))


def _options(env: RktEnv, discoverers: dict[str, Any]) -> tuple[GlobalOptions, io.StringIO]:
    """In-process options whose plugins hold only the given discoverers.

    A seam, not the real thing: appc discovery is not written yet, so a test
    discoverer stands in for it.
    """

    class TestDiscovery:
        @hookimpl
        def rkt_register_discovery(self, registry: Any) -> None:
            for name, discoverer in discoverers.items():
                registry.add(name, discoverer)

    pm = new_plugin_manager(builtins=(), autoload=False)
    pm.register(TestDiscovery(), name="test-discovery")
    out = io.StringIO()
    options = GlobalOptions(
        data_dir_override=env.data_dir, local_config=env.local_config,
        system_config=env.system_config, stdout=out,
        reporter=TerminalReporter(io.StringIO()),
    )
    options.plugins = Plugins(pm)
    return options, out


def _trust_args(*extra: str) -> Any:
    parser = RktArgumentParser(prog="rkt trust")
    trust.add_arguments("trust", parser)
    return parser.parse_args([*extra])


def test_without_pubkey_and_without_discovery(rkt_env: RktEnv) -> None:
    options, _ = _options(rkt_env, {})
    with pytest.raises(UsageError) as caught:
        trust.run("trust", options, _trust_args("--prefix", "example.com"))
    assert str(caught.value) == (
        'no PUBKEY given and no discovery method is installed to find the keys of '
        '"example.com"; pass a key file or an https URL: rkt trust --prefix "example.com" PUBKEY'
    )
    assert rkt_env.trusted_keys() == []


def test_without_pubkey_keys_come_from_discovery(rkt_env: RktEnv, keys: Keys) -> None:
    asked: list[tuple[str, dict[str, str]]] = []

    class KeysOnly:
        def discover(self, name: str, labels: dict[str, str], session: Any) -> Any:
            asked.append((name, labels))
            return DiscoveredEndpoints(keys=[str(keys.file("plain.asc"))])

    options, out = _options(rkt_env, {"test": KeysOnly()})
    args = _trust_args("--prefix", "example.com/hello", "--skip-fingerprint-review")
    assert trust.run("trust", options, args) == 0
    assert asked == [("example.com/hello", {})]
    path = rkt_env.local_config / "trustedkeys/prefix.d/example.com/hello" / keys.plain
    assert out.getvalue() == f'Added key for prefix "example.com/hello" at "{path}"\n'


def test_discovery_that_finds_no_keys(rkt_env: RktEnv) -> None:
    class Nothing:
        def discover(self, name: str, labels: dict[str, str], session: Any) -> Any:
            return DiscoveredEndpoints()

    options, _ = _options(rkt_env, {"test": Nothing()})
    with pytest.raises(FetchError, match="found no public keys"):
        trust.run("trust", options, _trust_args("--prefix", "example.com"))
    assert rkt_env.trusted_keys() == []


def test_root_without_pubkey(rkt_env: RktEnv) -> None:
    result = rkt_env.run("trust", "--root")
    _assert_clean_failure(
        result, rkt_env, "--root needs at least one PUBKEY: a key file or an https URL"
    )


# -- keys over https -------------------------------------------------------------------
@dataclass
class KeyServer:
    url: str
    ca_bundle: Path


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        del format, args


def _serve(directory: Path, context: ssl.SSLContext | None) -> Iterator[str]:
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    scheme = "https" if context is not None else "http"
    try:
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="module")
def https_keys(keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyServer]:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    bundle = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    for url in _serve(keys.dir, context):
        yield KeyServer(url, bundle)


@pytest.fixture(scope="module")
def http_keys(keys: Keys) -> Iterator[str]:
    yield from _serve(keys.dir, None)


def test_https_key_with_test_ca(rkt_env: RktEnv, keys: Keys, https_keys: KeyServer) -> None:
    url = f"{https_keys.url}/plain.asc"
    result = rkt_env.run(
        "trust", "--prefix", "example.com/hello", url, input="yes\n",
        env={"REQUESTS_CA_BUNDLE": str(https_keys.ca_bundle)},
    )
    assert result.returncode == 0, result.stderr
    assert f'Key: "{url}"' in result.stderr
    assert f'Trusting "{url}" for prefix "example.com/hello" after fingerprint review.' in (
        result.stderr
    )
    path = rkt_env.local_config / "trustedkeys/prefix.d/example.com/hello" / keys.plain
    assert path.read_bytes() == keys.file("plain.asc").read_bytes()


def test_https_key_trusted_without_review(
    rkt_env: RktEnv, keys: Keys, https_keys: KeyServer
) -> None:
    url = f"{https_keys.url}/plain.gpg"
    result = rkt_env.run(
        "--trust-keys-from-https", "trust", "--prefix", "example.com", url,
        env={"REQUESTS_CA_BUNDLE": str(https_keys.ca_bundle)},
    )
    assert result.returncode == 0, result.stderr
    assert "Are you sure" not in result.stderr
    assert "without fingerprint review." in result.stderr
    assert rkt_env.trusted_keys() == [f"prefix.d/example.com/{keys.plain}"]


def test_https_key_with_unknown_ca_is_refused(
    rkt_env: RktEnv, https_keys: KeyServer
) -> None:
    url = f"{https_keys.url}/plain.asc"
    result = rkt_env.run("trust", "--prefix", "example.com", url, input="yes\n")
    _assert_clean_failure(
        result, rkt_env,
        f'cannot fetch key "{url}": TLS certificate verification failed '
        "(unable to get local issuer certificate; --insecure-options=tls skips it)",
    )


def test_insecure_tls_option(rkt_env: RktEnv, keys: Keys, https_keys: KeyServer) -> None:
    url = f"{https_keys.url}/plain.asc"
    result = rkt_env.run(
        "--insecure-options=tls", "--trust-keys-from-https", "trust", "--prefix", "example.com",
        url, input="yes\n",
    )
    assert result.returncode == 0, result.stderr
    assert "rkt: warning: TLS verification has been disabled" in result.stderr
    # An unverified https download is not trusted without review.
    assert "after fingerprint review." in result.stderr
    assert rkt_env.trusted_keys() == [f"prefix.d/example.com/{keys.plain}"]


def test_https_not_found(rkt_env: RktEnv, https_keys: KeyServer) -> None:
    url = f"{https_keys.url}/nope.asc"
    result = rkt_env.run(
        "trust", "--prefix", "example.com", url, input="yes\n",
        env={"REQUESTS_CA_BUNDLE": str(https_keys.ca_bundle)},
    )
    _assert_clean_failure(result, rkt_env, f'cannot fetch key "{url}": HTTP 404 File not found')


def test_plain_http_needs_the_flag(rkt_env: RktEnv, keys: Keys, http_keys: str) -> None:
    url = f"{http_keys}/plain.asc"
    result = rkt_env.run("trust", "--prefix", "example.com", url, input="yes\n")
    _assert_clean_failure(
        result, rkt_env,
        f'refusing to fetch key "{url}" over plain http; use https, or --insecure-allow-http',
    )
    result = rkt_env.run(
        "trust", "--prefix", "example.com", "--insecure-allow-http", url, input="yes\n"
    )
    assert result.returncode == 0, result.stderr
    assert rkt_env.trusted_keys() == [f"prefix.d/example.com/{keys.plain}"]


def test_unsupported_scheme(rkt_env: RktEnv) -> None:
    result = rkt_env.run("trust", "--prefix", "example.com", "ftp://example.com/key.asc")
    _assert_clean_failure(
        result, rkt_env,
        'unsupported key location "ftp://example.com/key.asc": give a file path or an https URL',
    )


def test_https_key_behind_basic_auth_uses_auth_d(rkt_env: RktEnv, keys: Keys) -> None:
    """``rkt trust`` sends the ``auth.d`` credentials of the key's host, and only there."""
    basic = "Basic " + base64.b64encode(b"bob:secret").decode()
    auth = rkt_env.local_config / "auth.d"
    auth.mkdir(parents=True, exist_ok=True)
    (auth / "keys.json").write_text(json.dumps({
        "rktKind": "auth", "rktVersion": "v1", "domains": ["localhost"], "type": "basic",
        "credentials": {"user": "bob", "password": "secret"},
    }))
    with HttpsServer(hostnames=("localhost", "127.0.0.1")) as server:
        server.serve("/keys/plain.asc", keys.file("plain.asc").read_bytes(), authorization=basic)
        # another host behind a redirect must not see the credentials
        server.redirect("/away.asc", f"{server.base('127.0.0.1')}/keys/plain.asc")
        env = {"REQUESTS_CA_BUNDLE": str(server.ca_bundle)}
        url = f"{server.base('localhost')}/keys/plain.asc"
        result = rkt_env.run("trust", "--prefix", "example.com", url, input="yes\n", env=env)
        assert result.returncode == 0, result.stderr
        assert rkt_env.trusted_keys() == [f"prefix.d/example.com/{keys.plain}"]
        assert server.requests[-1].header("Authorization") == basic

        away = f"{server.base('localhost')}/away.asc"
        result = rkt_env.run("trust", "--prefix", "example.org", away, input="yes\n", env=env)
        assert result.stderr.strip().splitlines()[-1] == (
            f'rkt: cannot fetch key "{away}": 127.0.0.1 answered HTTP 401 Unauthorized '
            "(no credentials for 127.0.0.1 in auth.d)"
        )
        sent = [(r.host, r.path, r.header("Authorization")) for r in server.requests[-2:]]
        assert sent == [("localhost", "/away.asc", basic), ("127.0.0.1", "/keys/plain.asc", None)]
