"""The built-in content-addressed image store (``cas``)."""

from __future__ import annotations

from pathlib import Path

from rkt.api import ImageStore, StoreRegistry, hookimpl


def open_cas_store(data_dir: Path) -> ImageStore:
    from rkt.store.cas import CasStore

    return CasStore(data_dir)


@hookimpl
def rkt_register_stores(registry: StoreRegistry) -> None:
    registry.add("cas", open_cas_store)
