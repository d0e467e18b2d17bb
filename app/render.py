"""Page model -> PEP 503 HTML (templates/simple/) and PEP 691 JSON, and content negotiation."""
from __future__ import annotations

import functools
import json
from typing import IO, Iterable
from urllib.parse import quote

from flask import render_template
from werkzeug.datastructures import MIMEAccept
from werkzeug.http import parse_accept_header

from .index import File, Project

HTML = "text/html"
V1_HTML = "application/vnd.pypi.simple.v1+html"
V1_JSON = "application/vnd.pypi.simple.v1+json"
LATEST_HTML = "application/vnd.pypi.simple.latest+html"
LATEST_JSON = "application/vnd.pypi.simple.latest+json"
# What each offered media type is answered with (PEP 691: "latest" names the newest we speak).
# On a tie (`*/*`, no preference) the first wins: text/html, as PEP 691 advises.
OFFERS = {HTML: HTML, V1_HTML: V1_HTML, LATEST_HTML: V1_HTML, V1_JSON: V1_JSON, LATEST_JSON: V1_JSON}
FORMATS = {"json": V1_JSON, "html": HTML}
STATUS_VERSION = "1.4"  # PEP 792's project-status

# Project pages live at /simple/<name>/, files at /packages/<path>: relative links keep the
# rendered page valid behind any host name or path prefix.
FILE_PREFIX = "../../packages/"


@functools.lru_cache(maxsize=256)
def negotiate(accept: str, format_arg: str | None) -> str | None:
    """The media type to answer with, or None when nothing offered is acceptable.

    PEP 691 lets a server answer an Accept it cannot meet with 406, 300 or text/html; we
    answer 406 with the list of types we offer, so a misconfigured client fails loudly.
    `?format=` overrides the header (handy in a browser): a short name (json, html) or one
    of the media types we offer, as other indexes take it (a `+` sent unencoded arrives as a
    space).
    Memoized on the raw header: clients send a handful of distinct ones, and parsing
    q-values on every warm request was a tenth of its cost (docs/BENCHMARKS.md).
    """
    if format_arg:
        format_arg = format_arg.strip().lower().replace(" ", "+")
        return FORMATS.get(format_arg) or OFFERS.get(format_arg)
    if not accept.strip():
        return HTML  # no Accept header: the PEP 503 default
    best = parse_accept_header(accept, MIMEAccept).best_match(list(OFFERS))
    return OFFERS.get(best) if best else None


def is_json(media_type: str) -> bool:
    return media_type.endswith("json")


def api_version(project: Project, json: bool = True) -> str:
    """Claim only what we carry: 1.1 needs every size in JSON (PEP 700); a project status
    needs 1.4, the version that defines it (PEP 792), so JSON without sizes drops it."""
    sized = all(file.size is not None for file in project.files)
    if project.status and (sized or not json):
        return STATUS_VERSION
    return "1.1" if sized else "1.0"


def file_href(file: File) -> str:
    return FILE_PREFIX + quote(file.path)


def _metadata_value(file: File) -> str | None:
    if not file.core_metadata:
        return None
    if isinstance(file.core_metadata, dict) and file.core_metadata:
        hashes = file.core_metadata  # sha256 is what every client checks (PEP 658)
        name = "sha256" if "sha256" in hashes else min(hashes)
        return f"{name}={hashes[name]}"
    return "true"


def project_html(project: Project) -> str:
    return render_template(
        "simple/project.html",
        project=project,
        api_version=api_version(project, json=False),
        href=file_href,
        metadata=_metadata_value,
    )


def _json_file(file: File, version: str) -> dict:
    entry: dict = {"filename": file.filename, "url": file_href(file), "hashes": file.hashes}
    if file.requires_python:
        entry["requires-python"] = file.requires_python
    if file.core_metadata:
        flag = file.core_metadata if isinstance(file.core_metadata, dict) else True
        entry["core-metadata"] = flag
        entry["data-dist-info-metadata"] = flag  # PEP 714: the old key, for older clients
    if file.yanked:
        entry["yanked"] = file.yanked
    if version != "1.0":
        entry["size"] = file.size
        if file.upload_time:
            entry["upload-time"] = file.upload_time
    return entry


def project_json(project: Project) -> str:
    version = api_version(project)
    data: dict = {"meta": {"api-version": version}, "name": project.name}
    data["files"] = [_json_file(file, version) for file in project.files]
    if version != "1.0":
        data["versions"] = list(project.versions or ())
    if project.status and version == STATUS_VERSION:
        data["project-status"] = {"status": project.status}
        if project.status_reason:
            data["project-status"]["reason"] = project.status_reason
    return json.dumps(data, separators=(",", ":"))


def write_root(names: Iterable[str], html: IO[str], out_json: IO[str]) -> int:
    """Stream the root list into both formats; names are already canonical and safe."""
    html.write(
        '<!DOCTYPE html>\n<html>\n<head>\n<meta name="pypi:repository-version" content="1.0">\n'
        "<title>Simple index</title>\n</head>\n<body>\n"
    )
    out_json.write('{"meta":{"api-version":"1.0"},"projects":[')
    count, html_lines, json_items = 0, [], []
    for name in names:
        html_lines.append(f'<a href="{name}/">{name}</a>\n')
        json_items.append('{"name":"' + name + '"}')
        count += 1
        if len(html_lines) == 4096:  # write in batches: a million small writes are slow
            html.write("".join(html_lines))
            out_json.write(("," if count > 4096 else "") + ",".join(json_items))
            html_lines, json_items = [], []
    html.write("".join(html_lines) + "</body>\n</html>\n")
    if json_items:
        out_json.write(("," if count > len(json_items) else "") + ",".join(json_items))
    out_json.write("]}")
    return count
