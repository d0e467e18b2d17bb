"""Core metadata for every wheel, and ranges of cold files, against the fixture upstream on
127.0.0.1 (which serves ranges, or not, and counts the bytes it sends): the app in process
first, then real gunicorn with real uv and pip resolving and installing through it."""
from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from pypicache.conditional import validator

from .fixture_upstream import Upstream
from .servers import Proxy, clean_environ, installed, pip_install, uv_install
from .wheels import local_header_at, make_wheel, metadata_from_wheel, short_zip64_extra

MIB = 1 << 20
UV = str(Path(sys.executable).with_name("uv"))
JSON = "application/vnd.pypi.simple.v1+json"


@pytest.fixture
def bare(tmp_path):
    """An upstream without .metadata files."""
    server = Upstream(tmp_path / "up", metadata=False).start()
    yield server
    server.stop()


def app_for(make_app, up: Upstream, **settings):
    return make_app(mirror_url=up.index_url, files_url=up.files_url, **settings)


def add(up: Upstream, name: str, version: str = "1.0", **kwargs):
    filename, data = make_wheel(name, version, **kwargs)
    return up.add_file(name, filename, data), data


def files_url(up: Upstream, file) -> str:
    return "/packages" + file.path[len(up.package_loc):]


def listing(client, project: str) -> dict:
    page = client.get(f"/simple/{project}/", headers={"Accept": JSON}).json
    return {entry["filename"]: entry for entry in page["files"]}


def cache_dir(app):
    return app.config["PYPICACHE"].cache_dir


def test_every_wheel_advertises_metadata_and_gets_the_wheels_own(make_app, bare):
    wheel, data = add(bare, "demo", payload=4 * MIB, requires=["beta>=1"])
    bare.add_file("demo", "demo-1.0.tar.gz", b"an sdist")
    app = app_for(make_app, bare, index_ttl=0)
    client = app.test_client()
    files = listing(client, "demo")
    assert files[wheel.filename]["core-metadata"] is True
    assert files[wheel.filename]["data-dist-info-metadata"] is True
    assert "core-metadata" not in files["demo-1.0.tar.gz"]
    html = client.get("/simple/demo/").text
    assert html.count('data-core-metadata="true" data-dist-info-metadata="true"') == 1

    bare.reset_counts()
    answer = client.get(files_url(bare, wheel) + ".metadata")
    assert answer.status_code == 200 and answer.data == metadata_from_wheel(data)
    assert answer.headers["Content-Type"] == "application/octet-stream"
    assert bare.downloads(wheel.filename) == 0  # ranges only, the wheel's body stays upstream
    assert 0 < bare.bytes_sent() <= 64 * 1024 + 4096
    on_disk = cache_dir(app) / "files" / (wheel.path[len(bare.package_loc) + 1:] + ".metadata")
    assert on_disk.read_bytes() == answer.data  # where a front server finds it

    bare.reset_counts()
    again = client.get(files_url(bare, wheel) + ".metadata")
    assert again.data == answer.data and again.headers["X-Cache"] == "hit"
    assert bare.bytes_sent() == 0

    app.extensions["pypicache"].catalog.write_pending()  # as the stats thread does each second
    sha256 = hashlib.sha256(answer.data).hexdigest()
    files = listing(client, "demo")
    assert files[wheel.filename]["core-metadata"] == {"sha256": sha256}
    assert f'data-core-metadata="sha256={sha256}"' in client.get("/simple/demo/").text


UNUSUAL = {"zip64": {"zip64": True}, "stored": {"stored_metadata": True},
           "data directory": {"data_dir": True, "zip64": True},
           "dist-info named otherwise": {"info_name": "Odd.Name"}}


@pytest.mark.parametrize("kind", UNUSUAL)
def test_unusual_wheels_through_the_proxy(make_app, bare, kind):
    wheel, data = add(bare, "odd-name", payload=MIB, **UNUSUAL[kind])
    client = app_for(make_app, bare).test_client()
    client.get("/simple/odd-name/")
    answer = client.get(files_url(bare, wheel) + ".metadata")
    assert answer.status_code == 200 and answer.data == metadata_from_wheel(data)


def test_a_wheel_with_a_big_directory_costs_three_ranges(make_app, bare):
    """The tail, the directory before it, then the member with its local header: requests
    and bytes counted by the upstream."""
    filename, data = make_wheel("many", "1.0", payload=2 * MIB)
    buf = io.BytesIO(data)
    with zipfile.ZipFile(buf, "a") as zf:  # a directory of ~190 KB, before the last 16 KiB
        for index in range(2000):
            zf.writestr(f"many/module_with_a_long_name_{index:05d}.py", b"")
    data = buf.getvalue()
    wheel = bare.add_file("many", filename, data)
    client = app_for(make_app, bare).test_client()
    client.get("/simple/many/")
    bare.reset_counts()
    answer = client.get(files_url(bare, wheel) + ".metadata")
    assert answer.status_code == 200 and answer.data == metadata_from_wheel(data)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        directory = len(data) - 22 - zf.start_dir
        member = zf.getinfo("many-1.0.dist-info/METADATA").compress_size
    assert bare.requests[f"GET {wheel.path}"] == 3 and bare.downloads(wheel.filename) == 0
    assert bare.bytes_sent() <= 16 * 1024 + directory + member + 30 + 64 + 1024


def test_equal_to_the_upstreams_own_metadata(make_app, tmp_path):
    with Upstream(tmp_path / "up", metadata=True) as up:
        wheel, data = add(up, "demo", requires=["beta"])
        client = app_for(make_app, up).test_client()
        listed = client.get("/simple/demo/", headers={"Accept": JSON}).json["files"][0]
        assert listed["core-metadata"] == {"sha256": wheel.metadata_sha256}
        served = client.get(files_url(up, wheel) + ".metadata").data
        assert up.stats()["bytes"][wheel.filename + ".metadata"] == len(served)  # the upstream's
    with Upstream(tmp_path / "bare", metadata=False) as bare:
        wheel, _ = add(bare, "demo", requires=["beta"])
        extracted = app_for(make_app, bare, cache_dir=tmp_path / "c2").test_client().get(
            files_url(bare, wheel) + ".metadata").data
    assert served == extracted == metadata_from_wheel(data)


def test_from_the_cached_wheel_without_asking_the_upstream_for_it(make_app, bare):
    wheel, data = add(bare, "demo", payload=MIB)
    client = app_for(make_app, bare).test_client()
    client.get("/simple/demo/")
    assert client.get(files_url(bare, wheel)).data == data
    bare.reset_counts()
    assert client.get(files_url(bare, wheel) + ".metadata").data == metadata_from_wheel(data)
    assert bare.bytes_sent() == 0


def test_from_the_cached_wheel_with_the_upstream_down(make_app, tmp_path):
    with Upstream(tmp_path / "up", metadata=True) as up:
        wheel, data = add(up, "demo")
        client = app_for(make_app, up).test_client()
        client.get("/simple/demo/")
        assert client.get(files_url(up, wheel)).data == data
    answer = client.get(files_url(up, wheel) + ".metadata")  # the upstream is stopped
    assert answer.status_code == 200 and answer.data == metadata_from_wheel(data)


def test_an_upstream_that_ignores_ranges_gets_one_download(make_app, tmp_path):
    with Upstream(tmp_path / "up", metadata=False, ranges=False) as up:
        wheel, data = add(up, "demo", payload=MIB)
        app = app_for(make_app, up)
        client = app.test_client()
        client.get("/simple/demo/")
        assert client.get(files_url(up, wheel) + ".metadata").data == metadata_from_wheel(data)
        # Two GETs: the range the upstream answered with the whole file, closed at its
        # headers, then the one download, kept (verified) for everyone after.
        assert up.downloads(wheel.filename) == 2
        assert client.get(files_url(up, wheel)).headers["X-Cache"] == "hit"


@pytest.mark.parametrize("damage", ["corrupt", "truncated"])
def test_a_damaged_wheel_gets_a_502_and_nothing_is_cached(make_app, bare, damage):
    filename, data = make_wheel("demo", "1.0", stored_metadata=True)
    if damage == "corrupt":
        at = data.index(b"Summary: fixture")
        data = data[:at] + b"s" + data[at + 1:]
    else:
        data = data[: len(data) - 30]
    wheel = bare.add_file("demo", filename, data)
    app = app_for(make_app, bare)
    client = app.test_client()
    client.get("/simple/demo/")
    answer = client.get(files_url(bare, wheel) + ".metadata")
    assert answer.status_code == 502
    assert "METADATA" in answer.text or "zip" in answer.text
    assert not [p for p in (cache_dir(app) / "files").rglob("*") if p.is_file()]
    assert not list((cache_dir(app) / "tmp").glob("*.part"))


@pytest.mark.parametrize("damage", ["short zip64 extra field", "local header past the end"])
def test_a_malformed_zip_record_is_a_502_not_a_500(make_app, bare, damage):
    """Records a hand-written parser once read with struct and failed on (a 500)."""
    name = "demo-1.0.dist-info/METADATA"
    if damage == "short zip64 extra field":
        filename, data = make_wheel("demo", "1.0", zip64=True)
        data = short_zip64_extra(data, name)
    else:
        filename, data = make_wheel("demo", "1.0")
        data = local_header_at(data, name, len(data) - 10)
    wheel = bare.add_file("demo", filename, data)
    app = app_for(make_app, bare)
    client = app.test_client()
    client.get("/simple/demo/")
    answer = client.get(files_url(bare, wheel) + ".metadata")
    assert answer.status_code == 502, answer.text
    assert not [p for p in (cache_dir(app) / "files").rglob("*") if p.is_file()]
    assert not list((cache_dir(app) / "tmp").glob("*.part"))
    assert bare.downloads(wheel.filename) == 0  # ranges only, as for a sound wheel


def test_a_metadata_hash_the_wheel_does_not_match_is_a_502(make_app, tmp_path):
    """The upstream advertises a hash, answers 404 for the file: the extracted bytes must
    match the advertised hash."""
    with Upstream(tmp_path / "up", metadata=True) as up:
        wheel, _ = add(up, "demo")
        wheel.metadata_sha256 = "0" * 64
        client = app_for(make_app, up).test_client()
        client.get("/simple/demo/")
        wheel.metadata_sha256 = None  # the fixture now answers 404 for its .metadata
        answer = client.get(files_url(up, wheel) + ".metadata")
        assert answer.status_code == 502 and "hash" in answer.text
        assert not list((cache_dir(client.application) / "files").rglob("*.metadata"))


@pytest.mark.parametrize("own_metadata", [True, False])
def test_a_head_of_metadata_fetches_nothing_and_caches_nothing(make_app, tmp_path, own_metadata):
    """As a HEAD of a file: the upstream's HEAD only. Where the upstream has no .metadata, the
    answer is a GET's status without extracting anything, so without a length."""
    with Upstream(tmp_path / "up", metadata=own_metadata) as up:
        wheel, data = add(up, "demo", payload=MIB)
        gone, _ = add(up, "demo", "2.0")
        app = app_for(make_app, up)
        client = app.test_client()
        client.get("/simple/demo/")
        up.reset_counts()
        head = client.head(files_url(up, wheel) + ".metadata")
        assert head.status_code == 200 and head.data == b""
        length = len(metadata_from_wheel(data))
        assert head.content_length == (length if own_metadata else None)
        assert head.headers["Content-Type"] == "application/octet-stream"
        assert {request.split()[0] for request in up.requests} == {"HEAD"}
        assert not [p for p in (cache_dir(app) / "files").rglob("*") if p.is_file()]
        up.fault(gone.filename, "status:404")  # a wheel the upstream lost: what a GET would say
        expected = 200 if own_metadata else 404
        assert client.head(files_url(up, gone) + ".metadata").status_code == expected
        up.fault(gone.filename, "status:503")
        assert client.head(files_url(up, gone) + ".metadata").status_code == (
            200 if own_metadata else 502)
        assert {request.split()[0] for request in up.requests} == {"HEAD"}
        assert client.get(files_url(up, wheel) + ".metadata").data == metadata_from_wheel(data)
        up.reset_counts()
        cached = client.head(files_url(up, wheel) + ".metadata")
        assert (cached.headers["X-Cache"], cached.content_length) == ("hit", length)
        assert not up.requests


# --- ranges of cold files ------------------------------------------------------------------
def test_a_range_of_a_cold_file_comes_from_the_upstream_without_a_download(make_app, bare):
    big = bare.add_file("big", "big-1.0.tar.gz", size=8 * MIB)
    body = big.disk_path.read_bytes()
    app = app_for(make_app, bare)
    client = app.test_client()
    client.get("/simple/big/")
    size = len(body)
    path = big.path[len(bare.package_loc) + 1:]
    url, etag = files_url(bare, big), validator(path, size).etag  # what it will be published with
    for spec, start, stop in [("bytes=-100", size - 100, size), ("bytes=1000-1999", 1000, 2000),
                              (f"bytes={size - 5}-", size - 5, size)]:
        answer = client.get(url, headers={"Range": spec})
        assert answer.status_code == 206 and answer.data == body[start:stop]
        assert answer.headers["Content-Range"] == f"bytes {start}-{stop - 1}/{len(body)}"
        assert answer.headers["ETag"] == etag
    assert client.get(url, headers={"Range": f"bytes={len(body)}-"}).status_code == 416
    assert bare.downloads(big.filename) == 0 and bare.bytes_sent() == 100 + 1000 + 5
    same = client.get(url, headers={"Range": "bytes=0-9", "If-Range": etag})
    assert same.status_code == 206
    assert not list((cache_dir(app) / "files").rglob("*.tar.gz"))
    # If-Range naming other bytes asks for the whole file: that one starts the download.
    whole = client.get(url, headers={"Range": "bytes=0-9", "If-Range": '"other"'})
    assert whole.status_code == 200 and whole.data == body and bare.downloads(big.filename) == 1
    assert client.get(url).headers["ETag"] == etag and client.get(url).headers["X-Cache"] == "hit"


def test_a_range_past_a_download_in_progress_does_not_wait_for_it(make_app, tmp_path):
    with Upstream(tmp_path / "up", throttle=MIB) as up:
        big = up.add_file("big", "big-1.0.tar.gz", size=6 * MIB)
        body = big.disk_path.read_bytes()
        client = app_for(make_app, up).test_client()
        client.get("/simple/big/")
        url = files_url(up, big)
        # The whole file takes six seconds upstream; its tail is answered long before.
        first = client.get(url, buffered=False)
        head = next(iter(first.response))
        tail = client.get(url, headers={"Range": "bytes=-1000"})
        assert tail.status_code == 206 and tail.data == body[-1000:]
        assert tail.headers["X-Cache"] == "range"
        early = client.get(url, headers={"Range": f"bytes=0-{len(head) - 1}"})
        assert early.data == head and early.headers["X-Cache"] == "follower"
        assert up.downloads(big.filename) == 1
        assert not (up.bytes_sent() > len(body))  # the tail came by itself, not after the body
        first.close()


# --- real gunicorn, real uv and pip -------------------------------------------------------
CHAIN = ["chain-a", "chain-b", "chain-c", "chain-d", "chain-e"]


@pytest.fixture
def resolution_set(tmp_path):
    """A big wheel and a five-wheel chain on an upstream without .metadata."""
    up = Upstream(tmp_path / "up", metadata=False).start()
    wheels = [make_wheel("big-wheel", "1.0", requires=[CHAIN[0]], payload=32 * MIB)]
    wheels += [make_wheel(name, "1.0", requires=[following] if following else [])
               for name, following in zip(CHAIN, CHAIN[1:] + [None])]
    for filename, data in wheels:
        up.add_file(filename.split("-1.0")[0], filename, data)
    proxy = Proxy(tmp_path / "cache", up.env(), workers=2).start()
    yield up, proxy, {filename: data for filename, data in wheels}
    proxy.stop()
    up.stop()


def uv_compile(index: str, cache, requirements) -> subprocess.CompletedProcess:
    command = [UV, "pip", "compile", "--no-config",
               "--cache-dir", str(cache), "--index-url", index, "--python", sys.executable,
               str(requirements)]
    return subprocess.run(command, env=clean_environ(), capture_output=True, text=True, timeout=300)


def pip_report(index: str, report, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pip", "install", "--isolated", "--no-cache-dir",
               "--disable-pip-version-check", "--dry-run", "--ignore-installed", "--report",
               str(report), "--index-url", index, *args]
    return subprocess.run(command, env=clean_environ(), capture_output=True, text=True, timeout=300)


@pytest.mark.e2e
def test_uv_and_pip_resolve_cold_reading_little_then_install_with_hashes(resolution_set, tmp_path):
    up, proxy, wheels = resolution_set
    index = f"{proxy.url}/simple"
    requirements = tmp_path / "requirements.in"
    requirements.write_text("big-wheel\n")
    up.reset_counts()
    uv = uv_compile(index, tmp_path / "uv-cold", requirements)
    assert uv.returncode == 0, uv.stderr
    assert all(f"{name}==1.0" in uv.stdout for name in ["big-wheel", *CHAIN])
    pip = pip_report(index, tmp_path / "report.json", "big-wheel")
    assert pip.returncode == 0, pip.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    names = sorted(item["metadata"]["name"] for item in report["install"])
    assert names == sorted(["big-wheel", *CHAIN])
    assert up.bytes_sent() <= MIB and not any(up.downloads(name) for name in wheels)

    up.reset_counts()  # warm: pages and metadata from the proxy's disk
    assert uv_compile(index, tmp_path / "uv-warm", requirements).returncode == 0
    assert pip_report(index, tmp_path / "report2.json", "big-wheel").returncode == 0
    assert up.bytes_sent() == 0 and not up.stats()["requests"]

    locked = tmp_path / "requirements.txt"
    locked.write_text("".join(
        f"{name.split('-1.0')[0]}==1.0 --hash=sha256:{hashlib.sha256(data).hexdigest()}\n"
        for name, data in wheels.items()))
    by_pip = pip_install(index, tmp_path / "t-pip", "--require-hashes", "-r", str(locked))
    assert by_pip.returncode == 0, by_pip.stderr
    by_uv = uv_install(index, tmp_path / "t-uv", tmp_path / "uv-install",
                       "--require-hashes", "-r", str(locked))
    assert by_uv.returncode == 0, by_uv.stderr
    expected = {name.split("-1.0")[0].replace("-", "_"): "1.0" for name in wheels}
    assert installed(tmp_path / "t-pip") == installed(tmp_path / "t-uv") == expected
    assert all(up.downloads(name) == 1 for name in wheels)


@pytest.mark.parametrize("own_metadata", [True, False])
def test_the_upstream_is_asked_for_a_metadata_file_only_when_its_page_names_one(
        make_app, tmp_path, own_metadata):
    """A mirror without .metadata files answered each one 404, hundreds of milliseconds each
    on the real index: where the page gives none, the wheel's own is read at once."""
    with Upstream(tmp_path / "up", metadata=own_metadata) as up:
        wheel, data = add(up, "demo")
        client = app_for(make_app, up).test_client()
        assert listing(client, "demo")[wheel.filename]["core-metadata"]
        up.reset_counts()
        got = client.get(files_url(up, wheel) + ".metadata")
        assert got.status_code == 200 and got.data == metadata_from_wheel(data)
        asked = [request for request in up.requests if request.endswith(".whl.metadata")]
        assert len(asked) == (1 if own_metadata else 0), up.requests
        head = client.head(files_url(up, wheel) + ".metadata")  # cached now: nothing asked
        assert head.status_code == 200 and not [r for r in up.requests if r.startswith("HEAD")]
