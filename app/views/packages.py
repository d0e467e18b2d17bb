"""Package files: served from the cache, or streamed while the one download runs."""
from __future__ import annotations

from itertools import chain
from typing import Iterable, Iterator

from flask import Blueprint, Response, redirect, request
from werkzeug.wsgi import wrap_file

from .. import names
from ..conditional import Answer, Ask, Validator, of_open_file, resolve, validator
from ..errors import StorageError, UpstreamError, UpstreamTimeout
from ..metadata import SUFFIX as METADATA
from ..ranges import Part
from ..results import DownloadAborted, DownloadStalled, Follow, Head, Hit
from ..stats.setup import file_served
from ..storage import BucketFile, FileBlob
from . import services

bp = Blueprint("packages", __name__)
OCTET_STREAM = "application/octet-stream"
IMMUTABLE = "max-age=365000000, immutable, public"


@bp.route("/packages/<path:path>", methods=["GET", "HEAD"])
def package(path: str) -> Response:
    path = names.file_path(path)
    ask = Ask.of(request.environ)
    found = services()
    if request.method == "HEAD":  # starts no download and extracts nothing
        result = (found.metadata if path.endswith(METADATA) else found.fetcher).describe(path)
    elif path.endswith(METADATA):
        result = found.metadata.open(path)
        # What this client will ask for next, fetched ahead (app/prefetch.py).
        found.prefetch.after_metadata(path, request.headers.get("User-Agent", ""))
    else:
        result = found.fetcher.open(path, ask)
    if isinstance(result, BucketFile) and result.url is not None:
        result.close()
        response = redirect(result.url, 302)  # temporary: the presigned URL expires
    else:
        response = _respond(result, path, ask)
    response.headers["Cache-Control"] = IMMUTABLE
    response.headers["X-Cache"] = result.cache
    file_served(path, result.cache, response)  # statistics and metrics (app/stats)
    return response


def _respond(result: Hit | Follow | Part | BucketFile | Head, path: str, ask: Ask) -> Response:
    """Every kind of result answered alike, as the nginx front answers a published file:
    the same validators, conditionals and ranges (app/conditional.py).

    Built by hand rather than with send_file: a warm hit is the request this server answers
    most, and send_file's guessing and conditional machinery was a third of its cost. The
    type is fixed (a guess would add Content-Encoding: gzip to .tar.gz, which breaks uv).
    """
    if isinstance(result, Hit):
        file = of_open_file(result.file.fileno())
    else:
        file = validator(path, result.size)
    if isinstance(result, Part):  # the range the fetcher resolved alike and asked upstream for
        answer = Answer(206, result.start, result.stop)
    else:
        answer = resolve(ask, file)
    if not answer.has_body:
        result.close()
        return _bare(answer, file)
    stop = answer.stop if answer.stop is not None else (file.size if file else None)
    # Headers as a list: a hit is the request this server answers most, and each header set
    # one by one costs a scan of the others.
    headers = [("Accept-Ranges", "bytes"), *_validators(file)]
    if stop is not None:
        headers.append(("Content-Length", str(stop - answer.start)))
    if answer.status == 206:
        headers.append(("Content-Range", f"bytes {answer.start}-{stop - 1}/{file.size}"))
    if isinstance(result, Hit) and stop == file.size:
        # To its end: sendfile from the file's offset (gunicorn sends Content-Length bytes from
        # there; another WSGI server reads the file to its end), so as it is, not wrapped.
        result.file.seek(answer.start)
        response = Response(wrap_file(request.environ, result.file), answer.status, headers,
                            mimetype=OCTET_STREAM, direct_passthrough=True)
    else:
        response = Response(_body(result, answer.start, stop), answer.status, headers,
                            mimetype=OCTET_STREAM)
        response.call_on_close(result.close)
    # No length claimed while none is known (a HEAD's empty body is not the file's length).
    response.automatically_set_content_length = False
    return response


def _body(result: Hit | Follow | Part | BucketFile | Head, start: int,
          stop: int | None) -> Iterable[bytes]:
    """The bytes [start, stop) of a result (none for a HEAD)."""
    if isinstance(result, Hit):
        return FileBlob(result.file).chunks(start, stop)
    if request.method == "HEAD" or isinstance(result, Head):
        return ()
    if isinstance(result, Part):
        return result.chunks
    if isinstance(result, BucketFile):
        return _first_bytes(result.blob.chunks(start, stop))
    return _first_bytes(result.stream(start, stop))  # a download, as it lands


def _bare(answer: Answer, file: Validator | None) -> Response:
    """A 304, 412 or 416: headers only."""
    if answer.status == 416:
        return Response(status=416, headers=[("Content-Range", f"bytes */{file.size}")])
    return Response(status=answer.status, headers=_validators(file) if answer.status == 304 else [])


def _validators(file: Validator | None) -> list[tuple[str, str]]:
    if file is None:  # none yet for a download whose size nobody gave
        return []
    return [("ETag", file.etag), ("Last-Modified", file.last_modified)]


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
