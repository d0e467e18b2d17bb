"""What the fetch layer answers a file request with: the cached file, a download in progress
to follow as it grows, or a file not cached described by its size (a HEAD, or a request
whose answer has no body)."""
from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from typing import BinaryIO, Iterator

from . import names, wakeups
from .cachedir import CacheDir
from .errors import UpstreamError
from .httpclient import CHUNK
from .storage import BucketFile


class DownloadAborted(Exception):
    """The download this response follows failed: the connection must be cut, not ended.
    `status` is what a client that has had no byte yet is answered (its writer's failure)."""

    def __init__(self, message: str, status: int = 502):
        super().__init__(message)
        self.status = status


class DownloadStalled(DownloadAborted):
    """No new byte of the download for the read timeout."""


@dataclass
class Hit:
    """A cached file, already open: eviction may unlink it now and this reader still gets
    every byte (an open descriptor keeps the inode), so there is no check-then-open race."""

    file: BinaryIO
    cache: str = "hit"

    def close(self) -> None:
        self.file.close()


class Follow:
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
        # (Fetcher._range in app/fetch.py): its last bytes need not wait for the publish, as
        # they are no less checked than the same range asked of the upstream.
        self.early = False

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def published(self) -> bool:
        return self.cachedir.published(self.path, self.fd)

    def _failure(self) -> tuple[str, int]:
        """What the writer left when it failed (app/download.py), or a plain failure."""
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

    def stream(self, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
        """Bytes [start, stop) (to the end when stop is None), as they land."""
        end = self.size if stop is None else stop
        position, last_progress = start, time.monotonic()
        backoff = wakeups.Backoff(0.001, 0.02, self.path)  # the writer wakes us (app/download.py)

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


@dataclass
class Head:
    """A file not cached, as the index or the upstream's HEAD describes it."""

    size: int | None
    cache: str = "miss"

    def close(self) -> None:
        pass


# --- reading a whole answer (fetching ahead reads .metadata files) --------------------
def read_answer(result, limit: int) -> bytes | None:
    """A file answer's bytes (at most `limit`: None past it), the answer closed."""
    if isinstance(result, Hit):
        with result.file:
            data = result.file.read(limit + 1)
    elif isinstance(result, BucketFile):
        with contextlib.closing(result):
            data = b"".join(_bounded(result.blob.chunks(), limit))
    elif isinstance(result, Follow):
        try:
            data = b"".join(_bounded(result.stream(), limit))
        except DownloadAborted as error:
            raise UpstreamError(str(error)) from None
        finally:
            result.close()
    else:
        raise TypeError(f"not a file answer: {result!r}")
    return data if len(data) <= limit else None


def _bounded(chunks: Iterator[bytes], limit: int) -> Iterator[bytes]:
    total = 0
    with contextlib.closing(chunks):
        for chunk in chunks:
            total += len(chunk)
            yield chunk
            if total > limit:
                return


def close_answer(result) -> None:
    if isinstance(result, Hit):
        result.file.close()
    else:
        result.close()
