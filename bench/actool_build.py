"""Issue 13's benchmark: ``actool build`` of a ~200 MB rootfs against ``tar -czf``.

The layout is made of real files (libraries, programs, the Python standard
library, documentation) copied into a directory once. In the same run, alternately:

- ``actool build LAYOUT OUT.aci`` (validate the layout and manifest, walk the tree
  in sorted order, write a reproducible gzip-compressed tar);
- ``tar -czf OUT.tar.gz -C LAYOUT manifest rootfs`` (GNU tar piping to gzip -6).

Target: ratio <= 1.1. The compressed sizes are printed too, since actool compresses
with ISA-L at its default level rather than with zlib's level 6.

    python bench/actool_build.py [results.json]
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from common import compare, report, run_and_save, sh, workdir

from rkt_testing.aci import BUSYBOX

ACTOOL = str(Path(sys.executable).with_name("actool")) if Path(sys.executable).with_name(
    "actool").exists() else "actool"
SOURCES = ["/usr/lib/x86_64-linux-gnu", "/usr/bin", "/usr/lib/python3.11", "/usr/share/doc",
           "/usr/share/locale"]
MEGABYTES = 200
#: larger files are skipped, so that the rootfs is many files as an OS image is
MAX_FILE = 4_000_000


def build_layout(layout: Path, megabytes: int = MEGABYTES) -> tuple[int, int]:
    """Copy real files into ``layout/rootfs`` up to ``megabytes`` MB; (files, bytes)."""
    rootfs = layout / "rootfs"
    rootfs.mkdir(parents=True)
    budget = megabytes * 1_000_000
    used = files = 0
    for source in SOURCES:
        for dirpath, dirnames, filenames in os.walk(source):
            dirnames.sort()
            target = rootfs / dirpath.lstrip("/")
            target.mkdir(parents=True, exist_ok=True)
            for name in sorted(filenames):
                path = os.path.join(dirpath, name)
                if os.path.islink(path):
                    os.symlink(os.readlink(path), target / name)
                    continue
                if not os.path.isfile(path) or not os.access(path, os.R_OK) \
                        or os.path.getsize(path) > MAX_FILE:
                    continue
                shutil.copy2(path, target / name)
                used += os.path.getsize(path)
                files += 1
                if used >= budget:
                    break
            if used >= budget:
                break
        if used >= budget:
            break
    (rootfs / "bin").mkdir(exist_ok=True)
    shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
    (layout / "manifest").write_text(json.dumps({
        "acKind": "ImageManifest", "acVersion": "0.8.11", "name": "bench.example/actool",
        "labels": [{"name": "version", "value": "1.0.0"}, {"name": "os", "value": "linux"},
                   {"name": "arch", "value": "amd64"}],
        "app": {"exec": ["/bin/busybox", "true"], "user": "0", "group": "0"},
    }))
    return files, used


def main() -> list[dict[str, object]]:
    base = workdir("rkt-bench-actool-")
    try:
        layout = base / "layout"
        files, size = build_layout(layout)
        print(f"layout: {files} files, {size / 1e6:.0f} MB", flush=True)
        ours_out = base / "out.aci"
        tar_out = base / "out.tar.gz"

        def clean() -> None:
            for path in (ours_out, tar_out):
                path.unlink(missing_ok=True)

        sh(["tar", "-czf", str(tar_out), "-C", str(layout), "manifest", "rootfs"])  # warm up
        ours, baseline = compare(
            lambda: sh([ACTOOL, "build", str(layout), str(ours_out)]),
            lambda: sh(["tar", "-czf", str(tar_out), "-C", str(layout), "manifest", "rootfs"]),
            repeat=5, setup=clean)
        result = report(f"actool build, {size / 1e6:.0f} MB rootfs", ours, baseline,
                        "tar -czf", target=1.1)
        sh([ACTOOL, "build", str(layout), str(ours_out)])
        sh(["tar", "-czf", str(tar_out), "-C", str(layout), "manifest", "rootfs"])
        ours_size, tar_size = ours_out.stat().st_size, tar_out.stat().st_size
        print(f"{'  compressed size':<44} actool {ours_size / 1e6:6.1f} MB   "
              f"tar -czf {tar_size / 1e6:6.1f} MB   ratio {ours_size / tar_size:5.2f}",
              flush=True)
        result.update({"actool_bytes": ours_size, "tar_bytes": tar_size})
        return [result]
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    run_and_save(main)
