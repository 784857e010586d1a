"""Issue 4's benchmark: ``rkt fetch https://...`` of a ~200 MB signed ACI from a loopback
HTTPS server, against ``curl URL | gzip -dc | sha512sum`` of the same URL, same run.

rkt downloads the ACI and its signature, verifies the signature, then decompresses,
hashes, checks and stores the image; the baseline only downloads, decompresses and
hashes (in three processes, in parallel). Target: ratio <= 1.3.

    python bench/fetch_https.py [results.json]
"""

from __future__ import annotations

import shutil
import subprocess

from common import Env, build_corpus_aci, compare, report, run_and_save, sh, workdir

from rkt_testing.gpg import GpgHome
from rkt_testing.https_server import HttpsServer
from rkt_testing.signed_site import SignedSite


def main() -> list[dict[str, object]]:
    base = workdir("rkt-bench-https-")
    results = []
    try:
        image = base / "corpus.aci"
        raw = build_corpus_aci(image)
        print(f"corpus: {raw.stat().st_size / 1e6:.0f} MB uncompressed, "
              f"{image.stat().st_size / 1e6:.0f} MB gzip", flush=True)
        raw.unlink()
        with GpgHome(base / "gnupg") as gpg, HttpsServer(workdir=base / "server") as server:
            site = SignedSite(server, gpg, gpg.generate_key("bench <bench@example.com>"),
                              base / "site")
            url = site.publish("/corpus.aci", image)
            env = Env(base / "env")
            env.rkt("trust", "--prefix", "bench.example/corpus", "--skip-fingerprint-review",
                    str(site.key_file))
            client_env = {**_environ(), **server.env()}

            def fetch() -> None:
                env.rkt("fetch", url, env=client_env)

            def curl() -> None:
                sh(f"curl -sSf --cacert {server.ca_bundle} {url} | gzip -dc | sha512sum")

            ours, baseline = compare(fetch, curl, setup=env.reset_data)
            results.append(report("fetch 200 MB signed ACI over https", ours, baseline,
                                  "curl|gzip -dc|sha512sum", 1.3))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return results


def _environ() -> dict[str, str]:
    import os

    return dict(os.environ)


if __name__ == "__main__":
    run_and_save(main)
    subprocess.run(["sync"], check=False)
