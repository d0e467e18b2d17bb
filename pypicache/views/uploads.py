"""The legacy upload API (what twine, `uv publish`, poetry and pdm post to): /legacy/."""
from __future__ import annotations

import logging
import re

from flask import Blueprint, Response, request
from werkzeug.exceptions import HTTPException

from ..auth import CHALLENGE, USER
from ..errors import ProxyError
from ..stats.signals import upload_received
from ..uploadform import (
    FORM_MEMORY,
    Refused,
    Spool,
    allowed,
    check_form,
    parse,
    receive,
)
from . import services

bp = Blueprint("uploads", __name__)
log = logging.getLogger(__name__)


@bp.post("/legacy/")
def upload() -> Response:
    found = services()
    settings = found.settings
    user = request.environ.get(USER)  # pypicache/auth.py verified the login of this route
    if user is None:
        return Response("login required\n", 401, CHALLENGE, mimetype="text/plain")
    if user not in settings.uploaders:
        raise Refused(f"{user} may not upload here", 403)
    limit = settings.upload_max_size
    if (request.content_length or 0) > limit + FORM_MEMORY:  # refused before it is read
        raise Refused(f"the upload is larger than the limit of {limit} bytes", 413)
    with Spool(found.cachedir) as spool:
        form, files = parse(request.environ, spool, limit + FORM_MEMORY)
        content = files.get("content")
        if content is None:
            raise Refused("the form has no content file")
        filename = content.filename or ""
        project, version = check_form(form, filename)
        if not allowed(settings.uploaders, user, project):
            raise Refused(f"{user} may not upload files of {project}", 403)
        received = receive(content.stream, spool.path(content.stream), form, filename,
                           project, version, limit)
        found.uploads.add(received)
    log.info("%s uploaded %s (%d bytes)", user, filename, received.size)
    upload_received.send(found.uploads, outcome="accepted")
    return Response(f"{filename} uploaded\n", 200, mimetype="text/plain")


@bp.errorhandler(ProxyError)
@bp.errorhandler(HTTPException)
def refused(error: ProxyError | HTTPException) -> Response:
    """A refusal with its reason in the status line too: twine shows that line."""
    if isinstance(error, HTTPException):
        status, message = error.code or 400, error.description or error.name
    else:
        status, message = error.status, error.message
    reason = re.sub(r"[^\x20-\x7e]+", " ", message)[:200]
    if services().uploads is not None:
        upload_received.send(services().uploads, outcome="refused")
    if status >= 500:
        log.warning("an upload failed: %s", reason)
    return Response(message + "\n", f"{status} {reason}", mimetype="text/plain")
