"""Opening the store index while other processes open the same new database."""

from __future__ import annotations

import sqlite3

import pytest

from rkt.store import index


class _RacingConnection:
    """Stands in for a connection whose WAL switch meets other processes' switches.

    SQLite answers "database is locked" at once, without waiting out the busy
    timeout, when two connections escalate their locks on a new database at the
    same moment (a dozen ``rkt fetch`` on a fresh data dir, under load). That
    interleaving cannot be produced on demand, so this fakes its answers.
    """

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def execute(self, statement: str) -> None:
        assert statement == "PRAGMA journal_mode=WAL"
        self.calls += 1
        if self.calls <= self.failures:
            raise sqlite3.OperationalError("database is locked")


def test_the_wal_switch_is_retried_while_the_new_database_is_locked(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index, "_WAL_RETRY_DELAYS", (0.0,) * 5)
    racing = _RacingConnection(failures=3)
    index._use_wal(racing)  # type: ignore[arg-type]
    assert racing.calls == 4


def test_a_database_locked_for_good_is_still_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index, "_WAL_RETRY_DELAYS", (0.0,) * 5)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        index._use_wal(_RacingConnection(failures=100))  # type: ignore[arg-type]


def test_other_errors_are_not_retried() -> None:
    class Broken:
        calls = 0

        def execute(self, statement: str) -> None:
            Broken.calls += 1
            raise sqlite3.OperationalError("disk I/O error")

    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        index._use_wal(Broken())  # type: ignore[arg-type]
    assert Broken.calls == 1
