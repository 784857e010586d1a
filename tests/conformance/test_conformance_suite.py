"""``python -m rkt.conformance`` against rkt's own stage1s, as a stage1 author runs it.

The suite is a program (it needs no pytest), so these tests run it as one, for
nspawn, fly and kvm (about 15 s each for nspawn and fly; kvm boots a VM per
pod, about 2 minutes under TCG: slow), and check its exit status
and that its table says exactly what each stage1 claims: every check PASS, but
what the backend declares unsupported (``unsupported``, ``network_modes``). The
checks themselves are in ``rkt.conformance.checks``; the tests in ``tests/pods``
cover the same behaviour in more depth.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rkt.conformance.checks import CHECKS
from rkt.conformance.suite import Claims, read_claims
from rkt.errors import Stage1Error
from rkt.stage1 import STAGE1_FEATURES, unsupported_features
from rkt_testing.plugin import (
    needs_kvm_stage1,
    needs_oci_stage1,
    needs_root,
    stage1_image_path,
)


def conformance(*args: str, timeout: float = 600,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rkt.conformance", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})},
                          stdin=subprocess.DEVNULL)


def table_rows(stdout: str) -> dict[str, str]:
    """The table's rows as {check: outcome}, the outcome without its reason."""
    lines = stdout.splitlines()
    assert lines[0].split() == ["CHECK", "RESULT"], stdout
    rows = {}
    for line in lines[1:-1]:
        name, outcome = line.split(None, 1)
        rows[name] = outcome.partition(":")[0]
    return rows


def expected_rows(claims: Claims) -> dict[str, str]:
    return {check.name: "PASS" if claims.refusal(check) is None else "NOT SUPPORTED"
            for check in CHECKS}


@needs_root
@pytest.mark.parametrize("flavor", [
    pytest.param("nspawn", marks=pytest.mark.skipif(
        shutil.which("systemd-nspawn") is None or not stage1_image_path("nspawn").exists(),
        reason="needs systemd-nspawn and the nspawn stage1 image (rkt install)")),
    pytest.param("fly", marks=pytest.mark.skipif(
        not stage1_image_path("fly").exists(), reason="needs the fly stage1 image")),
    pytest.param("kvm", marks=[needs_kvm_stage1, pytest.mark.slow, pytest.mark.timeout(1200)]),
    pytest.param("oci", marks=needs_oci_stage1),
])
def test_every_builtin_stage1_passes_all_it_claims(flavor: str) -> None:
    name = f"coreos.com/rkt/stage1-{flavor}"
    result = conformance(name, timeout=1100)
    assert result.returncode == 0, result.stdout + result.stderr
    assert table_rows(result.stdout) == expected_rows(read_claims(name)), result.stdout
    assert result.stdout.splitlines()[-1].startswith(f"{name}: ")
    assert " 0 failed" in result.stdout.splitlines()[-1]


@needs_root
@pytest.mark.slow
def test_a_third_party_stage1_runs_the_suite_too(example_stage1_path: Path,
                                                 tmp_path: Path) -> None:
    """The example distribution (tests/dists/rkt-example-stage1), installed and its
    image built by ``rkt install`` as a stranger's would be."""
    from rkt_testing import RktEnv, pythonpath_with

    extra = {**pythonpath_with(example_stage1_path),
             "RKT_STAGE1_IMAGES_DIR": str(tmp_path / "stage1-images")}
    installer = RktEnv(tmp_path / "install")
    built = installer.run("install", env=extra)
    assert built.returncode == 0, built.stderr
    result = conformance("coreos.com/rkt/stage1-unshare", env=extra)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = table_rows(result.stdout)
    assert rows["ctrl-bracket"] == rows["pod-dies-with-rkt"] == rows["multi-app"] == "PASS"
    assert rows["net-contained"] == "NOT SUPPORTED"


@needs_root
@pytest.mark.slow
def test_a_failing_check_is_a_row_with_its_reason_and_exit_1(tmp_path: Path) -> None:
    """A stage1 whose declaration is wrong both ways: fly under another name that
    claims several apps, and declares capabilities unsupported that it has (and so
    does not refuse; stage0 cannot tell a pod's capability set from a default one,
    so it does not refuse them for the stage1 either, as it does a declared
    read-only root). (Written here, not in tests/dists: it imports rkt's own fly
    backend, which a third party would not.)"""
    from rkt_testing import RktEnv, pythonpath_with

    site = tmp_path / "site"
    (site / "flyall-0.1.dist-info").mkdir(parents=True)
    (site / "flyall-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: flyall\nVersion: 0.1\n")
    (site / "flyall-0.1.dist-info" / "entry_points.txt").write_text(
        "[rkt.stage1]\nflyall = flyall:FlyAll\n")
    (site / "flyall.py").write_text(
        "from rkt_plugins.stage1_fly import FlyStage1\n\n\n"
        "class FlyAll(FlyStage1):\n    name = 'flyall'\n"
        "    unsupported = {'capabilities': 'pretend'}\n")
    extra = {**pythonpath_with(site), "RKT_STAGE1_IMAGES_DIR": str(tmp_path / "images")}
    built = RktEnv(tmp_path / "install").run("install", env=extra)
    assert built.returncode == 0, built.stderr
    result = conformance("coreos.com/rkt/stage1-flyall", "--check=exit-code",
                         "--check=multi-app", "--check=capabilities-remove", env=extra)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        "CHECK                RESULT",
        "exit-code            PASS",
        "multi-app            FAIL: rkt exited 254, expected 0: rkt: the fly stage1 runs "
        "exactly one app per pod",
        "capabilities-remove  FAIL: declared unsupported (pretend), but rkt accepted a pod "
        "using it; a stage1 must refuse what it cannot do",
        "coreos.com/rkt/stage1-flyall: 1 passed, 2 failed, 0 not supported",
    ]


def test_what_the_builtin_stage1s_declare() -> None:
    """The table each prints (docs/stage1.md) follows from these declarations."""
    fly = read_claims("coreos.com/rkt/stage1-fly")
    assert set(fly.unsupported) == {"multi-app", "hostname"}
    assert fly.network_modes == frozenset({"host"})
    nspawn = read_claims("coreos.com/rkt/stage1-nspawn")
    assert nspawn.unsupported == {}
    assert nspawn.everyday_net() == "host"
    kvm = read_claims("coreos.com/rkt/stage1-kvm")
    assert "host" not in kvm.network_modes and kvm.everyday_net() == "none"


def test_the_tables_in_the_docs_follow_the_declarations() -> None:
    """docs/stage1.md pastes what each built-in stage1 prints: every claimed check
    passes, every declared one is not supported with the declared reason."""
    from rkt.conformance.suite import NOT_SUPPORTED, PASS, Result, summary, table

    docs = (Path(__file__).parents[2] / "docs" / "stage1.md").read_text()
    for flavor in ("nspawn", "fly", "kvm"):
        name = f"coreos.com/rkt/stage1-{flavor}"
        claims = read_claims(name)
        results = []
        for check in CHECKS:
            reason = claims.refusal(check)
            results.append(Result(check.name, PASS) if reason is None
                           else Result(check.name, NOT_SUPPORTED, reason))
        printed = f"```\n{table(results)}\n{summary(name, results)}\n```"
        assert printed in docs, f"docs/stage1.md lacks the {flavor} table:\n{printed}"


def test_a_declaration_names_known_features_with_a_reason() -> None:
    class Unknown:
        name = "odd"
        unsupported = {"teleport": "not yet"}

    class NoReason:
        name = "terse"
        unsupported = {"enter": " "}

    with pytest.raises(Stage1Error, match='declares unknown feature "teleport" unsupported'):
        unsupported_features(Unknown)
    with pytest.raises(Stage1Error, match='gives no reason why "enter"'):
        unsupported_features(NoReason)
    assert unsupported_features(object()) == {}
    # every feature a check belongs to is one a stage1 can declare, or a network mode
    assert {c.feature for c in CHECKS if c.feature and not c.feature.startswith("net-")} \
        == set(STAGE1_FEATURES)


def test_an_unknown_stage1_is_one_line_and_exit_2() -> None:
    result = conformance("example.com/stage1-nowhere")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        'rkt conformance: no stage1 backend "nowhere" is installed (for '
        'example.com/stage1-nowhere; is its package installed in this Python?)']


@needs_root
def test_without_busybox_the_suite_says_so(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    from rkt.conformance import world
    from rkt.errors import RktError

    monkeypatch.setattr(world, "BUSYBOX", tmp_path / "no-busybox")
    with pytest.raises(RktError, match=r"no-busybox is missing: .*busybox-static"):
        world.write_busybox_aci(tmp_path / "x.aci", b"{}")
