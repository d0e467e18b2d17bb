"""Prometheus metrics, summed over all gunicorn workers by prometheus_client's multiprocess mode.

Under gunicorn, gunicorn.conf.py sets PROMETHEUS_MULTIPROC_DIR (a fresh directory per run)
before any worker starts, so every worker's counters live in memory-mapped files there and a
scrape of any worker reads them all; a dead worker's live gauges go in child_exit. Outside
gunicorn (tests, `flask run`) the same metrics are this process's own. Cache size and file
count are read from the catalog at scrape time, so they are the same whoever answers.
"""
from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from ..catalog import Catalog
from .signals import AHEAD_KINDS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
DOWNLOAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


def multiprocess() -> bool:
    # prometheus_client's own switch, read by prometheus_client too: not one of our settings.
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class Metrics:
    def __init__(self, catalog: Catalog, max_size: int = 0):
        self.catalog, self.max_size = catalog, max_size
        # A registry per app: tests build many apps in one process. In multiprocess mode
        # values go to the shared files whatever registry a metric was made with.
        self.registry = CollectorRegistry()
        make = dict(registry=self.registry)
        self.requests = Counter(
            "pypicache_http_requests", "HTTP requests answered, by route, method and status",
            ["route", "method", "status"], **make)
        self.file_requests = Counter(
            "pypicache_file_requests", "Package file GETs by how the cache answered them",
            ["cache"], **make)
        self.bytes = Counter(
            "pypicache_bytes", "Bytes of package files: sent from the cache, or fetched from "
            "the upstream", ["source"], **make)
        self.downloads = Counter(
            "pypicache_downloads", "Files downloaded from the upstream and published", **make)
        self.download_seconds = Histogram(
            "pypicache_download_seconds", "Time the body of each published download took to "
            "arrive from the upstream", buckets=DOWNLOAD_BUCKETS, **make)
        self.upstream_latency = Histogram(
            "pypicache_upstream_latency_seconds", "Time until the upstream's response headers",
            ["outcome"], buckets=LATENCY_BUCKETS, **make)
        self.logins = Counter(
            "pypicache_login_checks", "Logins not already known: accepted or refused by a "
            "bcrypt check, or throttled (answered without one)", ["outcome"], **make)
        self.evicted = Counter(
            "pypicache_evicted_files", "Files removed to keep the cache under its size cap", **make)
        self.fetched_ahead = Counter(
            "pypicache_fetched_ahead", "Pages, metadata and files fetched from the upstream "
            "ahead of any client asking (pypicache/prefetch.py)", ["kind"], **make)
        self.ahead_dropped = Counter(
            "pypicache_fetch_ahead_dropped", "Fetch-ahead work left undone: queue full, paused "
            "after an upstream failure, or no download slot to spare", **make)
        self.ahead_failed = Counter(
            "pypicache_fetch_ahead_failed", "Fetch-ahead steps that failed (fetching ahead then "
            "pauses)", ["kind"], **make)
        self.policy_refusals = Counter(
            "pypicache_policy_refusals", "Requests the policy refused something in (in report "
            "mode: would have), by rule, mode and what: a project, files of a page, a file",
            ["rule", "mode", "what"], **make)

        self.uploads = Counter(
            "pypicache_uploads", "Uploads to the local index (PYPI_UPLOADS), accepted or "
            "refused", ["outcome"], **make)

    def exposition(self) -> bytes:
        registry = CollectorRegistry()
        if multiprocess():
            MultiProcessCollector(registry)
        else:
            registry.register(_Own(self.registry))
        registry.register(_CacheSize(self.catalog, self.max_size))
        registry.register(_UsedAhead(self.catalog))
        return generate_latest(registry)


class _Own:
    def __init__(self, registry: CollectorRegistry):
        self.registry = registry

    def collect(self):
        return self.registry.collect()


class _CacheSize:
    def __init__(self, catalog: Catalog, max_size: int):
        self.catalog, self.max_size = catalog, max_size

    def collect(self):
        usage = self.catalog.usage()
        yield GaugeMetricFamily("pypicache_cache_bytes", "Bytes of cached files", value=usage.bytes)
        yield GaugeMetricFamily("pypicache_cache_files", "Cached files", value=usage.files)
        yield GaugeMetricFamily("pypicache_cache_projects", "Projects cached", value=usage.projects)
        yield GaugeMetricFamily("pypicache_cache_page_bytes", "Bytes of cached index pages",
                                value=usage.page_bytes)
        yield GaugeMetricFamily("pypicache_cache_disk_bytes", "Bytes the cache takes on disk: "
                                "files, index pages and catalog (what the size cap bounds)",
                                value=usage.disk)
        yield GaugeMetricFamily("pypicache_cache_max_bytes", "The size cap of the cache's disk "
                                "use (PYPI_CACHE_MAX_SIZE); 0: no cap", value=self.max_size)


class _UsedAhead:
    """Things fetched ahead that a client then asked for: found by the statistics flushes of
    all workers together (pypicache/catalog.py), so read from the catalog like the cache size."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog

    def collect(self):
        family = CounterMetricFamily("pypicache_fetched_ahead_used", "Pages, metadata and files "
                                     "fetched ahead that a client then asked for", labels=["kind"])
        totals = self.catalog.totals()
        for kind in AHEAD_KINDS:
            family.add_metric([kind], totals.get(f"ahead_used_{kind}", 0))
        yield family
