"""The OCI runtime's command line: ``runc`` and the runtimes that copy its commands.

Every pod has a state root of its own (``--root <pod>/oci/state``), so nothing
is shared with other users of the runtime, and ``gc`` can delete whatever a
crashed pod left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from rkt.api import Pod, Stage1Error

#: the runtime when nothing else is configured (Debian package runc)
DEFAULT_RUNTIME = "runc"
#: overrides the image's choice for one run (a name on PATH or an absolute path)
RUNTIME_ENV = "RKT_STAGE1_OCI_RUNTIME"
#: the runtime chosen when the image was built (stage1.d ``options.oci.runtime``)
IMAGE_RUNTIME_FILE = "rkt/oci-runtime"
#: what a pod ran with, so that stop, enter and gc use the same runtime
POD_DIR = "oci"


def which(name: str) -> str | None:
    """``shutil.which`` without importing shutil on the pod-start path (issue 14)."""
    if "/" in name:
        return name if os.access(name, os.X_OK) else None
    for directory in os.environ.get("PATH", os.defpath).split(os.pathsep):
        candidate = os.path.join(directory or ".", name)
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    return None


def remove_tree(path: Path) -> None:
    """Remove a directory of the runtime's state (files and directories only)."""
    for root, dirs, files in os.walk(path, topdown=False):
        for name in files:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(root, name))
        for name in dirs:
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(root, name))
    with contextlib.suppress(OSError):
        os.rmdir(path)


def runtime_name(pod: Pod) -> str:
    """The runtime a pod is to run with: the environment's, the image's, or runc."""
    chosen = os.environ.get(RUNTIME_ENV, "").strip()
    if chosen:
        return chosen
    try:
        chosen = (pod.stage1_rootfs() / IMAGE_RUNTIME_FILE).read_text().strip()
    except OSError:
        chosen = ""
    return chosen or DEFAULT_RUNTIME


def find_runtime(name: str) -> str:
    """The runtime's absolute path; a one-line error when it is not installed."""
    found = which(name)
    if found is None:
        raise Stage1Error(f'the OCI runtime "{name}" is not installed (set {RUNTIME_ENV} or '
                          f"stage1.d options.oci.runtime to one that is; runc is Debian's "
                          f"package runc)")
    return found


class OciRuntime:
    """One pod's view of its OCI runtime: the binary and the pod's state root."""

    def __init__(self, binary: str, pod_path: Path) -> None:
        self.binary = binary
        self.state_root = pod_path / POD_DIR / "state"

    @classmethod
    def recorded(cls, pod: Pod) -> OciRuntime | None:
        """The runtime a pod ran with, or ``None`` for a pod that never started one."""
        try:
            binary = (pod.path / POD_DIR / "runtime").read_text().strip()
        except OSError:
            return None
        return cls(binary, pod.path) if binary else None

    def record(self, pod: Pod) -> None:
        (pod.path / POD_DIR / "runtime").write_text(self.binary + "\n")

    @property
    def is_runc(self) -> bool:
        return os.path.basename(self.binary) == "runc"

    def command(self, *args: str, log: Path | None = None) -> list[str]:
        """The runtime's command line; runc logs its own errors to ``log`` as JSON
        (and prints them on stderr as one plain line rather than logrus' format)."""
        global_flags = ["--root", str(self.state_root)]
        if self.is_runc and log is not None:
            global_flags += ["--log", str(log), "--log-format", "json"]
        return [self.binary, *global_flags, *args]

    def logged_error(self, log: Path) -> str | None:
        """The last error runc logged to ``log``, or ``None``."""
        try:
            lines = log.read_text().splitlines()
        except OSError:
            return None
        for line in reversed(lines):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("level") in ("error", "fatal"):
                return " ".join(str(entry.get("msg", "")).split()) or None
        return None

    def _call(self, *args: str) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(self.command(*args), capture_output=True, text=True,
                                  timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise Stage1Error(f"{self.binary} {args[0]}: {exc}") from exc

    def checked(self, *args: str) -> str:
        """Run a runtime command; its stderr, in one line, when it fails."""
        result = self._call(*args)
        if result.returncode != 0:
            message = " ".join(result.stderr.split()) or f"exit status {result.returncode}"
            raise Stage1Error(f"{os.path.basename(self.binary)} {args[0]} failed: {message}")
        return result.stdout

    def containers(self) -> list[str]:
        """The containers in this pod's state root (each is a directory there)."""
        try:
            return sorted(entry.name for entry in self.state_root.iterdir() if entry.is_dir())
        except OSError:
            return []

    def state(self, container: str) -> dict[str, Any] | None:
        result = self._call("state", container)
        if result.returncode != 0:
            return None
        try:
            state = json.loads(result.stdout)
        except ValueError:
            return None
        return state if isinstance(state, dict) else None

    def kill(self, container: str, signal_name: str) -> None:
        # a container that already ended is not an error: stop races with the app
        self._call("kill", container, signal_name)

    def delete(self, container: str) -> None:
        self._call("delete", "--force", container)

    def forget(self, container: str) -> None:
        """Drop an ended container from the state root, leaving its cgroup alone.

        ``runc delete`` would also remove the app's cgroup, which stage0 made and
        removes at ``gc`` (its limits and counters stay readable until then, as on
        every stage1); runc keeps nothing else of a stopped container but its
        state directory. Other runtimes' state is theirs to delete.
        """
        if self.is_runc:
            remove_tree(self.state_root / container)
        else:
            self.delete(container)
