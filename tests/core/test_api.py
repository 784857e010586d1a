"""The plugin authors' surface (``rkt.api``) and the layering rules around it."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import rkt.api

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "core" / "rkt"
PLUGIN_TREES = [ROOT / "plugins", ROOT / "stage1_nspawn", ROOT / "stage1_kvm",
                ROOT / "stage1_oci", ROOT / "tests" / "dists"]


def test_every_public_name_resolves_to_its_home_module() -> None:
    assert sorted(rkt.api.__all__) == sorted(rkt.api._HOMES)
    for name in rkt.api.__all__:
        value = getattr(rkt.api, name)
        home = importlib.import_module(rkt.api._HOMES[name])
        assert value is getattr(home, name), name


def test_type_checking_imports_match_the_public_names() -> None:
    # mypy sees the TYPE_CHECKING imports, users see __getattr__: they must agree
    tree = ast.parse(Path(rkt.api.__file__).read_text())
    imported: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rkt."):
            for alias in node.names:
                imported[alias.name] = node.module
    assert imported == rkt.api._HOMES


def test_importing_the_api_imports_none_of_its_names() -> None:
    code = "import sys, rkt.api; print(sorted(m for m in sys.modules if m.startswith('rkt')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "['rkt', 'rkt.api']"


def _sources(tree: Path) -> list[Path]:
    """The Python files of a source tree, without pip's build/ leftovers."""
    return [path for path in tree.rglob("*.py") if "build" not in path.relative_to(tree).parts]


def _imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) for every ``from X import name`` and ``import X`` in a file."""
    found: list[tuple[str, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.extend((node.module, alias.name) for alias in node.names)
        elif isinstance(node, ast.Import):
            found.extend((alias.name, "") for alias in node.names)
    return found


def test_nothing_outside_the_cli_imports_the_cli() -> None:
    offenders = []
    for tree in [CORE, *PLUGIN_TREES]:
        for path in _sources(tree):
            if path.is_relative_to(CORE / "cli"):
                continue
            offenders += [f"{path.relative_to(ROOT)}: {module}"
                          for module, _ in _imports(path)
                          if module == "rkt.cli" or module.startswith("rkt.cli.")]
    assert offenders == []


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_plugins_import_no_private_core_names() -> None:
    offenders = []
    for tree in PLUGIN_TREES:
        for path in _sources(tree):
            offenders += [
                f"{path.relative_to(ROOT)}: {module}.{name}"
                for module, name in _imports(path)
                if (module == "rkt" or module.startswith("rkt."))
                and any(_private(part) for part in [*module.split("."), name])
            ]
    assert offenders == []


def test_stage1_backends_packaged_as_third_parties_use_only_the_api() -> None:
    """stage1_nspawn, stage1_kvm, stage1_oci and the test distributions are packaged
    exactly as a third party would package them: from the core they import rkt.api and
    nothing else."""
    offenders = []
    for tree in [ROOT / "stage1_nspawn", ROOT / "stage1_kvm", ROOT / "stage1_oci",
                 ROOT / "tests" / "dists"]:
        for path in _sources(tree):
            offenders += [f"{path.relative_to(ROOT)}: {module}"
                          for module, _ in _imports(path)
                          if module.startswith("rkt.") and module != "rkt.api"]
    assert offenders == []
