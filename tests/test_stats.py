"""Statistics: exact totals across gunicorn workers, and the note's speed-up model."""
from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from pypicache.catalog import Catalog
from pypicache.stats import report
from pypicache.stats.recorder import USES_KEPT, Recorder

from .fixture_upstream import Upstream
from .servers import Proxy

KIB = 1 << 10


# --- the model ---------------------------------------------------------------------------
def test_the_notes_figures():
    figures = [round(report.saving(n, 5, 200) * 100, 2) for n in report.CLIENTS]
    assert figures == [48.75, 65.0, 78.0, 87.75]
    # 200 MB installed 10 times at 5 MB/s: 400 s without the cache, about 351 s saved.
    assert round(400 * report.saving(10, 5, 200)) == 351


def test_chart_bars_follow_the_values():
    rows = [{"clients": n, "note": report.saving(n, 5, 200), "measured": None}
            for n in report.CLIENTS]
    chart = report.chart(rows)
    heights = [bar.height for bar in chart["bars"]]
    assert len(heights) == 4 and heights == sorted(heights)  # no measured bars yet
    assert [label["text"] for label in chart["labels"]] == ["n = 2", "n = 3", "n = 5", "n = 10"]


# --- the recorder in one process ----------------------------------------------------------
@pytest.fixture
def catalog(tmp_path):
    catalog = Catalog(tmp_path / "catalog.sqlite3")
    catalog.add_cached("a/b/demo-1.0.tar.gz", "demo", 100, "0" * 64)
    return catalog


def test_threads_counting_at_once_lose_nothing(catalog):
    recorder = Recorder(catalog, interval=0.01)
    path = "a/b/demo-1.0.tar.gz"

    def hammer():
        for _ in range(2000):
            recorder.file_request(path, "hit", "GET", 100)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    recorder.flush()
    assert catalog.totals() == {"requests_hit": 16000, "bytes_hit": 1_600_000}
    assert catalog.files("demo")[0][-1] == 16000


def test_a_failed_flush_keeps_its_counts_for_the_next(catalog, monkeypatch):
    recorder = Recorder(catalog, interval=60)
    recorder.file_request("a/b/demo-1.0.tar.gz", "hit", "GET", 100)
    recorder.event("upstream_failed", "boom", at=5.0)
    real = catalog.add_stats

    def locked(*args):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(catalog, "add_stats", locked)
    recorder.flush()
    recorder.file_request("a/b/demo-1.0.tar.gz", "hit", "GET", 100)
    monkeypatch.setattr(catalog, "add_stats", real)
    recorder.flush()
    assert catalog.totals() == {"requests_hit": 2, "bytes_hit": 200}
    assert catalog.state() == {"upstream_failed": (5.0, "boom")}


def test_head_requests_are_uses_but_not_hits(catalog):
    recorder = Recorder(catalog, interval=60)
    recorder.file_request("a/b/demo-1.0.tar.gz", "hit", "HEAD", 0)
    recorder.flush()
    row = catalog.files("demo")[0]
    assert row[-1] == 0 and row[5] > row[4]  # hits 0, last_used moved
    assert catalog.totals() == {}


def test_state_keeps_the_latest_event(catalog):
    catalog.add_stats([], {}, {"upstream_ok": (10.0, None)})
    catalog.add_stats([], {}, {"upstream_ok": (5.0, None)})  # an older flush of a slow worker
    assert catalog.state()["upstream_ok"] == (10.0, None)


# --- across real gunicorn workers ------------------------------------------------------------
def _get(url: str, method: str = "GET") -> tuple[str, int]:
    response = requests.request(method, url, timeout=30)
    assert response.status_code == 200, response.text
    return response.headers["X-Cache"], len(response.content)


@pytest.mark.e2e
def test_hits_and_misses_hammered_across_workers_add_up_exactly(tmp_path):
    up = Upstream(tmp_path / "up", throttle=8 << 20).start()
    hot = [up.add_file(f"hot{i}", f"hot{i}-1.0.tar.gz", size=(64 + 16 * i) * KIB) for i in range(5)]
    cold = [up.add_file(f"cold{i}", f"cold{i}-1.0.tar.gz", size=(256 + 32 * i) * KIB)
            for i in range(10)]
    proxy = Proxy(tmp_path / "cache", up.env(), workers=4).start()
    url = lambda f: f"{proxy.url}/packages/{f.path.split('/packages/', 1)[1]}"  # noqa: E731
    try:
        for f in hot + cold:
            assert requests.get(f"{proxy.url}/simple/{f.project}/", timeout=10).ok
        for f in hot:
            assert _get(url(f)) == ("miss", f.size)
        rng = random.Random(6)
        plan = [("GET", rng.choice(hot)) for _ in range(1200)]
        plan += [("HEAD", rng.choice(hot)) for _ in range(100)]
        plan += [("GET", f) for f in cold for _ in range(12)]
        rng.shuffle(plan)
        start = time.monotonic()
        with ThreadPoolExecutor(24) as pool:
            answers = list(pool.map(lambda job: (job, _get(url(job[1]), job[0])), plan))
        elapsed = time.monotonic() - start
        print(f"\n{len(plan)} requests over 4 workers in {elapsed:.2f} s")
        seen, hits_by_file, hit_bytes = Counter(), Counter(), 0
        for (method, f), (cache, size) in answers:
            if method == "GET":
                seen[cache] += 1
                if cache == "hit":
                    hits_by_file[f.path] += 1
                    hit_bytes += size
        assert seen["miss"] == 10  # one download per cold file, whatever the worker
        assert sum(up.downloads(f.filename) for f in cold) == 10
        gets = sum(seen.values()) + len(hot)
        live = _poll_stats(proxy, gets)  # the workers' flushes land within about a second
        assert live["requests"] == {"hit": seen["hit"], "miss": 15, "follower": seen["follower"]}
    finally:
        proxy.stop()  # SIGTERM: every worker flushes what it still holds as it exits
        up.stop()
    catalog = Catalog(proxy.cache_dir / "catalog.sqlite3")
    totals = catalog.totals()
    assert totals["requests_hit"] == seen["hit"]
    assert totals["requests_miss"] == 15
    assert totals["requests_follower"] == seen["follower"]
    assert totals["bytes_hit"] == hit_bytes
    assert totals["downloads"] == 15
    assert totals["download_bytes"] == sum(f.size for f in hot + cold)
    hits = {row[0]: row[-1] for row in catalog.files()}
    for f in hot + cold:
        assert hits[f.path.split("/packages/", 1)[1]] == hits_by_file[f.path], f.filename
    assert totals["timed_hit_seconds"] > 0 and totals["timed_hit_bytes"] == hit_bytes


def _poll_stats(proxy: Proxy, answered: int, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        data = requests.get(f"{proxy.url}/stats.json", timeout=10).json()
        if sum(data["requests"].values()) >= answered or time.monotonic() > deadline:
            return data
        time.sleep(0.2)


def test_hits_on_a_file_whose_row_another_worker_has_not_written_yet_wait_for_it(tmp_path):
    catalog = Catalog(tmp_path / "catalog.sqlite3")
    recorder = Recorder(catalog, interval=3600)
    recorder.file_request("x/late-1.0.tar.gz", "hit", "GET", 10)
    recorder.flush()  # the worker that published the file has not flushed its row yet
    catalog.add_cached("x/late-1.0.tar.gz", "late", 10, "0" * 64)
    recorder.flush()
    assert [(row[0], row[-1]) for row in catalog.files()] == [("x/late-1.0.tar.gz", 1)]


def test_a_use_of_something_fetched_ahead_counts_once_whichever_worker_flushes_first(tmp_path):
    catalog = Catalog(tmp_path / "catalog.sqlite3")
    path = "x/late-1.0-py3-none-any.whl.metadata"
    catalog.add_cached(path, "late", 10, "0" * 64)
    clients = Recorder(catalog, interval=3600, uses_kept=USES_KEPT)  # a client's worker
    ahead = Recorder(catalog, interval=3600)  # the worker that fetched it ahead
    early = Recorder(catalog, interval=3600, uses_kept=USES_KEPT)
    early.page_request("never")  # a use from before the fetch began
    began = time.time()
    clients.file_request("x/early-1.0.tar.gz", "hit", "GET", 10)  # before: no such fetch
    clients.file_request(path, "follower", "GET", 10)  # followed that fetch
    clients.page_request("late")
    clients.flush()  # before the fetching worker's flush
    ahead.fetched_ahead("metadata", path, began)
    ahead.fetched_ahead("page", "page:late", began)
    ahead.fetched_ahead("page", "page:never", began)
    ahead.flush()
    clients.flush()
    totals = catalog.totals()
    assert (totals["ahead_metadata"], totals["ahead_used_metadata"]) == (1, 1)
    assert (totals["ahead_page"], totals["ahead_used_page"]) == (2, 1)
    clients.file_request(path, "hit", "GET", 10)  # a second use counts no more
    clients.flush()
    assert catalog.totals()["ahead_used_metadata"] == 1
    early.flush()
    assert catalog.totals()["ahead_used_page"] == 1
