"""What the cache knows about its files and pages, in SQLite (WAL, short transactions) shared
by all workers.

`cached` holds the files on disk with their hits and last use; `pages` the bytes and last use
of each cached index page (its files are in pages/, pypicache/pages.py); `totals` and `state` the
statistics every worker adds to (pypicache/stats); `removed` what eviction and `verify` deleted
(its latest REMOVED_KEPT rows). What a page promises about a file (sha256, size) is not copied
here: the page's own model says it (pypicache/listings.py), so a page miss writes no row per file.
`listed_under` holds the rare file whose page is not the project its name says
(names.project_of_file), so that it is still found. The statistics' tables (`totals`, `state`,
`ahead`) are written and read by the methods of pypicache/catalogstats.py, the policy's
recent refusals (`refusals`) by those of pypicache/catalogrefusals.py.

Reads never write: rows of published files and page sizes are buffered (record_cached,
record_page) and written by `write_pending`, which the statistics thread calls about once a
second.
"""
from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Callable, NamedTuple

from . import database, names
from .catalogrefusals import Refusals
from .catalogstats import Statistics
from .database import translated


class Usage(NamedTuple):
    files: int
    bytes: int  # of the cached files
    projects: int
    pages: int
    page_bytes: int
    catalog_bytes: int  # the catalog itself, with its WAL

    @property
    def disk(self) -> int:
        """The disk the cache takes: what the size cap bounds and the dashboard shows."""
        return self.bytes + self.page_bytes + self.catalog_bytes


WAL_LIMIT = 4 << 20  # bytes the WAL is truncated to after a checkpoint
FILE_COLUMNS = "path, project, size, sha256, created, last_used, hits"
REMOVED_KEPT = 1000  # the dashboard shows the latest 50 removals


class Catalog(Statistics, Refusals):
    """The catalog file, read and written (once `prepare`d), or only read (`readonly`)."""

    def __init__(self, path: Path, readonly: bool = False):
        self.path = path
        self.readonly = readonly
        self._prepared = False
        # One connection per thread, opened lazily: never shared across a fork or threads.
        self._local = threading.local()
        self._pending: list[tuple] = []  # rows of published files, see record_cached
        self._pending_pages: dict[str, int] = {}  # page sizes, see record_page
        self._pending_lock = threading.Lock()

    def prepare(self) -> "Catalog":
        """Create the file or bring an older one up to date (pypicache/database.py): done by the
        first connection that may write, so never by a read-only catalog."""
        database.prepare(self.path)
        self._prepared = True
        return self

    def _connect(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            if self.readonly:
                db = database.read_only(self.path)
            else:
                if not self._prepared:
                    self.prepare()
                db = sqlite3.connect(self.path, timeout=database.BUSY_TIMEOUT,
                                     isolation_level=None)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
            self._local.db = db
        return db

    def release(self) -> None:
        """Close this thread's connection; for threads that end (one per download).

        A connection is in a reference cycle (its statement cache), so a dead thread's would
        keep its two descriptors open until a full garbage collection: hundreds under load.
        """
        db = getattr(self._local, "db", None)
        if db is not None:
            self._local.db = None
            db.close()

    def checkpoint(self) -> None:
        """Move the WAL into the database and truncate it (the statistics thread, now and
        then, and at exit): without it a busy cache's WAL only grows."""
        self._connect().execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # --- what pages say (pages.py, listings.py) ----------------------------------
    def metadata_hashes(self, project: str) -> dict[str, str]:
        """The sha256 of each `.metadata` of the project served from the cache, by path."""
        with translated():
            return dict(self._connect().execute(
                "SELECT path, sha256 FROM cached WHERE project = ? AND path LIKE '%.metadata'",
                (project,)).fetchall())

    def record_listed(self, project: str, paths: list[str]) -> None:
        """Files the project's page lists whose names say another project: looked up here."""
        if not paths:
            return
        with translated():
            db = self._connect()
            with db:
                db.execute("BEGIN IMMEDIATE")
                db.executemany("INSERT OR REPLACE INTO listed_under VALUES (?, ?)",
                               [(path, project) for path in paths])

    def listed_under(self, path: str) -> str | None:
        with translated():
            row = self._connect().execute(
                "SELECT project FROM listed_under WHERE path = ?", (path,)).fetchone()
        return row[0] if row else None

    def record_page(self, project: str, size: int) -> None:
        """A page's bytes on disk now (0: it is gone); written with the next flush."""
        with self._pending_lock:
            self._pending_pages[project] = size

    # --- files on disk -------------------------------------------------------------------
    def record_cached(self, path: str, project: str, size: int, sha256: str) -> None:
        """A file was published: its row is written with the worker's next statistics flush
        (pypicache/stats, about a second; at once after a download), not here. Under load a write
        here waited seconds for SQLite's lock, holding a download thread and its descriptors;
        a row that is late only delays the dashboard and eviction (which never see a file
        before its row), and a SIGKILL loses at most the row, which `verify` adopts again."""
        with self._pending_lock:
            self._pending.append((path, project, size, sha256, time.time()))

    def _write_pending(self, db: sqlite3.Connection) -> tuple[list[tuple], dict[str, int]]:
        """Inside an open write transaction: the buffered rows (returned, to put back on failure)."""
        with self._pending_lock:
            rows, self._pending = self._pending, []
            pages, self._pending_pages = self._pending_pages, {}
        for path, project, size, sha256, now in rows:
            db.execute(
                "INSERT INTO cached VALUES (?, ?, ?, ?, ?, ?, 0) ON CONFLICT(path) DO UPDATE SET "
                "size=excluded.size, sha256=excluded.sha256, last_used=excluded.last_used",
                (path, project, size, sha256, now, now),
            )
        now = time.time()
        for project, size in pages.items():
            if size:
                db.execute("INSERT INTO pages VALUES (?, ?, ?) ON CONFLICT(project) DO UPDATE "
                           "SET size=excluded.size", (project, size, now))
            else:
                db.execute("DELETE FROM pages WHERE project = ?", (project,))
        return rows, pages

    def write_pending(self) -> None:
        """Write the buffered rows of published files and page sizes now."""
        if self._pending or self._pending_pages:
            self._transaction()

    def add_cached(self, path: str, project: str, size: int, sha256: str) -> None:
        """A file's row, written at once (`verify` adopting a file the catalog lost)."""
        self.record_cached(path, project, size, sha256)
        self._transaction()

    def _transaction(self, work: Callable[[sqlite3.Connection], None] | None = None) -> None:
        """One short write transaction: the buffered rows, then `work`; on failure the rows go
        back to the buffer for the next one."""
        db = self._connect()
        rows: list[tuple] = []
        pages: dict[str, int] = {}
        try:
            with db:
                db.execute("BEGIN IMMEDIATE")
                rows, pages = self._write_pending(db)  # new files first: their hits update them
                if work is not None:
                    work(db)
        except BaseException:
            with self._pending_lock:
                self._pending[:0] = rows
                self._pending_pages = pages | self._pending_pages
            raise

    def cached_files(self) -> list[tuple]:
        """(path, project, size, sha256) of every cached file."""
        return self._connect().execute("SELECT path, project, size, sha256 FROM cached").fetchall()

    def usage(self) -> Usage:
        """What the cache holds and the disk it takes."""
        db = self._connect()
        files, size, projects = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0), COUNT(DISTINCT project) FROM cached"
        ).fetchone()
        pages, page_bytes = db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM pages").fetchone()
        catalog_bytes = 0
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                catalog_bytes += os.stat(f"{self.path}{suffix}").st_size
        return Usage(files, size, projects, pages, page_bytes, catalog_bytes)

    def least_recent(self) -> list[tuple[str, str, int]]:
        """("file", path, size) and ("page", project, size), least recently used first."""
        rows = self._connect().execute(
            "SELECT 'file', path, size, last_used, created FROM cached UNION ALL "
            "SELECT 'page', project, size, last_used, 0 FROM pages ORDER BY 4, 5").fetchall()
        return [row[:3] for row in rows]

    def forget_page(self, project: str) -> None:
        """Drop an evicted page's row, at once (its lock is held by the evictor)."""
        self._transaction(lambda db: db.execute("DELETE FROM pages WHERE project = ?", (project,)))

    def projects(self) -> list[tuple[str, int, int, int, float, float]]:
        """(project, files, bytes, hits, first cached, last used) of every cached project."""
        return self._connect().execute(
            "SELECT project, COUNT(*), SUM(size), SUM(hits), MIN(created), MAX(last_used) "
            "FROM cached GROUP BY project ORDER BY project"
        ).fetchall()

    def files(self, project: str | None = None) -> list[tuple]:
        """Rows of FILE_COLUMNS, of one project or of all, least recently used first."""
        query = f"SELECT {FILE_COLUMNS} FROM cached"
        if project is None:
            return self._connect().execute(query + " ORDER BY last_used, created").fetchall()
        return self._connect().execute(
            query + " WHERE project = ? ORDER BY path", (project,)
        ).fetchall()

    def forget(self, path: str, reason: str) -> tuple | None:
        """Drop a removed file's row and log why; its row (FILE_COLUMNS) or None."""
        db = self._connect()
        with db:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute(
                f"SELECT {FILE_COLUMNS} FROM cached WHERE path = ?", (path,)
            ).fetchone()
            project, size = (row[1], row[2]) if row else (names.project_of_file(path), 0)
            db.execute("DELETE FROM cached WHERE path = ?", (path,))
            db.execute(
                "INSERT INTO removed VALUES (?, ?, ?, ?, ?)",
                (path, project, size, reason, time.time()),
            )
            db.execute(
                "DELETE FROM removed WHERE rowid <= (SELECT MAX(rowid) FROM removed) - ?",
                (REMOVED_KEPT,),
            )
        return row

    def removed(self, limit: int = 50) -> list[tuple[str, str, int, str, float]]:
        """The latest removals: (path, project, size, reason, at)."""
        return self._connect().execute(
            "SELECT path, project, size, reason, at FROM removed ORDER BY at DESC LIMIT ?", (limit,)
        ).fetchall()
