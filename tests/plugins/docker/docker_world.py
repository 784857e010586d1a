"""Shared pieces of the docker fetcher's tests: the registries' handle and checks."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from rkt_testing import RktEnv, assert_one_line_error
from rkt_testing.docker_registry import RegistryServer, TestCA, TokenServer

USER = "myuser"
PASSWORD = "sekr3tstuff"
#: short timeouts and few attempts so that failure tests finish quickly
FAST = {"RKT_HTTP_TIMEOUT": "5", "RKT_HTTP_ATTEMPTS": "2"}


@dataclass
class Registries:
    ca: TestCA
    open: RegistryServer
    basic: RegistryServer
    token: RegistryServer
    tokens: TokenServer
    work: Path

    def env(self, rkt_env: RktEnv) -> RktEnv:
        """``rkt_env`` set up to trust the test CA."""
        rkt_env.env["REQUESTS_CA_BUNDLE"] = str(self.ca.bundle)
        rkt_env.env.update(FAST)
        # the registries are on loopback, whatever proxy the machine uses
        rkt_env.env.update({"no_proxy": "localhost,127.0.0.1", "NO_PROXY": "localhost,127.0.0.1"})
        return rkt_env


def assert_clean_failure(
    result: subprocess.CompletedProcess[str], env: RktEnv, before: list[str], *fragments: str
) -> str:
    """A clean one-line error holding ``fragments``, and a store exactly as it was."""
    error = assert_one_line_error(result, *fragments)
    assert env.store_snapshot() == before
    return error
