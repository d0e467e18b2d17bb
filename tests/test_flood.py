"""A flood of made-up names and unlisted files through real gunicorn leaves nothing behind:
10,000 random valid project names and 10,000 random file paths no page lists.

The bound (docs/RELIABILITY.md): no file is added to the cache directory by such requests
(404s are remembered in each worker's memory, at most PYPI_NEGATIVE_CACHE names; a lock file
lives only while its lock is held), no unlisted file is asked of the upstream, and the
workers' memory and threads stay flat.
"""
from __future__ import annotations

import random
import string
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from .fixture_upstream import Upstream
from .servers import Proxy, add_chain

pytestmark = pytest.mark.e2e
FLOOD = 10_000
CLIENTS = 8
THREADS = 8  # gunicorn's pool per worker
OWN_THREADS = 3  # besides it: the main thread, the stats flush, the nginx front's log reader
RSS_SLACK_KIB = 24 * 1024  # 10,000 remembered names are about 2 MiB; the rest is allocator noise


def _name(rng: random.Random) -> str:
    letters = string.ascii_lowercase + string.digits
    return rng.choice(string.ascii_lowercase) + "".join(rng.choices(letters + "-_.", k=14)) + rng.choice(letters)


def _urls(rng: random.Random, count: int) -> list[str]:
    urls = []
    for _ in range(count):
        urls.append(f"/simple/{_name(rng)}/")
        project = rng.choice([_name(rng), "alpha"])  # made-up projects, and unlisted files of a real one
        urls.append(f"/packages/{rng.randrange(256):02x}/{rng.getrandbits(64):016x}/{project}-9.{rng.randrange(99)}.tar.gz")
    return urls


def _run(proxy: Proxy, urls: list[str]) -> set[int]:
    def batch(part: list[str]) -> set[int]:
        with requests.Session() as session:
            return {session.get(proxy.url + url, timeout=60).status_code for url in part}

    with ThreadPoolExecutor(CLIENTS) as pool:
        return set().union(*pool.map(batch, [urls[i::CLIENTS] for i in range(CLIENTS)]))


def _files(cache_dir: Path) -> int:
    return sum(1 for p in cache_dir.rglob("*") if p.is_file())


def _status(pid: int) -> dict[str, int]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in lines)
    return {"rss_kib": int(fields["VmRSS"].split()[0]), "threads": int(fields["Threads"])}


def test_a_flood_of_names_and_unlisted_files_leaves_nothing_behind(tmp_path):
    up = Upstream(tmp_path / "up").start()
    add_chain(up)
    proxy = Proxy(tmp_path / "cache", up.env(), workers=2, PYPI_THREADS=str(THREADS)).start()
    rng = random.Random(11)
    try:
        assert _run(proxy, _urls(rng, 500)) == {404}  # warm: every worker thread has served
        pids = proxy.worker_pids()
        before = {pid: _status(pid) for pid in pids}
        files_before = _files(proxy.cache_dir)
        assert _run(proxy, _urls(rng, FLOOD)) == {404}
        assert proxy.worker_pids() == pids
        after = {pid: _status(pid) for pid in pids}
        assert _files(proxy.cache_dir) == files_before
        assert not any(key.startswith("GET /packages/") for key in up.stats()["requests"])
        warm_rss = max(status["rss_kib"] for status in before.values())
        for pid in pids:  # a worker may have sat idle through the warm-up: compare with the warm one
            assert after[pid]["threads"] <= THREADS + OWN_THREADS, (before, after)
            assert after[pid]["rss_kib"] - warm_rss < RSS_SLACK_KIB, (before, after)
        assert requests.get(proxy.url + "/simple/alpha/", timeout=10).status_code == 200
    finally:
        proxy.stop()
        up.stop()
