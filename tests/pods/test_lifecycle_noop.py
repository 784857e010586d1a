"""Pod lifecycle through stage0 with the no-op stage1 from ``rkt_testing``.

The no-op backend is registered through ``rkt_register_stage1_backends``, as a
third-party plugin would do it, and its image is built with rkt's own stage1
image builder; no isolation is involved, so these tests are about stage0.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from rkt.cli.main import main
from rkt.facade import Plugins
from rkt.plugins import new_plugin_manager
from rkt.stage1 import build_stage1_image
from rkt_testing import AciBuilder, RktEnv
from rkt_testing.stage1 import NoopStage1, NoopStage1Plugin


@pytest.fixture
def noop_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Plugins]:
    plugins = Plugins(new_plugin_manager(autoload=False))
    plugins.pm.register(NoopStage1Plugin(), name="noop-stage1")
    images = tmp_path / "stage1-images"
    build_stage1_image(NoopStage1(), images / "stage1-noop.aci")
    monkeypatch.setenv("RKT_STAGE1_IMAGES_DIR", str(images))
    monkeypatch.setattr(Plugins, "_process_default", plugins)
    try:
        yield plugins
    finally:
        plugins.pm.unregister(name="noop-stage1")


def rkt(env: RktEnv, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        main([*env.global_flags(), *map(str, args)])
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_backend_registered_by_hook_runs_a_pod(
    noop_plugins: Plugins, rkt_env: RktEnv, aci_builder: AciBuilder,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert noop_plugins.stage1_backends.provider("noop") == "noop-stage1"
    image = aci_builder.build(busybox=True, exec_=["/bin/true"])
    code, out, err = rkt(rkt_env, "--insecure-options=image", "run",
                         "--stage1-name=coreos.com/rkt/stage1-noop", str(image), capsys=capsys)
    assert code == 0, err
    code, out, _ = rkt(rkt_env, "list", "--no-legend", "--full", capsys=capsys)
    uuid = out.split()[0]
    code, out, _ = rkt(rkt_env, "status", uuid[:8], capsys=capsys)
    assert "state=exited" in out and "app-hello=0" in out
    code, out, _ = rkt(rkt_env, "cat-manifest", uuid, capsys=capsys)
    manifest = json.loads(out)
    assert manifest["acKind"] == "PodManifest"
    assert manifest["apps"][0]["name"] == "hello"
    assert manifest["apps"][0]["image"]["id"].startswith("sha512-")


def test_prepared_pods_expire_and_aborted_prepares_are_collected(
    noop_plugins: Plugins, rkt_env: RktEnv, aci_builder: AciBuilder,
    capsys: pytest.CaptureFixture[str],
) -> None:
    image = aci_builder.build(busybox=True, exec_=["/bin/true"])
    code, out, err = rkt(rkt_env, "--insecure-options=image", "prepare", "--quiet",
                         "--stage1-name=coreos.com/rkt/stage1-noop", str(image), capsys=capsys)
    assert code == 0, err
    uuid = out.strip()
    assert (rkt_env.data_dir / "pods" / "prepared" / uuid).is_dir()
    # an aborted prepare: a dir in prepare/ that nobody holds
    (rkt_env.data_dir / "pods" / "prepare" / "deadbeef-0000-0000-0000-000000000000").mkdir()
    code, _, err = rkt(rkt_env, "gc", "--grace-period=0s", capsys=capsys)
    assert code == 0
    assert "Moving failed prepare" in err
    assert (rkt_env.data_dir / "pods" / "prepared" / uuid).is_dir()  # not expired yet
    code, _, err = rkt(rkt_env, "gc", "--expire-prepared=0s", "--grace-period=0s",
                       capsys=capsys)
    assert f'Moving expired prepared pod "{uuid}"' in err
    assert not any((rkt_env.data_dir / "pods").glob("*/*"))
