"""Big index pages are parsed in a helper process, so that one huge page never holds a worker's GIL."""
from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from . import index
from .errors import UpstreamError

# Below this a page parses in milliseconds: in the request thread. Above, BeautifulSoup
# would hold the GIL for seconds (a 64 MiB page for about a minute) and stall every other
# request of the worker, hits included.
BIG = 2 << 20


class Parser:
    """index.parse, in one helper process per worker for big pages (started on first use)."""

    def __init__(self, threshold: int = BIG):
        self.threshold = threshold
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def parse(self, body: bytes, content_type: str, url: str, name: str,
              linker: index.Linker) -> index.Project:
        if len(body) < self.threshold:
            return index.parse(body, content_type, url, name, linker)
        try:
            return self._helper().submit(index.parse, body, content_type, url, name, linker).result()
        except BrokenProcessPool:  # the helper died (out of memory, killed): a fresh one next time
            with self._lock:
                self._pool = None
            raise UpstreamError(f"parsing the page of {name} failed") from None

    def _helper(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                # forkserver: never fork this multi-threaded worker itself.
                context = multiprocessing.get_context("forkserver")
                self._pool = ProcessPoolExecutor(max_workers=1, mp_context=context)
            return self._pool
