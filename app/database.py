"""The catalog's SQLite file (app/catalog.py): its schema, its creation and migration, and
connections that only read."""
from __future__ import annotations

import fcntl
import os
import sqlite3
from pathlib import Path

NAME = "catalog.sqlite3"  # in the cache directory
SCHEMA = """
CREATE TABLE IF NOT EXISTS expected (
    path TEXT PRIMARY KEY, project TEXT NOT NULL, sha256 TEXT, size INTEGER,
    at REAL NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS expected_project ON expected(project);
CREATE TABLE IF NOT EXISTS cached (
    path TEXT PRIMARY KEY, project TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL,
    created REAL NOT NULL, last_used REAL NOT NULL, hits INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS cached_last_used ON cached(last_used);
CREATE INDEX IF NOT EXISTS cached_project ON cached(project);
CREATE TABLE IF NOT EXISTS totals (name TEXT PRIMARY KEY, value REAL NOT NULL);
CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY, at REAL NOT NULL, text TEXT);
CREATE TABLE IF NOT EXISTS removed (
    path TEXT NOT NULL, project TEXT NOT NULL, size INTEGER NOT NULL, reason TEXT NOT NULL,
    at REAL NOT NULL);
"""


def prepare(path: Path) -> None:
    """Create the file, or bring one an older version made up to date.

    Done with a connection closed at once (nothing survives into a forked worker), by one
    process at a time: SQLite may refuse two workers switching a new file to WAL at once
    ("database is locked", unwaited). The lock is a flock on the directory, never an open of
    the file itself: closing any descriptor of the file drops every fcntl lock this process
    holds on it (POSIX), SQLite's included, and another process that then finds no lock on
    the file takes itself for the last reader and deletes the WAL under the connections of
    this one (which go on reading what they had, and writing to a deleted file).
    """
    path.parent.mkdir(parents=True, exist_ok=True)  # the cache directory itself, on first use
    guard = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(guard, fcntl.LOCK_EX)
        db = sqlite3.connect(path, timeout=30)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(expected)")}
            if "at" not in columns:  # a catalog from before the bound
                db.execute("ALTER TABLE expected ADD COLUMN at REAL NOT NULL DEFAULT 0")
            db.execute("CREATE INDEX IF NOT EXISTS expected_at ON expected(at)")
        finally:
            db.close()
    finally:
        os.close(guard)  # and with it the flock


def read_only(path: Path) -> sqlite3.Connection:
    """A connection that writes nothing into the cache: through the WAL while a server has it
    open (its -wal and -shm exist), else the file as it is. SQLite's `mode=ro` alone would
    create a -wal and a -shm beside a file that has none; `immutable` reads the file alone."""
    uri = Path(path).absolute().as_uri()
    if Path(f"{path}-wal").exists():
        db = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=30)
        try:
            db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            return db
        except sqlite3.OperationalError:  # a -shm it may not write: read the file alone
            db.close()
    return sqlite3.connect(f"{uri}?immutable=1", uri=True)
