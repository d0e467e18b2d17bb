"""pypicache in front of index servers others wrote (tests/indexes.py), with real pip and uv."""
from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

import pytest
import requests
from pypi_simple import ACCEPT_ANY, ACCEPT_HTML_ONLY, ACCEPT_JSON_ONLY, PyPISimple

from . import indexes
from .servers import Proxy, installed, pip_install, uv_install

pytestmark = pytest.mark.e2e
UPSTREAMS = ["nginx-relative", "nginx-root", "pypiserver", "devpi", "devpi-mirror"]


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> Path:
    return indexes.build_dists(tmp_path_factory.mktemp("dists"))


def start(name: str, work: Path, dists: Path) -> list[indexes.Index]:
    """The upstream named `name` first, then any server it needs behind it."""
    if name.startswith("nginx-"):
        return [indexes.start_nginx(work, dists, links=name.removeprefix("nginx-"))]
    if name == "pypiserver":
        return [indexes.start_pypiserver(work, dists)]
    if name == "devpi":
        return [indexes.start_devpi(work, dists)]
    behind = indexes.start_pypiserver(work, dists)
    try:
        return [indexes.start_devpi(work, mirror_of=behind.simple), behind]
    except BaseException:
        behind.stop()  # never left running (and warned about) when devpi fails
        raise


@pytest.fixture(scope="module", params=UPSTREAMS)
def stack(request, tmp_path_factory, dists):
    """(upstream, proxy in front of it under gunicorn): one of each per upstream and module."""
    work = tmp_path_factory.mktemp(request.param)
    servers = start(request.param, work, dists)
    try:
        # A short TTL: the second round of each test revalidates against the real server.
        proxy = Proxy(work / "cache", servers[0].env(), workers=2, PYPI_INDEX_TTL="1").start()
    except BaseException:
        for server in servers:
            server.stop()
        raise
    yield servers[0], proxy
    proxy.stop()
    for server in servers:
        server.stop()


def listing(simple: str, project: str, accept: str) -> dict[str, tuple]:
    """filename -> what a client reads of it, from one page of an index."""
    with PyPISimple(simple + "/", accept=accept) as client:
        page = client.get_project_page(project)
    return {p.filename: (p.digests.get("sha256"), p.requires_python or None, p.is_yanked,
                         p.yanked_reason) for p in page.packages}


def test_proxy_pages_list_exactly_the_upstream_files(stack, dists):
    upstream, proxy = stack
    for project in ("alpha", "beta", "gamma"):
        theirs = listing(upstream.simple, project, ACCEPT_ANY)
        ours = {d.name for d in dists.iterdir() if indexes.project_of(d.name) == project}
        assert set(theirs) == ours
        for accept in (ACCEPT_HTML_ONLY, ACCEPT_JSON_ONLY):
            assert listing(f"{proxy.url}/simple", project, accept) == theirs, (project, accept)
    with PyPISimple(f"{proxy.url}/simple/") as client:
        assert set(client.get_index_page().projects) == {"alpha", "beta", "gamma"}
    assert requests.get(f"{upstream.simple}/nosuch/", timeout=30).status_code == 404
    assert requests.get(f"{proxy.url}/simple/nosuch/", timeout=30).status_code == 404


def hashed_requirements(dists: Path, path: Path) -> Path:
    def sha256(name: str, version: str) -> str:
        wheel = dists / f"{name}-{version}-py3-none-any.whl"
        return hashlib.sha256(wheel.read_bytes()).hexdigest()

    path.write_text("".join(f"{name}=={version} --hash=sha256:{sha256(name, version)}\n"
                            for name, version in indexes.CHAIN.items()))
    return path


def install_with_pip_and_uv(proxy: Proxy, dists: Path, work: Path) -> None:
    work.mkdir()
    pip = pip_install(f"{proxy.url}/simple", work / "pip", "--require-hashes",
                      "-r", str(hashed_requirements(dists, work / "requirements.txt")))
    assert pip.returncode == 0, pip.stderr
    assert installed(work / "pip") == indexes.CHAIN
    uv = uv_install(f"{proxy.url}/simple", work / "uv", work / "uv-cache", "alpha")
    assert uv.returncode == 0, uv.stderr
    assert installed(work / "uv") == indexes.CHAIN


def test_pip_with_hashes_and_uv_install_the_chain_cold_then_revalidated(stack, dists, tmp_path):
    upstream, proxy = stack
    install_with_pip_and_uv(proxy, dists, tmp_path / "cold")
    time.sleep(1.1)  # past the TTL: the pages are asked of the upstream again
    install_with_pip_and_uv(proxy, dists, tmp_path / "revalidated")
    for name, version in indexes.CHAIN.items():
        cached = proxy.cache_dir / "files"
        wheel = next(cached.rglob(f"{name}-{version}-py3-none-any.whl"))
        assert wheel.read_bytes() == (dists / wheel.name).read_bytes()


def test_installs_again_with_the_upstream_stopped(stack, dists, tmp_path):
    upstream, proxy = stack
    install_with_pip_and_uv(proxy, dists, tmp_path / "warm")  # whatever is not cached yet
    upstream.stop()
    time.sleep(1.1)  # past the TTL: pages are now served stale
    install_with_pip_and_uv(proxy, dists, tmp_path / "stopped")
    page = requests.get(f"{proxy.url}/simple/alpha/", timeout=10)
    assert page.status_code == 200 and page.headers["X-Cache"] == "stale"



def test_nginx_really_sent_gzip_and_revalidates_with_its_weak_etag(tmp_path, dists):
    """What nginx's access log says it sent the proxy: gzip-encoded pages, then 304s."""
    upstream = indexes.start_nginx(tmp_path, dists)
    proxy = Proxy(tmp_path / "cache", upstream.env(), workers=2, PYPI_INDEX_TTL="1").start()
    try:
        expected = {p: listing(upstream.simple, p, ACCEPT_ANY) for p in ("alpha", "gamma")}
        for _ in ("fetched", "revalidated"):
            for project, files in expected.items():
                assert listing(f"{proxy.url}/simple", project, ACCEPT_JSON_ONLY) == files
            time.sleep(1.1)
        sent = re.findall(r'^/simple/(\w+)/ (\d+) "pypicache" "([^"]*)" encoding=(\S*)',
                          upstream.access_log.read_text(), re.M)
        assert sorted((project, status) for project, status, *_ in sent) == [
            ("alpha", "200"), ("alpha", "304"), ("gamma", "200"), ("gamma", "304")]
        assert all("gzip" in asked for *_, asked, _ in sent), sent
        assert [encoding for _, status, _, encoding in sent if status == "200"] == ["gzip", "gzip"]
    finally:
        proxy.stop()
        upstream.stop()
