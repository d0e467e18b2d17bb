"""The package route in one process, the upstream mocked with `responses`."""
import errno
import gzip
import hashlib
import json
import time

import pytest
import requests
import responses

from pypicache import download
from pypicache.results import DownloadAborted

from .conftest import FILES, MIRROR

BODY = b"wheel bytes " * 1000
SHA = hashlib.sha256(BODY).hexdigest()
PATH = "ab/cd/demo-1.0.tar.gz"


def page(sha=SHA, size=None):
    entry = {"filename": "demo-1.0.tar.gz", "url": f"{FILES}/{PATH}",
             "hashes": {"sha256": sha} if sha else {}}
    if size is not None:
        entry["size"] = size
    return json.dumps({"meta": {"api-version": "1.1"}, "name": "demo", "files": [entry]})


def list_page(mocked, **kwargs):
    mocked.get(f"{MIRROR}/demo/", body=page(**kwargs), content_type="application/vnd.pypi.simple.v1+json")


def cached(app):
    return sorted(p.relative_to(app.config["PYPICACHE"].cache_dir / "files").as_posix()
                  for p in (app.config["PYPICACHE"].cache_dir / "files").rglob("*") if p.is_file())


def leftovers(app):
    return list((app.config["PYPICACHE"].cache_dir / "tmp").glob("*.part"))


@responses.activate
def test_miss_streams_then_hit_is_served_from_disk(app, client):
    list_page(responses)
    responses.get(f"{FILES}/{PATH}", body=BODY)
    assert client.get("/simple/demo/").status_code == 200
    first = client.get(f"/packages/{PATH}")
    assert first.status_code == 200 and first.data == BODY
    assert first.headers["X-Cache"] == "miss"
    assert cached(app) == [PATH]
    second = client.get(f"/packages/{PATH}")
    assert second.data == BODY and second.headers["X-Cache"] == "hit"
    assert second.headers["Content-Type"] == "application/octet-stream"
    assert "Content-Encoding" not in second.headers  # .tar.gz must not look gzip-encoded
    assert second.headers["Cache-Control"] == "max-age=365000000, immutable, public"
    assert second.headers["ETag"].startswith('"') and not second.headers["ETag"].startswith('W/')
    assert len(responses.calls) == 2  # the page and one download
    assert not leftovers(app)


@responses.activate
def test_a_file_no_page_lists_is_404_and_never_fetched(app, client):
    list_page(responses)
    unlisted = "ab/cd/demo-2.0.tar.gz"
    responses.get(f"{FILES}/{unlisted}", body=BODY)
    responses.get(f"{MIRROR}/nothere/", status=404)
    assert client.get(f"/packages/{unlisted}").status_code == 404  # its page was fetched first
    assert client.get("/packages/ab/cd/nothere-1.0.tar.gz").status_code == 404
    assert [call.request.url for call in responses.calls] == [f"{MIRROR}/demo/", f"{MIRROR}/nothere/"]
    assert client.get("/packages/ab/cd/nothere-2.0.tar.gz").status_code == 404  # remembered
    assert len(responses.calls) == 2 and cached(app) == []


@responses.activate
def test_a_file_listed_without_a_hash_is_checked_by_length_and_recorded(app, client):
    list_page(responses, sha=None)
    responses.get(f"{FILES}/{PATH}", body=BODY)
    assert client.get(f"/packages/{PATH}").data == BODY  # the fetcher got the page first
    catalog = app.extensions["pypicache"].catalog
    deadline = time.monotonic() + 5  # the client is answered at the publish; the row follows
    while not (rows := catalog.cached_files()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [tuple(row) for row in rows] == [(PATH, "demo", len(BODY), SHA)]


@responses.activate
def test_sha256_mismatch_aborts_and_publishes_nothing(app, client):
    list_page(responses, sha="0" * 64)
    responses.get(f"{FILES}/{PATH}", body=BODY)
    client.get("/simple/demo/")
    # A clean 502 if no byte had gone out yet (the last bytes wait for the check), else a cut
    # body (the server closes the connection): never a complete 200.
    try:
        status = client.get(f"/packages/{PATH}").status_code
    except DownloadAborted:
        status = "cut"
    assert status in (502, "cut")
    assert cached(app) == [] and not leftovers(app)


@responses.activate
def test_size_mismatch_with_the_index_is_a_502_before_any_byte(app, client):
    list_page(responses, size=len(BODY) + 1)
    responses.get(f"{FILES}/{PATH}", body=BODY, headers={"Content-Length": str(len(BODY))})
    client.get("/simple/demo/")
    response = client.get(f"/packages/{PATH}")
    assert response.status_code == 502 and cached(app) == []


@responses.activate
def test_head_of_a_file_not_cached_is_the_upstreams_head_checked_against_the_index(app, client):
    list_page(responses, size=len(BODY))
    responses.head(f"{FILES}/{PATH}", headers={"Content-Length": str(len(BODY))})
    head = client.head(f"/packages/{PATH}")
    assert (head.status_code, head.content_length, head.headers["X-Cache"]) == (
        200, len(BODY), "miss")
    longer = {"Content-Length": str(len(BODY) + 1)}
    responses.replace(responses.HEAD, f"{FILES}/{PATH}", headers=longer)
    assert client.head(f"/packages/{PATH}").status_code == 502  # the index's size differs
    methods = [call.request.method for call in responses.calls]
    assert cached(app) == [] and methods == ["GET", "HEAD", "HEAD"]  # nothing downloaded


@pytest.mark.parametrize(
    "kwargs, status",
    [
        ({"status": 404}, 404),
        ({"status": 503}, 502),
        ({"body": requests.ConnectionError("refused")}, 502),
        ({"body": requests.ReadTimeout("slow")}, 504),
        ({"status": 302, "headers": {"Location": "http://127.0.0.2:9/evil"}}, 502),
    ],
)
@responses.activate
def test_upstream_faults_get_clean_status(app, client, kwargs, status):
    list_page(responses)
    responses.get(f"{FILES}/{PATH}", **kwargs)
    response = client.get(f"/packages/{PATH}")
    assert response.status_code == status
    assert cached(app) == [] and not leftovers(app)


@responses.activate
def test_redirect_within_the_upstream_is_followed(app, client):
    list_page(responses)
    responses.get(f"{FILES}/{PATH}", status=302, headers={"Location": f"{FILES}/moved/demo-1.0.tar.gz"})
    responses.get(f"{FILES}/moved/demo-1.0.tar.gz", body=BODY)
    assert client.get(f"/packages/{PATH}").data == BODY


@pytest.mark.parametrize(
    "path", ["../etc/passwd", "%2e%2e/etc/passwd", "ab/%00/x", "ab/x%0d%0a.whl", "a" * 2000, "ab/%ff.whl"]
)
@responses.activate
def test_bad_paths_are_400_without_an_upstream_request(client, path):
    assert client.get(f"/packages/{path}").status_code in (400, 404)
    assert len(responses.calls) == 0


@responses.activate
def test_a_file_labeled_gzip_is_stored_and_served_as_the_bytes_on_the_wire(app, client):
    """Some servers label a .tar.gz `Content-Encoding: gzip`: the file is those bytes."""
    sdist = gzip.compress(BODY)
    responses.get(f"{MIRROR}/demo/", body=page(sha=hashlib.sha256(sdist).hexdigest(), size=len(sdist)),
                  content_type="application/vnd.pypi.simple.v1+json")
    responses.get(f"{FILES}/{PATH}", body=sdist, headers={"Content-Encoding": "gzip"})
    client.get("/simple/demo/")
    miss = client.get(f"/packages/{PATH}")
    assert miss.status_code == 200 and miss.data == sdist and "Content-Encoding" not in miss.headers
    assert responses.calls[-1].request.headers["Accept-Encoding"] == "identity"
    assert cached(app) == [PATH]
    assert (app.config["PYPICACHE"].cache_dir / "files" / PATH).read_bytes() == sdist
    assert client.get(f"/packages/{PATH}").data == sdist


@responses.activate
def test_a_download_that_finds_the_disk_full_is_a_507_for_clients_without_a_byte(app, client,
                                                                                monkeypatch):
    list_page(responses)
    responses.get(f"{FILES}/{PATH}", body=BODY)

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(download, "write_all", full)
    response = client.get(f"/packages/{PATH}")
    assert response.status_code == 507 and b"full" in response.data
    assert cached(app) == [] and not leftovers(app)
    monkeypatch.undo()  # the space is back: the next request downloads afresh
    assert client.get(f"/packages/{PATH}").data == BODY
