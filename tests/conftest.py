"""Shared fixtures. The general ones (rkt_env, aci_builder, gpg, signing_key) come
from rkt's own pytest plugin, ``rkt_testing``, which plugin authors use too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DISTS = Path(__file__).parent / "dists"


def _install_dist(name: str, target: Path) -> Path:
    # A real installation (wheel build + dist-info with entry points) into a private
    # directory, so only the tests that put it on PYTHONPATH see the plugin.
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "--target", str(target), str(DISTS / name)],
        check=True, capture_output=True,
    )
    return target


@pytest.fixture(scope="session")
def demo_plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _install_dist("rkt-demo-plugin", tmp_path_factory.mktemp("demo-plugin"))


@pytest.fixture(scope="session")
def broken_plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _install_dist("rkt-broken-plugin", tmp_path_factory.mktemp("broken-plugin"))




@pytest.fixture(scope="session")
def example_stage1_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _install_dist("rkt-example-stage1", tmp_path_factory.mktemp("example-stage1"))


@pytest.fixture(scope="session")
def misbehaving_stage1_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _install_dist("rkt-misbehaving-stage1", tmp_path_factory.mktemp("misbehaving-stage1"))
