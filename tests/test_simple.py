"""The Simple API's header rules, in one process with `responses` as the upstream."""
import gzip
import os
import threading
import time

import pytest
import requests
import responses

from pypicache import pagebodies, pages
from pypicache.errors import StorageError
from pypicache.results import DownloadAborted

from .conftest import FILES, MIRROR

SHA = "ab" * 32
PIP_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"
UV_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"
PAGE = f"""<!DOCTYPE html><html><head><meta name="pypi:repository-version" content="1.0"></head><body>
<a href="{FILES}/ab/demo-1.0-py3-none-any.whl#sha256={SHA}" data-requires-python="&gt;=3.8"
   data-core-metadata="sha256={'cd' * 32}">demo-1.0-py3-none-any.whl</a>
<a href="{FILES}/ab/demo-0.9.tar.gz#sha256={SHA}" data-yanked="bad &lt;release&gt;">demo-0.9.tar.gz</a>
</body></html>"""


def upstream_page(mocked=responses, body=PAGE, **kwargs):
    return mocked.get(f"{MIRROR}/demo/", body=body, content_type="text/html", **kwargs)


@pytest.mark.parametrize(
    "accept, expected",
    [
        (None, "text/html"),
        ("*/*", "text/html"),
        ("text/html", "text/html"),
        ("text/*", "text/html"),
        (PIP_ACCEPT, "application/vnd.pypi.simple.v1+json"),
        (UV_ACCEPT, "application/vnd.pypi.simple.v1+json"),
        ("application/vnd.pypi.simple.v1+html", "application/vnd.pypi.simple.v1+html"),
        ("application/vnd.pypi.simple.latest+json", "application/vnd.pypi.simple.v1+json"),
        ("application/vnd.pypi.simple.latest+html", "application/vnd.pypi.simple.v1+html"),
        ("text/html;q=0.5, application/vnd.pypi.simple.v1+json;q=0.4", "text/html"),
        ("application/vnd.pypi.simple.v1+json;q=0, text/html;q=0.1", "text/html"),
        ("application/json", None),
        ("application/vnd.pypi.simple.v2+json", None),
    ],
)
@responses.activate
def test_negotiation(client, accept, expected):
    upstream_page()
    headers = {"Accept": accept} if accept else {}
    response = client.get("/simple/demo/", headers=headers)
    if expected is None:
        assert response.status_code == 406
        assert b"application/vnd.pypi.simple.v1+json" in response.data
        return
    assert response.status_code == 200
    assert response.mimetype == expected
    assert "Accept" in response.headers["Vary"]


@responses.activate
def test_format_query_overrides_accept(client):
    upstream_page()
    assert client.get("/simple/demo/?format=json", headers={"Accept": "text/html"}).mimetype.endswith("json")
    assert client.get("/simple/demo/?format=html", headers={"Accept": PIP_ACCEPT}).mimetype == "text/html"
    assert client.get("/simple/demo/?format=xml").status_code == 406


@pytest.mark.parametrize(
    "query, expected",
    [
        ("application/vnd.pypi.simple.v1%2Bjson", "application/vnd.pypi.simple.v1+json"),
        ("application/vnd.pypi.simple.v1+json", "application/vnd.pypi.simple.v1+json"),  # + as sent
        ("application/vnd.pypi.simple.latest%2Bjson", "application/vnd.pypi.simple.v1+json"),
        ("application/vnd.pypi.simple.v1%2Bhtml", "application/vnd.pypi.simple.v1+html"),
        ("text/html", "text/html"),
        ("application/json", "406"),
    ],
)
@responses.activate
def test_format_query_takes_the_media_types_themselves(client, query, expected):
    upstream_page()
    response = client.get(f"/simple/demo/?format={query}", headers={"Accept": "text/html"})
    assert (response.mimetype if response.status_code == 200 else str(response.status_code)) == expected


@pytest.mark.parametrize(
    "path, location",
    [
        ("/simple/Demo.Pkg_x/", "../demo-pkg-x/"),
        ("/simple/demo", "demo/"),
        ("/simple/Demo", "demo/"),
        ("/simple", "simple/"),
        ("/simple/Demo/?format=json", "../demo/?format=json"),
    ],
)
def test_non_canonical_urls_redirect_permanently(client, path, location):
    response = client.get(path)
    assert response.status_code == 301
    assert response.headers["Location"] == location


@pytest.mark.parametrize("name", ["-bad", ".hidden", "%3Cscript%3E", "a%00b", "x" * 300])
@responses.activate
def test_invalid_project_names_are_400_without_an_upstream_request(client, name):
    assert client.get(f"/simple/{name}/").status_code in (400, 404)
    assert len(responses.calls) == 0


@responses.activate
def test_html_keeps_every_attribute_escaped_exactly_once(client):
    upstream_page()
    html = client.get("/simple/demo/").get_data(as_text=True)
    assert f'href="http://localhost/packages/ab/demo-1.0-py3-none-any.whl#sha256={SHA}"' in html
    assert 'data-requires-python="&gt;=3.8"' in html and "&amp;gt;" not in html
    assert f'data-core-metadata="sha256={"cd" * 32}"' in html
    assert f'data-dist-info-metadata="sha256={"cd" * 32}"' in html
    assert 'data-yanked="bad &lt;release&gt;"' in html
    assert '<meta name="pypi:repository-version" content="1.0">' in html


@responses.activate
def test_json_carries_the_same_and_claims_only_what_it_has(client):
    upstream_page()
    data = client.get("/simple/demo/?format=json").json
    assert data["meta"] == {"api-version": "1.0"}  # no sizes from an HTML upstream: not 1.1
    wheel, sdist = data["files"]
    assert wheel["url"] == "http://localhost/packages/ab/demo-1.0-py3-none-any.whl"
    assert wheel["hashes"] == {"sha256": SHA} and wheel["requires-python"] == ">=3.8"
    assert wheel["core-metadata"] == wheel["data-dist-info-metadata"] == {"sha256": "cd" * 32}
    assert sdist["yanked"] == "bad <release>" and "core-metadata" not in sdist


@responses.activate
def test_json_upstream_gives_pep_700_fields_and_project_status(client):
    body = {
        "meta": {"api-version": "1.4"}, "name": "demo", "versions": ["0.9", "1.0"],
        "project-status": {"status": "deprecated", "reason": "use other"},
        "files": [{"filename": "demo-1.0.tar.gz", "url": f"{FILES}/ab/demo-1.0.tar.gz",
                   "hashes": {"sha256": SHA}, "size": 42, "upload-time": "2025-01-02T03:04:05Z"}],
    }
    responses.get(f"{MIRROR}/demo/", json=body, content_type="application/vnd.pypi.simple.v1+json")
    data = client.get("/simple/demo/", headers={"Accept": PIP_ACCEPT}).json
    assert data["meta"]["api-version"] == "1.4"  # the version that defines project-status
    assert data["versions"] == ["0.9", "1.0"]
    assert data["files"][0]["size"] == 42 and data["files"][0]["upload-time"] == "2025-01-02T03:04:05Z"
    assert data["project-status"] == {"status": "deprecated", "reason": "use other"}
    html = client.get("/simple/demo/").get_data(as_text=True)
    assert '<meta name="pypi:project-status" content="deprecated">' in html
    assert '<meta name="pypi:repository-version" content="1.4">' in html


@responses.activate
def test_project_status_only_in_api_version_1_4(app, client):
    """JSON 1.4 builds on 1.1, which needs every size: without sizes the JSON claims 1.0, and
    carries the status as a key a 1.0 client ignores (PEP 691: clients ignore unknown keys)."""
    page = PAGE.replace("<head>", '<head><meta name="pypi:project-status" content="archived">')
    upstream_page(body=page)
    data = client.get("/simple/demo/?format=json").json
    assert data["meta"] == {"api-version": "1.0"}
    assert data["project-status"] == {"status": "archived"}
    html = client.get("/simple/demo/").get_data(as_text=True)
    assert '<meta name="pypi:repository-version" content="1.4">' in html
    assert '<meta name="pypi:project-status" content="archived">' in html
    expire(app)
    upstream_page(body=PAGE)  # the status lifted: back to the version of what we carry
    assert client.get("/simple/demo/?format=json").json["meta"] == {"api-version": "1.0"}
    assert '<meta name="pypi:repository-version" content="1.0">' in client.get("/simple/demo/").get_data(as_text=True)


@responses.activate
def test_core_metadata_prefers_sha256_among_several_hashes(client):
    body = {"meta": {"api-version": "1.1"}, "name": "demo", "files": [
        {"filename": "demo-1.0-py3-none-any.whl", "url": f"{FILES}/ab/demo-1.0-py3-none-any.whl",
         "hashes": {"sha256": SHA}, "core-metadata": {"blake2b": "ef" * 32, "sha256": "cd" * 32}}]}
    responses.get(f"{MIRROR}/demo/", json=body, content_type="application/vnd.pypi.simple.v1+json")
    html = client.get("/simple/demo/").get_data(as_text=True)
    assert f'data-core-metadata="sha256={"cd" * 32}"' in html and "blake2b" not in html
    assert client.get("/simple/demo/?format=json").json["files"][0]["core-metadata"] ==\
        {"blake2b": "ef" * 32, "sha256": "cd" * 32}


@responses.activate
def test_etag_and_304(client):
    upstream_page()
    first = client.get("/simple/demo/")
    etag = first.headers["ETag"]
    assert etag.startswith('"') and first.headers["Cache-Control"].startswith("max-age=")
    again = client.get("/simple/demo/", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.data == b""
    other = client.get("/simple/demo/?format=json", headers={"If-None-Match": etag})
    assert other.status_code == 200  # another representation, another ETag
    # What a client sends back after nginx in front gzipped the page and weakened its ETag.
    weak = client.get("/simple/demo/", headers={"If-None-Match": f'"x", W/{etag}'})
    assert weak.status_code == 304 and weak.headers["ETag"] == etag


@responses.activate
def test_gzip_refused_with_q_zero_gets_the_identity_body(client):
    upstream_page()
    plain = client.get("/simple/demo/", headers={"Accept-Encoding": "identity"})
    for refusal in ("gzip;q=0", "gzip;q=0, deflate", "*;q=0, identity"):
        response = client.get("/simple/demo/", headers={"Accept-Encoding": refusal})
        assert "Content-Encoding" not in response.headers and response.data == plain.data, refusal
    assert client.get("/simple/demo/", headers={"Accept-Encoding": "*"}).headers["Content-Encoding"] == "gzip"


@responses.activate
def test_gzip_when_accepted(client):
    upstream_page()
    plain = client.get("/simple/demo/")
    packed = client.get("/simple/demo/", headers={"Accept-Encoding": "gzip, deflate"})
    assert packed.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(packed.data) == plain.data
    assert packed.headers["ETag"] != plain.headers["ETag"]
    assert "Accept-Encoding" in packed.headers["Vary"]


@responses.activate
def test_a_miss_is_answered_plain_and_the_gzip_made_for_the_next_client(app, client):
    upstream_page()
    first = client.get("/simple/demo/", headers={"Accept-Encoding": "gzip"})
    assert first.headers["X-Cache"] == "miss" and "Content-Encoding" not in first.headers
    assert first.headers["ETag"].endswith('-html"')  # the ETag of the body it got
    directory = app.config["PYPICACHE"].cache_dir / "pages" / "demo"
    for _ in range(100):  # made in the background, by this worker's thread
        if list(directory.glob("v*.html.gz")):
            break
        time.sleep(0.02)
    second = client.get("/simple/demo/", headers={"Accept-Encoding": "gzip"})
    assert second.headers["Content-Encoding"] == "gzip" and second.headers["X-Cache"] == "hit"
    assert gzip.decompress(second.data) == first.data
    assert len(responses.calls) == 1


def expire(app, name="demo"):
    state = app.config["PYPICACHE"].cache_dir / "pages" / name / "state.json"
    old = time.time() - 10_000
    os.utime(state, (old, old))


@responses.activate
def test_warm_page_makes_no_upstream_request_and_expired_page_revalidates(app, client):
    upstream_page(headers={"ETag": '"v1"'})
    assert client.get("/simple/demo/").headers["X-Cache"] == "miss"
    assert client.get("/simple/demo/").headers["X-Cache"] == "hit"
    assert len(responses.calls) == 1
    expire(app)
    responses.replace(responses.GET, f"{MIRROR}/demo/", status=304)
    response = client.get("/simple/demo/")
    assert response.status_code == 200 and response.headers["X-Cache"] == "revalidated"
    assert responses.calls[-1].request.headers["If-None-Match"] == '"v1"'
    assert client.get("/simple/demo/").headers["X-Cache"] == "hit"


@pytest.mark.parametrize("fault", [{"status": 503}, {"body": requests.ConnectionError()}, {"body": requests.ConnectTimeout()}])
@responses.activate
def test_stale_page_when_the_upstream_fails(app, client, fault):
    upstream_page()
    fresh = client.get("/simple/demo/")
    expire(app)
    responses.replace(responses.GET, f"{MIRROR}/demo/", **fault)
    stale = client.get("/simple/demo/")
    assert stale.status_code == 200 and stale.data == fresh.data
    assert stale.headers["X-Cache"] == "stale"
    assert "110" in stale.headers["Warning"] and int(stale.headers["Age"]) >= 10_000


@pytest.mark.parametrize(
    "fault, status",
    [({"status": 503}, 502), ({"status": 500}, 502), ({"body": requests.ConnectionError()}, 502),
     ({"body": requests.ReadTimeout()}, 504)],
)
@responses.activate
def test_upstream_failure_without_a_copy_is_502_or_504_never_404(client, fault, status):
    responses.get(f"{MIRROR}/demo/", **fault)
    assert client.get("/simple/demo/").status_code == status


@responses.activate
def test_a_page_redirected_off_the_upstream_is_not_there_and_not_followed(client):
    """An index that redirects the projects it lacks to another index (pypiserver's default
    fallback) has said "not here": a 404, and the other origin is never asked."""
    responses.get(f"{MIRROR}/demo/", status=302, headers={"Location": "http://127.0.0.3/simple/demo/"})
    assert client.get("/simple/demo/").status_code == 404
    assert [call.request.url for call in responses.calls] == [f"{MIRROR}/demo/"]


@responses.activate
def test_unknown_project_is_404_and_remembered_briefly(client):
    responses.get(f"{MIRROR}/nothere/", status=404)
    assert client.get("/simple/nothere/").status_code == 404
    assert client.get("/simple/nothere/").status_code == 404
    assert len(responses.calls) == 1


@responses.activate
def test_root_list_in_both_formats(client):
    body = "".join(f'<a href="/simple/p{n}/">P_{n}</a>\n' for n in range(3000))
    responses.get(f"{MIRROR}/", body=body, content_type="text/html")
    html = client.get("/simple/").get_data(as_text=True)
    assert html.count("<a href=") == 3000 and '<a href="p-7/">p-7</a>' in html
    data = client.get("/simple/", headers={"Accept": PIP_ACCEPT}).json
    assert len(data["projects"]) == 3000 and data["projects"][7] == {"name": "p-7"}
    assert len(responses.calls) == 1


@responses.activate
def test_ranges_on_a_cached_file(client):
    body = bytes(range(256)) * 40
    listed = {"meta": {"api-version": "1.0"}, "name": "demo", "files": [
        {"filename": "demo-1.0.tar.gz", "url": f"{FILES}/ab/demo-1.0.tar.gz", "hashes": {}}]}
    responses.get(f"{MIRROR}/demo/", json=listed, content_type="application/vnd.pypi.simple.v1+json")
    responses.get(f"{FILES}/ab/demo-1.0.tar.gz", body=body)
    url = "/packages/ab/demo-1.0.tar.gz"
    full = client.get(url)
    assert full.data == body and full.headers["Accept-Ranges"] == "bytes"
    etag = client.head(url).headers["ETag"]  # none on the miss: the mock gave no length
    cases = {"bytes=0-9": body[:10], "bytes=10000-": body[10000:], "bytes=-5": body[-5:], "bytes=100-199": body[100:200]}
    for header, expected in cases.items():
        part = client.get(url, headers={"Range": header})
        assert (part.status_code, part.data) == (206, expected), header
        assert part.headers["Content-Range"].endswith(f"/{len(body)}")
    assert client.get(url, headers={"Range": "bytes=0-9", "If-Range": etag}).status_code == 206
    assert client.get(url, headers={"Range": "bytes=0-9", "If-Range": '"other"'}).status_code == 200
    unsatisfiable = client.get(url, headers={"Range": "bytes=999999-"})
    assert unsatisfiable.status_code == 416
    assert unsatisfiable.headers["Content-Range"] == f"bytes */{len(body)}"
    head = client.head(url)
    assert head.status_code == 200 and head.data == b"" and head.content_length == len(body)
    assert client.get(url, headers={"If-None-Match": etag}).status_code == 304
    assert client.get(url, headers={"If-None-Match": f"W/{etag}"}).status_code == 304  # weak


@responses.activate
def test_a_refused_range_or_precondition_counts_nowhere(app, client):
    """As the nginx front's log is read (stats/frontlog.py): a 4xx is neither a hit nor a use."""
    listed = {"meta": {"api-version": "1.0"}, "name": "demo", "files": [
        {"filename": "demo-1.0.tar.gz", "url": f"{FILES}/ab/demo-1.0.tar.gz", "hashes": {}}]}
    responses.get(f"{MIRROR}/demo/", json=listed, content_type="application/vnd.pypi.simple.v1+json")
    responses.get(f"{FILES}/ab/demo-1.0.tar.gz", body=b"x" * 100)
    url = "/packages/ab/demo-1.0.tar.gz"
    assert client.get(url).data == b"x" * 100
    stats = app.extensions["pypicache.stats"]
    # The client has every byte once the file is published; the download thread counts the
    # download just after: wait for that count, or it lands in the second flush.
    deadline = time.monotonic() + 10
    stats.recorder.flush()
    while stats.catalog.totals().get("downloads") != 1:
        assert time.monotonic() < deadline, "the download was never counted"
        time.sleep(0.01)
        stats.recorder.flush()
    before = stats.catalog.totals()
    assert client.get(url, headers={"Range": "bytes=100-"}).status_code == 416
    assert client.get(url, headers={"If-Match": '"other"'}).status_code == 412
    stats.recorder.flush()
    assert stats.catalog.totals() == before
    assert client.get(url).headers["X-Cache"] == "hit"
    stats.recorder.flush()
    assert stats.catalog.totals()["requests_hit"] == before.get("requests_hit", 0) + 1


@responses.activate
def test_an_upstream_404_for_a_page_we_have_serves_it_stale_for_a_grace_then_404(app, client, monkeypatch):
    """A mirror in the middle of a sync answers 404 for projects it has: users keep the page."""
    upstream_page(headers={"ETag": '"v1"'})
    fresh = client.get("/simple/demo/")
    expire(app)
    responses.replace(responses.GET, f"{MIRROR}/demo/", status=404)
    for _ in range(2):  # each request asks again, as when the upstream is down
        stale = client.get("/simple/demo/")
        assert (stale.status_code, stale.headers["X-Cache"], stale.data) == (200, "stale", fresh.data)
    assert len(responses.calls) == 3
    # Back upstream (a 304 for our ETag): fresh again, and a later 404 gets a new grace.
    responses.replace(responses.GET, f"{MIRROR}/demo/", status=304)
    assert client.get("/simple/demo/").headers["X-Cache"] == "revalidated"
    expire(app)
    responses.replace(responses.GET, f"{MIRROR}/demo/", status=404)
    assert client.get("/simple/demo/").headers["X-Cache"] == "stale"
    monkeypatch.setattr(pages, "GONE_GRACE", 0.0)  # the grace is over
    assert client.get("/simple/demo/").status_code == 404
    assert client.get("/simple/demo/").status_code == 404  # remembered like any 404
    # Its files are no longer listed: not fetched, and nothing more is asked upstream.
    calls = len(responses.calls)
    assert client.get("/packages/ab/demo-1.0-py3-none-any.whl").status_code == 404
    assert len(responses.calls) == calls


@responses.activate
def test_head_of_an_uncached_file_asks_the_upstreams_head_and_downloads_nothing(app, client):
    url, upstream = "/packages/ab/demo-1.0.tar.gz", f"{FILES}/ab/demo-1.0.tar.gz"
    for name in ("demo", "down"):  # pages listing the files (a file no page lists is a 404)
        listed = {"meta": {"api-version": "1.0"}, "name": name, "files": [
            {"filename": f"{name}-1.0.tar.gz", "url": f"{FILES}/ab/{name}-1.0.tar.gz", "hashes": {}}]}
        responses.get(f"{MIRROR}/{name}/", json=listed, content_type="application/vnd.pypi.simple.v1+json")
    responses.get(f"{MIRROR}/gone/", json={"meta": {"api-version": "1.0"}, "name": "gone", "files": [
        {"filename": "gone-1.0.tar.gz", "url": f"{FILES}/ab/gone-1.0.tar.gz", "hashes": {}}]},
        content_type="application/vnd.pypi.simple.v1+json")
    responses.head(upstream, headers={"Content-Length": "10240"})
    responses.get(upstream, body=bytes(10240))
    head = client.head(url)
    assert (head.status_code, head.content_length, head.data) == (200, 10240, b"")
    assert head.headers["X-Cache"] == "miss" and head.headers["ETag"].startswith('"')
    assert [call.request.method for call in responses.calls if call.request.url.startswith(FILES)] == ["HEAD"]
    cache = app.config["PYPICACHE"].cache_dir
    assert not [p for p in (cache / "files").rglob("*") if p.is_file()]
    assert not list((cache / "tmp").glob("*.part"))
    responses.head(f"{FILES}/ab/gone-1.0.tar.gz", status=404)
    assert client.head("/packages/ab/gone-1.0.tar.gz").status_code == 404
    responses.head(f"{FILES}/ab/down-1.0.tar.gz", status=503)
    assert client.head("/packages/ab/down-1.0.tar.gz").status_code == 502
    # Once cached, a HEAD is answered from disk with the same headers.
    assert client.get(url).data == bytes(10240)
    calls = len(responses.calls)
    cached = client.head(url)
    assert (cached.status_code, cached.content_length, cached.headers["X-Cache"]) == (200, 10240, "hit")
    assert cached.headers["ETag"] == head.headers["ETag"] and len(responses.calls) == calls


@responses.activate
def test_a_page_without_hashes_keeps_the_ones_an_earlier_page_gave(app, client):
    """A mirror that drops hashes now and then must not make downloads go unchecked."""
    upstream_page()
    client.get("/simple/demo/")
    expire(app)
    responses.replace(responses.GET, f"{MIRROR}/demo/", body=PAGE.replace(f"#sha256={SHA}", ""),
                      content_type="text/html")
    page = client.get("/simple/demo/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    assert page.headers["X-Cache"] == "miss"
    assert [f["hashes"] for f in page.json["files"]] == [{"sha256": SHA}] * 2
    responses.get(f"{FILES}/ab/demo-0.9.tar.gz", body=b"not the bytes the first page named")
    try:  # a clean 502 if no byte had gone out yet, else a cut body: never a 200
        status = client.get("/packages/ab/demo-0.9.tar.gz").status_code
    except DownloadAborted:
        status = "cut"
    assert status in (502, "cut")
    assert not (app.config["PYPICACHE"].cache_dir / "files" / "ab" / "demo-0.9.tar.gz").exists()


@responses.activate
def test_a_page_that_cannot_be_refreshed_for_lack_of_disk_is_served_stale(app, client, monkeypatch):
    upstream_page()
    fresh = client.get("/simple/demo/")
    expire(app)
    responses.replace(responses.GET, f"{MIRROR}/demo/", body=PAGE.replace("0.9", "0.8"),
                      content_type="text/html")  # a new page: it must be written

    def full(*args, **kwargs):
        raise StorageError("the cache disk is full")

    monkeypatch.setattr(app.extensions["pypicache"].cachedir, "write_atomic", full)
    stale = client.get("/simple/demo/")
    assert (stale.status_code, stale.headers["X-Cache"], stale.data) == (200, "stale", fresh.data)
    monkeypatch.undo()  # the space is back: the next request refreshes
    assert client.get("/simple/demo/").headers["X-Cache"] == "miss"


@responses.activate
def test_readers_of_a_page_being_refreshed_get_the_old_copy_at_once(app, monkeypatch):
    """Only the reader that takes the page's lock waits for the upstream; the others are
    answered with the copy they have. (A reader used to let go of the lock it had tried and
    wait for it again, and so queued behind whoever took it in between.)"""
    upstream_page()
    app.test_client().get("/simple/demo/")
    expire(app)
    cachedir = app.extensions["pypicache"].cachedir
    unlock = cachedir.unlock

    def slow_unlock(name, fd):  # widens the moment between two looks at the lock
        unlock(name, fd)
        if name == "page:demo":
            time.sleep(0.05)

    def slow_upstream(request):
        time.sleep(0.5)
        return 200, {"Content-Type": "text/html"}, PAGE.replace("0.9", "0.8")

    monkeypatch.setattr(cachedir, "unlock", slow_unlock)
    responses.remove(responses.GET, f"{MIRROR}/demo/")
    responses.add_callback(responses.GET, f"{MIRROR}/demo/", callback=slow_upstream)
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(
        app.test_client().get("/simple/demo/").headers["X-Cache"])) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(answers) == ["miss"] + ["updating"] * 7


@responses.activate
def test_links_are_absolute_for_a_direct_client_and_relative_through_a_proxy(app, client):
    """pip resolves relative links with urljoin (80 ms per 5,000 links, each time it reads the
    page); through a proxy (a TLS front) the scheme and host we see may not be the client's."""
    upstream_page()
    wheel = "packages/ab/demo-1.0-py3-none-any.whl"
    direct = client.get("/simple/demo/?format=json", base_url="http://pypicache:8080")
    assert direct.json["files"][0]["url"] == f"http://pypicache:8080/{wheel}"
    html = client.get("/simple/demo/", base_url="http://pypicache:8080").get_data(as_text=True)
    assert f'href="http://pypicache:8080/{wheel}#sha256=' in html
    other = client.get("/simple/demo/?format=json", base_url="http://127.0.0.1:8080")
    assert other.json["files"][0]["url"] == f"http://127.0.0.1:8080/{wheel}"
    assert other.headers["ETag"] != direct.headers["ETag"]
    for header in ("X-Forwarded-For", "X-Forwarded-Proto", "Forwarded"):
        proxied = client.get("/simple/demo/?format=json", headers={header: "x"})
        assert proxied.json["files"][0]["url"] == f"../../{wheel}", header
    assert len(responses.calls) == 1  # one page upstream, however many bodies


@responses.activate
def test_made_up_host_names_get_their_links_but_fill_no_disk(app, client):
    upstream_page()
    directory = app.config["PYPICACHE"].cache_dir / "pages" / "demo"
    for i in range(20):
        page = client.get("/simple/demo/?format=json", base_url=f"http://host{i}.example")
        assert page.json["files"][0]["url"].startswith(f"http://host{i}.example/packages/")
    assert len(list(directory.glob("v*.json"))) == 1 + pagebodies.BASES_KEPT  # and the relative one
    assert client.get("/simple/demo/", base_url="http://bad'host").status_code in (200, 400)
