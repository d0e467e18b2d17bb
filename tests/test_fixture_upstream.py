"""Fast tests of the fixture upstream itself (tests/fixture_upstream.py, tests/wheels.py)."""
import gzip
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.fixture_upstream import JSON_T, Upstream, accepts_gzip, negotiate
from tests.wheels import make_wheel

ROOT = Path(__file__).resolve().parent.parent
PIP_ACCEPT = f"{JSON_T}, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"


@pytest.fixture(params=["absolute", "relative"])
def up(request, tmp_path):
    u = Upstream(tmp_path / "up", layout=request.param).start()
    u.add_wheel("Alpha", "1.0", requires=["beta>=1"], requires_python=">=3.8")
    u.add_file("alpha", "alpha-0.9.tar.gz", b"sdist bytes", yanked="broken build")
    u.add_file("alpha", "alpha-0.8.tar.gz", b"old sdist", yanked=True)
    yield u
    u.stop()


def test_html_page(up):
    r = requests.get(up.index_url + "/alpha/", headers={"Accept": "text/html"})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    assert r.headers["Vary"] == "Accept" and r.headers["Cache-Control"] == "max-age=600"
    t = r.text
    assert t.startswith("<!DOCTYPE html>") and 'name="pypi:repository-version" content="1.1"' in t
    assert 'data-requires-python="&gt;=3.8"' in t and "&amp;gt;" not in t
    assert 'data-yanked="broken build"' in t and 'data-yanked=""' in t
    w = next(f for f in up._projects["alpha"][1] if f.filename.endswith(".whl"))
    assert f'data-core-metadata="sha256={w.metadata_sha256}"' in t
    assert f'data-dist-info-metadata="sha256={w.metadata_sha256}"' in t
    href = f"{w.url}#sha256={w.sha256}" if up.layout == "absolute" else f"../..{w.path[len('/pypi/web'):]}#sha256="
    assert f'href="{href}' in t
    # the link resolves against the page URL to the file, whose .metadata matches the advertised hash
    url = requests.compat.urljoin(r.url, href.split("#")[0])
    assert url == w.url and hashlib.sha256(requests.get(url).content).hexdigest() == w.sha256
    assert hashlib.sha256(requests.get(url + ".metadata").content).hexdigest() == w.metadata_sha256
    assert up.downloads(w.filename) == 1
    assert requests.head(url).status_code == 200 and up.downloads(w.filename) == 1


def test_json_page_and_root(up):
    r = requests.get(up.index_url + "/alpha/", headers={"Accept": PIP_ACCEPT})
    assert r.headers["Content-Type"] == JSON_T
    d = r.json()
    assert d["meta"]["api-version"] == "1.1" and d["name"] == "alpha" and d["versions"] == ["0.8", "0.9", "1.0"]
    files = {f["filename"]: f for f in d["files"]}
    w = files["alpha-1.0-py3-none-any.whl"]
    assert w["requires-python"] == ">=3.8" and w["yanked"] is False and w["core-metadata"]["sha256"]
    assert w["data-dist-info-metadata"] == w["core-metadata"] and w["size"] > 0 and w["upload-time"]
    assert files["alpha-0.9.tar.gz"]["yanked"] == "broken build" and files["alpha-0.8.tar.gz"]["yanked"] is True
    assert files["alpha-0.9.tar.gz"]["core-metadata"] is False
    wf = next(f for f in up._projects["alpha"][1] if f.filename == w["filename"])
    assert requests.compat.urljoin(r.url, w["url"]) == wf.url and w["hashes"]["sha256"] == wf.sha256
    root = requests.get(up.index_url + "/", headers={"Accept": JSON_T}).json()
    assert root["projects"] == [{"name": "Alpha"}]
    html = requests.get(up.index_url + "/").text
    assert f'<a href="{up.simple_path}/alpha/">Alpha</a>' in html
    r = requests.get(up.index_url + "/ALPHA", allow_redirects=False)
    assert r.status_code == 301 and r.headers["Location"] == up.simple_path + "/alpha/"
    assert requests.get(up.index_url + "/nope/").status_code == 404
    assert up.requests["GET " + up.simple_path + "/nope/"] == 1
    stats = requests.get(up.index_url.rsplit("/simple", 1)[0].rsplit("/pypi/web", 1)[0] + "/_stats").json()
    assert stats["requests"]["GET " + up.simple_path + "/nope/"] == 1


def test_etag_304_and_single_format(tmp_path):
    u = Upstream(tmp_path, formats=("json",), metadata=False).start()
    try:
        u.add_wheel("gamma", "2.0")
        r = requests.get(u.index_url + "/gamma/", headers={"Accept": "text/html"})
        assert r.headers["Content-Type"] == JSON_T and r.json()["files"][0]["core-metadata"] is False
        r2 = requests.get(u.index_url + "/gamma/", headers={"If-None-Match": r.headers["ETag"]})
        assert r2.status_code == 304 and r2.headers["ETag"] == r.headers["ETag"] and not r2.content
        f = u._projects["gamma"][1][0]
        assert requests.get(f.url + ".metadata").status_code == 404
    finally:
        u.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(u.index_url + "/", timeout=1)
    u.restart()
    try:
        assert requests.get(u.index_url + "/gamma/").status_code == 200
    finally:
        u.stop()


def test_pages_are_sent_as_they_are_unless_gzip_pages_is_asked_for(tmp_path):
    u = Upstream(tmp_path).start()
    try:
        u.add_wheel("gamma", "2.0")
        r = requests.get(u.index_url + "/gamma/", headers={"Accept-Encoding": "gzip", "Accept": JSON_T},
                         stream=True)
        assert "Content-Encoding" not in r.headers and r.headers["Vary"] == "Accept"
        assert json.loads(r.raw.read())["name"] == "gamma"
    finally:
        u.stop()


def test_gzip_pages_as_a_cdn_sends_them(tmp_path):
    u = Upstream(tmp_path, gzip_pages=True).start()
    try:
        u.add_wheel("gamma", "2.0")
        u.add_history("delta", 3000)
        for name in ("gamma", "delta"):
            url = u.index_url + f"/{name}/"
            plain = requests.get(url, headers={"Accept-Encoding": "identity", "Accept": JSON_T})
            assert "Content-Encoding" not in plain.headers
            assert plain.headers["Vary"] == "Accept, Accept-Encoding"
            packed = requests.get(url, headers={"Accept-Encoding": "gzip", "Accept": JSON_T},
                                  stream=True)
            raw = packed.raw.read(decode_content=False)
            assert packed.headers["Content-Encoding"] == "gzip"
            assert int(packed.headers["Content-Length"]) == len(raw) < len(plain.content)
            assert gzip.decompress(raw) == plain.content
            assert packed.headers["ETag"] == "W/" + plain.headers["ETag"]
            again = requests.get(url, headers={"Accept-Encoding": "gzip", "Accept": JSON_T,
                                               "If-None-Match": packed.headers["ETag"]})
            assert again.status_code == 304
            refused = requests.get(url, headers={"Accept-Encoding": "gzip;q=0, deflate"})
            assert "Content-Encoding" not in refused.headers
    finally:
        u.stop()


def test_accepts_gzip():
    assert accepts_gzip("gzip, deflate") and accepts_gzip("br;q=1.0, gzip;q=0.8, *;q=0.1")
    assert accepts_gzip("*") and accepts_gzip("x-gzip")
    assert not accepts_gzip("") and not accepts_gzip("identity") and not accepts_gzip("gzip;q=0")
    assert not accepts_gzip("*;q=0") and not accepts_gzip("deflate, *;q=0")


def test_negotiate():
    both = ("html", "json")
    assert negotiate(PIP_ACCEPT, both) == (JSON_T, "json")
    assert negotiate("", both)[1] == "html" and negotiate("*/*", both)[1] == "html"
    assert negotiate("text/html;q=0.2, application/*;q=0.5", both)[1] == "html"
    assert negotiate("text/html;q=0.9, application/vnd.pypi.simple.v1+json", both)[1] == "json"
    assert negotiate("image/png", both) is None and negotiate("image/png", ("json",))[1] == "json"


def test_big_root(tmp_path):
    u = Upstream(tmp_path, layout="relative").start()
    try:
        u.add_wheel("zeta", "1.0")
        u.add_projects(["Extra.Name"])
        u.big_root(25_000)
        for accept in ("text/html", JSON_T):
            r = requests.get(u.index_url + "/", headers={"Accept": accept})
            assert len(r.content) == int(r.headers["Content-Length"])
            if accept == JSON_T:
                names = [p["name"] for p in r.json()["projects"]]
                assert names[:2] == ["Extra.Name", "zeta"] and len(names) == 25_002
            else:
                assert r.text.count("<a ") == 25_002
    finally:
        u.stop()


def test_generated_file(tmp_path):
    u = Upstream(tmp_path, throttle=None).start()
    try:
        t0 = time.monotonic()
        f = u.add_file("big", "big-1.0-py3-none-any.whl", size=32 << 20)
        assert time.monotonic() - t0 < 3 and f.disk_path.stat().st_size == 32 << 20
        body = requests.get(f.url).content
        assert len(body) == f.size and hashlib.sha256(body).hexdigest() == f.sha256
        assert requests.get(f.url + ".metadata").text.startswith("Metadata-Version")
        small = u.add_file("small", "small-1.0.tar.gz", size=150_000)
        u.throttle = 1_000_000
        t0 = time.monotonic()
        assert len(requests.get(small.url).content) == 150_000
        elapsed = time.monotonic() - t0
        assert 0.14 < elapsed < 1.0, elapsed
    finally:
        u.stop()


def test_faults(tmp_path):
    u = Upstream(tmp_path).start()
    try:
        f = u.add_file("f", "f-1.0.tar.gz", size=200_000)

        def get(**kw):
            got, err = bytearray(), None
            try:
                with requests.get(f.url, stream=True, allow_redirects=False, **kw) as r:
                    for c in r.iter_content(65536):
                        got += c
            except requests.RequestException as e:
                err = e
            return r, bytes(got), err

        for kind in ("truncate", "chunked-truncate"):
            u.fault(f.filename, kind)
            r, body, err = get()
            assert err is not None and len(body) < f.size, kind
        u.fault(f.filename, "corrupt")
        r, body, err = get()
        assert err is None and len(body) == f.size and hashlib.sha256(body).hexdigest() != f.sha256
        u.fault(f.filename, "chunked")
        r, body, err = get()
        assert "Content-Length" not in r.headers and hashlib.sha256(body).hexdigest() == f.sha256
        u.fault(f.filename, "status:503")
        assert get()[0].status_code == 503
        u.fault(f.filename, "redirect:http://127.0.0.1:9/x")
        r = get()[0]
        assert r.status_code == 302 and r.headers["Location"] == "http://127.0.0.1:9/x"
        u.fault(f.filename, "slow:0.2")
        t0 = time.monotonic()
        assert len(get()[1]) == f.size and time.monotonic() - t0 >= 0.2
        u.fault(f.filename, "blackhole")
        with pytest.raises(requests.exceptions.ReadTimeout):
            requests.get(f.url, timeout=(1, 1))
        u.clear_faults()
        assert len(get()[1]) == f.size and u.downloads(f.filename) == 9
        u.add_wheel("p", "1.0")
        u.project_fault("P", "status:503")
        assert requests.get(u.index_url + "/p/").status_code == 503
        u.project_fault("p", "redirect:/elsewhere/")
        assert requests.get(u.index_url + "/p/", allow_redirects=False).headers["Location"] == "/elsewhere/"
    finally:
        u.stop()


def test_make_wheel_installs_with_pip(tmp_path):
    u = Upstream(tmp_path / "up").start()
    try:
        u.add_wheel("alpha", "1.0", requires=["beta>=1.0"])
        u.add_wheel("beta", "1.1", requires=["gamma"])
        u.add_history("beta", 600)  # pip walks a big page and still picks the real release
        u.add_wheel("gamma", "0.3", requires_python=">=3.8")
        assert make_wheel("Foo.Bar", "1.0")[0] == "foo_bar-1.0-py3-none-any.whl"
        target = tmp_path / "target"
        env = dict(os.environ, PIP_CONFIG_FILE="/dev/null")
        p = subprocess.run([sys.executable, "-m", "pip", "install", "--isolated", "--no-cache-dir",
                            "--disable-pip-version-check", "--index-url", u.index_url,
                            "--target", str(target), "alpha"], env=env, capture_output=True, text=True,
                           timeout=120, cwd=ROOT)
        assert p.returncode == 0, p.stdout + p.stderr
        for name, ver in (("alpha", "1.0"), ("beta", "1.1"), ("gamma", "0.3")):
            assert f'__version__ = "{ver}"' in (target / name / "__init__.py").read_text()
            assert (target / f"{name}-{ver}.dist-info" / "METADATA").exists()
    finally:
        u.stop()


def _timed_get(url, results, key, **kw):
    t0 = time.monotonic()
    r = requests.get(url, timeout=30, **kw)
    results[key] = (r, time.monotonic() - t0)


def _together(calls):
    """Run (url, key, kwargs) GETs at once; key -> (response, seconds)."""
    results = {}
    threads = [threading.Thread(target=_timed_get, args=(url, results, key), kwargs=kw)
               for url, key, kw in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_delay_holds_every_answer_and_changes_while_running(tmp_path):
    u = Upstream(tmp_path).start()
    try:
        w = u.add_wheel("slow", "1.0")
        u.set_delay(2.0)
        got = _together([(u.index_url + "/slow/", "page", {}), (w.url, "file", {}),
                         (w.url + ".metadata", "metadata", {}), (u.index_url + "/", "root", {})])
        for key, (r, seconds) in got.items():
            assert r.status_code == 200 and seconds >= 2.0, (key, seconds)
        assert hashlib.sha256(got["file"][0].content).hexdigest() == w.sha256
        u.set_delay(0)
        t0 = time.monotonic()
        assert requests.get(u.index_url + "/slow/").status_code == 200
        assert time.monotonic() - t0 < 2.0
        u.set_delay(30)
        failed = []

        def waiting():
            try:
                requests.get(w.url, timeout=60)
            except requests.ConnectionError as error:  # cut by the stop below, as it should
                failed.append(error)

        waiter = threading.Thread(target=waiting)
        waiter.start()
        t0 = time.monotonic()
        while not u.requests.get(f"GET {w.path}", 0) > 1 and time.monotonic() - t0 < 10:
            time.sleep(0.05)
        u.stop()  # a delayed answer does not hold the fixture up
        waiter.join(15)
        assert failed and time.monotonic() - t0 < 15
    finally:
        u.stop()


def test_bandwidth_is_shared_by_all_connections_of_the_file_host(tmp_path):
    u = Upstream(tmp_path).start()
    try:
        a = u.add_file("a", "a-1.0.tar.gz", size=400_000)
        b = u.add_file("b", "b-1.0.tar.gz", size=400_000)
        u.set_bandwidth(1_000_000)
        got = _together([(a.url, "a", {}), (b.url, "b", {})])
        for f, key in ((a, "a"), (b, "b")):
            r, seconds = got[key]
            assert hashlib.sha256(r.content).hexdigest() == f.sha256
            # 800 kB at 1 MB/s in turns: neither is done before most of both has gone
            assert seconds >= 0.7, (key, seconds)
        t0, sent = time.monotonic(), u.bytes_sent()
        r = requests.get(a.url, headers={"Range": "bytes=0-299999"})
        assert r.status_code == 206 and r.content == a.disk_path.read_bytes()[:300_000]
        assert time.monotonic() - t0 >= 0.29 and u.bytes_sent() - sent == 300_000
        assert requests.get(u.index_url + "/a/").status_code == 200  # pages are not paced
        u.set_bandwidth(None)
        assert hashlib.sha256(requests.get(a.url).content).hexdigest() == a.sha256
    finally:
        u.stop()


def test_history_lists_thousands_of_files_it_never_stores(tmp_path):
    u = Upstream(tmp_path).start()
    try:
        real = u.add_wheel("numpyish", "1.0")
        listed = u.add_history("numpyish", 3000)
        boto = u.add_wheel("botoish", "1.0")
        u.add_history("botoish", 5000, pure=True)
        html = requests.get(u.index_url + "/numpyish/", headers={"Accept": "text/html"})
        assert html.text.count("<a ") == 3001 and len(html.content) > 1_400_000
        doc = requests.get(u.index_url + "/botoish/", headers={"Accept": PIP_ACCEPT}).json()
        assert len(doc["files"]) == 5001 and len(json.dumps(doc)) > 2_000_000
        assert all(f["filename"].endswith(("-py3-none-any.whl", ".tar.gz")) for f in doc["files"])
        page = requests.get(u.index_url + "/numpyish/", headers={"Accept": PIP_ACCEPT}).json()
        assert "0.1.0" in page["versions"] and max(page["versions"]) == "1.0"
        on_disk = sorted(p.name for p in (tmp_path / "files").iterdir())
        assert on_disk == sorted(f"{w.filename}{end}" for w in (real, boto) for end in ("", ".metadata"))
        one = next(f for f in listed if f.filename.endswith(".whl"))
        entry = next(f for f in page["files"] if f["filename"] == one.filename)
        assert entry["hashes"]["sha256"] == one.sha256 and entry["size"] == one.size
        assert requests.get(one.url).status_code == 404
        assert requests.head(one.url).status_code == 404
        meta = requests.get(one.url + ".metadata")
        assert hashlib.sha256(meta.content).hexdigest() == entry["core-metadata"]["sha256"]
        assert meta.text.startswith("Metadata-Version") and "Version: 0.1.0" in meta.text
        u.add_wheel("numpyish", "1.1")  # a page with a history is rendered anew after a change
        again = requests.get(u.index_url + "/numpyish/", headers={"Accept": PIP_ACCEPT}).json()
        assert len(again["files"]) == 3002 and max(again["versions"]) == "1.1"
    finally:
        u.stop()


def test_cli_flags_for_delay_bandwidth_and_history(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fixture_upstream", "--root", str(tmp_path), "--delay", "1",
         "--bandwidth", "500000", "--history", "wide:200", "--file", "f-1.0.tar.gz:400000"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        info = json.loads(proc.stdout.readline())
        t0 = time.monotonic()
        page = requests.get(info["index_url"] + "/wide/", headers={"Accept": PIP_ACCEPT}).json()
        assert len(page["files"]) == 201 and time.monotonic() - t0 >= 1
        t0 = time.monotonic()
        f = info["files"][0]
        assert hashlib.sha256(requests.get(f["url"]).content).hexdigest() == f["sha256"]
        assert time.monotonic() - t0 >= 1 + 0.75  # the delay, then 400 kB at 500 kB/s
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()


def test_project_status_pep_792(up):
    up.set_status("alpha", "quarantined", "haunted")
    page = requests.get(up.index_url + "/alpha/", headers={"Accept": JSON_T}).json()
    assert page["meta"]["api-version"] == "1.4" and page["files"] == []
    assert page["project-status"] == {"status": "quarantined", "reason": "haunted"}
    assert page["versions"] == ["0.8", "0.9", "1.0"]
    html = requests.get(up.index_url + "/alpha/", headers={"Accept": "text/html"}).text
    assert 'content="1.4"' in html and "<a " not in html
    assert '<meta name="pypi:project-status" content="quarantined">' in html
    assert '<meta name="pypi:project-status-reason" content="haunted">' in html
    w = next(f for f in up._projects["alpha"][1] if f.filename.endswith(".whl"))
    assert requests.get(w.url).status_code == 200  # still served by URL, as a CDN may
    up.set_status("alpha")
    assert len(requests.get(up.index_url + "/alpha/", headers={"Accept": JSON_T}).json()["files"]) == 3
