"""Operations: a health check that checks what it claims, and Prometheus metrics of all workers."""
from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from .. import __version__
from ..stats import health
from ..stats.metrics import CONTENT_TYPE
from ..stats.report import upstream_state, upstream_states
from ..stats.setup import EXTENSION
from . import services

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz():
    found = services()
    checks = {
        "cache_writable": health.cache_writable(found.cachedir),
        "locks": health.locks_work(found.cachedir),
        "catalog": health.catalog_readable(found.catalog),
    }
    healthy = all(value is True for value in checks.values())
    # Informational: the cache serves what it has with the upstream down, so this never fails
    # the check; it says what the workers last saw when they talked to the upstream.
    state = found.catalog.state() if checks["catalog"] is True else {}
    for name, seen in current_app.extensions[EXTENSION].recorder.pending_state().items():
        state[name] = max(state.get(name, seen), seen, key=lambda event: event[0])
    body = {"status": "ok" if healthy else "failing", "version": __version__, "checks": checks,
            "upstream": upstream_state(state)}
    if len(found.settings.indexes) > 1:
        body["upstreams"] = upstream_states(state, found.settings.indexes)
    if found.policy is not None:  # a bad new policy file keeps the last good one: never failing
        body["policy"] = found.policy.health()
    if found.cluster is not None:  # informational too: without it a node serves on its own
        body["bucket"] = found.cluster.bucket_state()
    return jsonify(body), 200 if healthy else 503


@bp.get("/metrics")
def metrics() -> Response:
    exposition = current_app.extensions[EXTENSION].metrics.exposition()
    return Response(exposition, content_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"})
