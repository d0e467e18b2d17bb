"""Storage faults on a real filesystem: the cache directory is a small tmpfs (mounted for the
test, as root, like CI), so "disk full" and "read-only" are the kernel's own ENOSPC and EROFS.
A clear 507 (or a cut body once bytes are out), a consistent cache, and recovery when the
space or the write access returns; a file corrupted on disk is caught by `verify`."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
import requests

from ..fixture_upstream import Upstream
from ..servers import ROOT, Proxy
from .conftest import (
    FAST_TIMEOUTS, MIB, assert_cache_consistent, fetch, file_url, published, temp_files, wait_for,
)

# A real tmpfs needs root. CI runs as root and must run these (a fixture fails there if it
# cannot); a developer's non-root run reports them as skipped, with this reason.
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0 and not os.environ.get("CI"),
                       reason="mounting a tmpfs needs root (CI runs as root)"),
]


@pytest.fixture
def tmpfs(tmp_path):
    """A mount point of an 8 MiB tmpfs, unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.fail("the storage-fault tests mount a tmpfs: run them as root")
    mount_point = tmp_path / "cache"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount_point)], check=True)
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.fixture
def setup(tmp_path, tmpfs):
    up = Upstream(tmp_path / "up").start()
    proxy = Proxy(tmpfs, up.env(), workers=2, PYPI_INDEX_TTL="1", **FAST_TIMEOUTS).start()
    yield up, proxy
    proxy.stop()
    up.stop()


def remount(mount_point, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(mount_point)], check=True)


def fill(mount_point) -> os.PathLike:
    """Fill the tmpfs to the last byte with a ballast file."""
    ballast = mount_point / "ballast"
    with open(ballast, "wb", buffering=0) as out:  # unbuffered: no flush at close to fail
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError:
            pass
    return ballast


def test_disk_full_during_a_download_cuts_it_keeps_nothing_and_frees_the_space(setup):
    up, proxy = setup
    big = up.add_file("huge", "huge-1.0.tar.gz", size=12 * MIB)  # more than the disk
    small = up.add_file("small", "small-1.0.tar.gz", size=1 * MIB)
    assert requests.get(f"{proxy.url}/simple/huge/", timeout=10).ok
    outcomes = []
    clients = [threading.Thread(target=lambda: outcomes.append(fetch(file_url(proxy, big))))
               for _ in range(3)]
    for client in clients:
        client.start()
    for client in clients:
        client.join(30)
    for outcome in outcomes:  # cut after some bytes, or a clean 507 before any
        assert not outcome.complete or outcome.status == 507, outcome
        assert outcome.sha256 != big.sha256
    assert not published(proxy.cache_dir, big)
    assert wait_for(lambda: not temp_files(proxy.cache_dir))
    # The space came back with the temp file: the service goes on at once.
    assert fetch(file_url(proxy, small)).sha256 == small.sha256
    assert requests.get(f"{proxy.url}/healthz", timeout=5).status_code == 200
    assert_cache_consistent(proxy.cache_dir, up)


def test_a_full_disk_is_a_clear_507_and_everything_works_when_space_returns(setup):
    up, proxy = setup
    warm = up.add_file("warm", "warm-1.0.tar.gz", size=100_000)
    cold = up.add_file("cold", "cold-1.0.tar.gz", size=100_000)
    assert requests.get(f"{proxy.url}/simple/warm/", timeout=10).ok
    assert fetch(file_url(proxy, warm)).sha256 == warm.sha256
    up.add_file("warm", "warm-2.0.tar.gz", size=1000)  # its page changes: a refresh must write
    time.sleep(1.1)  # past PYPI_INDEX_TTL
    ballast = fill(proxy.cache_dir)
    try:
        assert fetch(file_url(proxy, warm)).sha256 == warm.sha256  # hits need no space
        stale = requests.get(f"{proxy.url}/simple/warm/", timeout=10)  # no room for the new page
        assert (stale.status_code, stale.headers["X-Cache"]) == (200, "stale"), stale.text
        page = requests.get(f"{proxy.url}/simple/cold/", timeout=10)
        assert page.status_code == 507, page.text
        missed = requests.get(file_url(proxy, cold), timeout=10)
        assert missed.status_code == 507 and "full" in missed.text
        assert requests.get(f"{proxy.url}/healthz", timeout=5).status_code == 503
    finally:
        os.unlink(ballast)
    assert requests.get(f"{proxy.url}/simple/cold/", timeout=10).status_code == 200
    assert fetch(file_url(proxy, cold)).sha256 == cold.sha256
    assert requests.get(f"{proxy.url}/healthz", timeout=5).status_code == 200
    assert_cache_consistent(proxy.cache_dir, up)


def test_a_read_only_cache_directory_is_refused_at_start_in_one_line(setup):
    """A read-only file system cannot even be remounted so while workers hold the catalog
    open for writing, so this is the state a server meets at start (a volume mounted ro, an
    ext4 remounted ro after errors): one clear line, and the cache intact for the next start."""
    up, proxy = setup
    warm = up.add_file("ro", "ro-1.0.tar.gz", size=100_000)
    assert requests.get(f"{proxy.url}/simple/ro/", timeout=10).ok
    assert fetch(file_url(proxy, warm)).sha256 == warm.sha256
    proxy.stop()
    remount(proxy.cache_dir, "ro")
    try:
        result = subprocess.run(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"],
            cwd=ROOT, env=proxy.env, capture_output=True, text=True, timeout=30,
        )
    finally:
        remount(proxy.cache_dir, "rw")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"pypicache: PYPI_CACHE_DIR={proxy.cache_dir} is not writable: Read-only file system"
    ]
    proxy.start()  # writable again: everything cached is still there and right
    hit = fetch(file_url(proxy, warm))
    assert (hit.sha256, hit.headers["X-Cache"]) == (warm.sha256, "hit")
    assert_cache_consistent(proxy.cache_dir, up)


def test_a_file_corrupted_on_disk_is_found_by_verify_and_never_served_again(tmp_path):
    up = Upstream(tmp_path / "up").start()
    proxy = Proxy(tmp_path / "cache", up.env(), workers=2).start()
    try:
        wheel = up.add_file("rot", "rot-1.0.tar.gz", size=200_000)
        good = up.add_file("rot", "rot-2.0.tar.gz", size=200_000)
        requests.get(f"{proxy.url}/simple/rot/", timeout=10)
        for file in (wheel, good):
            assert fetch(file_url(proxy, file)).sha256 == file.sha256
        on_disk = proxy.cache_dir / "files" / wheel.path.split("/packages/", 1)[1]
        with open(on_disk, "r+b") as stream:  # bit rot: same size, one byte flipped
            stream.seek(100_000)
            byte = stream.read(1)
            stream.seek(100_000)
            stream.write(bytes([byte[0] ^ 0xFF]))
        result = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "pypicache:create_app", "pypicache", "verify"],
            cwd=ROOT, env=proxy.env, capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert "sha256 mismatch" in result.stdout and "1 removed" in result.stdout
        again = fetch(file_url(proxy, wheel))
        assert (again.sha256, again.headers["X-Cache"]) == (wheel.sha256, "miss")
        assert fetch(file_url(proxy, good)).headers["X-Cache"] == "hit"
        assert up.downloads(wheel.filename) == 2 and up.downloads(good.filename) == 1
        assert_cache_consistent(proxy.cache_dir, up)
    finally:
        proxy.stop()
        up.stop()
