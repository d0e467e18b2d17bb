"""Upload times and project status end to end: real gunicorn workers, real uv and pip, an
HTML-only upstream (the fixture's HTML-only mode, and Debian's nginx serving a mirror tree
whose pages give no times), and a second fixture upstream as the time source (PEP 691 JSON
with upload times for the same files, as the public index would give them)."""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests

from . import indexes
from .fixture_upstream import Upstream
from .servers import Proxy, installed, pip_install, uv_install
from .test_s3_nodes import bucket_files, cluster, shared_soon
from .wheels import make_wheel

pytestmark = pytest.mark.e2e
JSON = "application/vnd.pypi.simple.v1+json"
NOW = datetime.now(timezone.utc)
# demo 1.0 a month old, 2.0 an hour old: a client's cutoff a day ago picks 1.0.
RELEASES = {"1.0": NOW - timedelta(days=30), "2.0": NOW - timedelta(hours=1)}
CUTOFF = (NOW - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")


def publish(*ups: Upstream, project: str = "demo") -> dict[str, object]:
    """The same wheels (the same bytes) on each upstream, with their upload times."""
    files = {}
    for version, uploaded in RELEASES.items():
        filename, data = make_wheel(project, version)
        for up in ups:
            files[version] = up.add_file(project, filename, data, upload_time=uploaded)
    return files


def exclude_newer(index: str, target: Path) -> tuple[object, object]:
    """(uv's, pip's) install of demo with a client cutoff of a day ago."""
    uv = uv_install(index, target / "uv", target / "uv-cache", "--exclude-newer", CUTOFF, "demo")
    pip = pip_install(index, target / "pip", "--uploaded-prior-to", CUTOFF, "demo")
    return uv, pip


def no_times(uv, pip) -> bool:
    """Whether both clients failed for want of upload times (uv skips a file without one,
    pip refuses the whole index: pip 26.3, uv 0.13.8)."""
    return (uv.returncode != 0 and "is missing an upload date" in uv.stderr
            and pip.returncode != 0 and "does not provide upload-time metadata" in pip.stderr)


@pytest.fixture
def upstreams(tmp_path):
    """(an HTML-only upstream, a time source), both with demo 1.0 and 2.0."""
    html = Upstream(tmp_path / "html", formats=("html",)).start()
    source = Upstream(tmp_path / "source", formats=("json",)).start()
    publish(html, source)
    yield html, source
    html.stop()
    source.stop()


def test_client_cutoffs_work_through_an_html_only_mirror_with_a_time_source(upstreams, tmp_path):
    html, source = upstreams
    # Straight from the HTML-only upstream, neither client can tell any file's age.
    uv, pip = exclude_newer(html.index_url, tmp_path / "direct")
    assert no_times(uv, pip), (uv.stderr, pip.stderr)
    proxy = Proxy(tmp_path / "cache", html.env(), workers=2,
                  PYPI_UPLOAD_TIME_SOURCE=source.index_url).start()
    try:
        index = f"{proxy.url}/simple"
        uv, pip = exclude_newer(index, tmp_path / "proxied")
        assert uv.returncode == 0, uv.stderr
        assert pip.returncode == 0, pip.stderr
        assert installed(tmp_path / "proxied" / "uv") == {"demo": "1.0"}
        assert installed(tmp_path / "proxied" / "pip") == {"demo": "1.0"}
        # Without a cutoff the newest release, as before.
        done = uv_install(index, tmp_path / "uv-all", tmp_path / "uv-cache", "demo")
        assert done.returncode == 0 and installed(tmp_path / "uv-all") == {"demo": "2.0"}
        page = requests.get(index + "/demo/", headers={"Accept": JSON}, timeout=10).json()
        assert {entry["filename"]: entry["upload-time"][:10] for entry in page["files"]} == {
            "demo-1.0-py3-none-any.whl": RELEASES["1.0"].strftime("%Y-%m-%d"),
            "demo-2.0-py3-none-any.whl": RELEASES["2.0"].strftime("%Y-%m-%d")}
    finally:
        proxy.stop()
    # The same proxy without the source: as the upstream, no file has an age.
    bare = Proxy(tmp_path / "cache-bare", html.env(), workers=1).start()
    try:
        uv, pip = exclude_newer(f"{bare.url}/simple", tmp_path / "bare")
        assert no_times(uv, pip), (uv.stderr, pip.stderr)
    finally:
        bare.stop()


def test_a_source_that_is_down_never_fails_a_page(upstreams, tmp_path):
    html, source = upstreams
    source.stop()
    proxy = Proxy(tmp_path / "cache", html.env(), workers=1, PYPI_INDEX_TTL="1",
                  PYPI_UPLOAD_TIME_SOURCE=source.index_url).start()
    try:
        index = f"{proxy.url}/simple"
        done = uv_install(index, tmp_path / "uv", tmp_path / "uv-cache", "demo")
        assert done.returncode == 0 and installed(tmp_path / "uv") == {"demo": "2.0"}
        assert "upload time source" in proxy.logs()
        source.start()  # back: the next refresh asks it again
        time.sleep(1.2)
        uv, pip = exclude_newer(index, tmp_path / "later")
        assert uv.returncode == 0 and pip.returncode == 0, (uv.stderr, pip.stderr)
        assert installed(tmp_path / "later" / "uv") == {"demo": "1.0"}
    finally:
        proxy.stop()


SERVERS = {"nginx": indexes.start_nginx, "pypiserver": indexes.start_pypiserver,
           "devpi": indexes.start_devpi}


@pytest.mark.parametrize("server", sorted(SERVERS))
def test_client_cutoffs_through_real_index_servers_with_a_time_source(tmp_path, server):
    """Index servers other people wrote, none of which gives these files an upload time:
    Debian's nginx serving a bandersnatch-style tree (HTML and PEP 691 JSON pages, as TUNA
    and USTC serve them), pypiserver (HTML) and devpi-server (PEP 691 JSON 1.0, no times)."""
    dists = tmp_path / "dists"
    dists.mkdir()
    source = Upstream(tmp_path / "source", formats=("json",)).start()
    for version, uploaded in RELEASES.items():
        filename, data = make_wheel("demo", version)
        (dists / filename).write_bytes(data)
        source.add_file("demo", filename, data, upload_time=uploaded)
    (tmp_path / server).mkdir()
    upstream = SERVERS[server](tmp_path / server, dists)
    proxy = None
    try:
        assert no_times(*exclude_newer(upstream.simple, tmp_path / "direct"))
        proxy = Proxy(tmp_path / "cache", upstream.env(), workers=2,
                      PYPI_UPLOAD_TIME_SOURCE=source.index_url).start()
        uv, pip = exclude_newer(f"{proxy.url}/simple", tmp_path / "proxied")
        assert uv.returncode == 0 and pip.returncode == 0, (uv.stderr, pip.stderr)
        assert installed(tmp_path / "proxied" / "uv") == {"demo": "1.0"}
        assert installed(tmp_path / "proxied" / "pip") == {"demo": "1.0"}
    finally:
        if proxy is not None:
            proxy.stop()
        upstream.stop()
        source.stop()


def _cached(proxy: Proxy, filename: str) -> list[Path]:
    return [path for path in (proxy.cache_dir / "files").rglob(filename + "*")]


def _file_url(proxy: Proxy, file) -> str:
    return proxy.url + "/packages" + file.path[len("/packages"):]


def test_a_quarantined_project_is_emptied_refused_and_removed_also_when_stale(tmp_path):
    up = Upstream(tmp_path / "up", formats=("html",)).start()
    files = publish(up)
    lib = up.add_wheel("lib", "1.0")
    proxy = Proxy(tmp_path / "cache", up.env(), workers=2, PYPI_INDEX_TTL="1").start()
    index = f"{proxy.url}/simple"
    try:
        done = pip_install(index, tmp_path / "pip", "demo", "lib")
        assert done.returncode == 0 and installed(tmp_path / "pip") == {"demo": "2.0", "lib": "1.0"}
        assert _cached(proxy, files["2.0"].filename)
        up.set_status("demo", "quarantined", "malware in 2.0")
        up.set_status("lib", "archived")
        time.sleep(1.2)
        page = requests.get(index + "/demo/", headers={"Accept": JSON}, timeout=10).json()
        assert page["files"] == [] and page["project-status"]["status"] == "quarantined"
        html = requests.get(index + "/demo/", timeout=10).text
        assert 'content="quarantined"' in html and "<a " not in html
        assert not _cached(proxy, files["2.0"].filename)
        for _ in range(10):  # every worker, each on a new connection
            refused = requests.get(_file_url(proxy, files["2.0"]), timeout=10,
                                   headers={"Connection": "close"})
            assert refused.status_code == 404
        assert not _cached(proxy, files["2.0"].filename)
        pip_refused = pip_install(index, tmp_path / "pip2", "demo")
        assert pip_refused.returncode != 0 and "(from versions: none)" in pip_refused.stderr
        uv_refused = uv_install(index, tmp_path / "uv", tmp_path / "uv-cache", "demo")
        assert uv_refused.returncode != 0
        direct = pip_install(index, tmp_path / "pip3", _file_url(proxy, files["1.0"]))
        assert direct.returncode != 0 and "404" in direct.stderr
        # archived: carried through, and installable as before
        lib_page = requests.get(index + "/lib/", timeout=10).text
        assert '<meta name="pypi:project-status" content="archived">' in lib_page
        assert uv_install(index, tmp_path / "uv-lib", tmp_path / "uv-cache", "lib").returncode == 0
        # The upstream down: pages stale, and nothing of demo comes back.
        up.stop()
        time.sleep(1.2)
        stale = requests.get(index + "/demo/", headers={"Accept": JSON}, timeout=10)
        assert stale.headers["X-Cache"] == "stale" and stale.json()["files"] == []
        assert requests.get(_file_url(proxy, files["2.0"]), timeout=10).status_code == 404
        assert not _cached(proxy, files["2.0"].filename)
        assert "removed demo-2.0-py3-none-any.whl from the cache" in proxy.logs()
        assert lib.filename in {p.name for p in (proxy.cache_dir / "files").rglob("*.whl")}
    finally:
        proxy.stop()
        up.stop()


def test_a_quarantine_empties_every_node_and_the_bucket(tmp_path, moto):
    up = Upstream(tmp_path / "up").start()
    files = publish(up)
    try:
        with cluster(tmp_path, moto, up, 2, PYPI_INDEX_TTL="1") as (first, second):
            old, new = files["1.0"], files["2.0"]
            # Each node downloads one (kept on its disk), and puts it in the bucket.
            assert requests.get(_file_url(second, old), timeout=30).ok
            assert requests.get(_file_url(first, new), timeout=30).ok
            deadline = time.monotonic() + 30
            while len(shared_soon(moto, tmp_path)) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert _cached(second, old.filename) and _cached(first, new.filename)
            up.set_status("demo", "quarantined")
            time.sleep(1.2)
            page = requests.get(first.url + "/simple/demo/", headers={"Accept": JSON},
                                timeout=10).json()
            assert page["files"] == [] and not _cached(first, new.filename)
            assert not {old.filename, new.filename} & set(bucket_files(moto, tmp_path))
            # The second node has not read the page since: a file asked for by URL (a lock
            # file) makes it read the page first, and its own copy goes too.
            assert _cached(second, old.filename)
            assert requests.get(_file_url(second, new), timeout=30).status_code == 404
            assert not _cached(second, old.filename)
            assert requests.get(_file_url(second, old), timeout=30).status_code == 404
            assert not {old.filename, new.filename} & set(bucket_files(moto, tmp_path))
            assert up.downloads(old.filename) == up.downloads(new.filename) == 1
    finally:
        up.stop()
