"""What the cache knows about files, in SQLite (WAL, short transactions) shared by all workers.

`expected` holds the sha256 and size each index page promised for a file path (recorded when
the page is rendered, checked when the file is downloaded); `cached` holds what is on disk.
"""
from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterable

from .index import Project

SCHEMA = """
CREATE TABLE IF NOT EXISTS expected (
    path TEXT PRIMARY KEY, project TEXT NOT NULL, sha256 TEXT, size INTEGER);
CREATE TABLE IF NOT EXISTS cached (
    path TEXT PRIMARY KEY, project TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL,
    created REAL NOT NULL, last_used REAL NOT NULL, hits INTEGER NOT NULL DEFAULT 0);
"""


class Catalog:
    def __init__(self, path: Path):
        self.path = path
        # One connection per thread, opened lazily: never shared across a fork or threads.
        self._local = threading.local()
        # Created with a connection of its own, closed at once: nothing opened here survives
        # into a forked worker.
        db = sqlite3.connect(path, timeout=30)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
        finally:
            db.close()

    def _connect(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    def expect(self, project: Project) -> None:
        rows = [(f.path, project.name, f.sha256, f.size) for f in project.files]
        rows += [
            (f"{f.path}.metadata", project.name, f.core_metadata.get("sha256"), None)
            for f in project.files
            if isinstance(f.core_metadata, dict)
        ]
        db = self._connect()
        with db:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "INSERT INTO expected VALUES (?, ?, ?, ?) ON CONFLICT(path) DO UPDATE SET "
                "project=excluded.project, sha256=excluded.sha256, size=excluded.size",
                rows,
            )

    def expected(self, path: str) -> tuple[str | None, str | None, int | None]:
        """(project, sha256, size) that an index page promised for `path`, or Nones."""
        row = self._connect().execute(
            "SELECT project, sha256, size FROM expected WHERE path = ?", (path,)
        ).fetchone()
        return row or (None, None, None)

    def record_cached(self, path: str, project: str, size: int, sha256: str) -> None:
        now = time.time()
        db = self._connect()
        with db:
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "INSERT INTO cached VALUES (?, ?, ?, ?, ?, ?, 0) ON CONFLICT(path) DO UPDATE SET "
                "size=excluded.size, sha256=excluded.sha256, last_used=excluded.last_used",
                (path, project, size, sha256, now, now),
            )
            # A file fetched without a hash on its page: remember what we computed.
            db.execute(
                "UPDATE expected SET sha256 = ? WHERE path = ? AND sha256 IS NULL", (sha256, path)
            )

    def cached_files(self) -> Iterable[sqlite3.Row]:
        db = self._connect()
        return db.execute("SELECT path, project, size, sha256 FROM cached").fetchall()
