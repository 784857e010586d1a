"""A small typed facade over the plugin manager.

The rest of the core asks this object for "the fetcher for https" or "the store",
never calls ``pm.hook.*`` itself. Each registry hook runs once, on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

from rkt.errors import PluginError, Stage1Error
from rkt.hookmarker import is_hookimpl
from rkt.plugins import (
    BUILTIN_HOOKS,
    STAGE1_GROUP,
    builtin_plugins_alone,
    entry_points_cached,
    installed_stage1_backends,
    load_entry_point,
    new_plugin_manager,
    stage1_entry_point,
)
from rkt.registry import (
    DiscoveryRegistry,
    FetcherRegistry,
    Registry,
    Stage1Registry,
    StoreRegistry,
    VerifierRegistry,
)

if TYPE_CHECKING:
    from types import ModuleType

    import pluggy

    from rkt.fetching import Fetcher, Verifier
    from rkt.stage1 import Stage1Backend
    from rkt.store import ImageStore

R = TypeVar("R", bound=Registry[Any])

DEFAULT_STORE = "cas"


class Plugins:
    """The loaded plugins, and typed access to what they registered.

    Either a pluggy plugin manager, or, when the built-in plugins are the only ones
    (the common case, and every pod start in it), those modules alone: the core then
    calls their hooks itself, which is all pluggy would do for them.
    """

    _process_default: ClassVar[Plugins | None] = None

    def __init__(self, pm: pluggy.PluginManager | None,
                 builtins: Sequence[tuple[str, str]] = ()) -> None:
        self._pm = pm
        #: ``(name, module name)`` of the built-ins, imported on first use
        self._builtins = builtins

    @property
    def pm(self) -> pluggy.PluginManager:
        """The pluggy plugin manager (built on first use when there was none)."""
        if self._pm is None:
            self._pm = new_plugin_manager()
        return self._pm

    @classmethod
    def load(cls) -> Plugins:
        """The process-wide instance: plugins are loaded once per process."""
        if cls._process_default is None:
            builtins = builtin_plugins_alone()
            cls._process_default = (cls(new_plugin_manager()) if builtins is None
                                    else cls(None, builtins))
        return cls._process_default

    def _builtin_plugins(self, hook_name: str) -> list[tuple[str, ModuleType]]:
        """The built-ins that implement ``hook_name``, imported (only those)."""
        return [(name, importlib.import_module(module_name))
                for name, module_name in self._builtins
                if hook_name in BUILTIN_HOOKS.get(module_name, (hook_name,))]

    def _call_builtins(self, hook_name: str, **kwargs: object) -> None:
        for _, plugin in self._builtin_plugins(hook_name):
            implementation = getattr(plugin, hook_name, None)
            if callable(implementation) and is_hookimpl(implementation):
                implementation(**kwargs)

    def _fill(self, registry: R, hook_name: str) -> R:
        if self._pm is None:
            registry.implementations = {
                _code_of(getattr(plugin, hook_name)): name
                for name, plugin in self._builtin_plugins(hook_name)
                if is_hookimpl(getattr(plugin, hook_name, None))
            }
            self._call_builtins(hook_name, registry=registry)
            registry.implementations = {}
            return registry
        # Through pluggy's own hook caller, so hook wrappers, tryfirst/trylast and
        # argument subsets work as in any pluggy hook; the registry tells which
        # plugin is adding from the implementations' code (see Registry.add).
        caller = getattr(self.pm.hook, hook_name)
        registry.implementations = {
            _code_of(impl.function): impl.plugin_name for impl in caller.get_hookimpls()
        }
        caller(registry=registry)
        registry.implementations = {}
        return registry

    @cached_property
    def fetchers(self) -> FetcherRegistry:
        return self._fill(FetcherRegistry(), "rkt_register_fetchers")

    @cached_property
    def discovery(self) -> DiscoveryRegistry:
        return self._fill(DiscoveryRegistry(), "rkt_register_discovery")

    @cached_property
    def verifiers(self) -> VerifierRegistry:
        return self._fill(VerifierRegistry(), "rkt_register_verifiers")

    @cached_property
    def stores(self) -> StoreRegistry:
        return self._fill(StoreRegistry(), "rkt_register_stores")

    @cached_property
    def stage1_backends(self) -> Stage1Registry:
        return self._fill(Stage1Registry(), "rkt_register_stage1_backends")

    def image_gc(self, data_dir: Path, grace_period: float, report: Callable[[str], None]) -> None:
        """Let every plugin collect its own cached data (``rkt_image_gc``)."""
        if self._pm is None:
            self._call_builtins("rkt_image_gc", data_dir=data_dir, grace_period=grace_period,
                                report=report)
            return
        self._pm.hook.rkt_image_gc(data_dir=data_dir, grace_period=grace_period, report=report)

    # -- typed lookups -------------------------------------------------------------
    def fetcher(self, kind: str) -> Fetcher | None:
        return self.fetchers.get(kind)

    def verifier(self, signature_format: str = "openpgp") -> Verifier:
        verifier = self.verifiers.get(signature_format)
        if verifier is None:
            raise PluginError(f'no verifier for "{signature_format}" signatures is installed')
        return verifier

    def open_store(self, data_dir: Path, name: str = DEFAULT_STORE) -> ImageStore:
        factory = self.stores.get(name)
        if factory is None:
            raise PluginError(f'no image store named "{name}" is installed')
        return factory(data_dir)

    def stage1_backend(self, name: str) -> Stage1Backend:
        """The backend named ``name``: a registered one, else the entry point of that name.

        Only the chosen entry point is imported. With rkt's entry-point cache proven
        fresh (:func:`rkt.plugins.entry_points_cached`, every pod start but the first
        after an install) its module is imported directly: stevedore, like
        ``importlib.metadata``, would read every distribution's metadata, which costs
        more than a fly pod. On a cache miss that metadata is read anyway, and
        stevedore's ``DriverManager`` loads the backend.
        """
        factory = self.stage1_backends.get(name)
        if factory is not None:
            return factory()
        value = stage1_entry_point(name)
        if value is None:
            installed = installed_stage1_backends()
            known = ", ".join(sorted(set(installed) | set(self.stage1_backends.names())))
            raise Stage1Error(
                f'stage1 backend "{name}" is not installed (installed: {known or "none"})'
            )
        try:
            if entry_points_cached():
                backend_class: Any = load_entry_point(value)
                return cast("Stage1Backend", backend_class())
            return _load_with_stevedore(name)
        except Stage1Error:
            raise
        except Exception as exc:
            raise Stage1Error(
                f'stage1 backend "{name}" ({value}) failed to load: {type(exc).__name__}: {exc}'
            ) from exc


def _load_with_stevedore(name: str) -> Stage1Backend:
    """The ``rkt.stage1`` entry point ``name``, loaded and instantiated by stevedore."""
    from stevedore.driver import DriverManager

    def reraise(manager: object, entry_point: object, exc: BaseException) -> None:
        del manager, entry_point
        raise exc  # stevedore would log it and report "no driver" instead

    manager: DriverManager[Any] = DriverManager(STAGE1_GROUP, name, invoke_on_load=True,
                                                on_load_failure_callback=reraise)
    return cast("Stage1Backend", manager.driver)


def _code_of(function: Callable[..., object]) -> object:
    """The code object of a hook implementation (a function or a bound method)."""
    return getattr(getattr(function, "__func__", function), "__code__", None)
