"""What the cache knows about files, in SQLite (WAL, short transactions) shared by all workers.

`expected` holds the sha256 and size each index page promised for a file path (recorded when
the page is rendered, checked when the file is downloaded); `cached` holds what is on disk,
with its hits and last use. `totals` and `state` hold the statistics every worker adds to in
short transactions (app/stats), `removed` remembers what eviction and `verify` deleted.

Both growing tables are bounded: `removed` keeps its latest REMOVED_KEPT rows, and `expected`
at most `max_rows` (the pages refreshed longest ago are forgotten whole by `prune_expected`,
which returns their names so that their pages are fetched again when next asked for).

Reads never write: rows of published files are buffered (record_cached) and written by
`write_pending`, which the statistics thread calls about once a second.
"""
from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Callable, Iterable

from . import database, names
from .index import Project

FILE_COLUMNS = "path, project, size, sha256, created, last_used, hits"
REMOVED_KEPT = 1000  # the dashboard shows the latest 50 removals
DEFAULT_MAX_ROWS = 1_000_000


class Catalog:
    """The catalog file, read and written (once `prepare`d), or only read (`readonly`)."""

    def __init__(self, path: Path, max_rows: int = DEFAULT_MAX_ROWS, readonly: bool = False):
        self.path = path
        self.max_rows = max_rows
        self.readonly = readonly
        self._prepared = False
        # One connection per thread, opened lazily: never shared across a fork or threads.
        self._local = threading.local()
        self._pending: list[tuple] = []  # rows of published files, see record_cached
        self._pending_lock = threading.Lock()

    def prepare(self) -> "Catalog":
        """Create the file or bring an older one up to date (app/database.py): done by the
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
                db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
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

    def expect(self, project: Project) -> dict[str, str]:
        """Record what the page promises; return the sha256 known of each wheel's .metadata
        (the upstream's, or that of what the proxy extracted and served). A page without a
        hash for a file keeps the hash an earlier page (or the verified download) gave."""
        now = time.time()
        rows = [(f.path, project.name, f.sha256, f.size, now) for f in project.files]
        metadata = [
            (f"{f.path}.metadata", project.name,
             f.core_metadata.get("sha256") if isinstance(f.core_metadata, dict) else None, None, now)
            for f in project.files
            if f.core_metadata or f.filename.endswith(".whl")
        ]
        db = self._connect()
        with db:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "INSERT INTO expected VALUES (?, ?, ?, ?, ?) ON CONFLICT(path) DO UPDATE SET "
                "project=excluded.project, sha256=COALESCE(excluded.sha256, expected.sha256), "
                "size=COALESCE(excluded.size, expected.size), at=excluded.at",
                rows + metadata,
            )
            known = {}
            for start in range(0, len(metadata), 500):  # SQLite's bound on parameters
                paths = [row[0] for row in metadata[start:start + 500]]
                known.update(db.execute(
                    f"SELECT path, sha256 FROM expected WHERE sha256 IS NOT NULL AND path IN "
                    f"({','.join('?' * len(paths))})", paths).fetchall())
        return known

    def metadata_known(self, project: str) -> int:
        """How many of the project's .metadata hashes are known (a page renders them)."""
        return self._connect().execute(
            "SELECT COUNT(*) FROM expected WHERE project = ? AND sha256 IS NOT NULL "
            "AND path LIKE '%.metadata'", (project,)).fetchone()[0]

    def prune_expected(self, keep: str) -> list[str]:
        """Forget whole projects (never `keep`), least recently refreshed first, until the
        promised hashes are under the cap; their names, whose pages must go too."""
        db = self._connect()
        if db.execute("SELECT COUNT(*) FROM expected").fetchone()[0] <= self.max_rows:
            return []
        with db:
            db.execute("BEGIN IMMEDIATE")
            return self._prune_expected(db, keep)

    def _prune_expected(self, db: sqlite3.Connection, keep: str) -> list[str]:
        excess = db.execute("SELECT COUNT(*) FROM expected").fetchone()[0] - self.max_rows
        if excess <= 0:
            return []
        # The oldest rows hold at least `excess` rows' worth of projects; a tenth more so
        # that the next pages do not prune again at once.
        oldest = db.execute(
            "SELECT DISTINCT project FROM (SELECT project FROM expected ORDER BY at LIMIT ?)",
            (excess + self.max_rows // 10,),
        ).fetchall()
        forgotten = [name for (name,) in oldest if name != keep]
        db.executemany("DELETE FROM expected WHERE project = ?", [(n,) for n in forgotten])
        return forgotten

    def expected(self, path: str) -> tuple[str | None, str | None, int | None]:
        """(project, sha256, size) that an index page promised for `path`, or Nones (no
        page listed it, or its page was forgotten under the cap)."""
        row = self._connect().execute(
            "SELECT project, sha256, size FROM expected WHERE path = ?", (path,)
        ).fetchone()
        return row or (None, None, None)

    def record_cached(self, path: str, project: str, size: int, sha256: str) -> None:
        """A file was published: its row is written with the worker's next statistics flush
        (app/stats, about a second; at once after a download), not here. Under load a write
        here waited seconds for SQLite's lock, holding a download thread and its descriptors;
        a row that is late only delays the dashboard and eviction (which never see a file
        before its row), and a SIGKILL loses at most the row, which `verify` adopts again."""
        with self._pending_lock:
            self._pending.append((path, project, size, sha256, time.time()))

    def _write_pending(self, db: sqlite3.Connection) -> list[tuple]:
        """Inside an open write transaction: the buffered rows (returned, to put back on failure)."""
        with self._pending_lock:
            rows, self._pending = self._pending, []
        for path, project, size, sha256, now in rows:
            db.execute(
                "INSERT INTO cached VALUES (?, ?, ?, ?, ?, ?, 0) ON CONFLICT(path) DO UPDATE SET "
                "size=excluded.size, sha256=excluded.sha256, last_used=excluded.last_used",
                (path, project, size, sha256, now, now),
            )
            # A file fetched without a hash on its page: remember what we computed.
            db.execute(
                "UPDATE expected SET sha256 = ? WHERE path = ? AND sha256 IS NULL", (sha256, path)
            )
        return rows

    def write_pending(self) -> None:
        """Write the buffered rows of published files now."""
        if self._pending:
            self._transaction()

    def add_cached(self, path: str, project: str, size: int, sha256: str) -> None:
        """A file's row, written at once (`verify` adopting a file the catalog lost)."""
        self.record_cached(path, project, size, sha256)
        self._transaction()

    def _transaction(self, work: Callable[[sqlite3.Connection], None] | None = None) -> None:
        """One short write transaction: the buffered rows of published files, then `work`;
        on failure the rows go back to the buffer for the next one."""
        db = self._connect()
        rows: list[tuple] = []
        try:
            with db:
                db.execute("BEGIN IMMEDIATE")
                rows = self._write_pending(db)  # new files first: their hits update them
                if work is not None:
                    work(db)
        except BaseException:
            with self._pending_lock:
                self._pending[:0] = rows
            raise

    def cached_files(self) -> list[tuple]:
        """(path, project, size, sha256) of every cached file."""
        return self._connect().execute("SELECT path, project, size, sha256 FROM cached").fetchall()

    # --- statistics (app/stats) ----------------------------------------------------------
    def add_stats(
        self,
        files: Iterable[tuple[int, float, str]],
        totals: dict[str, float],
        state: dict[str, tuple[float, str | None]],
    ) -> list[tuple[int, float, str]]:
        """One worker's counts since its last flush, added in one short transaction.

        `files` holds (hits, last_used, path); `totals` are added to; `state` keeps the latest
        time of each named event (the upstream's last success and failure) with its text.
        Returns the `files` rows that found no file row (not written yet by the worker that
        published the file, or evicted).
        """
        unmatched: list[tuple[int, float, str]] = []

        def add(db: sqlite3.Connection) -> None:
            for row in files:
                if db.execute("UPDATE cached SET hits = hits + ?, last_used = MAX(last_used, ?) "
                              "WHERE path = ?", row).rowcount == 0:
                    unmatched.append(row)
            db.executemany(
                "INSERT INTO totals VALUES (?, ?) ON CONFLICT(name) DO UPDATE "
                "SET value = value + excluded.value",
                totals.items(),
            )
            db.executemany(
                "INSERT INTO state VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE "
                "SET at = excluded.at, text = excluded.text WHERE excluded.at > state.at",
                [(name, at, text) for name, (at, text) in state.items()],
            )

        self._transaction(add)
        return unmatched

    def drop_total(self, name: str, then: Callable[[], None] = lambda: None) -> None:
        """Remove the total `name` and run `then` in the same transaction: if `then` raises,
        or the commit fails, the total stays."""
        def drop(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM totals WHERE name = ?", (name,))
            then()

        self._transaction(drop)

    def totals(self) -> dict[str, float]:
        return dict(self._connect().execute("SELECT name, value FROM totals").fetchall())

    def state(self) -> dict[str, tuple[float, str | None]]:
        rows = self._connect().execute("SELECT name, at, text FROM state").fetchall()
        return {name: (at, text) for name, at, text in rows}

    def usage(self) -> tuple[int, int, int]:
        """(files, bytes, projects) cached."""
        row = self._connect().execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0), COUNT(DISTINCT project) FROM cached"
        ).fetchone()
        return row

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
