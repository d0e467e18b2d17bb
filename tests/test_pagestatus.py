"""Upload times from PYPI_UPLOAD_TIME_SOURCE (pypicache/uploadtimes.py) and PEP 792's project
status (pypicache/quarantine.py): their pure parts, then in one process with `responses` as
the upstream and the time source. tests/test_pagestatus_e2e.py runs real servers and clients."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time

import pytest
import requests
import responses

from pypicache import uploadtimes
from pypicache.quarantine import Quarantine, without_files

from .conftest import FILES, MIRROR

SOURCE = "http://127.0.0.2:9/simple"
JSON = "application/vnd.pypi.simple.v1+json"
OLD, NEW = b"old wheel", b"new wheel"
SHA_OLD, SHA_NEW = (hashlib.sha256(data).hexdigest() for data in (OLD, NEW))
WHEEL_OLD, WHEEL_NEW = "demo-1.0-py3-none-any.whl", "demo-2.0-py3-none-any.whl"
OLD_TIME, NEW_TIME = "2024-01-02T03:04:05.000006Z", "2026-12-01T00:00:00Z"


def html_page(*files: tuple[str, str], meta: str = "") -> str:
    links = "".join(f'<a href="{FILES}/ab/{name}#sha256={sha}">{name}</a>\n' for name, sha in files)
    return f"<!DOCTYPE html><html><head>{meta}</head><body>\n{links}</body></html>"


HTML_DEMO = html_page((WHEEL_OLD, SHA_OLD), (WHEEL_NEW, SHA_NEW))


def source_page(*files: tuple[str, str, str | None]) -> dict:
    entries = [{"filename": name, "url": f"https://files.example/{name}",
                "hashes": {"sha256": sha}, "size": 9, "upload-time": uploaded}
               for name, sha, uploaded in files]
    return {"meta": {"api-version": "1.1"}, "name": "demo", "files": entries, "versions": []}


def json_get(client, path: str = "/simple/demo/") -> dict:
    answer = client.get(path, headers={"Accept": JSON})
    assert answer.status_code == 200, answer.data
    return answer.get_json()


def times(document: dict) -> dict[str, str | None]:
    return {entry["filename"]: entry.get("upload-time") for entry in document["files"]}


def expire(app, name: str = "demo") -> None:
    state = app.config["PYPICACHE"].cache_dir / "pages" / name / "state.json"
    old = time.time() - 10_000
    os.utime(state, (old, old))


# --- the pure parts ------------------------------------------------------------------------
def test_a_document_lacks_times_when_a_file_has_none_or_null():
    assert not uploadtimes.lacking(b'{"files":[{"filename":"a","upload-time":"x"}]}')
    assert uploadtimes.lacking(b'{"files":[{"filename":"a"}]}')
    assert uploadtimes.lacking(b'{"files":[{"filename":"a","upload-time": null}]}')
    assert not uploadtimes.lacking(b'{"files":[]}')


def test_times_are_matched_by_sha256_never_by_name():
    source = source_page((WHEEL_OLD, SHA_OLD, OLD_TIME), (WHEEL_NEW, "ee" * 32, NEW_TIME),
                         ("other-1.0.tar.gz", SHA_NEW, "not a time"))
    known = uploadtimes.times_of(source)
    assert known == {SHA_OLD: OLD_TIME, "ee" * 32: NEW_TIME}  # a time PEP 700 does not allow: none
    ours = {"files": [{"filename": WHEEL_OLD, "hashes": {"sha256": SHA_OLD}},
                      {"filename": WHEEL_NEW, "hashes": {"sha256": SHA_NEW}},
                      {"filename": "demo-0.1.tar.gz", "hashes": {"md5": "00" * 16}},
                      {"filename": "demo-0.2.tar.gz", "hashes": {"sha256": "ee" * 32},
                       "upload-time": "2020-01-01T00:00:00Z"}]}
    assert uploadtimes.fill(ours, known) == (1, 2)
    assert [entry.get("upload-time") for entry in ours["files"]] == [
        OLD_TIME, None, None, "2020-01-01T00:00:00Z"]  # the upstream's own time wins


def test_a_quarantined_document_loses_its_files_and_keeps_the_rest():
    page = {"meta": {"api-version": "1.4"}, "name": "demo", "versions": ["1.0"],
            "project-status": {"status": "quarantined", "reason": "malware"},
            "files": [{"filename": WHEEL_OLD, "url": "../../packages/ab/" + WHEEL_OLD,
                       "hashes": {}}]}
    body, paths = without_files(json.dumps(page).encode())
    assert json.loads(body) == page | {"files": []} and paths == ["ab/" + WHEEL_OLD]
    for status in ("archived", "deprecated", "active"):
        assert without_files(json.dumps(page | {"project-status": {"status": status}}).encode()) \
            is None
    assert without_files(b'{"files":[{"filename":"quarantined"}],"name":"x"}') is None


class Bucket:
    def __init__(self):
        self.deleted: list[str] = []

    def delete_files(self, paths):
        self.deleted += paths


def test_removal_takes_the_cached_files_and_their_metadata_from_every_store(app):
    services = app.extensions["pypicache"]
    cachedir = services.cachedir
    for path in ("ab/" + WHEEL_OLD, "ab/" + WHEEL_OLD + ".metadata", "cd/demo-0.1.tar.gz"):
        cachedir.write_file(path, b"x")
    services.catalog.add_cached("cd/demo-0.1.tar.gz", "demo", 1, "00" * 32)
    quarantine = Quarantine(cachedir, services.catalog)
    quarantine.stores.append(bucket := Bucket())
    quarantine.remove("demo", ["ab/" + WHEEL_OLD])
    assert not list(cachedir.files.rglob("*.whl*")) and not list(cachedir.files.rglob("*.gz"))
    assert sorted(bucket.deleted) == sorted(["ab/" + WHEEL_OLD, "ab/" + WHEEL_OLD + ".metadata",
                                             "cd/demo-0.1.tar.gz", "cd/demo-0.1.tar.gz.metadata"])
    assert {row[3] for row in services.catalog.removed()} == {"quarantined"}


# --- upload times, served ------------------------------------------------------------------
@pytest.fixture
def timed(make_app):
    """An HTML-only upstream (HTML_DEMO) and a time source that knows demo 1.0 only."""
    responses.get(f"{MIRROR}/demo/", body=HTML_DEMO, content_type="text/html")
    source = responses.get(f"{SOURCE}/demo/", json=source_page((WHEEL_OLD, SHA_OLD, OLD_TIME)),
                           content_type=JSON)
    app = make_app(upload_time_source=SOURCE)
    return app, app.test_client(), source


@responses.activate
def test_an_html_only_upstream_gets_the_sources_times_in_the_json_pages(timed):
    app, client, source = timed
    document = json_get(client)
    assert times(document) == {WHEEL_OLD: OLD_TIME, WHEEL_NEW: None}
    assert document["meta"]["api-version"] == "1.0"  # still no sizes
    assert source.call_count == 1
    assert responses.calls[-1].request.headers["Accept"] == JSON
    # PEP 700 gives HTML no place for them: the HTML page is what it was.
    html = client.get("/simple/demo/").get_data(as_text=True)
    assert "upload" not in html and WHEEL_NEW in html
    # Cached with the page: a hit asks nobody.
    assert times(json_get(client)) == {WHEEL_OLD: OLD_TIME, WHEEL_NEW: None}
    assert source.call_count == 1


@responses.activate
def test_a_new_version_of_the_page_keeps_the_times_it_had_and_asks_for_the_rest(timed):
    app, client, source = timed
    json_get(client)
    expire(app)
    responses.replace(responses.GET, f"{MIRROR}/demo/",
                      body=HTML_DEMO.replace("</body>", '<a href="x">?</a></body>'),
                      content_type="text/html")
    responses.replace(responses.GET, f"{SOURCE}/demo/", json=source_page(
        (WHEEL_NEW, SHA_NEW, NEW_TIME)), content_type=JSON)
    assert times(json_get(client)) == {WHEEL_OLD: OLD_TIME, WHEEL_NEW: NEW_TIME}


@responses.activate
def test_pages_cached_before_the_source_was_set_are_fetched_anew_once(make_app):
    responses.get(f"{MIRROR}/demo/", body=HTML_DEMO, content_type="text/html",
                  headers={"ETag": '"e1"'})
    responses.get(f"{SOURCE}/demo/", json=source_page((WHEEL_OLD, SHA_OLD, OLD_TIME)),
                  content_type=JSON)
    before = make_app()
    assert times(json_get(before.test_client())) == {WHEEL_OLD: None, WHEEL_NEW: None}
    after = make_app(upload_time_source=SOURCE)
    expire(after)
    client = after.test_client()
    assert times(json_get(client)) == {WHEEL_OLD: OLD_TIME, WHEEL_NEW: None}
    expire(after)
    json_get(client)  # and from then on revalidated, as any page
    page_calls = [c for c in responses.calls if c.request.url == f"{MIRROR}/demo/"]
    assert ["If-None-Match" in c.request.headers for c in page_calls] == [False, False, True]


@responses.activate
def test_the_upstreams_own_times_are_kept_and_the_source_not_asked(make_app):
    page = source_page((WHEEL_OLD, SHA_OLD, "2020-01-01T00:00:00Z"))
    page["files"][0]["url"] = f"{FILES}/ab/{WHEEL_OLD}"
    responses.get(f"{MIRROR}/demo/", json=page, content_type=JSON)
    source = responses.get(f"{SOURCE}/demo/", json=source_page((WHEEL_OLD, SHA_OLD, OLD_TIME)))
    client = make_app(upload_time_source=SOURCE).test_client()
    assert times(json_get(client)) == {WHEEL_OLD: "2020-01-01T00:00:00Z"}
    assert source.call_count == 0


@pytest.mark.parametrize("fault", [{"status": 500}, {"body": requests.ConnectionError()},
                                   {"body": "<html></html>", "content_type": "text/html"},
                                   {"body": "{not json", "content_type": JSON}])
@responses.activate
def test_a_failing_source_never_fails_the_page_and_is_asked_again_next_time(make_app, caplog,
                                                                           fault):
    responses.get(f"{MIRROR}/demo/", body=HTML_DEMO, content_type="text/html",
                  headers={"ETag": '"e1"'})
    responses.get(f"{SOURCE}/demo/", **fault)
    app = make_app(upload_time_source=SOURCE)
    client = app.test_client()
    with caplog.at_level(logging.WARNING, "pypicache"):
        assert times(json_get(client)) == {WHEEL_OLD: None, WHEEL_NEW: None}
    assert "upload time source http://127.0.0.2:9/simple failed for demo" in caplog.text
    expire(app)
    responses.replace(responses.GET, f"{SOURCE}/demo/",
                      json=source_page((WHEEL_OLD, SHA_OLD, OLD_TIME)), content_type=JSON)
    assert times(json_get(client)) == {WHEEL_OLD: OLD_TIME, WHEEL_NEW: None}
    page_calls = [c for c in responses.calls if c.request.url == f"{MIRROR}/demo/"]
    assert "If-None-Match" not in page_calls[-1].request.headers  # fetched anew, not a 304


@responses.activate
def test_a_source_that_takes_too_long_is_a_failing_one(make_app, monkeypatch, caplog):
    monkeypatch.setattr(uploadtimes, "SOURCE_DEADLINE", 0.0)
    responses.get(f"{MIRROR}/demo/", body=HTML_DEMO, content_type="text/html")
    responses.get(f"{SOURCE}/demo/", json=source_page((WHEEL_OLD, SHA_OLD, OLD_TIME)),
                  content_type=JSON)
    app = make_app(upload_time_source=SOURCE)
    with caplog.at_level(logging.WARNING, "pypicache"):
        assert times(json_get(app.test_client())) == {WHEEL_OLD: None, WHEEL_NEW: None}
    assert "took over 0 s" in caplog.text
    state = app.config["PYPICACHE"].cache_dir / "pages" / "demo" / "state.json"
    assert json.loads(state.read_text())["times_retry"] is True


@responses.activate
def test_a_source_without_the_project_leaves_times_unknown_and_the_page_revalidates(make_app):
    responses.get(f"{MIRROR}/demo/", body=HTML_DEMO, content_type="text/html",
                  headers={"ETag": '"e1"'})
    responses.get(f"{SOURCE}/demo/", status=404)
    app = make_app(upload_time_source=SOURCE)
    client = app.test_client()
    assert times(json_get(client)) == {WHEEL_OLD: None, WHEEL_NEW: None}
    expire(app)
    json_get(client)
    page_calls = [c for c in responses.calls if c.request.url == f"{MIRROR}/demo/"]
    assert page_calls[-1].request.headers["If-None-Match"] == '"e1"'


@responses.activate
def test_the_cooldown_judges_by_the_sources_times(make_app, tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text('[cooldown]\nmin-age = "7d"\n')
    responses.get(f"{MIRROR}/demo/", body=HTML_DEMO, content_type="text/html")
    recent = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))
    responses.get(f"{SOURCE}/demo/", json=source_page(
        (WHEEL_OLD, SHA_OLD, OLD_TIME), (WHEEL_NEW, SHA_NEW, recent)), content_type=JSON)
    client = make_app(upload_time_source=SOURCE, policy_file=policy).test_client()
    assert list(times(json_get(client))) == [WHEEL_OLD]
    held = client.get(f"/packages/ab/{WHEEL_NEW}")
    assert held.status_code == 403 and held.headers["X-Pypicache-Policy"].startswith("cooldown")


def test_the_setting_is_read_from_the_environment():
    from pypicache import config

    settings = config.load({"PYPI_UPLOAD_TIME_SOURCE": "https://index.example/simple/"})
    assert settings.upload_time_source == "https://index.example/simple"
    assert config.load({}).upload_time_source is None
    public = config.load({"PYPI_UPLOAD_TIME_SOURCE": "public"}).upload_time_source
    assert public == config.pip_default_index()[0].rstrip("/")
    with pytest.raises(config.ConfigError, match="PYPI_UPLOAD_TIME_SOURCE"):
        config.load({"PYPI_UPLOAD_TIME_SOURCE": "index.example"})


# --- project status, served ----------------------------------------------------------------
def status_page(status: str | None) -> dict:
    page = {"meta": {"api-version": "1.4"}, "name": "demo", "versions": ["1.0"],
            "files": [{"filename": WHEEL_OLD, "url": f"{FILES}/ab/{WHEEL_OLD}",
                       "hashes": {"sha256": SHA_OLD}, "size": len(OLD),
                       "upload-time": OLD_TIME}]}
    if status:
        page["project-status"] = {"status": status, "reason": f"{status} by the admins"}
    return page


@responses.activate
def test_a_quarantined_project_loses_its_files_pages_and_cache_also_when_stale(app, client):
    responses.get(f"{MIRROR}/demo/", json=status_page(None), content_type=JSON)
    responses.get(f"{FILES}/ab/{WHEEL_OLD}", body=OLD)
    assert client.get(f"/packages/ab/{WHEEL_OLD}").data == OLD
    cached = app.config["PYPICACHE"].cache_dir / "files" / "ab" / WHEEL_OLD
    assert cached.is_file()
    expire(app)
    responses.replace(responses.GET, f"{MIRROR}/demo/", json=status_page("quarantined"),
                      content_type=JSON)
    document = json_get(client)
    assert document["files"] == [] and document["versions"] == ["1.0"]
    assert document["project-status"] == {"status": "quarantined",
                                          "reason": "quarantined by the admins"}
    html = client.get("/simple/demo/").get_data(as_text=True)
    assert '<meta name="pypi:project-status" content="quarantined">' in html
    assert "<a " not in html
    assert not cached.exists()
    for path in (f"/packages/ab/{WHEEL_OLD}", f"/packages/ab/{WHEEL_OLD}.metadata"):
        refused = client.get(path)
        assert refused.status_code == 404
        assert b"quarantined" in refused.data
    # The upstream down: the page is served stale, and nothing of the project comes back.
    expire(app)
    responses.replace(responses.GET, f"{MIRROR}/demo/", body=requests.ConnectionError())
    stale = client.get("/simple/demo/", headers={"Accept": JSON})
    assert stale.headers["X-Cache"] == "stale" and stale.get_json()["files"] == []
    assert client.get(f"/packages/ab/{WHEEL_OLD}").status_code == 404
    assert not cached.exists()
    assert not [c for c in responses.calls if c.request.url.startswith(FILES)][1:]


@responses.activate
def test_a_file_that_comes_back_is_removed_when_asked_for_until_the_quarantine_is_lifted(
        app, client):
    responses.get(f"{MIRROR}/demo/", json=status_page("quarantined"), content_type=JSON)
    assert json_get(client)["files"] == []
    services = app.extensions["pypicache"]
    services.cachedir.write_file("ab/" + WHEEL_OLD, OLD)  # a download that ended too late
    assert client.get(f"/packages/ab/{WHEEL_OLD}").status_code == 404
    assert not services.cachedir.file("ab/" + WHEEL_OLD).exists()
    expire(app)
    responses.replace(responses.GET, f"{MIRROR}/demo/", json=status_page("archived"),
                      content_type=JSON)
    responses.get(f"{FILES}/ab/{WHEEL_OLD}", body=OLD)
    assert client.get(f"/packages/ab/{WHEEL_OLD}").data == OLD  # its page asked anew first
    assert "demo" not in services.quarantine.marked()


@pytest.mark.parametrize("status", ["archived", "deprecated"])
@pytest.mark.parametrize("fmt", ["json", "html"])
@responses.activate
def test_archived_and_deprecated_are_carried_through_and_change_nothing_else(client, status, fmt):
    if fmt == "json":
        responses.get(f"{MIRROR}/demo/", json=status_page(status), content_type=JSON)
    else:
        meta = (f'<meta name="pypi:project-status" content="{status}">'
                f'<meta name="pypi:project-status-reason" content="{status} by the admins">')
        responses.get(f"{MIRROR}/demo/", body=html_page((WHEEL_OLD, SHA_OLD), meta=meta),
                      content_type="text/html")
    responses.get(f"{FILES}/ab/{WHEEL_OLD}", body=OLD)
    document = json_get(client)
    assert document["project-status"] == {"status": status, "reason": f"{status} by the admins"}
    assert [entry["filename"] for entry in document["files"]] == [WHEEL_OLD]
    html = client.get("/simple/demo/").get_data(as_text=True)
    assert f'<meta name="pypi:project-status" content="{status}">' in html
    assert '<meta name="pypi:repository-version" content="1.4">' in html
    assert client.get(f"/packages/ab/{WHEEL_OLD}").data == OLD


@pytest.fixture
def bucket(moto, monkeypatch, request):
    from pypicache import s3

    for name, value in moto.env().items():
        monkeypatch.setenv(name, value)
    return s3.S3Storage(f"s3://{moto.bucket}/{request.node.name}")


@responses.activate
def test_a_quarantined_projects_files_go_from_the_bucket_too(bucket, make_app, tmp_path):
    responses.get(f"{MIRROR}/demo/", json=status_page(None), content_type=JSON)
    app = make_app(storage_url=bucket.location)
    client = app.test_client()
    json_get(client)
    upload = tmp_path / "upload"
    for path in ("ab/" + WHEEL_OLD, "ab/" + WHEEL_OLD + ".metadata", "ab/other-1.0.tar.gz"):
        upload.write_bytes(b"x")
        assert bucket.store(path, upload)  # put there by another node
    expire(app)
    responses.replace(responses.GET, f"{MIRROR}/demo/", json=status_page("quarantined"),
                      content_type=JSON)
    assert json_get(client)["files"] == []
    assert [item.path for item in bucket.list()] == ["ab/other-1.0.tar.gz"]
    bucket.store("ab/" + WHEEL_OLD, upload)  # and again, by a node that had not yet looked
    assert client.get(f"/packages/ab/{WHEEL_OLD}").status_code == 404
    assert [item.path for item in bucket.list()] == ["ab/other-1.0.tar.gz"]


@pytest.mark.parametrize("published", [True, False])
def test_a_file_being_downloaded_is_removed_once_its_download_lets_go(app, published):
    services = app.extensions["pypicache"]
    cachedir, path = services.cachedir, "ab/" + WHEEL_OLD
    lock = cachedir.try_lock(path)  # as a download holds it until its publish
    cachedir.write_json(cachedir.announce_path(path), {"part": "x.part", "size": 1})
    if published:
        cachedir.write_file(path, b"x")
    Quarantine(cachedir, services.catalog).remove("demo", [path])
    time.sleep(0.2)
    cachedir.write_file(path, b"x")  # the download ends
    assert cachedir.file(path).exists()
    cachedir.unlock(path, lock)
    deadline = time.monotonic() + 10
    while cachedir.file(path).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not cachedir.file(path).exists()


@responses.activate
def test_a_download_asks_for_a_due_page_first_and_a_quarantine_stops_it(app, client):
    """A lock file names the URL and asks for no page: the page's next version is fetched
    before a download trusts the old one."""
    responses.get(f"{MIRROR}/demo/", json=status_page(None), content_type=JSON)
    upstream_file = responses.get(f"{FILES}/ab/{WHEEL_OLD}", body=OLD)
    json_get(client)
    expire(app)
    responses.replace(responses.GET, f"{MIRROR}/demo/", json=status_page("quarantined"),
                      content_type=JSON)
    assert client.get(f"/packages/ab/{WHEEL_OLD}").status_code == 404
    assert upstream_file.call_count == 0
    assert json_get(client)["files"] == []
