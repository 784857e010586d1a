"""``rkt image gc`` and ``rkt image verify`` reach the store only through its protocol.

The store here is a third-party one registered through ``rkt_register_stores``
and chosen by name in ``paths.d``: it keeps its images in a real ``CasStore`` (it
is not one) and records the upkeep calls rkt makes, so the test sees that nothing
in the commands depends on the built-in store's class.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator
from pathlib import Path

import pytest

from rkt.api import ImageError, StoreRegistry, hookimpl
from rkt.cli.main import main
from rkt.facade import Plugins
from rkt.plugins import new_plugin_manager
from rkt.store.cas import CasStore
from rkt_testing import AciBuilder, RktEnv


class RecordingStore:
    """A store of its own: everything but upkeep is delegated to a private CAS store."""

    def __init__(self, data_dir: Path, broken: set[str]) -> None:
        self._cas = CasStore(data_dir)
        self.data_dir = data_dir
        self.tmp_dir = self._cas.tmp_dir
        self.calls: list[tuple[str, object]] = []
        #: image IDs whose verification fails
        self.broken = broken

    def __getattr__(self, name: str) -> object:
        return getattr(self._cas, name)

    def remove_unused_trees(self, in_use: Collection[str]) -> list[str]:
        self.calls.append(("remove_unused_trees", sorted(in_use)))
        return ["tree-of-our-own"]

    def sweep_tmp(self, older_than: float = 24 * 3600) -> None:
        self.calls.append(("sweep_tmp", older_than))

    def verify(self, image_id: str, *, trees_in_use: Collection[str] = ()) -> None:
        del trees_in_use
        self.calls.append(("verify", image_id))
        if image_id in self.broken:
            raise ImageError(f'image "{image_id}": broken in our own way')


class RecordingStorePlugin:
    def __init__(self) -> None:
        self.stores: list[RecordingStore] = []
        self.broken: set[str] = set()

    def open(self, data_dir: Path) -> RecordingStore:
        store = RecordingStore(data_dir, self.broken)
        self.stores.append(store)
        return store

    @hookimpl
    def rkt_register_stores(self, registry: StoreRegistry) -> None:
        registry.add("recording", self.open)


@pytest.fixture
def own_store(rkt_env: RktEnv, monkeypatch: pytest.MonkeyPatch
              ) -> Iterator[RecordingStorePlugin]:
    plugin = RecordingStorePlugin()
    plugins = Plugins(new_plugin_manager(autoload=False))
    plugins.pm.register(plugin, name="recording-store")
    monkeypatch.setattr(Plugins, "_process_default", plugins)
    paths_d = rkt_env.local_config / "paths.d"
    paths_d.mkdir(parents=True, exist_ok=True)
    (paths_d / "store.json").write_text(
        json.dumps({"rktKind": "paths", "rktVersion": "v1", "store": "recording"}))
    try:
        yield plugin
    finally:
        plugins.pm.unregister(name="recording-store")


def rkt(env: RktEnv, *args: object, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        main([*env.global_flags(), *map(str, args)])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_image_gc_and_verify_use_the_store_protocol(
    own_store: RecordingStorePlugin, rkt_env: RktEnv, aci_builder: AciBuilder,
    capsys: pytest.CaptureFixture[str],
) -> None:
    image = aci_builder.build()
    code, out, err = rkt(rkt_env, "--insecure-options=image", "fetch", image, capsys=capsys)
    assert code == 0, err
    image_id = out.strip()
    # a pod that still records a tree: its ID is passed on as in use
    pod = rkt_env.data_dir / "pods" / "exited-garbage" / "0a0a0a0a-0000-4000-8000-000000000000"
    pod.mkdir(parents=True)
    (pod / "stage1TreeStoreID").write_text("deps-sha512-in-use\n")

    code, out, err = rkt(rkt_env, "image", "gc", "--grace-period=0s", capsys=capsys)
    assert code == 0, err
    store = own_store.stores[-1]
    assert store.calls == [("remove_unused_trees", ["deps-sha512-in-use"]),
                           ("sweep_tmp", 24 * 3600)]
    removed_tree, removed_image = out.splitlines()
    assert removed_tree == 'removed treestore "tree-of-our-own"'
    assert removed_image.startswith(f'successfully removed aci for image: "{image_id}')
    assert removed_image.endswith('" ("example.com/hello")')

    code, out, err = rkt(rkt_env, "--insecure-options=image", "fetch", image, capsys=capsys)
    assert code == 0, err
    code, out, err = rkt(rkt_env, "image", "verify", "example.com/hello", capsys=capsys)
    assert code == 0, err
    full_id = own_store.stores[-1].calls[-1][1]
    assert own_store.stores[-1].calls == [("verify", full_id)]
    assert out == f'successfully verified checksum for image: "{full_id}" ("example.com/hello")\n'

    own_store.broken.add(str(full_id))
    code, out, err = rkt(rkt_env, "image", "verify", "example.com/hello", capsys=capsys)
    assert code == 254
    assert err == f'rkt: image "{full_id}": broken in our own way\n'
