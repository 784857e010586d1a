"""The store's index: one SQLite database of images and remotes.

SQLite gives transactions and safe concurrent access from several ``rkt``
processes (WAL mode, a generous busy timeout), which rkt's ql database needed
an extra directory lock for.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rkt.datadir import FILE_MODE, private_dir
from rkt.errors import StoreError
from rkt.store import ImageInfo

SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    labels      TEXT NOT NULL,
    import_time REAL NOT NULL,
    last_used   REAL NOT NULL,
    size        INTEGER NOT NULL,
    tree_size   INTEGER NOT NULL DEFAULT 0,
    latest      INTEGER NOT NULL DEFAULT 0,
    verification TEXT NOT NULL DEFAULT 'none',
    signer      TEXT
);
CREATE INDEX IF NOT EXISTS images_by_name ON images(name);
CREATE TABLE IF NOT EXISTS remotes (
    url           TEXT PRIMARY KEY,
    signature_url TEXT,
    etag          TEXT,
    image_id      TEXT NOT NULL,
    max_age       INTEGER NOT NULL DEFAULT 0,
    download_time REAL NOT NULL
);
"""

#: version 1 -> 2: how each image was verified (images of version 1 count as unverified)
_MIGRATE_TO_2 = """
ALTER TABLE images ADD COLUMN verification TEXT NOT NULL DEFAULT 'none';
ALTER TABLE images ADD COLUMN signer TEXT;
"""


@dataclass(frozen=True)
class RemoteEntry:
    """What the remote cache remembers about one URL (rkt's ``remote`` row)."""

    url: str
    image_id: str
    etag: str | None
    max_age: int
    download_time: float
    signature_url: str | None = None

    def fresh(self, now: float | None = None) -> bool:
        """Still within its Cache-Control max-age: usable without asking the server."""
        if self.max_age <= 0:
            return False
        return (time.time() if now is None else now) < self.download_time + self.max_age


_COLUMNS = ("id, name, labels, import_time, last_used, size, tree_size, latest,"
            " verification, signer")


def _row_to_info(
    row: tuple[str, str, str, float, float, int, int, int, str, str | None],
) -> ImageInfo:
    return ImageInfo(
        id=row[0], name=row[1], labels=json.loads(row[2]), import_time=row[3],
        last_used=row[4], size=row[5], tree_size=row[6], latest=bool(row[7]),
        verification=row[8], signer=row[9],
    )


#: waits between attempts to switch a new index to WAL mode (about 10 s in all)
_WAL_RETRY_DELAYS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0)


def _use_wal(db: sqlite3.Connection) -> None:
    """``PRAGMA journal_mode=WAL``, retried while the database is locked.

    The switch needs the database to itself, and SQLite reports "database is
    locked" at once, without waiting out the busy timeout, when other
    processes open the same new store at that moment (a dozen ``rkt fetch``
    started together on a fresh data dir). Once switched the mode is kept in
    the file, and the pragma succeeds the first time.
    """
    for delay in _WAL_RETRY_DELAYS:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise
            time.sleep(delay)
    db.execute("PRAGMA journal_mode=WAL")


class ImageIndex:
    def __init__(self, path: Path) -> None:
        private_dir(path.parent)
        try:
            if not path.exists():
                # SQLite gives its -wal and -shm files the database file's mode
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, FILE_MODE))
            self._db = sqlite3.connect(path, timeout=60, isolation_level=None)
            _use_wal(self._db)
            self._db.execute("PRAGMA synchronous=NORMAL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                # executescript commits on its own, so the script is its own transaction
                self._db.executescript(
                    f"BEGIN IMMEDIATE;{_SCHEMA}PRAGMA user_version={SCHEMA_VERSION};COMMIT;"
                )
            elif version == 1:
                self._db.executescript(
                    f"BEGIN IMMEDIATE;{_MIGRATE_TO_2}PRAGMA user_version=2;COMMIT;"
                )
            elif version > SCHEMA_VERSION:
                raise StoreError(
                    f"store index {path} has schema version {version}, newer than this rkt"
                )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store index {path}: {exc}") from exc

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"store index error: {exc}") from exc

    def get(self, image_id: str) -> ImageInfo | None:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM images WHERE id = ?", (image_id,))
        found = row.fetchone()
        return _row_to_info(found) if found else None

    def with_prefix(self, prefix: str) -> list[ImageInfo]:
        # Keys are lowercase hex: escape nothing, but never let a "%" or "_" through.
        if any(ch in prefix for ch in "%_"):
            return []
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM images WHERE id LIKE ? ORDER BY id", (prefix + "%",)
        )
        return [_row_to_info(r) for r in rows.fetchall()]

    def by_name(self, name: str) -> list[ImageInfo]:
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM images WHERE name = ? ORDER BY import_time", (name,)
        )
        return [_row_to_info(r) for r in rows.fetchall()]

    def all(self) -> list[ImageInfo]:
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM images ORDER BY import_time, id")
        return [_row_to_info(r) for r in rows.fetchall()]

    def upsert(self, info: ImageInfo) -> ImageInfo:
        """Insert the image, or refresh an existing row keeping its import time."""
        with self.transaction() as db:
            existing = self.get(info.id)
            import_time = existing.import_time if existing else info.import_time
            db.execute(
                f"INSERT OR REPLACE INTO images ({_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    info.id, info.name, json.dumps(info.labels, sort_keys=True), import_time,
                    info.last_used, info.size, existing.tree_size if existing else 0,
                    int(info.latest or (existing.latest if existing else False)),
                    # an unverified import never erases how an earlier one was verified
                    existing.verification if existing else "none",
                    existing.signer if existing else None,
                ),
            )
        stored = self.get(info.id)
        assert stored is not None
        return stored

    def delete(self, image_id: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM images WHERE id = ?", (image_id,))
            db.execute("DELETE FROM remotes WHERE image_id = ?", (image_id,))

    def get_remote(self, url: str) -> tuple[str | None, str] | None:
        row = self._db.execute(
            "SELECT etag, image_id FROM remotes WHERE url = ?", (url,)
        ).fetchone()
        return (row[0], row[1]) if row else None

    def get_remote_entry(self, url: str) -> RemoteEntry | None:
        row = self._db.execute(
            "SELECT url, image_id, etag, max_age, download_time, signature_url"
            " FROM remotes WHERE url = ?", (url,)
        ).fetchone()
        return RemoteEntry(*row) if row else None

    def put_remote(
        self, url: str, etag: str | None, image_id: str, *,
        signature_url: str | None = None, max_age: int = 0,
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO remotes (url, signature_url, etag, image_id, max_age,"
                " download_time) VALUES (?, ?, ?, ?, ?, ?)",
                (url, signature_url, etag, image_id, max_age, time.time()),
            )

    def set_last_used(self, image_id: str, when: float) -> None:
        with self.transaction() as db:
            db.execute("UPDATE images SET last_used = ? WHERE id = ?", (when, image_id))

    def set_verification(self, image_id: str, verification: str, signer: str | None) -> None:
        with self.transaction() as db:
            db.execute("UPDATE images SET verification = ?, signer = ? WHERE id = ?",
                       (verification, signer, image_id))

    def set_tree_size(self, image_id: str, size: int) -> None:
        with self.transaction() as db:
            db.execute("UPDATE images SET tree_size = ? WHERE id = ?", (size, image_id))
