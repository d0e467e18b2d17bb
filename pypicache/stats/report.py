"""The dashboard's page model, read from the catalog: plain data, shared by HTML, JSON and CLI.

The speed-up model is the design note's (docs/DESIGN.md, "The speed-up model", says what the
note is): n clients need m MB; without a cache that is
t1 = n m / t seconds, with it t2 = m / t + (n - 1) m / d, so the saving (t1 - t2) / t1 is
1 - (n - 1) t / (n d) - 1 / n, where t is the upstream's and d the cache's throughput (MB/s).
Here t and d are measured: t from the downloads the proxy made (bytes / seconds of body),
d from its hits (bytes / seconds until gunicorn had sent them).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from ..catalog import Catalog
from ..httpclient import redact
from .signals import AHEAD_KINDS

MB = 1_000_000  # the note's unit: t = 5 MB/s, d = 200 MB/s
NOTE_T, NOTE_D = 5.0, 200.0
CLIENTS = (2, 3, 5, 10)
LOCAL = ("hit", "follower", "bucket")  # answers that cost no upstream download of their own
SORTS = {"name": 0, "files": 1, "size": 2, "hits": 3, "first": 4, "last": 5}


def human_bytes(size: float) -> str:
    """1.5 MB, 320 B: decimal units, as the design note counts MB."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(size) < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return ""


def saving(n: int, t: float, d: float) -> float:
    """The note's (t1 - t2) / t1 for n clients."""
    return 1 - (n - 1) * t / (n * d) - 1 / n


@dataclass
class ProjectRow:
    name: str
    files: int
    size: int
    hits: int
    first_cached: float
    last_used: float
    upstream: str | None = None  # with several upstreams: the one its page came from


@dataclass
class FileRow:
    path: str
    filename: str
    size: int
    sha256: str
    first_cached: float
    last_used: float
    hits: int


@dataclass
class Bar:
    x: float
    y: float
    width: float
    height: float
    value: float
    series: str


@dataclass
class Overview:
    files: int
    bytes: int  # of the cached files
    projects: int
    max_size: int
    pages: int
    page_bytes: int
    catalog_bytes: int
    disk: int  # files, pages and catalog: what the size cap bounds
    requests: dict[str, int]
    hit_ratio: float | None
    bytes_from_cache: int
    bytes_from_upstream: int
    downloads: int
    upstream_mb_s: float | None  # t
    local_mb_s: float | None  # d
    seconds_saved: float | None
    savings: list[dict] = field(default_factory=list)
    upstream: dict = field(default_factory=dict)
    upstreams: list[dict] = field(default_factory=list)  # each of several, in precedence order
    removed: list[dict] = field(default_factory=list)
    ahead: dict = field(default_factory=dict)  # fetched ahead of clients (pypicache/prefetch.py)
    uploads: dict = field(default_factory=dict)  # to the local index: accepted, refused, served
    generated: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def overview(catalog: Catalog, max_size: int, state: dict | None = None,
             upstreams: tuple = ()) -> Overview:
    """The figures of the dashboard; `upstreams` (pypicache/upstreams.py) when there are several."""
    state = state if state is not None else catalog.state()
    totals = catalog.totals()
    usage = catalog.usage()
    requests = {
        name[len("requests_"):]: int(value) for name, value in totals.items()
        if name.startswith("requests_")
    }
    # Files of the local index are served, not cached: they count in no hit ratio.
    answered = sum(count for kind, count in requests.items() if kind != "upload")
    local = sum(requests.get(kind, 0) for kind in LOCAL)
    from_cache = int(sum(totals.get(f"bytes_{kind}", 0) for kind in LOCAL))
    t = _rate(totals.get("download_bytes", 0), totals.get("download_seconds", 0))
    d = _rate(totals.get("timed_hit_bytes", 0), totals.get("timed_hit_seconds", 0))
    saved = from_cache / MB / t - from_cache / MB / d if t and d else None
    return Overview(
        files=usage.files, bytes=usage.bytes, projects=usage.projects, max_size=max_size,
        pages=usage.pages, page_bytes=usage.page_bytes, catalog_bytes=usage.catalog_bytes,
        disk=usage.disk,
        requests=requests, hit_ratio=local / answered if answered else None,
        bytes_from_cache=from_cache, bytes_from_upstream=int(totals.get("download_bytes", 0)),
        downloads=int(totals.get("downloads", 0)), upstream_mb_s=t, local_mb_s=d,
        seconds_saved=saved,
        savings=[
            {"clients": n, "note": saving(n, NOTE_T, NOTE_D),
             "measured": saving(n, t, d) if t and d else None}
            for n in CLIENTS
        ],
        upstream=upstream_state(state),
        uploads={"accepted": int(totals.get("uploads_accepted", 0)),
                 "refused": int(totals.get("uploads_refused", 0)),
                 "served": requests.get("upload", 0)},
        upstreams=upstream_states(state, upstreams),
        removed=[
            {"path": p, "filename": p.rsplit("/", 1)[-1], "project": project, "size": s,
             "reason": reason, "at": at}
            for p, project, s, reason, at in catalog.removed(20)
        ],
        ahead=fetched_ahead(totals),
        generated=time.time(),
    )


def fetched_ahead(totals: dict[str, float]) -> dict:
    """What was fetched ahead of any client, by kind, and how much of it a client then asked
    for (used) or not yet (unused); the work dropped, and the steps that failed."""
    kinds = {}
    for kind in AHEAD_KINDS:
        fetched = int(totals.get(f"ahead_{kind}", 0))
        used = int(totals.get(f"ahead_used_{kind}", 0))
        kinds[kind] = {"fetched": fetched, "used": used, "unused": max(0, fetched - used)}
    return {"kinds": kinds, "dropped": int(totals.get("ahead_dropped", 0)),
            "failed": int(totals.get("ahead_failed", 0))}


def nodes(cluster) -> dict | None:
    """Each node's counts as it last shared them in the bucket, and the cluster's total;
    None on a node that shares no bucket."""
    if cluster is None:
        return None
    rows = []
    for data in cluster.nodes():
        totals = data.get("totals", {})
        rows.append({
            "node": data["node"], "at": data["at"], "files": data["files"], "bytes": data["bytes"],
            "hits": int(sum(totals.get(f"requests_{kind}", 0) for kind in LOCAL)),
            "misses": int(totals.get("requests_miss", 0)),
            "downloads": int(totals.get("downloads", 0)),
            "from_upstream": int(totals.get("download_bytes", 0)),
        })
    keys = ("files", "bytes", "hits", "misses", "downloads", "from_upstream")
    return {"storage": cluster.bucket.location, "this": cluster.node, "nodes": rows,
            "total": {key: sum(row[key] for row in rows) for key in keys}}


def _rate(size: float, seconds: float) -> float | None:
    return size / MB / seconds if size and seconds > 0 else None


def upstream_state(state: dict[str, tuple[float, str | None]], name: str = "") -> dict:
    """The upstream's last known state, from what the workers saw when they talked to it
    (of all upstreams together, or of the one named)."""
    suffix = f":{name}" if name else ""
    ok = state.get("upstream_ok" + suffix, (None, None))[0]
    failed, error = state.get("upstream_failed" + suffix, (None, None))
    if ok is None and failed is None:
        status = "unknown"
    else:
        status = "up" if (ok or 0) >= (failed or 0) else "down"
    return {"status": status, "last_success": ok, "last_failure": failed, "last_error": error}


def upstream_states(state: dict[str, tuple[float, str | None]], upstreams: tuple) -> list[dict]:
    """Each named upstream's state, in precedence order, with its URL (without credentials)."""
    return [
        {"name": up.name, "url": redact(up.url)} | upstream_state(state, up.name)
        for up in upstreams if up.name
    ]


def projects(catalog: Catalog, query: str = "", sort: str = "name", descending: bool = False
             ) -> list[ProjectRow]:
    rows = [ProjectRow(*row) for row in catalog.projects()]
    words = query.lower().replace("_", "-").replace(".", "-").split()
    if words:
        rows = [row for row in rows if all(word in row.name for word in words)]
    key = list(ProjectRow.__dataclass_fields__)[SORTS.get(sort, 0)]
    rows.sort(key=lambda row: (getattr(row, key), row.name), reverse=descending)
    return rows


def project_files(catalog: Catalog, project: str) -> list[FileRow]:
    return [
        FileRow(path, path.rsplit("/", 1)[-1], size, sha256, created, last_used, hits)
        for path, _, size, sha256, created, last_used, hits in catalog.files(project)
    ]


def chart(savings: list[dict], width: float = 420, height: float = 200) -> dict:
    """Grouped bars (the note's figures, and the measured ones when there are) in SVG units."""
    top, bottom, left = 16.0, 28.0, 36.0
    plot = height - top - bottom
    group = (width - left) / len(savings)
    bars, labels = [], []
    for i, row in enumerate(savings):
        x0 = left + i * group + group * 0.15
        for j, series in enumerate(("note", "measured")):
            value = row[series]
            if value is None:
                continue
            h = max(value, 0.0) * plot
            bars.append(Bar(x0 + j * group * 0.36, top + plot - h, group * 0.32, h, value, series))
        labels.append({"x": left + (i + 0.5) * group, "text": f"n = {row['clients']}"})
    ticks = [{"y": top + plot * (1 - p / 100), "text": f"{p}%"} for p in (0, 25, 50, 75, 100)]
    return {"width": width, "height": height, "bars": bars, "labels": labels, "ticks": ticks,
            "left": left, "baseline": top + plot, "label_y": height - 8}
