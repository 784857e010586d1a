"""A private rkt world in a temp dir, driven through the real ``rkt`` command.

It imports no pytest, so scripts can drive ``rkt`` through :class:`RktEnv` too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def pythonpath_with(*paths: Path) -> dict[str, str]:
    """Environment for a subprocess that should also see packages installed in ``paths``."""
    existing = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": os.pathsep.join([*map(str, paths), *([existing] if existing else [])])}


def tool_binary(name: str) -> str:
    """A console script installed with rkt (``rkt``, ``actool``, ``docker2aci``): the
    one next to this Python, else the one on PATH."""
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


def wait_for_file(path: Path, *, timeout: float = 30,
                  process: subprocess.Popen[Any] | None = None) -> Path:
    """``path`` once it exists and is not empty (a pod's output, a pid or UUID file:
    a writer creates it before it writes); AssertionError after ``timeout`` seconds,
    or as soon as ``process`` (the pod's rkt) has ended."""
    deadline = time.monotonic() + timeout
    while not _has_content(path):
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the pod ended before {path} appeared: "
                                 f"{process.communicate()}")
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)
    return path


def _has_content(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except FileNotFoundError:
        return False


def run_tool(name: str, *args: str | os.PathLike[str], env: Mapping[str, str] | None = None,
             timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the real ``actool`` or ``docker2aci`` (text mode, output captured)."""
    return subprocess.run([tool_binary(name), *map(str, args)], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=timeout,
                          stdin=subprocess.DEVNULL)


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

    @contextmanager
    def running_pod(self, *args: str | os.PathLike[str], timeout: float = 30
                    ) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
        """``rkt run ARGS`` in the background: the process and the pod's UUID once
        it is known. Whatever the block does, the pod is killed at its end."""
        uuid_dir = self.data_dir.parent / "running-pods"
        uuid_dir.mkdir(exist_ok=True)
        uuid_file = uuid_dir / f"{time.monotonic_ns()}"
        process = subprocess.Popen(
            [self.rkt_binary(), *self.global_flags(), "run", f"--uuid-file-save={uuid_file}",
             *map(str, args)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, **self.env},
        )
        try:
            yield process, wait_for_file(uuid_file, timeout=timeout, process=process).read_text()
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()

    @contextmanager
    def cgroup_parent(self) -> Iterator[str]:
        """A cgroup parent of this world's own (``paths.d``), so its pods' cgroups are
        found by name. On leaving, ``gc`` runs and must have removed every pod's
        cgroups, in every hierarchy (an OCI runtime makes the app's in all of them);
        the parent is removed wherever it is empty."""
        parent = f"rkt-test-{uuid.uuid4().hex[:12]}"
        paths = self.local_config / "paths.d"
        paths.mkdir(exist_ok=True)
        (paths / "cgroup.json").write_text(json.dumps(
            {"rktKind": "paths", "rktVersion": "v1", "cgroup-parent": parent}))
        leftovers: list[str] = []
        try:
            yield parent
        finally:
            self.run("gc", "--grace-period=0s")
            for top in Path("/sys/fs/cgroup").glob(f"*/{parent}"):
                inside = [f"{top}/{p.name}" for p in top.iterdir() if p.is_dir()]
                if inside:
                    leftovers += inside
                else:
                    os.rmdir(top)
        assert leftovers == [], f"gc left pod cgroups behind: {leftovers}"

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

    def trust(self, prefix: str, key: str | os.PathLike[str], *flags: str) -> None:
        """``rkt trust --prefix PREFIX KEY``, answering "yes" to the fingerprint review."""
        self.run(*flags, "trust", "--prefix", prefix, key, input="yes\n", check=True)

    def remove_pod_cgroups(self) -> None:
        """Remove the host cgroups of this world's pods (the ones ``rkt gc`` would):
        they live outside the temp dir, in ``/sys/fs/cgroup``."""
        from rkt.pod.cgroups import remove_pod_cgroups
        from rkt.pod.dirs import Pod

        for record in (self.data_dir / "pods").glob("*/*/cgroups"):
            pod_dir = record.parent
            remove_pod_cgroups(Pod(pod_dir.parent.parent, pod_dir.name, pod_dir.parent.name))

    def image_ids(self) -> list[str]:
        """The full IDs of the images in the store, as ``rkt image list`` shows them."""
        listing = self.run("image", "list", "--no-legend", "--full", "--fields=id", check=True)
        return listing.stdout.split()

    def trusted_keys(self) -> list[str]:
        """The key files under the local trust directory, relative to it
        (``prefix.d/example.com/hello/<fingerprint>``)."""
        base = self.local_config / "trustedkeys"
        return sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())

    @staticmethod
    def rkt_binary() -> str:
        return tool_binary("rkt")

    #: directories a store or pod tree has from the moment it is first opened
    SKELETON = frozenset({
        "cas", "cas/blob", "cas/blob/sha512", "cas/imageManifest", "cas/imageManifest/sha512",
        "cas/tree", "cas/tmp", "cas/imagelocks",
        "cas/treestorelocks", "cas/db", "pods", "locks", *(f"pods/{phase}" for phase in (
            "embryo", "prepare", "prepared", "run", "exited-garbage", "garbage",
            "trash")),  # trash: where gc and rm delete pods (made by the first one)
    })

    def store_snapshot(self) -> list[str]:
        """Every path under the data dir except the empty skeleton, lock files and the
        index's files: what "the store holds exactly what it held before" compares.
        (The index is compared through ``rkt image list`` where it matters.)"""
        if not self.data_dir.exists():
            return []
        skip = ("cas/imagelocks/", "cas/treestorelocks/", "cas/db/", "locks/")
        found = []
        for path in sorted(self.data_dir.rglob("*")):
            rel = path.relative_to(self.data_dir).as_posix()
            if rel in self.SKELETON or any(rel.startswith(s) for s in skip):
                continue
            found.append(rel)
        return found


