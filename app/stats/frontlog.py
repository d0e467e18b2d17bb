"""The hits the nginx front served from the cache volume, added to the statistics exactly once.

nginx (docker/nginx/) writes one JSON line per file it serves from files/ to
<cache>/front/<hour>.jsonl. One worker at a time (a non-blocking flock) reads the complete
lines that are new and adds them to the catalog in one transaction together with how far it
has read that file (a total named after it), so a crash on either side of the commit neither
loses nor repeats a line. An hour's file read to its end and no longer written is deleted.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

from ..catalog import Catalog
from ..store import Store

log = logging.getLogger(__name__)
LOCK = "front-log"
OFFSET = "front_log_offset:"  # + file name: the bytes of that file already counted
INTERVAL = 1.0  # seconds between two reads, like the recorder's flushes
DONE_AFTER = 120.0  # seconds without a write before a file read to its end may go
MAX_READ = 4 << 20  # bytes read per transaction
LOOK_EVERY = 5.0  # seconds between two looks for a front started after the app


class FrontLog:
    def __init__(self, store: Store, catalog: Catalog,
                 counted: Callable[[int, int], None] | None = None):
        self.store, self.catalog = store, catalog
        self.directory = store.root / "front"
        self.counted = counted  # (hits, bytes) once committed: for the Prometheus counters
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._looked = 0.0

    def start(self) -> None:
        """Run `read` about once a second in a daemon thread of this worker, once there is a
        front (its directory); cheap enough for every request."""
        if self._thread is not None or time.monotonic() - self._looked < LOOK_EVERY:
            return
        self._looked = time.monotonic()
        if not self.directory.is_dir():
            return
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="front log", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(INTERVAL)
            try:
                self.read()
            except Exception:  # the thread must live on: a bad moment of the disk or SQLite
                log.exception("could not read the nginx front's log")

    def read(self) -> int:
        """Count every complete new line of every file; how many lines (0 if another worker
        is reading or there is no front)."""
        if not self.directory.is_dir():
            return 0
        lock = self.store.try_lock(LOCK)
        if lock is None:
            return 0
        try:
            done = self.catalog.totals()
            paths = sorted(self.directory.glob("*.jsonl"))
            return sum(
                self._read_file(path, int(done.get(OFFSET + path.name, 0)), path == paths[-1])
                for path in paths
            )
        finally:
            os.close(lock)

    def _read_file(self, path: Path, offset: int, newest: bool) -> int:
        lines = 0
        try:
            with open(path, "rb") as file:
                while True:
                    data = os.pread(file.fileno(), MAX_READ, offset)
                    complete = data[: data.rfind(b"\n") + 1]
                    if not complete:
                        break
                    lines += self._count(path.name, complete)
                    offset += len(complete)
                stat = os.fstat(file.fileno())
        except FileNotFoundError:
            return lines
        if not newest and offset >= stat.st_size and time.time() - stat.st_mtime > DONE_AFTER:
            path.unlink(missing_ok=True)  # nginx writes only the current hour's file
        return lines

    def _count(self, name: str, data: bytes) -> int:
        """Add one batch of lines and the new offset in one transaction."""
        files: dict[str, list] = {}
        totals: defaultdict[str, float] = defaultdict(float)
        hits = sent = 0
        for line in data.splitlines():
            try:
                entry = json.loads(line)
                path, method, status = entry["p"], entry["m"], int(entry["s"])
                at, size, seconds = float(entry["t"]), int(entry["b"]), float(entry["rt"])
            except (ValueError, KeyError, TypeError):
                log.warning("skipping a line of the nginx front's log: %.200r", line)
                continue
            if status >= 400:  # a 416 or a refused request: the app counts those nowhere
                continue
            row = files.setdefault(path, [0, at])
            row[1] = max(row[1], at)
            if method != "GET":  # a HEAD is a use, not a hit (as the app counts them)
                continue
            row[0] += 1
            hits += 1
            if status in (200, 206):
                sent += size
                if seconds > 0:  # nginx times in milliseconds: a small file often takes "0"
                    totals["timed_hit_bytes"] += size
                    totals["timed_hit_seconds"] += seconds
        totals["requests_hit"] += hits
        totals["bytes_hit"] += sent
        totals[OFFSET + name] += len(data)
        rows = [(count, last, path) for path, (count, last) in files.items()]
        self.catalog.add_stats(rows, dict(totals), {})
        if self.counted is not None:
            self.counted(hits, sent)
        return len(data.splitlines())
