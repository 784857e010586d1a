"""rkt-testing, the test support distribution: rkt itself must not need it.

Running rkt never needs pytest (issue 8): a machine with rkt and no test tools
runs ``make demo``. These tests keep it so from inside the suite, where pytest is
always installed, by importing every module with pytest made unimportable.
"""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import distribution
from pathlib import Path

import pytest

from rkt_testing import assert_one_line_error, wait_for_file

# Imports every module below the given packages with ``import pytest`` failing.
_IMPORT_ALL_WITHOUT_PYTEST = """
import importlib, pkgutil, sys
sys.modules["pytest"] = None  # any `import pytest` now raises ImportError
skip = set(sys.argv[2:])
package = importlib.import_module(sys.argv[1])
for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
    # a __main__ module runs the program when imported
    if module.name not in skip and not module.name.endswith(".__main__"):
        importlib.import_module(module.name)
"""


def test_rkt_registers_no_pytest_plugin() -> None:
    groups = {entry_point.group for entry_point in distribution("rkt").entry_points}
    assert "pytest11" not in groups
    plugins = [ep.value for ep in distribution("rkt-testing").entry_points
               if ep.group == "pytest11"]
    assert plugins == ["rkt_testing.plugin"]


@pytest.mark.parametrize(("package", "skip"), [
    ("rkt", ()),
    ("rkt_plugins", ()),
    # only the pytest plugin may import pytest: scripts use the rest
    ("rkt_testing", ("rkt_testing.plugin",)),
])
def test_modules_import_without_pytest(package: str, skip: tuple[str, ...]) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL_WITHOUT_PYTEST, package, *skip],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr


def _result(status: int, stderr: str, stdout: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.CompletedProcess(["rkt"], status, stdout, stderr)


def test_one_line_error_returns_the_error_line() -> None:
    result = _result(254, "rkt: warning: something odd\nrkt: image not found\n")
    assert assert_one_line_error(result, "not found", status=254) == "rkt: image not found"
    assert_one_line_error(result, message="image not found")


@pytest.mark.parametrize("result", [
    _result(0, ""),  # success is no error
    _result(254, "Traceback (most recent call last):\n  ...\nrkt: boom\n"),
    _result(254, "rkt: internal error: KeyError: 'x'\n"),
    _result(254, "rkt: not found\n", stdout="half an answer\n"),
    _result(1, "rkt: not found\n"),  # not the status asked for
    _result(254, "rkt: something else\n"),  # not the fragment asked for
])
def test_one_line_error_refuses(result: subprocess.CompletedProcess[str]) -> None:
    with pytest.raises(AssertionError):
        assert_one_line_error(result, "not found", status=254)


def test_wait_for_file_waits_for_content_not_just_the_name(tmp_path: Path) -> None:
    """A writer creates the file before it writes (``echo x > f``, ``write_text``):
    an empty file has not appeared yet."""
    path = tmp_path / "out"
    path.touch()
    with pytest.raises(AssertionError, match="never appeared"):
        wait_for_file(path, timeout=0.2)
    writer = subprocess.Popen(["/bin/sh", "-c", f"sleep 0.2; echo done > {path}"])
    assert wait_for_file(path, timeout=10).read_text() == "done\n"
    writer.wait()
