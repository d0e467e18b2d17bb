"""The browser view of the cache: a dashboard at /, a page per project, and their JSON."""
from __future__ import annotations

import time
from dataclasses import asdict

from flask import Blueprint, abort, jsonify, render_template, request

from .. import config, names
from ..errors import BadRequest
from ..stats import report
from . import services

bp = Blueprint("browse", __name__)


def _overview() -> report.Overview:
    found = services()
    return report.overview(found.catalog, found.settings.max_size, upstreams=found.settings.indexes)


def _projects(*args, **kwargs) -> list[report.ProjectRow]:
    """The cached projects, each with the upstream its page came from when there are several."""
    found = services()
    rows = report.projects(found.catalog, *args, **kwargs)
    if len(found.settings.indexes) > 1:
        for row in rows:
            row.upstream = found.pages.upstream_of(row.name)
    return rows


@bp.get("/")
def dashboard():
    query = request.args.get("q", "")[:200]
    sort = request.args.get("sort", "name")
    sort = sort if sort in report.SORTS else "name"
    descending = request.args.get("order", "desc" if sort != "name" else "asc") == "desc"
    rows = _projects(query, sort, descending)
    overview = _overview()
    return render_template(
        "browse/dashboard.html", overview=overview, projects=rows, query=query, sort=sort,
        descending=descending, chart=report.chart(overview.savings),
        mirror=config.redact(services().settings.mirror_url), note=(report.NOTE_T, report.NOTE_D),
        cluster=report.nodes(services().cluster),
    )


@bp.get("/projects/<path:name>/")  # path: a guessed name may hold anything
def project(name: str):
    files = report.project_files(services().catalog, name)
    uploaded = _uploaded(name)
    if not files and not uploaded:
        abort(404, f"no cached files of {name!r}")
    return render_template("browse/project.html", name=name, files=files, uploaded=uploaded,
                           size=sum(f.size for f in files), hits=sum(f.hits for f in files))


def _uploaded(name: str) -> list[dict]:
    """The project's files in the local index (PYPI_UPLOADS), newest first."""
    uploads = services().uploads
    if uploads is None:
        return []
    try:
        canonical = names.project_name(name)
    except BadRequest:
        return []
    return sorted(uploads.entries(canonical)[0], key=lambda f: f["upload-time"], reverse=True)


@bp.get("/stats.json")
def stats_json():
    rows = _projects()
    return jsonify(_overview().as_dict() | {"project_list": [asdict(row) for row in rows],
                                            "cluster": report.nodes(services().cluster)})


@bp.get("/stats/<path:name>.json")
def project_json(name: str):
    files = report.project_files(services().catalog, name)
    if not files:
        abort(404, f"no cached files of {name!r}")
    return jsonify(project=name, files=[asdict(f) for f in files])


@bp.app_template_filter("bytes")
def human_bytes(size: float | None) -> str:
    return "–" if size is None else report.human_bytes(size)


@bp.app_template_filter("ago")
def ago(at: float | None) -> str:
    if not at:
        return "never"
    seconds = max(0, time.time() - at)
    if seconds < 1:
        return "just now"
    for limit, unit, label in ((60, 1, "s"), (3600, 60, "min"), (86400, 3600, "h")):
        if seconds < limit:
            return f"{seconds / unit:.0f} {label} ago"
    return f"{seconds / 86400:.0f} d ago"


@bp.app_template_filter("utc")
def utc(at: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at)) if at else ""


@bp.app_template_filter("percent")
def percent(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value * 100:.{digits}f} %"


@bp.app_template_filter("duration")
def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if abs(seconds) < 120:
        return f"{seconds:.1f} s"
    if abs(seconds) < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
