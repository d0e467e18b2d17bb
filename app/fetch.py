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

import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import BinaryIO, Iterator
from urllib.parse import quote

from packaging.utils import canonicalize_name
from werkzeug.datastructures import Range

from . import indexes, names, ranges
from .catalog import Catalog
from .errors import IntegrityError, NotFound, ProxyError, UpstreamTimeout
from .store import Store, key, storage_error
from .stats.signals import file_cached
from .upstream import CHUNK, Upstream

log = logging.getLogger(__name__)


class DownloadAborted(Exception):
    """The download this response follows failed: the connection must be cut, not ended."""


class DownloadStalled(DownloadAborted):
    """No new byte of the download for the read timeout."""


@dataclass
class Hit:
    """A cached file, already open: eviction may unlink it now and this reader still gets
    every byte (an open descriptor keeps the inode), so there is no check-then-open race."""

    file: BinaryIO
    cache: str = "hit"


class Follow:
    """A download in progress, read from its temp file as it grows.

    `size` is known when the index or the upstream said it. The bytes that end the requested
    range go out only once the file is published, so a failed download always ends in an
    aborted response, never in a complete-looking wrong body.
    """

    def __init__(self, fetcher: "Fetcher", path: str, fd: int, size: int | None, cache: str):
        self.fetcher, self.path, self.fd, self.size = fetcher, path, fd, size
        self.cache = cache  # "miss" for the client that started it, "follower" for the others
        # A range that ends before the file's end, taken from the download on its way
        # (Fetcher._range): its last bytes need not wait for the publish, as they are no
        # less checked than the same range asked of the upstream.
        self.early = False

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def published(self) -> bool:
        return self.fetcher._published(self.path, self.fd)

    def landed(self, start: int, stop: int) -> bool:
        """Whether [start, stop) can go out now or as the bytes land: it has begun landing
        and it ends before the file's last byte (which waits for the whole download)."""
        return self.size is not None and stop < self.size and start < os.fstat(self.fd).st_size

    def stream(self, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
        """Bytes [start, stop) (to the end when stop is None), as they land."""
        end = self.size if stop is None else stop
        store, stall = self.fetcher.store, self.fetcher.stall
        position, last_progress, delay = start, time.monotonic(), 0.001

        def read() -> bytes:
            return os.pread(self.fd, CHUNK if end is None else min(CHUNK, end - position), position)

        try:
            while end is None or position < end:
                chunk = read()
                if chunk and (end is None or position + len(chunk) < end or self.early):
                    position += len(chunk)
                    yield chunk
                    last_progress, delay = time.monotonic(), 0.001
                    continue
                # Nothing new, or the last bytes: those wait for the publish. Published means
                # verified; what the writer does after (the catalog, under load a slow SQLite
                # lock) must not hold the client's last bytes back.
                if self.published():
                    while (end is None or position < end) and (chunk := read()):
                        position += len(chunk)
                        yield chunk
                    return
                if not store.held_by_other(self.fd):
                    if self.published():  # published between the two looks
                        continue
                    raise DownloadAborted(f"download of {names.filename(self.path)} failed")
                if time.monotonic() - last_progress > stall:
                    raise DownloadStalled(f"download of {names.filename(self.path)} stalled")
                time.sleep(delay)
                delay = min(delay * 2, 0.02)
        finally:
            self.close()


class Fetcher:
    def __init__(self, settings, store: Store, catalog: Catalog, upstream: Upstream):
        self.settings = settings
        self.store = store
        self.catalog = catalog
        self.upstream = upstream
        self.stall = settings.read_timeout  # no new byte for this long: give up

    def open(self, path: str, byte_range: Range | None = None) -> Hit | Follow | ranges.Part:
        """The cached file, or a stream of its download (started here or by another worker).

        A range of a file not cached starts no download (docs/DESIGN.md): it is followed
        in a download already under way that has reached it, else asked of the upstream.
        """
        if (hit := self.cached(path)) is not None:
            return hit
        if byte_range is not None:
            part = self._range(path, byte_range)
            if part is not None:
                return part
        return self.single_flight(path)

    def _range(self, path: str, byte_range: Range) -> Follow | ranges.Part | None:
        follow = self._follow(path)
        if follow is not None:
            span = byte_range.range_for_length(follow.size) if follow.size is not None else None
            if span is not None and follow.landed(*span):
                follow.early = True
                return follow
            follow.close()
        _, _, size = self.catalog.expected(path)
        try:
            return ranges.part(self.upstream, self.url(path), byte_range.to_header(), size)
        except ranges.RangesIgnored:
            return None  # the upstream sends whole files only: follow the one download

    def url(self, path: str) -> str:
        """The upstream URL of a file path (its upstream's files URL: app/indexes.py)."""
        up, upstream_path = indexes.locate(self.settings, path)
        return f"{up.files_url}/{quote(upstream_path)}"

    def single_flight(self, path: str) -> Hit | Follow:
        """The cached file, or a stream of its one download."""
        deadline = time.monotonic() + self.stall
        delay = 0.002
        while True:
            if (hit := self.cached(path)) is not None:
                return hit
            lock = self.store.try_lock(path)
            if lock is not None:
                if (hit := self.cached(path)) is not None:
                    os.close(lock)
                    return hit
                return self._lead(path, lock)
            follow = self._follow(path)
            if follow is not None:
                return follow
            if time.monotonic() > deadline:
                raise UpstreamTimeout("another worker's download did not start in time")
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def cached(self, path: str) -> Hit | None:
        try:
            return Hit(open(self.store.file(path), "rb"))
        except FileNotFoundError:
            return None
        except (IsADirectoryError, NotADirectoryError):
            raise NotFound(f"not a file: {names.filename(path)}") from None

    # --- the worker that downloads -------------------------------------------------------
    def _lead(self, path: str, lock: int) -> Follow:
        response = fd = part = None
        try:
            self._clear_dead(path)
            project, sha256, size = self.catalog.expected(path)
            response = self.upstream.get(self.url(path), headers={"Accept-Encoding": "identity"})
            length = response.headers.get("Content-Length")
            length = int(length) if length and length.isdigit() else None
            if size is not None and length is not None and size != length:
                raise IntegrityError(f"upstream length {length} differs from the index's {size}")
            size = size if size is not None else length
            fd, part = self.store.new_temp(key(path))
            self.store.write_json(self.store.announce_path(path), {"part": part.name, "size": size})
            follow = self._follow(path, cache="miss")
            assert follow is not None  # we hold the temp file's flock, so it is live
        except BaseException:
            if response is not None:
                response.close()
            if fd is not None:
                part.unlink(missing_ok=True)
                os.close(fd)
            os.close(lock)
            raise
        job = _Download(self, path, project, sha256, size, response, fd, part, lock)
        # Not a daemon: a worker leaving gracefully (SIGHUP, SIGTERM) exits through sys.exit,
        # which waits for the download (each read bounded by the read timeout; the arbiter
        # still kills the worker after graceful_timeout), even once its own client is gone.
        name = f"download {names.filename(path)}"
        threading.Thread(target=job.run, name=name, daemon=False).start()
        return follow

    def _clear_dead(self, path: str) -> None:
        """We hold the lock, so any temp file of this path belongs to a dead writer."""
        self.store.announce_path(path).unlink(missing_ok=True)
        for part in self.store.tmp.glob(f"{key(path)}.*.part"):
            part.unlink(missing_ok=True)

    # --- every client --------------------------------------------------------------------
    def _follow(self, path: str, cache: str = "follower") -> Follow | None:
        try:
            announce = json.loads(self.store.announce_path(path).read_bytes())
            fd = os.open(self.store.tmp / announce["part"], os.O_RDONLY)
        except (OSError, ValueError, KeyError):
            return None  # not announced yet, or already gone: the caller looks again
        if not self.store.held_by_other(fd) and not self._published(path, fd):
            os.close(fd)  # a dead writer's leftovers
            return None
        return Follow(self, path, fd, announce["size"], cache)

    def _published(self, path: str, fd: int) -> bool:
        try:
            done = os.stat(self.store.file(path))
        except OSError:
            return False
        mine = os.fstat(fd)
        return (done.st_ino, done.st_dev) == (mine.st_ino, mine.st_dev)


class _Download:
    """The background copy of one upstream body into its temp file, then verify and publish."""

    def __init__(self, fetcher, path, project, sha256, size, response, fd, part, lock):
        self.fetcher, self.path, self.project = fetcher, path, project
        self.sha256, self.size, self.response = sha256, size, response
        self.fd, self.part, self.lock = fd, part, lock

    def run(self) -> None:
        store = self.fetcher.store
        digest, written = hashlib.sha256(), 0
        started = time.monotonic()  # the upstream throughput t on the dashboard (app/stats)
        try:
            for chunk in self.fetcher.upstream.iter_body(self.response):
                _write_all(self.fd, chunk)
                digest.update(chunk)
                written += len(chunk)
            if self.size is not None and written != self.size:
                raise IntegrityError(f"got {written} bytes, expected {self.size}")
            if self.sha256 and digest.hexdigest() != self.sha256:
                raise IntegrityError("sha256 does not match the index")
            store.publish(self.part, store.file(self.path))
            self.fetcher.catalog.record_cached(
                self.path, self.project or _project_of(self.path), written, digest.hexdigest()
            )
            log.info("cached %s (%d bytes)", self.path, written)
            file_cached.send(self.fetcher, path=self.path, size=written,
                             seconds=time.monotonic() - started)
        except (ProxyError, OSError) as error:
            if isinstance(error, OSError):
                error = storage_error(error)
            log.warning("download of %s failed: %s", self.path, error.message)
            self.part.unlink(missing_ok=True)
        except BaseException:
            log.exception("download of %s failed", self.path)
            self.part.unlink(missing_ok=True)
        finally:
            self.response.close()
            store.announce_path(self.path).unlink(missing_ok=True)
            os.close(self.fd)  # followers see the writer gone: published, or abort
            os.close(self.lock)
            self.fetcher.catalog.release()  # this thread ends here


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _project_of(path: str) -> str:
    """Best guess of a project from a file name, for files no page listed."""
    stem = names.filename(path).split("-", 1)[0]
    return canonicalize_name(stem)
