"""``docker2aci``: a Docker or OCI image as an ACI file, by the runtime's own conversion.

::

    docker2aci [--insecure] [--no-compression] [--overwrite]
               docker://IMAGE | docker-archive:FILE[:NAME:TAG|:@N] | oci:DIR[:REF]
               | oci-archive:FILE[:REF]  OUT.aci

The image is converted by the fetcher ``rkt fetch`` uses for the same string (the
Docker plugin, found through the plugin registry: squash, manifest mapping,
reproducible output), in a private scratch store that is removed afterwards; the
ACI is then written to ``OUT.aci``, gzip-compressed (reproducibly) unless
``--no-compression``. Registry credentials come from rkt's ``auth.d``
(``dockerAuth``), as for ``rkt fetch``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from rkt.errors import UsageError
from rkt.tools import ToolReporter, run_tool

TOOL = "docker2aci"
#: the image strings the Docker plugin serves
KINDS = ("docker", "docker-archive", "oci", "oci-archive")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=TOOL, description="Convert a Docker or OCI image to an ACI.")
    parser.add_argument("--debug", action="store_true", help="print tracebacks and debug logs")
    parser.add_argument("--insecure", action="store_true",
                        help="accept any TLS certificate and plain http registries")
    parser.add_argument("--no-compression", action="store_true", help="write a plain tar")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    parser.add_argument("image", metavar="IMAGE",
                        help="docker://IMAGE, docker-archive:FILE, oci:DIR or oci-archive:FILE")
    parser.add_argument("out", metavar="OUT.aci", type=Path)
    return parser


def convert(image: str, out: Path, *, insecure: bool, compress: bool, overwrite: bool,
            reporter: ToolReporter) -> None:
    """Convert ``image`` to the ACI file ``out``; see the module docstring."""
    from rkt.aci.layout import DEFAULT_COMPRESS_LEVEL, AtomicOutput, check_output
    from rkt.aci.writer import TarWriter
    from rkt.context import Runtime
    from rkt.fetching import FetchSession
    from rkt.imageref import parse_image_ref

    check_output(out, overwrite=overwrite)
    # Docker images carry no signature: converting one is the point of the tool.
    options = {"image"} | ({"tls", "http"} if insecure else set())
    try:
        scratch_dir = tempfile.TemporaryDirectory(prefix=".docker2aci-", dir=out.parent)
    except OSError as exc:
        raise UsageError(f"cannot write {out}: {exc.strerror or exc}") from exc
    with scratch_dir as scratch:
        runtime = Runtime(data_dir_override=Path(scratch) / "data",
                          insecure=frozenset(options), reporter=reporter)
        plugins = runtime.plugins
        ref = parse_image_ref(image, plugin_schemes=plugins.fetchers.names())
        fetcher = plugins.fetcher(ref.kind) if ref.kind in KINDS else None
        if fetcher is None:
            raise UsageError(f'"{image}" is not a Docker or OCI image: expected docker://IMAGE, '
                             "docker-archive:FILE, oci:DIR or oci-archive:FILE")
        tmp_dir = Path(scratch) / "tmp"
        tmp_dir.mkdir()
        fetched = fetcher.fetch(ref, FetchSession(runtime=runtime, tmp_dir=tmp_dir,
                                                  pull_policy="update"))
        if fetched.stored_id is not None:  # only a store it was given could say so
            raise UsageError(f"{image}: the converter returned no image")
        with AtomicOutput(out) as fd:
            source = os.open(fetched.path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                tar = TarWriter(fd, compress_level=DEFAULT_COMPRESS_LEVEL if compress else None)
                tar.add_raw(source, 0, os.fstat(source).st_size)
                tar.close(end_archive=False)
            finally:
                os.close(source)


def _main(argv: list[str]) -> int:
    ns = _parser().parse_args(argv)
    convert(ns.image, ns.out, insecure=ns.insecure, compress=not ns.no_compression,
            overwrite=ns.overwrite, reporter=ToolReporter(TOOL))
    return 0


def main(argv: Sequence[str] | None = None) -> NoReturn:
    run_tool(TOOL, _main, argv)


if __name__ == "__main__":
    main()
