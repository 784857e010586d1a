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
import json
import os
import sys
import zlib
from collections.abc import Iterable
from functools import cache
from types import ModuleType
from typing import TYPE_CHECKING

from rkt.errors import PluginError, Stage1Error
from rkt.log import get_logger

if TYPE_CHECKING:
    import pluggy

LOG = get_logger(__name__)

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

#: The hooks each built-in implements: with the built-ins alone, a process imports
#: only those whose hooks it calls (a pod start: the store's). tests/core/test_plugins.py
#: holds this to what the modules implement.
BUILTIN_HOOKS: dict[str, frozenset[str]] = {
    "rkt_plugins.file_fetcher": frozenset({"rkt_register_fetchers"}),
    "rkt_plugins.https_fetcher": frozenset({"rkt_register_fetchers"}),
    "rkt_plugins.name_fetcher": frozenset({"rkt_register_fetchers"}),
    "rkt_plugins.discovery": frozenset({"rkt_register_discovery"}),
    "rkt_plugins.openpgp": frozenset({"rkt_register_verifiers"}),
    "rkt_plugins.cas_store": frozenset({"rkt_register_stores"}),
    "rkt_plugins.docker": frozenset({"rkt_register_fetchers", "rkt_image_gc"}),
}

PLUGIN_GROUP = "rkt.plugins"
STAGE1_GROUP = "rkt.stage1"
DISABLE_AUTOLOAD_ENV = "RKT_DISABLE_PLUGIN_AUTOLOAD"
DISABLE_PLUGINS_ENV = "RKT_DISABLE_PLUGINS"


#: bump when the cache file's format changes
_CACHE_FORMAT = 2


def _cache_key() -> list[object]:
    """What the cached entry points depend on: every ``sys.path`` entry with its
    directory's mtime (as stevedore keys its cache). Installing or removing a
    distribution changes its directory's mtime, and so the key."""
    key: list[object] = [_CACHE_FORMAT]
    for entry in sys.path:
        try:
            mtime = os.stat(entry or ".").st_mtime_ns
        except OSError:
            mtime = 0
        key.append([entry, mtime])
    return key


def _cache_file(key: list[object]) -> str:
    """Where the entry points found for ``key`` are remembered. The file holds the
    key too, so a name shared by two keys (a CRC collision) is never taken for a
    match; no hashlib to import on a pod start."""
    name = f"{zlib.crc32(json.dumps(key).encode()):08x}"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "rkt", f"entry-points-{name}.json")


#: whether this process's entry points came from a cache proven fresh (see
#: :func:`entry_points_cached`)
_FROM_CACHE: list[bool] = []


def entry_points_cached() -> bool:
    """Whether rkt's entry points were read from the on-disk cache, proven fresh by
    its key, rather than from the installed distributions' metadata (a cache miss:
    none yet, or something was installed or removed since)."""
    _entry_points()
    return bool(_FROM_CACHE and _FROM_CACHE[0])


@cache
def _entry_points() -> dict[str, list[tuple[str, str]]]:
    """rkt's entry points, ``group -> [(name, "module:attr")]``, read once per process.

    Reading every installed distribution's metadata costs more than starting a
    pod, so what was found is cached on disk (when the home directory is writable).
    """
    key = _cache_key()
    path = _cache_file(key)
    try:
        with open(path) as handle:
            cached = json.load(handle)
        if cached["key"] == key:
            groups = {group: [(name, value) for name, value in pairs]
                      for group, pairs in cached["groups"].items()}
            _FROM_CACHE[:] = [True]
            return groups
    except (OSError, ValueError, TypeError, KeyError):
        pass
    _FROM_CACHE[:] = [False]
    from importlib.metadata import entry_points

    found = entry_points()
    groups = {group: sorted((ep.name, ep.value) for ep in found.select(group=group))
              for group in (PLUGIN_GROUP, STAGE1_GROUP)}
    try:
        import tempfile

        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".entry-points-")
        with os.fdopen(fd, "w") as handle:
            json.dump({"key": key, "groups": groups}, handle)
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


def builtin_plugins_alone() -> list[tuple[str, str]] | None:
    """The built-in plugins, ``(name, module name)``, when they are all the plugins
    :func:`new_plugin_manager` would load (no external plugin is installed, per the
    cached entry points, or autoloading is off); None when there are others.

    Then the core calls their hooks itself (:class:`rkt.facade.Plugins`), importing
    each module only when one of its hooks (:data:`BUILTIN_HOOKS`) is called, and
    pluggy, with the ``importlib.metadata`` it imports, is not loaded at all.
    """
    blocked = _blocked_from_env()
    names = {module_name.rsplit(".", 1)[-1]: module_name for module_name in BUILTIN_PLUGINS}
    if not _env_flag(DISABLE_AUTOLOAD_ENV) and any(
        name not in blocked and name not in names
        for name, _ in _entry_points()[PLUGIN_GROUP]
    ):
        return None
    return [(short, module_name) for short, module_name in names.items()
            if short not in blocked]


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
