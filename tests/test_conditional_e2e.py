"""The questions of tests/test_conditional.py asked, with real servers, on every path a file
request can take: Debian's nginx serving the published file (the front), the app's hit under
gunicorn, a cold file (a range relayed from the upstream, or its download), a download in
progress, and a file in the bucket that nodes share (moto's S3 server). Each must give the
answer the table says, which is the answer nginx gives."""
from __future__ import annotations

import contextlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, given, settings, strategies
from werkzeug.http import parse_date

from pypicache.conditional import Validator, validator

from .fixture_upstream import Upstream
from .servers import Front, Proxy
from .test_conditional import QUESTIONS, SIZE, headers_for
from .test_s3_nodes import cluster

pytestmark = pytest.mark.e2e


def answer(response: requests.Response) -> tuple:
    """What must agree: status, Content-Range, the body of a 200 or 206, and the validators
    (a 304 carries the ETag; Last-Modified is representation metadata, which RFC 9110 15.4.5
    asks a 304 that has an ETag not to repeat, and nginx repeats)."""
    status = response.status_code
    return (status, response.headers.get("Content-Range"),
            response.content if status in (200, 206) else None,
            response.headers.get("ETag") if status in (200, 206, 304) else None,
            response.headers.get("Last-Modified") if status in (200, 206) else None)


def expected(status: int, start: int, stop: int, file: Validator, body: bytes) -> tuple:
    content_range = {206: f"bytes {start}-{stop - 1}/{file.size}", 416: f"bytes */{file.size}"}
    return (status, content_range.get(status), body[start:stop] if status in (200, 206) else None,
            file.etag if status in (200, 206, 304) else None,
            file.last_modified if status in (200, 206) else None)


def ask(url: str, headers: dict[str, str], method: str = "GET") -> requests.Response:
    return requests.request(method, url, headers=headers, timeout=60)


class Published:
    """One file of SIZE bytes behind a proxy and its front; `path` under files/."""

    def __init__(self, up: Upstream, proxy: Proxy, front: Front, name: str = "demo"):
        self.up, self.proxy, self.front = up, proxy, front
        self.file = up.add_file(name, f"{name}-1.0.tar.gz", size=SIZE)
        self.body = self.file.disk_path.read_bytes()
        self.path = self.file.path.split("/packages/", 1)[1]
        assert requests.get(f"{proxy.url}/simple/{name}/", timeout=30).ok

    def url(self, base: str) -> str:
        return f"{base}/packages/{self.path}"

    @property
    def on_disk(self) -> Path:
        return self.proxy.cache_dir / "files" / self.path

    def validators(self) -> Validator:
        """What nginx computes for the published file: its mtime and size."""
        return Validator(int(os.stat(self.on_disk).st_mtime), SIZE)

    def gone(self) -> None:
        """Cold again: the download that published it has let go, and the file is removed."""
        deadline = time.monotonic() + 30
        while list((self.proxy.cache_dir / "tmp").glob("*.part")) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.on_disk.unlink(missing_ok=True)


@contextlib.contextmanager
def fronted(proxy: Proxy):
    front = Front(proxy).start()
    try:
        yield front
    finally:
        front.stop()


@contextlib.contextmanager
def started(proxy: Proxy):
    proxy.start()
    try:
        with fronted(proxy) as front:
            yield front
    finally:
        proxy.stop()


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    work = tmp_path_factory.mktemp("conditional")
    up = Upstream(work / "up").start()
    proxy = Proxy(work / "cache", up.env(), workers=2)
    with started(proxy) as front:
        demo = Published(up, proxy, front)
        assert ask(demo.url(proxy.url), {}).headers["X-Cache"] == "miss"
        yield demo
    up.stop()


def test_the_front_and_a_hit_answer_as_the_table_says(published):
    file, body = published.validators(), published.body
    assert validator(published.path, SIZE) == file  # the app's promise is nginx's ETag
    for name, headers, status, start, stop in QUESTIONS:
        for base in (published.front.url, published.proxy.url):
            got = ask(published.url(base), headers_for(headers, file))
            assert answer(got) == expected(status, start, stop, file, body), (base, name)
            assert got.headers.get("X-Cache") == "hit" or status in (412, 416), (base, name)
        assert got.headers.get("X-Front-Cache") is None  # the last one asked the app itself
    for base in (published.front.url, published.proxy.url):
        for headers in ({}, {"Range": "bytes=0-9"}):  # RFC 9110 14.2: a HEAD ignores Range
            head = ask(published.url(base), headers, "HEAD")
            assert head.status_code == 200 and head.headers["Content-Length"] == str(SIZE)
            assert head.headers["ETag"] == file.etag and "Content-Range" not in head.headers


def test_a_cold_file_answers_as_the_table_says_and_downloads_only_for_all_of_it(published):
    file, body, up = published.validators(), published.body, published.up
    try:
        for name, headers, status, start, stop in QUESTIONS:
            published.gone()
            downloads = up.downloads(published.file.filename)
            got = ask(published.url(published.proxy.url), headers_for(headers, file))
            assert answer(got) == expected(status, start, stop, file, body), name
            assert got.headers["X-Cache"] != "hit", name
            assert up.downloads(published.file.filename) == downloads + (status == 200), name
        published.gone()
        head = ask(published.url(published.proxy.url), {"Range": "bytes=0-9"}, "HEAD")
        assert head.status_code == 200 and head.headers["ETag"] == file.etag
    finally:
        assert ask(published.url(published.proxy.url), {}).content == body  # cached again
    assert published.validators() == file  # published anew with the same validators


def test_the_front_relays_the_apps_answers_for_a_cold_file(published):
    """nginx keeps the descriptors of files it served open for a while, so each question is
    about a file of its own that nginx has never seen; the validators are the app's promise,
    checked against nginx's own once each file is published."""
    cold = [Published(published.up, published.proxy, published.front, name=f"cold{number}")
            for number in range(len(QUESTIONS))]
    for demo, (name, headers, status, start, stop) in zip(cold, QUESTIONS):
        file = validator(demo.path, SIZE)
        got = ask(demo.url(published.front.url), headers_for(headers, file))
        assert answer(got) == expected(status, start, stop, file, demo.body), name
        assert "X-Front-Cache" not in got.headers and got.headers.get("X-Cache") != "hit", name
    for demo in cold:
        assert ask(demo.url(published.front.url), {}).content == demo.body
        assert demo.validators() == validator(demo.path, SIZE)


@settings(max_examples=250, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(strategies.lists(strategies.sampled_from(
    ["0", "9", "10", "299999", "300000", "999999", "-", "-", ",", " ", "a"]), max_size=8),
    strategies.sampled_from(["bytes=", "bytes=", "Bytes=", "bytes= ", "items="]))
def test_any_range_header_gets_the_answer_nginx_gives(published, pieces, unit):
    spec = unit + "".join(pieces)
    front = ask(published.url(published.front.url), {"Range": spec})
    app = ask(published.url(published.proxy.url), {"Range": spec})
    assert answer(app) == answer(front), spec


def test_a_download_in_progress_answers_as_the_table_says(tmp_path):
    # Twelve seconds for the file: every question is asked long before its end, under load too.
    up = Upstream(tmp_path / "up", throttle=SIZE // 12).start()
    proxy = Proxy(tmp_path / "cache", up.env(), workers=2)
    try:
        with started(proxy) as front:
            demo = Published(up, proxy, front)
            with requests.get(demo.url(proxy.url), stream=True, timeout=60) as first:
                assert first.headers["X-Cache"] == "miss"
                head = next(first.iter_content(1024))  # the download is under way
                # What the app promises while downloading; checked against nginx's below.
                modified = parse_date(first.headers["Last-Modified"]).timestamp()
                promised = Validator(int(modified), SIZE)
                assert first.headers["ETag"] == promised.etag
                with ThreadPoolExecutor(len(QUESTIONS)) as pool:  # all before the end
                    answers = list(pool.map(lambda question: ask(
                        demo.url(proxy.url), headers_for(question[1], promised)), QUESTIONS))
                assert head + b"".join(first.iter_content(64 * 1024)) == demo.body
            for (name, _, status, start, stop), got in zip(QUESTIONS, answers):
                assert answer(got) == expected(status, start, stop, promised, demo.body), name
                assert got.headers["X-Cache"] != "hit", name  # asked before the end
            assert up.downloads(demo.file.filename) == 1
            assert demo.validators() == promised  # nginx's validators for what was published
            assert ask(demo.url(front.url), {"If-None-Match": promised.etag}).status_code == 304
    finally:
        up.stop()


def test_a_file_in_the_bucket_answers_as_the_table_says(tmp_path, moto):
    up = Upstream(tmp_path / "up").start()
    try:
        with cluster(tmp_path, moto, up, 2) as (first, second), fronted(first) as front:
            demo = Published(up, first, front)
            assert ask(demo.url(first.url), {}).headers["X-Cache"] == "miss"
            deadline = time.monotonic() + 30
            while not moto.keys(f"{tmp_path.name}/files/") and time.monotonic() < deadline:
                time.sleep(0.1)
            file = demo.validators()
            assert requests.get(f"{second.url}/simple/demo/", timeout=30).ok
            for name, headers, status, start, stop in QUESTIONS:
                got = ask(demo.url(second.url), headers_for(headers, file))
                assert answer(got) == expected(status, start, stop, file, demo.body), name
                assert got.headers["X-Cache"] == "bucket", name
                at_front = ask(demo.url(front.url), headers_for(headers, file))
                assert answer(at_front) == answer(got), name
            assert not (second.cache_dir / "files" / demo.path).exists()
    finally:
        up.stop()


def test_a_client_revalidates_at_the_front_what_the_app_sent_and_the_other_way(published):
    proxy, front = published.proxy, published.front
    demo = Published(published.up, proxy, front, name="revalidated")
    from_app = ask(demo.url(proxy.url), {})  # a miss, streamed by the app
    assert from_app.headers["X-Cache"] == "miss"
    etag, modified = from_app.headers["ETag"], from_app.headers["Last-Modified"]
    at_front = ask(demo.url(front.url), {"If-None-Match": etag})
    assert at_front.status_code == 304 and at_front.headers["X-Front-Cache"] == "disk"
    assert ask(demo.url(front.url), {"If-Modified-Since": modified}).status_code == 304
    resumed = ask(demo.url(front.url), {"Range": "bytes=100-", "If-Range": etag})
    assert resumed.status_code == 206 and resumed.content == demo.body[100:]
    # The other way: what the front sent is current at the app, also once evicted.
    from_front = ask(demo.url(front.url), {})
    assert from_front.headers["X-Front-Cache"] == "disk" and from_front.headers["ETag"] == etag
    assert ask(demo.url(proxy.url), {"If-None-Match": etag}).status_code == 304
    demo.gone()
    assert ask(demo.url(proxy.url), {"If-None-Match": etag}).status_code == 304  # cold
    assert ask(demo.url(proxy.url), {}).headers["ETag"] == etag  # downloaded again
