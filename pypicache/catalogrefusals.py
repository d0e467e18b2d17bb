"""The policy's recent refusals in the catalog (table `refusals`, catalog.py's Catalog has
these methods): what each worker's statistics flush brings (pypicache/stats/recorder.py),
one row per mode, rule, project, file, kind of request and client, with its count, its first
and last time and, for a cooldown, when the file passes. The REFUSALS_KEPT rows last refused
are kept, the older ones dropped by the flush that goes past them.
"""
from __future__ import annotations

import sqlite3
from typing import Callable, NamedTuple

REFUSALS_KEPT = 500  # rows (each a rule, project, file, kind and client): the policy page's


class RefusalKey(NamedTuple):
    """What a refusal row is about: `file` is "" for a whole project, `user` "" when the
    client did not log in; `what` is project, page, json or file (policyserve's audit)."""

    mode: str
    rule: str
    project: str
    file: str
    what: str
    address: str
    user: str


class RefusalRow(NamedTuple):
    key: RefusalKey
    entry: str  # the rule's entry as the header says it: "lib==1.1", "7d"
    count: int
    first: float
    last: float
    until: float | None  # a cooldown's: when the file passes


# A worker's refusals since its last flush: key -> [count, first, last, entry, until].
Pending = dict[RefusalKey, list]


def write_refusals(db: sqlite3.Connection, pending: Pending) -> None:
    """Inside the flush's write transaction: the counts added, the rows past the bound gone."""
    db.executemany(
        "INSERT INTO refusals VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT(mode, rule, project, file, what, address, user) DO UPDATE SET "
        "count = count + excluded.count, first = MIN(first, excluded.first), "
        "last = MAX(last, excluded.last), entry = excluded.entry, until = excluded.until",
        [(*key, entry, count, first, last, until)
         for key, (count, first, last, entry, until) in pending.items()])
    db.execute("DELETE FROM refusals WHERE rowid NOT IN "
               "(SELECT rowid FROM refusals ORDER BY last DESC LIMIT ?)", (REFUSALS_KEPT,))


class Refusals:
    """Mixed into Catalog, whose `_connect` this uses."""

    _connect: Callable[[], sqlite3.Connection]

    def refusals(self, limit: int = REFUSALS_KEPT) -> list[RefusalRow]:
        """The rows last refused first; none from a catalog that has no such table yet (read
        only, made by an older version)."""
        try:
            rows = self._connect().execute(
                "SELECT mode, rule, project, file, what, address, user, entry, count, first, "
                "last, until FROM refusals ORDER BY last DESC LIMIT ?", (limit,)).fetchall()
        except sqlite3.OperationalError as error:
            if "no such table" not in str(error):
                raise
            return []
        return [RefusalRow(RefusalKey(*row[:7]), *row[7:]) for row in rows]
