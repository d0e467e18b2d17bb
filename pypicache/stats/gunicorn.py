"""gunicorn server hooks for the statistics (used by gunicorn.conf.py): metrics across workers.

prometheus_client's multiprocess mode needs PROMETHEUS_MULTIPROC_DIR set before any worker
imports it, empty at start (old files would add a previous run's counts), and the live gauges
of a dead worker removed. prometheus_client itself is imported only where it is used.
"""
from __future__ import annotations

import os
import shutil
import tempfile

VARIABLE = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's variable, not one of our settings
SENT_HOOK = "pypicache.sent"  # same key as pypicache.stats.setup.SENT_HOOK
_prepared: list[str] = []  # this module outlives a reload of gunicorn.conf.py
_made: list[str] = []  # a directory we created, removed when the server exits


def prepare_metrics_dir() -> str:
    """A directory for this server's metric files: the given one emptied, or a fresh one.

    Runs in the arbiter as gunicorn starts, before any fork (on_starting: not on a reload,
    and not when something merely reads gunicorn.conf.py).
    """
    path = os.environ.get(VARIABLE)
    if _prepared and path == _prepared[0]:
        return path
    if path:
        os.makedirs(path, exist_ok=True)
        for name in os.listdir(path):
            if name.endswith(".db"):
                os.unlink(os.path.join(path, name))
    else:
        # tmpfs when there is one: the files are rewritten on every counted request.
        base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        path = tempfile.mkdtemp(prefix="pypicache-metrics-", dir=base)
        os.environ[VARIABLE] = path
        _made[:] = [path]
    _prepared[:] = [path]
    return path


def on_starting(server) -> None:
    prepare_metrics_dir()


def child_exit(server, worker) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def post_request(worker, req, environ, resp) -> None:
    """After the response went out: how long a hit's bytes took to leave (the throughput d)."""
    sent = environ.get(SENT_HOOK)
    if sent is not None and resp is not None:
        # resp.sent counts written bytes but not sendfile(2)'s, which send the whole length.
        sent(resp.sent or resp.response_length or 0)


def on_exit(server) -> None:
    for path in _made:
        shutil.rmtree(path, ignore_errors=True)

