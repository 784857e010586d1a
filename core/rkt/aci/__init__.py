"""App Container Images as archives: compression, layout validation, safe extraction.

* :mod:`rkt.aci.compression`: detect gzip/bzip2/xz/zstd/plain by magic bytes and
  stream the uncompressed bytes (:func:`~rkt.aci.compression.open_decompressed`).
* :mod:`rkt.aci.archive`: :func:`~rkt.aci.archive.scan_aci` validates the tar layout
  of appc-spec/aci.md in one sequential pass and returns the raw manifest.
* :mod:`rkt.aci.extract`: :func:`~rkt.aci.extract.extract_tar` unpacks a (hostile)
  tar into a directory without ever touching anything outside it.
* :mod:`rkt.aci.entries`: the rules a tar entry obeys when it is applied to a tree
  (names, parents resolved inside the root, hard links, whiteouts), written once for
  the extractor and the Docker plugin's layer squash.
* :mod:`rkt.aci.tarstream`: the strict tar reader all of them use.
* :mod:`rkt.aci.writer`: :class:`~rkt.aci.writer.TarWriter` writes reproducible
  archives (plain or gzip) for the Docker plugin's squash and ``actool build``.

Importing this package imports none of them, so that ``rkt version`` stays cheap.
"""

from __future__ import annotations
