"""Package files: served from the cache, or streamed while the one download runs."""
from __future__ import annotations

from flask import Blueprint, Response, send_file

from .. import names
from ..fetch import Hit
from ..store import key
from . import services

bp = Blueprint("packages", __name__)
OCTET_STREAM = "application/octet-stream"
IMMUTABLE = "max-age=365000000, immutable, public"


@bp.route("/packages/<path:path>", methods=["GET", "HEAD"])
def package(path: str) -> Response:
    path = names.file_path(path)
    result = services().fetcher.open(path)
    if isinstance(result, Hit):
        # An explicit mimetype: guessing would add Content-Encoding: gzip to .tar.gz.
        response = send_file(
            result.path, mimetype=OCTET_STREAM, conditional=True, etag=key(path), max_age=None
        )
    else:
        response = Response(result.chunks, mimetype=OCTET_STREAM)
        if result.size is not None:
            response.content_length = result.size
    response.headers["Cache-Control"] = IMMUTABLE
    response.headers["X-Cache"] = result.cache
    return response
