"""Helpers for the reliability suite: real gunicorn, a fault-injecting upstream on
127.0.0.1, and the checks every fault test ends with: nothing wrong served as complete,
nothing wrong or partial kept, no temp file left behind."""
from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import requests

from ..fixture_upstream import Upstream
from ..servers import Proxy

MIB = 1 << 20
# Short timeouts so that every "upstream never answers" case ends within seconds.
FAST_TIMEOUTS = {"PYPI_CONNECT_TIMEOUT": "2", "PYPI_READ_TIMEOUT": "3"}


@dataclass
class Outcome:
    """What one client saw: `complete` is False when the body was cut short or errored."""

    status: int | None
    complete: bool
    sha256: str
    size: int
    headers: dict = field(default_factory=dict)
    first_byte: float | None = None  # seconds from the request to the first body byte


def fetch(url: str, *, stop_after: int | None = None, timeout: float = 30, chunk: int = 64 * 1024,
          **kwargs) -> Outcome:
    """GET `url` as a stream, hashing the body; `stop_after` bytes then disconnect.

    requests' iter_content(n) waits for n bytes: measure a slow first byte with a small `chunk`.
    """
    digest, size, status, headers, first = hashlib.sha256(), 0, None, {}, None
    start = time.monotonic()
    try:
        with requests.get(url, stream=True, timeout=timeout, **kwargs) as response:
            status, headers = response.status_code, dict(response.headers)
            for chunk in response.iter_content(chunk):
                first = first if first is not None else time.monotonic() - start
                digest.update(chunk)
                size += len(chunk)
                if stop_after is not None and size >= stop_after:
                    return Outcome(status, False, digest.hexdigest(), size, headers, first)
    except requests.RequestException:
        return Outcome(status, False, digest.hexdigest(), size, headers, first)
    return Outcome(status, True, digest.hexdigest(), size, headers, first)


def file_url(proxy: Proxy, file) -> str:
    return f"{proxy.url}/packages/{file.path.split('/packages/', 1)[1]}"


def cached_files(cache_dir: Path) -> list[Path]:
    return sorted(p for p in (cache_dir / "files").rglob("*") if p.is_file())


def temp_files(cache_dir: Path) -> list[Path]:
    return sorted((cache_dir / "tmp").glob("*.part"))


def wait_for(predicate: Callable[[], object], timeout: float = 10, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        if time.monotonic() > deadline:
            return result
        time.sleep(step)
    return result


def assert_cache_consistent(cache_dir: Path, up: Upstream) -> None:
    """Every published file has exactly the upstream's bytes, and no temp file is left."""
    known = {f.filename: f.sha256 for _, files in up._projects.values() for f in files}
    for path in cached_files(cache_dir):
        if path.name.endswith(".metadata"):
            continue
        assert hashlib.sha256(path.read_bytes()).hexdigest() == known[path.name], path
    assert wait_for(lambda: not temp_files(cache_dir)), temp_files(cache_dir)


def published(cache_dir: Path, file) -> bool:
    return (cache_dir / "files" / file.path.split("/packages/", 1)[1]).is_file()


def downloading_worker(proxy: Proxy) -> int | None:
    """The worker writing a download's temp file (followers only have it open read-only)."""
    for pid in proxy.worker_pids():
        if any(link.endswith(".part") for link in open_files(pid, writable=True)):
            return pid
    return None


def open_files(pid: int, writable: bool = False) -> list[str]:
    """What /proc says `pid` has open; only what it may write to when `writable`."""
    links = []
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return links
    for fd in fds:
        try:
            if writable:
                with open(f"/proc/{pid}/fdinfo/{fd}") as fdinfo:
                    info = fdinfo.read()
                flags = int(info.split("flags:")[1].split()[0], 8)
                if flags & os.O_ACCMODE == os.O_RDONLY:
                    continue
            links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except (OSError, IndexError, ValueError):
            pass
    return links


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    server = Upstream(tmp_path_factory.mktemp("upstream")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, up):
    server = Proxy(tmp_path_factory.mktemp("proxy") / "cache", up.env(), **FAST_TIMEOUTS).start()
    yield server
    server.stop()
