"""What the other nodes of a cluster read: this node's own copy of a file, or its download in
progress as it lands (pypicache/peers.py). Never starts a download and looks nowhere else."""
from __future__ import annotations

from flask import Blueprint, Response, abort, request

from .. import names
from ..conditional import Ask
from ..peers import HEADER, ROUTE, valid
from . import services
from .packages import respond

bp = Blueprint("peers", __name__)


@bp.get(ROUTE + "<path:path>")
def file(path: str) -> Response:
    path = names.file_path(path)
    found = services()
    if not valid(found.settings.cluster_secret, path, request.headers.get(HEADER)):
        abort(403)
    result = found.fetcher.local(path)
    if result is None:
        abort(404)
    response = respond(result, Ask.of(request.environ))
    response.headers["X-Cache"] = result.cache
    return response
