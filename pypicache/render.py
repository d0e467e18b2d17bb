"""Page model -> PEP 503 HTML and PEP 691 JSON, and content negotiation."""
from __future__ import annotations

import functools
from typing import IO, Iterable

from markupsafe import escape
from werkzeug.datastructures import MIMEAccept
from werkzeug.http import parse_accept_header

from .pagemodel import File, Project, file_href

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


def html_version(project: Project) -> str:
    """The HTML page's repository version: 1.4 for a project status (PEP 792), else 1.1 when
    every size is known (PEP 700), else 1.0. (The JSON claims its own: pypicache/pagereader.py.)"""
    if project.status:
        return STATUS_VERSION
    return "1.1" if all(file.size is not None for file in project.files) else "1.0"


def _metadata_value(file: File) -> str | None:
    if not file.core_metadata:
        return None
    if isinstance(file.core_metadata, dict) and file.core_metadata:
        hashes = file.core_metadata  # sha256 is what every client checks (PEP 658)
        name = "sha256" if "sha256" in hashes else min(hashes)
        return f"{name}={hashes[name]}"
    return "true"


def project_html(project: Project) -> str:
    """PEP 503 HTML (with PEP 592, 629, 658, 714 and 792 attributes): built in Python rather
    than by a template loop, a tenth of the time for a page of thousands of files, and without
    a Flask context, so a page can be rendered wherever it is first asked for."""
    name = escape(project.name)
    head = [
        "<!DOCTYPE html>\n<html>\n<head>\n",
        f'<meta name="pypi:repository-version" content="{html_version(project)}">',
    ]
    if project.status:
        head.append(f'\n<meta name="pypi:project-status" content="{escape(project.status)}">')
        if project.status_reason:
            head.append('\n<meta name="pypi:project-status-reason" '
                        f'content="{escape(project.status_reason)}">')
    head.append(f"\n<title>Links for {name}</title>\n</head>\n<body>\n<h1>Links for {name}</h1>")
    return "".join(head) + "".join(map(_anchor, project.files)) + "\n</body>\n</html>"


def _anchor(file: File) -> str:
    href = file_href(file.path) + (f"#sha256={file.sha256}" if file.sha256 else "")
    attributes = ""
    if file.requires_python:
        attributes += f' data-requires-python="{escape(file.requires_python)}"'
    if file.yanked:
        reason = file.yanked if isinstance(file.yanked, str) else ""
        attributes += f' data-yanked="{escape(reason)}"'
    metadata = _metadata_value(file)
    if metadata:
        metadata = escape(metadata)
        attributes += f' data-core-metadata="{metadata}" data-dist-info-metadata="{metadata}"'
    if file.provenance:  # PEP 740; pointed at our copy for https clients (pypicache/provenance.py)
        attributes += f' data-provenance="{escape(file.provenance)}"'
    return f'\n<a href="{escape(href)}"{attributes}>{escape(file.filename)}</a><br>'


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
