"""What the fetch layer answers a file request with, one interface for every case: the cached
file, a download in progress to follow as it grows, a file in the bucket, or a file not cached
described by its size (a HEAD, or a request whose answer has no body). A range relayed from
the upstream is the same kind of answer (pypicache/ranges.py's Part)."""
from __future__ import annotations

import contextlib
import json
import os
import time
from typing import BinaryIO, Iterator

from . import conditional, names, wakeups
from .cachedir import CacheDir
from .conditional import Answer, Ask, Validator
from .errors import UpstreamError
from .httpclient import CHUNK
from .storage import Blob, FileBlob


class DownloadAborted(UpstreamError):
    """The download this response follows failed: the connection must be cut, not ended.
    `status` is what a client that has had no byte yet is answered (its writer's failure)."""

    def __init__(self, message: str, status: int = 502):
        super().__init__(message)
        self.status = status


class DownloadStalled(DownloadAborted):
    """No new byte of the download for the read timeout."""

    def __init__(self, message: str):
        super().__init__(message, 504)


class FileAnswer:
    """What the fetch layer answers every file request with (fetch.py, metadata.py,
    pypicache/cluster.py), wherever its bytes are: the file's size and validators, where it came
    from (`cache`), its bytes [start, stop) as chunks, and how it answers a request's
    conditionals and range (pypicache/conditional.py, the one resolver). The packages view only
    chooses the response; it never asks which kind it has.

    Reading the chunks raises ProxyErrors (a download that failed, a bucket that went), so the
    first of them can still turn into a clean 502/504/507 and a later one cuts the response.
    """

    path: str
    cache: str
    size: int | None = None  # of the whole file, when known
    file: BinaryIO | None = None  # a local file, open: the server may send it with sendfile
    url: str | None = None  # where the client may fetch it itself (a redirect)

    def validator(self) -> Validator | None:
        """The validators the file carries once published (None while its size is unknown)."""
        return conditional.validator(self.path, self.size)

    def answer(self, ask: Ask) -> Answer:
        return conditional.resolve(ask, self.validator())

    def chunks(self, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
        return iter(())

    def close(self) -> None:
        pass

    def read_all(self, limit: int) -> bytes | None:
        """All the bytes (None past `limit`), the answer closed (fetching ahead reads a
        `.metadata` so)."""
        total, parts = 0, []
        try:
            with contextlib.closing(self.chunks()) as chunks:
                for chunk in chunks:
                    total += len(chunk)
                    if total > limit:
                        return None
                    parts.append(chunk)
        finally:
            self.close()
        return b"".join(parts)


class Hit(FileAnswer):
    """A cached file, already open: eviction may unlink it now and this reader still gets
    every byte (an open descriptor keeps the inode), so there is no check-then-open race."""

    def __init__(self, path: str, blob: FileBlob, cache: str = "hit"):
        self.path, self.blob, self.cache = path, blob, cache
        self.file, self.size = blob.file, blob.size

    def validator(self) -> Validator:
        return conditional.of_open_file(self.file.fileno())  # what nginx sends for it

    def chunks(self, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
        return self.blob.chunks(start, stop)

    def close(self) -> None:
        self.file.close()


class BucketFile(FileAnswer):
    """A file in the bucket, not on this node's disk: streamed from it, or a redirect to it."""

    cache = "bucket"

    def __init__(self, path: str, blob: Blob, url: str | None):
        self.path, self.blob, self.url = path, blob, url
        self.size = blob.size

    def chunks(self, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
        try:
            yield from self.blob.chunks(start, stop)
        except FileNotFoundError as error:  # the object went, or the bucket did
            raise UpstreamError(str(error)) from None

    def close(self) -> None:
        self.blob.close()


class Head(FileAnswer):
    """A file not cached, as the index or the upstream's HEAD describes it."""

    def __init__(self, path: str, size: int | None, cache: str = "miss"):
        self.path, self.size, self.cache = path, size, cache


class Follow(FileAnswer):
    """A download in progress, read from its temp file as it grows.

    `size` is known when the index or the upstream said it. The bytes that end the requested
    range go out only once the file is published, so a failed download always ends in an
    aborted response, never in a complete-looking wrong body.
    """

    def __init__(self, cachedir: CacheDir, stall: float, path: str, fd: int, size: int | None,
                 cache: str):
        self.cachedir, self.stall, self.path, self.fd, self.size = cachedir, stall, path, fd, size
        self.cache = cache  # "miss" for the client that started it, "follower" for the others
        # A range that ends before the file's end, taken from the download on its way
        # (Fetcher._range in pypicache/fetch.py): its last bytes need not wait for the publish, as
        # they are no less checked than the same range asked of the upstream.
        self.early = False

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def published(self) -> bool:
        return self.cachedir.published(self.path, self.fd)

    def _failure(self) -> tuple[str, int]:
        """What the writer left when it failed (pypicache/download.py), or a plain failure."""
        message = f"download of {names.filename(self.path)} failed"
        try:
            note = json.loads(self.cachedir.announce_path(self.path).read_bytes())
            return f"{message}: {note['message']}", int(note["failed"])
        except (OSError, ValueError, KeyError, TypeError):
            return message, 502

    def landed(self, start: int, stop: int) -> bool:
        """Whether [start, stop) can go out now or as the bytes land: it has begun landing
        and it ends before the file's last byte (which waits for the whole download)."""
        return self.size is not None and stop < self.size and start < os.fstat(self.fd).st_size

    def chunks(self, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
        """Bytes [start, stop) (to the end when stop is None), as they land."""
        end = self.size if stop is None else stop
        position, last_progress = start, time.monotonic()
        backoff = wakeups.Backoff(0.001, 0.02, self.path)  # the writer wakes us (download.py)

        def read() -> bytes:
            return os.pread(self.fd, CHUNK if end is None else min(CHUNK, end - position), position)

        try:
            while end is None or position < end:
                chunk = read()
                if chunk and (end is None or position + len(chunk) < end or self.early):
                    position += len(chunk)
                    yield chunk
                    last_progress = time.monotonic()
                    backoff.reset()
                    continue
                # Nothing new, or the last bytes: those wait for the publish. Published means
                # verified; what the writer does after (the catalog, under load a slow SQLite
                # lock) must not hold the client's last bytes back.
                if self.published():
                    while (end is None or position < end) and (chunk := read()):
                        position += len(chunk)
                        yield chunk
                    return
                if not self.cachedir.held_by_other(self.fd):
                    if self.published():  # published between the two looks
                        continue
                    raise DownloadAborted(*self._failure())
                if time.monotonic() - last_progress > self.stall:
                    raise DownloadStalled(f"download of {names.filename(self.path)} stalled")
                backoff.arm()
                # Looked at again once armed: a change since the read ends the wait.
                if os.fstat(self.fd).st_size <= position + len(chunk) and not self.published():
                    backoff.wait()
        finally:
            self.close()
