"""``stage1.d``'s ``options`` (an extension of rkt's stage1 kind): build options per
stage1 backend, which ``rkt install`` hands to the backend's ``configure``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rkt.config import Config
from rkt.errors import ConfigError
from rkt.stage1 import build_stage1_image


def write(directory: Path, name: str, document: dict[str, object]) -> Path:
    (directory / "stage1.d").mkdir(parents=True, exist_ok=True)
    path = directory / "stage1.d" / name
    path.write_text(json.dumps({"rktKind": "stage1", "rktVersion": "v1", **document}))
    return path


def test_options_merge_per_backend_and_key_and_show_in_rkt_config(tmp_path: Path) -> None:
    system, local = tmp_path / "system", tmp_path / "local"
    write(system, "kvm.json", {"options": {"kvm": {"kernel": "/boot/a", "other": "x"}}})
    write(local, "kvm.json", {"options": {"kvm": {"kernel": "/boot/b"}}})
    config = Config.load(system, local)
    assert config.stage1_options == {"kvm": {"kernel": "/boot/b", "other": "x"}}
    entries = config.to_json()["stage0"]
    assert entries == [{"rktVersion": "v1", "rktKind": "stage1",
                        "options": {"kvm": {"kernel": "/boot/b", "other": "x"}}}]


@pytest.mark.parametrize("options", [["kvm"], {"kvm": "kernel"}, {"kvm": {"kernel": 3}},
                                     {"kvm": {"kernel": ""}}])
def test_malformed_options_name_the_file(tmp_path: Path, options: object) -> None:
    path = write(tmp_path, "bad.json", {"options": options})
    with pytest.raises(ConfigError, match=str(path)):
        Config.load(tmp_path, tmp_path / "none")


def test_the_same_option_twice_in_one_directory_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "a.json", {"options": {"kvm": {"kernel": "/boot/a"}}})
    write(tmp_path, "b.json", {"options": {"kvm": {"kernel": "/boot/b"}}})
    with pytest.raises(ConfigError, match=r"options\.kvm\.kernel is already defined"):
        Config.load(tmp_path, tmp_path / "none")


def test_a_backend_without_configure_refuses_options(tmp_path: Path) -> None:
    from rkt_plugins.stage1_fly import FlyStage1

    out = tmp_path / "stage1-fly.aci"
    with pytest.raises(ConfigError, match=r'"fly" takes no options \(stage1.d: options.fly.x\)'):
        build_stage1_image(FlyStage1(), out, {"x": "y"})
    assert not out.exists()
    build_stage1_image(FlyStage1(), out, {})
    assert out.exists()
