"""rkt's pytest plugin: fixtures for testing rkt and rkt plugins.

Installed with rkt (entry point ``pytest11: rkt``), so a plugin author's tests get:

- ``rkt_env``: an isolated data dir and config dirs, and ``rkt_env.run(...)`` that
  runs the real ``rkt`` command against them;
- ``aci_builder``: builds ACI files (``rkt.testing.aci.build_aci``);
- ``gpg``: a throw-away GnuPG home driving the real ``gpg``
  (``rkt.testing.gpg.GpgHome``);
- ``signed_aci``: a signed image plus its key, trusted or not, as the test asks.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from rkt.testing.aci import build_aci, image_manifest


def pythonpath_with(*paths: Path) -> dict[str, str]:
    """Environment for a subprocess that should also see packages installed in ``paths``."""
    existing = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": os.pathsep.join([*map(str, paths), *([existing] if existing else [])])}


#: mark for tests that need root (namespaces, mounts, systemd-nspawn)
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@dataclass
class RktEnv:
    """A private rkt world in a temp dir; ``run`` invokes the real ``rkt`` command."""

    root: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def local_config(self) -> Path:
        return self.root / "etc-rkt"

    @property
    def system_config(self) -> Path:
        return self.root / "usr-lib-rkt"

    def global_flags(self) -> list[str]:
        return [
            f"--dir={self.data_dir}",
            f"--local-config={self.local_config}",
            f"--system-config={self.system_config}",
        ]

    def run(
        self,
        *args: str | os.PathLike[str],
        input: str | None = None,
        check: bool = False,
        env: Mapping[str, str] | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``rkt <global flags> ARGS`` and return its result (text mode)."""
        command = [self.rkt_binary(), *self.global_flags(), *map(str, args)]
        merged = {**os.environ, **self.env, **(env or {})}
        result = subprocess.run(
            command, input=input if input is not None else "", capture_output=True,
            text=True, env=merged, timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"rkt {' '.join(map(str, args))} exited {result.returncode}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result

    def run_on_terminal(
        self,
        *args: str | os.PathLike[str],
        answer: tuple[str, str] | None = None,
        timeout: float = 60,
    ) -> tuple[int, str]:
        """Run ``rkt <global flags> ARGS`` with stdin, stdout and stderr on a
        pseudo-terminal (so progress bars and prompts appear); return (status, output).
        With ``answer=(prompt, reply)``, type ``reply`` once ``prompt`` shows."""
        import pty
        import select
        import time

        primary, secondary = pty.openpty()
        process = subprocess.Popen(
            [self.rkt_binary(), *self.global_flags(), *map(str, args)],
            stdin=secondary, stdout=secondary, stderr=secondary,
            env={**os.environ, **self.env, "COLUMNS": "100"}, close_fds=True,
        )
        os.close(secondary)
        output, answered = bytearray(), answer is None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not answered and answer is not None and answer[0].encode() in output:
                os.write(primary, answer[1].encode())
                answered = True
            ready, _, _ = select.select([primary], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(primary, 65536)
                except OSError:  # EIO: every writer has closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            elif process.poll() is not None:
                break
        os.close(primary)
        return process.wait(timeout=30), output.decode(errors="replace")

    @staticmethod
    def rkt_binary() -> str:
        candidate = Path(sys.executable).with_name("rkt")
        return str(candidate) if candidate.exists() else "rkt"

    #: directories a store or pod tree has from the moment it is first opened
    SKELETON = frozenset({
        "cas", "cas/blob", "cas/imageManifest", "cas/tree", "cas/tmp", "cas/imagelocks",
        "cas/treestorelocks", "cas/db", "pods", *(f"pods/{phase}" for phase in (
            "embryo", "prepare", "prepared", "run", "exited-garbage", "garbage")),
    })

    def store_snapshot(self) -> list[str]:
        """Every path under the data dir except the empty skeleton, lock files and the
        index's files: what "the store holds exactly what it held before" compares.
        (The index is compared through ``rkt image list`` where it matters.)"""
        if not self.data_dir.exists():
            return []
        skip = ("cas/imagelocks/", "cas/treestorelocks/", "cas/db/")
        found = []
        for path in sorted(self.data_dir.rglob("*")):
            rel = path.relative_to(self.data_dir).as_posix()
            if rel in self.SKELETON or any(rel.startswith(s) for s in skip):
                continue
            found.append(rel)
        return found


@pytest.fixture
def rkt_env(tmp_path: Path) -> RktEnv:
    env = RktEnv(tmp_path / "rkt")
    for directory in (env.data_dir, env.local_config, env.system_config):
        directory.mkdir(parents=True)
    return env


class AciBuilder:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def build(
        self,
        filename: str = "hello.aci",
        *,
        name: str = "example.com/hello",
        version: str | None = "1.0.0",
        exec_: list[str] | None = None,
        manifest: Mapping[str, Any] | bytes | None = None,
        **kwargs: Any,
    ) -> Path:
        if manifest is None:
            manifest = image_manifest(name, version=version, exec_=exec_)
        return build_aci(self.directory / filename, manifest=manifest, **kwargs)


@pytest.fixture
def aci_builder(tmp_path: Path) -> AciBuilder:
    return AciBuilder(tmp_path / "images")


@pytest.fixture(scope="session")
def gpg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A GnuPG home shared by a test session (key generation is the slow part)."""
    from rkt.testing.gpg import GpgHome

    home = GpgHome(tmp_path_factory.mktemp("gnupg"))
    yield home
    home.close()


@pytest.fixture(scope="session")
def signing_key(gpg: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """(fingerprint, armored public key file) of a key made once per session."""
    fingerprint: str = gpg.generate_key("rkt test signer <signer@example.com>")
    key_file = tmp_path_factory.mktemp("keys") / "signer.asc"
    key_file.write_bytes(gpg.export_public(fingerprint))
    return fingerprint, key_file
