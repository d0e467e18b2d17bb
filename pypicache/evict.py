"""The size cap: remove the least recently used files and pages until the cache fits, safely
across workers.

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
- A *page* (pages/<project>/) goes under the page's own lock, taken without waiting (a page
  being refreshed stays). A worker that read its state just before finds the bodies gone
  and fetches the page again (Pages.open).
- Two workers never evict at once (a lock of its own, not waited for: one pass is enough).

What counts against the cap is the disk the cache takes: files, pages and the catalog.

Last use comes from the catalog, which every worker updates about once a second; a hit
in the last second may not count yet, which changes the order only among near-ties.
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass

from .cachedir import CacheDir
from .catalog import Catalog
from .refresh import lock_name

log = logging.getLogger(__name__)
EVICT_LOCK = "evict"  # not a file path: those never lack a '/' or an extension like this


@dataclass
class Eviction:
    files: int = 0
    bytes: int = 0
    remaining: int = 0  # bytes the cache takes on disk after the pass
    skipped: int = 0  # files in use by a download, or pages being refreshed, that had to stay
    pages: int = 0


class Evictor:
    def __init__(self, cachedir: CacheDir, catalog: Catalog):
        self.cachedir = cachedir
        self.catalog = catalog
        self.files = cachedir.storage  # this node's copies; a bucket has its own cap

    def run(self, limit: int, reason: str = "evicted") -> Eviction:
        """Remove least recently used files and pages until the cache takes at most `limit`
        bytes of disk (files, pages and the catalog)."""
        guard = self.cachedir.try_lock(EVICT_LOCK)
        if guard is None:
            return Eviction(remaining=self.catalog.usage().disk)  # another worker is at it
        try:
            return self._pass(limit, reason)
        finally:
            self.cachedir.unlock(EVICT_LOCK, guard)

    def _pass(self, limit: int, reason: str) -> Eviction:
        result = Eviction(remaining=self.catalog.usage().disk)
        if result.remaining <= limit:
            return result
        for kind, name, size in self.catalog.least_recent():
            if result.remaining <= limit:
                break
            if kind == "page":
                if not self._evict_page(name):
                    result.skipped += 1
                    continue
                result.pages += 1
            else:
                lock = self.cachedir.try_lock(name)
                if lock is None:
                    result.skipped += 1
                    continue
                try:
                    self.files.delete(name)
                    self.catalog.forget(name, reason)
                finally:
                    self.cachedir.unlock(name, lock)
                result.files += 1
            result.bytes += size
            result.remaining -= size
        if result.files or result.pages:
            log.info("evicted %d files and %d pages (%d bytes) of least recent use; %d bytes "
                     "on disk", result.files, result.pages, result.bytes, result.remaining)
        return result

    def _evict_page(self, name: str) -> bool:
        """Remove a cached page unless it is being refreshed right now (its lock is not waited
        for). A reader that has just read its state finds its bodies gone and asks for the page
        again (pypicache/pages.py, Pages.open)."""
        fd = self.cachedir.try_lock(lock_name(name))
        if fd is None:
            return False
        try:
            shutil.rmtree(self.cachedir.pages / name, ignore_errors=True)
            self.catalog.forget_page(name)
        finally:
            self.cachedir.unlock(lock_name(name), fd)
        return True
