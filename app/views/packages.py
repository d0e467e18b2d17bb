"""Package files: served from the cache, or streamed while the one download runs."""
from __future__ import annotations

import os
from dataclasses import dataclass
from itertools import chain
from typing import Iterator

from flask import Blueprint, Response, request
from werkzeug.datastructures import Range
from werkzeug.exceptions import RequestedRangeNotSatisfiable
from werkzeug.wsgi import wrap_file

from .. import names
from ..errors import IntegrityError, UpstreamError, UpstreamTimeout
from ..fetch import DownloadAborted, DownloadStalled, Follow, Hit
from ..metadata import SUFFIX as METADATA
from ..ranges import Part
from ..stats.setup import file_served
from ..store import key
from . import services

bp = Blueprint("packages", __name__)
OCTET_STREAM = "application/octet-stream"
IMMUTABLE = "max-age=365000000, immutable, public"
CONDITIONAL = {"HTTP_RANGE", "HTTP_IF_NONE_MATCH", "HTTP_IF_MATCH", "HTTP_IF_MODIFIED_SINCE",
               "HTTP_IF_UNMODIFIED_SINCE"}


@bp.route("/packages/<path:path>", methods=["GET", "HEAD"])
def package(path: str) -> Response:
    path = names.file_path(path)
    etag = key(path)  # strong: a path's bytes never change once verified
    if path.endswith(METADATA):
        result = services().metadata.open(path)
    elif request.method == "HEAD":
        result = _head(path)
    else:
        result = services().fetcher.open(path, _cold_range(etag))
    if isinstance(result, Hit):
        response = _hit_response(result, etag)
    elif isinstance(result, Part):
        response = _part_response(result, etag)
    elif isinstance(result, Head):
        response = Response(mimetype=OCTET_STREAM)
        response.content_length = result.size  # None: no length given, none claimed
        response.automatically_set_content_length = False
        response.headers["Accept-Ranges"] = "bytes"
        response.set_etag(etag)
    else:
        response = _follow_response(result, etag)
    response.headers["Cache-Control"] = IMMUTABLE
    response.headers["X-Cache"] = result.cache
    file_served(path, result.cache, response)  # statistics and metrics (app/stats)
    return response


@dataclass
class Head:
    """A file not cached, as the upstream's HEAD describes it."""

    size: int | None
    cache: str = "miss"


def _head(path: str) -> Hit | Head:
    """A HEAD starts no download (a whole file fetched to report its length would also let
    anyone fill the cache at no cost to themselves): the upstream's HEAD answers it."""
    fetcher = services().fetcher
    if (hit := fetcher.cached(path)) is not None:
        return hit
    fetcher.require_listed(path)
    length = services().upstream.head(fetcher.url(path))
    _, _, size = services().catalog.expected(path)
    if size is not None and length is not None and size != length:
        raise IntegrityError(f"upstream length {length} differs from the index's {size}")
    return Head(size if size is not None else length)


def _hit_response(hit: Hit, etag: str) -> Response:
    """A cached file, sent with sendfile (wsgi.file_wrapper) by gunicorn.

    Built by hand rather than with send_file: a warm hit is the request this server answers
    most, and send_file's guessing and conditional machinery was a third of its cost. The
    type is fixed (a guess would add Content-Encoding: gzip to .tar.gz, which breaks uv).
    Requests with a Range or a validator go through werkzeug's make_conditional (Range,
    If-Range, If-None-Match, 304 and 416 per RFC 9110).
    """
    size = os.fstat(hit.file.fileno()).st_size
    response = Response(
        wrap_file(request.environ, hit.file), mimetype=OCTET_STREAM, direct_passthrough=True
    )
    response.content_length = size
    response.headers["ETag"] = f'"{etag}"'
    response.headers["Accept-Ranges"] = "bytes"
    if not CONDITIONAL.isdisjoint(request.environ):
        try:
            response.make_conditional(request.environ, accept_ranges=True, complete_length=size)
        except RequestedRangeNotSatisfiable:  # a 416, answered by werkzeug's error response
            response.close()
            raise
    return response


def _cold_range(etag: str) -> Range | None:
    """The one range a GET asks for, if it is to be honoured (RFC 9110 14.2: HEAD ignores
    Range; an If-Range naming other bytes asks for the whole file)."""
    if "HTTP_RANGE" not in request.environ or request.method != "GET":
        return None
    byte_range = request.range
    if byte_range is None or len(byte_range.ranges) != 1 or not _current(etag):
        return None
    return byte_range


def _current(etag: str) -> bool:
    """If-Range is absent or names these bytes (a download has no Last-Modified to match)."""
    if_range = request.if_range
    return if_range.etag is None and if_range.date is None or if_range.etag == etag


def _part_response(part: Part, etag: str) -> Response:
    """A range of a file not cached, relayed from the upstream's 206 as it arrives."""
    if part.status == 416:
        response = Response(status=416)
        response.headers["Content-Range"] = f"bytes */{part.size}"
        return response
    response = Response(part.chunks, status=206, mimetype=OCTET_STREAM)
    response.call_on_close(part.close)
    response.content_length = part.stop - part.start
    response.headers["Content-Range"] = f"bytes {part.start}-{part.stop - 1}/{part.size}"
    response.headers["Accept-Ranges"] = "bytes"
    response.set_etag(etag)
    return response


def _follow_response(follow: Follow, etag: str) -> Response:
    """A file still downloading; a Range is served as its bytes land (uv reads wheels so)."""
    start, stop, status = 0, None, 200
    byte_range = request.range
    if byte_range and follow.size is not None and _current(etag):
        span = byte_range.range_for_length(follow.size)
        if span is None:
            follow.close()
            response = Response(status=416)
            response.headers["Content-Range"] = f"bytes */{follow.size}"
            return response
        (start, stop), status = span, 206
    body = follow.stream(start, stop)
    if request.method != "HEAD":
        body = _first_bytes(body)
    response = Response(body, status=status, mimetype=OCTET_STREAM)
    response.call_on_close(follow.close)  # a HEAD never starts the stream
    if follow.size is not None:
        response.content_length = (stop if stop is not None else follow.size) - start
    if status == 206:
        response.headers["Content-Range"] = f"bytes {start}-{stop - 1}/{follow.size}"
    response.headers["Accept-Ranges"] = "bytes"
    response.set_etag(etag)
    return response


def _first_bytes(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Wait for the first bytes here, while the status can still change: a download that fails
    before any byte is sent (a small file's only chunk waits for the sha256 check) is then a
    clean 502/504 rather than the server's 500 for an exception in the body."""
    try:
        first = next(chunks)
    except StopIteration:
        return iter(())
    except DownloadStalled as error:
        raise UpstreamTimeout(str(error)) from None
    except DownloadAborted as error:
        raise UpstreamError(str(error)) from None
    return chain((first,), chunks)
