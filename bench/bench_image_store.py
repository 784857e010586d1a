"""Issue 2's benchmarks: import of a ~200 MB signed gzip ACI and its first render.

- import (``rkt fetch FILE``, signature checked) vs ``gzip -dc FILE | sha512sum``: <= 1.3
- first render (``rkt image render``) vs ``tar -xf`` of the same tar: <= 1.5

(``rkt version`` vs ``python -c pass`` is timed with the pod start-up, in bench_pods.py.)
"""

from __future__ import annotations

import shutil
import subprocess

from common import Env, build_corpus_aci, compare, report, run_and_save, sh, workdir

from rkt_testing.gpg import GpgHome


def main() -> list[dict[str, object]]:
    base = workdir("rkt-bench-store-")
    results = []
    try:
        image = base / "corpus.aci"
        raw = build_corpus_aci(image)
        size_mb = raw.stat().st_size / 1e6
        print(f"corpus: {size_mb:.0f} MB uncompressed, {image.stat().st_size / 1e6:.0f} MB gzip",
              flush=True)
        with GpgHome(base / "gnupg") as gpg:
            fingerprint = gpg.generate_key("bench <bench@example.com>")
            key = base / "key.asc"
            key.write_bytes(gpg.export_public(fingerprint))
            gpg.sign_detached(fingerprint, image)
        env = Env(base / "env")
        env.rkt("trust", "--prefix", "bench.example/corpus", "--skip-fingerprint-review",
                str(key))

        ours, baseline = compare(lambda: env.rkt("fetch", str(image)),
                                 lambda: sh(f"gzip -dc {image} | sha512sum"),
                                 setup=env.reset_data)
        results.append(report("import 200 MB gzip ACI (signed)", ours, baseline,
                              "gzip -dc|sha512sum", 1.3))

        image_id = env.rkt("fetch", str(image)).stdout.decode().strip()
        out = base / "render"
        tar_out = base / "tar-x"

        def clean() -> None:
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(tar_out, ignore_errors=True)
            tar_out.mkdir()
            # write-back of the previous run must not be billed to the next one
            subprocess.run(["sync"], check=False)

        render, untar = compare(lambda: env.rkt("image", "render", image_id, str(out)),
                                lambda: sh(["tar", "-xf", str(raw), "-C", str(tar_out)]),
                                setup=clean)
        results.append(report("first render of that image", render, untar, "tar -xf", 1.5))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return results


if __name__ == "__main__":
    run_and_save(main)
    subprocess.run(["sync"], check=False)
