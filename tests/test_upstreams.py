"""Several upstreams with safe precedence (upstreams.py): settings, choice, files, union, health.

In one process with `responses` as the upstreams; tests/test_upstreams_e2e.py runs the same rules
with real index servers and real clients.
"""
import hashlib
import json
import os
import time

import pytest
import requests
import responses

from pypicache import config

CORP, PUB = "http://127.0.0.1:9001", "http://127.0.0.1:9002"
PUB_FILES = "http://127.0.0.1:9003/files"  # the public index keeps its files on another host
INDEXES = f"corp={CORP}/simple pub={PUB}/simple,{PUB_FILES}"
JSON_TYPE = "application/vnd.pypi.simple.v1+json"


def page(name: str, files_url: str, *files: tuple[str, bytes]) -> str:
    entries = [{"filename": filename, "url": f"{files_url}/ab/{filename}",
                "hashes": {"sha256": hashlib.sha256(body).hexdigest()}, "size": len(body)}
               for filename, body in files]
    return json.dumps({"meta": {"api-version": "1.1"}, "name": name, "files": entries})


def serve_page(base: str, name: str, files_url: str, *files, **kwargs):
    body = page(name, files_url, *files)
    return responses.get(f"{base}/simple/{name}/", body=body, content_type=JSON_TYPE, **kwargs)


CORP_WHEEL = ("secret-1.0-py3-none-any.whl", b"the private one")
PUB_WHEEL = ("secret-99.0-py3-none-any.whl", b"the public one, named like the private one")


@pytest.fixture
def several(make_app):
    def make(pins: str = "", **overrides):
        environ = {"PYPI_INDEXES": INDEXES, "PYPI_INDEX_PINS": pins}
        return make_app(environ=environ, mirror_url=None, files_url=None, **overrides)
    return make


@pytest.fixture
def client(several):
    return several().test_client()


def files_of(response) -> list[str]:
    """The file links of a page, without the base a direct client's links start with."""
    return [entry["url"].replace("http://localhost/packages/", "../../packages/")
            for entry in json.loads(response.data)["files"]]


def expire(app, name):
    state = app.config["PYPICACHE"].cache_dir / "pages" / name / "state.json"
    old = time.time() - 10_000
    os.utime(state, (old, old))


# --- settings --------------------------------------------------------------------------------
def test_indexes_in_order_with_their_files_urls():
    settings = config.load({"PYPI_INDEXES": f"{INDEXES} public=default",
                            "PYPI_PACKAGE_LOC": "/pypi/packages",
                            "PYPI_INDEX_PINS": "Secret_Pkg=corp"})
    simple, files = config.pip_default_index()
    assert [(i.name, i.url, i.files_url) for i in settings.indexes] == [
        ("corp", f"{CORP}/simple", f"{CORP}/pypi/packages"),  # origin + PYPI_PACKAGE_LOC
        ("pub", f"{PUB}/simple", PUB_FILES),
        ("public", simple.rstrip("/"), files),
    ]
    assert settings.index_pins == {"secret-pkg": "corp"}


def test_without_indexes_one_nameless_upstream_as_before():
    settings = config.load({"PYPI_MIRROR_URL": f"{CORP}/simple"})
    assert [(i.name, i.url, i.files_url) for i in settings.indexes] == [
        ("", f"{CORP}/simple", f"{CORP}/packages")]
    assert settings.index_pins == {}


@pytest.mark.parametrize("environ, variable", [
    ({"PYPI_INDEXES": f"corp {PUB}/simple"}, "PYPI_INDEXES="),
    ({"PYPI_INDEXES": f"Corp={CORP}/simple"}, "PYPI_INDEXES="),
    ({"PYPI_INDEXES": f"a/b={CORP}/simple"}, "PYPI_INDEXES="),
    ({"PYPI_INDEXES": f"corp={CORP}/simple corp={PUB}/simple"}, "PYPI_INDEXES="),
    ({"PYPI_INDEXES": "corp=ftp://127.0.0.1/simple"}, "PYPI_INDEXES"),
    ({"PYPI_INDEXES": f"corp={CORP}/simple,files"}, "PYPI_INDEXES"),
    ({"PYPI_INDEXES": INDEXES, "PYPI_INDEX_PINS": "secret=nowhere"}, "PYPI_INDEXES"),
    ({"PYPI_INDEXES": INDEXES, "PYPI_INDEX_PINS": "secret"}, "PYPI_INDEX_PINS="),
    ({"PYPI_INDEXES": INDEXES, "PYPI_INDEX_PINS": "-bad-=corp"}, "PYPI_INDEX_PINS="),
    ({"PYPI_INDEXES": INDEXES, "PYPI_INDEX_PINS": "secret=corp Secret=pub"}, "PYPI_INDEX_PINS="),
    ({"PYPI_INDEX_PINS": "secret=corp"}, "PYPI_INDEX_PINS"),
    ({"PYPI_INDEXES": INDEXES, "PYPI_MIRROR_URL": f"{CORP}/simple"}, "PYPI_MIRROR_URL"),
    ({"PYPI_INDEXES": INDEXES, "PYPI_FILES_URL": PUB_FILES}, "PYPI_FILES_URL"),
])
def test_bad_indexes_and_pins_are_named(environ, variable):
    with pytest.raises(config.ConfigError) as caught:
        config.load(environ)
    assert str(caught.value).startswith(variable) and "\n" not in str(caught.value)


# --- which upstream a project comes from -------------------------------------------------------
@responses.activate
def test_the_first_upstream_that_has_a_project_wins_whatever_the_versions(client):
    corp = serve_page(CORP, "secret", f"{CORP}/packages", CORP_WHEEL)
    pub = serve_page(PUB, "secret", PUB_FILES, PUB_WHEEL)
    response = client.get("/simple/secret/", headers={"Accept": JSON_TYPE})
    assert response.status_code == 200
    assert files_of(response) == [f"../../packages/corp/ab/{CORP_WHEEL[0]}"]
    assert corp.call_count == 1 and pub.call_count == 0
    assert PUB_WHEEL[0].encode() not in client.get("/simple/secret/").data


@responses.activate
def test_a_later_upstream_is_asked_after_a_404_only(client):
    corp = responses.get(f"{CORP}/simple/public-lib/", status=404)
    serve_page(PUB, "public-lib", PUB_FILES, ("public_lib-1.0-py3-none-any.whl", b"pub"))
    response = client.get("/simple/public-lib/", headers={"Accept": JSON_TYPE})
    assert files_of(response) == ["../../packages/pub/ab/public_lib-1.0-py3-none-any.whl"]
    assert corp.call_count == 1
    responses.get(f"{CORP}/simple/nowhere/", status=404)
    responses.get(f"{PUB}/simple/nowhere/", status=404)
    assert client.get("/simple/nowhere/").status_code == 404


@pytest.mark.parametrize("fault, status", [
    ({"status": 503}, 502), ({"status": 500}, 502), ({"status": 403}, 502),
    ({"body": requests.ConnectionError()}, 502), ({"body": requests.ReadTimeout()}, 504),
])
@responses.activate
def test_a_failing_upstream_never_hands_its_projects_on(client, fault, status):
    responses.get(f"{CORP}/simple/secret/", **fault)
    pub = serve_page(PUB, "secret", PUB_FILES, PUB_WHEEL)
    assert client.get("/simple/secret/").status_code == status
    assert pub.call_count == 0


# 404: a private index mid-sync; the page stays stale through the grace of a page gone upstream.
@pytest.mark.parametrize("status", [503, 404])
@responses.activate
def test_a_known_project_stays_with_its_upstream_when_that_fails(several, status):
    app = several()
    client = app.test_client()
    serve_page(CORP, "secret", f"{CORP}/packages", CORP_WHEEL)
    pub = serve_page(PUB, "secret", PUB_FILES, PUB_WHEEL)
    fresh = client.get("/simple/secret/")
    expire(app, "secret")
    responses.replace(responses.GET, f"{CORP}/simple/secret/", status=status)
    stale = client.get("/simple/secret/")
    assert stale.status_code == 200 and stale.headers["X-Cache"] == "stale"
    assert stale.data == fresh.data and pub.call_count == 0


@responses.activate
def test_a_project_that_appears_on_an_earlier_upstream_takes_over_at_the_next_refresh(several):
    app = several()
    client = app.test_client()
    corp = responses.get(f"{CORP}/simple/secret/", status=404)
    serve_page(PUB, "secret", PUB_FILES, PUB_WHEEL, headers={"ETag": '"pub-1"'})
    assert PUB_WHEEL[0].encode() in client.get("/simple/secret/").data
    expire(app, "secret")
    responses.remove(corp)
    serve_page(CORP, "secret", f"{CORP}/packages", CORP_WHEEL)
    response = client.get("/simple/secret/")
    assert CORP_WHEEL[0].encode() in response.data and PUB_WHEEL[0].encode() not in response.data
    # the public index's ETag was not sent to the private one
    assert "If-None-Match" not in responses.calls[-1].request.headers


@responses.activate
def test_an_unchanged_page_revalidates_with_its_own_upstream(several):
    app = several()
    client = app.test_client()
    responses.get(f"{CORP}/simple/public-lib/", status=404)
    serve_page(PUB, "public-lib", PUB_FILES, ("public_lib-1.0.tar.gz", b"x"),
               headers={"ETag": '"v1"'})
    client.get("/simple/public-lib/")
    expire(app, "public-lib")
    responses.replace(responses.GET, f"{PUB}/simple/public-lib/", status=304)
    response = client.get("/simple/public-lib/")
    assert response.headers["X-Cache"] == "revalidated"
    assert responses.calls[-1].request.headers["If-None-Match"] == '"v1"'


@responses.activate
def test_a_pinned_project_comes_only_from_its_upstream(several):
    client = several(pins="secret=pub public-lib=corp").test_client()
    corp = serve_page(CORP, "secret", f"{CORP}/packages", CORP_WHEEL)
    serve_page(PUB, "secret", PUB_FILES, PUB_WHEEL)
    assert files_of(client.get("/simple/secret/", headers={"Accept": JSON_TYPE})) == [
        f"../../packages/pub/ab/{PUB_WHEEL[0]}"]
    assert corp.call_count == 0
    responses.get(f"{CORP}/simple/public-lib/", status=404)
    pub = serve_page(PUB, "public-lib", PUB_FILES, ("public_lib-1.0.tar.gz", b"x"))
    assert client.get("/simple/public-lib/").status_code == 404
    assert pub.call_count == 0


# --- files ---------------------------------------------------------------------------------------
@responses.activate
def test_files_carry_their_upstream_and_never_collide(several):
    app = several(pins="secret=pub other=corp")
    client = app.test_client()
    same = ("same-1.0.tar.gz", b"corp's bytes"), ("same-1.0.tar.gz", b"pub's other bytes")
    serve_page(PUB, "secret", PUB_FILES, same[1])
    serve_page(CORP, "other", f"{CORP}/packages", same[0])
    client.get("/simple/secret/")
    client.get("/simple/other/")
    responses.get(f"{CORP}/packages/ab/same-1.0.tar.gz", body=same[0][1])
    responses.get(f"{PUB_FILES}/ab/same-1.0.tar.gz", body=same[1][1])
    assert client.get("/packages/corp/ab/same-1.0.tar.gz").data == same[0][1]
    assert client.get("/packages/pub/ab/same-1.0.tar.gz").data == same[1][1]
    files = app.config["PYPICACHE"].cache_dir / "files"
    assert (files / "corp/ab/same-1.0.tar.gz").read_bytes() == same[0][1]
    assert (files / "pub/ab/same-1.0.tar.gz").read_bytes() == same[1][1]
    deadline = time.monotonic() + 10  # a file's row lands just after its last byte went out
    while len(rows := client.get("/stats.json").json["project_list"]) < 2:
        assert time.monotonic() < deadline, rows
        time.sleep(0.02)
    assert {(p["name"], p["upstream"]) for p in rows} == {("other", "corp"), ("secret", "pub")}


@responses.activate
def test_a_file_of_an_unknown_upstream_is_404_without_any_request(client):
    assert client.get("/packages/elsewhere/ab/same-1.0.tar.gz").status_code == 404
    assert client.get("/packages/corp").status_code == 404
    assert len(responses.calls) == 0


@responses.activate
def test_a_file_is_checked_against_its_own_upstreams_hash(several):
    client = several().test_client()
    serve_page(CORP, "secret", f"{CORP}/packages", CORP_WHEEL)
    client.get("/simple/secret/")
    responses.get(f"{CORP}/packages/ab/{CORP_WHEEL[0]}", body=PUB_WHEEL[1])
    assert client.get(f"/packages/corp/ab/{CORP_WHEEL[0]}").status_code == 502


# --- the root list, health, dashboard ----------------------------------------------------------
@responses.activate
def test_the_root_list_is_the_union_each_name_once(client):
    responses.get(f"{CORP}/simple/", body='<a href="secret/">secret</a><a href="both/">both</a>',
                  content_type="text/html")
    responses.get(f"{PUB}/simple/", body='<a href="Both/">Both</a>\n<a href="numpy/">numpy</a>',
                  content_type="text/html")
    projects = client.get("/simple/", headers={"Accept": JSON_TYPE}).json["projects"]
    assert [p["name"] for p in projects] == ["secret", "both", "numpy"]
    responses.replace(responses.GET, f"{CORP}/simple/", status=503)
    assert client.get("/simple/").status_code == 200  # the union is cached for the TTL


@responses.activate
def test_health_and_dashboard_show_each_upstream(client):
    responses.get(f"{CORP}/simple/secret/", status=503)
    assert client.get("/simple/secret/").status_code == 502
    responses.get(f"{CORP}/simple/public-lib/", status=404)
    serve_page(PUB, "public-lib", PUB_FILES, ("public_lib-1.0.tar.gz", b"x"))
    client.get("/simple/public-lib/")
    upstreams = client.get("/healthz").json["upstreams"]
    assert [(u["name"], u["url"], u["status"]) for u in upstreams] == [
        ("corp", f"{CORP}/simple", "up"), ("pub", f"{PUB}/simple", "up")]
    responses.get(f"{CORP}/simple/another/", status=503)
    assert client.get("/simple/another/").status_code == 502
    by_name = {u["name"]: u for u in client.get("/healthz").json["upstreams"]}
    assert by_name["corp"]["status"] == "down" and "503" in by_name["corp"]["last_error"]
    assert by_name["pub"]["status"] == "up"
    dashboard = client.get("/").data.decode()
    assert 'data-upstream="corp"' in dashboard and 'data-upstream="pub"' in dashboard
    assert "2 upstreams" in dashboard
