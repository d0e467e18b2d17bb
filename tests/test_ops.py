"""/healthz checks what it claims; /metrics sums over every gunicorn worker."""
from __future__ import annotations

import re
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import responses

from pypicache.errors import StorageError

from .conftest import MIRROR
from .fixture_upstream import Upstream
from .servers import Proxy


def test_healthz_checks_the_cache_the_locks_and_the_catalog(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json["checks"] == {"cache_writable": True, "locks": True, "catalog": True}
    assert response.json["upstream"]["status"] == "unknown"


def test_healthz_fails_when_the_cache_is_not_writable(app, client, monkeypatch):
    cachedir = app.extensions["pypicache"].cachedir

    def full(prefix):
        raise StorageError("the cache disk is full")

    monkeypatch.setattr(cachedir, "new_temp", full)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json["status"] == "failing"
    assert "disk is full" in response.json["checks"]["cache_writable"]


def test_healthz_names_no_path_in_its_failures_and_logs_them(app, client, monkeypatch, caplog):
    """/healthz is open to anyone, logged in or not: what failed, in words; the detail is
    in the log."""
    services = app.extensions["pypicache"]
    secret = "/srv/private-team-path/tmp/healthz.1234.part"

    def denied(prefix):
        raise PermissionError(13, "Permission denied", secret)

    def locked():
        raise sqlite3.OperationalError(f"unable to open database file {secret}")

    monkeypatch.setattr(services.cachedir, "new_temp", denied)
    monkeypatch.setattr(services.cachedir, "try_lock", lambda name: denied(name))
    monkeypatch.setattr(services.catalog, "usage", locked)
    with caplog.at_level("WARNING", logger="pypicache.stats.health"):
        response = client.get("/healthz")
    assert response.status_code == 503
    checks = response.json["checks"]
    assert checks["cache_writable"] == "a file cannot be written in the cache: Permission denied"
    assert checks["locks"] == "a lock cannot be taken in the cache: Permission denied"
    assert checks["catalog"].startswith("the catalog cannot be read: ")
    assert "private-team-path" not in response.text
    assert caplog.text.count("private-team-path") == 3


@responses.activate
def test_healthz_names_no_project_in_the_upstreams_last_error(client):
    responses.get(f"{MIRROR}/private-project/", body=requests.ConnectionError("refused"))
    assert client.get("/simple/private-project/").status_code == 502
    health = client.get("/healthz")
    error = health.json["upstream"]["last_error"]
    assert error == "upstream unreachable: http://127.0.0.1:9: ConnectionError"
    assert "private-project" not in health.text


def test_healthz_is_not_fooled_by_a_concurrent_check(app, client):
    """Two checks at once each take the lock in turn; neither reports the locks as broken."""
    results = []
    threads = [threading.Thread(target=lambda: results.append(app.test_client().get("/healthz")))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.status_code for r in results] == [200] * 8


@responses.activate
def test_healthz_reports_the_upstreams_last_known_state(client):
    responses.get(f"{MIRROR}/demo/", body=requests.ConnectionError("refused"))
    assert client.get("/simple/demo/").status_code == 502
    upstream = client.get("/healthz").json["upstream"]
    assert upstream["status"] == "down" and "unreachable" in upstream["last_error"]
    assert client.get("/healthz").status_code == 200  # the cache still serves what it has
    responses.replace(responses.GET, f"{MIRROR}/demo/", status=404)
    assert client.get("/simple/demo/").status_code == 404  # an answer: the upstream is up
    upstream = client.get("/healthz").json["upstream"]
    assert upstream["status"] == "up" and upstream["last_success"] > upstream["last_failure"]


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus text exposition (0 if absent)."""
    total = 0.0
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}(?:{{(.*)}})? (\S+)", line)
        if match and all(f'{k}="{v}"' in (match[1] or "") for k, v in labels.items()):
            total += float(match[2])
    return total


def test_metrics_in_one_process(client):
    client.get("/healthz")
    text = client.get("/metrics").get_data(as_text=True)
    assert metric(text, "pypicache_http_requests_total", route="/healthz", status="200") == 1
    assert metric(text, "pypicache_cache_files") == 0


@pytest.mark.e2e
def test_metrics_are_summed_over_all_workers(tmp_path):
    up = Upstream(tmp_path / "up").start()
    wheel = up.add_file("demo", "demo-1.0.tar.gz", size=200_000)
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"left by an earlier run")  # must be wiped
    proxy = Proxy(tmp_path / "cache", up.env(), workers=3,
                  PROMETHEUS_MULTIPROC_DIR=str(metrics_dir)).start()
    try:
        url = f"{proxy.url}/packages/{wheel.path.split('/packages/', 1)[1]}"
        assert requests.get(f"{proxy.url}/simple/demo/", timeout=10).ok
        assert requests.get(url, timeout=10).headers["X-Cache"] == "miss"
        with ThreadPoolExecutor(16) as pool:
            caches = list(pool.map(lambda _: requests.get(url, timeout=10).headers["X-Cache"],
                                   range(400)))
        assert caches == ["hit"] * 400
        text = requests.get(f"{proxy.url}/metrics", timeout=10).text
        assert len(list(metrics_dir.glob("counter_*.db"))) >= 2, "only one worker answered"
        assert metric(text, "pypicache_file_requests_total", cache="hit") == 400
        assert metric(text, "pypicache_file_requests_total", cache="miss") == 1
        assert metric(text, "pypicache_http_requests_total", route="/packages/<path:path>",
                      status="200") == 401
        assert metric(text, "pypicache_bytes_total", source="cache") == 400 * 200_000
        assert metric(text, "pypicache_bytes_total", source="upstream") == 200_000
        assert metric(text, "pypicache_downloads_total") == 1
        assert metric(text, "pypicache_upstream_latency_seconds_count") >= 2
        assert metric(text, "pypicache_cache_bytes") == 200_000
    finally:
        proxy.stop()
        up.stop()
