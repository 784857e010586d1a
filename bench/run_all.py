"""Run every benchmark in turn; each prints its ratios against its baseline.

    make bench        (or: python bench/run_all.py)

Numbers from a run go to docs/benchmarks.md by hand, with the date and machine.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = ("bench_image_store.py", "bench_pods.py", "bench_net.py", "fetch_https.py",
              "fetch_docker.py", "actool_build.py", "bench_metadata_service.py",
              "bench_kvm.py")


def main() -> int:
    here = Path(__file__).parent
    failed = 0
    for name in BENCHMARKS:
        print(f"== {name}", flush=True)
        result = subprocess.run([sys.executable, str(here / name)], cwd=here, check=False)
        failed += result.returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
