"""Download slots: at most N upstream downloads per worker and M over all workers at once.

Per worker a semaphore; over all workers a fixed pool of M lock files (slot-<i>), each held
by the download that took it and released by the kernel if that worker dies. A request that
finds no free slot waits its turn for a bounded time, then gets 503 with Retry-After.
"""
from __future__ import annotations

import random
import threading
import time

from .errors import Busy
from .store import Store


class Slots:
    def __init__(self, store: Store, per_worker: int, total: int, wait: float):
        self.store, self.total, self.wait = store, total, wait
        self._mine = threading.BoundedSemaphore(per_worker)

    def acquire(self) -> tuple[str, int]:
        """A slot (release it with `release`), or Busy after the bounded wait."""
        deadline = time.monotonic() + self.wait
        if not self._mine.acquire(timeout=self.wait):
            raise self._busy("this worker")
        try:
            delay = 0.01
            while True:
                start = random.randrange(self.total)  # spread the probes over the pool
                for i in range(self.total):
                    name = f"slot-{(start + i) % self.total}"
                    fd = self.store.try_lock(name)
                    if fd is not None:
                        return name, fd
                if time.monotonic() > deadline:
                    raise self._busy("all workers")
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
        except BaseException:
            self._mine.release()
            raise

    def release(self, slot: tuple[str, int]) -> None:
        try:
            self.store.unlock(*slot)
        finally:
            self._mine.release()

    def _busy(self, where: str) -> Busy:
        return Busy(f"too many downloads at once in {where}; try again shortly",
                    retry_after=max(1, round(self.wait)))
