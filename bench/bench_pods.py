"""Pod start-up and the commands schedulers poll (issues 3 and 14), in one interleaved run.

A cached busybox image whose app is /bin/true, ``--net=none``:

- nspawn ``rkt run NAME`` vs bare ``systemd-nspawn --register=no --keep-unit -q -D ROOTFS
  --as-pid2 /bin/true`` on the same rootfs: <= 2.0; vs ``podman run --rootfs ROOTFS`` (runc,
  cgroupfs): <= 0.7 (skipped when podman is not installed)
- fly ``rkt run NAME`` vs ``python -c pass`` of the same interpreter: <= 4
- ``rkt run ./file.aci`` of an image already in the store vs ``rkt run NAME``: <= 1.3
- ``rkt version`` vs ``python -c pass``: <= 1.5
- with 1,000 pods: ``rkt status --format=json UUID`` vs ``python -c pass`` (<= 3) and
  ``rkt list --format=json`` (reported); ``rkt gc`` of 1,000 exited pods: <= 1 s (and,
  reported, when its detached deleter has deleted their files)

Contained networks (the default ``--net``) are timed in bench_net.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from common import (
    RKT,
    Env,
    compare_all,
    report,
    run_and_save,
    sh,
    wait_for_trash,
    workdir,
)

from rkt_testing.aci import build_aci, image_manifest

NAME = "bench.example/busybox"
#: the network is not what these compare; `--net=none` keeps CNI out of the timing
NET = "--net=none"


def podman_command(rootfs: Path) -> list[str] | None:
    """podman on the same rootfs, or None where it is not installed.

    crun fails in this machine's containers, hence runc; the ulimits are below the
    hard limits here (podman's defaults are above them and runc cannot raise them).
    """
    podman = shutil.which("podman")
    if podman is None or shutil.which("runc") is None:
        return None
    return [podman, "--runtime", "runc", "--cgroup-manager=cgroupfs", "run", "--rm",
            "--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096",
            "--rootfs", str(rootfs), "/bin/true"]


def main() -> list[dict[str, object]]:
    base = workdir("rkt-bench-pods-")
    results: list[dict[str, object]] = []
    try:
        image = build_aci(base / "busybox.aci", busybox=True, compression="none",
                          manifest=image_manifest(NAME, exec_=["/bin/true"]),
                          files={"usr/": b""})  # nspawn wants a /usr to call it an OS tree
        env = Env(base / "env")
        insecure = "--insecure-options=image"  # the ACI is not signed
        env.rkt(insecure, "fetch", "--full", str(image))
        fly = "--stage1-name=coreos.com/rkt/stage1-fly"
        fly_net = "--net=host"  # the only one fly accepts
        # warm: stage1s imported, image rendered into the tree store
        env.rkt(insecure, "run", NET, NAME)
        env.rkt(insecure, "run", fly, fly_net, NAME)
        env.rkt(insecure, "run", NET, str(image))
        rootfs = next((env.data / "cas" / "tree").glob("deps-*/rootfs/bin/busybox")).parent.parent
        nspawn = ["systemd-nspawn", "--register=no", "--keep-unit", "--quiet", "-D", str(rootfs),
                  "--as-pid2", "/bin/true"]
        python = [sys.executable, "-c", "pass"]
        runs: dict[str, Callable[[], object]] = {
            "nspawn": lambda: env.rkt(insecure, "run", NET, NAME),
            "bare": lambda: sh(nspawn, stderr=subprocess.DEVNULL),
            "fly": lambda: env.rkt(insecure, "run", fly, fly_net, NAME),
            "file": lambda: env.rkt(insecure, "run", NET, str(image)),
            "version": lambda: sh([RKT, "version"]),
            "python": lambda: sh(python),
        }
        podman = podman_command(rootfs)
        if podman is not None:
            runs["podman"] = lambda: sh(podman, stderr=subprocess.DEVNULL)
        else:
            print("podman (or runc) is not installed here: that ratio is not measured")
        t = compare_all(runs, repeat=15)
        results.append(report("rkt run NAME (nspawn)", t["nspawn"], t["bare"],
                              "bare systemd-nspawn", 2.0))
        if "podman" in t:
            results.append(report("rkt run NAME (nspawn)", t["nspawn"], t["podman"],
                                  "podman run (runc)", 0.7))
        results.append(report("rkt run NAME (fly)", t["fly"], t["python"], "python -c pass", 4.0))
        results.append(report("rkt run ./file.aci (in the store)", t["file"], t["nspawn"],
                              "rkt run NAME", 1.3))
        results.append(report("rkt version", t["version"], t["python"], "python -c pass", 1.5))

        # 1,000 exited pods: copies of a real exited pod under new UUIDs
        env.rkt("gc", "--grace-period=0s")
        env.rkt(insecure, "run", NET, NAME)
        template = next((env.data / "pods" / "run").iterdir())
        for _ in range(999):
            shutil.copytree(template, template.parent / str(uuid.uuid4()), symlinks=True)
        t = compare_all({
            "status": lambda: env.rkt("status", "--format=json", template.name),
            "list": lambda: env.rkt("list", "--format=json"),
            "python": lambda: sh(python),
        }, repeat=7)
        pods = len(json.loads(env.rkt("list", "--format=json").stdout))
        results.append(report(f"rkt status --format=json ({pods} pods)", t["status"],
                              t["python"], "python -c pass", 3.0))
        results.append(report(f"rkt list --format=json ({pods} pods)", t["list"], t["python"],
                              "python -c pass"))
        start = time.perf_counter()
        env.rkt("gc", "--grace-period=0s")
        gc_time = time.perf_counter() - start
        # what rkt sees: the phases (pods/trash is what the deleter has yet to delete)
        remaining = sum(1 for p in (env.data / "pods").glob("*/*") if p.parent.name != "trash")
        deleted = wait_for_trash(env.data) - start
        verdict = "  ok" if gc_time <= 1.0 else "  OVER 1 s"
        print(f"{'rkt gc of 1000 exited pods':<44} rkt {gc_time:8.3f} s   ({remaining} left; "
              f"files deleted after {deleted:.3f} s){verdict}", flush=True)
        results.append({"name": "rkt gc, 1000 exited pods", "rkt_s": round(gc_time, 3),
                        "files_deleted_s": round(deleted, 3), "target": 1.0})
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return results


if __name__ == "__main__":
    run_and_save(main)
