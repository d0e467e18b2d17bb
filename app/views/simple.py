"""The Simple Repository API: /simple/ and /simple/<project>/ (PEP 503, 691)."""
from __future__ import annotations

import os
import re
from typing import BinaryIO

from flask import Blueprint, Response, redirect, request
from werkzeug.wsgi import wrap_file

from .. import names, render
from ..pagefiles import Body
from ..pages import ROOT
from ..policy import HEADER
from ..stats.setup import page_served
from . import refused, services, who

bp = Blueprint("simple", __name__)
SMALL = 1 << 20  # pages below this are read at once; bigger ones go out with sendfile
# A request that came through a proxy (the nginx front says so too) gets relative links.
FORWARDED = {"HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_HOST", "HTTP_X_FORWARDED_PROTO",
             "HTTP_FORWARDED"}
_HOST = re.compile(r"[A-Za-z0-9.\-]{1,253}(:\d{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](:\d{1,5})?")


def _redirect(location: str) -> Response:
    # Relative, so it stays right behind a reverse proxy with a path prefix.
    query = request.query_string.decode("latin-1")
    return redirect(location + ("?" + query if query else ""), 301)


def _page_response(name: str) -> Response:
    media_type = render.negotiate(request.headers.get("Accept", ""), request.args.get("format"))
    if media_type is None:
        offered = ", ".join(render.OFFERS)
        return Response(f"Not acceptable; this index offers {offered}\n", 406, mimetype="text/plain")
    compressed = request.accept_encodings["gzip"] > 0  # "gzip;q=0" refuses it
    want = Body("json" if render.is_json(media_type) else "html", compressed, _links_base())
    found = services()
    policy = found.policy if name != ROOT else None  # the root list is not filtered
    client = who() if policy else None
    if policy and (refusal := policy.project(name, client)):
        return refused(refusal, f"the project {name}")
    page, body = found.pages.open(name, want)
    # The page without the files the policy refuses now (app/policyserve.py), else as cached.
    policed = policy.page(page, want, client) if policy else None
    if policed:
        if not isinstance(body, bytes):
            body.close()
        body = policed.body
    etag = policed.etag if policed else page.etag(want)
    # If-None-Match compares weakly (RFC 9110 13.1.2): a W/ tag from a gzipping front matches.
    if request.if_none_match.contains_weak(etag.strip('"')):
        if not isinstance(body, bytes):
            body.close()
        response = Response(status=304)
    else:
        response = _body_response(body, media_type)
        if compressed:
            response.content_encoding = "gzip"
    response.headers["ETag"] = etag
    response.headers["Vary"] = "Accept, Accept-Encoding"
    max_age = found.settings.index_ttl
    if policed:  # no longer than until a held file passes
        response.headers[HEADER] = policed.header
        max_age = min(max_age, policed.max_age) if policed.max_age is not None else max_age
    response.headers["Cache-Control"] = f"max-age={int(max_age)}, public"
    response.headers["X-Cache"] = page.cache
    response.headers["Age"] = str(int(page.age)) if page.cache != "miss" else "0"
    if page.cache == "stale":
        response.headers["Warning"] = '110 pypicache "Response is Stale"'
    page_served(name)  # its last use, for the size cap (app/stats)
    return response


def _links_base() -> str | None:
    """The absolute URL file links start with, for a client that reached us directly; None
    (relative links) through a proxy, whose scheme and host name we cannot be sure of.

    pip resolves each relative link with urljoin: on a page of 5,000 files that cost it 80 ms
    more than absolute links, every time it read the page. The host name is the client's own
    (a body per name, at most a few per page: app/pages.py), so no client can point another's
    links elsewhere."""
    environ = request.environ
    if FORWARDED.intersection(environ) or not _HOST.fullmatch(request.host):
        return None
    return f"{request.root_url}packages/"


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
    return _redirect("simple/")


@bp.get("/simple/")
def root() -> Response:
    return _page_response(ROOT)


@bp.get("/simple/<project>")
def project_without_slash(project: str) -> Response:
    return _redirect(names.project_name(project) + "/")


@bp.get("/simple/<project>/")
def project(project: str) -> Response:
    name = names.project_name(project)
    if name != project:
        return _redirect(f"../{name}/")
    return _page_response(name)
