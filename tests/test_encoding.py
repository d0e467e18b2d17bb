"""Compressed upstream pages (gzip, deflate) in one process, the upstream mocked with `responses`."""
import gzip
import json
import zlib

import pytest
import responses

from pypicache import encoding
from pypicache.errors import UpstreamError

from .conftest import FILES, MIRROR
from .test_simple import PAGE, SHA


def deflate(data: bytes, wbits: int) -> bytes:
    packer = zlib.compressobj(6, zlib.DEFLATED, wbits)
    return packer.compress(data) + packer.flush()


CODINGS = {
    "gzip": ("gzip", lambda data: gzip.compress(data)),
    "x-gzip": ("x-gzip", lambda data: gzip.compress(data)),
    "deflate": ("deflate", lambda data: deflate(data, zlib.MAX_WBITS)),
    "raw-deflate": ("deflate", lambda data: deflate(data, -zlib.MAX_WBITS)),
    "gzip-two-members": ("gzip", lambda data: gzip.compress(data[:100]) + gzip.compress(data[100:])),
}


def compressed_page(name: str, body: bytes, coding: str, content_type: str = "text/html"):
    return responses.get(f"{MIRROR}/{name}/", body=body, content_type=content_type,
                         headers={"Content-Encoding": coding})


def cached_pages(app) -> list[str]:
    return sorted(p.name for p in (app.config["PYPICACHE"].cache_dir / "pages").glob("*/*"))


@pytest.mark.parametrize("variant", CODINGS)
@responses.activate
def test_compressed_project_pages_are_decoded(client, variant):
    coding, pack = CODINGS[variant]
    compressed_page("demo", pack(PAGE.encode()), coding)
    response = client.get("/simple/demo/?format=json")
    assert response.status_code == 200, response.data
    assert [f["hashes"]["sha256"] for f in response.json["files"]] == [SHA, SHA]
    assert responses.calls[0].request.headers["Accept-Encoding"] == "gzip, deflate"


@responses.activate
def test_compressed_json_page_and_root_list(client):
    body = {"meta": {"api-version": "1.1"}, "name": "demo", "files": [
        {"filename": "demo-1.0.tar.gz", "url": f"{FILES}/ab/demo-1.0.tar.gz", "hashes": {"sha256": SHA}, "size": 7}]}
    compressed_page("demo", gzip.compress(json.dumps(body).encode()), "gzip", "application/vnd.pypi.simple.v1+json")
    assert client.get("/simple/demo/?format=json").json["files"][0]["size"] == 7
    # The root list is decoded as a stream, in chunks far smaller than the whole list.
    root = "".join(f'<a href="/simple/p{n}/">p{n}</a>\n' for n in range(200_000)).encode()
    responses.get(f"{MIRROR}/", body=gzip.compress(root), content_type="text/html",
                  headers={"Content-Encoding": "gzip"})
    assert client.get("/simple/?format=json").json["projects"][199_999] == {"name": "p199999"}


@responses.activate
def test_a_compression_bomb_stops_at_the_page_limit(make_app):
    app = make_app(max_page_size=1 << 20)  # PYPI_MAX_PAGE_SIZE
    client = app.test_client()
    # A readable page followed by 64 MiB of blanks: 64 KiB on the wire.
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = packer.compress(PAGE.encode()) + b"".join(packer.compress(b" " * (1 << 20)) for _ in range(64))
    compressed_page("demo", bomb + packer.flush(), "gzip")
    response = client.get("/simple/demo/")
    assert response.status_code == 502 and b"larger than 1048576 bytes" in response.data
    assert cached_pages(app) == []


def test_decoding_never_yields_more_than_a_step_or_passes_the_limit():
    bomb = gzip.compress(b"\0" * (256 << 20), 1)  # 256 MiB in about 250 KiB
    chunks = (bomb[i:i + 65536] for i in range(0, len(bomb), 65536))
    seen = []
    with pytest.raises(UpstreamError, match="larger than"):
        for out in encoding.decode(chunks, "gzip", limit=4 << 20, step=65536):
            seen.append(len(out))
    assert max(seen) <= 65536 and sum(seen) <= 4 << 20


@pytest.mark.parametrize(
    "body, coding, message",
    [
        (gzip.compress(PAGE.encode())[:-12], "gzip", b"truncated"),
        (b"", "gzip", b"truncated"),
        (b"<html>not compressed</html>", "gzip", b"corrupt"),
        (PAGE.encode(), "br", b"encoding we did not ask for: br"),
        (gzip.compress(gzip.compress(PAGE.encode())), "gzip, gzip", b"encoding we did not ask for"),
    ],
    ids=["truncated", "empty", "not-gzip", "brotli", "twice"],
)
@responses.activate
def test_broken_or_unasked_encodings_are_502_and_cache_nothing(app, client, body, coding, message):
    compressed_page("demo", body, coding)
    response = client.get("/simple/demo/")
    assert response.status_code == 502 and message in response.data
    assert cached_pages(app) == []


@responses.activate
def test_a_truncated_root_list_publishes_nothing(app, client):
    root = "".join(f'<a href="/simple/p{n}/">p{n}</a>\n' for n in range(50_000)).encode()
    responses.get(f"{MIRROR}/", body=gzip.compress(root)[:-100], content_type="text/html",
                  headers={"Content-Encoding": "gzip"})
    assert client.get("/simple/").status_code == 502
    assert cached_pages(app) == []


def test_pages_of_an_upstream_that_gzips_them_as_a_cdn(make_app, tmp_path):
    """The fixture with gzip_pages (the benchmark's upstream): pages arrive gzipped, as from
    the public index or an nginx mirror, and are served as from a plain upstream."""
    from .fixture_upstream import Upstream

    up = Upstream(tmp_path / "up", gzip_pages=True).start()
    try:
        up.add_wheel("alpha", "1.0")
        up.add_history("alpha", 300)
        settings = {"mirror_url": up.index_url, "files_url": up.files_url}
        client = make_app(**settings).test_client()
        page = client.get("/simple/alpha/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        assert page.status_code == 200 and len(page.get_json()["files"]) == 301
        assert up.requests["GET /simple/alpha/"] == 1
    finally:
        up.stop()
