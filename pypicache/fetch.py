"""Single-flight downloads shared by every worker.

The first request for an uncached file takes the file's lock, asks the upstream for it (so a
404 or 502 is still a clean answer), announces a temp file in tmp/ and copies the body into it
in a background thread, verifying length and sha256 before the atomic publish. Every client,
the first one included, follows the temp file as it grows; a follower never sends the last
chunk before the file is published, so a failed download always ends in an aborted response
rather than a complete-looking wrong body. Liveness is the writer's flock on its temp file:
the kernel drops it when the writer dies (SIGKILL, timeout), and followers abort.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import time

from . import background, conditional, ranges, wakeups
from .cachedir import CacheDir, key
from .catalog import Catalog
from .download import Download
from .errors import (
    Busy, IntegrityError, NotFound, ProxyError, StorageError, UpstreamError, UpstreamTimeout,
)
from .httpclient import Upstream
from .limits import Slots
from .listings import Listed, Listings
from .results import FileAnswer, Follow, Head, Hit

log = logging.getLogger(__name__)
# What a waiter answers when the leader it waited on failed with this status.
_SHARED = {404: NotFound, 503: Busy, 504: UpstreamTimeout, 507: StorageError}


class Fetcher:
    def __init__(self, settings, cachedir: CacheDir, catalog: Catalog, upstream: Upstream,
                 listings: Listings):
        self.settings = settings
        self.cachedir = cachedir
        self.catalog = catalog
        self.upstream = upstream
        self.listings = listings  # what the pages promise of each file (fetching them if need be)
        # No new byte for this long: give up. A second more than the leader's own read
        # timeout, so that a stalled upstream ends in the leader's clean abort first.
        self.stall = settings.read_timeout + 1
        self.slots = Slots(cachedir, settings.max_downloads, settings.max_downloads_total,
                           settings.download_wait)
        # How long a leader may take to announce: a slot, then the upstream's headers.
        self.start_wait = settings.download_wait + settings.connect_timeout + settings.read_timeout

    def open(self, path: str, ask: conditional.Ask = conditional.PLAIN) -> FileAnswer:
        """The cached file, or a stream of its download (started here or by another worker).

        A request for less than the whole file starts no download (docs/DESIGN.md): a range
        is followed in a download already under way that has reached it, else asked of the
        upstream; a 304, 412 or 416 is a Head of the file's size, answered as it says.
        """
        if (hit := self.cached(path)) is not None:
            return hit
        listed = self.listings.require(path)
        if not ask.plain:
            early = self._before_download(path, ask, listed)
            if early is not None:
                return early
        return self.single_flight(path, listed)

    def describe(self, path: str) -> FileAnswer:
        """The cached file (here or, for ClusterFetcher, in the bucket), or what the upstream's
        HEAD says of it. A HEAD starts no download (a whole file fetched to report its length
        would also let anyone fill the cache at no cost to themselves)."""
        if (hit := self.cached(path)) is not None:
            return hit
        listed = self.listings.require(path)
        return Head(path, _agreed(listed.size, self.upstream.head(listed.url)))

    def _before_download(self, path: str, ask: conditional.Ask,
                         listed: Listed) -> FileAnswer | None:
        """What a conditional or range request gets without a download, if anything: the
        answer follows from the file's size (the index's, else the upstream's HEAD), as it
        will once the file is published (pypicache/conditional.py)."""
        size = listed.size
        if size is None:
            try:
                size = self.upstream.head(listed.url)
            except UpstreamTimeout:
                raise
            except UpstreamError:  # an upstream may refuse a HEAD and still send the file
                return None
        head = Head(path, size)
        answer = head.answer(ask)
        if answer.status == 206:
            return self._range(listed, answer, size)
        return None if answer.has_body else head

    def _range(self, listed: Listed, answer: conditional.Answer, size: int) -> FileAnswer | None:
        follow = self._follow(listed.path)
        if follow is not None:
            if follow.size == size and follow.landed(answer.start, answer.stop):
                follow.early = True
                return follow
            follow.close()
        try:
            return ranges.part(self.upstream, listed.url, listed.path, answer.start,
                               answer.stop, size)
        except ranges.RangesIgnored:
            return None  # the upstream sends whole files only: follow the one download

    def single_flight(self, path: str, listed: Listed | None = None) -> FileAnswer:
        """The cached file, or a stream of its one download (`listed`: what its page says,
        when the caller has it)."""
        started = time.time()
        deadline = time.monotonic() + self.start_wait
        # The leader's announcement wakes us in this process; from another, it comes once the
        # upstream's headers do, which a follower of a far upstream's small file (a
        # .metadata) waited for 25 ms more on average with looks 50 ms apart.
        backoff = wakeups.Backoff(0.002, 0.01, path, later=0.05)
        while True:
            backoff.arm()
            if (hit := self.cached(path)) is not None:
                return hit
            lock = self.cachedir.try_lock(path)
            if lock is not None:
                if (hit := self.cached(path)) is not None:
                    self.cachedir.unlock(path, lock)
                    return hit
                self._share_failure(path, started, lock)
                return self._lead(path, lock, listed)
            follow = self._follow(path)
            if follow is not None:
                return follow
            if time.monotonic() > deadline:
                raise UpstreamTimeout("another worker's download did not start in time")
            backoff.wait()

    def _share_failure(self, path: str, since: float, lock: int) -> None:
        """A leader that failed before its first byte while we waited left its error in the
        announcement: answer it too, rather than each waiter trying again in turn (which made
        n waiters on a black hole wait n timeouts). Whoever comes later tries afresh."""
        try:
            note = json.loads(self.cachedir.announce_path(path).read_bytes())
        except (OSError, ValueError):
            return
        if isinstance(note, dict) and note.get("failed") and note.get("at", 0) >= since:
            self.cachedir.unlock(path, lock)
            raise _SHARED.get(note["failed"], UpstreamError)(
                note.get("message", "upstream failed"), note.get("retry_after"))

    def cached(self, path: str) -> FileAnswer | None:
        """The published file, open; None when it is not (a directory never is: no page
        lists one, so the next step answers 404)."""
        try:
            return Hit(path, self.cachedir.storage.get(path))
        except FileNotFoundError:
            return None

    def made_here(self, path: str) -> None:
        """A file this node made rather than downloaded (a wheel's METADATA) was published."""

    def local(self, path: str) -> FileAnswer | None:
        """This node's own copy of `path`: published, or its download in progress; nothing
        else is looked at or started (what another node reads, pypicache/views/peers.py)."""
        return Fetcher.cached(self, path) or self._follow(path, cache="node")

    # --- the worker that downloads -------------------------------------------------------
    def _source(self, path: str, listed: Listed):
        """The response a download copies: the upstream's file (pypicache/cluster.py: or another
        node's download of it)."""
        return self.upstream.get(listed.url, headers={"Accept-Encoding": "identity"})

    def resume(self, path: str, listed: Listed, written: int):
        """Another response with the bytes from `written` on, after the source failed; None:
        the download fails (one node asks the upstream once; pypicache/cluster.py can do more)."""
        return None

    def _lead(self, path: str, lock: int, listed: Listed | None = None) -> Follow:
        response = fd = part = slot = None
        try:
            self._clear_dead(path)
            listed = listed or self.listings.require(path)
            sha256, size = listed.sha256, listed.size
            slot = self.slots.acquire()
            response = self._source(path, listed)
            length = response.headers.get("Content-Length")
            size = _agreed(size, int(length) if length and length.isdigit() else None)
            fd, part = self.cachedir.new_temp(key(path))
            self.cachedir.write_json(self.cachedir.announce_path(path),
                                     {"part": part.name, "size": size})
            wakeups.changed(path)  # clients of this process waiting for it to start
            follow = self._follow(path, cache="miss")
            assert follow is not None  # we hold the temp file's flock, so it is live
        except BaseException as error:
            if isinstance(error, ProxyError):  # for the clients waiting on us (_share_failure)
                with contextlib.suppress(ProxyError, OSError):
                    self.cachedir.write_json(self.cachedir.announce_path(path), {
                        "failed": error.status, "message": error.message, "at": time.time(),
                        "retry_after": error.retry_after})
            if response is not None:
                response.close()
            if fd is not None:
                part.unlink(missing_ok=True)
                os.close(fd)
            if slot is not None:
                self.slots.release(slot)
            self.cachedir.unlock(path, lock)
            raise
        job = Download(self, listed, sha256, size, response, fd, part, (lock, slot))
        # Joined at exit: a worker leaving gracefully (SIGHUP, SIGTERM) exits through sys.exit,
        # which waits for the download (each read bounded by the read timeout; the arbiter
        # still kills the worker after graceful_timeout), even once its own client is gone.
        # There are at most PYPI_MAX_DOWNLOADS at once: each holds a download slot.
        background.run(job.run)
        return follow

    def _clear_dead(self, path: str) -> None:
        """We hold the lock, so any temp file of this path belongs to a dead writer."""
        self.cachedir.announce_path(path).unlink(missing_ok=True)
        # `<key>.*.part` by name: Path.glob compiled a new pattern for every download.
        start = key(path) + "."
        with os.scandir(self.cachedir.tmp) as entries:
            for entry in entries:
                name = entry.name
                if (name.startswith(start) and name.endswith(".part")
                        and len(name) >= len(start) + len(".part")):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)

    # --- every client --------------------------------------------------------------------
    def _follow(self, path: str, cache: str = "follower") -> Follow | None:
        try:
            announce = json.loads(self.cachedir.announce_path(path).read_bytes())
            fd = os.open(self.cachedir.tmp / announce["part"], os.O_RDONLY)
        except (OSError, ValueError, KeyError):
            return None  # not announced yet, or already gone: the caller looks again
        if not self.cachedir.held_by_other(fd) and not self.cachedir.published(path, fd):
            os.close(fd)  # a dead writer's leftovers
            return None
        return Follow(self.cachedir, self.stall, path, fd, announce["size"], cache)


def _agreed(size: int | None, length: int | None) -> int | None:
    """The file's size from the index's `size` and the upstream's `length`, either unknown."""
    if size is not None and length is not None and size != length:
        raise IntegrityError(f"upstream length {length} differs from the index's {size}")
    return size if size is not None else length
