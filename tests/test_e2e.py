"""End to end: real gunicorn workers, a real upstream on 127.0.0.1, real pip (issue 2)."""
from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from pathlib import Path

import pytest
import requests

from .fixture_upstream import Upstream
from .servers import Proxy, add_chain, installed, pip_install

pytestmark = pytest.mark.e2e
MIB = 1 << 20


def cached_files(proxy: Proxy) -> list[Path]:
    return [p for p in (proxy.cache_dir / "files").rglob("*") if p.is_file()]


def temp_files(proxy: Proxy) -> list[Path]:
    return list((proxy.cache_dir / "tmp").glob("*.part"))


@pytest.mark.parametrize("layout", ["absolute", "relative"])
def test_pip_installs_through_the_proxy_and_again_with_the_upstream_down(tmp_path, layout):
    up = Upstream(tmp_path / "up", layout=layout, formats=("html",)).start()
    add_chain(up)
    proxy = Proxy(tmp_path / "cache", up.env(), PYPI_INDEX_TTL="1").start()
    try:
        first = pip_install(f"{proxy.url}/simple", tmp_path / "t1", "alpha")
        assert first.returncode == 0, first.stderr
        assert installed(tmp_path / "t1") == {"alpha": "1.0", "beta": "1.0", "gamma": "1.0"}
        assert sum(up.downloads(f) for f in ("alpha-1.0-py3-none-any.whl", "gamma-1.0-py3-none-any.whl")) == 2
        # three wheels and their PEP 658 .metadata files, which pip reads first
        assert sorted(p.name for p in cached_files(proxy)) == sorted(
            f"{n}-1.0-py3-none-any.whl{m}" for n in ("alpha", "beta", "gamma") for m in ("", ".metadata")
        )

        up.stop()
        time.sleep(1.2)  # past the TTL: pages must now be served stale
        second = pip_install(f"{proxy.url}/simple", tmp_path / "t2", "alpha")
        assert second.returncode == 0, second.stderr
        assert set(installed(tmp_path / "t2")) == {"alpha", "beta", "gamma"}
        page = requests.get(f"{proxy.url}/simple/alpha/", timeout=10)
        assert page.status_code == 200 and page.headers["X-Cache"] == "stale"
    finally:
        proxy.stop()
        up.stop()


@contextlib.contextmanager
def one_file(tmp_path: Path, size: int, throttle: int | None = None):
    """A fixture upstream holding one generated file, listed once through the proxy in front
    of it (which records its sha256): yields (upstream, proxy, file, its URL on the proxy)."""
    up = Upstream(tmp_path / "up", throttle=throttle).start()
    file = up.add_file("big", "big-1.0.tar.gz", size=size)
    proxy = Proxy(tmp_path / "cache", up.env()).start()
    try:
        assert requests.get(f"{proxy.url}/simple/big/", timeout=10).ok
        yield up, proxy, file, f"{proxy.url}/packages/{file.path.split('/packages/', 1)[1]}"
    finally:
        proxy.stop()
        up.stop()


def sixteen_clients(url: str) -> list[tuple]:
    """16 clients at once on `url`: (X-Cache, start, first byte, end, sha256) of each."""
    results, barrier = [None] * 16, threading.Barrier(16)

    def client(i: int) -> None:
        barrier.wait()
        start = time.monotonic()
        with requests.get(url, stream=True, timeout=30) as response:
            digest, first = hashlib.sha256(), None
            for chunk in response.iter_content(256 * 1024):
                first = first or time.monotonic()
                digest.update(chunk)
        results[i] = (response.headers["X-Cache"], start, first, time.monotonic(), digest.hexdigest())

    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(results), results
    return results


def test_sixteen_clients_of_one_cold_file_cause_one_download(tmp_path):
    with one_file(tmp_path, 64 * MIB, throttle=32 * MIB) as (up, proxy, big, url):
        results = sixteen_clients(url)
        assert up.downloads(big.filename) == 1
        assert sorted(r[0] for r in results) == ["follower"] * 15 + ["miss"]
        assert {r[4] for r in results} == {big.sha256}
        download_end = min(r[3] for r in results)
        first_bytes = [r[2] - r[1] for r in results]
        assert all(r[2] < download_end for r in results), "a client waited for the end"
        print(f"\nslowest first byte {max(first_bytes):.3f}s, download {download_end - results[0][1]:.2f}s")


def _fetch(url: str) -> tuple[bool, str]:
    """(completed, sha256): completed is False when the response was cut short."""
    digest = hashlib.sha256()
    try:
        with requests.get(url, stream=True, timeout=30) as response:
            if response.status_code != 200:
                return False, f"status {response.status_code}"
            for chunk in response.iter_content(64 * 1024):
                digest.update(chunk)
    except requests.RequestException:
        return False, digest.hexdigest()
    return True, digest.hexdigest()


@pytest.mark.parametrize("fault", ["truncate", "chunked-truncate", "corrupt", "status:503"])
def test_upstream_faults_publish_nothing_and_the_next_request_succeeds(tmp_path, fault):
    with one_file(tmp_path, 4 * MIB) as (up, proxy, wheel, url):
        up.fault(wheel.filename, fault)
        completed, digest = _fetch(url)
        assert not completed, "a failed download looked complete"
        assert digest != wheel.sha256
        assert cached_files(proxy) == []
        deadline = time.monotonic() + 5
        while temp_files(proxy) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert temp_files(proxy) == []
        up.clear_faults()
        assert _fetch(url) == (True, wheel.sha256)
        assert len(cached_files(proxy)) == 1


def test_ranges_on_a_file_still_downloading(tmp_path):
    with one_file(tmp_path, 16 * MIB, throttle=8 * MIB) as (up, proxy, big, url):
        expected = big.disk_path.read_bytes()
        full = threading.Thread(target=_fetch, args=(url,))
        full.start()
        time.sleep(0.3)
        head = requests.get(url, headers={"Range": "bytes=100-199"}, timeout=30)
        assert head.status_code == 206 and head.headers["X-Cache"] == "follower"
        assert head.content == expected[100:200]
        assert head.headers["Content-Range"] == f"bytes 100-199/{16 * MIB}"
        assert requests.get(url, headers={"Range": f"bytes={16 * MIB}-"}, timeout=30).status_code == 416
        tail = requests.get(url, headers={"Range": "bytes=-100"}, timeout=30)  # arrives with the end
        assert tail.status_code == 206 and tail.content == expected[-100:]
        full.join(30)
        assert up.downloads(big.filename) == 1
