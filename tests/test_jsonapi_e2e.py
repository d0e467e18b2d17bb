"""The legacy JSON API under real gunicorn: in front of index servers others wrote (pypiserver
serves HTML only; nginx a static mirror tree), with the upstream stopped, and read by a real
consumer that users run against custom indexes: Renovate, from the npm registry."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from . import indexes
from .fixture_upstream import Upstream
from .servers import Proxy, clean_environ
from .test_jsonapi import valid
from .wheels import make_wheel

pytestmark = pytest.mark.e2e
# Where scripts/test-deps installs it, beside the Python tools of the venv running the tests.
RENOVATE = Path(sys.prefix) / "renovate" / "node_modules" / ".bin" / "renovate"


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> Path:
    return indexes.build_dists(tmp_path_factory.mktemp("dists"))


@pytest.fixture(params=["pypiserver", "nginx-relative"])
def stack(request, tmp_path, dists):
    if request.param == "pypiserver":
        upstream = indexes.start_pypiserver(tmp_path, dists)
    else:
        upstream = indexes.start_nginx(tmp_path, dists)
    try:
        proxy = Proxy(tmp_path / "cache", upstream.env(), workers=2, PYPI_INDEX_TTL="1").start()
    except BaseException:
        upstream.stop()
        raise
    yield request.param, upstream, proxy
    proxy.stop()
    upstream.stop()


def test_real_index_servers_get_a_json_api_also_with_the_upstream_stopped(stack, dists):
    name, upstream, proxy = stack
    response = requests.get(f"{proxy.url}/pypi/alpha/json", timeout=30)
    assert response.status_code == 200, response.text
    document = valid(response.json())
    # The metadata of the wheel (pypiserver has no .metadata: extracted from the wheel).
    assert document["info"]["_pypicache_source"] == "metadata"
    assert document["info"]["requires_dist"] == ["beta>=1"]
    [wheel] = document["urls"]
    assert wheel["filename"] == "alpha-1.0-py3-none-any.whl"
    body = requests.get(wheel["url"], timeout=30).content
    assert body == (dists / wheel["filename"]).read_bytes()
    # Neither gives upload times; only the JSON tree gives sizes (pypiserver's HTML has none).
    assert wheel["upload_time"] is None and wheel["upload_time_iso_8601"] is None
    assert wheel["size"] == (None if name == "pypiserver" else len(body))
    gamma = valid(requests.get(f"{proxy.url}/pypi/gamma/json", timeout=30).json())
    assert gamma["info"]["version"] == "1.0" and gamma["info"]["requires_python"] == ">=3.8"
    assert gamma["releases"]["0.5"][0]["packagetype"] == "sdist"
    assert requests.get(f"{proxy.url}/pypi/nosuch/json", timeout=30).status_code == 404
    assert requests.get(f"{proxy.url}/simple/beta/", timeout=30).status_code == 200  # its page only

    upstream.stop()
    time.sleep(1.1)  # past the TTL: the page is asked for again, and served stale
    stale = requests.get(f"{proxy.url}/pypi/alpha/json", timeout=30)
    assert stale.status_code == 200 and stale.headers["X-Cache"] == "stale"
    assert stale.json() == document
    # A cached page whose release metadata never came: info from the page, and it says so.
    beta = valid(requests.get(f"{proxy.url}/pypi/beta/1.0/json", timeout=30).json())
    assert beta["info"]["_pypicache_source"] == "page"
    assert beta["info"]["name"] == "beta" and beta["info"]["requires_dist"] is None
    # No page cached, no upstream: 502, never 404.
    assert requests.get(f"{proxy.url}/pypi/gamma2/json", timeout=30).status_code == 502


def renovate_environ(home: Path) -> dict[str, str]:
    """Renovate with its own home and cache, logging JSON lines; a proxy that is not there for
    everything but 127.0.0.1, so that nothing it tries can leave the machine."""
    return clean_environ() | {
        "HOME": str(home), "RENOVATE_BASE_DIR": str(home / "base"),
        "LOG_LEVEL": "debug", "LOG_FORMAT": "json",
        "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1,localhost",
    }


def updates_of(log: str) -> dict[str, dict]:
    """newVersion -> update, from the log record that lists each dependency's updates."""
    for line in log.splitlines():
        record = json.loads(line) if line.startswith("{") else {}
        if record.get("msg") == "packageFiles with updates":
            [requirements] = record["config"]["pip_requirements"]
            [dependency] = requirements["deps"]
            return {update["newVersion"]: update for update in dependency.get("updates", [])}
    raise AssertionError(f"no updates in Renovate's log: {log[-3000:]}")


def route_count(proxy: Proxy, route: str) -> int:
    """How many requests of a route the proxy answered, from its own /metrics."""
    metrics = requests.get(f"{proxy.url}/metrics", timeout=30).text
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in metrics.splitlines()
               if line.startswith("pypicache_http_requests_total{") and f'route="{route}"' in line)


@pytest.mark.skipif(not (shutil.which("node") and shutil.which("npm")), reason="no node or npm")
def test_renovate_reports_the_update_read_from_the_json_api(tmp_path):
    assert RENOVATE.exists(), f"{RENOVATE} is missing: run scripts/test-deps (make test does)"
    up = Upstream(tmp_path / "up").start()
    proxy = None
    try:
        for version, uploaded in (("1.0", "2024-01-05T10:00:00Z"), ("1.1", "2024-03-05T10:00:00Z"),
                                  ("2.0", "2024-06-05T10:00:00.250000Z"),
                                  ("3.0rc1", "2024-09-05T10:00:00Z")):
            filename, data = make_wheel("Demo_Pkg", version)
            up.add_file("Demo_Pkg", filename, data, upload_time=uploaded)
        proxy = Proxy(tmp_path / "cache", up.env(), workers=1).start()
        repository = tmp_path / "repository"
        repository.mkdir()
        (repository / "requirements.txt").write_text("Demo_Pkg==1.0\n")
        (repository / "renovate.json").write_text(json.dumps({"packageRules": [
            {"matchDatasources": ["pypi"], "registryUrls": [f"{proxy.url}/pypi/"]}]}))
        git = ["git", "-c", "user.name=test", "-c", "user.email=test@127.0.0.1"]
        for command in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-qm", "pins"]):
            subprocess.run(git + command, cwd=repository, check=True, capture_output=True)
        done = subprocess.run([str(RENOVATE), "--platform=local"], cwd=repository,
                              env=renovate_environ(tmp_path / "home"), capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        updates = updates_of(done.stdout)
        # The highest final release, with the upload time the JSON API gave (Renovate reads
        # `upload_time`, whole seconds in UTC; the simple API it falls back to gives none); no
        # pre-release for a final pin.
        assert set(updates) == {"1.1", "2.0"}, updates
        assert updates["2.0"]["releaseTimestamp"] == "2024-06-05T10:00:00.000Z"
        assert updates["2.0"]["newValue"] == "==2.0" and updates["2.0"]["updateType"] == "major"
        assert route_count(proxy, "/pypi/<project>/json") >= 1
        assert route_count(proxy, "/simple/<project>/") == 0
    finally:
        if proxy is not None:
            proxy.stop()
        up.stop()
