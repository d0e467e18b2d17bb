"""Big index pages are parsed in a helper process, so that one huge page never holds a worker's GIL."""
from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from . import pagereader
from .errors import UpstreamError

# Below this a page parses in the request thread, holding the GIL for a few milliseconds at
# a time (a 2.6 MB page of 5,000 files parses in about 40 ms; json.loads holds it for 10).
# Above, the parse would hold it long enough (json.loads of 25 MiB: over a second) to stall
# every other request of the worker, hits included; the helper's cost (pickling the model
# back, about as long as the parse) is then worth it.
BIG = 8 << 20


class Parser:
    """index.document, in one helper process per worker for big pages (started on first use)."""

    def __init__(self, threshold: int = BIG):
        self.threshold = threshold
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def document(self, body: bytes, content_type: str, url: str, name: str,
                 linker: pagereader.Linker, metadata: dict[str, str],
                 earlier: Path | None) -> tuple[bytes, list[str]]:
        args = (body, content_type, url, name, linker, metadata, earlier)
        if len(body) < self.threshold:
            return pagereader.document(*args)
        try:
            return self._helper().submit(pagereader.document, *args).result()
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
