"""Blueprints: they decide how to answer, lower layers decide what."""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

from flask import Response, current_app, redirect, request

from ..auth import USER
from ..policy import HEADER, Refusal
from ..policyserve import Who

if TYPE_CHECKING:  # pypicache/__init__.py imports the views
    from .. import Services
    from ..pagefiles import Page

# A request that came through a proxy (the nginx front says so too) gets relative links.
FORWARDED = {"HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_HOST", "HTTP_X_FORWARDED_PROTO",
             "HTTP_FORWARDED"}
_HOST = re.compile(r"[A-Za-z0-9.\-]{1,253}(:\d{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](:\d{1,5})?")


def services() -> Services:
    """This app's services (pypicache/__init__.py), built once per app, so once per worker."""
    return current_app.extensions["pypicache"]


def who() -> Who:
    """The client as the policy's audit log names it: its address (and what a proxy in front
    says of it), and its user once pypicache/auth.py has verified the login."""
    address = request.remote_addr or "-"
    if forwarded := request.headers.get("X-Forwarded-For"):
        address += f" (forwarded for {forwarded[:200]})"
    return Who(address, request.environ.get(USER))


def refused(refusal: Refusal, what: str) -> Response:
    """A policy's refusal: 403, the rule in the body and the header (docs/POLICY.md)."""
    return Response(refusal.message(what) + "\n", 403, {HEADER: refusal.header},
                    mimetype="text/plain")


def moved(location: str) -> Response:
    """A 301 to the canonical URL, relative, so it stays right behind a reverse proxy with a
    path prefix; the query string kept."""
    query = request.query_string.decode("latin-1")
    return redirect(location + ("?" + query if query else ""), 301)


def links_base() -> str | None:
    """The absolute URL file links start with, for a client that reached us directly; None
    (relative links) through a proxy, whose scheme and host name we cannot be sure of.

    pip resolves each relative link with urljoin: on a page of 5,000 files that cost it 80 ms
    more than absolute links, every time it read the page. The host name is the client's own
    (a body per name, at most a few per page: pypicache/pages.py), so no client can point another's
    links elsewhere."""
    environ = request.environ
    if FORWARDED.intersection(environ) or not _HOST.fullmatch(request.host):
        return None
    return f"{request.root_url}packages/"


def provenance_base() -> str | None:
    """Where a page's provenance URLs start when they point at our copies: only for a client
    that reached us over https (PEP 740 asks for a fully qualified URL of a secure origin; a
    TLS front says so with X-Forwarded-Proto, believed from PYPI_TRUSTED_PROXIES), to the host
    it used; None keeps the upstream's (pypicache/provenance.py)."""
    if not request.is_secure or not _HOST.fullmatch(request.host):
        return None
    return f"{request.root_url}packages/"


def not_modified(etag: str) -> bool:
    """Whether the request's If-None-Match names `etag`. It compares weakly (RFC 9110
    13.1.2): a W/ tag from a gzipping front matches."""
    return request.if_none_match.contains_weak(etag.strip('"'))


def page_headers(response: Response, page: Page, etag: str) -> Response:
    """What an answer made from a cached index page says of its freshness: its ETag, the
    TTL, how the cache answered (X-Cache), its age, and a Warning when it is stale."""
    response.headers["ETag"] = etag
    response.headers["Cache-Control"] = f"max-age={int(services().settings.index_ttl)}, public"
    response.headers["X-Cache"] = page.cache
    response.headers["Age"] = str(int(page.age)) if page.cache != "miss" else "0"
    if page.cache == "stale":
        response.headers["Warning"] = '110 pypicache "Response is Stale"'
    return response
