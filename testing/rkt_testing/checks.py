"""Assertions on what the real ``rkt`` command printed.

rkt's contract for failures (``docs/architecture.md``, issue 8): an exit status
other than 0, nothing half-written on stdout, no traceback, and one line
``rkt: <what went wrong>`` last on stderr (``rkt: warning: ...`` lines and progress
may come before it). Every test of a refusal checks that contract the same way.
"""

from __future__ import annotations

import subprocess


def assert_one_line_error(
    result: subprocess.CompletedProcess[str],
    *fragments: str,
    message: str | None = None,
    status: int | None = None,
    stdout: bool = False,
    tool: str = "rkt",
) -> str:
    """Assert that ``result`` is a clean rkt failure and return its error line.

    The last stderr line starts with ``rkt: `` and holds every one of ``fragments``
    (or equals ``rkt: MESSAGE``); it is not an "internal error", stderr holds no
    traceback, and stdout is empty unless ``stdout`` says output may precede the
    failure. ``status`` pins the exit status; otherwise any non-zero one will do.
    ``tool`` is the command's name for the other tools that keep this contract
    (``actool``, ``docker2aci``).
    """
    if status is None:
        assert result.returncode != 0, f"exited 0\nstdout: {result.stdout}"
    else:
        assert result.returncode == status, (
            f"exited {result.returncode}, not {status}\nstderr: {result.stderr}")
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines, "no error message on stderr"
    error = lines[-1]
    assert error.startswith(f"{tool}: ") and not error.startswith(f"{tool}: warning"), \
        result.stderr
    assert not error.startswith(f"{tool}: internal error"), result.stderr
    if message is not None:
        assert error == f"{tool}: {message}", error
    for fragment in fragments:
        assert fragment in error, error
    if not stdout:
        assert result.stdout == "", f"stdout: {result.stdout}"
    return error
