from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from aci_tarbuild import Sandbox, snapshot


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    top = tmp_path / "box"  # the rest of tmp_path is free for archives and sources
    outside = top / "outside"
    (outside / "dir").mkdir(parents=True)
    canary = outside / "canary"
    canary.write_bytes(b"canary data\n")
    canary.chmod(0o640)
    (outside / "dir" / "inner").write_bytes(b"inner\n")
    (outside / "dir").chmod(0o750)
    for path in (canary, outside / "dir" / "inner", outside / "dir", outside):
        os.utime(path, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    dest = top / "dest"
    dest.mkdir()
    box = Sandbox(top, dest, outside, snapshot(top, dest))
    yield box
    box.check_outside()
