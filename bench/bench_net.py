"""Issue 11's benchmark: what a contained network adds to a pod's start.

- ``rkt run --net=default`` vs ``rkt run --net=none`` of the same ``/bin/true`` app
  (nspawn stage1): the added cost of the ptp attachment (veth, host-local lease,
  masquerade rule), goal <= 40 ms;
- ``rkt run --net=default`` vs ``podman run --network bridge`` (runc, cgroupfs) of the
  same rootfs: goal <= 1.0, when podman is installed (it is not, on this machine);
- for the record, ``--net=none`` vs ``--net=host``: the namespace itself.

Each pod's network is torn down (``rkt gc``) between runs, untimed, so every run
starts from the same host state; the teardown's own cost is reported too.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import time

from common import Env, compare, report, run_and_save, sh, workdir

from rkt_testing.aci import build_aci, image_manifest


def main() -> list[dict[str, object]]:
    base = workdir("rkt-bench-net-")
    results: list[dict[str, object]] = []
    try:
        image = build_aci(base / "busybox.aci", busybox=True, compression="none",
                          manifest=image_manifest("bench.example/busybox", exec_=["/bin/true"]),
                          files={"usr/": b""})
        env = Env(base / "env")
        image_id = env.rkt("--insecure-options=image", "fetch", "--full",
                           str(image)).stdout.decode().strip()
        env.rkt("run", "--net=default", image_id)  # warm: stage1 imported, image rendered

        def collect() -> None:
            env.rkt("gc", "--grace-period=0s")

        default, none = compare(lambda: env.rkt("run", "--net=default", image_id),
                                lambda: env.rkt("run", "--net=none", image_id),
                                repeat=11, setup=collect)
        added_ms = (default - none) * 1000
        print(f"{'rkt run --net=default':<44} {default:8.3f} s   --net=none {none:8.3f} s   "
              f"added {added_ms:6.1f} ms  {'ok' if added_ms <= 40 else 'OVER 40 ms'}",
              flush=True)
        results.append({"name": "contained network, added cost", "default_s": round(default, 4),
                        "none_s": round(none, 4), "added_ms": round(added_ms, 1),
                        "target_ms": 40})
        results.append(report("rkt run --net=default vs --net=none", default, none,
                               "--net=none"))
        # a namespace of its own at all: pyroute2 (its import is most of it) and nspawn's join
        none, host = compare(lambda: env.rkt("run", "--net=none", image_id),
                             lambda: env.rkt("run", "--net=host", image_id),
                             repeat=7, setup=collect)
        results.append(report("rkt run --net=none vs --net=host", none, host, "--net=host"))
        gc_times = []
        for _ in range(5):
            env.rkt("run", "--net=default", image_id)
            start = time.perf_counter()
            collect()
            gc_times.append(time.perf_counter() - start)
        print(f"rkt gc of one pod on the default network: {statistics.median(gc_times):.3f} s")
        results.append({"name": "rkt gc, one pod on default",
                        "rkt_s": round(statistics.median(gc_times), 4)})
        podman = shutil.which("podman")
        if podman is None:
            print("podman: not installed here; rkt run --net=default vs podman run "
                  "--network bridge not measured")
        else:
            rootfs = next((env.data / "cas" / "tree").glob("deps-*/rootfs"))
            # runc, as in bench_pods (crun fails here), and ulimits below this
            # machine's hard limits (podman's defaults are above them)
            command = [podman, "--cgroup-manager=cgroupfs", "--runtime=runc", "run", "--rm",
                       "--network", "bridge", "--ulimit", "nofile=1024:1024",
                       "--ulimit", "nproc=4096:4096", "--rootfs", str(rootfs), "/bin/true"]
            sh(command, stderr=subprocess.DEVNULL)
            ours, baseline = compare(lambda: env.rkt("run", "--net=default", image_id),
                                     lambda: sh(command, stderr=subprocess.DEVNULL),
                                     repeat=11, setup=collect)
            results.append(report("rkt run --net=default vs podman", ours, baseline,
                                  "podman run --network bridge", 1.0))
        collect()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return results


if __name__ == "__main__":
    run_and_save(main)
