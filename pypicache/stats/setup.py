"""Wires statistics, metrics, upstream watching and eviction into an app (called by create_app)."""
from __future__ import annotations

import logging
import re
import time

from flask import Flask, Response, current_app, request

from .. import upstreams
from ..catalogrefusals import RefusalKey
from ..evict import Evictor
from .frontlog import FrontLog
from .metrics import Metrics
from .recorder import USES_KEPT, Recorder
from .signals import (
    fetch_ahead_dropped, fetch_ahead_failed, fetched_ahead, file_cached, login_checked,
    policy_refused, upload_received, upstream_answered,
)

log = logging.getLogger(__name__)
EXTENSION = "pypicache.stats"
# The environ key gunicorn.conf.py's post_request hook calls with the bytes it sent.
SENT_HOOK = "pypicache.sent"
# What follows a URL's origin in an error message (pypicache/httpclient.py writes `<url>: <kind>`):
# it names the project or file that was asked for.
_URL_PATH = re.compile(r"([a-z][a-z0-9+.-]*://[^/\s]+)/\S*?(?=:?(?:\s|$))", re.IGNORECASE)


class Stats:
    """This worker's recorder, metrics and evictor: app.extensions["pypicache.stats"]."""

    def __init__(self, services):
        self.settings = services.settings
        self.catalog = services.catalog
        self.evictor = Evictor(services.cachedir, services.catalog)
        self.metrics = Metrics(services.catalog, services.settings.max_size)
        self.recorder = Recorder(services.catalog, after_download=self.enforce_cap,
                                 uses_kept=USES_KEPT if services.settings.prefetch else 0.0)
        self._hit = self.metrics.file_requests.labels("hit")
        self._hit_bytes = self.metrics.bytes.labels("cache")
        # Hits the nginx front served: read from its log by one worker at a time.
        self.front_log = FrontLog(services.cachedir, services.catalog, self._front_hits)

    def enforce_cap(self) -> None:
        if self.settings.max_size:
            self.recorder.flush()  # our own last uses first, so the order is as fresh as can be
            result = self.evictor.run(self.settings.max_size)
            if result.files:
                self.metrics.evicted.inc(result.files)

    def on_file_cached(self, fetcher, path: str, size: int, seconds: float) -> None:
        """From the download thread, after the publish: must never raise into it."""
        try:
            self.recorder.downloaded(size, seconds)
            self.metrics.downloads.inc()
            self.metrics.download_seconds.observe(seconds)
            self.metrics.bytes.labels("upstream").inc(size)
        except Exception:
            log.exception("could not count the download of %s", path)

    def on_upstream_answered(self, upstream, outcome: str, seconds: float,
                             message: str | None, url: str = "") -> None:
        """Time every upstream request; remember the upstream's last success and failure
        (with several upstreams each has its own state too: "upstream_ok:<name>")."""
        self.metrics.upstream_latency.labels(outcome).observe(seconds)
        name, text = ("upstream_failed", message) if outcome == "error" else ("upstream_ok", None)
        if text:  # shown on the open /healthz too: the upstream's origin, not what was asked
            text = _URL_PATH.sub(r"\1", text)
        self.recorder.event(name, text)
        up = upstreams.of_url(self.settings, url)
        if up is not None and up.name:
            self.recorder.event(f"{name}:{up.name}", text)

    def on_fetched_ahead(self, prefetcher, kind: str, key: str, at: float) -> None:
        self.recorder.fetched_ahead(kind, key, at)
        self.metrics.fetched_ahead.labels(kind).inc()

    def on_ahead_dropped(self, prefetcher, count: int) -> None:
        self.recorder.add("ahead_dropped", count)
        self.metrics.ahead_dropped.inc(count)

    def on_ahead_failed(self, prefetcher, kind: str) -> None:
        self.recorder.add("ahead_failed", 1)
        self.metrics.ahead_failed.labels(kind).inc()

    def on_login_checked(self, logins, outcome: str) -> None:
        self.metrics.logins.labels(outcome).inc()

    def on_policy_refused(self, service, rule: str, mode: str, what: str, project: str = "",
                          who=None, refused: dict | None = None, **_) -> None:
        """Counted by rule for /metrics, and each file (or project) by client for the
        policy page (buffered, flushed with the other counts)."""
        self.metrics.policy_refusals.labels(rule, mode, what).inc()
        address, user = (who.address, who.user or "") if who is not None else ("-", "")
        for name, refusal in (refused or {}).items():
            file = "" if what == "project" else name
            key = RefusalKey(mode, rule, project, file, what, address, user)
            self.recorder.refused(key, refusal.entry, refusal.until)

    def on_upload_received(self, index, outcome: str) -> None:
        self.recorder.add(f"uploads_{outcome}", 1)
        self.metrics.uploads.labels(outcome).inc()

    def _front_hits(self, hits: int, size: int) -> None:
        self._hit.inc(hits)
        self._hit_bytes.inc(size)

    def after_request(self, response: Response) -> Response:
        self.front_log.start()  # a no-op unless this process was forked since
        rule = request.url_rule.rule if request.url_rule is not None else "other"
        self.metrics.requests.labels(rule, request.method, str(response.status_code)).inc()
        return response


def install(app: Flask, services) -> Stats:
    stats = Stats(services)
    app.extensions[EXTENSION] = stats
    # blinker holds receivers weakly: `stats` lives as long as the app's extensions.
    file_cached.connect(stats.on_file_cached, sender=services.fetcher)
    upstream_answered.connect(stats.on_upstream_answered, sender=services.upstream)
    fetched_ahead.connect(stats.on_fetched_ahead, sender=services.prefetch)
    fetch_ahead_dropped.connect(stats.on_ahead_dropped, sender=services.prefetch)
    fetch_ahead_failed.connect(stats.on_ahead_failed, sender=services.prefetch)
    if services.policy is not None:
        policy_refused.connect(stats.on_policy_refused, sender=services.policy)
    if services.uploads is not None:
        upload_received.connect(stats.on_upload_received, sender=services.uploads)
    if (logins := app.extensions.get("pypicache.logins")) is not None:
        login_checked.connect(stats.on_login_checked, sender=logins)
    app.after_request(stats.after_request)
    return stats


def worker_started(app: Flask) -> None:
    """gunicorn's post_worker_init: read the nginx front's log from the worker's start, not
    from the first request that reaches it (behind the front, warm hits never do)."""
    app.extensions[EXTENSION].front_log.start()


def page_served(name: str) -> None:
    """The page route's hook: the page's last use (the size cap removes the least recent)."""
    current_app.extensions[EXTENSION].recorder.page_request(name)


def file_served(path: str, cache: str, response: Response) -> None:
    """The file route's hook: count the request; time a hit's bytes until gunicorn sent them."""
    stats: Stats = current_app.extensions[EXTENSION]
    if response.status_code >= 400:  # a 412 or 416 counts nowhere, as at the front
        return
    method = request.method
    size = 0
    if method == "GET" and response.status_code in (200, 206):
        size = response.content_length or 0
    stats.recorder.file_request(path, cache, method, size)
    if method != "GET":
        return
    if cache != "hit":
        stats.metrics.file_requests.labels(cache).inc()
        return
    stats._hit.inc()
    if size:
        stats._hit_bytes.inc(size)
        start, recorder = time.perf_counter(), stats.recorder
        request.environ[SENT_HOOK] = lambda sent: recorder.hit_sent(
            sent, time.perf_counter() - start)

