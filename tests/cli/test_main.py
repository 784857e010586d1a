"""The command line's own behaviour: dispatch, prefixes, errors, start-up cost."""

from __future__ import annotations

import subprocess
import sys


def rkt(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rkt.cli", *args],
                          capture_output=True, text=True, check=False)


def test_version_names_rkt_and_appc_for_nomad() -> None:
    """Nomad's rkt driver (hashicorp/nomad-driver-rkt, rkt/driver.go at bcdecbf7)
    takes the first match of these two expressions and requires rkt >= 1.27.0."""
    import re

    from rkt import __version__

    result = rkt("version")
    assert result.returncode == 0
    found = re.search(r"rkt [vV]ersion[:]? (\d[.\d]+)", result.stdout)
    assert found is not None and found.group(1) == "1.30.0"
    assert tuple(int(n) for n in found.group(1).split(".")) >= (1, 27, 0)
    assert re.search(r"appc [vV]ersion[:]? (\d[.\d]+)", result.stdout).group(1) == "0.8.11"  # type: ignore[union-attr]
    # this project's own version, on a line of its own
    assert f"rkt-python Version: {__version__}\n" in result.stdout


def test_version_imports_no_plugin_and_no_heavy_library() -> None:
    code = (
        "import sys\n"
        "from rkt.cli.main import main\n"
        "try:\n    main(['version'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('pluggy', 'pydantic', 'stevedore', 'rkt_plugins', 'requests',"
        " 'rkt.store', 'rkt.facade', 'grpc', 'google.protobuf', 'rkt.apiservice')"
        " if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert "HEAVY []" in result.stdout


def test_pod_commands_never_import_the_api_service() -> None:
    """gRPC and protobuf are for ``rkt api-service`` alone: ``rkt run`` must not pay."""
    code = (
        "import sys\n"
        "import rkt.cli.run, rkt.cli.pod_cmds, rkt.pod.lifecycle, rkt.pod.lifetime\n"
        "import rkt.pod.status, rkt.cli.api_service\n"
        "print('GRPC', [m for m in ('grpc', 'google.protobuf', 'rkt.apiservice')"
        " if m in sys.modules])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert "GRPC []" in result.stdout


def test_unambiguous_prefix_works_and_ambiguous_is_a_one_line_error() -> None:
    assert rkt("vers").returncode == 0
    result = rkt("r")
    assert result.returncode == 254
    assert result.stderr.count("\n") == 1
    assert "ambiguous command" in result.stderr


def test_unknown_flag_is_one_line_without_usage_dump() -> None:
    result = rkt("version", "--bogus")
    assert result.returncode == 254
    assert result.stderr == "rkt: version: unrecognized arguments: --bogus\n"


def test_no_command_prints_help_and_exits_2() -> None:
    result = rkt()
    assert result.returncode == 2
    assert "Commands:" in result.stderr


def test_help_lists_commands() -> None:
    result = rkt("help")
    assert result.returncode == 0
    for command in ("fetch", "trust", "image", "run", "version"):
        assert f"  {command}" in result.stdout


def test_boolean_flags_take_explicit_values() -> None:
    assert rkt("--debug=false", "version").returncode == 0
    result = rkt("--debug=maybe", "version")
    assert result.returncode == 254
    assert "invalid boolean value 'maybe'" in result.stderr
