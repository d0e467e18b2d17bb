"""PEP 740 provenance through the proxy: parsed into the page model, rendered with the upstream's
URL over http and the proxy's behind https, fetched, checked, cached and served from the cache
(pypicache/provenance.py, pypicache/provenancefetch.py), against the fixture upstream."""
from __future__ import annotations

import base64
import json
import time

import pytest

from pypicache import config, pagereader, provenance, render
from pypicache.errors import IntegrityError, UpstreamError
from pypicache.pagefiles import Body

from .fixture_upstream import Upstream, provenance_document
from .wheels import make_wheel

JSON = "application/vnd.pypi.simple.v1+json"
PAGE = "https://index.example/simple/demo/"
LINKER = pagereader.Linker("https://files.example/packages")
SHA = "ab" * 32


@pytest.fixture
def up(tmp_path):
    server = Upstream(tmp_path / "up", provenance=True).start()
    yield server
    server.stop()


def app_for(make_app, up: Upstream, **settings):
    return make_app(mirror_url=up.index_url, files_url=up.files_url, **settings)


def add(up: Upstream, name: str = "demo", version: str = "1.0", **kwargs):
    filename, data = make_wheel(name, version)
    return up.add_file(name, filename, data, **kwargs), data


def ours(up: Upstream, file) -> str:
    """The file's path under the proxy's /packages/."""
    return file.path[len(up.package_loc) + 1:]


def entries(client, project="demo", **kwargs) -> dict:
    kwargs.setdefault("headers", {"Accept": JSON})
    page = client.get(f"/simple/{project}/", **kwargs).json
    return {entry["filename"]: entry for entry in page["files"]}


def anchors(client, project="demo", **kwargs) -> dict:
    text = client.get(f"/simple/{project}/", headers={"Accept": "text/html"}, **kwargs).text
    found = pagereader._html_links(text).anchors
    return {anchor["href"].rsplit("/", 1)[1].split("#")[0]: anchor for anchor in found}


# --- parsing and rendering -----------------------------------------------------------------
def test_html_and_json_pages_keep_each_files_provenance_url():
    html = ('<a href="https://files.example/packages/aa/demo-1.0.tar.gz#sha256=' + SHA + '" '
            'data-provenance="https://index.example/integrity/demo/1.0/demo-1.0.tar.gz/provenance">'
            'demo-1.0.tar.gz</a>'
            '<a href="https://files.example/packages/bb/demo-1.1.tar.gz" '
            'data-provenance="../../integrity/demo-1.1.tar.gz">demo-1.1.tar.gz</a>'
            '<a href="https://files.example/packages/cc/demo-1.2.tar.gz">demo-1.2.tar.gz</a>'
            '<a href="https://files.example/packages/dd/demo-1.3.tar.gz" '
            'data-provenance="javascript:alert(1)">demo-1.3.tar.gz</a>')
    files = {f.filename: f for f in pagereader.parse_html(html, PAGE, "demo", LINKER).files}
    assert files["demo-1.0.tar.gz"].provenance == (
        "https://index.example/integrity/demo/1.0/demo-1.0.tar.gz/provenance")
    # Relative (the spec wants it fully qualified): resolved against the upstream's page.
    assert files["demo-1.1.tar.gz"].provenance == "https://index.example/integrity/demo-1.1.tar.gz"
    assert files["demo-1.2.tar.gz"].provenance is None  # none given, none claimed
    assert files["demo-1.3.tar.gz"].provenance is None
    page = {"meta": {"api-version": "1.1"}, "name": "demo", "files": [
        {"filename": "demo-1.0.tar.gz", "url": "https://files.example/packages/aa/demo-1.0.tar.gz",
         "hashes": {"sha256": SHA}, "provenance": "https://index.example/p/1"},
        {"filename": "demo-1.1.tar.gz", "url": "https://files.example/packages/bb/demo-1.1.tar.gz",
         "hashes": {"sha256": SHA}, "provenance": None},
        {"filename": "demo-1.2.tar.gz", "url": "https://files.example/packages/cc/demo-1.2.tar.gz",
         "hashes": {"sha256": SHA}}]}
    for body in (json.dumps(page), json.dumps(page, indent=1)):
        parsed = pagereader.parse(body.encode(), JSON, PAGE, "demo", LINKER)
        got = {f.filename: f.provenance for f in parsed.files}
        assert got == {"demo-1.0.tar.gz": "https://index.example/p/1", "demo-1.1.tar.gz": None,
                       "demo-1.2.tar.gz": None}
    # A relative URL in JSON takes the long way (the rewrite as bytes would keep it as it is).
    page["files"][0]["provenance"] = "/p/1"
    document = json.loads(pagereader.document(json.dumps(page).encode(), JSON, PAGE, "demo",
                                              LINKER, {})[0])
    assert document["files"][0]["provenance"] == "https://index.example/p/1"


def test_the_html_carries_data_provenance_only_where_the_page_gave_one():
    html = ('<a href="https://files.example/packages/aa/demo-1.0.tar.gz" data-provenance='
            '"https://index.example/p?a=1&amp;b=2">demo-1.0.tar.gz</a>'
            '<a href="https://files.example/packages/bb/demo-1.1.tar.gz">demo-1.1.tar.gz</a>')
    rendered = render.project_html(pagereader.parse_html(html, PAGE, "demo", LINKER))
    assert 'data-provenance="https://index.example/p?a=1&amp;b=2">demo-1.0.tar.gz<' in rendered
    assert rendered.count("data-provenance") == 1


def test_pointing_at_the_proxy_only_what_it_can_fetch(tmp_path):
    settings = config.load({}, cache_dir=tmp_path, mirror_url="https://index.example/simple",
                           files_url="https://files.example/packages")
    document = json.dumps({"meta": {"api-version": "1.1"}, "name": "demo", "files": [
        {"filename": "a-1.tar.gz", "url": "../../packages/aa/a-1.tar.gz", "hashes": {},
         "provenance": "https://index.example/p/a"},
        {"filename": "b-1.tar.gz", "url": "../../packages/bb/b-1.tar.gz", "hashes": {},
         "provenance": "https://elsewhere.example/p/b"},
        {"filename": "c-1.tar.gz", "url": "../../packages/cc/c-1.tar.gz", "hashes": {}}]}).encode()
    base = "https://pypi.internal/packages/"
    assert provenance.point(document, Body("json"), settings) is document  # plain http: as is
    pointed = json.loads(provenance.point(document, Body("json", provenance=base), settings))
    assert [f.get("provenance") for f in pointed["files"]] == [
        base + "aa/a-1.tar.gz.provenance",  # the upstream's: ours to serve
        "https://elsewhere.example/p/b",  # an origin the proxy may not fetch from: kept
        None]
    html = render.project_html(pagereader.project_of(json.loads(document))).encode()
    pointed = provenance.point(html, Body("html", provenance=base), settings).decode()
    links = {a["href"]: a.get("data-provenance") for a in pagereader._html_links(pointed).anchors}
    assert links == {"../../packages/aa/a-1.tar.gz": base + "aa/a-1.tar.gz.provenance",
                     "../../packages/bb/b-1.tar.gz": "https://elsewhere.example/p/b",
                     "../../packages/cc/c-1.tar.gz": None}


def test_a_provenance_object_must_attest_the_file_it_is_for():
    document = provenance_document("demo-1.0.tar.gz", SHA)
    provenance.check(document, "demo-1.0.tar.gz", SHA)
    provenance.check(document, "demo-1.0.tar.gz", None)  # no hash on the page: shape only
    with pytest.raises(IntegrityError):
        provenance.check(document, "demo-1.0.tar.gz", "cd" * 32)
    broken = json.loads(document)
    broken["attestation_bundles"][0]["attestations"][0]["envelope"]["statement"] = (
        base64.b64encode(b"not json").decode())
    for bad in (b"not json", b"[]", b'{"version": 2, "attestation_bundles": []}',
                json.dumps(broken).encode()):
        with pytest.raises(UpstreamError):
            provenance.check(bad, "demo-1.0.tar.gz", SHA)


# --- through the proxy ---------------------------------------------------------------------
def test_over_plain_http_the_pages_keep_the_upstreams_url(make_app, up):
    signed, _ = add(up)
    unsigned, _ = add(up, version="2.0", provenance=False)
    client = app_for(make_app, up).test_client()
    listed = entries(client)
    assert listed[signed.filename]["provenance"] == up.provenance_url(signed)
    assert "provenance" not in listed[unsigned.filename]  # none given, none claimed
    html = anchors(client)
    assert html[signed.filename]["data-provenance"] == up.provenance_url(signed)
    assert "data-provenance" not in html[unsigned.filename]
    # Through a plain http front too (relative links, the upstream's provenance URL).
    forwarded = entries(client, headers={"Accept": JSON, "X-Forwarded-For": "10.0.0.1"})
    assert forwarded[signed.filename]["provenance"] == up.provenance_url(signed)


def test_behind_an_https_front_the_pages_point_at_the_proxys_copy(make_app, up):
    signed, _ = add(up)
    unsigned, _ = add(up, version="2.0", provenance=False)
    client = app_for(make_app, up).test_client()
    ours_url = f"https://pypi.internal/packages/{ours(up, signed)}.provenance"
    # The WSGI server says https (gunicorn does, for a trusted front's X-Forwarded-Proto).
    front = {"base_url": "https://pypi.internal", "headers": {
        "Accept": JSON, "X-Forwarded-Proto": "https", "X-Forwarded-For": "10.0.0.1"}}
    listed = entries(client, **front)
    assert listed[signed.filename]["provenance"] == ours_url
    assert listed[signed.filename]["url"].startswith("../../packages/")  # links stay relative
    assert "provenance" not in listed[unsigned.filename]
    html = anchors(client, base_url="https://pypi.internal")
    assert html[signed.filename]["data-provenance"] == ours_url
    assert "data-provenance" not in html[unsigned.filename]
    # The plain http body of the same page version is unchanged (its own file, its own ETag).
    assert entries(client)[signed.filename]["provenance"] == up.provenance_url(signed)
    plain = client.get("/simple/demo/", headers={"Accept": JSON})
    secure = client.get("/simple/demo/", **front)
    assert plain.headers["ETag"] != secure.headers["ETag"]
    assert client.get(ours_url.removeprefix("https://pypi.internal")).status_code == 200


def test_the_provenance_is_cached_and_served_with_the_upstream_down(make_app, up):
    signed, _ = add(up)
    app = app_for(make_app, up)
    client = app.test_client()
    path = f"/packages/{ours(up, signed)}.provenance"
    first = client.get(path)
    assert first.status_code == 200 and first.headers["X-Cache"] == "miss"
    assert first.data == provenance_document(signed.filename, signed.sha256)
    cached = app.config["PYPICACHE"].cache_dir / "files" / (ours(up, signed) + ".provenance")
    assert cached.read_bytes() == first.data
    up.stop()
    again = client.get(path)
    assert again.status_code == 200 and again.headers["X-Cache"] == "hit"
    assert again.data == first.data and again.headers["ETag"] == first.headers["ETag"]
    assert client.head(path).status_code == 200


def test_none_claimed_is_a_404_and_asks_the_upstream_nothing(make_app, up):
    unsigned, _ = add(up, provenance=False)
    client = app_for(make_app, up).test_client()
    path = f"/packages/{ours(up, unsigned)}.provenance"
    assert client.head(path).status_code == 404
    assert client.get(path).status_code == 404
    assert not [r for r in up.requests if "/integrity/" in r]
    assert client.get("/packages/aa/bb/nothing-1.0.tar.gz.provenance").status_code == 404


def test_it_comes_along_with_the_files_download(make_app, up):
    signed, data = add(up)
    app = app_for(make_app, up)
    client = app.test_client()
    assert client.get(f"/packages/{ours(up, signed)}").data == data
    cached = app.config["PYPICACHE"].cache_dir / "files" / (ours(up, signed) + ".provenance")
    services = app.extensions["pypicache"]
    deadline = time.monotonic() + 10
    while not (cached.exists() and services.provenance.idle()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert cached.read_bytes() == provenance_document(signed.filename, signed.sha256)
    up.stop()
    assert client.get(f"/packages/{ours(up, signed)}.provenance").headers["X-Cache"] == "hit"


def test_a_failing_provenance_never_fails_the_file(make_app, up):
    signed, data = add(up)
    up.fault(signed.filename + ".provenance", "status:500")
    app = app_for(make_app, up)
    client = app.test_client()
    assert client.get(f"/packages/{ours(up, signed)}").data == data
    services = app.extensions["pypicache"]
    deadline = time.monotonic() + 10
    while not services.provenance.idle() and time.monotonic() < deadline:
        time.sleep(0.02)
    response = client.get(f"/packages/{ours(up, signed)}.provenance")
    assert response.status_code == 502
    cached = app.config["PYPICACHE"].cache_dir / "files" / (ours(up, signed) + ".provenance")
    assert not cached.exists()
    up.clear_faults()
    assert client.get(f"/packages/{ours(up, signed)}.provenance").status_code == 200


def test_a_refused_files_provenance_is_refused(make_app, up, tmp_path):
    signed, _ = add(up, name="evil")
    rules = tmp_path / "policy.toml"
    rules.write_text('[deny]\nprojects = ["evil"]\n')
    client = app_for(make_app, up, policy_file=rules).test_client()
    response = client.get(f"/packages/{ours(up, signed)}.provenance")
    assert response.status_code == 403
    assert not [r for r in up.requests if "/integrity/" in r]


def test_trusted_proxies_are_addresses_or_networks(tmp_path):
    load = lambda value: config.load({"PYPI_TRUSTED_PROXIES": value}, cache_dir=tmp_path)
    assert load("10.0.0.0/8, 192.168.1.2 ::1").trusted_proxies == (
        "10.0.0.0/8", "192.168.1.2", "::1")
    assert load("*").trusted_proxies == ("*",)
    assert config.load({}, cache_dir=tmp_path).trusted_proxies is None  # gunicorn's default
    with pytest.raises(config.ConfigError, match="PYPI_TRUSTED_PROXIES.*'nginx'"):
        load("nginx")


def test_a_page_the_policy_filters_still_points_at_the_proxy(make_app, up, tmp_path):
    signed, _ = add(up)
    held, _ = add(up, version="2.0")
    rules = tmp_path / "policy.toml"
    rules.write_text('[deny]\nprojects = ["demo==2.0"]\n')
    client = app_for(make_app, up, policy_file=rules).test_client()
    listed = entries(client, base_url="https://pypi.internal")
    assert list(listed) == [signed.filename]
    assert listed[signed.filename]["provenance"] == (
        f"https://pypi.internal/packages/{ours(up, signed)}.provenance")
    assert client.get(f"/packages/{ours(up, held)}.provenance").status_code == 403
    assert entries(client)[signed.filename]["provenance"] == up.provenance_url(signed)
