"""Upstream faults through real gunicorn (3 workers): every client either gets the right bytes
or a visibly failed response, nothing partial or wrong is published, and the proxy fetches
only from the configured origins."""
from __future__ import annotations

import threading
import time

import pytest
import requests

from ..fixture_upstream import Upstream
from ..servers import Proxy, free_port
from .conftest import (
    FAST_TIMEOUTS, MIB, assert_cache_consistent, fetch, file_url, published, temp_files, wait_for,
)

pytestmark = pytest.mark.e2e


def concurrently(count: int, job) -> list:
    results = [None] * count

    def run(i: int) -> None:
        results[i] = job(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


# "direct": the file is asked for before its page; the proxy then gets the page first, so
# even a corrupt body of the right length is caught by the page's sha256.
CASES = [(fault, listed) for fault in ("truncate", "chunked-truncate", "corrupt") for listed in (True, False)]


@pytest.mark.parametrize("size", [64 * 1024, 3 * MIB], ids=["one-chunk", "3MiB"])
@pytest.mark.parametrize("fault, listed", CASES, ids=[f"{f}-{'listed' if l else 'direct'}" for f, l in CASES])
def test_bad_bodies_reach_no_client_as_complete_and_are_never_kept(proxy, up, fault, listed, size):
    """Four clients at once (one leader, three followers in any worker) on a body that is cut
    short (under Content-Length or chunked) or has the right length but wrong bytes."""
    project = f"bad-{fault}-{listed}-{size}".replace(":", "")
    wheel = up.add_file(project, f"{project}-1.0.tar.gz", size=size)
    if listed:  # the index page promised a sha256 and size before the file was asked for
        assert requests.get(f"{proxy.url}/simple/{project}/", timeout=10).ok
    up.fault(wheel.filename, fault)
    outcomes = concurrently(4, lambda i: fetch(file_url(proxy, wheel)))
    for outcome in outcomes:
        assert not (outcome.complete and outcome.status == 200), outcome
        assert outcome.status in (200, 502, None), outcome  # cut mid-body, or a clean 502
        assert outcome.sha256 != wheel.sha256
    # One download per failure: a client that comes after a failed download leads a new one.
    assert 1 <= up.downloads(wheel.filename) <= 4
    assert not published(proxy.cache_dir, wheel)
    assert wait_for(lambda: not temp_files(proxy.cache_dir))
    up._faults.pop(wheel.filename)
    again = fetch(file_url(proxy, wheel))
    assert (again.status, again.complete, again.sha256) == (200, True, wheel.sha256)
    assert published(proxy.cache_dir, wheel)
    assert_cache_consistent(proxy.cache_dir, up)


def test_refused_connections_are_a_quick_502(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    environ = {"PYPI_MIRROR_URL": f"{dead}/simple", "PYPI_FILES_URL": f"{dead}/packages"}
    proxy = Proxy(tmp_path / "cache", environ, workers=1, **FAST_TIMEOUTS).start()
    try:
        for path in ("/simple/", "/simple/demo/", "/packages/ab/cd/demo-1.0.tar.gz"):
            start = time.monotonic()
            response = requests.get(proxy.url + path, timeout=10)
            assert response.status_code == 502, (path, response.text)
            assert time.monotonic() - start < 1.5
        assert list((tmp_path / "cache" / "files").rglob("*.tar.gz")) == []
    finally:
        proxy.stop()


def test_a_black_hole_upstream_is_a_504_within_the_read_timeout_and_blocks_no_worker(proxy, up):
    wheel = up.add_file("hole", "hole-1.0.tar.gz", size=200 * 1024)
    up.add_file("hole-page", "hole_page-1.0.tar.gz", size=1000)
    up.fault(wheel.filename, "blackhole")
    up.project_fault("hole-page", "blackhole")
    start = time.monotonic()
    results = {}
    clients = [
        threading.Thread(target=lambda i=i: results.__setitem__(i, fetch(file_url(proxy, wheel))))
        for i in range(3)
    ]
    clients.append(threading.Thread(
        target=lambda: results.__setitem__("page", requests.get(f"{proxy.url}/simple/hole-page/", timeout=30))
    ))
    for client in clients:
        client.start()
    time.sleep(0.5)
    # Meanwhile every worker still answers other requests at once.
    for _ in range(6):
        assert requests.get(f"{proxy.url}/healthz", timeout=2).status_code == 200
    for client in clients:
        client.join(30)
    elapsed = time.monotonic() - start
    assert results["page"].status_code == 504
    assert [results[i].status for i in range(3)] == [504] * 3
    # Read timeout 3 s; a follower that finds the lock free after the leader's timeout leads
    # one more attempt, so the bound is two read timeouts, never a hang.
    assert elapsed < 2 * 3 + 1.5
    assert not published(proxy.cache_dir, wheel) and not temp_files(proxy.cache_dir)


def test_very_slow_bytes_stream_to_every_client_as_they_come(tmp_path):
    """20 KB/s, far below anything useful but each byte within the read timeout: every client
    (leader and followers) gets its first byte at once and the whole file, one download."""
    up = Upstream(tmp_path / "up", throttle=20_000).start()
    wheel = up.add_file("crawl", "crawl-1.0.tar.gz", size=100_000)
    proxy = Proxy(tmp_path / "cache", up.env(), workers=2, **FAST_TIMEOUTS).start()
    try:
        requests.get(f"{proxy.url}/simple/crawl/", timeout=10)
        outcomes = concurrently(3, lambda i: fetch(file_url(proxy, wheel), chunk=1024))
        assert [(o.status, o.complete, o.sha256) for o in outcomes] == [(200, True, wheel.sha256)] * 3
        assert max(o.first_byte for o in outcomes) < 1.0, [o.first_byte for o in outcomes]
        assert up.downloads(wheel.filename) == 1
        assert_cache_consistent(proxy.cache_dir, up)
    finally:
        proxy.stop()
        up.stop()


@pytest.mark.parametrize("delay, status", [("1", 200), ("5", 504)])
def test_slow_headers_within_the_read_timeout_are_waited_for_beyond_it_504(proxy, up, delay, status):
    wheel = up.add_file(f"late{delay}", f"late{delay}-1.0.tar.gz", size=10_000)
    up.fault(wheel.filename, f"slow:{delay}")
    outcome = fetch(file_url(proxy, wheel))
    assert outcome.status == status
    assert published(proxy.cache_dir, wheel) == (status == 200)
    if status == 200:
        assert outcome.sha256 == wheel.sha256


@pytest.mark.parametrize("code", [500, 503])
def test_upstream_5xx_is_502_and_a_cached_page_is_served_stale(tmp_path, code):
    up = Upstream(tmp_path / "up").start()
    wheel = up.add_file("flaky", "flaky-1.0.tar.gz", size=1000)
    up.add_file("fresh", "fresh-1.0.tar.gz", size=1000)
    proxy = Proxy(tmp_path / "cache", up.env(), workers=2, PYPI_INDEX_TTL="1", **FAST_TIMEOUTS).start()
    try:
        assert requests.get(f"{proxy.url}/simple/flaky/", timeout=10).status_code == 200
        up.fault(wheel.filename, f"status:{code}")
        up.project_fault("flaky", f"status:{code}")
        up.project_fault("fresh", f"status:{code}")
        assert fetch(file_url(proxy, wheel)).status == 502
        assert requests.get(f"{proxy.url}/simple/fresh/", timeout=10).status_code == 502
        time.sleep(1.2)
        stale = requests.get(f"{proxy.url}/simple/flaky/", timeout=10)
        assert stale.status_code == 200 and stale.headers["X-Cache"] == "stale"
        assert "Warning" in stale.headers and wheel.filename in stale.text
        assert not published(proxy.cache_dir, wheel)
        up.clear_faults()
        assert fetch(file_url(proxy, wheel)).sha256 == wheel.sha256
    finally:
        proxy.stop()
        up.stop()


def test_redirects_to_another_host_are_refused_and_never_followed(proxy, up, tmp_path):
    elsewhere = Upstream(tmp_path / "elsewhere").start()  # another origin (another port)
    try:
        bait = elsewhere.add_file("bait", "bait-1.0.tar.gz", size=1000)
        wheel = up.add_file("moved", "moved-1.0.tar.gz", size=1000)
        up.add_file("moved-page", "moved_page-1.0.tar.gz", size=1000)
        up.fault(wheel.filename, f"redirect:{bait.url}")
        up.project_fault("moved-page", f"redirect:{elsewhere.index_url}/bait/")
        response = requests.get(file_url(proxy, wheel), timeout=10)
        assert response.status_code == 502
        assert "outside the configured upstream" in response.text
        # A page sent elsewhere means "not here" (pypiserver's fallback sends what it lacks to
        # the public index): a 404, as after the upstream's own 404, and still not followed.
        assert requests.get(f"{proxy.url}/simple/moved-page/", timeout=10).status_code == 404
        assert sum(elsewhere.requests.values()) == 0
        assert not published(proxy.cache_dir, wheel)
    finally:
        elsewhere.stop()


class _ForeignLinks(Upstream):
    """An upstream whose page links one file on a host outside the proxy's configuration."""

    foreign: dict[str, str] = {}

    def _href(self, f):
        return self.foreign.get(f.filename) or super()._href(f)


@pytest.mark.parametrize("fmt", ["html", "json"])
def test_file_links_to_hosts_outside_the_configuration_are_dropped_never_fetched(tmp_path, fmt):
    elsewhere = Upstream(tmp_path / "elsewhere").start()
    up = _ForeignLinks(tmp_path / "up", formats=(fmt,)).start()
    proxy = Proxy(tmp_path / "cache", up.env(), workers=1, **FAST_TIMEOUTS).start()
    try:
        bait = elsewhere.add_file("mixed", "mixed-6.6.tar.gz", size=1000)
        good = up.add_file("mixed", "mixed-1.0.tar.gz", size=1000)
        evil = up.add_file("mixed", "mixed-6.6.tar.gz", size=1000)
        up.foreign = {evil.filename: bait.url}
        page = requests.get(f"{proxy.url}/simple/mixed/", timeout=10)
        assert page.status_code == 200
        assert good.filename in page.text and evil.filename not in page.text
        assert str(elsewhere._ports[1]) not in page.text
        # The only way to name a file is a path under the configured files base.
        assert fetch(file_url(proxy, good)).sha256 == good.sha256
        assert sum(elsewhere.requests.values()) == 0
    finally:
        proxy.stop()
        up.stop()
        elsewhere.stop()
