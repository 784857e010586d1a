"""The stage1 contract: what a stage1 backend implements.

A backend is found by name in the ``rkt.stage1`` entry-point group (or registered
through ``rkt_register_stage1_backends``); the stage1 *image* (an ACI named like
``coreos.com/rkt/stage1-nspawn``) names the backend in its manifest annotations.
Only the chosen backend is imported.
"""

from __future__ import annotations

from typing import Protocol


class Stage1Backend(Protocol):
    """A way of isolating a pod: containers, virtual machines, or plain chroot."""

    #: the entry-point name, e.g. "nspawn"
    name: str
    #: the stage0/stage1 interface version this backend speaks
    interface_version: int
