"""No value of a setting that can hold a secret is ever printed: a real gunicorn run whose
upstream URL carries a login, through dropped links, misses and an upstream outage, and a
start refused for a bad setting. (Each message's own test is beside its module.)"""
from __future__ import annotations

import subprocess
import sys
import time

import pytest
import requests

from .fixture_upstream import Upstream
from .servers import ROOT, Proxy, add_chain, clean_environ

SECRET = "t0ken-of-the-mirror"


@pytest.mark.e2e
def test_a_server_run_shows_the_upstreams_login_nowhere(tmp_path):
    up = Upstream(tmp_path / "up", layout="relative").start()
    files = add_chain(up)
    mirror = up.index_url.replace("http://", f"http://mirror:{SECRET}@")
    # The files base is not where the pages link: every link is dropped, and logged.
    proxy = Proxy(tmp_path / "cache", {"PYPI_MIRROR_URL": mirror,
                                       "PYPI_PACKAGE_LOC": "/pypi/web/elsewhere"}).start()
    try:
        page = requests.get(f"{proxy.url}/simple/alpha/", timeout=30)
        assert page.status_code == 200 and "alpha-1.0" not in page.text
        assert requests.get(f"{proxy.url}/simple/no-such-project/", timeout=30).status_code == 404
        wheel = files["alpha-1.0-py3-none-any.whl"].path.split("/packages/", 1)[1]
        assert requests.get(f"{proxy.url}/packages/{wheel}", timeout=30).status_code == 404
        up.stop()
        assert requests.get(f"{proxy.url}/simple/delta/", timeout=30).status_code == 502
        deadline = time.monotonic() + 30  # workers share what they saw about once a second
        health = requests.get(proxy.url + "/healthz", timeout=10).text
        while '"last_error":null' in health:
            assert time.monotonic() < deadline, health
            time.sleep(0.2)
            health = requests.get(proxy.url + "/healthz", timeout=10).text
        pages = [health] + [requests.get(proxy.url + path, timeout=10).text
                            for path in ("/", "/stats.json", "/metrics")]
    finally:
        proxy.stop()
        up.stop()
    logs = proxy.logs()
    assert "dropped a file link outside the files base: 127.0.0.1" in logs
    assert "upstream unreachable" in logs
    for shown in pages + [logs]:
        assert SECRET not in shown


def test_a_start_refused_for_a_bad_setting_names_it_without_its_login(tmp_path):
    environ = clean_environ() | {
        "PYPI_INDEXES": f"corp=https://mirror:{SECRET}@127.0.0.1:9/simple pypi",
        "PYPI_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"], cwd=ROOT,
                          env=environ, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "PYPI_INDEXES" in done.stderr and "'pypi' is not name=URL" in done.stderr
    assert SECRET not in done.stdout + done.stderr
