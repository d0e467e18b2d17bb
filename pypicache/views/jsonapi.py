"""The legacy JSON API, as Warehouse serves it: /pypi/<project>/json and
/pypi/<project>/<version>/json (pypicache/legacyjson.py makes the documents)."""
from __future__ import annotations

from urllib.parse import quote

from flask import Blueprint, Response

from .. import names
from ..stats.setup import page_served
from . import links_base, moved, not_modified, page_headers, refused, services, who

bp = Blueprint("jsonapi", __name__)
JSON = "application/json"


def _answer(name: str, version: str | None, relative: str) -> Response:
    """`relative`: our /packages/ as seen from the document's URL, for a client behind a proxy."""
    found = services()
    client = who() if found.policy else None
    if found.policy and (refusal := found.policy.project(name, client)):
        return refused(refusal, f"the project {name}")
    document = found.legacy.document(name, version, links_base() or relative, found.policy,
                                     client)
    if not_modified(document.etag):
        response = Response(status=304)
    else:
        response = Response(document.body, mimetype=JSON)
    page_headers(response, document.page, document.etag)
    response.headers["Access-Control-Allow-Origin"] = "*"  # as Warehouse: read by web pages too
    if document.serial is not None:  # Warehouse's header, which mirroring tools compare
        response.headers["X-PyPI-Last-Serial"] = str(document.serial)
    page_served(name)  # its last use, for the size cap (pypicache/stats)
    return response


@bp.get("/pypi/<project>/json")
def project(project: str) -> Response:
    name = names.project_name(project)
    if name != project:
        return moved(f"../{name}/json")
    return _answer(name, None, "../../packages/")


@bp.get("/pypi/<project>/<version>/json")
def release(project: str, version: str) -> Response:
    name = names.project_name(project)
    if name != project:
        return moved(f"../../{name}/{quote(version)}/json")  # a path segment, whatever it holds
    return _answer(name, version, "../../../packages/")
