"""Operations: a health check that checks what it claims."""
from __future__ import annotations

import os

from flask import Blueprint, jsonify

from . import services

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz():
    store = services().store
    checks = {}
    try:
        fd, temp = store.new_temp("healthz")
        os.close(fd)
        temp.unlink()
        checks["cache_writable"] = True
    except Exception as error:  # report, never raise: this is the health check
        checks["cache_writable"] = f"{type(error).__name__}: {error}"
    try:
        fd = store.try_lock("healthz")
        checks["locks"] = fd is not None or "held"
        if fd is not None:
            os.close(fd)
    except OSError as error:
        checks["locks"] = f"{type(error).__name__}: {error}"
    healthy = all(value is True for value in checks.values())
    return jsonify(status="ok" if healthy else "failing", checks=checks), 200 if healthy else 503
