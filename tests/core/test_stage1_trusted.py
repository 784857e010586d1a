"""A stage1 image from the stage1 images directory is imported once and then found by
a record of its file (issue 14): a pod start neither hashes nor re-imports it, and a
file that is not the one recorded is imported again."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import rkt.fetching
from rkt.context import Runtime
from rkt.stage1 import build_stage1_image, import_trusted_stage1
from rkt_testing.stage1 import NoopStage1


def test_an_unchanged_image_is_not_imported_again_but_a_replaced_one_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    aci = tmp_path / "images" / "stage1-noop.aci"
    build_stage1_image(NoopStage1(), aci)
    runtime = Runtime(data_dir_override=tmp_path / "data", local_config=tmp_path / "etc",
                      system_config=tmp_path / "lib")
    imports: list[Path] = []
    real_import = rkt.fetching.import_fetched

    def counting(*args: object, **kwargs: object) -> object:
        imports.append(args[1].path)  # type: ignore[attr-defined]
        return real_import(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(rkt.fetching, "import_fetched", counting)
    first = import_trusted_stage1(runtime, aci)
    assert import_trusted_stage1(runtime, aci).id == first.id
    assert imports == [aci]
    # the same bytes under a new inode, size and mtime kept (cp -p, a package manager's
    # rename over it): not the file recorded, so it is read again
    before = aci.stat()
    shutil.copy2(aci, aci.with_suffix(".new"))
    os.replace(aci.with_suffix(".new"), aci)
    os.utime(aci, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (aci.stat().st_size, aci.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert import_trusted_stage1(runtime, aci).id == first.id
    assert imports == [aci, aci]
