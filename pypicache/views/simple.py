"""The Simple Repository API: /simple/ and /simple/<project>/ (PEP 503, 691)."""
from __future__ import annotations

import os
from typing import BinaryIO

from flask import Blueprint, Response, request
from werkzeug.wsgi import wrap_file

from .. import names, render
from ..pagefiles import Body
from ..pages import ROOT
from ..policy import HEADER
from ..stats.setup import page_served
from . import (
    links_base, moved, not_modified, page_headers, provenance_base, refused, services, who,
)

bp = Blueprint("simple", __name__)
SMALL = 1 << 20  # pages below this are read at once; bigger ones go out with sendfile


def _page_response(name: str) -> Response:
    media_type = render.negotiate(request.headers.get("Accept", ""), request.args.get("format"))
    if media_type is None:
        offered = ", ".join(render.OFFERS)
        return Response(f"Not acceptable; this index offers {offered}\n", 406, mimetype="text/plain")
    compressed = request.accept_encodings["gzip"] > 0  # "gzip;q=0" refuses it
    want = Body("json" if render.is_json(media_type) else "html", compressed, links_base(),
                provenance_base())
    found = services()
    policy = found.policy if name != ROOT else None  # the root list is not filtered
    client = who() if policy else None
    if policy and (refusal := policy.project(name, client)):
        return refused(refusal, f"the project {name}")
    # On a miss the body may be `want` uncompressed (pypicache/pagebodies.py): `served` says.
    page, body, served = found.pages.serve(name, want)
    # The page without the files the policy refuses now (pypicache/policyserve.py), else as cached.
    policed = policy.page(page, want, client) if policy else None
    if policed:
        if not isinstance(body, bytes):
            body.close()
        body, served = policed.body, want
    etag = policed.etag if policed else page.etag(served)
    if not_modified(etag):
        if not isinstance(body, bytes):
            body.close()
        response = Response(status=304)
    else:
        response = _body_response(body, media_type)
        if served.compressed:
            response.content_encoding = "gzip"
    page_headers(response, page, etag)
    response.headers["Vary"] = "Accept, Accept-Encoding"
    if policed:  # no longer than until a held file passes
        response.headers[HEADER] = policed.header
        if policed.max_age is not None and policed.max_age < found.settings.index_ttl:
            response.headers["Cache-Control"] = f"max-age={int(policed.max_age)}, public"
    page_served(name)  # its last use, for the size cap (pypicache/stats)
    if name != ROOT:  # the release it will pick there, fetched ahead (pypicache/prefetch.py)
        found.prefetch.after_page(name, page.cache, request.headers.get("User-Agent", ""))
    return response


def _body_response(body: BinaryIO | bytes, media_type: str) -> Response:
    """Bytes just rendered, a small file read at once, or a big one (the root list) by sendfile."""
    if isinstance(body, bytes):
        return Response(body, mimetype=media_type)
    size = os.fstat(body.fileno()).st_size
    if size < SMALL:
        with body:
            return Response(body.read(), mimetype=media_type)
    response = Response(wrap_file(request.environ, body), mimetype=media_type,
                        direct_passthrough=True)
    response.content_length = size
    return response


@bp.get("/simple")
def root_without_slash() -> Response:
    return moved("simple/")


@bp.get("/simple/")
def root() -> Response:
    return _page_response(ROOT)


@bp.get("/simple/<project>")
def project_without_slash(project: str) -> Response:
    return moved(names.project_name(project) + "/")


@bp.get("/simple/<project>/")
def project(project: str) -> Response:
    name = names.project_name(project)
    if name != project:
        return moved(f"../{name}/")
    return _page_response(name)
