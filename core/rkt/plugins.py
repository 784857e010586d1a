"""The plugin manager: built-in plugins, external plugins, and nothing eagerly.

Built-ins are ordinary plugins listed in :data:`BUILTIN_PLUGINS` that use only the
public ``hookimpl``; external plugins are modules named by entry points in the
``rkt.plugins`` group. A plugin that fails to import stops rkt with an error that
names it (its traceback shows under ``--debug``); ``RKT_DISABLE_PLUGIN_AUTOLOAD=1``
starts rkt with no external plugin at all, and ``RKT_DISABLE_PLUGINS=a,b`` skips
the named ones, so a broken plugin never locks the user out.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterable
from functools import cache
from types import ModuleType
from typing import TYPE_CHECKING

from rkt.errors import PluginError, Stage1Error

if TYPE_CHECKING:
    import pluggy

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


#: bump when the cache file's format changes
_CACHE_FORMAT = 1


def _cache_file() -> str:
    """Where the entry points found for this ``sys.path`` are remembered.

    The name hashes every ``sys.path`` entry with its directory's mtime (as
    stevedore does): installing or removing a distribution changes its
    directory's mtime, and so the file looked for.
    """
    digest = hashlib.sha256(str(_CACHE_FORMAT).encode())
    for entry in sys.path:
        try:
            mtime = os.stat(entry or ".").st_mtime_ns
        except OSError:
            mtime = 0
        digest.update(f"{entry}\0{mtime}\0".encode())
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "rkt", f"entry-points-{digest.hexdigest()[:32]}.json")


@cache
def _entry_points() -> dict[str, list[tuple[str, str]]]:
    """rkt's entry points, ``group -> [(name, "module:attr")]``, read once per process.

    Reading every installed distribution's metadata costs more than starting a
    pod, so what was found is cached on disk (when the home directory is writable).
    """
    path = _cache_file()
    try:
        with open(path) as handle:
            cached = json.load(handle)
        return {group: [(name, value) for name, value in pairs]
                for group, pairs in cached.items()}
    except (OSError, ValueError, TypeError):
        pass
    from importlib.metadata import entry_points

    found = entry_points()
    groups = {group: sorted((ep.name, ep.value) for ep in found.select(group=group))
              for group in (PLUGIN_GROUP, STAGE1_GROUP)}
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".entry-points-")
        with os.fdopen(fd, "w") as handle:
            json.dump(groups, handle)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home: read the metadata every time
    return groups


def load_entry_point(value: str) -> object:
    """Import what an entry point names: ``module`` or ``module:attr.attr``."""
    module_name, _, attrs = value.partition(":")
    target: object = importlib.import_module(module_name.strip())
    for attr in filter(None, attrs.strip().split(".")):
        target = getattr(target, attr)
    return target


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
    import pluggy  # here: only a process with an external plugin needs it

    from rkt import hookspecs

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
        for name, value in _entry_points()[PLUGIN_GROUP]:
            if name in blocked_names or pm.has_plugin(name):
                continue
            try:
                plugin = load_entry_point(value)
            except Exception as exc:
                raise PluginError(
                    f'plugin "{name}" ({value}) failed to load: '
                    f"{type(exc).__name__}: {exc} "
                    f"(set {DISABLE_PLUGINS_ENV}={name} to start without it)"
                ) from exc
            _register(pm, plugin, name)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f'plugin "{exc.plugin}" is invalid: {exc}') from exc
    return pm


def _register(pm: pluggy.PluginManager, plugin: ModuleType | object, name: str) -> None:
    import pluggy

    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        raise PluginError(f'plugin "{name}" is invalid: {exc}') from exc
    except ValueError as exc:  # pluggy: name already registered
        raise PluginError(f'plugin "{name}" is registered twice: {exc}') from exc
    LOG.debug("registered plugin %s", name)


def builtin_plugins_alone() -> list[tuple[str, ModuleType]] | None:
    """The built-in plugins, ``(name, module)``, when they are all the plugins
    :func:`new_plugin_manager` would load (no external plugin is installed, per the
    cached entry points, or autoloading is off); None when there are others.

    Then the core calls their hooks itself (:class:`rkt.facade.Plugins`) and pluggy,
    with the ``importlib.metadata`` it imports, is not loaded at all.
    """
    blocked = _blocked_from_env()
    names = {module_name.rsplit(".", 1)[-1]: module_name for module_name in BUILTIN_PLUGINS}
    if not _env_flag(DISABLE_AUTOLOAD_ENV) and any(
        name not in blocked and name not in names
        for name, _ in _entry_points()[PLUGIN_GROUP]
    ):
        return None
    return [(short, importlib.import_module(module_name))
            for short, module_name in names.items() if short not in blocked]


def installed_stage1_backends() -> list[str]:
    """Names in the ``rkt.stage1`` entry-point group, without importing any of them."""
    return sorted({name for name, _ in _entry_points()[STAGE1_GROUP]})


def stage1_entry_point(name: str) -> str | None:
    """What the ``rkt.stage1`` entry point ``name`` names (``module:attr``), or None."""
    values = sorted({value for entry, value in _entry_points()[STAGE1_GROUP] if entry == name})
    if len(values) > 1:
        raise Stage1Error(f'stage1 backend "{name}" is installed more than once: '
                          f'{", ".join(values)}')
    return values[0] if values else None
