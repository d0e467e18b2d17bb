"""Per-worker counters flushed to the catalog: exact totals across workers, nothing slow per hit.

A request only adds to a dict under an uncontended lock. A daemon thread of the worker swaps
the dict out about once a second (at once when a download was published) and adds it to
catalog.sqlite3 in one `BEGIN IMMEDIATE` transaction; additions commute, so the totals are the
same whichever worker answered. A flush that fails puts its counts back for the next one; the
last flush runs at exit (gunicorn's workers leave through sys.exit, which runs atexit), so a
graceful stop loses nothing. A worker killed with SIGKILL loses at most its last second.
"""
from __future__ import annotations

import atexit
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections import defaultdict
from typing import Callable

from ..catalog import Catalog
from ..catalogrefusals import Pending, RefusalKey

log = logging.getLogger(__name__)
FLUSH_INTERVAL = 1.0  # seconds: how stale the dashboard and the LRU order may be
UNMATCHED_KEPT = 60.0  # seconds hits wait for their file's row (written by another worker)
# Seconds a use waits for the row of something fetched ahead (pypicache/prefetch.py), which another
# worker flushes at once: it may land just after the use's own flush.
USES_KEPT = 3.0
CAP_INTERVAL = 10.0  # seconds between two checks of the size cap without a download
CHECKPOINT_INTERVAL = 60.0  # seconds between two checkpoints of the catalog's WAL by a worker


class Recorder:
    def __init__(self, catalog: Catalog, interval: float = FLUSH_INTERVAL,
                 after_download: Callable[[], None] | None = None, uses_kept: float = 0.0):
        self.catalog = catalog
        self.interval = interval
        self.uses_kept = uses_kept  # 0: a use finds what was fetched ahead in its own flush only
        # Run in the flush thread after a download was published (eviction): never in a
        # request, never in the download thread that followers are waiting on.
        self.after_download = after_download
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._published = False
        self._checkpointed = time.monotonic()
        self._reset()
        self._uses: dict[str, float] = {}  # recent uses, by key, for what is fetched ahead
        me = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: (r := me()) and r._forked())

    def _reset(self) -> None:
        self._files: dict[str, list] = {}  # path -> [hits, last used]
        self._pages: dict[str, float] = {}  # page -> last used
        self._ahead: dict[str, tuple[str, float]] = {}  # key -> (kind, when its fetch began)
        self._totals: defaultdict[str, float] = defaultdict(float)
        self._state: dict[str, tuple[float, str | None]] = {}
        self._refusals: Pending = {}  # the policy's, see refused()

    def _forked(self) -> None:
        """A child starts with nothing: its parent's counts are the parent's to flush."""
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = None
        self._reset()
        self._uses: dict[str, float] = {}

    # --- called from requests and downloads: cheap -------------------------------------
    def file_request(self, path: str, cache: str, method: str, size: int) -> None:
        """A file request answered `cache` (hit, miss, follower): GETs count, every one is a use."""
        now = time.time()
        with self._lock:
            entry = self._files.get(path)
            if entry is None:
                entry = self._files[path] = [0, now]
            entry[1] = now
            if method == "GET":
                if cache == "hit":
                    entry[0] += 1
                self._totals["requests_" + cache] += 1
                self._totals["bytes_" + cache] += size
        if self._thread is None:
            self._start()

    def page_request(self, name: str) -> None:
        """A page was served: its last use."""
        with self._lock:
            self._pages[name] = time.time()
        if self._thread is None:
            self._start()

    def hit_sent(self, size: int, seconds: float) -> None:
        """A hit's bytes and the time they took to leave: the local throughput d."""
        with self._lock:
            self._totals["timed_hit_bytes"] += size
            self._totals["timed_hit_seconds"] += seconds

    def downloaded(self, size: int, seconds: float) -> None:
        """A download from the upstream was published: the upstream throughput t."""
        with self._lock:
            self._totals["downloads"] += 1
            self._totals["download_bytes"] += size
            self._totals["download_seconds"] += seconds
            self._published = True
        if self._thread is None:
            self._start()
        self._wake.set()

    def fetched_ahead(self, kind: str, key: str, at: float) -> None:
        """Something was fetched ahead of any client (pypicache/prefetch.py): flushed at once, so
        that its row is there for the flush of a client's use of it, in whatever worker."""
        with self._lock:
            self._ahead[key] = (kind, at)
            self._totals["ahead_" + kind] += 1
        if self._thread is None:
            self._start()
        self._wake.set()

    def add(self, name: str, value: float = 1) -> None:
        """Add to a total (fetch-ahead work dropped or failed)."""
        with self._lock:
            self._totals[name] += value
        if self._thread is None:
            self._start()

    def event(self, name: str, text: str | None = None, at: float | None = None) -> None:
        """Remember the latest time of `name` (upstream_ok, upstream_failed) across workers."""
        at = time.time() if at is None else at
        with self._lock:
            if name not in self._state or self._state[name][0] < at:
                self._state[name] = (at, text)
        if self._thread is None:
            self._start()

    def refused(self, key: RefusalKey, entry: str, until: float | None) -> None:
        """The policy refused something (or would have, in report mode): counted by rule,
        project, file, kind and client, and kept in the catalog's last REFUSALS_KEPT."""
        now = time.time()
        with self._lock:
            row = self._refusals.get(key)
            if row is None:
                self._refusals[key] = [1, now, now, entry, until]
            else:
                row[0] += 1
                row[2:] = [now, entry, until]
        if self._thread is None:
            self._start()

    def pending_state(self) -> dict[str, tuple[float, str | None]]:
        with self._lock:
            return dict(self._state)

    # --- the flush thread ----------------------------------------------------------------
    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="stats flush", daemon=True)
        self._thread.start()
        atexit.register(self._exit)

    def _exit(self) -> None:
        """The last counts, and the WAL into the database: a clean stop leaves no big WAL."""
        self.flush()
        try:
            self.catalog.checkpoint()
        except sqlite3.Error as error:  # another worker still writing: it checkpoints later
            log.info("catalog not checkpointed at exit: %s", error)

    def _run(self) -> None:
        last_check = time.monotonic()
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            self.flush()
            with self._lock:
                published, self._published = self._published, False
            # Pages take disk too, and a resolve-only client downloads nothing: the cap is
            # checked every CAP_INTERVAL as well as after each download.
            if time.monotonic() - last_check > CAP_INTERVAL:
                published, last_check = True, time.monotonic()
            if published and self.after_download is not None:
                try:
                    self.after_download()
                except Exception:  # the thread must live on: log, retry after the next download
                    log.exception("after-download task failed")

    def flush(self) -> None:
        """Add this worker's counts to the catalog; on failure keep them for the next flush."""
        with self._flush_lock:
            with self._lock:
                files, totals, state, pages = self._files, self._totals, self._state, self._pages
                ahead, refusals = self._ahead, self._refusals
                self._reset()
            uses = dict(self._uses)
            for key, at in [(path, last) for path, (_, last) in files.items()] + [
                    ("page:" + name, at) for name, at in pages.items()]:
                uses[key] = max(at, uses.get(key, at))
            try:
                if not (files or totals or state or pages or uses or refusals):
                    self.catalog.write_pending()  # rows of published files, if any
                    self._checkpoint()
                    return
                rows = [(hits, last, path) for path, (hits, last) in files.items()]
                added = self.catalog.add_stats(rows, dict(totals), state, pages, ahead, uses,
                                               refusals)
            except sqlite3.Error as error:
                log.warning("statistics not saved yet (%s); kept for the next flush", error)
                self._merge(files, totals, state, pages, ahead, refusals)
                return
            unmatched = added.unmatched
            recent = time.time() - self.uses_kept
            self._uses = {key: at for key, at in uses.items()
                          if at > recent and key not in added.used}
            self._checkpoint()
            # Hits on a file another worker has just published: its row comes with that
            # worker's next flush. Kept for the next flushes, for a while (not for ever: the
            # file may have been evicted meanwhile).
            recent = time.time() - UNMATCHED_KEPT
            self._merge({path: (hits, last) for hits, last, path in unmatched
                         if hits and last > recent}, {}, {}, {})

    def _checkpoint(self) -> None:
        """Now and then, the WAL into the database (it only grows otherwise)."""
        if time.monotonic() - self._checkpointed < CHECKPOINT_INTERVAL:
            return
        self._checkpointed = time.monotonic()
        self.catalog.checkpoint()

    def _merge(self, files, totals, state, pages, ahead=None, refusals=None) -> None:
        with self._lock:
            for key, (count, first, last, entry, until) in (refusals or {}).items():
                row = self._refusals.setdefault(key, [0, first, last, entry, until])
                row[0] += count
                row[1] = min(row[1], first)
            for key, value in (ahead or {}).items():
                self._ahead.setdefault(key, value)
            for name, at in pages.items():
                self._pages[name] = max(self._pages.get(name, at), at)
            for path, (hits, last) in files.items():
                entry = self._files.setdefault(path, [0, last])
                entry[0] += hits
                entry[1] = max(entry[1], last)
            for name, value in totals.items():
                self._totals[name] += value
            for name, (at, text) in state.items():
                if name not in self._state or self._state[name][0] < at:
                    self._state[name] = (at, text)
