"""Fetching ahead (pypicache/prefetch.py), in process against the fixture upstream on 127.0.0.1,
which counts every request: what a client's `.metadata` leads to, and its bounds."""
from __future__ import annotations

import json
import time

import pytest

from .servers import add_chain

JSON = "application/vnd.pypi.simple.v1+json"


def user_agent(python: str = "3.12.1") -> str:
    """What pip sends (pip/_internal/network/session.py), for a CPython on Linux."""
    data = {"installer": {"name": "pip", "version": "26.3"}, "python": python,
            "implementation": {"name": "CPython", "version": python},
            "distro": {"name": "Debian GNU/Linux", "version": "12",
                       "libc": {"lib": "glibc", "version": "2.36"}},
            "system": {"name": "Linux", "release": "6.1.0"}, "cpu": "x86_64", "ci": None}
    return "pip/26.3 " + json.dumps(data, separators=(",", ":"), sort_keys=True)


@pytest.fixture
def fetching(make_app, upstream):
    """Apps with fetching ahead on (and their threads ended after the test)."""
    apps = []

    def make(**settings):
        app = make_app(mirror_url=upstream.index_url, files_url=upstream.files_url,
                       prefetch=True, **settings)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["pypicache"].prefetch.close()


def metadata_url(up, file) -> str:
    return "/packages" + file.path[len(up.package_loc):] + ".metadata"


def ask(app, up, file, agent: str | None = None):
    """A client GETs a wheel's metadata; returns once what it led to is done."""
    answer = app.test_client().get(metadata_url(up, file),
                                   headers={"User-Agent": agent or user_agent()})
    assert answer.status_code == 200, answer.text
    settle(app)
    return answer


def settle(app) -> None:
    assert app.extensions["pypicache"].prefetch.wait_idle(60)


def requests_to(up) -> dict[str, int]:
    return up.stats()["requests"]


def page_requests(up, project: str) -> int:
    return requests_to(up).get(f"GET {up.simple_path}/{project}/", 0)


def metadata_requests(up, file) -> int:
    return requests_to(up).get(f"GET {file.path}.metadata", 0)


def totals(app) -> dict[str, float]:
    app.extensions["pypicache.stats"].recorder.flush()
    return app.extensions["pypicache"].catalog.totals()


def wait_for(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition never came"
        time.sleep(0.02)


def test_the_closure_is_fetched_ahead_and_a_client_then_finds_it(fetching, upstream):
    files = add_chain(upstream)  # alpha -> beta>=1 -> gamma (2.0 needs Python 4, 0.5 yanked)
    app = fetching()
    ask(app, upstream, files["alpha-1.0-py3-none-any.whl"])
    for project, wheel in (("beta", "beta-1.0-py3-none-any.whl"),
                           ("gamma", "gamma-1.0-py3-none-any.whl")):
        assert page_requests(upstream, project) == 1
        assert metadata_requests(upstream, files[wheel]) == 1
    assert metadata_requests(upstream, files["gamma-2.0-py3-none-any.whl"]) == 0
    assert upstream.stats()["downloads"] == {}  # metadata only: no wheel bodies by default
    counted = totals(app)
    assert (counted["ahead_page"], counted["ahead_metadata"]) == (2, 2)

    client = app.test_client()
    page = client.get("/simple/beta/", headers={"Accept": JSON})
    assert page.headers["X-Cache"] == "hit"
    beta = client.get(metadata_url(upstream, files["beta-1.0-py3-none-any.whl"]),
                      headers={"User-Agent": user_agent()})
    assert beta.headers["X-Cache"] == "hit"
    settle(app)
    assert page_requests(upstream, "beta") == 1  # asked of the upstream once, by the fetch ahead
    counted = totals(app)
    assert (counted["ahead_used_page"], counted["ahead_used_metadata"]) == (1, 1)
    ahead = client.get("/stats.json").json["ahead"]
    assert ahead["kinds"]["page"] == {"fetched": 2, "used": 1, "unused": 1}
    assert ahead["kinds"]["metadata"] == {"fetched": 2, "used": 1, "unused": 1}
    assert 'pypicache_fetched_ahead_total{kind="page"} 2.0' in client.get("/metrics").text
    assert 'pypicache_fetched_ahead_used_total{kind="metadata"} 1.0' in client.get("/metrics").text
    assert 'id="fetched-ahead"' in client.get("/").text


def test_depth_bounds_how_far_it_goes(fetching, upstream):
    files = add_chain(upstream)
    app = fetching(prefetch_depth=1)
    ask(app, upstream, files["alpha-1.0-py3-none-any.whl"])
    assert metadata_requests(upstream, files["beta-1.0-py3-none-any.whl"]) == 1
    assert page_requests(upstream, "gamma") == 0
    assert metadata_requests(upstream, files["gamma-1.0-py3-none-any.whl"]) == 0


def test_a_fan_out_beyond_the_queue_is_dropped_and_counted(fetching, upstream):
    for i in range(50):
        upstream.add_wheel(f"dep{i:02d}", "1.0")
    root = upstream.add_wheel("wide", "1.0", requires=[f"dep{i:02d}" for i in range(50)])
    app = fetching(prefetch_queue=5, prefetch_concurrency=1)
    ask(app, upstream, root)
    fetched = sum(page_requests(upstream, f"dep{i:02d}") for i in range(50))
    assert fetched == 5  # the one thread queued its 50 while nothing took from the queue
    counted = totals(app)
    assert (counted["ahead_page"], counted["ahead_dropped"]) == (5, 45)


def test_markers_are_those_of_the_clients_python(fetching, upstream):
    root = upstream.add_wheel("alpha", "1.0", requires=['new; python_version >= "3.11"', "plain",
                                                        'odd; platform_version == "1"'])
    for name in ("new", "plain", "odd"):
        upstream.add_wheel(name, "1.0")
    app = fetching()
    ask(app, upstream, root, user_agent("3.8.18"))
    assert (page_requests(upstream, "new"), page_requests(upstream, "plain")) == (0, 1)
    ask(app, upstream, root, "curl/8.5.0")  # says nothing of its Python: no marker applies
    assert page_requests(upstream, "new") == 0
    ask(app, upstream, root, user_agent("3.12.1"))
    assert page_requests(upstream, "new") == 1
    assert page_requests(upstream, "odd") == 0  # a value the User-Agent does not give


def test_extras_only_those_a_requirement_asked_for(fetching, upstream):
    root = upstream.add_wheel("alpha", "1.0", requires=["beta[speed]", 'docs; extra == "docs"'])
    upstream.add_wheel("beta", "1.0", requires=['fast; extra == "speed"', 'slow; extra == "other"'])
    for name in ("docs", "fast", "slow"):
        upstream.add_wheel(name, "1.0")
    app = fetching()
    ask(app, upstream, root)
    asked = [page_requests(upstream, name) for name in ("beta", "fast", "slow", "docs")]
    assert asked == [1, 1, 0, 0]


def test_a_client_asking_for_metadata_being_fetched_ahead_follows_that_fetch(fetching, upstream):
    files = add_chain(upstream)
    beta = files["beta-1.0-py3-none-any.whl"]
    upstream.fault(beta.filename + ".metadata", "slow:1")
    app = fetching()
    client = app.test_client()
    client.get(metadata_url(upstream, files["alpha-1.0-py3-none-any.whl"]),
               headers={"User-Agent": user_agent()})
    wait_for(lambda: metadata_requests(upstream, beta) == 1)  # the fetch ahead is under way
    answer = client.get(metadata_url(upstream, beta), headers={"User-Agent": user_agent()})
    # It waited for that download (a hit once published, or a follower of its bytes).
    assert answer.status_code == 200 and answer.headers["X-Cache"] in ("hit", "follower")
    settle(app)
    assert metadata_requests(upstream, beta) == 1
    assert totals(app)["ahead_used_metadata"] == 1  # a client that followed the fetch used it


def test_a_client_asking_for_a_page_being_fetched_ahead_waits_for_that_fetch(fetching, upstream):
    files = add_chain(upstream)
    upstream.project_fault("beta", "slow:1")
    app = fetching()
    client = app.test_client()
    client.get(metadata_url(upstream, files["alpha-1.0-py3-none-any.whl"]),
               headers={"User-Agent": user_agent()})
    wait_for(lambda: page_requests(upstream, "beta") == 1)
    answer = client.get("/simple/beta/", headers={"Accept": JSON})
    assert answer.status_code == 200 and answer.headers["X-Cache"] == "hit"
    settle(app)
    assert page_requests(upstream, "beta") == 1


def test_it_stops_when_the_upstream_fails(fetching, upstream):
    for i in range(10):
        upstream.add_wheel(f"down{i}", "1.0")
        upstream.project_fault(f"down{i}", "status:500")
    root = upstream.add_wheel("alpha", "1.0", requires=[f"down{i}" for i in range(10)])
    later = upstream.add_wheel("later", "1.0", requires=["fine"])
    upstream.add_wheel("fine", "1.0")
    app = fetching(prefetch_concurrency=1)
    ask(app, upstream, root)
    assert sum(page_requests(upstream, f"down{i}") for i in range(10)) == 1
    counted = totals(app)
    assert (counted["ahead_failed"], counted["ahead_dropped"]) == (1, 9)
    ask(app, upstream, later)  # within the pause: a client is served, nothing fetched ahead
    assert page_requests(upstream, "fine") == 0
    assert totals(app)["ahead_dropped"] == 10


def test_no_download_slot_is_taken_that_a_client_may_need(make_app, fetching, upstream):
    files = add_chain(upstream)
    alpha = files["alpha-1.0-py3-none-any.whl"]
    warm = make_app(mirror_url=upstream.index_url, files_url=upstream.files_url)
    assert warm.test_client().get(metadata_url(upstream, alpha)).status_code == 200
    app = fetching(max_downloads=2)  # the same cache: alpha's metadata is a hit
    slots = app.extensions["pypicache"].fetcher.slots
    held = [slots.acquire(), slots.acquire()]  # clients' downloads take every slot
    try:
        ask(app, upstream, alpha)
    finally:
        for slot in held:
            slots.release(slot)
    assert page_requests(upstream, "beta") == 1  # pages take no download slot
    assert metadata_requests(upstream, files["beta-1.0-py3-none-any.whl"]) == 0
    assert totals(app)["ahead_dropped"] == 1


def test_wheels_too_when_asked_to(fetching, upstream):
    files = add_chain(upstream)
    app = fetching(prefetch_files=True)
    ask(app, upstream, files["alpha-1.0-py3-none-any.whl"])
    cache = app.config["PYPICACHE"].cache_dir / "files"
    wheels = [files[name] for name in ("beta-1.0-py3-none-any.whl", "gamma-1.0-py3-none-any.whl")]
    for wheel in wheels:  # each download finishes in its own thread
        wait_for(lambda: (cache / wheel.path[len(upstream.package_loc) + 1:]).is_file())
        assert upstream.downloads(wheel.filename) == 1
    assert upstream.downloads("alpha-1.0-py3-none-any.whl") == 0  # the client's own, not ahead
    assert totals(app)["ahead_file"] == 2
    answer = app.test_client().get("/packages" + wheels[0].path[len(upstream.package_loc):])
    assert answer.headers["X-Cache"] == "hit" and upstream.downloads(wheels[0].filename) == 1


def test_a_job_another_worker_did_lately_is_not_done_again(fetching, upstream):
    """Workers share the cache: what one fetched ahead, another does not work out again
    (each worker used to repeat the others' choices and reads, once per worker)."""
    files = add_chain(upstream)
    first, second = fetching(), fetching()  # two workers of one cache directory
    ask(first, upstream, files["alpha-1.0-py3-none-any.whl"])
    assert metadata_requests(upstream, files["gamma-1.0-py3-none-any.whl"]) == 1
    done = []
    prefetch = second.extensions["pypicache"].prefetch
    work = prefetch._work
    prefetch._work = lambda job: (done.append(job), work(job))
    ask(second, upstream, files["alpha-1.0-py3-none-any.whl"])
    assert done == []  # alpha's requirements, and theirs, were claimed by the first
    assert metadata_requests(upstream, files["gamma-1.0-py3-none-any.whl"]) == 1
