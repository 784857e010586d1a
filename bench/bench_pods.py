"""Issue 3's benchmarks: pod start-up, and list/gc at scale.

- ``rkt run --net=host`` of a cached busybox image running /bin/true (nspawn stage1)
  vs bare ``systemd-nspawn --register=no --keep-unit -D <rendered rootfs> /bin/true``
  (which shares the host's network too): <= 2.0; contained networks: bench_net.py
- the same with the fly stage1 vs ``python -c pass``: <= 4
- ``rkt list`` with 1,000 pods and ``rkt gc`` of 1,000 exited pods: times reported
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

from common import Env, compare, report, sh, workdir

from rkt_testing.aci import build_aci, image_manifest


def main() -> list[dict[str, object]]:
    base = workdir("rkt-bench-pods-")
    results: list[dict[str, object]] = []
    try:
        image = build_aci(base / "busybox.aci", busybox=True, compression="none",
                          manifest=image_manifest("bench.example/busybox", exec_=["/bin/true"]),
                          files={"usr/": b""})  # nspawn wants a /usr to call it an OS tree
        env = Env(base / "env")
        image_id = env.rkt("--insecure-options=image", "fetch", "--full",
                           str(image)).stdout.decode().strip()
        # warm: stage1 imported, image rendered into the tree store
        env.rkt("run", "--net=host", image_id)
        tree = next((env.data / "cas" / "tree").glob("deps-*/rootfs/bin/busybox")).parent.parent
        nspawn = ["systemd-nspawn", "--register=no", "--keep-unit", "--quiet", "-D", str(tree),
                  "/bin/true"]
        ours, baseline = compare(lambda: env.rkt("run", "--net=host", image_id),
                                 lambda: sh(nspawn, stderr=subprocess.DEVNULL), repeat=11)
        results.append(report("rkt run /bin/true (nspawn)", ours, baseline,
                               "bare systemd-nspawn", 2.0))
        fly = "--stage1-name=coreos.com/rkt/stage1-fly"
        env.rkt("run", fly, image_id)
        ours, baseline = compare(lambda: env.rkt("run", fly, image_id),
                                 lambda: sh([sys.executable, "-c", "pass"]), repeat=11)
        results.append(report("rkt run /bin/true (fly)", ours, baseline, "python -c pass", 4.0))
        podman = shutil.which("podman")
        print(f"podman: {'found at ' + podman if podman else 'not installed here; not measured'}")

        # 1,000 exited pods: copies of a real exited pod under new UUIDs
        env.rkt("gc", "--grace-period=0s")
        env.rkt("run", "--net=host", image_id)
        template = next((env.data / "pods" / "run").iterdir())
        for _ in range(999):
            shutil.copytree(template, template.parent / str(uuid.uuid4()), symlinks=True)
        start = time.perf_counter()
        listing = env.rkt("list", "--no-legend").stdout.decode().splitlines()
        list_time = time.perf_counter() - start
        print(f"rkt list with {len(listing)} pods: {list_time:.3f} s")
        start = time.perf_counter()
        env.rkt("gc", "--grace-period=0s")
        gc_time = time.perf_counter() - start
        remaining = sum(1 for _ in (env.data / "pods").glob("*/*"))
        print(f"rkt gc of 1000 exited pods: {gc_time:.3f} s ({remaining} left)")
        results.append({"name": "rkt list, 1000 pods", "rkt_s": round(list_time, 3)})
        results.append({"name": "rkt gc, 1000 exited pods", "rkt_s": round(gc_time, 3)})
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return results


if __name__ == "__main__":
    out = main()
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(json.dumps(out, indent=2))
