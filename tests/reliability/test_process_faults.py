"""Process faults through real gunicorn: a downloading worker SIGKILLed at several points of
its transfer, a graceful restart (SIGHUP) mid-download, a client that goes away, and the
leftovers of a crash. Nothing wrong is ever served as complete or published, and the next
request always gets the file."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time

import pytest
import requests

from pypicache.cachedir import key
from ..fixture_upstream import Upstream
from ..servers import Proxy
from .conftest import (
    MIB, assert_cache_consistent, downloading_worker, fetch, file_url, open_files, published,
    temp_files, wait_for,
)

pytestmark = pytest.mark.e2e
SIZE = 16 * MIB
RATE = 8 * MIB  # the fixture upstream's pace: a 16 MiB download takes 2 s


@pytest.fixture(scope="module")
def slow_up(tmp_path_factory):
    server = Upstream(tmp_path_factory.mktemp("upstream"), throttle=RATE).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, slow_up):
    server = Proxy(tmp_path_factory.mktemp("proxy") / "cache", slow_up.env(), workers=3).start()
    yield server
    server.stop()


class Clients:
    """Clients that fetch a URL in threads; results in start order."""

    def __init__(self):
        self.threads, self.results = [], []

    def start(self, url: str, count: int = 1, **kwargs) -> None:
        for _ in range(count):
            index = len(self.results)
            self.results.append(None)
            thread = threading.Thread(
                target=lambda i=index: self.results.__setitem__(i, fetch(url, **kwargs))
            )
            thread.start()
            self.threads.append(thread)

    def join(self) -> list:
        for thread in self.threads:
            thread.join(60)
        assert all(self.results), self.results
        return self.results


def part_of(pid: int) -> str | None:
    return next((link for link in open_files(pid, writable=True) if link.endswith(".part")), None)


def part_size(pid: int) -> int:
    try:
        return os.stat(part_of(pid) or "").st_size
    except OSError:
        return -1


def lock_holder(proxy: Proxy, path: str) -> int | None:
    """The worker keeping `path`'s lock file open (followers only open it for an instant)."""
    lock = str(proxy.cache_dir / "locks" / f"{key(path)}.lock")
    holders = [pid for pid in proxy.worker_pids() if lock in open_files(pid)]
    return holders[0] if len(holders) == 1 else None


def relpath(file) -> str:
    return file.path.split("/packages/", 1)[1]


@pytest.mark.parametrize("point", [0.1, 0.5, 0.9])
def test_sigkill_of_the_downloading_worker_mid_transfer(proxy, slow_up, point):
    """Followers in every worker see a cut response, never a short success; nothing is kept;
    the dead worker's temp file goes; the next request downloads afresh."""
    name = f"kill{int(point * 100)}"
    big = slow_up.add_file(name, f"{name}-1.0.tar.gz", size=SIZE)
    requests.get(f"{proxy.url}/simple/{name}/", timeout=10)
    clients = Clients()
    clients.start(file_url(proxy, big), count=5)
    victim = wait_for(lambda: downloading_worker(proxy), timeout=10)
    assert victim is not None
    assert wait_for(lambda: part_size(victim) >= point * SIZE, timeout=10, step=0.005)
    os.kill(victim, signal.SIGKILL)
    outcomes = clients.join()
    assert not any(o.complete for o in outcomes), outcomes  # all followed the killed download
    assert not published(proxy.cache_dir, big)
    # Nothing corrupt was left: the arbiter sweeps the dead temp file as the worker exits.
    assert wait_for(lambda: not temp_files(proxy.cache_dir), timeout=10), temp_files(proxy.cache_dir)
    again = fetch(file_url(proxy, big))
    assert (again.status, again.complete, again.sha256) == (200, True, big.sha256)
    assert slow_up.downloads(big.filename) == 2
    assert_cache_consistent(proxy.cache_dir, slow_up)


def test_sigkill_before_the_upstream_answers_hands_the_download_to_a_follower(proxy, slow_up):
    """Killed while waiting for the upstream's headers: the kernel drops the lock, a waiting
    client in another worker leads a new download and every surviving client gets the file."""
    big = slow_up.add_file("killearly", "killearly-1.0.tar.gz", size=4 * MIB)
    requests.get(f"{proxy.url}/simple/killearly/", timeout=10)
    slow_up.fault(big.filename, "slow:1.5")
    clients = Clients()
    clients.start(file_url(proxy, big))
    victim = wait_for(lambda: lock_holder(proxy, relpath(big)), timeout=5)
    assert victim is not None
    clients.start(file_url(proxy, big), count=5)
    time.sleep(0.3)
    os.kill(victim, signal.SIGKILL)
    outcomes = clients.join()
    assert not outcomes[0].complete  # the leader's own client, on the killed worker
    for outcome in outcomes:
        assert outcome.complete is (outcome.sha256 == big.sha256), outcome
    assert any(o.complete for o in outcomes[1:])  # those on other workers got the file
    assert published(proxy.cache_dir, big)
    assert_cache_consistent(proxy.cache_dir, slow_up)


def test_a_client_that_disconnects_stops_nothing_followers_get_the_whole_file(proxy, slow_up):
    big = slow_up.add_file("quitter", "quitter-1.0.tar.gz", size=SIZE)
    requests.get(f"{proxy.url}/simple/quitter/", timeout=10)
    clients = Clients()
    clients.start(file_url(proxy, big), stop_after=1 * MIB)  # the leader: X-Cache miss
    assert wait_for(lambda: downloading_worker(proxy), timeout=10)
    clients.start(file_url(proxy, big), count=4)
    leader, *followers = clients.join()
    assert leader.headers["X-Cache"] == "miss" and not leader.complete
    assert [(o.complete, o.sha256) for o in followers] == [(True, big.sha256)] * 4
    assert slow_up.downloads(big.filename) == 1
    assert_cache_consistent(proxy.cache_dir, slow_up)


@pytest.mark.parametrize("leader_stays", [True, False], ids=["clients-connected", "leader-gone"])
def test_graceful_restart_mid_download_finishes_the_download(tmp_path, leader_stays):
    """SIGHUP to the gunicorn master: new workers start, the old ones finish what is in flight
    (graceful_timeout), including a download whose own client has already gone."""
    up = Upstream(tmp_path / "up", throttle=RATE).start()
    big = up.add_file("hup", "hup-1.0.tar.gz", size=SIZE)
    proxy = Proxy(tmp_path / "cache", up.env(), workers=2).start()
    try:
        requests.get(f"{proxy.url}/simple/hup/", timeout=10)
        old = set(proxy.worker_pids())
        clients = Clients()
        clients.start(file_url(proxy, big), stop_after=None if leader_stays else 256 * 1024)
        victim = wait_for(lambda: downloading_worker(proxy), timeout=10)
        if leader_stays:
            clients.start(file_url(proxy, big), count=3)
        else:
            clients.join()  # gone at 256 KiB: the download runs on with nobody attached
        # A quarter of the file, then the HUP: at a load of 37 on 2 cores, 4 MiB took over 10 s.
        assert wait_for(lambda: part_size(victim) >= SIZE // 4, timeout=60, step=0.01)
        os.kill(proxy.process.pid, signal.SIGHUP)
        outcomes = clients.join()
        if leader_stays:
            assert [(o.complete, o.sha256) for o in outcomes] == [(True, big.sha256)] * 4
        assert wait_for(lambda: published(proxy.cache_dir, big), timeout=15)
        assert wait_for(lambda: not old & set(proxy.worker_pids()), timeout=15)  # restarted
        assert up.downloads(big.filename) == 1
        after = fetch(file_url(proxy, big))
        assert (after.headers.get("X-Cache"), after.sha256) == ("hit", big.sha256)
        assert_cache_consistent(proxy.cache_dir, up)
    finally:
        proxy.stop()
        up.stop()


def test_a_stale_temp_file_is_swept_but_a_live_download_is_not(proxy, slow_up):
    live = slow_up.add_file("live", "live-1.0.tar.gz", size=SIZE)
    crashed = slow_up.add_file("crashed", "crashed-1.0.tar.gz", size=64 * 1024)
    requests.get(f"{proxy.url}/simple/live/", timeout=10)
    tmp = proxy.cache_dir / "tmp"
    # A crash's leftovers: a temp file nobody holds, and one announced for `crashed`, whose
    # announcement still points at it (as a SIGKILL between the two unlinks would leave).
    orphan = tmp / "0123abcd.orphan.part"
    orphan.write_bytes(b"half a file")
    dead = tmp / f"{key(relpath(crashed))}.dead.part"
    dead.write_bytes(b"x" * 1000)
    (tmp / f"{key(relpath(crashed))}.json").write_text(json.dumps({"part": dead.name, "size": 65536}))
    clients = Clients()
    clients.start(file_url(proxy, live))
    downloader = wait_for(lambda: downloading_worker(proxy), timeout=10)
    live_part = part_of(downloader)
    # A worker dies: the arbiter sweeps tmp/ as it reaps it (gunicorn.conf.py child_exit).
    bystander = next(pid for pid in proxy.worker_pids() if pid != downloader)
    os.kill(bystander, signal.SIGKILL)
    assert wait_for(lambda: not orphan.exists(), timeout=15)
    assert os.path.exists(live_part), "a live download's temp file was swept"
    # The announced dead download is not followed: the next client leads a fresh one.
    fresh = fetch(file_url(proxy, crashed))
    assert (fresh.status, fresh.complete, fresh.sha256) == (200, True, crashed.sha256)
    assert not dead.exists()
    (outcome,) = clients.join()
    assert (outcome.complete, outcome.sha256) == (True, live.sha256)
    assert hashlib.sha256((proxy.cache_dir / "files" / relpath(live)).read_bytes()).hexdigest() == live.sha256
    assert_cache_consistent(proxy.cache_dir, slow_up)
