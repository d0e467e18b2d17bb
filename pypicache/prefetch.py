"""Fetching ahead: when a client gets a wheel's core metadata, what its requirements will make
that client ask for next (each required project's page and the `.metadata` of the release it
would pick, then their requirements, to a depth) is fetched in the background, so that the
resolver's next questions are hits.

Everything goes through the paths clients take (Pages.project, Metadata.open,
Fetcher.single_flight), so a client asking for something being fetched ahead follows that one
fetch. The work is bounded per worker: a few daemon threads started on first use (after the
fork), a queue that drops what does not fit, each item done once per page TTL, a download
slot taken only when the worker has slots to spare, and a pause after an upstream failure.
"""
from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

from packaging.specifiers import SpecifierSet

from . import names
from .candidates import choose_in
from .environments import CLIENTS_KEPT, Client, applies, client_of
from .errors import BadRequest, NotFound
from .perprocess import Once
from .stats.signals import fetch_ahead_dropped, fetch_ahead_failed, fetched_ahead
from .wheelmeta import requirements

log = logging.getLogger(__name__)
PAUSE = 30.0  # seconds without fetching ahead after an upstream failure
SEEN_KEPT = 10_000  # items a worker remembers having fetched ahead (oldest out first)
METADATA_LIMIT = 4 << 20  # a core metadata file is a few KB; past this its requirements are skipped
FETCHED = ("miss", "revalidated")  # what a page or file answer says when the upstream was asked


@dataclass(frozen=True)
class Job:
    """Fetch `project`'s page and the metadata of the release chosen for `specifier` (with
    `extras`), then queue its requirements; for `project` None, queue the requirements of
    the `.metadata` at `path` (what a client has just been sent)."""

    project: str | None
    path: str
    specifier: str
    extras: tuple[str, ...]
    client: Client
    depth: int


class _Stop(Exception):
    """A step failed: this job ends, and fetching ahead pauses."""


class Prefetcher:
    def __init__(self, settings, pages, metadata, fetcher):
        self.settings, self.pages, self.metadata, self.fetcher = settings, pages, metadata, fetcher
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending = 0  # jobs queued or running
        self._seen: OrderedDict[tuple, float] = OrderedDict()
        self._clients: dict[str, Client] = {}
        self._paused_until = 0.0
        self._start = Once(self._start_threads)  # the threads and queue of this process
        self._queue: queue.Queue = queue.Queue(settings.prefetch_queue)
        self._threads: list[threading.Thread] = []

    # --- from a request: cheap, never waits ----------------------------------------------
    def after_metadata(self, path: str, user_agent: str) -> None:
        """A client was sent the `.metadata` at `path`: queue what it will ask for next."""
        if self.settings.prefetch:
            client = self._client(user_agent)
            self._submit(Job(None, path, "", (), client, 0))

    def after_page(self, project: str, cache: str, user_agent: str) -> None:
        """A client was sent a page the upstream was just asked for (a page fetched ahead is
        served as a hit, and its job is under way): queue the `.metadata` of the release it
        will pick there, the latest, and what that requires. The client's next question is
        that file; fetched from here it arrives a client's round trip sooner, and the levels
        below begin as soon as it is here."""
        if self.settings.prefetch and cache in FETCHED:
            self._submit(Job(project, "", "", (), self._client(user_agent), 0))

    def _client(self, user_agent: str) -> Client:
        client = self._clients.get(user_agent)
        if client is None:
            if len(self._clients) >= CLIENTS_KEPT:
                self._clients.clear()
            client = self._clients[user_agent] = client_of(user_agent[:2000])
        return client

    def _submit(self, job: Job) -> None:
        """Queue a job unless it was done lately (once per page TTL), or drop it (counted)
        when fetching ahead is paused or the queue is full."""
        key = _key(job)
        now = time.monotonic()
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen < self.settings.index_ttl:
                return
            accepted = now >= self._paused_until and self._put(job)
            if accepted:
                self._pending += 1
                self._seen[key] = now
                self._seen.move_to_end(key)
                while len(self._seen) > SEEN_KEPT:
                    self._seen.popitem(last=False)
        if not accepted:
            fetch_ahead_dropped.send(self, count=1)

    def _put(self, job: Job) -> bool:
        self._start()
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            return False
        return True

    def _start_threads(self) -> None:
        """Under the lock: this process's threads, started on first use (so after a fork)."""
        self._pending = 0
        self._queue = queue.Queue(self.settings.prefetch_queue)
        self._threads = [threading.Thread(target=self._run, name=f"fetch ahead {i}", daemon=True)
                         for i in range(self.settings.prefetch_concurrency)]
        for thread in self._threads:
            thread.start()

    # --- the threads -----------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            try:
                if time.monotonic() < self._paused_until:
                    fetch_ahead_dropped.send(self, count=1)
                elif self._claim(job):
                    self._work(job)
            except _Stop:
                self._pause()
            except Exception:  # the thread must live on
                log.exception("fetching ahead for %s failed", job.project or job.path)
                self._pause()
            finally:
                self._finished(1)

    def _claim(self, job: Job) -> bool:
        """Whether this process does `job`: once per page TTL on the machine, not once per
        worker. Each worker's clients ask for the same things, and each worker repeated the
        others' work: on the real index that made a warm resolve twice as slow."""
        return self.fetcher.cachedir.claim("ahead", repr(_key(job)), self.settings.index_ttl)

    def _work(self, job: Job) -> None:
        if job.project is None:
            data = self._read(job.path, count=False)
        else:
            began = time.time()
            page = self._step("page", lambda: self.pages.project(job.project))
            if page is None:
                return
            if page.cache == "stale":  # the upstream failed and the old copy was served
                fetch_ahead_failed.send(self, kind="page")
                raise _Stop
            if page.cache in FETCHED:
                fetched_ahead.send(self, kind="page", key="page:" + job.project, at=began)
            document = self.pages.document(job.project)
            wheel = None if document is None else choose_in(
                document, SpecifierSet(job.specifier), job.client)
            if wheel is None:
                return  # no release fits, or only an sdist: its metadata needs a build
            data = self._read(wheel.path + ".metadata", count=True)
        if data is not None and job.depth < self.settings.prefetch_depth:
            self._requirements(data, job)
        # The wheel last: the next level is queued by then (its download's start waits for
        # the upstream's headers), and its body arrives in a thread of its own.
        if job.project is not None and self.settings.prefetch_files:
            self._file(wheel.path)

    def _requirements(self, data: bytes, job: Job) -> None:
        for requirement in requirements(data):
            if requirement.url or not applies(requirement, job.client, job.extras):
                continue
            try:
                project = names.project_name(requirement.name)
            except BadRequest:
                continue
            self._submit(Job(project, "", str(requirement.specifier),
                             tuple(sorted(requirement.extras)), job.client, job.depth + 1))

    def _step(self, kind: str, action: Callable):
        """`action`'s result; None when the upstream has no such thing; _Stop (counted as a
        failure of `kind`) for any other error."""
        try:
            return action()
        except NotFound:
            return None
        except Exception as error:
            log.info("fetching ahead stopped for %.0f s: %s", PAUSE,
                     getattr(error, "message", None) or type(error).__name__)
            fetch_ahead_failed.send(self, kind=kind)
            raise _Stop from error

    def _read(self, path: str, count: bool) -> bytes | None:
        """The bytes of a `.metadata`, fetched if need be (counted as fetched ahead when this
        thread led the fetch and `count`); None when there is none to read."""
        return self._step("metadata", lambda: self._metadata(path, count))

    def _metadata(self, path: str, count: bool) -> bytes | None:
        hit = self.fetcher.cached(path)
        if hit is not None:
            return hit.read_all(METADATA_LIMIT)
        if not self._spare(1):
            fetch_ahead_dropped.send(self, count=1)
            return None
        began = time.time()
        result = self.metadata.open(path)
        # Counted once this thread leads the fetch, before reading it: a client following
        # it may be answered (and its use flushed) before this thread has read it all.
        if count and result.cache in FETCHED:
            fetched_ahead.send(self, kind="metadata", key=path, at=began)
        return result.read_all(METADATA_LIMIT)

    def _file(self, path: str) -> None:
        """Start the wheel's single-flight download, when half the worker's download slots
        are free: its own thread finishes it (as for a client that went away), so no fetch-
        ahead thread waits for a body, and clients keep the other half of the slots."""
        hit = self._step("file", lambda: self.fetcher.cached(path))
        if hit is not None:
            hit.close()
            return
        if not self._spare(max(1, self.settings.max_downloads // 2)):
            fetch_ahead_dropped.send(self, count=1)
            return
        began = time.time()
        result = self._step("file", lambda: self.fetcher.single_flight(path))
        if result is None:
            return
        if result.cache in FETCHED:
            fetched_ahead.send(self, kind="file", key=path, at=began)
        result.close()

    def _spare(self, needed: int) -> bool:
        return self.fetcher.slots.free() > needed - 1

    def _pause(self) -> None:
        """After a failure: nothing is fetched ahead for PAUSE seconds, the queue dropped."""
        with self._lock:
            self._paused_until = time.monotonic() + PAUSE
        dropped = 0
        with contextlib.suppress(queue.Empty):
            while True:
                job = self._queue.get_nowait()
                if job is None:  # close() asked a thread to end: leave it for one
                    self._queue.put(None)
                    break
                dropped += 1
        if dropped:
            self._finished(dropped)
            fetch_ahead_dropped.send(self, count=dropped)

    def _finished(self, count: int) -> None:
        with self._idle:
            self._pending -= count
            if self._pending <= 0:
                self._idle.notify_all()

    # --- for tests and a clean stop --------------------------------------------------------
    def wait_idle(self, timeout: float) -> bool:
        """Whether every queued job was done (or dropped) within `timeout` seconds."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending <= 0, timeout)

    def close(self) -> None:
        """End this process's threads once the jobs queued before are done."""
        if not self._start.done:
            return
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()
        self._threads = []
        self._start.forget()


def _key(job: Job) -> tuple:
    """What makes two jobs the same work."""
    return (job.project, job.path if job.project is None else job.specifier, job.extras,
            job.client)

