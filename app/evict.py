"""The size cap: remove the least recently used files until the cache fits, safely across workers.

Why removing a file is safe, and what it must not race with:

- A file being *written* is never here: downloads live in tmp/ until the atomic rename, and
  eviction only looks at published files (the catalog's `cached` rows).
- A file being *published or re-downloaded* is skipped: the fetcher holds the file's lock
  (store.try_lock(path)) from before it asks the upstream until after the publish, and
  eviction takes the same lock without waiting before it unlinks, so a download never sees
  its fresh file vanish. Eviction only knows files by their catalog rows, which are written
  after the publish (with the worker's next statistics flush), so a row never predates its
  file; eviction removes a file and its row together.
- A file being *served* may be unlinked: a hit opens its file before anything else
  (Fetcher.open), and on Linux an open descriptor keeps the inode alive, so the reader
  finishes with the whole, correct body; the space comes back when it closes. There is no
  window between an existence check and an open: the open is the check.
- Two workers never evict at once (a lock of its own, not waited for: one pass is enough).

Last use comes from the catalog, which every worker updates about once a second; a hit
in the last second may not count yet, which changes the order only among near-ties.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from .catalog import Catalog
from .objects import LocalStorage
from .store import Store

log = logging.getLogger(__name__)
EVICT_LOCK = "evict"  # not a file path: those never lack a '/' or an extension like this


@dataclass
class Eviction:
    files: int = 0
    bytes: int = 0
    remaining: int = 0  # bytes cached after the pass
    skipped: int = 0  # files in use by a download that had to stay


class Evictor:
    def __init__(self, store: Store, catalog: Catalog):
        self.store = store
        self.catalog = catalog
        self.files = LocalStorage(store.files)  # this node's copies; a bucket has its own cap

    def run(self, limit: int, reason: str = "evicted") -> Eviction:
        """Remove least recently used files until the cached bytes are at most `limit`."""
        guard = self.store.try_lock(EVICT_LOCK)
        if guard is None:
            return Eviction(remaining=self.catalog.usage()[1])  # another worker is at it
        try:
            return self._pass(limit, reason)
        finally:
            self.store.unlock(EVICT_LOCK, guard)

    def _pass(self, limit: int, reason: str) -> Eviction:
        result = Eviction(remaining=self.catalog.usage()[1])
        if result.remaining <= limit:
            return result
        for path, project, size, *_ in self.catalog.files():  # least recently used first
            if result.remaining <= limit:
                break
            lock = self.store.try_lock(path)
            if lock is None:
                result.skipped += 1
                continue
            try:
                self.files.delete(path)
                self.catalog.forget(path, reason)
            finally:
                self.store.unlock(path, lock)
            result.files += 1
            result.bytes += size
            result.remaining -= size
        if result.files:
            log.info("evicted %d files (%d bytes) of least recent use; %d bytes cached",
                     result.files, result.bytes, result.remaining)
        return result
