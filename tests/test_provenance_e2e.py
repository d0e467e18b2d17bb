"""PEP 740 provenance through real gunicorn: the pages' provenance URLs by how the client came
(plain http, or a TLS front gunicorn believes), and the provenance cached along with a file
that pip installs, then served with the upstream gone."""
from __future__ import annotations

import time

import requests

from .fixture_upstream import Upstream, provenance_document
from .servers import Proxy, installed, pip_install
from .wheels import make_wheel

JSON = "application/vnd.pypi.simple.v1+json"
HTTPS_FRONT = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "10.1.2.3"}


def provenance_of(proxy: Proxy, filename: str, headers: dict | None = None) -> str | None:
    page = requests.get(f"{proxy.url}/simple/demo/", timeout=10,
                        headers={"Accept": JSON} | (headers or {})).json()
    return next(f.get("provenance") for f in page["files"] if f["filename"] == filename)


def test_provenance_arrives_with_the_download_and_is_served_from_the_cache(tmp_path):
    up = Upstream(tmp_path / "up", provenance=True).start()
    proxy = None
    try:
        filename, data = make_wheel("demo", "1.0")
        wheel = up.add_file("demo", filename, data)
        proxy = Proxy(tmp_path / "cache", up.env(), workers=2).start()
        path = wheel.path[len(up.package_loc) + 1:]
        # Plain http: the upstream's URL; behind a front gunicorn believes (127.0.0.1): ours.
        assert provenance_of(proxy, filename) == up.provenance_url(wheel)
        assert provenance_of(proxy, filename, HTTPS_FRONT) == (
            f"https://127.0.0.1:{proxy.port}/packages/{path}.provenance")

        result = pip_install(proxy.url + "/simple", tmp_path / "target", "demo")
        assert result.returncode == 0, result.stderr
        assert installed(tmp_path / "target") == {"demo": "1.0"}
        cached = tmp_path / "cache" / "files" / (path + ".provenance")
        deadline = time.monotonic() + 20
        while not cached.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        expected = provenance_document(filename, wheel.sha256)
        assert cached.read_bytes() == expected
        assert sum("/integrity/" in r for r in up.requests) == 1

        up.stop()  # the air-gapped hub: the copy the download brought along
        answer = requests.get(f"{proxy.url}/packages/{path}.provenance", timeout=10)
        assert answer.status_code == 200 and answer.content == expected
        assert answer.headers["X-Cache"] == "hit"
    finally:
        if proxy is not None:
            proxy.stop()
        up.stop()


def test_a_front_gunicorn_does_not_trust_gets_the_upstreams_url(tmp_path):
    up = Upstream(tmp_path / "up", provenance=True).start()
    proxy = None
    try:
        filename, data = make_wheel("demo", "1.0")
        wheel = up.add_file("demo", filename, data)
        proxy = Proxy(tmp_path / "cache", up.env(), workers=1,
                      PYPI_TRUSTED_PROXIES="10.9.9.9").start()
        assert provenance_of(proxy, filename, HTTPS_FRONT) == up.provenance_url(wheel)
    finally:
        if proxy is not None:
            proxy.stop()
        up.stop()
