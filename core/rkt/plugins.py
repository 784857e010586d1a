"""The plugin manager: built-in plugins, external plugins, and nothing eagerly.

Built-ins are ordinary plugins listed in :data:`BUILTIN_PLUGINS` that use only the
public ``hookimpl``; external plugins are modules named by entry points in the
``rkt.plugins`` group. A plugin that fails to import stops rkt with an error that
names it (its traceback shows under ``--debug``); ``RKT_DISABLE_PLUGIN_AUTOLOAD=1``
starts rkt with no external plugin at all, and ``RKT_DISABLE_PLUGINS=a,b`` skips
the named ones, so a broken plugin never locks the user out.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Iterable
from functools import cache
from types import ModuleType
from typing import Any

import pluggy

from rkt import hookspecs
from rkt.errors import PluginError

LOG = logging.getLogger(__name__)

#: Built-in plugins, registered in this order under the name after the last dot.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "rkt_plugins.file_fetcher",
    "rkt_plugins.https_fetcher",
    "rkt_plugins.name_fetcher",
    "rkt_plugins.discovery",
    "rkt_plugins.openpgp",
    "rkt_plugins.cas_store",
    "rkt_plugins.docker",
)

PLUGIN_GROUP = "rkt.plugins"
STAGE1_GROUP = "rkt.stage1"
DISABLE_AUTOLOAD_ENV = "RKT_DISABLE_PLUGIN_AUTOLOAD"
DISABLE_PLUGINS_ENV = "RKT_DISABLE_PLUGINS"


@cache
def _entry_points() -> Any:  # 3.11's SelectableGroups; .select(group=...) gives EntryPoints
    """Every installed entry point, read once per process (reading them is not free)."""
    from importlib.metadata import entry_points

    return entry_points()


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def _blocked_from_env() -> frozenset[str]:
    raw = os.environ.get(DISABLE_PLUGINS_ENV, "")
    return frozenset(item.strip() for item in raw.split(",") if item.strip())


def new_plugin_manager(
    *,
    builtins: Iterable[str] = BUILTIN_PLUGINS,
    autoload: bool | None = None,
    blocked: Iterable[str] | None = None,
) -> pluggy.PluginManager:
    """Build a plugin manager with the built-ins and (unless disabled) external plugins.

    ``autoload`` and ``blocked`` default to the environment
    (:data:`DISABLE_AUTOLOAD_ENV`, :data:`DISABLE_PLUGINS_ENV`); tests pass them
    explicitly.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    blocked_names = _blocked_from_env() if blocked is None else frozenset(blocked)
    for module_name in builtins:
        short = module_name.rsplit(".", 1)[-1]
        if short in blocked_names:
            continue
        _register(pm, importlib.import_module(module_name), short)
    if autoload is None:
        autoload = not _env_flag(DISABLE_AUTOLOAD_ENV)
    if autoload:
        for ep in _entry_points().select(group=PLUGIN_GROUP):
            if ep.name in blocked_names or pm.has_plugin(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginError(
                    f'plugin "{ep.name}" ({ep.value}) failed to load: '
                    f"{type(exc).__name__}: {exc} "
                    f"(set {DISABLE_PLUGINS_ENV}={ep.name} to start without it)"
                ) from exc
            _register(pm, plugin, ep.name)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f'plugin "{exc.plugin}" is invalid: {exc}') from exc
    return pm


def _register(pm: pluggy.PluginManager, plugin: ModuleType | object, name: str) -> None:
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        raise PluginError(f'plugin "{name}" is invalid: {exc}') from exc
    except ValueError as exc:  # pluggy: name already registered
        raise PluginError(f'plugin "{name}" is registered twice: {exc}') from exc
    LOG.debug("registered plugin %s", name)


def installed_stage1_backends() -> list[str]:
    """Names in the ``rkt.stage1`` entry-point group, without importing any of them."""
    return sorted({ep.name for ep in _entry_points().select(group=STAGE1_GROUP)})
