"""Package files: served from the cache, or streamed while the one download runs."""
from __future__ import annotations

from itertools import chain
from typing import Iterator

from flask import Blueprint, Response, redirect, request
from werkzeug.wsgi import wrap_file

from .. import names
from ..conditional import Answer, Ask, Validator
from ..errors import ProxyError
from ..metadata import SUFFIX as METADATA
from ..provenance import SUFFIX as PROVENANCE
from ..results import FileAnswer
from ..stats.setup import file_served
from ..uploads import PREFIX as UPLOADS
from . import refused, services, who

bp = Blueprint("packages", __name__)
OCTET_STREAM = "application/octet-stream"
IMMUTABLE = "max-age=365000000, immutable, public"


@bp.route("/packages/<path:path>", methods=["GET", "HEAD"])
def package(path: str) -> Response:
    path = names.file_path(path)
    ask = Ask.of(request.environ)
    found = services()
    # A file of a project the upstream quarantined (the team's own uploads are not its).
    if (quarantined := found.quarantine.check(path)) and not path.startswith(UPLOADS):
        _confirm_quarantine(found, quarantined, path)
    # Decided by the file itself, not by the page a client may never have read (lock files).
    if found.policy and (refusal := found.policy.file(path, who())):
        return refused(refusal, names.filename(path))
    if found.uploads is not None and path.startswith(UPLOADS):  # the team's own files
        result = found.uploads.open(path)
    elif path.endswith(PROVENANCE):  # PEP 740 (pypicache/provenancefetch.py)
        head = request.method == "HEAD"
        result = (found.provenance.describe if head else found.provenance.open)(path)
    elif request.method == "HEAD":  # starts no download and extracts nothing
        result = (found.metadata if path.endswith(METADATA) else found.fetcher).describe(path)
    elif path.endswith(METADATA):
        result = found.metadata.open(path)
        # What this client will ask for next, fetched ahead (pypicache/prefetch.py).
        found.prefetch.after_metadata(path, request.headers.get("User-Agent", ""))
    else:
        result = found.fetcher.open(path, ask)
    # A HEAD is answered here: it needs no bytes, and a URL presigned for a GET is a 403 to it.
    if result.url is not None and request.method == "GET":
        result.close()
        response = redirect(result.url, 302)  # temporary: the presigned URL expires
    else:
        response = respond(result, ask)
    response.headers["Cache-Control"] = IMMUTABLE
    response.headers["X-Cache"] = result.cache
    file_served(path, result.cache, response)  # statistics and metrics (pypicache/stats)
    return response


def _confirm_quarantine(found, project: str, path: str) -> None:
    """A file of a project marked quarantined (PEP 792, pypicache/quarantine.py) is a 404 and
    removed, unless its page, fetched anew if due, says the upstream lifted the quarantine."""
    try:
        found.pages.project(project)
    except ProxyError:  # no page to be had: the last one stands
        pass
    if project in found.quarantine.marked():
        raise found.quarantine.refuse(project, path)


def respond(result: FileAnswer, ask: Ask) -> Response:
    """Every kind of answer alike, as the nginx front answers a published file: the same
    validators, conditionals and ranges (pypicache/conditional.py, through `result.answer`).

    Built by hand rather than with send_file: a warm hit is the request this server answers
    most, and send_file's guessing and conditional machinery was a third of its cost. The
    type is fixed (a guess would add Content-Encoding: gzip to .tar.gz, which breaks uv).
    """
    file = result.validator()
    answer = result.answer(ask)
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
    if result.file is not None and stop == file.size:
        # To its end: sendfile from the file's offset (gunicorn sends Content-Length bytes from
        # there; another WSGI server reads the file to its end), so as it is, not wrapped.
        result.file.seek(answer.start)
        response = Response(wrap_file(request.environ, result.file), answer.status, headers,
                            mimetype=OCTET_STREAM, direct_passthrough=True)
    else:
        body = () if request.method == "HEAD" else _first_bytes(result.chunks(answer.start, stop))
        response = Response(body, answer.status, headers, mimetype=OCTET_STREAM)
        response.call_on_close(result.close)
    # No length claimed while none is known (a HEAD's empty body is not the file's length).
    response.automatically_set_content_length = False
    return response


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
    clean 502/504/507 (the ProxyError the chunks raise) rather than the server's 500 for an
    exception in the body; a later one cuts the response."""
    try:
        first = next(chunks)
    except StopIteration:
        return iter(())
    return chain((first,), chunks)
