"""Shared helpers for the benchmarks: timing, corpora, isolated rkt environments.

Every benchmark times rkt and its baseline in the same run, on the same files,
and prints the ratio; absolute numbers vary by machine, ratios much less.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

RKT = str(Path(sys.executable).with_name("rkt")) if Path(sys.executable).with_name(
    "rkt").exists() else "rkt"


def timed(fn: Callable[[], object], repeat: int = 3,
          setup: Callable[[], object] | None = None) -> float:
    """Median wall time of ``fn`` over ``repeat`` runs (``setup`` untimed before each)."""
    times = []
    for _ in range(repeat):
        if setup is not None:
            setup()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def compare(ours: Callable[[], object], baseline: Callable[[], object], repeat: int = 5,
            setup: Callable[[], object] | None = None) -> tuple[float, float]:
    """Median times of ``ours`` and ``baseline``, run alternately so that noise from
    the machine (disk write-back, other load) falls on both alike."""
    medians = compare_all({"ours": ours, "baseline": baseline}, repeat, setup)
    return medians["ours"], medians["baseline"]


def compare_all(runs: dict[str, Callable[[], object]], repeat: int = 5,
                setup: Callable[[], object] | None = None) -> dict[str, float]:
    """Median time of each of ``runs``, interleaved: every round runs each once, the
    order rotating from round to round, so that the machine's noise falls on all."""
    names = list(runs)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeat):
        shift = round_ % len(names)
        order = names[shift:] + names[:shift]
        if round_ % 2:
            order.reverse()
        for name in order:
            if setup is not None:
                setup()
            start = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(times[name]) for name in names}


def sh(command: str | Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    shell = isinstance(command, str)
    return subprocess.run(command, shell=shell, check=True, stdout=subprocess.DEVNULL,
                          **kwargs)  # type: ignore[call-overload]


def report(name: str, ours: float, baseline: float, baseline_name: str,
           target: float | None = None) -> dict[str, object]:
    ratio = ours / baseline if baseline else float("inf")
    verdict = "" if target is None else ("  ok" if ratio <= target else f"  OVER {target}")
    print(f"{name:<44} rkt {ours:8.3f} s   {baseline_name} {baseline:8.3f} s   "
          f"ratio {ratio:5.2f}{verdict}", flush=True)
    return {"name": name, "rkt_s": round(ours, 4), "baseline": baseline_name,
            "baseline_s": round(baseline, 4), "ratio": round(ratio, 3), "target": target}


def build_corpus_aci(out: Path, target_mb: int = 200) -> Path:
    """An ACI of roughly ``target_mb`` MB of real files (libraries, docs) under rootfs/."""
    sources = ["/usr/lib/python3.11", "/usr/share/doc", "/usr/lib/x86_64-linux-gnu",
               "/usr/share/locale", "/usr/lib/gcc", "/usr/share"]
    raw = out.with_suffix(".tar")
    total = 0
    limit = target_mb * 1_000_000 * 0.93  # the tar's headers and padding make up the rest
    manifest = {"acKind": "ImageManifest", "acVersion": "0.8.11", "name": "bench.example/corpus",
                "labels": [{"name": "version", "value": "1.0.0"},
                           {"name": "os", "value": "linux"}, {"name": "arch", "value": "amd64"}]}
    seen: set[str] = set()
    with tarfile.open(raw, "w", format=tarfile.PAX_FORMAT) as tar:
        data = json.dumps(manifest).encode()
        info = tarfile.TarInfo("manifest")
        info.size = len(data)
        import io

        tar.addfile(info, io.BytesIO(data))
        root = tarfile.TarInfo("rootfs")
        root.type = tarfile.DIRTYPE
        root.mode = 0o755
        tar.addfile(root)
        for source in sources:
            for dirpath, dirnames, filenames in os.walk(source):
                dirnames.sort()
                rel_dir = "rootfs" + dirpath
                if rel_dir in seen:
                    continue
                parts = rel_dir.split("/")
                for depth in range(2, len(parts) + 1):
                    d = "/".join(parts[:depth])
                    if d not in seen:
                        seen.add(d)
                        tar.add(d[len("rootfs"):] or "/", d, recursive=False)
                for name in sorted(filenames):
                    path = os.path.join(dirpath, name)
                    arc = "rootfs" + path
                    if arc in seen or not os.path.isfile(path) or os.path.islink(path):
                        continue
                    seen.add(arc)
                    tar.add(path, arc, recursive=False)
                    total += os.path.getsize(path)
                    if total >= limit:
                        break
                if total >= limit:
                    break
            if total >= limit:
                break
        # (the walk stops at the first file past the limit)
    with open(out, "wb") as handle:
        subprocess.run(["gzip", "-6", "-c", str(raw)], stdout=handle, check=True)
    return raw


class Env:
    """A throw-away rkt data dir and config dirs."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.data = base / "data"
        self.local = base / "etc"
        self.system = base / "lib"
        for d in (self.local, self.system):
            d.mkdir(parents=True, exist_ok=True)

    def flags(self) -> list[str]:
        return [f"--dir={self.data}", f"--local-config={self.local}",
                f"--system-config={self.system}"]

    def rkt(self, *args: str, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([RKT, *self.flags(), *args], check=True, capture_output=True,
                              **kwargs)  # type: ignore[call-overload]

    def reset_data(self) -> None:
        shutil.rmtree(self.data, ignore_errors=True)


def workdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix, dir=os.environ.get("RKT_BENCH_DIR", "/var/tmp")))


def run_and_save(main: Callable[[], list[dict[str, object]]]) -> list[dict[str, object]]:
    """Run a benchmark's ``main``; given a path argument, save its results there as JSON."""
    out = main()
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(json.dumps(out, indent=2))
    return out


def wait_for_trash(data: Path) -> float:
    """When ``rkt gc``'s detached deleter is done with ``data``'s pods (it holds the
    trash's lock until then): the ``perf_counter`` time it was seen done."""
    trash = data / "pods" / "trash"
    if trash.is_dir():
        fd = os.open(trash, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        finally:
            os.close(fd)
    return time.perf_counter()
