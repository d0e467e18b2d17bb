"""The hits the nginx front served from the cache volume, added to the statistics exactly once.

nginx (docker/nginx/) writes one line per file it serves from files/ to
<cache>/front/<time>.log, a new file every few minutes (names sort in time order). One worker
at a time (a non-blocking flock) reads the complete lines that are new and adds them to the
catalog in one transaction together with how far it has read that file (a total named after
it), so a crash on either side of the commit neither loses nor repeats a line. A file read to
its end and no longer written is deleted inside the transaction that removes its total: a
crash before the commit leaves the total of a file that is gone (harmless, and removed at the
next read), never a file whose total is gone (its lines would count again).
"""
from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from pathlib import Path
from typing import Callable

from ..cachedir import CacheDir
from ..catalog import Catalog
from ..perprocess import Once

log = logging.getLogger(__name__)
LOCK = "front-log"
OFFSET = "front_log_offset:"  # + file name: the bytes of that file already counted
INTERVAL = 1.0  # seconds between two reads, like the recorder's flushes
DONE_AFTER = 120.0  # seconds without a write before a file read to its end may go
MAX_READ = 4 << 20  # bytes read per transaction


class FrontLog:
    def __init__(self, cachedir: CacheDir, catalog: Catalog,
                 counted: Callable[[int, int], None] | None = None):
        self.cachedir, self.catalog = cachedir, catalog
        self.directory = cachedir.root / "front"
        self.counted = counted  # (hits, bytes) once committed: for the Prometheus counters
        self._thread: threading.Thread | None = None
        self.start = Once(self._start)  # run `read` about once a second (idempotent, cheap)

    def _start(self) -> None:
        """A daemon thread of this process that runs `read` about once a second."""
        me = weakref.ref(self)  # the thread ends with its app (tests make many)
        self._thread = threading.Thread(target=_run, args=(me,), name="front log", daemon=True)
        self._thread.start()

    def read(self) -> int:
        """Count every complete new line of every file; how many lines (0 if another worker
        is reading or there is no front)."""
        if not self.directory.is_dir():
            return 0
        lock = self.cachedir.try_lock(LOCK)
        if lock is None:
            return 0
        try:
            done = self.catalog.totals()
            paths = sorted(self.directory.glob("*.log"))
            present = {OFFSET + path.name for path in paths}
            for gone in [name for name in done if name.startswith(OFFSET) and name not in present]:
                self.catalog.drop_total(gone)  # its file went, a crash stopped the commit
            return sum(
                self._read_file(path, int(done.get(OFFSET + path.name, 0)), path == paths[-1])
                for path in paths
            )
        finally:
            self.cachedir.unlock(LOCK, lock)

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
            # nginx writes the newest name; this one is done: it goes with its total.
            self.catalog.drop_total(OFFSET + path.name, then=lambda: path.unlink(missing_ok=True))
        return lines

    def _count(self, name: str, data: bytes) -> int:
        """Add one batch of lines and the new offset in one transaction.

        A line is `time method status path bytes seconds`, tab-separated (the template's
        log_format): split, not parsed as JSON: the reader runs once per hit.
        """
        files: dict[bytes, list] = {}  # path -> [hits, latest time as nginx wrote it]
        hits = sent = timed_bytes = 0
        timed_seconds = 0.0
        lines = data.split(b"\n")[:-1]
        for line in lines:
            fields = line.split(b"\t")
            if len(fields) != 6 or not fields[2].isdigit() or not fields[4].isdigit():
                log.warning("skipping a line of the nginx front's log: %.200r", line)
                continue
            at, method, status, path, size, seconds = fields
            if status[0] >= 0x34:  # 4xx, 5xx: a 416 or a refused request counts nowhere
                continue
            row = files.get(path)
            if row is None:
                row = files[path] = [0, at]
            elif at > row[1]:  # same width for centuries: bytes compare as numbers
                row[1] = at
            if method != b"GET":  # a HEAD is a use, not a hit (as the app counts them)
                continue
            row[0] += 1
            hits += 1
            if status == b"200" or status == b"206":
                sent += int(size)
                if seconds != b"0.000":  # nginx times in milliseconds: small files take "0"
                    timed_bytes += int(size)
                    timed_seconds += float(seconds)
        totals = {"requests_hit": hits, "bytes_hit": sent, OFFSET + name: len(data)}
        if timed_bytes:
            totals |= {"timed_hit_bytes": timed_bytes, "timed_hit_seconds": timed_seconds}
        rows = [(count, float(last), path.decode()) for path, (count, last) in files.items()]
        self.catalog.add_stats(rows, totals, {})
        if self.counted is not None:
            self.counted(hits, sent)
        return len(lines)


def _run(reader: weakref.ref) -> None:
    while True:
        time.sleep(INTERVAL)
        front_log = reader()
        if front_log is None:
            return
        try:
            front_log.read()
        except Exception:  # the thread must live on: a bad moment of the disk or SQLite
            log.exception("could not read the nginx front's log")
        del front_log
