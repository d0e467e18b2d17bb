"""PEP 740 provenance through the proxy, its copies: each file's provenance object fetched from
the URL its page gives, checked, cached next to the file (`files/<path>.provenance`) and served
at `/packages/<path>.provenance`, so that an air-gapped site can verify attestations; fetched
when a client asks for it, and along with the file's own download (pypicache/provenance.py
points the pages of https clients at these copies).
"""
from __future__ import annotations

import hashlib
import logging
import queue
import threading
from typing import Any

from .errors import NotFound, ProxyError, StorageError, UpstreamError
from .fetch import Fetcher
from .listings import Listed
from .perprocess import Once
from .provenance import SUFFIX, check, distribution
from .results import FileAnswer, Head

log = logging.getLogger(__name__)
MAX_SIZE = 4 << 20  # a provenance object is a few KB per attestation; more is an upstream fault
QUEUED = 256  # provenance fetched along with downloads, waiting per worker; past it, dropped
# What PyPI's integrity API answers with (and any JSON).
ACCEPT = "application/vnd.pypi.integrity.v1+json, application/json;q=0.9"


class Provenance:
    """Answers `<file>.provenance`: the cached copy, else the upstream's provenance object of
    the file (the URL its page gives), checked and cached; and fetches it along when the file
    itself is downloaded, in a thread of the worker, never holding up or failing the file."""

    def __init__(self, fetcher: Fetcher):
        self.fetcher, self.cachedir, self.catalog = fetcher, fetcher.cachedir, fetcher.catalog
        self.listings, self.upstream = fetcher.listings, fetcher.upstream
        self.wait = sum(fetcher.upstream.timeout)  # another worker's fetch: connect + read
        self._queue: queue.Queue[str] = queue.Queue(QUEUED)
        self._started = Once(self._start)

    def open(self, path: str) -> FileAnswer:
        if (hit := self.fetcher.cached(path)) is not None:
            return hit
        listed = self._claimed(path)
        with self.cachedir.lock(path, timeout=self.wait):
            if (hit := self.fetcher.cached(path)) is not None:
                return hit
            data = self._fetch(listed)
            self.cachedir.write_file(path, data)
            # Its catalog row (size cap, statistics, verify) comes with the next flush.
            self.catalog.record_cached(path, listed.project, len(data),
                                       hashlib.sha256(data).hexdigest())
        self.fetcher.made_here(path)  # other nodes' copy (pypicache/cluster.py)
        result = self.fetcher.cached(path)
        if result is None:
            raise StorageError(f"{path} was evicted as soon as it was cached")
        result.cache = "miss"
        return result

    def describe(self, path: str) -> FileAnswer:
        """A HEAD: the cached copy, else a 200 without a length when the page claims one (a
        GET fetches it), else a 404; nothing is fetched but the page."""
        if (hit := self.fetcher.cached(path)) is not None:
            return hit
        self._claimed(path)
        return Head(path, None)

    def _claimed(self, path: str) -> Listed:
        listed = self.listings.require(distribution(path))
        if not listed.file.provenance:
            raise NotFound(f"the upstream gives no provenance for {listed.file.filename}")
        return listed

    def _fetch(self, listed: Listed) -> bytes:
        response = self.upstream.get(listed.file.provenance,
                                     headers={"Accept": ACCEPT, "Accept-Encoding": "identity"})
        parts, size = [], 0
        for chunk in self.upstream.iter_body(response):
            size += len(chunk)
            if size > MAX_SIZE:
                response.close()
                raise UpstreamError(f"the provenance of {listed.file.filename} is over "
                                    f"{MAX_SIZE} bytes")
            parts.append(chunk)
        data = b"".join(parts)
        check(data, listed.file.filename, listed.sha256)
        return data

    # --- along with downloads ------------------------------------------------------------
    def after_download(self, sender: Any, path: str, **_: Any) -> None:
        """A file was published (the file_cached signal, in its download thread): its
        provenance is queued for this worker's thread, or dropped if the queue is full."""
        if path.endswith((SUFFIX, ".metadata")):
            return
        self._started()
        try:
            self._queue.put_nowait(path)
        except queue.Full:
            log.info("provenance of %s not fetched along: the queue is full", path)

    def _start(self) -> None:
        threading.Thread(target=self._run, name="provenance", daemon=True).start()

    def _run(self) -> None:
        while True:
            path = self._queue.get()
            try:
                listed = self.listings.find(path)
                if listed is not None and listed.file.provenance:
                    self.open(path + SUFFIX).close()
            except (ProxyError, OSError) as error:
                message = getattr(error, "message", None) or str(error)
                log.info("provenance of %s not fetched along: %s", path, message)
            except Exception:  # never let the thread die: the next download needs it
                log.exception("provenance of %s not fetched along", path)
            finally:
                self.catalog.release()  # this thread's connection, as a download thread's
                self._queue.task_done()

    def idle(self) -> bool:
        """Whether nothing is waiting to be fetched along (tests)."""
        return self._queue.unfinished_tasks == 0
