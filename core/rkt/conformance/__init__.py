"""A conformance suite for any stage1: ``python -m rkt.conformance STAGE1-NAME``.

It drives the real ``rkt`` command against an installed stage1 image in a
private, throw-away data directory and config directories (never the host's
``/var/lib/rkt``), with small test images it builds from the host's static
busybox, and checks the pod behaviour the stage1 contract asks for
(docs/stage1.md, "Conformance"): exit codes, environment, user and group,
working directory, volumes, read-only root, event handlers, several apps,
``stop``, ``enter``, ``gc``, the terminal, and the isolators and networks the
stage1 claims. It needs root and the standard library only (no pytest).

* :mod:`rkt.conformance.world`: the private world and its images;
* :mod:`rkt.conformance.checks`: the checks, each tied to the feature a stage1
  may declare unsupported (``rkt.stage1.STAGE1_FEATURES``);
* :mod:`rkt.conformance.suite`: running them and the table of results.
"""
