"""Hostile input over real sockets to real gunicorn: every bad request gets a clear 4xx, no
upstream request is made for it, nothing is written outside the cache root, and upstream
names are escaped in every page."""
from __future__ import annotations

import json
import re
import socket

import pytest
import requests

from ..fixture_upstream import Upstream
from ..servers import Proxy
from .conftest import fetch, file_url

pytestmark = pytest.mark.e2e


def raw(proxy: Proxy, request: bytes) -> tuple[int, bytes]:
    """Send `request` exactly as given; (status, whole answer). Nothing is re-encoded."""
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    match = re.match(rb"HTTP/1\.[01] (\d{3})", answer)
    assert match, answer[:200]
    return int(match[1]), answer


def get(target: bytes, headers: bytes = b"") -> bytes:
    return b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + headers + b"\r\n"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-input")
    up = Upstream(root / "up").start()
    proxy = Proxy(root / "cache", up.env(), workers=2).start()
    wheel = up.add_file("demo", "demo-1.0.tar.gz", size=10_000)
    assert requests.get(f"{proxy.url}/simple/demo/", timeout=10).ok
    assert fetch(file_url(proxy, wheel)).sha256 == wheel.sha256
    up.reset_counts()
    before = {p for p in root.rglob("*")}
    yield up, proxy, wheel, root, before
    proxy.stop()
    up.stop()


def nothing_new_outside_the_cache(root, before) -> None:
    new = {p for p in root.rglob("*")} - before
    outside = [p for p in new if not p.is_relative_to(root / "cache") and p.suffix != ".log"]
    assert outside == []


TARGETS = [
    b"/packages/../../etc/passwd",
    b"/packages/%2e%2e/%2e%2e/etc/passwd",
    b"/packages/..%2f..%2fetc%2fpasswd",
    b"/packages/%252e%252e/etc/passwd",
    b"/packages/ab/%c0%ae%c0%ae/passwd",  # overlong UTF-8 dots
    b"/packages/ab/..%5c..%5cwin.ini",
    b"/packages//etc/passwd",
    b"/packages/ab/x%00.whl",
    b"/packages/ab/x%0d%0aSet-Cookie:%20a=b.whl",
    b"/packages/ab/%ff%fe.whl",
    b"/packages/ab/\xff\xfe.whl",  # raw bytes that are not UTF-8
    b"/simple/\xc3\x28/",
    b"/simple/%3Cscript%3E/",
    b"/simple/..%2f..%2fetc/",
    b"/simple/a%00b/",
    b"/simple/-leading-dash/",
    b"/simple/" + b"x" * 300 + b"/",
    b"/packages/" + b"a/" * 600 + b"x.whl",
    b"/packages/" + b"a" * 3000 + b".whl",
]


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t[:40].decode("latin-1"))
def test_hostile_paths_are_4xx_with_no_upstream_request(world, target):
    up, proxy, _, root, before = world
    status, answer = raw(proxy, get(target))
    if status == 308:  # werkzeug merges '//': a redirect to our own path, which is then checked
        assert re.search(rb"\r\nLocation: (http://[^/]+)?/packages/[^/]", answer), answer[:300]
    else:
        assert 400 <= status < 500, answer[:300]
    assert b"Set-Cookie" not in answer.split(b"\r\n\r\n")[0]
    assert sum(up.requests.values()) == 0, up.requests
    nothing_new_outside_the_cache(root, before)


@pytest.mark.parametrize("line", [
    b"GET /packages/ab/x\r\n.whl HTTP/1.1\r\nHost: x\r\n\r\n",  # CRLF inside the request line
    b"GET /" + b"a" * 8192 + b" HTTP/1.1\r\nHost: x\r\n\r\n",  # 8 KB path
    b"GET /simple/ HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n",
    b"GET /simple/ HTTP/1.1\r\nHost: x\r\nX-Bad: \xff\xfe\x00\r\n\r\n",
    b"\xff\xfe\xfd /simple/ HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /simple/ HTTP/9.9\r\nHost: x\r\n\r\n",
    b"GET\r\n\r\n",
])
def test_malformed_requests_are_4xx(world, line):
    up, proxy, _, root, before = world
    status, _ = raw(proxy, line)
    assert 400 <= status < 500 or status == 505
    assert sum(up.requests.values()) == 0
    nothing_new_outside_the_cache(root, before)


@pytest.mark.parametrize("method", [b"POST", b"PUT", b"DELETE", b"PATCH", b"TRACE", b"PROPFIND", b"FOO"])
@pytest.mark.parametrize("path", [b"/simple/", b"/simple/demo/", b"/packages/ab/demo-1.0.tar.gz"])
def test_unexpected_methods_are_405(world, method, path):
    up, proxy, *_ = world
    request = method + b" " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"
    status, answer = raw(proxy, request)
    assert status == 405, answer[:300]
    assert sum(up.requests.values()) == 0


def test_hostile_accept_headers_get_an_answer_or_406_never_5xx(world):
    _, proxy, *_ = world
    accepts = [
        ", ".join(f"application/x-{i};q=0.{i % 10}" for i in range(500)),
        ", ".join(f"a/{i}" for i in range(1000)),  # about as many as fit in gunicorn's limit
        "text/html;q=nan, application/vnd.pypi.simple.v1+json;q=inf",
        "text/html;q=-1, */*;q=1e999",
        "*/*;q=0",
        ";;;,,,;q=,=;",
        "text/html;" + "a=b;" * 500,
        "application/vnd.pypi.simple.v1+json;q=0.5;q=0.9, text/html;level=1;q=0.1",
    ]
    for accept in accepts:
        response = requests.get(f"{proxy.url}/simple/demo/", headers={"Accept": accept}, timeout=10)
        # 431: gunicorn's header size limit (8 KiB) answers before the app sees it.
        assert response.status_code in (200, 406, 431), (accept[:60], response.status_code)


def test_hostile_range_headers_never_5xx_and_never_a_wrong_byte(world):
    _, proxy, wheel, *_ = world
    body = wheel.disk_path.read_bytes()
    ranges = [
        "bytes=" + ",".join(f"{i}-{i}" for i in range(500)),  # hundreds of ranges
        "bytes=" + ",".join("0-" for _ in range(300)),
        "bytes=-0", "bytes=5-1", "bytes=99999999999999999999999-", "bytes=--5", "items=0-1",
        "bytes=0-0,-1", "bytes= 0 - 9 ", "bytes=0-9;q=1", "bytes=" + "9" * 400 + "-",
    ]
    for value in ranges:
        for if_range in (None, '"nope"', "Wed, 21 Oct 2015 07:28:00 GMT", "garbage"):
            headers = {"Range": value} | ({"If-Range": if_range} if if_range else {})
            response = requests.get(file_url(proxy, wheel), headers=headers, timeout=10)
            assert response.status_code in (200, 206, 416), (value[:40], response.status_code)
            if response.status_code == 200:
                assert response.content == body
            if response.status_code == 206:
                start, end = map(int, re.match(r"bytes (\d+)-(\d+)/", response.headers["Content-Range"]).groups())
                assert response.content == body[start:end + 1]


class _Hostile(Upstream):
    """An upstream that puts markup in everything it controls."""

    def render_project(self, norm, fmt):
        data = super().render_project(norm, fmt)
        if fmt == "json":
            doc = json.loads(data)
            doc["project-status"] = {"status": "<script>alert(1)</script>", "reason": "<b onload=x>"}
            for entry in doc["files"]:
                entry["requires-python"] = '"><script>alert(2)</script>'
                entry["yanked"] = "</a><script>alert(3)</script>"
                entry["hashes"] = {"sha256": entry["hashes"]["sha256"] + '"><script>'}
            doc["files"].append({"filename": "<script>alert(4)</script>.whl",
                                 "url": self.files_url + "/ab/%3Cscript%3Ealert(4)%3C/script%3E.whl",
                                 "hashes": {}})
            return json.dumps(doc).encode()
        return data


def test_markup_from_the_upstream_is_escaped_in_every_page(tmp_path):
    up = _Hostile(tmp_path / "up", formats=("json",)).start()
    up.add_file("xss", "xss-1.0.tar.gz", size=1000)
    up.add_projects(["<script>alert(5)</script>", "ok-project"])
    proxy = Proxy(tmp_path / "cache", up.env(), workers=1).start()
    try:
        page = requests.get(f"{proxy.url}/simple/xss/", timeout=10)
        assert page.status_code == 200 and "xss-1.0.tar.gz" in page.text
        assert "<script" not in page.text and "<b " not in page.text
        assert "&lt;script&gt;alert(2)&lt;/script&gt;" in page.text  # kept, escaped once
        root = requests.get(f"{proxy.url}/simple/", timeout=10)
        assert root.status_code == 200 and "ok-project" in root.text and "<script" not in root.text
        # JSON carries the strings as data, and the file with markup in its path is dropped.
        data = requests.get(f"{proxy.url}/simple/xss/?format=json", timeout=10).json()
        assert [f["filename"] for f in data["files"]] == ["xss-1.0.tar.gz"]
        # The dashboard and its project page show what was cached, escaped.
        fetch(f"{proxy.url}/packages/" + data["files"][0]["url"].split("/packages/", 1)[1])
        for path in ("/", "/projects/xss/"):
            board = requests.get(proxy.url + path, timeout=10)
            assert board.status_code in (200, 404) and "<script>alert" not in board.text
    finally:
        proxy.stop()
        up.stop()
