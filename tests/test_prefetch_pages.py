"""Fetching ahead from a page (pypicache/prefetch.py `after_page`): a client sent a page the
upstream was just asked for gets the `.metadata` of the release it will pick there fetched
ahead, and what that requires below it, as for a `.metadata` it was sent. In process, against
the fixture upstream, which counts every request."""
from __future__ import annotations

from .servers import add_chain
from .test_prefetch import (
    JSON, fetching, metadata_requests, metadata_url, page_requests, settle, totals, user_agent,
    wait_for,
)

__all__ = ["fetching"]  # the fixture, used by name
ALPHA, BETA, GAMMA = ("alpha-1.0-py3-none-any.whl", "beta-1.0-py3-none-any.whl",
                      "gamma-1.0-py3-none-any.whl")


def page(app, project: str):
    answer = app.test_client().get(f"/simple/{project}/",
                                   headers={"Accept": JSON, "User-Agent": user_agent()})
    assert answer.status_code == 200, answer.text
    return answer


def test_a_page_miss_leads_to_its_latest_release_s_metadata_and_below(fetching, upstream):
    files = add_chain(upstream)  # alpha -> beta>=1 -> gamma (2.0 needs Python 4, 0.5 yanked)
    app = fetching()
    assert page(app, "alpha").headers["X-Cache"] == "miss"
    settle(app)
    for wheel in (ALPHA, BETA, GAMMA):
        assert metadata_requests(upstream, files[wheel]) == 1, wheel
    assert (page_requests(upstream, "beta"), page_requests(upstream, "gamma")) == (1, 1)
    assert metadata_requests(upstream, files["gamma-2.0-py3-none-any.whl"]) == 0
    assert upstream.stats()["downloads"] == {}
    counted = totals(app)
    assert (counted["ahead_page"], counted["ahead_metadata"]) == (2, 3)
    # The client's next question is a hit, and asks the upstream nothing more.
    answer = app.test_client().get(metadata_url(upstream, files[ALPHA]),
                                   headers={"User-Agent": user_agent()})
    assert answer.headers["X-Cache"] == "hit"
    settle(app)
    assert metadata_requests(upstream, files[ALPHA]) == 1
    assert totals(app)["ahead_used_metadata"] == 1


def test_a_page_hit_leads_to_nothing(make_app, fetching, upstream):
    add_chain(upstream)
    warm = make_app(mirror_url=upstream.index_url, files_url=upstream.files_url)
    page(warm, "alpha")  # cached, fetching ahead off
    app = fetching()  # the same cache
    assert page(app, "alpha").headers["X-Cache"] == "hit"
    settle(app)
    assert upstream.stats()["requests"].keys() == {f"GET {upstream.simple_path}/alpha/"}


def test_depth_counts_from_the_page_s_release(fetching, upstream):
    files = add_chain(upstream)
    app = fetching(prefetch_depth=1)
    page(app, "alpha")
    settle(app)
    assert metadata_requests(upstream, files[BETA]) == 1  # one level below alpha 1.0
    assert page_requests(upstream, "gamma") == 0


def test_a_client_asking_for_the_metadata_follows_the_fetch_its_page_began(fetching, upstream):
    files = add_chain(upstream)
    upstream.fault(files[ALPHA].filename + ".metadata", "slow:1")
    app = fetching()
    page(app, "alpha")
    wait_for(lambda: metadata_requests(upstream, files[ALPHA]) == 1)  # under way
    answer = app.test_client().get(metadata_url(upstream, files[ALPHA]),
                                   headers={"User-Agent": user_agent()})
    assert answer.status_code == 200 and answer.headers["X-Cache"] in ("hit", "follower")
    settle(app)
    assert metadata_requests(upstream, files[ALPHA]) == 1


def test_with_the_wheels_the_next_level_is_queued_before_a_wheel_s_download(fetching, upstream):
    """A wheel's download waits for the upstream's headers in the thread that starts it: the
    requirements below are in the queue by then, for the other threads."""
    add_chain(upstream)
    app = fetching(prefetch_files=True)
    prefetch = app.extensions["pypicache"].prefetch
    submitted, at_download = [], {}
    submit, download = prefetch._submit, prefetch._file
    prefetch._submit = lambda job: (submitted.append(job.project), submit(job))
    prefetch._file = lambda path: (at_download.setdefault(path.rsplit("/", 1)[1],
                                                          list(submitted)), download(path))
    page(app, "alpha")
    settle(app)
    assert "beta" in at_download[ALPHA] and "gamma" in at_download[BETA]
    cache = app.config["PYPICACHE"].cache_dir / "files"
    wait_for(lambda: len(list(cache.rglob("*.whl"))) == 3)  # each finishes in its own thread
    assert totals(app)["ahead_file"] == 3


def test_a_page_miss_within_a_pause_fetches_nothing_and_is_counted(fetching, upstream):
    upstream.add_wheel("down", "1.0")
    upstream.project_fault("down", "status:500")
    upstream.add_wheel("alpha", "1.0", requires=["down"])
    later = upstream.add_wheel("later", "1.0")
    app = fetching()
    page(app, "alpha")
    settle(app)  # alpha's metadata, then down's page fails: fetching ahead pauses
    before = totals(app)
    assert before["ahead_failed"] == 1
    assert page(app, "later").headers["X-Cache"] == "miss"  # the client is served
    settle(app)
    assert metadata_requests(upstream, later) == 0
    assert totals(app)["ahead_dropped"] == before.get("ahead_dropped", 0) + 1
