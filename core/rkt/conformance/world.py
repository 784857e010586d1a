"""The suite's private rkt world: a throw-away data dir and config dirs, its test
images, and the real ``rkt`` command run against them.

Nothing here touches the host's rkt (``/var/lib/rkt``, ``/etc/rkt``): every
``rkt`` call gets ``--dir``, ``--local-config`` and ``--system-config`` inside the
work directory, and pods go below a cgroup parent of their own, so the suite can
run beside other rkt users on the same machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import uuid as uuid_module
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from rkt import APPC_VERSION
from rkt.aci.writer import TarWriter, member
from rkt.errors import RktError

BUSYBOX: Final = Path("/bin/busybox")
#: the applets the checks call, linked to /bin/busybox in the test image
APPLETS: Final = (
    "sh", "cat", "chown", "cut", "dd", "echo", "env", "grep", "hostname", "id", "ip", "ls",
    "mkdir", "mv", "pwd", "readlink", "sleep", "stat", "test", "touch", "true", "wc",
)
#: a token only the test image holds: what ``rkt enter`` shows proves it landed there
IMAGE_TOKEN: Final = "rkt-conformance-image"
IMAGE_NAME: Final = "conformance.rkt.example/busybox"
HANDLERS_NAME: Final = "conformance.rkt.example/handlers"


class SetupError(RktError):
    """The suite cannot run here (no busybox, no such stage1, no rkt)."""


def rkt_binary(explicit: str | None = None) -> str:
    """The ``rkt`` to drive: ``explicit``, else the one next to this Python, else PATH's."""
    if explicit:
        return explicit
    beside = Path(sys.executable).with_name("rkt")
    if beside.exists():
        return str(beside)
    found = shutil.which("rkt")
    if found is None:
        raise SetupError("no rkt command next to this Python nor on PATH (use --rkt)")
    return found


def image_manifest(name: str, app: Mapping[str, Any]) -> bytes:
    return json.dumps({
        "acKind": "ImageManifest", "acVersion": APPC_VERSION, "name": name,
        "labels": [{"name": "version", "value": "1.0.0"}, {"name": "os", "value": "linux"},
                   {"name": "arch", "value": "amd64"}],
        "app": {"user": "0", "group": "0", **app},
    }).encode()


def write_busybox_aci(out: Path, manifest: bytes) -> Path:
    """An ACI of the host's static busybox, its applets, a passwd and group file
    (root, ``user`` 1000, groups ``users`` 1000 and ``extra`` 2000), ``/data``,
    ``/work`` and the image token, written with rkt's own ACI writer."""
    if not BUSYBOX.is_file():
        raise SetupError(f"{BUSYBOX} is missing: the suite's test images are built from a "
                         "static busybox (Debian: apt-get install busybox-static)")
    files = {
        "etc/passwd": b"root:x:0:0::/:/bin/sh\nuser:x:1000:1000::/:/bin/sh\n",
        "etc/group": b"root:x:0:\nusers:x:1000:\nextra:x:2000:user\n",
        "etc/conformance": IMAGE_TOKEN.encode() + b"\n",
    }
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        tar = TarWriter(fd)
        tar.add_bytes(member("manifest", mode=0o644), manifest)
        for directory in ("rootfs", "rootfs/bin", "rootfs/etc", "rootfs/data", "rootfs/work",
                          "rootfs/tmp"):
            tar.add(member(directory, mode=0o1777 if directory.endswith("tmp") else 0o755,
                           type_=tarfile.DIRTYPE))
        with open(BUSYBOX, "rb") as source:
            size = os.fstat(source.fileno()).st_size
            tar.add_data(member("rootfs/bin/busybox", mode=0o755, size=size), source.fileno())
        for applet in APPLETS:
            tar.add(member(f"rootfs/bin/{applet}", mode=0o777, type_=tarfile.SYMTYPE,
                           linkname="busybox"))
        for name, data in files.items():
            tar.add_bytes(member(f"rootfs/{name}", mode=0o644), data)
        tar.close()
    finally:
        os.close(fd)
    return out


@dataclass
class World:
    """A private rkt world under ``root``, and the stage1 every pod runs on."""

    root: Path
    stage1_name: str
    rkt: str
    #: ``--net`` for pods whose check is not about networks: the host's where the
    #: stage1 shares it, else loopback only (never a CNI network shared with others)
    net: str = "host"
    timeout: float = 300
    #: how long a pod may take to end once told to (stop, Ctrl+], SIGKILL to rkt)
    end_timeout: float = 120
    #: the test images' IDs once :meth:`fetch_images` ran
    images: dict[str, str] = field(default_factory=dict)
    #: the pods' cgroup parent (paths.d), the world's own
    cgroup_parent: str = field(
        default_factory=lambda: f"rkt-conformance-{uuid_module.uuid4().hex[:12]}")

    @classmethod
    def create(cls, stage1_name: str, rkt: str, base: Path | None = None) -> World:
        root = Path(tempfile.mkdtemp(prefix="rkt-conformance-", dir=base))
        world = cls(root=root, stage1_name=stage1_name, rkt=rkt)
        for directory in (world.data_dir, world.local_config / "paths.d", world.system_config,
                          world.scratch):
            directory.mkdir(parents=True, exist_ok=True)
        (world.local_config / "paths.d" / "cgroup.json").write_text(json.dumps(
            {"rktKind": "paths", "rktVersion": "v1", "cgroup-parent": world.cgroup_parent}))
        return world

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def local_config(self) -> Path:
        return self.root / "etc-rkt"

    @property
    def system_config(self) -> Path:
        return self.root / "usr-lib-rkt"

    @property
    def scratch(self) -> Path:
        """Host directories the checks give their pods as volumes."""
        return self.root / "scratch"

    def command(self, *args: str | os.PathLike[str]) -> list[str]:
        return [self.rkt, f"--dir={self.data_dir}", f"--local-config={self.local_config}",
                f"--system-config={self.system_config}", *map(str, args)]

    def run(self, *args: str | os.PathLike[str], timeout: float | None = None,
            ) -> subprocess.CompletedProcess[str]:
        """``rkt ARGS`` in this world (text, output captured, no stdin)."""
        return subprocess.run(self.command(*args), capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=timeout or self.timeout)

    def pod_args(self, *, net: str | None = None) -> list[str]:
        """The flags every ``rkt run`` of the suite starts with."""
        return ["--insecure-options=image", "run", f"--stage1-name={self.stage1_name}",
                f"--net={net or self.net}"]

    def run_pod(self, *args: str | os.PathLike[str], net: str | None = None,
                image: str = IMAGE_NAME) -> subprocess.CompletedProcess[str]:
        """``rkt run`` of the test image (by ID) with ``args`` after it."""
        return self.run(*self.pod_args(net=net), self.images[image], *args)

    def popen_pod(self, *args: str | os.PathLike[str], uuid_file: Path,
                  log: Path) -> subprocess.Popen[bytes]:
        """``rkt run`` of the test image in the background, its output to ``log``: a
        file, not a pipe, which pod processes that outlive rkt would hold open."""
        with open(log, "wb") as output:
            return subprocess.Popen(
                self.command(*self.pod_args(), f"--uuid-file-save={uuid_file}",
                             self.images[IMAGE_NAME], *args),
                stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)

    def fetch_images(self) -> None:
        """Build the test images and import them once, so checks share them."""
        images = self.root / "images"
        images.mkdir(exist_ok=True)
        busybox = write_busybox_aci(images / "busybox.aci", image_manifest(IMAGE_NAME, {
            "exec": ["/bin/true"], "environment": [{"name": "IMAGE_VAR", "value": "image"}],
        }))
        handlers = write_busybox_aci(images / "handlers.aci", image_manifest(HANDLERS_NAME, {
            "exec": ["/bin/sh", "-c",
                     "cat /scratch/pre; ls -ld /scratch | cut -c1; echo main >> /out/log"],
            "eventHandlers": [
                {"name": "pre-start", "exec": ["/bin/sh", "-c",
                                               "echo pre > /scratch/pre; echo pre >> /out/log"]},
                {"name": "post-stop", "exec": ["/bin/sh", "-c", "echo post >> /out/log"]}],
            "mountPoints": [{"name": "scratch", "path": "/scratch"},
                            {"name": "out", "path": "/out"}],
        }))
        for name, path in ((IMAGE_NAME, busybox), (HANDLERS_NAME, handlers)):
            fetched = self.run("--insecure-options=image", "fetch", "--full", path)
            if fetched.returncode != 0:
                raise SetupError(f"rkt fetch {path} failed: {last_line(fetched.stderr)}")
            self.images[name] = fetched.stdout.strip().splitlines()[-1]

    def mounts(self) -> list[str]:
        """Mount points under the world (a pod that left one behind)."""
        with open("/proc/self/mountinfo") as handle:
            return [line.split()[4] for line in handle if str(self.root) in line.split()[4]]

    def processes(self) -> list[int]:
        """Processes whose command line names the world (a container, a VM, rkt)."""
        found = []
        needle = str(self.data_dir).encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if needle in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
        return found

    def remove(self) -> list[int]:
        """Collect every pod, remove the cgroup parent and the work directory.

        Processes of the world's pods that outlived their ``rkt`` (a stage1 that
        failed a check) are killed first; their PIDs are returned.
        """
        import signal

        leftovers = self.processes()
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.run("gc", "--grace-period=0s", "--expire-prepared=0s")
        from rkt.pod.cgroups import detect_host

        host = detect_host()
        for hierarchy in host.hierarchies if host is not None else ():
            parent = Path(hierarchy.path) / self.cgroup_parent
            for directory in sorted(parent.glob("**/"), key=lambda p: -len(p.parts)):
                try:
                    directory.rmdir()
                except OSError:
                    continue
        if not self.mounts():
            shutil.rmtree(self.root, ignore_errors=True)
        return leftovers


def last_line(text: str) -> str:
    """The last non-empty line of ``text``: the one-line reason of a failure."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def quote(args: Sequence[str]) -> str:
    return " ".join(args)
