"""Package files: served from the cache, or streamed while the one download runs."""
from __future__ import annotations

import os
from itertools import chain
from typing import Iterator

from flask import Blueprint, Response, redirect, request
from werkzeug.datastructures import Range
from werkzeug.exceptions import RequestedRangeNotSatisfiable
from werkzeug.wsgi import wrap_file

from .. import names
from ..errors import StorageError, UpstreamError, UpstreamTimeout
from ..metadata import SUFFIX as METADATA
from ..objects import Stored
from ..ranges import Part
from ..results import DownloadAborted, DownloadStalled, Follow, Head, Hit
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
        if request.method == "GET":  # what this client will ask for next (app/prefetch.py)
            services().prefetch.after_metadata(path, request.headers.get("User-Agent", ""))
    elif request.method == "HEAD":
        result = services().fetcher.describe(path)
    else:
        result = services().fetcher.open(path, _cold_range(etag))
    if isinstance(result, Hit):
        response = _hit_response(result, etag)
    elif isinstance(result, Part):
        response = _part_response(result, etag)
    elif isinstance(result, Stored):
        response = _stored_response(result, etag)
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
        return _unsatisfiable(part.size)
    response = Response(part.chunks, status=206, mimetype=OCTET_STREAM)
    response.call_on_close(part.close)
    response.content_length = part.stop - part.start
    response.headers["Content-Range"] = f"bytes {part.start}-{part.stop - 1}/{part.size}"
    response.headers["Accept-Ranges"] = "bytes"
    response.set_etag(etag)
    return response


def _stored_response(stored: Stored, etag: str) -> Response:
    """A file in the shared bucket: a redirect to it (PYPI_S3_REDIRECT), or streamed from it,
    a Range as the same range of the object."""
    if stored.url is not None:
        stored.close()
        return redirect(stored.url, 302)  # temporary: the presigned URL expires
    size = stored.blob.size
    if request.if_none_match.contains(etag):
        stored.close()
        response = Response(status=304)
    elif (span := _requested(size, etag)) is None:
        stored.close()
        return _unsatisfiable(size)
    else:
        start, stop, status = span
        body = _first_bytes(stored.blob.chunks(start, stop)) if request.method == "GET" else ()
        response = Response(body, status=status, mimetype=OCTET_STREAM, direct_passthrough=True)
        response.call_on_close(stored.close)
        response.content_length = stop - start
        if status == 206:
            response.headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    response.headers["Accept-Ranges"] = "bytes"
    response.set_etag(etag)
    return response


def _requested(size: int, etag: str) -> tuple[int, int, int] | None:
    """(start, stop, status) of the bytes asked for: the Range while If-Range allows it, or
    the whole file; None for a Range past the end."""
    if not (request.range and _current(etag)):
        return 0, size, 200
    span = request.range.range_for_length(size)
    return None if span is None else (span[0], span[1], 206)


def _unsatisfiable(size: int | None) -> Response:
    response = Response(status=416)
    response.headers["Content-Range"] = f"bytes */{size}"
    return response


def _follow_response(follow: Follow, etag: str) -> Response:
    """A file still downloading; a Range is served as its bytes land (uv reads wheels so)."""
    start, stop, status = 0, None, 200
    if follow.size is not None:
        if (span := _requested(follow.size, etag)) is None:
            follow.close()
            return _unsatisfiable(follow.size)
        start, stop, status = span
        stop = None if status == 200 else stop  # all of it: to the end, as it lands
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
        raise (StorageError if error.status == 507 else UpstreamError)(str(error)) from None
    except FileNotFoundError as error:  # the bucket failed
        raise UpstreamError(str(error)) from None
    return chain((first,), chunks)
