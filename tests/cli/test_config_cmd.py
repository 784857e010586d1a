"""``rkt config`` hides secrets unless ``--raw``; an ``auth.d`` file holding a
password that other users can read is warned about, once per command."""

from __future__ import annotations

import json
from pathlib import Path

from rkt_testing import RktEnv


def write_auth(env: RktEnv, name: str, mode: int, document: dict[str, object]) -> Path:
    path = env.local_config / "auth.d" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"rktVersion": "v1", **document}))
    path.chmod(mode)
    return path


BASIC = {"rktKind": "auth", "domains": ["example.com"], "type": "basic",
         "credentials": {"user": "alice", "password": "s3cret"}}
DOCKER = {"rktKind": "dockerAuth", "registries": ["registry.example.com"],
          "credentials": {"user": "bob", "password": "hunter2"}}
OAUTH = {"rktKind": "auth", "domains": ["oauth.example.com"], "type": "oauth",
         "credentials": {"token": "tok-123"}}


def test_config_redacts_passwords_and_tokens_unless_raw(rkt_env: RktEnv) -> None:
    for name, document in (("basic.json", BASIC), ("docker.json", DOCKER),
                           ("oauth.json", OAUTH)):
        write_auth(rkt_env, name, 0o600, document)
    shown = rkt_env.run("config")
    assert shown.returncode == 0, shown.stderr
    assert shown.stderr == ""  # private files: no warning
    for secret in ("s3cret", "hunter2", "tok-123"):
        assert secret not in shown.stdout
    credentials = [e["credentials"] for e in json.loads(shown.stdout)["stage0"]
                   if "credentials" in e]
    assert {"user": "alice", "password": "REDACTED"} in credentials
    assert {"token": "REDACTED"} in credentials
    raw = rkt_env.run("config", "--raw")
    for secret in ("s3cret", "hunter2", "tok-123"):
        assert secret in raw.stdout


def test_a_password_file_readable_by_others_is_warned_about_once(rkt_env: RktEnv) -> None:
    exposed = write_auth(rkt_env, "basic.json", 0o644, BASIC)
    write_auth(rkt_env, "docker.json", 0o640, DOCKER)  # the group may read it (rkt 1.x)
    result = rkt_env.run("config")
    assert result.returncode == 0
    assert result.stderr.splitlines() == [
        f"rkt: warning: {exposed} holds credentials and is readable by other users; "
        f"make it private: chmod o-rwx {exposed}"
    ]
    # any command that reads the config says it, once
    listing = rkt_env.run("image", "list")
    assert [line for line in listing.stderr.splitlines() if str(exposed) in line] == \
        result.stderr.splitlines()
