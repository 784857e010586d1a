"""Named registries that the registry hooks fill.

A registry records which plugin added each name, so a conflict is reported as
``fetcher "https" is provided by both "a" and "b"`` rather than silently letting
the last plugin win.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Generic, TypeVar

from rkt.errors import PluginError
from rkt.fetching import Discoverer, Fetcher, Verifier

if TYPE_CHECKING:
    from pathlib import Path

    from rkt.stage1 import Stage1Backend
    from rkt.store import ImageStore

T = TypeVar("T")


class Registry(Generic[T]):
    """Names to items, with the plugin that provided each."""

    #: what the registry holds, for messages ("fetcher", "verifier", ...)
    thing = "item"

    def __init__(self) -> None:
        self._items: dict[str, tuple[T, str]] = {}
        #: while the registry hook runs: each implementation's code -> its plugin name
        self.implementations: dict[object, str] = {}

    def add(self, name: str, item: T) -> None:
        plugin = self._adding_plugin()
        if name in self._items:
            owner = self._items[name][1]
            raise PluginError(
                f'{self.thing} "{name}" is provided by both "{owner}" and "{plugin}"'
            )
        self._items[name] = (item, plugin)

    def _adding_plugin(self) -> str:
        """The plugin whose hook implementation is calling :meth:`add`.

        pluggy calls every implementation in one hook call and does not say which
        one is running, so the caller's frames are matched against the
        implementations' code (only while the hook runs; a handful of frames).
        """
        if self.implementations:
            frame = sys._getframe(2)
            while frame is not None:
                plugin = self.implementations.get(frame.f_code)
                if plugin is not None:
                    return plugin
                frame = frame.f_back  # type: ignore[assignment]
        return "<core>"

    def get(self, name: str) -> T | None:
        entry = self._items.get(name)
        return entry[0] if entry else None

    def provider(self, name: str) -> str | None:
        entry = self._items.get(name)
        return entry[1] if entry else None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


class FetcherRegistry(Registry[Fetcher]):
    thing = "fetcher"


class DiscoveryRegistry(Registry[Discoverer]):
    thing = "discovery method"


class VerifierRegistry(Registry[Verifier]):
    thing = "verifier"


#: A store factory takes the data directory and returns an open store.
StoreFactory = Callable[["Path"], "ImageStore"]


class StoreRegistry(Registry[StoreFactory]):
    thing = "store"


#: A stage1 backend factory takes no arguments and returns a backend.
Stage1Factory = Callable[[], "Stage1Backend"]


class Stage1Registry(Registry[Stage1Factory]):
    thing = "stage1 backend"
