"""Meta-test: every hook spec is documented, typed, and exercised by some test."""

from __future__ import annotations

import inspect
from pathlib import Path

from rkt import hookspecs

TESTS = Path(__file__).parent.parent


def _specs() -> list[str]:
    return [name for name in dir(hookspecs) if name.startswith("rkt_")]


def test_every_hookspec_is_documented_and_typed() -> None:
    assert _specs()
    for name in _specs():
        function = getattr(hookspecs, name)
        doc = inspect.getdoc(function) or ""
        assert len(doc) > 80, f"{name} needs a real docstring"
        for parameter in inspect.signature(function).parameters:
            assert f":param {parameter}:" in doc, (name, parameter)
        signature = inspect.signature(function)
        assert signature.return_annotation in ("None", None), name
        for parameter in signature.parameters.values():
            assert parameter.annotation is not inspect.Parameter.empty, (name, parameter)


def test_every_hookspec_is_implemented_or_exercised_in_tests() -> None:
    corpus = "\n".join(p.read_text() for p in TESTS.rglob("*.py") if p.name != Path(__file__).name)
    repo = TESTS.parent
    plugins = "\n".join(p.read_text() for p in (repo / "plugins").rglob("*.py"))
    for name in _specs():
        assert name in corpus or name in plugins, f"{name} is neither implemented nor tested"


def test_hook_reference_in_docs_is_current() -> None:
    import runpy

    repo = TESTS.parent
    generator = runpy.run_path(str(repo / "scripts" / "gen_hook_docs.py"))
    assert (repo / "docs" / "hooks.md").read_text() == generator["render"](), (
        "docs/hooks.md is stale: python scripts/gen_hook_docs.py > docs/hooks.md"
    )
