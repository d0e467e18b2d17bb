"""The catalog's SQLite file (pypicache/catalog.py): its schema, its creation and migration,
connections that only read, and SQLite's storage faults as our errors."""
from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from pathlib import Path
from typing import Iterator

from .errors import Busy, ProxyError, StorageError

NAME = "catalog.sqlite3"  # in the cache directory
SCHEMA = """
CREATE TABLE IF NOT EXISTS cached (
    path TEXT PRIMARY KEY, project TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL,
    created REAL NOT NULL, last_used REAL NOT NULL, hits INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS cached_last_used ON cached(last_used);
CREATE INDEX IF NOT EXISTS cached_project ON cached(project);
CREATE TABLE IF NOT EXISTS pages (
    project TEXT PRIMARY KEY, size INTEGER NOT NULL, last_used REAL NOT NULL);
CREATE INDEX IF NOT EXISTS pages_last_used ON pages(last_used);
CREATE TABLE IF NOT EXISTS listed_under (path TEXT PRIMARY KEY, project TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS totals (name TEXT PRIMARY KEY, value REAL NOT NULL);
CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY, at REAL NOT NULL, text TEXT);
CREATE TABLE IF NOT EXISTS ahead (key TEXT PRIMARY KEY, kind TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS ahead_at ON ahead(at);
CREATE TABLE IF NOT EXISTS removed (
    path TEXT NOT NULL, project TEXT NOT NULL, size INTEGER NOT NULL, reason TEXT NOT NULL,
    at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS refusals (
    mode TEXT NOT NULL, rule TEXT NOT NULL, project TEXT NOT NULL, file TEXT NOT NULL,
    what TEXT NOT NULL, address TEXT NOT NULL, user TEXT NOT NULL, entry TEXT NOT NULL,
    count INTEGER NOT NULL, first REAL NOT NULL, last REAL NOT NULL, until REAL,
    PRIMARY KEY (mode, rule, project, file, what, address, user));
CREATE INDEX IF NOT EXISTS refusals_last ON refusals(last);
"""
BUSY_TIMEOUT = 30  # seconds SQLite waits for another worker's write transaction
# SQLite's primary result codes that are faults of the cache's storage, not of our queries.
_STORAGE_CODES = {
    13: "the cache disk is full",  # SQLITE_FULL
    8: "the cache directory is not writable",  # SQLITE_READONLY
    14: "the cache directory is not writable",  # SQLITE_CANTOPEN
    10: "cache storage failed: disk I/O error",  # SQLITE_IOERR
}
_BUSY_CODES = {5, 6}  # SQLITE_BUSY, SQLITE_LOCKED: past the busy timeout, try again later


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
        db = sqlite3.connect(path, timeout=BUSY_TIMEOUT)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
            _migrate(db)
        finally:
            db.close()
    finally:
        os.close(guard)  # and with it the flock


def _migrate(db: sqlite3.Connection) -> None:
    """A catalog of an earlier release kept a row per file every page listed (`expected`):
    the pages' documents hold that now, and dropping the table gives its space back, once."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'expected'").fetchone():
        db.execute("DROP TABLE expected")
        db.commit()
        db.execute("VACUUM")


def storage_error(error: Exception) -> ProxyError | None:
    """The error a catalog failure is answered with (507 storage, 503 busy), or None when it
    is not about storage."""
    code = getattr(error, "sqlite_errorcode", None)
    if code is None:
        return None
    if code & 0xFF in _BUSY_CODES:
        return Busy("the cache's catalog is busy; try again shortly", retry_after=1)
    message = _STORAGE_CODES.get(code & 0xFF)
    return StorageError(message) if message else None


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """SQLite's storage faults as our errors, for the catalog calls a request makes."""
    try:
        yield
    except sqlite3.OperationalError as error:
        mapped = storage_error(error)
        if mapped is None:
            raise
        raise mapped from error


def read_only(path: Path) -> sqlite3.Connection:
    """A connection that writes nothing into the cache: through the WAL while a server has it
    open (its -wal and -shm exist), else the file as it is. SQLite's `mode=ro` alone would
    create a -wal and a -shm beside a file that has none; `immutable` reads the file alone."""
    uri = Path(path).absolute().as_uri()
    if Path(f"{path}-wal").exists():
        db = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=BUSY_TIMEOUT)
        try:
            db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            return db
        except sqlite3.OperationalError:  # a -shm it may not write: read the file alone
            db.close()
    return sqlite3.connect(f"{uri}?immutable=1", uri=True)
