"""Byte ranges of files not cached, asked of the upstream: a client's range passed through,
and random reads of a wheel for its metadata. Nothing read here is cached as a file."""
from __future__ import annotations

import re
from typing import Iterator

from .conditional import Answer, Ask
from .errors import IntegrityError, UpstreamError
from .httpclient import Upstream
from .results import FileAnswer

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")
_IDENTITY = {"Accept-Encoding": "identity"}  # ranges of the stored bytes, never of a re-encoding


class RangesIgnored(Exception):
    """The upstream answered a Range request with the whole file."""


class Part(FileAnswer):
    """One range of a file, streamed from the upstream's 206 as it arrives: the answer is that
    range, which the fetcher resolved from the client's request (pypicache/fetch.py)."""

    cache = "range"

    def __init__(self, path: str, start: int, stop: int, size: int, body: Iterator[bytes]):
        self.path, self.start, self.stop, self.size = path, start, stop, size  # stop: exclusive
        self._body = body

    def answer(self, ask: Ask) -> Answer:
        return Answer(206, self.start, self.stop)

    def chunks(self, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
        assert (start, stop) == (self.start, self.stop), "a Part has one range"
        return self._body

    def close(self) -> None:
        close = getattr(self._body, "close", None)
        if close is not None:
            close()  # the generator's finally closes the upstream response


def _content_range(response, expected_size: int | None) -> tuple[int, int, int]:
    """(start, stop, size) from a 206's Content-Range; a size other than the index's is a fault."""
    match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
    if not match:
        raise UpstreamError("upstream sent a partial answer without a usable Content-Range")
    start, last, size = map(int, match.groups())
    if last < start or last >= size:
        raise UpstreamError("upstream sent an impossible Content-Range")
    if expected_size is not None and size != expected_size:
        raise IntegrityError(f"upstream size {size} differs from the index's {expected_size}")
    return start, last + 1, size


def _ask(upstream: Upstream, url: str, spec: str):
    response = upstream.get(url, headers={"Range": spec, **_IDENTITY})
    if response.status_code == 200:
        response.close()
        raise RangesIgnored(url)
    return response


def part(upstream: Upstream, url: str, path: str, start: int, stop: int, size: int) -> Part:
    """Bytes [start, stop) of a file of `size` bytes, from the upstream's 206 as it arrives.

    The range was resolved here (pypicache/conditional.py) and is asked for by its positions, so an
    upstream that mistakes a suffix longer than the file for an error gives the same bytes.
    Raises RangesIgnored when the upstream sends the whole file instead: the caller then
    follows the single-flight download (whose bytes are kept) rather than relaying it.
    """
    response = _ask(upstream, url, f"bytes={start}-{stop - 1}")
    try:
        if response.status_code != 206:  # a 416 for a range of the index's size
            raise UpstreamError(f"upstream answered {response.status_code} to a range of the file")
        if _content_range(response, size) != (start, stop, size):
            raise UpstreamError("upstream sent another range than the one asked for")
    except UpstreamError:
        response.close()
        raise
    return Part(path, start, stop, size, upstream.iter_body(response))


class RangeReader:
    """Random reads of an upstream file by Range requests (a wheelmeta.Source).

    The first request asks for the file's last `tail` bytes (its size comes with them), and
    reads inside them cost nothing; every other read is one request (the zip reader of
    pypicache/wheelmeta.py keeps what it has read).
    """

    def __init__(self, upstream: Upstream, url: str, tail: int, expected_size: int | None):
        self.upstream, self.url, self.expected_size = upstream, url, expected_size
        self.requests = 0
        response = _ask(upstream, url, f"bytes=-{tail}")
        self._tail_start, self._tail, self.size = self._body(response, tail)

    def _body(self, response, limit: int) -> tuple[int, bytes, int]:
        self.requests += 1
        try:
            if response.status_code != 206:
                raise UpstreamError(f"upstream answered {response.status_code} to a range")
            start, stop, size = _content_range(response, self.expected_size)
            if stop - start > limit:
                raise UpstreamError("upstream sent more than the range asked for")
        except UpstreamError:
            response.close()
            raise
        data = b"".join(self.upstream.iter_body(response))
        if len(data) != stop - start:
            raise UpstreamError("upstream sent a range of the wrong length")
        return start, data, size

    def read(self, offset: int, length: int) -> bytes:
        start = self._tail_start
        if start <= offset and offset + length <= start + len(self._tail):
            return self._tail[offset - start:offset + length - start]
        if length == 0:
            return b""
        response = _ask(self.upstream, self.url, f"bytes={offset}-{offset + length - 1}")
        start, data, _ = self._body(response, length)
        if start != offset:
            raise UpstreamError("upstream sent another range than the one asked for")
        return data
