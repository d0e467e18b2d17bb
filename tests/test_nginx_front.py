"""The shipped nginx front (docker/nginx/, Debian's nginx) before real gunicorn: what users rely
on holds behind it, published files come from the volume, and their hits are counted once."""
from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import time
from concurrent.futures import ThreadPoolExecutor

import bcrypt
import pytest
import requests

from pypicache import auth

from .servers import ROOT, Front, Proxy, add_chain, installed, pip_install, uv_install
from .test_deploy import hadolint
from .test_e2e import _fetch, cached_files, one_file, sixteen_clients
from .test_simple import PIP_ACCEPT, UV_ACCEPT

pytestmark = pytest.mark.e2e
MIB = 1 << 20
ACCEPTS = [
    None, "*/*", "text/html", PIP_ACCEPT, UV_ACCEPT, "application/vnd.pypi.simple.v1+html",
    "application/vnd.pypi.simple.latest+json",
    "text/html;q=0.5, application/vnd.pypi.simple.v1+json;q=0.4",
    "application/vnd.pypi.simple.v1+json;q=0, text/html;q=0.1", "application/json",
]


@contextlib.contextmanager
def fronted(proxy: Proxy, **env: str):
    front = Front(proxy, **env).start()
    try:
        yield front
    finally:
        front.stop()


@pytest.fixture
def chain(tmp_path, upstream):
    files = add_chain(upstream)
    proxy = Proxy(tmp_path / "cache", upstream.env()).start()
    with fronted(proxy) as front:
        yield upstream, proxy, front, files
    proxy.stop()


def _get(url: str, **headers) -> requests.Response:
    """GET with headers given as keywords: If_None_Match="..." sends If-None-Match."""
    return requests.get(url, headers={k.replace("_", "-"): v for k, v in headers.items()},
                        timeout=30)


def test_pages_negotiate_redirect_and_revalidate_as_the_app_does(chain):
    up, proxy, front, _ = chain
    # The page's miss first: its client gets the body plain (and the others the one they ask
    # for, once the page is cached), so both sides below compare hits.
    assert requests.get(f"{proxy.url}/simple/gamma/", timeout=30).headers["X-Cache"] == "miss"
    for accept in ACCEPTS:
        headers = {"Accept": accept} if accept else {}
        # What the app answers the front (which says it forwards: links stay relative).
        app = requests.get(f"{proxy.url}/simple/gamma/", timeout=30,
                           headers=headers | {"X-Forwarded-For": "127.0.0.1"})
        for _ in range(2):  # the second one from the micro-cache
            got = requests.get(f"{front.url}/simple/gamma/", headers=headers, timeout=30)
            assert (got.status_code, got.headers.get("Content-Type")) == (
                app.status_code, app.headers.get("Content-Type")), accept
            assert got.content == app.content and got.headers.get("ETag") == app.headers.get("ETag")
        if app.status_code == 200:  # a 406 is not kept
            assert got.headers["X-Front-Cache"] in ("HIT", "UPDATING"), accept
            assert got.headers["X-Cache"] == "hit"
    json_page = _get(f"{front.url}/simple/gamma/", Accept=PIP_ACCEPT)
    assert json_page.headers["Content-Type"] == "application/vnd.pypi.simple.v1+json"
    assert {f["filename"] for f in json_page.json()["files"]} == {
        "gamma-1.0-py3-none-any.whl", "gamma-2.0-py3-none-any.whl", "gamma-0.5.tar.gz"}
    # gzip only for who asks, never mixed up in the cache
    plain = _get(f"{front.url}/simple/gamma/", Accept_Encoding="identity")
    assert "Content-Encoding" not in plain.headers and plain.text.startswith("<!DOCTYPE html>")
    packed = _get(f"{front.url}/simple/gamma/", Accept_Encoding="gzip")
    assert packed.headers["Content-Encoding"] == "gzip"
    # validators: 304 from the front for the app's strong ETag
    etag = json_page.headers["ETag"]
    again = _get(f"{front.url}/simple/gamma/", Accept=PIP_ACCEPT, If_None_Match=etag)
    assert again.status_code == 304 and again.headers["ETag"] == etag
    # non-canonical names: 301 to the canonical URL, relative as the app says it
    moves = (("/simple/Gamma/", "../gamma/"), ("/simple/gamma", "gamma/"), ("/simple", "simple/"))
    for path, location in moves:
        moved = requests.get(front.url + path, allow_redirects=False, timeout=30)
        assert (moved.status_code, moved.headers["Location"]) == (301, location)
    assert requests.get(f"{front.url}/simple/Gamma", timeout=30).url == f"{front.url}/simple/gamma/"
    assert _get(f"{front.url}/simple/no-such-project/").status_code == 404
    # credentials always reach the app, and its answer is never kept for others
    private = _get(f"{front.url}/simple/gamma/", Authorization="Basic dTpw")
    assert private.status_code == 200 and private.headers["X-Front-Cache"] == "BYPASS"


def test_a_new_upstream_file_shows_through_the_front_once_the_app_has_it(tmp_path, upstream):
    upstream.add_wheel("delta", "1.0")
    proxy = Proxy(tmp_path / "cache", upstream.env(), PYPI_INDEX_TTL="1").start()
    try:
        with fronted(proxy) as front:
            def names(url: str) -> set[str]:
                return {f["filename"] for f in _get(url, Accept=PIP_ACCEPT).json()["files"]}

            assert names(f"{front.url}/simple/delta/") == {"delta-1.0-py3-none-any.whl"}
            upstream.add_wheel("delta", "2.0")
            deadline = time.monotonic() + 30
            while len(names(f"{proxy.url}/simple/delta/")) < 2 and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(1.5)  # the front keeps a page one second, then asks the app again
            assert "delta-2.0-py3-none-any.whl" in names(f"{front.url}/simple/delta/")
    finally:
        proxy.stop()


def test_published_files_come_from_disk_with_the_apps_headers(chain):
    up, proxy, front, files = chain
    sdist = up.add_file("gamma", "gamma-3.0.tar.gz", size=MIB + 7)
    assert _get(f"{front.url}/simple/gamma/").ok  # lists it (and records its sha256)
    url = f"{front.url}/packages/{sdist.path.split('/packages/', 1)[1]}"
    first = _get(url, Accept_Encoding="gzip")
    assert first.headers["X-Cache"] == "miss" and "X-Front-Cache" not in first.headers
    body = sdist.disk_path.read_bytes()
    for method in ("GET", "HEAD"):
        warm = requests.request(method, url, headers={"Accept-Encoding": "gzip"}, timeout=30)
        assert warm.status_code == 200 and warm.headers["X-Front-Cache"] == "disk"
        assert warm.headers["Content-Type"] == "application/octet-stream"
        assert warm.headers["Cache-Control"] == "max-age=365000000, immutable, public"
        assert warm.headers["Content-Length"] == str(len(body))
        assert "Content-Encoding" not in warm.headers and warm.headers["Accept-Ranges"] == "bytes"
    assert hashlib.sha256(_get(url).content).hexdigest() == sdist.sha256
    etag = warm.headers["ETag"]
    assert etag.startswith('"')  # strong
    assert _get(url, If_None_Match=etag).status_code == 304
    for spec, start, stop in (("bytes=100-199", 100, 200), (f"bytes={MIB}-", MIB, len(body)),
                              ("bytes=-100", len(body) - 100, len(body))):
        part = _get(url, Range=spec)
        assert part.status_code == 206 and part.content == body[start:stop]
        assert part.headers["Content-Range"] == f"bytes {start}-{stop - 1}/{len(body)}"
    assert _get(url, Range="bytes=100-199", If_Range=etag).status_code == 206
    assert _get(url, Range="bytes=100-199", If_Range='"other"').content == body  # whole file
    assert _get(url, Range=f"bytes={len(body)}-").status_code == 416
    assert up.downloads(sdist.filename) == 1
    # nothing outside files/ is reachable, however the path is spelled (sent as is)
    (proxy.cache_dir / "tmp" / "secret.part").write_bytes(b"half")
    for path in ("../tmp/secret.part", "%2e%2e/tmp/secret.part", "..%2ftmp/secret.part",
                 "..%2f..%2f..%2fetc/passwd", "%00", "../catalog.sqlite3"):
        connection = http.client.HTTPConnection("127.0.0.1", front.port, timeout=30)
        connection.request("GET", f"/packages/{path}")
        response = connection.getresponse()
        assert 400 <= response.status < 500 and b"half" not in response.read(), path
        connection.close()


def test_sixteen_clients_of_one_cold_file_cause_one_download_and_stream(tmp_path):
    with one_file(tmp_path, 16 * MIB, throttle=8 * MIB) as (up, proxy, big, app_url),\
            fronted(proxy) as front:
        url = app_url.replace(proxy.url, front.url)
        results = sixteen_clients(url)
        assert up.downloads(big.filename) == 1
        assert sorted(r[0] for r in results) == ["follower"] * 15 + ["miss"]
        assert {r[4] for r in results} == {big.sha256}
        download_end = min(r[3] for r in results)
        assert all(r[2] < download_end for r in results), "a client waited for the end"
        assert _get(url).headers["X-Front-Cache"] == "disk"


@pytest.mark.parametrize("fault", ["corrupt", "truncate"])
def test_a_bad_upstream_file_is_never_served_by_the_front(tmp_path, fault):
    with one_file(tmp_path, MIB) as (up, proxy, wheel, app_url), fronted(proxy) as front:
        url = app_url.replace(proxy.url, front.url)
        up.fault(wheel.filename, fault)
        for _ in range(2):  # the second time too: nothing was published for nginx to find
            completed, digest = _fetch(url)
            assert not completed and digest != wheel.sha256
        assert cached_files(proxy) == []
        up.clear_faults()
        assert _fetch(url) == (True, wheel.sha256)
        served = _get(url)
        assert served.headers["X-Front-Cache"] == "disk"
        assert hashlib.sha256(served.content).hexdigest() == wheel.sha256


def _stats(front: Front) -> dict:
    return _get(f"{front.url}/stats.json").json()


def _front_gets(proxy: Proxy, at_least: int) -> int:
    """GETs nginx answered from the volume, from its own log (every one a hit for the app),
    once it has flushed them all (nginx buffers the log for up to a second)."""
    def count() -> int:
        logs = (proxy.cache_dir / "front").glob("*.log")
        lines = (line for log in logs for line in log.read_text().splitlines())
        fields = (line.split("\t") for line in lines)
        return sum(method == "GET" and int(status) < 400 for _, method, status, *_ in fields)

    deadline = time.monotonic() + 20
    while count() < at_least and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.5)  # past the flush interval: any later line is in the file now
    return count()


def _counted_once(front: Front, served: int) -> int:
    """The hits the app counted once every worker has had its turn at the log."""
    deadline = time.monotonic() + 20
    while _stats(front)["requests"].get("hit", 0) < served and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2.5)  # every worker has had its turn at the log: still counted once
    return _stats(front)["requests"]["hit"]


def test_pip_and_uv_install_through_the_front_and_every_hit_is_counted_once(chain, tmp_path):
    up, proxy, front, files = chain
    first = pip_install(f"{front.url}/simple", tmp_path / "t1", "alpha")
    assert first.returncode == 0, first.stderr
    assert installed(tmp_path / "t1") == {"alpha": "1.0", "beta": "1.0", "gamma": "1.0"}
    second = uv_install(f"{front.url}/simple", tmp_path / "t2", tmp_path / "uv-cache", "alpha")
    assert second.returncode == 0, second.stderr
    assert installed(tmp_path / "t2") == {"alpha": "1.0", "beta": "1.0", "gamma": "1.0"}
    assert all(up.downloads(f"{n}-1.0-py3-none-any.whl") == 1 for n in ("alpha", "beta", "gamma"))
    # uv's three wheels came from the volume; the app answered some of pip's questions itself
    # (a .metadata fetched ahead while pip asked for it is a hit of the app's own).
    installs = _front_gets(proxy, 3)
    assert installs >= 3
    before = _counted_once(front, installs)
    assert before >= installs
    wheel = files["alpha-1.0-py3-none-any.whl"]
    url = f"{front.url}/packages/{wheel.path.split('/packages/', 1)[1]}"
    for _ in range(5):
        assert _get(url).headers["X-Front-Cache"] == "disk"
    assert _front_gets(proxy, installs + 5) == installs + 5
    assert _counted_once(front, before + 5) == before + 5
    alpha = _get(f"{front.url}/stats/alpha.json").json()["files"]
    assert next(f for f in alpha if f["filename"] == wheel.filename)["hits"] >= 6


def _logins(tmp_path, **users: str):
    """An htpasswd file of bcrypt hashes as `htpasswd -B` writes them (a low cost: fast)."""
    path = tmp_path / "htpasswd"
    hashed = {user: bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)) for user, password in
              users.items()}
    path.write_text("".join(f"{user}:{value.decode()}\n" for user, value in hashed.items()))
    return path


@pytest.fixture
def guarded(tmp_path, upstream):
    """The app and its front with logins on every route; the front never sees the file."""
    files = add_chain(upstream)
    logins = _logins(tmp_path, ann="secret")
    proxy = Proxy(tmp_path / "cache", upstream.env(), PYPI_AUTH_FILE=str(logins)).start()
    try:
        # The file stays with the app: nginx, were it to check a hash itself, would fail.
        with fronted(proxy, PYPI_AUTH_FILE="/nonexistent/htpasswd", PYPI_AUTH_SCOPE="all") as front:
            yield proxy, front, files, logins
    finally:
        proxy.stop()


def flooded(connection: http.client.HTTPConnection, path: str,
            logins: list[tuple[str, str]]) -> list[tuple[int, str | None]]:
    """(status, Retry-After) of a GET of `path` with each login in turn, on one keep-alive
    connection (closed after)."""
    answers = []
    for user, password in logins:
        connection.request("GET", path, headers=_basic(user, password))
        answer = connection.getresponse()
        answer.read()
        answers.append((answer.status, answer.getheader("Retry-After")))
    connection.close()
    return answers


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _counts(proxy: Proxy) -> dict[str, float]:
    """The app's login checks by outcome, and the front's questions it answered."""
    text = requests.get(proxy.url + "/metrics", auth=("ann", "secret"), timeout=30).text
    counts = {}
    for line in text.splitlines():
        if line.startswith("pypicache_login_checks_total{"):
            counts[line.split('"')[1]] = float(line.split()[-1])
        elif line.startswith("pypicache_http_requests_total{") and 'route="/-/login"' in line:
            counts["questions"] = counts.get("questions", 0) + float(line.split()[-1])
    return counts


def test_with_logins_the_front_asks_the_app_once_and_serves_warm_hits_from_disk(guarded, tmp_path):
    proxy, front, files, _ = guarded
    wheel = files["beta-1.0-py3-none-any.whl"]
    url = f"{front.url}/packages/{wheel.path.split('/packages/', 1)[1]}"
    for target in (url, f"{front.url}/simple/beta/", f"{front.url}/"):
        refused = requests.get(target, timeout=30)
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"].startswith('Basic realm="pypicache"')
        assert requests.get(target, auth=("ann", "guess"), timeout=30).status_code == 401
    assert requests.get(front.url + "/healthz", timeout=30).ok  # probes stay open
    login = ("ann", "secret")
    assert requests.get(f"{front.url}/simple/beta/", auth=login, timeout=30).ok
    assert requests.get(url, auth=login, timeout=30).headers["X-Cache"] == "miss"  # via the app
    before = _counts(proxy)
    assert before["accepted"] >= 1 and before["questions"] >= 1
    with requests.Session() as session:
        session.auth = login
        for _ in range(200):
            served = session.get(url, timeout=30)
            assert served.status_code == 200 and served.headers["X-Front-Cache"] == "disk"
        assert hashlib.sha256(served.content).hexdigest() == wheel.sha256
        pages = [session.get(f"{front.url}/simple/beta/", timeout=30) for _ in range(2)]
        assert pages[1].headers["X-Front-Cache"] in ("HIT", "UPDATING")  # the micro-cache
    after = _counts(proxy)  # no question to the app: the hits cost no bcrypt anywhere
    assert after["questions"] == before["questions"]
    assert after["accepted"] - before["accepted"] <= proxy.workers  # our own /metrics reads
    # The answers are kept in memory, keyed by the header; nothing on disk holds it.
    header = base64.b64encode(b"ann:secret")
    kept = [p.read_bytes() for p in front.logins.rglob("*") if p.is_file()]
    assert any(header in content for content in kept)
    # and the accepted one is a file named by it, which nginx looks up before its answers
    assert (front.logins / "accepted" / header.decode()).read_bytes() == b"accepted\n"
    on_disk = [p for p in tmp_path.rglob("*") if p.is_file() and not p.is_symlink()]
    assert on_disk and not [p for p in on_disk if header in p.read_bytes()]


def test_a_flood_of_wrong_logins_through_the_front_is_throttled_without_checks(guarded):
    proxy, front, files, _ = guarded
    wheel = files["beta-1.0-py3-none-any.whl"]
    url = f"{front.url}/packages/{wheel.path.split('/packages/', 1)[1]}"
    assert requests.get(url, auth=("ann", "secret"), timeout=30).ok  # verified before the flood
    started = time.monotonic()
    # The flood comes from another address of the loopback than this test's own requests.
    flood = http.client.HTTPConnection("127.0.0.1", front.port, timeout=30,
                                       source_address=("127.0.0.2", 0))
    answers = flooded(flood, url.removeprefix(front.url), [("ann", f"guess{n}") for n in range(40)]
                      + [(f"user{n}", "guess") for n in range(40)])
    burst = auth.BY_ADDRESS[0]
    assert [status for status, _ in answers] == [401] * burst + [429] * (80 - burst)
    assert all(int(wait) >= 1 for _, wait in answers[burst:])
    counts = _counts(proxy)
    assert counts["refused"] == burst  # the budget of this address, over all workers
    # nginx stops asking too: 20 questions at once from one address, then one a second
    assert counts["questions"] <= 1 + 20 + (time.monotonic() - started) + 1
    # a login verified before the flood still gets its file, from disk
    served = requests.get(url, auth=("ann", "secret"), timeout=30)
    assert served.status_code == 200 and served.headers["X-Front-Cache"] == "disk"


def test_a_changed_password_takes_effect_through_the_front_within_its_login_ttl(tmp_path,
                                                                                upstream):
    add_chain(upstream)
    logins = _logins(tmp_path, ann="secret")
    proxy = Proxy(tmp_path / "cache", upstream.env(), PYPI_AUTH_FILE=str(logins)).start()
    try:
        with fronted(proxy, PYPI_AUTH_FILE=str(logins), PYPICACHE_LOGIN_TTL="2") as front:
            page = f"{front.url}/simple/beta/"
            assert requests.get(page, auth=("ann", "secret"), timeout=30).ok
            _logins(tmp_path, ann="changed")
            deadline = time.monotonic() + 30  # the front's 2 s, on a machine under load
            while requests.get(page, auth=("ann", "secret"), timeout=30).status_code != 401:
                assert time.monotonic() < deadline, "the old password still works"
                time.sleep(0.2)
            assert requests.get(page, auth=("ann", "changed"), timeout=30).ok
    finally:
        proxy.stop()


def test_the_front_refuses_to_keep_logins_on_disk(tmp_path, proxy):
    with pytest.raises(RuntimeError, match="is not in memory"):
        Front(proxy, PYPI_AUTH_FILE="/nonexistent/htpasswd",
              PYPICACHE_LOGIN_DIR=str(tmp_path / "logins")).start()


def test_pip_and_uv_log_in_through_the_front_with_credentials_in_the_index_url(guarded, tmp_path):
    proxy, front, files, _ = guarded
    refused = pip_install(f"{front.url}/simple", tmp_path / "refused", "alpha")
    assert refused.returncode != 0 and "401" in refused.stdout + refused.stderr
    logged_in = front.url.replace("http://", "http://ann:secret@") + "/simple"
    done = pip_install(logged_in, tmp_path / "pip", "alpha")
    assert done.returncode == 0, done.stderr
    assert installed(tmp_path / "pip") == {"alpha": "1.0", "beta": "1.0", "gamma": "1.0"}
    done = uv_install(logged_in, tmp_path / "uv", tmp_path / "uv-cache", "alpha")
    assert done.returncode == 0, done.stderr
    assert installed(tmp_path / "uv") == {"alpha": "1.0", "beta": "1.0", "gamma": "1.0"}
    assert _front_gets(proxy, 3) >= 3  # uv's wheels came from the volume, through nginx
    assert "secret" not in front.log.read_text() + proxy.logs()


def test_with_logins_for_the_dashboard_only_files_and_pages_stay_public(tmp_path, proxy, upstream):
    files = add_chain(upstream)
    wheel = files["beta-1.0-py3-none-any.whl"]
    path = f"/packages/{wheel.path.split('/packages/', 1)[1]}"
    with fronted(proxy, PYPI_AUTH_FILE="/nonexistent/htpasswd",
                 PYPI_AUTH_SCOPE="dashboard") as open_front:
        assert _get(f"{open_front.url}/simple/beta/").ok and _get(open_front.url + path).ok
        assert _get(open_front.url + path).headers["X-Front-Cache"] == "disk"


def test_the_front_image_passes_hadolint():
    result = hadolint(ROOT / "docker" / "nginx" / "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_hits_served_while_the_log_rotates_are_counted_once(tmp_path, upstream):
    """nginx moves to a new log file every PYPICACHE_LOG_ROTATE seconds: clients on keep-alive
    connections never notice, and the app counts every hit exactly once."""
    files = add_chain(upstream)
    proxy = Proxy(tmp_path / "cache", upstream.env()).start()
    try:
        with fronted(proxy, PYPICACHE_LOG_ROTATE="1") as front:
            wheel = files["beta-1.0-py3-none-any.whl"]
            url = f"{front.url}/packages/{wheel.path.split('/packages/', 1)[1]}"
            assert _fetch(url) == (True, wheel.sha256)  # the miss, through the app
            deadline = time.monotonic() + 4  # four rotations or so

            def client(_) -> int:
                gets = 0
                with requests.Session() as session:  # keep-alive throughout, as pip does
                    while time.monotonic() < deadline:
                        got = session.get(url, timeout=30)
                        assert got.status_code == 200 and got.headers["X-Front-Cache"] == "disk"
                        gets += 1
                return gets

            with ThreadPoolExecutor(4) as pool:
                gets = sum(pool.map(client, range(4)))
            assert len(list((proxy.cache_dir / "front").glob("*.log"))) >= 3
            assert _front_gets(proxy, gets) == gets
            assert _counted_once(front, gets) == gets
    finally:
        proxy.stop()
