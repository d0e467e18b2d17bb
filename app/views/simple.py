"""The Simple Repository API: /simple/ and /simple/<project>/ (PEP 503, 691)."""
from __future__ import annotations

import os

from flask import Blueprint, Response, redirect, request
from werkzeug.wsgi import wrap_file

from .. import names, render
from ..pages import Page
from . import services

bp = Blueprint("simple", __name__)
SMALL = 1 << 20  # pages below this are read at once; bigger ones go out with sendfile


def _redirect(location: str) -> Response:
    # Relative, so it stays right behind a reverse proxy with a path prefix.
    query = request.query_string.decode("latin-1")
    return redirect(location + ("?" + query if query else ""), 301)


def _page_response(page: Page) -> Response:
    media_type = render.negotiate(request.headers.get("Accept", ""), request.args.get("format"))
    if media_type is None:
        offered = ", ".join(render.OFFERS)
        return Response(f"Not acceptable; this index offers {offered}\n", 406, mimetype="text/plain")
    fmt = "json" if render.is_json(media_type) else "html"
    compressed = request.accept_encodings["gzip"] > 0  # "gzip;q=0" refuses it
    etag = page.etags[fmt]
    if compressed:
        etag = etag[:-1] + '-gz"'  # a strong ETag names the exact bytes of this representation
    # If-None-Match compares weakly (RFC 9110 13.1.2): a W/ tag from a gzipping front matches.
    if request.if_none_match.contains_weak(etag.strip('"')):
        response = Response(status=304)
    else:
        body = open(page.body(fmt, compressed), "rb")
        size = os.fstat(body.fileno()).st_size
        if size < SMALL:
            with body:
                response = Response(body.read(), mimetype=media_type)
        else:  # the root list: sendfile, never in memory
            response = Response(
                wrap_file(request.environ, body), mimetype=media_type, direct_passthrough=True
            )
            response.content_length = size
        if compressed:
            response.content_encoding = "gzip"
    response.headers["ETag"] = etag
    response.headers["Vary"] = "Accept, Accept-Encoding"
    response.headers["Cache-Control"] = f"max-age={int(services().settings.index_ttl)}, public"
    response.headers["X-Cache"] = page.cache
    response.headers["Age"] = str(int(page.age)) if page.cache != "miss" else "0"
    if page.cache == "stale":
        response.headers["Warning"] = '110 pypicache "Response is Stale"'
    return response


@bp.get("/simple")
def root_without_slash() -> Response:
    return _redirect("simple/")


@bp.get("/simple/")
def root() -> Response:
    return _page_response(services().pages.root())


@bp.get("/simple/<project>")
def project_without_slash(project: str) -> Response:
    return _redirect(names.project_name(project) + "/")


@bp.get("/simple/<project>/")
def project(project: str) -> Response:
    name = names.project_name(project)
    if name != project:
        return _redirect(f"../{name}/")
    return _page_response(services().pages.project(name))
