"""``actool validate`` through the real command (acceptance 2 of issue 13).

Every example manifest of the spec is accepted; every file of ``invalid-manifests/``
(one per manifest rule of ``reference/appc-checklist.md`` sections 1, 3 and 4, listed
in its ``RULES.tsv``) is rejected with the rule it breaks named. The archive and
layout rules (checklist section 2) are checked on archives made here with tarfile,
and junk, truncated archives and missing files give one line and exit 1.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from rkt_testing import assert_one_line_error, run_tool
from rkt_testing.aci import build_aci, image_manifest
from rkt_testing.plugin import stage1_image_path

EXAMPLES = Path(__file__).resolve().parents[3] / "shared" / "appc-testdata" / "examples"
if not EXAMPLES.is_dir():
    EXAMPLES = Path("/work/shared/appc-testdata/examples")
CORPUS = Path(__file__).parent / "invalid-manifests"


def actool(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    return run_tool("actool", *args)


def _corpus() -> list[tuple[str, str, str]]:
    rows = []
    for line in (CORPUS / "RULES.tsv").read_text().splitlines():
        if line and not line.startswith("#"):
            name, checklist_rule, named_rule = line.split("\t")
            rows.append((name, checklist_rule, named_rule))
    return rows


def test_spec_examples_are_valid() -> None:
    examples = sorted(EXAMPLES.glob("*.json"))
    assert len(examples) == 3
    result = actool("validate", *examples)
    assert result.returncode == 0, result.stderr
    kinds = {"image.json": "image", "pod_runtime.json": "pod", "pod_template.json": "pod"}
    assert result.stdout.splitlines() == [f"{path}: valid {kinds[path.name]} manifest"
                                          for path in examples]
    assert result.stderr == ""


def test_corpus_covers_every_file_and_section() -> None:
    listed = {name for name, _, _ in _corpus()}
    assert listed == {path.name for path in CORPUS.glob("*.json")}
    assert {rule.split()[0] for _, rule, _ in _corpus()} == {"1", "3", "4"}


def test_every_invalid_manifest_is_rejected_naming_its_rule() -> None:
    rows = _corpus()
    result = actool("validate", *(CORPUS / name for name, _, _ in rows))
    assert result.returncode == 1
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == len(rows)
    for line, (name, checklist_rule, named_rule) in zip(lines, rows, strict=True):
        assert line.startswith(f"actool: {CORPUS / name}: "), line
        assert line.endswith(f"[rule: {named_rule}]"), (checklist_rule, line)


def test_one_invalid_file_among_valid_ones_fails_the_run(tmp_path: Path) -> None:
    image = build_aci(tmp_path / "ok.aci", manifest=image_manifest("example.com/ok"),
                      files={"a": "a"})
    result = actool("validate", image, CORPUS / "03-app-user-required.json",
                    EXAMPLES / "image.json")
    assert result.returncode == 1
    assert result.stdout.splitlines() == [f"{image}: valid appimage",
                                          f"{EXAMPLES / 'image.json'}: valid image manifest"]
    assert_one_line_error(result, "app.user: is required", tool="actool", stdout=True)


# -- images and layouts: checklist section 2 ---------------------------------------------
def _tar(path: Path, members: list[tuple[str, bytes | None]], *, compress: bool = True) -> Path:
    """``members``: (name, data) for files, (name/, None) for directories."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name.rstrip("/"))
            if data is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    path.write_bytes(gzip.compress(raw.getvalue()) if compress else raw.getvalue())
    return path


MANIFEST = json.dumps(image_manifest("example.com/app")).encode()


@pytest.mark.parametrize(("members", "fragment"), [
    ([("rootfs/", None), ("rootfs/a", b"a")], "no manifest"),
    ([("manifest", MANIFEST)], "no rootfs"),
    ([("manifest", MANIFEST), ("rootfs/", None), ("extra", b"x")],
     'unexpected top-level entry "extra"'),
    ([("manifest", MANIFEST), ("rootfs/", None), ("rootfs/a", b"1"), ("rootfs/a", b"2")],
     'duplicate entry "rootfs/a"'),
    ([("manifest/", None), ("rootfs/", None)], "manifest is not a regular file"),
    ([("manifest", MANIFEST), ("rootfs", b"file")], "rootfs is not a directory"),
], ids=["no-manifest", "no-rootfs", "extra-top-level", "duplicate", "manifest-dir",
        "rootfs-file"])
def test_archive_layout_rules(tmp_path: Path, members: list[tuple[str, bytes | None]],
                              fragment: str) -> None:
    image = _tar(tmp_path / "bad.aci", members)
    error = assert_one_line_error(actool("validate", image), fragment, tool="actool",
                                  status=1)
    assert error.endswith("[rule: aci.md:9-27 image archive]")


def test_manifest_inside_an_image_is_checked(tmp_path: Path) -> None:
    manifest = image_manifest("example.com/app")
    manifest["labels"].append({"name": "os", "value": "plan9"})
    image = _tar(tmp_path / "bad.aci", [("manifest", json.dumps(manifest).encode()),
                                        ("rootfs/", None)])
    error = assert_one_line_error(actool("validate", image), "labels[3].name", tool="actool")
    assert error.endswith("[rule: aci.md:226-228 labels]")


def test_layouts(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    (layout / "rootfs").mkdir(parents=True)
    (layout / "manifest").write_bytes(MANIFEST)
    assert actool("validate", layout).stdout == f"{layout}: valid layout\n"
    (layout / "notes.txt").write_text("x")
    error = assert_one_line_error(actool("validate", layout), '"notes.txt"', tool="actool")
    assert error.endswith("[rule: aci.md:9-16 image layout]")
    (layout / "notes.txt").unlink()
    (layout / "rootfs").rmdir()
    assert_one_line_error(actool("validate", layout), "no rootfs directory", tool="actool")


def test_bad_files(tmp_path: Path) -> None:
    image = build_aci(tmp_path / "ok.aci", manifest=image_manifest("example.com/ok"),
                      busybox=True)
    truncated = tmp_path / "truncated.aci"
    truncated.write_bytes(image.read_bytes()[: image.stat().st_size // 2])
    assert_one_line_error(actool("validate", truncated), "truncated", tool="actool", status=1)
    plain = build_aci(tmp_path / "plain.aci", manifest=image_manifest("example.com/ok"),
                      files={"a": "a" * 5000}, compression="none")
    cut = tmp_path / "cut.aci"
    cut.write_bytes(plain.read_bytes()[:3000])
    assert_one_line_error(actool("validate", cut), "truncated tar archive", tool="actool")
    junk = tmp_path / "junk.aci"
    junk.write_bytes(os.urandom(4096).replace(b"{", b"x").replace(b"\x1f", b"x"))
    assert_one_line_error(actool("validate", junk), "neither an image", tool="actool",
                          status=1)
    empty = tmp_path / "empty.json"
    empty.write_bytes(b"")
    assert_one_line_error(actool("validate", empty), "empty file", tool="actool")
    assert_one_line_error(actool("validate", tmp_path / "missing.aci"), "no such file",
                          tool="actool", status=1)
    # a forced type that does not fit
    assert_one_line_error(actool("validate", "--type=layout", image), "not a directory",
                          tool="actool")
    assert_one_line_error(actool("validate", "--type=manifest", image), "not valid",
                          tool="actool")
    assert_one_line_error(actool("validate", "--type=image", image), "invalid choice",
                          tool="actool", status=1)


def test_rkt_stage1_images_are_valid_images() -> None:
    """What ``rkt install`` builds passes the publisher's check (docs/stage1.md)."""
    directory = stage1_image_path("nspawn").parent
    images = sorted(directory.glob("stage1-*.aci"))
    if not images:
        pytest.skip(f"no stage1 images in {directory} (run rkt install)")
    result = actool("validate", "--type=appimage", *images)
    assert result.returncode == 0, result.stderr
    for image in images:
        manifest = json.loads(actool("cat-manifest", image).stdout)
        names = {a["name"] for a in manifest["annotations"]}
        assert {"coreos.com/rkt/stage1/backend",
                "coreos.com/rkt/stage1/interface-version"} <= names
