"""Real clients through real gunicorn: pip, uv and pypi-simple, both upstream styles (issue 3)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import requests
from pypi_simple import ACCEPT_HTML_ONLY, ACCEPT_JSON_ONLY, PyPISimple

from .fixture_upstream import Upstream
from .servers import Proxy, add_chain, installed, pip_install, uv_install

pytestmark = pytest.mark.e2e
NAMES = {"alpha", "beta", "gamma"}


@pytest.fixture(params=[("absolute", ("html",)), ("relative", ("json",)), ("absolute", ("html", "json"))],
                ids=["absolute-html", "relative-json", "absolute-both"])
def served(request, tmp_path):
    layout, formats = request.param
    yield from _serve(tmp_path, layout=layout, formats=formats)


def _serve(tmp_path: Path, **upstream):
    """The chain on a fixture upstream, and the proxy in front of it, for one test."""
    up = Upstream(tmp_path / "up", **upstream).start()
    add_chain(up)
    proxy = Proxy(tmp_path / "cache", up.env()).start()
    yield up, proxy
    proxy.stop()
    up.stop()


def test_pip_plain_then_require_hashes(served, tmp_path):
    up, proxy = served
    first = pip_install(f"{proxy.url}/simple", tmp_path / "t1", "alpha")
    assert first.returncode == 0, first.stderr
    assert installed(tmp_path / "t1") == {"alpha": "1.0", "beta": "1.0", "gamma": "1.0"}
    lines = [f"{n}==1.0 --hash=sha256:{hashlib.sha256(wheel_bytes(up, n)).hexdigest()}" for n in sorted(NAMES)]
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("\n".join(lines) + "\n")
    second = pip_install(f"{proxy.url}/simple", tmp_path / "t2", "--require-hashes", "-r", str(requirements))
    assert second.returncode == 0, second.stderr
    assert set(installed(tmp_path / "t2")) == NAMES
    assert all(up.downloads(f"{n}-1.0-py3-none-any.whl") == 1 for n in NAMES)


def wheel_bytes(up: Upstream, name: str) -> bytes:
    return (up.root / "files" / f"{name}-1.0-py3-none-any.whl").read_bytes()


def test_uv_cold_then_warm(served, tmp_path):
    up, proxy = served
    cold = uv_install(f"{proxy.url}/simple", tmp_path / "t1", tmp_path / "uv1", "alpha")
    assert cold.returncode == 0, cold.stderr
    assert installed(tmp_path / "t1") == {"alpha": "1.0", "beta": "1.0", "gamma": "1.0"}
    up.stop()  # warm: everything now comes from the proxy's disk
    warm = uv_install(f"{proxy.url}/simple", tmp_path / "t2", tmp_path / "uv2", "alpha")
    assert warm.returncode == 0, warm.stderr
    assert set(installed(tmp_path / "t2")) == NAMES


@pytest.fixture
def no_metadata(tmp_path):
    yield from _serve(tmp_path, metadata=False)


def test_pip_fast_deps_without_upstream_metadata(no_metadata, tmp_path):
    """The proxy advertises metadata it extracts itself (tests/test_metadata_e2e.py)."""
    up, proxy = no_metadata
    page = requests.get(f"{proxy.url}/simple/alpha/", timeout=10).text
    assert 'data-core-metadata="true" data-dist-info-metadata="true"' in page
    result = pip_install(f"{proxy.url}/simple", tmp_path / "t", "--use-feature=fast-deps", "alpha")
    assert result.returncode == 0, result.stderr
    assert set(installed(tmp_path / "t")) == NAMES


def test_uv_without_metadata_cold_and_warm(no_metadata, tmp_path):
    up, proxy = no_metadata
    for run in ("1", "2"):
        result = uv_install(f"{proxy.url}/simple", tmp_path / f"t{run}", tmp_path / f"uv{run}", "alpha")
        assert result.returncode == 0, result.stderr
        assert set(installed(tmp_path / f"t{run}")) == NAMES
    assert all(up.downloads(f"{n}-1.0-py3-none-any.whl") == 1 for n in NAMES)


def test_pypi_simple_reads_the_same_project_in_json_and_html(served):
    up, proxy = served

    def read(accept):
        with PyPISimple(f"{proxy.url}/simple/", accept=accept) as client:
            page = client.get_project_page("gamma")
        return page, {
            p.filename: (p.url, p.digests, p.is_yanked, p.yanked_reason, p.requires_python, p.has_metadata)
            for p in page.packages
        }

    json_page, json_files = read(ACCEPT_JSON_ONLY)
    html_page, html_files = read(ACCEPT_HTML_ONLY)
    assert json_files == html_files
    assert json_files["gamma-0.5.tar.gz"][2:4] == (True, "broken")
    assert json_files["gamma-2.0-py3-none-any.whl"][4] == ">=4"
    assert json_files["gamma-1.0-py3-none-any.whl"][5] is True
    for url, digests, *_ in json_files.values():
        assert url.startswith(proxy.url + "/packages/")
        assert hashlib.sha256(requests.get(url, timeout=10).content).hexdigest() == digests["sha256"]
