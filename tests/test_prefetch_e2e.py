"""Fetching ahead under real gunicorn workers with real pip and uv installing cold through
the proxy: the closure is asked of the upstream once each, and what was fetched ahead is what
the client then asked for."""
from __future__ import annotations

import re
import time

import pytest
import requests

from .fixture_upstream import Upstream
from .servers import Proxy, add_chain, installed, pip_install, uv_install

CLOSURE = {"beta": "beta-1.0-py3-none-any.whl", "gamma": "gamma-1.0-py3-none-any.whl"}


def _ahead(proxy: Proxy, done) -> dict:
    """The dashboard's figures of fetching ahead, once `done` says they have all landed (the
    workers flush about once a second)."""
    deadline = time.monotonic() + 30
    while True:
        ahead = requests.get(f"{proxy.url}/stats.json", timeout=10).json()["ahead"]
        if done(ahead) or time.monotonic() > deadline:
            return ahead
        time.sleep(0.2)


def _all_used(kinds: tuple[str, ...]):
    def done(ahead: dict) -> bool:
        return all(ahead["kinds"][kind]["unused"] == 0 for kind in kinds)
    return done


@pytest.mark.e2e
@pytest.mark.parametrize("files", ["0", "1"], ids=["metadata", "files too"])
@pytest.mark.parametrize("installer", ["pip", "uv"])
def test_a_cold_install_asks_for_what_was_fetched_ahead(tmp_path, installer, files):
    up = Upstream(tmp_path / "up").start()
    chain = add_chain(up)
    proxy = Proxy(tmp_path / "cache", up.env(), PYPI_PREFETCH="1",
                  PYPI_PREFETCH_FILES=files).start()
    target = tmp_path / "target"
    try:
        index = f"{proxy.url}/simple"
        done = (pip_install(index, target, "alpha") if installer == "pip"
                else uv_install(index, target, tmp_path / "uv-cache", "alpha"))
        assert done.returncode == 0, done.stderr[-3000:]
        assert installed(target) == {"alpha": "1.0", "beta": "1.0", "gamma": "1.0"}
        kinds = ("page", "metadata", "file") if files == "1" else ("page", "metadata")
        ahead = _ahead(proxy, _all_used(kinds))
        asked = up.stats()["requests"]
        # Whoever came first, the client or the fetch ahead, the other followed it: the
        # closure was asked of the upstream once each.
        for project, wheel in CLOSURE.items():
            assert asked[f"GET {up.simple_path}/{project}/"] == 1, project
            assert asked[f"GET {chain[wheel].path}.metadata"] == 1, wheel
            assert up.downloads(wheel) == 1
        fetched = {kind: ahead["kinds"][kind]["fetched"] for kind in kinds}
        # It was ahead of the client somewhere. Which questions it won is a race: uv asks for
        # beta's and gamma's pages the moment alpha's metadata arrives, and where the client
        # was first the fetch ahead finds the answer cached and counts nothing (CI saw pages
        # and metadata all the client's, the two wheels the fetch ahead's).
        assert sum(fetched.values()) >= 1, ahead
        # ...and what it fetched, the client then asked for (in whatever worker).
        assert all(ahead["kinds"][kind]["unused"] == 0 for kind in kinds), ahead
        assert ahead["failed"] == 0
        if files == "1":
            # All three wheels: alpha's too, from the job its page's miss queued (the client
            # asks for the wheels only once beta and gamma are resolved, four round trips on).
            assert fetched["file"] == 3
        else:
            assert ahead["kinds"]["file"]["fetched"] == 0
        metrics = requests.get(f"{proxy.url}/metrics", timeout=10).text
        # A label never counted has no sample in the multiprocess registry: then it is 0.
        sample = re.search(r'^pypicache_fetched_ahead_total\{kind="page"\} (\S+)$', metrics, re.M)
        assert (float(sample[1]) if sample else 0.0) == fetched["page"]
    finally:
        proxy.stop()
        up.stop()
