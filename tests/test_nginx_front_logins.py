"""The nginx front's logins on a warm hit (docker/nginx/): a published file is served from the
volume with no question only while the file of an accepted login, named by the client's own
header, is there; every other request is asked of the app."""
from __future__ import annotations

import base64
import collections
import http.client
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import bcrypt
import pytest
import requests

from pypicache import auth

from .servers import Proxy, add_chain
from .test_nginx_front import _basic, _counts, _logins, flooded, fronted

pytestmark = pytest.mark.e2e
# A login whose header's base64 holds a '/': its accepted file is in a directory of its own.
SLASHED = ("bob", "a?b?c?d")
KEY = base64.b64encode(":".join(SLASHED).encode()).decode()


def _front(tmp_path, upstream, **env: str):
    files = add_chain(upstream)
    logins = _logins(tmp_path, ann="secret", bob=SLASHED[1])
    proxy = Proxy(tmp_path / "cache", upstream.env(), PYPI_AUTH_FILE=str(logins)).start()
    wheel = files["beta-1.0-py3-none-any.whl"]
    return proxy, logins, f"/packages/{wheel.path.split('/packages/', 1)[1]}"


@pytest.fixture
def warm(tmp_path, upstream):
    """The app and its front with logins, the wheel cached and bob's login accepted."""
    proxy, logins, path = _front(tmp_path, upstream)
    try:
        with fronted(proxy, PYPI_AUTH_FILE=str(logins)) as front:
            assert requests.get(front.url + path, auth=SLASHED, timeout=30).ok  # the miss
            yield proxy, front, front.url + path
    finally:
        proxy.stop()


def _get(url: str, authorization: str | None = None) -> requests.Response:
    headers = {} if authorization is None else {"Authorization": authorization}
    return requests.get(url, headers=headers, timeout=30)


def test_a_crafted_header_naming_no_accepted_login_is_asked_of_the_app(warm):
    proxy, front, url = warm
    assert "/" in KEY.strip("/") and (front.logins / "accepted" / KEY).is_file()
    assert _get(url, f"Basic {KEY}").headers.get("X-Front-Cache") == "disk"
    # Headers that name the directory of bob's file, a path below his file, the accepted
    # logins' directory itself (no key), or outside it: none is a file nginx may take for
    # a login, so each is a question for the app, which refuses it.
    crafted = [None, "Basic", f"Basic {KEY.split('/')[0]}", f"Basic {KEY}/", f"Basic {KEY}/AAAA",
               f"Basic ../accepted/{KEY}", f"Basic {KEY.replace('/', '/./')}", f"Bearer {KEY}",
               f"Basic {KEY} x"]
    before = _counts(proxy)["questions"]
    for authorization in crafted:
        refused = _get(url, authorization)
        assert refused.status_code == 401, authorization
        assert "X-Front-Cache" not in refused.headers
        assert refused.headers["WWW-Authenticate"].startswith('Basic realm="pypicache"')
    assert _counts(proxy)["questions"] - before == len(crafted)  # each one asked once
    assert _get(url, f"Basic {KEY}").headers.get("X-Front-Cache") == "disk"


def test_a_hit_whose_accepted_login_was_forgotten_goes_through_the_app(warm):
    """start removes a login's file after PYPICACHE_LOGIN_TTL: from then on nginx serves no
    hit of that header from the volume until the app has been asked again."""
    _, front, url = warm
    (front.logins / "accepted" / KEY).unlink()
    deadline = time.monotonic() + 30  # nginx sees the file gone within its second
    while (served := _get(url, f"Basic {KEY}")).headers.get("X-Front-Cache") == "disk":
        assert time.monotonic() < deadline, "a hit with no accepted login came from disk"
        time.sleep(0.2)
    assert served.status_code == 200 and served.headers["X-Cache"] == "hit"  # by the app


def test_a_changed_password_takes_effect_on_warm_hits_within_the_login_ttl(tmp_path, upstream):
    proxy, logins, path = _front(tmp_path, upstream)
    try:
        with fronted(proxy, PYPI_AUTH_FILE=str(logins), PYPICACHE_LOGIN_TTL="2") as front:
            url = front.url + path
            assert requests.get(url, auth=SLASHED, timeout=30).ok  # the miss, then hits
            assert requests.get(url, auth=SLASHED, timeout=30).headers["X-Front-Cache"] == "disk"
            _logins(tmp_path, ann="secret", bob="changed")
            deadline = time.monotonic() + 30  # the front's 2 s, on a machine under load
            while requests.get(url, auth=SLASHED, timeout=30).status_code != 401:
                assert time.monotonic() < deadline, "the old password still works"
                time.sleep(0.2)
            assert requests.get(url, auth=("bob", "changed"), timeout=30).ok
    finally:
        proxy.stop()


def test_wrong_logins_on_files_the_app_serves_are_throttled_with_a_429(warm):
    """With a policy every file goes to the app (front/policy, pypicache/policyserve.py), and
    so does a hit with no accepted login: nginx asks first there too, and a throttled
    question is a 429 with Retry-After, as on every other path."""
    proxy, front, url = warm
    (proxy.cache_dir / "front" / "policy").touch()  # what the app writes with a policy
    flood = http.client.HTTPConnection("127.0.0.1", front.port, timeout=30,
                                       source_address=("127.0.0.3", 0))
    answers = flooded(flood, url.removeprefix(front.url), [("bob", f"guess{n}") for n in range(30)])
    burst = auth.BY_ADDRESS[0]
    assert [status for status, _ in answers] == [401] * burst + [429] * (30 - burst)
    assert all(int(wait) >= 1 for _, wait in answers[burst:])
    served = _get(url, f"Basic {KEY}")  # a good login still gets the file, by the app
    assert served.status_code == 200 and "X-Front-Cache" not in served.headers


def _at_once(urls: list[str], auth: tuple[str, str]) -> list[int]:
    """The statuses of GETs of `urls`, each on its own connection, all let go at once."""
    gate = threading.Barrier(len(urls))

    def get(url: str) -> int:
        gate.wait()
        return requests.get(url, auth=auth, timeout=60).status_code

    with ThreadPoolExecutor(len(urls)) as pool:
        return list(pool.map(get, urls))


def test_a_good_login_with_many_requests_in_flight_as_it_expires_is_never_throttled(tmp_path,
                                                                                     upstream):
    """start forgets an accepted login PYPICACHE_LOGIN_TTL after the app said yes; a uv or CI
    client may have dozens of requests in flight at that moment, each of which has nginx ask.
    They ask the app once between them, and none is refused for being one of many: nor while
    nginx still keeps the app's answer, nor once that answer is out of date."""
    ttl = 10
    proxy, logins, path = _front(tmp_path, upstream)
    try:
        with fronted(proxy, PYPI_AUTH_FILE=str(logins), PYPICACHE_LOGIN_TTL=str(ttl)) as front:
            urls = [front.url + path, front.url + "/simple/beta/"] * 30
            assert requests.get(urls[0], auth=SLASHED, timeout=30).ok  # the miss
            accepted = front.logins / "accepted" / KEY

            def at_once(moment: str) -> None:
                # bob's hash made again (the same password, a new salt, bcrypt's usual cost):
                # no app worker knows this login now, so the question takes a bcrypt check
                # (about a quarter of a second), and the requests meet while it lasts.
                bob = bcrypt.hashpw(SLASHED[1].encode(), bcrypt.gensalt(12)).decode()
                lines = logins.read_text().splitlines()
                logins.write_text("".join(f"bob:{bob}\n" if line.startswith("bob:") else
                                          f"{line}\n" for line in lines))
                statuses = collections.Counter(_at_once(urls, SLASHED))
                assert statuses == {200: len(urls)}, moment

            deadline = time.monotonic() + 60
            while accepted.exists():  # start removes it after the TTL
                assert time.monotonic() < deadline, "start kept an expired login"
                time.sleep(0.1)
            time.sleep(1.5)  # past the second in which nginx may still see the file
            asked = _counts(proxy)["questions"]
            at_once("start forgot it")
            answered = time.monotonic()  # the app's new answer is older than this
            assert _counts(proxy)["questions"] > asked  # nginx asked the app again
            assert accepted.is_file()  # and keeps its yes as the file again
            # The file gone while nginx keeps the app's answer: that answer, read again.
            accepted.unlink()
            time.sleep(1.5)
            at_once("its file went, its answer kept")
            assert requests.get(urls[1], auth=SLASHED, timeout=30).ok  # read: kept longer
            # That answer past its TTL (nginx keeps it, read lately) but no file: asked again.
            time.sleep(max(0.0, answered + ttl + 1.5 - time.monotonic()))
            asked = _counts(proxy)["questions"]
            at_once("its answer out of date")
            assert _counts(proxy)["questions"] > asked and accepted.is_file()
    finally:
        proxy.stop()


def test_a_client_cannot_choose_the_address_its_questions_are_counted_by(warm):
    """The questions server counts questions by the X-Pypicache-Client header, which the
    front sets to the client's address over any the client sends (and the app believes it
    only with the front's key, which the front sets over the client's too)."""
    proxy, front, url = warm
    started, before = time.monotonic(), _counts(proxy)["questions"]
    flood = http.client.HTTPConnection("127.0.0.1", front.port, timeout=30,
                                       source_address=("127.0.0.4", 0))
    statuses = []
    for n in range(40):
        headers = _basic("bob", f"guess{n}") | {"X-Pypicache-Client": f"10.0.{n}.1",
                                                 "X-Pypicache-Front-Key": "guessed"}
        flood.request("GET", url.removeprefix(front.url), headers=headers)
        answer = flood.getresponse()
        answer.read()
        statuses.append(answer.status)
    flood.close()
    burst = auth.BY_ADDRESS[0]  # the app's budget of 127.0.0.4, not of forty addresses
    assert statuses == [401] * burst + [429] * (40 - burst)
    # and nginx's: 20 questions at once from one address, then one a second
    assert _counts(proxy)["questions"] - before <= 20 + (time.monotonic() - started) + 1


def test_a_throttled_answer_nginx_keeps_still_says_when_to_try_again(warm):
    """nginx keeps a throttled question's answer for a second (so that the answer it
    replaces is not given meanwhile): a client asking again within it gets the 429 and a
    Retry-After too."""
    _, front, url = warm
    client = http.client.HTTPConnection("127.0.0.1", front.port, timeout=30,
                                        source_address=("127.0.0.5", 0))
    answers = []
    for password in [f"guess{n}" for n in range(auth.BY_ADDRESS[0])] + ["again"] * 3:
        client.request("GET", url.removeprefix(front.url), headers=_basic("bob", password))
        answer = client.getresponse()
        answer.read()
        answers.append((answer.status, answer.getheader("Retry-After")))
    client.close()
    assert [status for status, _ in answers[-3:]] == [429] * 3
    assert all(int(wait) >= 1 for _, wait in answers[-3:])
