"""The size cap: least recently used files go, safely across workers and processes."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time

import pytest
import requests
import responses

from pypicache.catalog import Catalog
from pypicache.evict import Evictor
from pypicache.refresh import lock_name
from pypicache.cachedir import CacheDir

from .conftest import FILES, MIRROR
from .fixture_upstream import Upstream
from .servers import ROOT, Proxy

MIB = 1 << 20


# --- in one process ----------------------------------------------------------------------------
@pytest.fixture
def cache(tmp_path):
    cachedir, catalog = CacheDir(tmp_path), Catalog(tmp_path / "catalog.sqlite3")
    for i, name in enumerate(["old", "middle", "new"]):
        path = f"aa/{name}-1.0.tar.gz"
        cachedir.file(path).parent.mkdir(parents=True, exist_ok=True)
        cachedir.file(path).write_bytes(b"x" * 1000)
        catalog.add_cached(path, name, 1000, "0" * 64)
        catalog._connect().execute(  # last used in this order
            "UPDATE cached SET last_used = ? WHERE path = ?", (1000.0 + i, path))
    return cachedir, catalog


def _catalog_bytes(catalog) -> int:
    """The catalog's own file counts against the cap too."""
    return catalog.usage().catalog_bytes


def test_least_recently_used_go_first_until_the_cap_holds(cache):
    cachedir, catalog = cache
    own = _catalog_bytes(catalog)
    result = Evictor(cachedir, catalog).run(1500 + own)
    assert (result.files, result.bytes, result.remaining) == (2, 2000, 1000 + own)
    assert [row[0] for row in catalog.files()] == ["aa/new-1.0.tar.gz"]
    assert not cachedir.file("aa/old-1.0.tar.gz").exists()
    assert cachedir.file("aa/new-1.0.tar.gz").exists()
    assert [(r[0], r[3]) for r in catalog.removed()] == [
        ("aa/middle-1.0.tar.gz", "evicted"), ("aa/old-1.0.tar.gz", "evicted")]


def test_a_file_whose_lock_is_held_is_skipped(cache):
    cachedir, catalog = cache
    held = cachedir.try_lock("aa/old-1.0.tar.gz")  # as a download of it would hold it
    try:
        result = Evictor(cachedir, catalog).run(1000 + _catalog_bytes(catalog))
    finally:
        os.close(held)
    assert result.skipped == 1 and cachedir.file("aa/old-1.0.tar.gz").exists()
    assert [row[0] for row in catalog.files()] == ["aa/old-1.0.tar.gz"]


def test_under_the_cap_nothing_goes(cache):
    cachedir, catalog = cache
    assert Evictor(cachedir, catalog).run(3000 + _catalog_bytes(catalog)).files == 0
    assert len(catalog.files()) == 3


def test_pages_go_by_last_use_too_unless_being_refreshed(cache):
    cachedir, catalog = cache
    for name, size, last_used in (("stale", 500, 999.0), ("busy", 500, 999.5)):
        (cachedir.pages / name).mkdir(parents=True)
        (cachedir.pages / name / "state.json").write_bytes(b"x" * size)
        catalog.record_page(name, size)
        catalog.write_pending()
        catalog._connect().execute("UPDATE pages SET last_used = ? WHERE project = ?",
                                   (last_used, name))
    held = cachedir.try_lock(lock_name("busy"))  # a refresh of it is under way
    try:
        result = Evictor(cachedir, catalog).run(3000 + _catalog_bytes(catalog))
    finally:
        cachedir.unlock(lock_name("busy"), held)
    assert (result.pages, result.files, result.skipped) == (1, 1, 1)
    assert not (cachedir.pages / "stale").exists() and (cachedir.pages / "busy").exists()
    assert catalog.usage().pages == 1 and not cachedir.file("aa/old-1.0.tar.gz").exists()


def test_one_evictor_at_a_time(cache):
    cachedir, catalog = cache
    guard = cachedir.try_lock("evict")
    try:
        assert Evictor(cachedir, catalog).run(0).files == 0  # another worker is at it
    finally:
        os.close(guard)


# --- real workers, a real upstream --------------------------------------------------------------
def _url(proxy: Proxy, f) -> str:
    return f"{proxy.url}/packages/{f.path.split('/packages/', 1)[1]}"


def _sha(response) -> str:
    return hashlib.sha256(response.content).hexdigest()


def _wait_for_hits(proxy: Proxy, project: str, hits: int, timeout: float = 10) -> None:
    """The workers flush about once a second: wait until the dashboard's data has the hit."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = requests.get(f"{proxy.url}/stats/{project}.json", timeout=10)
        if reply.ok and sum(f["hits"] for f in reply.json()["files"]) >= hits:
            return
        time.sleep(0.1)
    raise AssertionError(f"{project}: hits not flushed")


def _prune(proxy: Proxy, size: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "flask", "--app", "pypicache:create_app", "pypicache", "prune",
               "--to", size]
    return subprocess.run(command, cwd=ROOT, env=proxy.env, capture_output=True, text=True,
                          timeout=60)


def _cached(proxy: Proxy) -> set[str]:
    return {p.name for p in (proxy.cache_dir / "files").rglob("*.tar.gz")}


@pytest.mark.e2e
def test_cap_evicts_least_recently_used_and_a_streamed_file_survives(tmp_path):
    up = Upstream(tmp_path / "up").start()
    stream = up.add_file("stream", "stream-1.0.tar.gz", size=24 * MIB)
    alpha = up.add_file("alpha", "alpha-1.0.tar.gz", size=MIB)
    bravo = up.add_file("bravo", "bravo-1.0.tar.gz", size=MIB)
    charlie = up.add_file("charlie", "charlie-1.0.tar.gz", size=2 * MIB)
    # Half a MiB for what counts too: the pages (a few KB) and the catalog (tens of KB).
    proxy = Proxy(tmp_path / "cache", up.env(), PYPI_CACHE_MAX_SIZE="27.5M").start()
    try:
        for f in (stream, alpha, bravo, charlie):
            assert requests.get(f"{proxy.url}/simple/{f.project}/", timeout=10).ok
        for f in (stream, alpha, bravo):  # 26 MiB: under the cap
            assert requests.get(_url(proxy, f), timeout=30).headers["X-Cache"] == "miss"
        for f in (stream, alpha):
            assert requests.get(_url(proxy, f), timeout=30).headers["X-Cache"] == "hit"
            _wait_for_hits(proxy, f.project, 1)  # bravo is now the least recently used

        # 28 MiB after charlie: the download thread's worker evicts bravo (after the pages,
        # used before any file), and only bravo.
        assert requests.get(_url(proxy, charlie), timeout=30).headers["X-Cache"] == "miss"
        deadline = time.monotonic() + 10
        while "bravo-1.0.tar.gz" in _cached(proxy) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _cached(proxy) == {"stream-1.0.tar.gz", "alpha-1.0.tar.gz", "charlie-1.0.tar.gz"}

        # A client reading the big file slowly while a prune (another process) removes it.
        reader = requests.get(_url(proxy, stream), stream=True, timeout=30)
        assert reader.headers["X-Cache"] == "hit"
        chunks = reader.iter_content(64 * 1024)
        digest = hashlib.sha256(next(chunks))
        pruned = _prune(proxy, "0")
        assert pruned.returncode == 0, pruned.stderr
        assert "removed 3 files" in pruned.stdout
        assert _cached(proxy) == set()
        for chunk in chunks:
            digest.update(chunk)
        assert digest.hexdigest() == stream.sha256  # the open file outlived its unlink

        # The index keeps working, and evicted files come back from the upstream.
        assert requests.get(f"{proxy.url}/simple/bravo/", timeout=10).ok
        for f in (bravo, stream, charlie):
            again = requests.get(_url(proxy, f), timeout=30)
            assert again.headers["X-Cache"] == "miss" and _sha(again) == f.sha256
        assert up.downloads(bravo.filename) == 2
        removed = requests.get(f"{proxy.url}/stats.json", timeout=10).json()["removed"]
        assert {(r["filename"], r["reason"]) for r in removed} >= {
            ("bravo-1.0.tar.gz", "evicted"), ("alpha-1.0.tar.gz", "pruned"),
            ("stream-1.0.tar.gz", "pruned")}
    finally:
        proxy.stop()
        up.stop()


@pytest.mark.e2e
def test_a_download_in_progress_is_never_pruned(tmp_path):
    # The download must outlast the prune command's start-up (a new Python process: seconds on
    # a loaded machine), so it takes about 12 s.
    up = Upstream(tmp_path / "up", throttle=MIB // 4).start()
    slow = up.add_file("slow", "slow-1.0.tar.gz", size=3 * MIB)
    done = up.add_file("done", "done-1.0.tar.gz", size=MIB)
    proxy = Proxy(tmp_path / "cache", up.env()).start()
    try:
        for f in (slow, done):
            assert requests.get(f"{proxy.url}/simple/{f.project}/", timeout=10).ok
        assert requests.get(_url(proxy, done), timeout=30).ok
        result = {}
        client = threading.Thread(
            target=lambda: result.update(r=requests.get(_url(proxy, slow), timeout=60)))
        client.start()
        deadline = time.monotonic() + 10
        while not list((proxy.cache_dir / "tmp").glob("*.part")) and time.monotonic() < deadline:
            time.sleep(0.02)
        pruned = _prune(proxy, "0")
        assert pruned.returncode == 0, pruned.stderr
        assert "removed 1 files" in pruned.stdout
        client.join(60)
        assert _sha(result["r"]) == slow.sha256
        assert _cached(proxy) == {"slow-1.0.tar.gz"}  # published after the prune, untouched
    finally:
        proxy.stop()
        up.stop()


@responses.activate
def test_a_hit_evicted_once_opened_still_gets_every_byte(app, client, monkeypatch):
    """Eviction right after a hit opened its file (pypicache/evict.py): the open descriptor keeps
    the bytes, the client gets them all, and the next request downloads the file afresh."""
    body = b"wheel bytes" * 100
    listed = {"meta": {"api-version": "1.0"}, "name": "demo", "files": [
        {"filename": "demo-1.0.tar.gz", "url": f"{FILES}/aa/demo-1.0.tar.gz", "hashes": {}}]}
    responses.get(f"{MIRROR}/demo/", json=listed, content_type="application/vnd.pypi.simple.v1+json")
    responses.get(f"{FILES}/aa/demo-1.0.tar.gz", body=body)
    assert client.get("/packages/aa/demo-1.0.tar.gz").data == body  # cached
    fetcher = app.extensions["pypicache"].fetcher
    real_open = fetcher.open

    def open_then_evicted(path, *args):
        result = real_open(path, *args)
        app.extensions["pypicache"].cachedir.file(path).unlink()
        app.extensions["pypicache"].catalog.forget(path, "evicted")
        return result

    monkeypatch.setattr(fetcher, "open", open_then_evicted)
    again = client.get("/packages/aa/demo-1.0.tar.gz")
    assert again.status_code == 200 and again.data == body and again.headers["X-Cache"] == "hit"
    monkeypatch.setattr(fetcher, "open", real_open)
    third = client.get("/packages/aa/demo-1.0.tar.gz")
    assert third.data == body and third.headers["X-Cache"] == "miss" and len(responses.calls) == 3
