"""The catalog's statistics tables (catalog.py's Catalog has these methods): `totals` every
worker adds to, `state` (the latest time of each named event), and `ahead`, what was fetched
ahead of any client (pypicache/prefetch.py) and no client has asked for since, for AHEAD_KEPT.

Written in the catalog's own short transactions (`_transaction`), with the rows of published
files buffered beside them, by each worker's statistics flush (pypicache/stats/recorder.py).
"""
from __future__ import annotations

import json
import sqlite3
import time
from typing import Callable, Iterable, NamedTuple

from .catalogrefusals import Pending, write_refusals

AHEAD_KEPT = 86400.0  # seconds something fetched ahead waits for a client; then it counts unused
# Each thing fetched ahead is used once, by the first use that came after its fetch began (a
# client that followed that fetch included): uses are [key, time] pairs.
_USED_AHEAD = """DELETE FROM ahead WHERE rowid IN (
    SELECT ahead.rowid FROM json_each(?) AS asked
    JOIN ahead ON ahead.key = json_extract(asked.value, '$[0]')
    WHERE ahead.at <= json_extract(asked.value, '$[1]')) RETURNING key, kind"""


class Added(NamedTuple):
    """What a flush found: file uses without a row yet, keys of uses of things fetched ahead."""

    unmatched: list[tuple[int, float, str]]
    used: set[str]


class Statistics:
    """Mixed into Catalog, whose `_connect` and `_transaction` these use."""

    _connect: Callable[[], sqlite3.Connection]
    _transaction: Callable[..., None]

    def add_stats(
        self,
        files: Iterable[tuple[int, float, str]],
        totals: dict[str, float],
        state: dict[str, tuple[float, str | None]],
        pages: dict[str, float] | None = None,
        ahead: dict[str, tuple[str, float]] | None = None,
        uses: dict[str, float] | None = None,
        refusals: Pending | None = None,
    ) -> Added:
        """One worker's counts since its last flush, added in one short transaction.

        `files` holds (hits, last_used, path); `totals` are added to; `state` keeps the latest
        time of each named event (the upstream's last success and failure) with its text;
        `pages` the last use of each page served. `ahead` is what was fetched ahead of any
        client, by key (a file's path, "page:<project>"): (kind, when its fetch began); `uses`
        the latest use of each key, which counts those in the totals `ahead_used_<kind>`.
        `refusals` are the policy's (pypicache/catalogrefusals.py).
        Returns the `files` rows that found no file row (not written yet by the worker that
        published the file, or evicted) and the keys of `uses` that found something.
        """
        added = Added([], set())

        def add(db: sqlite3.Connection) -> None:
            for row in files:
                if db.execute("UPDATE cached SET hits = hits + ?, last_used = MAX(last_used, ?) "
                              "WHERE path = ?", row).rowcount == 0:
                    added.unmatched.append(row)
            db.executemany("INSERT INTO ahead VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE "
                           "SET kind = excluded.kind, at = excluded.at",
                           [(key, kind, at) for key, (kind, at) in (ahead or {}).items()])
            counted = dict(totals)
            if uses and db.execute("SELECT 1 FROM ahead LIMIT 1").fetchone():
                for key, kind in db.execute(_USED_AHEAD, (json.dumps(list(uses.items())),)):
                    added.used.add(key)
                    counted[f"ahead_used_{kind}"] = counted.get(f"ahead_used_{kind}", 0) + 1
                db.execute("DELETE FROM ahead WHERE at < ?", (time.time() - AHEAD_KEPT,))
            db.executemany(
                "INSERT INTO totals VALUES (?, ?) ON CONFLICT(name) DO UPDATE "
                "SET value = value + excluded.value",
                counted.items(),
            )
            db.executemany(
                "INSERT INTO state VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE "
                "SET at = excluded.at, text = excluded.text WHERE excluded.at > state.at",
                [(name, at, text) for name, (at, text) in state.items()],
            )
            db.executemany("UPDATE pages SET last_used = MAX(last_used, ?) WHERE project = ?",
                           [(at, project) for project, at in (pages or {}).items()])
            if refusals:
                write_refusals(db, refusals)

        self._transaction(add)
        return added

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
