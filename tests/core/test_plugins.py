"""The plugin manager and the facade: built-ins, external plugins, conflicts."""

from __future__ import annotations

import pytest

from rkt.errors import PluginError
from rkt.facade import Plugins
from rkt.hookspecs import hookimpl
from rkt.plugins import BUILTIN_PLUGINS, new_plugin_manager
from rkt_testing import pythonpath_with


@pytest.fixture
def plugins() -> Plugins:
    """A fresh plugin manager with the built-ins only, per test."""
    return Plugins(new_plugin_manager(autoload=False))


def test_builtins_register_their_things(plugins: Plugins) -> None:
    assert "file" in plugins.fetchers
    assert plugins.fetchers.provider("file") == "file_fetcher"
    assert "openpgp" in plugins.verifiers
    assert "cas" in plugins.stores
    assert len(BUILTIN_PLUGINS) == len(set(BUILTIN_PLUGINS))


def test_two_plugins_claiming_one_name_is_an_error_naming_both(plugins: Plugins) -> None:
    class Impostor:
        @hookimpl
        def rkt_register_fetchers(self, registry):  # type: ignore[no-untyped-def]
            registry.add("file", object())

    plugins.pm.register(Impostor(), name="impostor")
    try:
        with pytest.raises(PluginError, match='fetcher "file" is provided by both'):
            _ = plugins.fetchers
    finally:
        plugins.pm.unregister(name="impostor")


def test_conflict_names_the_plugin_even_when_a_helper_adds(plugins: Plugins) -> None:
    def add_all(registry):  # type: ignore[no-untyped-def]
        registry.add("https", object())  # the plugin's own helper calls add

    class Helpful:
        @hookimpl
        def rkt_register_fetchers(self, registry):  # type: ignore[no-untyped-def]
            add_all(registry)

    plugins.pm.register(Helpful(), name="helpful")
    try:
        with pytest.raises(PluginError, match='both "helpful" and "https_fetcher"'):
            _ = plugins.fetchers
    finally:
        plugins.pm.unregister(name="helpful")


def test_hooks_run_through_pluggy_wrappers_and_ordering(plugins: Plugins) -> None:
    """Registry hooks go through pluggy's hook caller: a wrapper sees the whole call,
    tryfirst runs first, and an implementation may take no arguments at all."""
    seen: list[str] = []

    class Wrapper:
        @hookimpl(wrapper=True)
        def rkt_register_fetchers(self, registry):  # type: ignore[no-untyped-def]
            seen.append("before")
            result = yield
            seen.append(f"after: {len(registry.names())} kinds")
            return result

    class First:
        @hookimpl(tryfirst=True)
        def rkt_register_fetchers(self, registry):  # type: ignore[no-untyped-def]
            seen.append(f"first: {len(registry.names())} kinds")
            registry.add("first", object())

    class NoArguments:
        @hookimpl
        def rkt_register_fetchers(self):  # type: ignore[no-untyped-def]
            seen.append("called without arguments")

    for plugin, name in ((Wrapper(), "wrapper"), (First(), "first"), (NoArguments(), "bare")):
        plugins.pm.register(plugin, name=name)
    try:
        kinds = plugins.fetchers.names()
    finally:
        for name in ("wrapper", "first", "bare"):
            plugins.pm.unregister(name=name)
    assert plugins.fetchers.provider("first") == "first"
    assert seen[:2] == ["before", "first: 0 kinds"]
    assert "called without arguments" in seen
    assert seen[-1] == f"after: {len(kinds)} kinds"


def test_misspelled_hook_fails_loudly() -> None:
    class Typo:
        @hookimpl
        def rkt_register_fetcher(self, registry):  # type: ignore[no-untyped-def]
            pass

    pm = new_plugin_manager(autoload=False)
    with pytest.raises(Exception, match="rkt_register_fetcher"):
        pm.register(Typo(), name="typo")
        pm.check_pending()


def test_blocked_builtin_is_skipped() -> None:
    plugins = Plugins(new_plugin_manager(autoload=False, blocked=["file_fetcher"]))
    assert "file" not in plugins.fetchers


def test_a_registered_test_plugin_is_used_and_then_gone(plugins: Plugins) -> None:
    class Extra:
        @hookimpl
        def rkt_register_fetchers(self, registry):  # type: ignore[no-untyped-def]
            registry.add("extra", "the extra fetcher")

    plugins.pm.register(Extra(), name="extra")
    try:
        assert plugins.fetcher("extra") == "the extra fetcher"
        assert plugins.fetchers.provider("extra") == "extra"
    finally:
        plugins.pm.unregister(name="extra")


def test_unknown_stage1_backend_names_what_is_installed(plugins: Plugins) -> None:
    from rkt.errors import Stage1Error

    with pytest.raises(Stage1Error, match='stage1 backend "nope" is not installed'):
        plugins.stage1_backend("nope")


# -- through the real command, with real installed distributions -----------------------
def test_third_party_plugin_is_loaded_and_used(rkt_env, demo_plugin_path) -> None:  # type: ignore[no-untyped-def]
    env = pythonpath_with(demo_plugin_path)
    result = rkt_env.run("--insecure-options=image", "fetch", "demo:greeting", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("sha512-")
    listing = rkt_env.run("image", "list", "--no-legend", env=env, check=True)
    assert "demo.example/greeting:0.0.1" in listing.stdout


def test_broken_plugin_is_named_in_a_clear_error(rkt_env, broken_plugin_path) -> None:  # type: ignore[no-untyped-def]
    result = rkt_env.run("image", "list", env=pythonpath_with(broken_plugin_path))
    assert result.returncode == 254
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert 'plugin "broken"' in lines[0]
    assert "rkt_dependency_that_is_not_installed" in lines[0]
    assert "Traceback" not in result.stderr


def test_broken_plugin_traceback_only_with_debug(rkt_env, broken_plugin_path) -> None:  # type: ignore[no-untyped-def]
    result = rkt_env.run("--debug", "image", "list", env=pythonpath_with(broken_plugin_path))
    assert result.returncode == 254
    assert "Traceback" in result.stderr


def test_autoload_can_be_disabled(rkt_env, broken_plugin_path, demo_plugin_path) -> None:  # type: ignore[no-untyped-def]
    env = {**pythonpath_with(broken_plugin_path, demo_plugin_path),
           "RKT_DISABLE_PLUGIN_AUTOLOAD": "1"}
    result = rkt_env.run("image", "list", env=env)
    assert result.returncode == 0, result.stderr
    # and without autoload the third-party fetcher is gone too
    result = rkt_env.run("--insecure-options=image", "fetch", "demo:greeting", env=env)
    assert result.returncode != 0


def test_one_plugin_can_be_blocked_by_name(rkt_env, broken_plugin_path, demo_plugin_path) -> None:  # type: ignore[no-untyped-def]
    env = {**pythonpath_with(broken_plugin_path, demo_plugin_path),
           "RKT_DISABLE_PLUGINS": "broken"}
    result = rkt_env.run("--insecure-options=image", "fetch", "demo:greeting", env=env)
    assert result.returncode == 0, result.stderr


def test_plugin_installed_after_a_run_is_found(rkt_env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The entry-point cache is keyed on the mtimes of sys.path's directories, so a
    distribution installed after rkt last ran is seen at once."""
    import subprocess
    import sys
    from pathlib import Path

    target = tmp_path / "site"
    target.mkdir()
    env = pythonpath_with(target)
    before = rkt_env.run("--insecure-options=image", "fetch", "demo:greeting", env=env)
    assert before.returncode != 0  # no such fetcher yet (and the cache now says so)
    dist = Path(__file__).parent.parent / "dists" / "rkt-demo-plugin"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "--target", str(target), str(dist)],
        check=True, capture_output=True,
    )
    after = rkt_env.run("--insecure-options=image", "fetch", "demo:greeting", env=env)
    assert after.returncode == 0, after.stderr


# -- the built-ins alone, without pluggy (issue 14: a pod start imports no pluggy) ----------
def test_the_hookimpl_marker_marks_as_pluggys_own_does() -> None:
    import pluggy

    from rkt.hookmarker import MARKER_ATTRIBUTE, HookimplMarker

    ours, theirs = HookimplMarker(), pluggy.HookimplMarker("rkt")
    for options in ({}, {"wrapper": True}, {"tryfirst": True, "specname": "rkt_image_gc"}):
        def a() -> None: ...

        def b() -> None: ...

        ours(a, **options)
        theirs(b, **options)
        assert getattr(a, MARKER_ATTRIBUTE) == getattr(b, MARKER_ATTRIBUTE)


def test_the_builtins_alone_register_what_pluggy_registers(
    plugins: Plugins, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rkt.plugins import DISABLE_AUTOLOAD_ENV, builtin_plugins_alone

    monkeypatch.setenv(DISABLE_AUTOLOAD_ENV, "1")
    builtins = builtin_plugins_alone()
    assert builtins is not None
    alone = Plugins(None, builtins)
    for registry in ("fetchers", "discovery", "verifiers", "stores", "stage1_backends"):
        theirs, ours = getattr(plugins, registry), getattr(alone, registry)
        assert ours.names() == theirs.names(), registry
        assert [ours.provider(n) for n in ours.names()] == [
            theirs.provider(n) for n in theirs.names()], registry


def test_an_external_plugin_brings_in_the_plugin_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    import rkt.plugins

    # entry points as the cache would list them (installing a distribution for each
    # case is slow; tests/dists/rkt-demo-plugin covers a real external plugin)
    monkeypatch.delenv(rkt.plugins.DISABLE_AUTOLOAD_ENV, raising=False)
    monkeypatch.setattr(rkt.plugins, "_entry_points",
                        lambda: {rkt.plugins.PLUGIN_GROUP: [("extra", "extra_module")],
                                 rkt.plugins.STAGE1_GROUP: []})
    assert rkt.plugins.builtin_plugins_alone() is None
    # one named like a built-in is skipped by the plugin manager, so it changes nothing
    monkeypatch.setattr(rkt.plugins, "_entry_points",
                        lambda: {rkt.plugins.PLUGIN_GROUP: [("docker", "elsewhere")],
                                 rkt.plugins.STAGE1_GROUP: []})
    assert rkt.plugins.builtin_plugins_alone() is not None


def test_the_builtin_hook_table_is_what_the_builtins_implement() -> None:
    import importlib

    from rkt.hookmarker import is_hookimpl
    from rkt.plugins import BUILTIN_HOOKS

    assert set(BUILTIN_HOOKS) == set(BUILTIN_PLUGINS)
    for module_name in BUILTIN_PLUGINS:
        module = importlib.import_module(module_name)
        implemented = {name for name in dir(module)
                       if name.startswith("rkt_") and is_hookimpl(getattr(module, name))}
        assert BUILTIN_HOOKS[module_name] == implemented, module_name


def test_the_builtins_alone_import_only_the_plugins_of_the_hooks_called(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import subprocess
    import sys

    # a fresh interpreter: this one has imported every built-in already
    code = ("import sys; from rkt.facade import Plugins; "
            "p = Plugins(None, [(m.rsplit('.', 1)[-1], m) for m in "
            "__import__('rkt.plugins').plugins.BUILTIN_PLUGINS]); p.stores; "
            "print(sorted(m for m in sys.modules if m.startswith('rkt_plugins.')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "['rkt_plugins.cas_store']"


@pytest.mark.parametrize("cached", [True, False], ids=["fresh-cache", "cache-miss"])
def test_a_stage1_backend_is_loaded_by_stevedore_only_on_a_cache_miss(
    plugins: Plugins, monkeypatch: pytest.MonkeyPatch, cached: bool
) -> None:
    import sys

    import rkt.facade
    import rkt.plugins

    monkeypatch.setattr(rkt.facade, "entry_points_cached", lambda: cached)
    monkeypatch.delitem(sys.modules, "stevedore", raising=False)
    monkeypatch.delitem(sys.modules, "stevedore.driver", raising=False)
    backend = plugins.stage1_backend("fly")  # the built-in's real entry point
    assert backend.name == "fly"
    assert ("stevedore.driver" in sys.modules) is not cached

