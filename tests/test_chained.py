"""A site pypicache in front of a regional pypicache (whose pages come gzipped), real pip."""
from __future__ import annotations

import time

import pytest
import requests

from .fixture_upstream import Upstream
from .servers import Proxy, add_chain, installed, pip_install

pytestmark = pytest.mark.e2e
JSON = "application/vnd.pypi.simple.v1+json"


def test_pip_require_hashes_through_two_pypicaches_then_with_the_first_stopped(tmp_path):
    up = Upstream(tmp_path / "up").start()
    chain = add_chain(up)
    regional = site = None
    try:
        regional = Proxy(tmp_path / "regional", up.env(), workers=2).start()
        site = Proxy(tmp_path / "site", {"PYPI_MIRROR_URL": f"{regional.url}/simple",
                                         "PYPI_FILES_URL": f"{regional.url}/packages"},
                     PYPI_INDEX_TTL="1").start()
        # What the site cache is sent when it asks the regional one for a page: on the
        # regional's miss the page as it was just made, plain; from then on gzip.
        ask = {"Accept-Encoding": "gzip, deflate", "Accept": JSON}
        missed = requests.get(f"{regional.url}/simple/alpha/", timeout=10, headers=ask)
        assert missed.headers["X-Cache"] == "miss" and "Content-Encoding" not in missed.headers
        sent = requests.get(f"{regional.url}/simple/alpha/", stream=True, timeout=10,
                            headers=ask)
        assert sent.headers["Content-Encoding"] == "gzip"
        sent.close()

        lines = [f"{n}==1.0 --hash=sha256:{chain[f'{n}-1.0-py3-none-any.whl'].sha256}"
                 for n in ("alpha", "beta", "gamma")]
        requirements = tmp_path / "requirements.txt"
        requirements.write_text("\n".join(lines) + "\n")
        first = pip_install(f"{site.url}/simple", tmp_path / "t1", "--require-hashes", "-r", str(requirements))
        assert first.returncode == 0, first.stderr + site.logs()[-3000:]
        assert installed(tmp_path / "t1") == {"alpha": "1.0", "beta": "1.0", "gamma": "1.0"}
        assert all(up.downloads(f"{n}-1.0-py3-none-any.whl") == 1 for n in ("alpha", "beta", "gamma"))
        for project in ("alpha", "gamma"):  # the same files and hashes at both levels
            pages = [requests.get(f"{p.url}/simple/{project}/", headers={"Accept": JSON}, timeout=10).json()
                     for p in (regional, site)]
            assert [(f["filename"], f["hashes"], f.get("yanked")) for f in pages[1]["files"]] ==\
                   [(f["filename"], f["hashes"], f.get("yanked")) for f in pages[0]["files"]]

        regional.stop()
        time.sleep(1.2)  # past the site's TTL: its pages are now served stale
        second = pip_install(f"{site.url}/simple", tmp_path / "t2", "--require-hashes", "-r", str(requirements))
        assert second.returncode == 0, second.stderr
        assert set(installed(tmp_path / "t2")) == {"alpha", "beta", "gamma"}
        assert requests.get(f"{site.url}/simple/alpha/", timeout=10).headers["X-Cache"] == "stale"
    finally:
        for server in (site, regional):
            if server is not None:
                server.stop()
        up.stop()
