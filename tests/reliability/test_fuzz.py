"""Property-based fuzzing (hypothesis) of paths and headers against the app in one process,
the upstream mocked with `responses` (answering pages, files, 404s and 503s). Whatever comes
in: never a 5xx other than the upstream's 502/504 or a storage 507, and never a file outside
the cache root."""
from __future__ import annotations

import hashlib
import json
import os
import re
from urllib.parse import quote

import pytest
import responses
from hypothesis import HealthCheck, given, settings, strategies as st

from pypicache import create_app

from ..conftest import FILES, MIRROR, BufferedClient

BODY = b"fuzz wheel " * 100
SHA = hashlib.sha256(BODY).hexdigest()
PIECES = ["..", ".", "%2e%2e", "%2f", "/", "//", "%00", "%0d%0a", "\\", "%ff", "%c0%ae", "~",
          "simple", "packages", "demo", "demo-1.0.tar.gz", ".metadata", "?format=json", "#x",
          "%3Cscript%3E", "é", "\u202e", "a" * 300, "%", "%%", "+", "!", "=", ";", "*"]
path_parts = st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=12)), max_size=10)
# Header values: anything latin-1 but line breaks (a client library refuses those itself;
# the raw-socket tests in test_bad_input.py send them to gunicorn).
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=255, exclude_characters="\x7f"),
                      max_size=200)
accepts = st.one_of(header_text, st.lists(st.sampled_from(
    ["text/html", "application/vnd.pypi.simple.v1+json", "application/vnd.pypi.simple.latest+html",
     "*/*", "text/*", ";q=0", ";q=0.5", ";q=nan", ";q=2", ",", ";level=1"]), max_size=20).map("".join))
ranges = st.one_of(header_text, st.lists(st.one_of(
    st.integers(-5, 2000).map(str), st.sampled_from(["-", ",", "bytes=", " ", "items="])),
    max_size=30).map("".join).map(lambda r: "bytes=" + r))
ALLOWED_5XX = {502, 504, 507}


def upstream(request):
    """The mocked upstream: a page for `demo`, its file, 404 for others, 503 for `flaky`."""
    url = request.url
    if url.startswith(f"{MIRROR}/demo/"):
        page = {"meta": {"api-version": "1.1"}, "name": "demo", "files": [
            {"filename": "demo-1.0.tar.gz", "url": f"{FILES}/ab/demo-1.0.tar.gz",
             "hashes": {"sha256": SHA}, "size": len(BODY)}]}
        return 200, {"Content-Type": "application/vnd.pypi.simple.v1+json"}, json.dumps(page)
    if url.startswith(f"{MIRROR}/flaky/") or url.endswith("flaky-1.0.tar.gz"):
        return 503, {}, "down"
    if url == f"{FILES}/ab/demo-1.0.tar.gz":
        return 200, {"Content-Length": str(len(BODY))}, BODY
    if url.rstrip("/") == MIRROR:
        return 200, {"Content-Type": "text/html"}, '<a href="demo/">demo</a><a href="flaky/">flaky</a>'
    return 404, {}, "not found"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    (root / "outside").mkdir()
    app = create_app({"cache_dir": root / "cache", "mirror_url": MIRROR, "files_url": FILES})
    app.config["TESTING"] = True
    app.test_client_class = BufferedClient
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mocked:
        mocked.add_callback(responses.GET, re.compile(r"http://127\.0\.0\.1:9/.*"), callback=upstream)
        yield app.test_client(), root


def check(world, response) -> None:
    client, root = world
    status = response.status_code
    assert status < 500 or status in ALLOWED_5XX, (status, response.get_data()[:200])
    outside = [p for p in root.rglob("*") if not p.is_relative_to(root / "cache") and p != root / "outside"]
    assert outside == []


# CI replays one fixed sequence (a red CI must mean a regression, not a lucky draw); a
# developer's run explores new examples each time, more of them with PYPICACHE_FUZZ_EXAMPLES.
FUZZ = settings(max_examples=int(os.environ.get("PYPICACHE_FUZZ_EXAMPLES", 300)), deadline=None,
                suppress_health_check=list(HealthCheck), database=None,
                derandomize=bool(os.environ.get("CI")))


@FUZZ
@given(prefix=st.sampled_from(["/packages/", "/simple/", "/", "/packages/ab/", "/simple/demo/"]),
       parts=path_parts, quoted=st.booleans())
def test_fuzzed_paths(world, prefix, parts, quoted):
    path = prefix + "/".join(parts)
    if quoted:
        path = quote(path, safe="/%?=")
    client, _ = world
    # The path goes in as a server would pass it (PATH_INFO), so that "//x" stays a path
    # instead of the test client reading it as a network-path reference to host "x".
    # WSGI carries the request's bytes decoded as latin-1 (PEP 3333).
    wsgi = path.encode("utf-8", "surrogatepass").decode("latin-1")
    environ = {"PATH_INFO": wsgi.split("?", 1)[0], "QUERY_STRING": wsgi.partition("?")[2]}
    for method in ("GET", "HEAD"):
        check(world, client.open("/", method=method, environ_overrides=environ))


@FUZZ
@given(accept=accepts, byte_range=ranges, if_range=header_text, if_none_match=header_text,
       encoding=header_text, target=st.sampled_from(
           ["/simple/", "/simple/demo/", "/simple/flaky/", "/simple/nothere/",
            "/packages/ab/demo-1.0.tar.gz", "/packages/ab/flaky-1.0.tar.gz", "/healthz"]))
def test_fuzzed_headers(world, accept, byte_range, if_range, if_none_match, encoding, target):
    client, _ = world
    headers = {"Accept": accept, "Range": byte_range, "If-Range": if_range,
               "If-None-Match": if_none_match, "Accept-Encoding": encoding}
    response = client.get(target, headers=headers)
    check(world, response)
    if target == "/packages/ab/demo-1.0.tar.gz" and response.status_code == 200:
        assert response.get_data() == BODY
    if response.status_code == 206 and target.startswith("/packages/ab/demo"):
        match = re.match(r"bytes (\d+)-(\d+)/(\d+)", response.headers["Content-Range"])
        start, end = int(match[1]), int(match[2])
        assert response.get_data() == BODY[start:end + 1]
