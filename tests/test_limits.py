"""Limits in one process: download slots, the negative cache, page refreshes that switch all
at once, big pages parsed in a helper process, lock waits that follow the holder's progress."""
from __future__ import annotations

import hashlib
import json
import threading
import time

import pytest
import responses

from pypicache.errors import UpstreamTimeout
from pypicache.pages import Body
from pypicache.cachedir import CacheDir

from .conftest import FILES, MIRROR
from .reliability.conftest import wait_for

V1_JSON = "application/vnd.pypi.simple.v1+json"
BODY = b"sdist bytes " * 100
PATH = "ab/demo-1.0.tar.gz"


def _page(*versions: str) -> str:
    files = [{"filename": f"demo-{v}.tar.gz", "url": f"{FILES}/ab/demo-{v}.tar.gz",
              "hashes": {"sha256": hashlib.sha256(BODY).hexdigest()}} for v in versions]
    return json.dumps({"meta": {"api-version": "1.0"}, "name": "demo", "files": files})


@responses.activate
def test_past_the_download_slots_a_request_waits_then_gets_503_with_retry_after(make_app):
    app = make_app(max_downloads=1, download_wait=0.2)
    responses.get(f"{MIRROR}/demo/", body=_page("1.0"), content_type=V1_JSON)
    responses.get(f"{FILES}/{PATH}", body=BODY)
    client, fetcher = app.test_client(), app.extensions["pypicache"].fetcher
    slot = fetcher.slots.acquire()  # a download of this worker holds the only slot
    busy = client.get(f"/packages/{PATH}")
    assert busy.status_code == 503 and busy.headers["Retry-After"] == "1"
    fetcher.slots.release(slot)
    assert client.get(f"/packages/{PATH}").data == BODY
    locks = app.extensions["pypicache"].cachedir.locks  # the download thread releases them last
    assert wait_for(lambda: not list(locks.iterdir())), list(locks.iterdir())


@responses.activate
def test_clients_waiting_on_a_download_that_found_no_slot_get_the_same_503(make_app):
    app = make_app(max_downloads=1, download_wait=0.5)
    responses.get(f"{MIRROR}/demo/", body=_page("1.0"), content_type=V1_JSON)
    responses.get(f"{FILES}/{PATH}", body=BODY)
    fetcher = app.extensions["pypicache"].fetcher
    slot = fetcher.slots.acquire()  # a download of this worker holds the only slot
    assert app.test_client().get("/simple/demo/").status_code == 200
    answers = []

    def client() -> None:
        response = app.test_client().get(f"/packages/{PATH}")
        answers.append((response.status_code, response.headers.get("Retry-After")))

    threads = [threading.Thread(target=client) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    fetcher.slots.release(slot)
    assert answers == [(503, "1")] * 3  # the leader's answer, and its followers' (not 502)


@responses.activate
def test_slots_are_shared_by_every_worker(make_app):
    app = make_app(max_downloads_total=2, download_wait=0.1)
    other = CacheDir(app.config["PYPICACHE"].cache_dir)  # another worker's slots: the same files
    held = [other.try_lock("slot-0"), other.try_lock("slot-1")]
    responses.get(f"{MIRROR}/demo/", body=_page("1.0"), content_type=V1_JSON)
    assert app.test_client().get(f"/packages/{PATH}").status_code == 503
    other.unlock("slot-0", held[0])
    assert app.test_client().get(f"/packages/{PATH}").status_code in (200, 502)  # slot free
    other.unlock("slot-1", held[1])


@responses.activate
def test_missing_projects_are_remembered_in_memory_up_to_the_bound(make_app):
    app = make_app(negative_cache=2)
    for name in ("one", "two", "three"):
        responses.get(f"{MIRROR}/{name}/", status=404)
    client = app.test_client()
    for name in ("one", "two", "three", "three", "two", "one"):
        assert client.get(f"/simple/{name}/").status_code == 404
    asked = [call.request.url.rsplit("/", 2)[1] for call in responses.calls]
    assert asked == ["one", "two", "three", "one"]  # "one" was the oldest, pushed out
    assert list(app.extensions["pypicache"].cachedir.pages.iterdir()) == []
    assert list(app.extensions["pypicache"].cachedir.locks.iterdir()) == []


def _read(body) -> bytes:
    """A body Pages.open gave: bytes just rendered, or its file."""
    if isinstance(body, bytes):
        return body
    with body:
        return body.read()


@responses.activate
def test_a_refresh_switches_body_and_etag_at_once_and_keeps_the_previous_bodies(make_app):
    pages = make_app(index_ttl=0.01).extensions["pypicache"].pages
    responses.get(f"{MIRROR}/demo/", body=_page("1.0"), content_type=V1_JSON)
    first, body = pages.open("demo", Body())
    _read(body)
    time.sleep(0.02)
    responses.replace(responses.GET, f"{MIRROR}/demo/", body=_page("1.0", "2.0"), content_type=V1_JSON)
    second, body = pages.open("demo", Body())
    assert second.cache == "miss" and second.etag(Body()) != first.etag(Body())
    assert [f["filename"] for f in json.loads(_read(body))["files"]] == [
        "demo-1.0.tar.gz", "demo-2.0.tar.gz"]
    for page, files in ((first, 1), (second, 2)):  # each state's document is still there
        assert len(json.loads(page.path(Body()).read_bytes())["files"]) == files
    time.sleep(0.02)
    responses.replace(responses.GET, f"{MIRROR}/demo/", body=_page("3.0"), content_type=V1_JSON)
    _read(pages.open("demo", Body())[1])
    assert not first.path(Body()).exists()  # two versions kept, no more
    assert second.path(Body()).exists()


@responses.activate
def test_a_big_page_is_parsed_in_a_helper_process(make_app):
    app = make_app()
    parser = app.extensions["pypicache"].pages.refresher.parser
    parser.threshold = 0  # every page is big
    responses.get(f"{MIRROR}/demo/", body=_page("1.0", "2.0"), content_type=V1_JSON)
    files = app.test_client().get("/simple/demo/", headers={"Accept": V1_JSON}).json["files"]
    assert [f["filename"] for f in files] == ["demo-1.0.tar.gz", "demo-2.0.tar.gz"]
    assert parser._pool is not None and len(parser._pool._processes) == 1
    parser._pool.shutdown()


def test_a_lock_waiter_follows_the_holders_progress(tmp_path):
    cachedir = CacheDir(tmp_path)
    holder = cachedir.try_lock("page:demo")
    done = threading.Event()

    def slow_but_healthy():
        for _ in range(8):
            time.sleep(0.1)
            cachedir.touch_lock("page:demo")
        cachedir.unlock("page:demo", holder)
        done.set()

    threading.Thread(target=slow_but_healthy).start()
    with cachedir.lock("page:demo", timeout=0.3):  # longer than 0.3 s in all: it waits on
        assert done.is_set()
    stuck = cachedir.try_lock("page:demo")
    with pytest.raises(UpstreamTimeout):
        with cachedir.lock("page:demo", timeout=0.2):
            pass
    cachedir.unlock("page:demo", stuck)
