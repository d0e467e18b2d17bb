"""The legacy JSON API (/pypi/<project>/json), in one process: the app's test client before the
fixture upstream on 127.0.0.1, or `responses` where a page must say what the fixture does not.
Every document is checked against our schema of Warehouse's documented fields."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from urllib.parse import urljoin

import jsonschema
import pytest
import responses

from .conftest import FILES, MIRROR
from .fixture_upstream import Upstream
from .wheels import make_wheel

SCHEMA = json.loads((Path(__file__).parent / "schemas" / "legacy-json.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
JSON = "application/vnd.pypi.simple.v1+json"


def valid(document: dict) -> dict:
    """The document, once it passes the schema (every error listed when it does not)."""
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in VALIDATOR.iter_errors(document)]
    assert not errors, errors
    return document


def test_the_schema_is_a_valid_schema_and_refuses_what_warehouse_would_not_send():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert not VALIDATOR.is_valid({"info": {}, "urls": [], "vulnerabilities": []})
    assert not VALIDATOR.is_valid({"urls": [], "vulnerabilities": []})


def add(up: Upstream, name: str, version: str, **kwargs):
    filename, data = make_wheel(name, version, requires=kwargs.pop("requires", ()),
                                requires_python=kwargs.get("requires_python"))
    return up.add_file(name, filename, data, **kwargs)


@pytest.fixture
def demo(upstream):
    """Releases 0.9 (an sdist, yanked), 1.0 and 1.1 (wheels), 2.0rc1 (a pre-release)."""
    files = {
        "0.9": upstream.add_file("Demo.Pkg", "demo_pkg-0.9.tar.gz", b"an old sdist",
                                 yanked="broken", upload_time="2023-01-02T03:04:05.123456Z"),
        "1.0": add(upstream, "Demo.Pkg", "1.0", requires=["beta>=1"], requires_python=">=3.8",
                   upload_time="2024-01-01T00:00:00Z"),
        "1.1": add(upstream, "Demo.Pkg", "1.1", requires=["beta>=2"], requires_python=">=3.9",
                   upload_time="2024-06-01T12:30:00.5Z"),
        "2.0rc1": add(upstream, "Demo.Pkg", "2.0rc1", upload_time="2024-09-01T00:00:00Z"),
    }
    return upstream, files


@pytest.fixture
def app_of(make_app):
    def make(up: Upstream, **settings):
        return make_app(mirror_url=up.index_url, files_url=up.files_url, **settings)
    return make


def metadata_requests(up: Upstream) -> list[str]:
    return [asked for asked in up.requests if asked.endswith(".metadata")]


def test_the_project_document_is_warehouses_made_of_the_page_and_one_release(demo, app_of):
    up, files = demo
    client = app_of(up).test_client()
    response = client.get("/pypi/demo-pkg/json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    document = valid(response.json)
    info = document["info"]
    # The latest final release, not the pre-release; its core metadata, not the page's.
    assert info["version"] == "1.1" and info["_pypicache_source"] == "metadata"
    assert info["name"] == "Demo.Pkg" and info["summary"] == "fixture package Demo.Pkg"
    assert info["requires_dist"] == ["beta>=2"] and info["requires_python"] == ">=3.9"
    assert info["yanked"] is False and info["classifiers"] == [] and info["license"] is None
    assert list(document["releases"]) == ["0.9", "1.0", "1.1", "2.0rc1"]
    assert document["vulnerabilities"] == [] and "last_serial" not in document
    # Only the release info shows had its metadata fetched.
    assert len(metadata_requests(up)) == 1 and "demo_pkg-1.1-" in metadata_requests(up)[0]
    [latest] = document["urls"]
    assert latest == document["releases"]["1.1"][0]
    wanted = files["1.1"]
    assert latest["filename"] == wanted.filename and latest["size"] == wanted.size
    assert latest["digests"] == {"sha256": wanted.sha256} and latest["md5_digest"] is None
    assert latest["packagetype"] == "bdist_wheel" and latest["python_version"] == "py3"
    assert latest["upload_time"] == "2024-06-01T12:30:00"
    assert latest["upload_time_iso_8601"] == "2024-06-01T12:30:00.500000Z"
    assert latest["requires_python"] == ">=3.9" and latest["yanked"] is False
    # The link is ours and serves the file's bytes.
    assert latest["url"].startswith("http://localhost/packages/")
    assert client.get(latest["url"]).data == wanted.disk_path.read_bytes()
    [sdist] = document["releases"]["0.9"]
    assert sdist["packagetype"] == "sdist" and sdist["python_version"] == "source"
    assert sdist["yanked"] is True and sdist["yanked_reason"] == "broken"
    assert sdist["upload_time_iso_8601"] == "2023-01-02T03:04:05.123456Z"


def test_a_release_document_has_no_releases_and_names_its_version_as_packaging_does(demo, app_of):
    up, _ = demo
    client = app_of(up).test_client()
    document = valid(client.get("/pypi/demo-pkg/1.0/json").json)
    assert "releases" not in document
    assert document["info"]["version"] == "1.0"
    assert document["info"]["requires_dist"] == ["beta>=1"]
    assert [f["filename"] for f in document["urls"]] == ["demo_pkg-1.0-py3-none-any.whl"]
    assert document["info"]["release_url"] == "http://localhost/pypi/demo-pkg/1.0/json"
    assert client.get("/pypi/demo-pkg/1.0.0/json").json["urls"] == document["urls"]
    assert client.get("/pypi/demo-pkg/3.0/json").status_code == 404
    assert client.get("/pypi/demo-pkg/not-a-version/json").status_code == 404


def test_a_yanked_or_sdist_only_release_says_so_and_takes_info_from_the_page(demo, app_of):
    up, _ = demo
    client = app_of(up).test_client()
    document = valid(client.get("/pypi/demo-pkg/0.9/json").json)
    info = document["info"]
    assert info["yanked"] is True and info["yanked_reason"] == "broken"
    # An sdist's metadata would need a build: the page's name and version, the rest null.
    assert info["_pypicache_source"] == "page"
    assert info["name"] == "demo-pkg" and info["version"] == "0.9"
    assert info["summary"] is None and info["requires_dist"] is None


def test_non_canonical_names_redirect_as_warehouse_does(demo, app_of):
    client = app_of(demo[0]).test_client()
    for asked, location in [
        ("/pypi/Demo.Pkg/json", "../demo-pkg/json"),
        ("/pypi/demo_pkg/json?x=1", "../demo-pkg/json?x=1"),
        ("/pypi/DEMO-PKG/1.0/json", "../../demo-pkg/1.0/json"),
        ("/pypi/DEMO-PKG/1.0%0D%0AX:%20y/json", "../../demo-pkg/1.0%0D%0AX%3A%20y/json"),
    ]:
        response = client.get(asked)
        assert response.status_code == 301, asked
        assert response.headers["Location"] == location
        target = urljoin("http://localhost" + asked, location)
        assert client.get(target).status_code == (404 if "%0D" in asked else 200), target


def test_what_the_upstream_does_not_have_is_404_and_a_bad_name_400(demo, app_of):
    client = app_of(demo[0]).test_client()
    assert client.get("/pypi/nosuch/json").status_code == 404
    assert client.get("/pypi/nosuch/1.0/json").status_code == 404
    assert client.get("/pypi/-bad-/json").status_code == 400


def test_validators_and_freshness_as_the_simple_pages(demo, app_of):
    up, _ = demo
    client = app_of(up).test_client()
    first = client.get("/pypi/demo-pkg/json")
    etag = first.headers["ETag"]
    assert first.headers["X-Cache"] == "miss" and first.headers["Cache-Control"] == "max-age=600, public"
    assert first.headers["Access-Control-Allow-Origin"] == "*"
    assert "X-PyPI-Last-Serial" not in first.headers  # the fixture's pages give none
    for tag in (etag, "W/" + etag, f'"other", {etag}'):
        again = client.get("/pypi/demo-pkg/json", headers={"If-None-Match": tag})
        assert again.status_code == 304 and again.data == b"" and again.headers["ETag"] == etag
        assert again.headers["X-Cache"] == "hit"
    assert client.get("/pypi/demo-pkg/json", headers={"If-None-Match": '"other"'}).status_code == 200
    # A document of another release, or of the page once it changed, is another ETag.
    assert client.get("/pypi/demo-pkg/1.0/json").headers["ETag"] != etag


def test_a_new_release_upstream_shows_after_the_ttl(demo, app_of):
    up, _ = demo
    client = app_of(up, index_ttl=0).test_client()
    before = client.get("/pypi/demo-pkg/json")
    add(up, "Demo.Pkg", "1.2")
    after = client.get("/pypi/demo-pkg/json")
    assert after.json["info"]["version"] == "1.2" and "1.2" in after.json["releases"]
    assert after.headers["ETag"] != before.headers["ETag"]


def test_through_a_proxy_links_are_relative_to_the_document(demo, app_of):
    up, files = demo
    client = app_of(up).test_client()
    forwarded = {"X-Forwarded-For": "10.0.0.1"}
    for path in ("/pypi/demo-pkg/json", "/pypi/demo-pkg/1.1/json"):
        document = valid(client.get(path, headers=forwarded).json)
        link = document["urls"][0]["url"]
        assert link.startswith("../")
        resolved = urljoin("http://proxy.example" + path, link)
        assert resolved == "http://proxy.example/packages" + files["1.1"].path[len("/packages"):]
        assert urljoin("http://proxy.example" + path, document["info"]["package_url"]) == (
            "http://proxy.example/projects/demo-pkg/")


def test_an_html_only_upstream_gives_no_sizes_or_upload_times(tmp_path, app_of):
    up = Upstream(tmp_path / "html", formats=("html",)).start()
    try:
        add(up, "demo", "1.0", requires=["beta"])
        document = valid(app_of(up).test_client().get("/pypi/demo/json").json)
    finally:
        up.stop()
    [entry] = document["urls"]
    assert entry["size"] is None
    assert entry["upload_time"] is None and entry["upload_time_iso_8601"] is None
    assert entry["digests"]["sha256"]
    assert document["info"]["requires_dist"] == ["beta"]


def test_without_metadata_upstream_it_is_extracted_from_the_wheel(tmp_path, app_of):
    up = Upstream(tmp_path / "bare", metadata=False).start()
    try:
        add(up, "demo", "1.0", requires=["gamma<2"])
        document = valid(app_of(up).test_client().get("/pypi/demo/json").json)
    finally:
        up.stop()
    assert document["info"]["_pypicache_source"] == "metadata"
    assert document["info"]["requires_dist"] == ["gamma<2"]


def test_with_the_upstream_down_cached_pages_answer_stale(demo, app_of):
    up, _ = demo
    client = app_of(up, index_ttl=0).test_client()
    fresh = client.get("/pypi/demo-pkg/json")
    up.stop()
    stale = client.get("/pypi/demo-pkg/json")
    assert stale.status_code == 200 and stale.headers["X-Cache"] == "stale"
    assert "Stale" in stale.headers["Warning"]
    # The release's .metadata was cached: the same document.
    assert stale.data == fresh.data and stale.json["info"]["_pypicache_source"] == "metadata"
    # A release whose metadata never came: info from the page, said so, and not kept.
    other = valid(client.get("/pypi/demo-pkg/1.0/json").json)
    assert other["info"]["_pypicache_source"] == "page"
    assert other["info"]["requires_python"] == ">=3.8" and other["info"]["requires_dist"] is None
    up.start()  # back: the next answer has the metadata
    again = client.get("/pypi/demo-pkg/1.0/json").json
    assert again["info"]["_pypicache_source"] == "metadata"
    assert again["info"]["requires_dist"] == ["beta>=1"]
    # Never cached and the upstream down: 502, as the simple pages.
    up.stop()
    assert client.get("/pypi/other/json").status_code == 502


def page_json(files: list[dict], **extra) -> str:
    return json.dumps({"meta": {"api-version": "1.1", **extra.pop("meta", {})},
                       "name": "demo", "files": files, **extra})


def entry(filename: str, sha256: str = "ab" * 32, **extra) -> dict:
    return {"filename": filename, "url": f"{FILES}/x/{filename}", "hashes": {"sha256": sha256},
            **extra}


@pytest.mark.parametrize("sha256", ["ab" * 32, "AB" * 32])  # rewritten as bytes, or rebuilt
@responses.activate
def test_the_upstreams_serial_is_last_serial_and_pep700_versions_are_releases(client, sha256):
    metadata = b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\nSummary: served\n\n"
    digest = hashlib.sha256(metadata).hexdigest()
    body = page_json([entry("demo-1.0.tar.gz", sha256, size=10, **{"upload-time": None}),
                      entry("demo-1.0-py3-none-any.whl", sha256, size=20,
                            **{"core-metadata": {"sha256": digest}})],
                     meta={"_last-serial": 4242}, versions=["0.5", "1.0"])
    responses.get(f"{MIRROR}/demo/", body=body, content_type=JSON)
    responses.get(f"{FILES}/x/demo-1.0-py3-none-any.whl.metadata", body=metadata)
    response = client.get("/pypi/demo/json")
    document = valid(response.json)
    assert document["info"]["summary"] == "served"
    assert document["last_serial"] == 4242 and response.headers["X-PyPI-Last-Serial"] == "4242"
    again = client.get("/pypi/demo/json")  # kept by the worker: the same answer
    assert again.data == response.data and again.headers["X-PyPI-Last-Serial"] == "4242"
    assert document["releases"]["0.5"] == [] and len(document["releases"]["1.0"]) == 2
    assert document["urls"][0]["digests"] == {"sha256": "ab" * 32}
    # A version the page lists without files has nothing to show.
    assert client.get("/pypi/demo/0.5/json").status_code == 404


@responses.activate
def test_md5_is_passed_on_and_a_page_of_no_releases_is_404(client):
    responses.get(f"{MIRROR}/demo/", content_type="text/html", body=(
        f'<a href="{FILES}/x/demo-1.0.zip#md5={"0f" * 16}">demo-1.0.zip</a>'
        f'<a href="{FILES}/x/demo.exe#sha256={"ab" * 32}">demo.exe</a>'))
    responses.get(f"{MIRROR}/empty/", content_type="text/html", body="<html></html>")
    document = valid(client.get("/pypi/demo/json").json)
    assert [f["filename"] for f in document["urls"]] == ["demo-1.0.zip"]  # no release in a .exe
    assert document["urls"][0]["digests"] == {"md5": "0f" * 16}
    assert document["urls"][0]["md5_digest"] == "0f" * 16
    assert client.get("/pypi/empty/json").status_code == 404
