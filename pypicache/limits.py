"""Download slots: at most N upstream downloads per worker and M over all workers at once.

Per worker a semaphore; over all workers a fixed pool of M lock files (slot-<i>), each held
by the download that took it and released by the kernel if that worker dies. A request that
finds no free slot waits its turn for a bounded time, then gets 503 with Retry-After.
"""
from __future__ import annotations

import random
import threading
import time

from . import wakeups
from .cachedir import CacheDir
from .errors import Busy


class Slots:
    def __init__(self, cachedir: CacheDir, per_worker: int, total: int, wait: float):
        self.cachedir, self.total, self.wait = cachedir, total, wait
        self._mine = threading.BoundedSemaphore(per_worker)
        self._free = per_worker  # what the semaphore has left, for free()
        self._count = threading.Lock()

    def acquire(self) -> tuple[str, int]:
        """A slot (release it with `release`), or Busy after the bounded wait."""
        deadline = time.monotonic() + self.wait
        if not self._mine.acquire(timeout=self.wait):
            raise self._busy("this worker")
        self._add(-1)
        try:
            backoff = wakeups.Backoff(0.01, 0.2)
            while True:
                start = random.randrange(self.total)  # spread the probes over the pool
                for i in range(self.total):
                    name = f"slot-{(start + i) % self.total}"
                    fd = self.cachedir.try_lock(name)
                    if fd is not None:
                        return name, fd
                if time.monotonic() > deadline:
                    raise self._busy("all workers")
                backoff.wait()
        except BaseException:
            self._add(1)
            self._mine.release()
            raise

    def release(self, slot: tuple[str, int]) -> None:
        try:
            self.cachedir.unlock(*slot)
        finally:
            self._add(1)
            self._mine.release()

    def free(self) -> int:
        """Slots of this worker not taken now (work that can wait asks before it takes one)."""
        return self._free

    def _add(self, change: int) -> None:
        with self._count:
            self._free += change

    def _busy(self, where: str) -> Busy:
        return Busy(f"too many downloads at once in {where}; try again shortly",
                    retry_after=max(1, round(self.wait)))
