"""Issue 5's benchmarks: ``rkt fetch docker://...`` of a ~200 MB four-layer image.

The image is made of real files (libraries, programs, the Python standard library,
documentation), pushed by skopeo to Debian's ``docker-registry`` on loopback with
TLS. In the same run:

- first fetch (download, verify, unpack, squash, write the ACI, import it) against
  ``skopeo copy docker://... oci:DIR`` (download and verify only): target <= 1.2;
- re-fetch of the unchanged tag against the first fetch: target <= 0.1;
- fetch of a second tag that shares three of the four layers, against the first
  fetch (reported: only the new layer is downloaded).

    python bench/fetch_docker.py [results.json]
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tarfile
from pathlib import Path

from common import Env, compare, report, run_and_save, sh, timed, workdir

from rkt_testing.docker_registry import (
    RegistryServer,
    TestCA,
    image_config,
    layer_tar,
    write_docker_archive,
)

#: (source directories, megabytes) of each layer, base first
LAYERS = [
    (["/usr/lib/x86_64-linux-gnu"], 80),
    (["/usr/bin", "/usr/sbin"], 60),
    (["/usr/lib/python3.11", "/usr/lib/python3"], 40),
    (["/usr/share/locale", "/usr/share/doc", "/usr/share/man"], 20),
]


def build_layer(sources: list[str], megabytes: int, out: Path) -> int:
    """A layer tar of real files (and their directories) up to ``megabytes`` MB."""
    budget = megabytes * 1_000_000
    used = 0
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        added: set[str] = set()
        for source in sources:
            for dirpath, dirnames, filenames in os.walk(source):
                dirnames.sort()
                for name in sorted(filenames):
                    path = os.path.join(dirpath, name)
                    if os.path.islink(path) or not os.path.isfile(path):
                        continue
                    size = os.path.getsize(path)
                    if used + size > budget:
                        continue
                    parts = path.strip("/").split("/")
                    for depth in range(1, len(parts)):
                        directory = "/".join(parts[:depth])
                        if directory not in added:
                            added.add(directory)
                            tar.add("/" + directory, directory, recursive=False)
                    info = tar.gettarinfo(path, path.lstrip("/"))
                    info.uname = info.gname = ""
                    with open(path, "rb") as data:
                        tar.addfile(info, data)
                    used += size
    return used


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def compile_rkt() -> None:
    """Byte-compile rkt as an installation would: without it (PYTHONDONTWRITEBYTECODE)
    every run compiles the modules again, which is most of a re-fetch."""
    import compileall

    import rkt
    import rkt_plugins

    for package in (rkt, rkt_plugins):
        compileall.compile_dir(str(Path(package.__file__).parent), quiet=1)


def main() -> list[dict[str, object]]:
    compile_rkt()
    base = workdir("rkt-bench-docker-")
    results: list[dict[str, object]] = []
    registry: RegistryServer | None = None
    try:
        layers = []
        total = 0
        for index, (sources, megabytes) in enumerate(LAYERS):
            path = base / f"layer{index}.tar"
            total += build_layer(sources, megabytes, path)
            layers.append(path)
        config = image_config([], cmd=["/bin/sh"])
        config["rootfs"]["diff_ids"] = [sha256_file(layer) for layer in layers]
        archive = write_docker_archive(base / "image.tar", layers, config, "bench:v1")
        ca = TestCA(base / "ca")
        registry = RegistryServer(base / "registry", ca).start()
        registry.push_archive(archive, "bench/big:v1")
        # v2: the same three lower layers and a new small top layer
        top = base / "layer-v2.tar"
        top.write_bytes(layer_tar({"etc/": "", "etc/release": "v2\n"}))
        v2_layers = [*layers[:3], top]
        v2_config = image_config([], cmd=["/bin/sh"])
        v2_config["rootfs"]["diff_ids"] = [sha256_file(layer) for layer in v2_layers]
        registry.push_archive(write_docker_archive(base / "image-v2.tar", v2_layers, v2_config,
                                                   "bench:v2"), "bench/big:v2")
        blobs = sum(p.stat().st_size for p in (registry.storage).rglob("data"))
        print(f"image: {len(layers)} layers, {total / 1e6:.0f} MB of files, "
              f"{blobs / 1e6:.0f} MB of blobs in the registry", flush=True)

        env = Env(base / "env")
        client_env = {**os.environ, "REQUESTS_CA_BUNDLE": str(ca.bundle)}
        url = f"docker://{registry.host}/bench/big:v1"
        oci_dir = base / "oci"

        def fetch(image: str = url) -> None:
            env.rkt("--insecure-options=image", "fetch", image, env=client_env)

        def skopeo() -> None:
            sh(["skopeo", "copy", "--quiet", "--insecure-policy",
                f"--src-cert-dir={ca.cert_dir}", f"docker://{registry.host}/bench/big:v1",
                f"oci:{oci_dir}"])

        def reset() -> None:
            env.reset_data()
            shutil.rmtree(oci_dir, ignore_errors=True)
            sh(["sync"])

        first, baseline = compare(fetch, skopeo, setup=reset)
        results.append(report("docker:// fetch, ~200 MB, 4 layers", first, baseline,
                              "skopeo copy to oci:", 1.2))
        reset()
        fetch()
        again = timed(fetch, repeat=5)
        results.append(report("docker:// re-fetch of an unchanged tag", again, first,
                              "first fetch", 0.1))
        v2_url = f"docker://{registry.host}/bench/big:v2"
        result = env.rkt("--insecure-options=image", "fetch", v2_url, env=client_env)
        downloaded = result.stderr.decode().count("Downloading layer:")

        def fetch_v2() -> None:
            env.rkt("--insecure-options=image", "fetch", v2_url, env=client_env)

        def forget_v2() -> None:
            listing = env.rkt("image", "list", "--no-legend", "--full").stdout.decode()
            for line in listing.splitlines():
                if ":v2" in line:
                    env.rkt("image", "rm", line.split()[0])

        shared = timed(fetch_v2, repeat=3, setup=forget_v2)
        print(f"(second tag: {downloaded} of 4 layers downloaded)", flush=True)
        results.append(report("docker:// fetch of a tag sharing 3 layers", shared, first,
                              "first fetch"))
    finally:
        if registry is not None:
            registry.stop()
        shutil.rmtree(base, ignore_errors=True)
    return results


if __name__ == "__main__":
    if not shutil.which("skopeo") or not shutil.which("docker-registry"):
        sys.exit("fetch_docker: needs skopeo and docker-registry (make install-test)")
    run_and_save(main)
