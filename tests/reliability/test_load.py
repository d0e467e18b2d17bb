"""Load: 200 concurrent clients on 4 gunicorn workers for a bounded time, mixing cache hits,
misses (first downloads, and followers of them), index pages and ranges. Zero errors, zero
5xx, every body right, no file-descriptor or temp-file leak afterwards.

CI runs it for PYPICACHE_LOAD_SECONDS (default 15 s); the full run of docs/RELIABILITY.md:
    PYPICACHE_LOAD_SECONDS=120 .venv/bin/python -m pytest tests/reliability/test_load.py -m load -s
"""
from __future__ import annotations

import hashlib
import os
import random
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import requests

from pypicache.config import TABLE

from ..fixture_upstream import Upstream
from ..servers import Proxy
from .conftest import open_files, temp_files, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.load]
CLIENTS = 200
WORKERS = 4
THREADS = 32  # PYPI_THREADS, set below
SECONDS = float(os.environ.get("PYPICACHE_LOAD_SECONDS", "15"))
PROJECTS, FILES_PER_PROJECT = 150, 8  # 1,200 files: misses never run out in 120 s


def worker_fds(proxy: Proxy) -> dict[int, list[str]]:
    return {pid: open_files(pid) for pid in proxy.worker_pids()}


class Load:
    def __init__(self, proxy: Proxy, warm: list, cold: list, projects: list[str]):
        self.proxy, self.warm, self.cold, self.projects = proxy, warm, cold, projects
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.kinds: Counter = Counter()
        self.statuses: Counter = Counter()
        self.errors: list[str] = []

    def url(self, file) -> str:
        return f"{self.proxy.url}/packages/{file.path.split('/packages/', 1)[1]}"

    def one(self, session: requests.Session, rng: random.Random) -> None:
        roll = rng.random()
        headers, expect = {}, None
        if roll < 0.40:
            kind, file = "hit", rng.choice(self.warm)
            url, expect = self.url(file), file
        elif roll < 0.55:
            kind, file = "range", rng.choice(self.warm)
            start = rng.randrange(file.size)
            end = min(file.size - 1, start + rng.randrange(1, 4096))
            url, headers = self.url(file), {"Range": f"bytes={start}-{end}"}
            expect = (file, start, end)
        elif roll < 0.75:
            kind, file = "miss", rng.choice(self.cold)  # a first download, a follower or a hit
            url, expect = self.url(file), file
        elif roll < 0.95:
            kind = "page"
            url = f"{self.proxy.url}/simple/{rng.choice(self.projects)}/"
            if rng.random() < 0.5:
                headers = {"Accept": "application/vnd.pypi.simple.v1+json"}
        else:
            kind, url = "root", f"{self.proxy.url}/simple/"
        started = time.monotonic()
        try:
            response = session.get(url, headers=headers, timeout=30)
            body = response.content
            elapsed = time.monotonic() - started
            problem = None
            if response.status_code >= 400:
                problem = f"{kind} {url} -> {response.status_code}"
            elif kind in ("hit", "miss") and hashlib.sha256(body).hexdigest() != expect.sha256:
                problem = f"{kind} {url}: wrong body ({len(body)} bytes)"
            elif kind == "range":
                file, start, end = expect
                if response.status_code != 206 or body != file.disk_path.read_bytes()[start:end + 1]:
                    problem = f"range {start}-{end} of {url}: {response.status_code}, wrong bytes"
        except requests.RequestException as error:
            elapsed, problem = time.monotonic() - started, f"{kind} {url}: {type(error).__name__}"
            response = None
        with self.lock:
            self.latencies.append(elapsed)
            self.kinds[kind] += 1
            self.statuses[response.status_code if response is not None else "error"] += 1
            if problem:
                self.errors.append(problem)

    def run(self, seconds: float, clients: int, seed: int) -> None:
        deadline = time.monotonic() + seconds
        barrier = threading.Barrier(clients)

        def client(index: int) -> None:
            rng = random.Random(seed * 1000 + index)
            with requests.Session() as session:
                barrier.wait()
                while time.monotonic() < deadline:
                    self.one(session, rng)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(seconds + 60)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def test_two_hundred_clients_on_four_workers(tmp_path):
    up = Upstream(tmp_path / "up").start()
    rng = random.Random(4)
    files, projects = [], []
    for p in range(PROJECTS):
        name = f"load-{p:03d}"
        projects.append(name)
        for v in range(FILES_PER_PROJECT):
            files.append(up.add_file(name, f"{name.replace('-', '_')}-{v}.0.tar.gz",
                                     size=rng.randrange(4 * 1024, 96 * 1024)))
    warm, cold = files[:40], files[40:]
    proxy = Proxy(tmp_path / "cache", up.env(), workers=WORKERS, PYPI_THREADS=str(THREADS)).start()
    try:
        for file in warm:  # the hits: on disk before the clock starts
            assert requests.get(Load(proxy, [], [], []).url(file), timeout=10).ok
        # A short warm-up fills every worker's thread pool (and their per-thread upstream
        # sessions and catalog connections), so the descriptor count before is the steady one.
        Load(proxy, warm, cold[:100], projects[:20]).run(4, CLIENTS, seed=1)
        time.sleep(2)
        before = worker_fds(proxy)
        load = Load(proxy, warm, cold[100:], projects)
        started = time.monotonic()
        load.run(SECONDS, CLIENTS, seed=2)
        duration = time.monotonic() - started
        assert wait_for(lambda: not temp_files(proxy.cache_dir), timeout=15), temp_files(proxy.cache_dir)
        time.sleep(2)  # keep-alive connections of the clients close, downloads end
        after = worker_fds(proxy)
        served = len(load.latencies)
        p50, p99 = percentile(load.latencies, 0.50), percentile(load.latencies, 0.99)
        print(f"\nload: {CLIENTS} clients, {WORKERS} workers, {duration:.1f} s: {served} requests "
              f"({served / duration:.0f}/s), p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
              f"max {max(load.latencies) * 1000:.0f} ms, errors {len(load.errors)}; "
              f"kinds {dict(load.kinds)}; statuses {dict(load.statuses)}; "
              f"upstream file downloads {sum(up.stats()['downloads'].values())}; "
              f"worker fds before {sum(map(len, before.values()))} after {sum(map(len, after.values()))}")
        assert load.errors == [], load.errors[:20]
        assert not [s for s in load.statuses if s == "error" or s >= 500]
        assert served > 0 and min(load.kinds[k] for k in ("hit", "range", "miss", "page", "root")) > 0
        assert set(after) == set(before), "a worker died under load"
        for pid, links in after.items():
            leaked = [l for l in links if l.endswith((".part", ".lock")) or "/files/" in l]
            assert leaked == [], (pid, leaked)
            # Per-thread upstream sessions and catalog connections (of pool threads and of
            # download threads while they run) come and go: steady, not growing with the
            # thousands of requests served (a leak of one per request or download would).
            # So the bound is per thread (32 per worker), whatever the load served.
            assert len(links) <= len(before[pid]) + 3 * THREADS, (pid, Counter(links).most_common(5))
            catalog = [link for link in links if link.endswith("catalog.sqlite3")]
            assert len(catalog) <= 2 * THREADS + 8, (pid, len(catalog))  # not one per download
        # Every miss was one upstream download at most per file.
        downloads = up.stats()["downloads"]
        assert max(downloads.values()) == 1, [f for f, n in downloads.items() if n > 1]
    finally:
        proxy.stop()
        up.stop()


def _cold_burst(proxy: Proxy, files: list, clients: int) -> tuple[Counter, list[float], list[str]]:
    """`clients` requests at once (a barrier), spread evenly over `files`, none cached yet."""
    barrier = threading.Barrier(clients)
    statuses: Counter = Counter()
    latencies: list[float] = []
    wrong: list[str] = []
    lock = threading.Lock()

    def client(index: int) -> None:
        file = files[index % len(files)]
        url = f"{proxy.url}/packages/{file.path.split('/packages/', 1)[1]}"
        barrier.wait()
        started = time.monotonic()
        try:
            response = requests.get(url, timeout=60)
            status, ok = response.status_code, hashlib.sha256(response.content).hexdigest() == file.sha256
        except requests.RequestException as error:
            status, ok = type(error).__name__, False
        with lock:
            statuses[status] += 1
            latencies.append(time.monotonic() - started)
            if status == 200 and not ok:
                wrong.append(url)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return statuses, latencies, wrong


@pytest.mark.parametrize("total_slots", [64, 8], ids=["default-slots", "8-slots"])
def test_fifty_cold_files_at_once_among_two_hundred_clients(tmp_path, total_slots):
    """Each of 50 uncached files asked by 4 of 200 clients at the same instant: one download
    per file, every client its whole file; with only 8 download slots for the 50 files the
    rest wait their turn (PYPI_DOWNLOAD_WAIT) rather than fail."""
    up = Upstream(tmp_path / "up", throttle=2 << 20).start()  # 2 MiB/s a file: downloads overlap
    rng = random.Random(50)
    files = [up.add_file(f"cold-{i:02d}", f"cold_{i:02d}-1.0.tar.gz", size=rng.randrange(64 << 10, 1 << 20))
             for i in range(50)]
    proxy = Proxy(tmp_path / "cache", up.env(), workers=WORKERS, PYPI_THREADS=str(THREADS),
                  PYPI_MAX_DOWNLOADS_TOTAL=str(total_slots)).start()
    try:
        for i in range(50):  # the pages are warm: the burst is about the files
            assert requests.get(f"{proxy.url}/simple/cold-{i:02d}/", timeout=10).ok
        started = time.monotonic()
        statuses, latencies, wrong = _cold_burst(proxy, files, CLIENTS)
        duration = time.monotonic() - started
        threads = {pid: int(Path(f"/proc/{pid}/status").read_text().split("Threads:")[1].split()[0])
                   for pid in proxy.worker_pids()}
        print(f"\ncold burst, {total_slots} slots: {CLIENTS} clients, 50 files, {duration:.1f} s; "
              f"statuses {dict(statuses)}; p50 {percentile(latencies, 0.5) * 1000:.0f} ms, "
              f"p99 {percentile(latencies, 0.99) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms; "
              f"upstream downloads {sum(up.stats()['downloads'].values())}; worker threads {threads}")
        assert statuses == Counter({200: CLIENTS}) and wrong == []
        assert sorted(up.stats()["downloads"].values()) == [1] * 50
        # The pool, the pool of downloads' copies (at most a thread per download slot of the
        # worker, kept for the next), and at most one each of the worker's own: main,
        # statistics, the page bodies made in the background, the provenance fetched along
        # with downloads.
        slots = int(TABLE["max_downloads"][2])  # PYPI_MAX_DOWNLOADS, the default
        assert all(count <= THREADS + slots + 6 for count in threads.values()), threads
    finally:
        proxy.stop()
        up.stop()
