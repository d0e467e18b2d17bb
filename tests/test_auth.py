"""Access control: an htpasswd file of bcrypt hashes, for every route or only the dashboard's;
upstream credentials never shown. Real pip and uv log in through real gunicorn."""
from __future__ import annotations

import base64
import threading
import time

import bcrypt
import pytest
import requests

from pypicache import auth
from pypicache.throttle import Budget

from .fixture_upstream import Upstream
from .servers import Proxy, add_chain, installed, pip_install, uv_install

SECRET = "s3cret-upstream"


def _htpasswd(path, **users: str):
    # bcrypt as `htpasswd -B` writes it ($2y$, of the password's first 72 bytes); a low cost
    # keeps the suite fast.
    lines = [f"{user}:" + bcrypt.hashpw(password.encode()[:72], bcrypt.gensalt(4)).decode()
             .replace("$2b$", "$2y$", 1) for user, password in users.items()]
    path.write_text("# users of the cache\n" + "\n".join(lines) + "\n")
    return path


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def users(tmp_path):
    return _htpasswd(tmp_path / "htpasswd", alice="wonderland", bob="builder")


def test_scope_all_guards_every_route_but_healthz(make_app, users):
    client = make_app(auth_file=users, auth_scope="all").test_client()
    for url in ("/", "/stats.json", "/metrics", "/simple/", "/simple/Demo", "/packages/aa/x-1.0.tar.gz",
                "/no/such/route"):
        refused = client.get(url)
        assert refused.status_code == 401, url
        assert refused.headers["WWW-Authenticate"].startswith('Basic realm="pypicache"')
    assert client.get("/healthz").status_code == 200
    assert client.get("/stats.json", headers=_basic("alice", "wonderland")).status_code == 200
    assert client.get("/simple/Demo", headers=_basic("bob", "builder")).status_code == 301
    for user, password in (("alice", "builder"), ("carol", "wonderland"), ("", "")):
        assert client.get("/stats.json", headers=_basic(user, password)).status_code == 401


def test_scope_dashboard_guards_only_what_lists_the_dependencies(make_app, users):
    client = make_app(auth_file=users, auth_scope="dashboard").test_client()
    for url in ("/", "/stats.json", "/stats/demo.json", "/projects/demo/", "/metrics"):
        assert client.get(url).status_code == 401, url
    assert client.get("/simple/Demo").status_code == 301
    assert client.get("/metrics", headers=_basic("alice", "wonderland")).status_code == 200


def test_a_changed_password_takes_effect_at_once(make_app, users):
    client = make_app(auth_file=users).test_client()
    assert client.get("/stats.json", headers=_basic("alice", "wonderland")).status_code == 200
    _htpasswd(users, alice="new password")
    assert client.get("/stats.json", headers=_basic("alice", "wonderland")).status_code == 401
    assert client.get("/stats.json", headers=_basic("alice", "new password")).status_code == 200


def test_a_password_longer_than_bcrypt_reads_logs_in_as_htpasswd_made_it(make_app, tmp_path):
    """bcrypt 5 refuses a password past 72 bytes where bcrypt 4 cut it: the app cuts it, as the
    hash in the file was made (a generated token of 100 characters, say)."""
    token = "t0ken-" * 17  # 102 bytes
    client = make_app(auth_file=_htpasswd(tmp_path / "htpasswd", ci=token)).test_client()
    assert client.get("/stats.json", headers=_basic("ci", token)).status_code == 200
    assert client.get("/stats.json", headers=_basic("ci", token[:71])).status_code == 401


@pytest.fixture
def checks(monkeypatch):
    """Every bcrypt check the app runs: the cost of the hash it was checked against."""
    costs, real = [], bcrypt.checkpw

    def counted(password: bytes, hashed: bytes) -> bool:
        costs.append(int(hashed[4:6]))
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counted)
    return costs


def _from(address: str, user: str, password: str) -> dict:
    return {"headers": _basic(user, password), "environ_base": {"REMOTE_ADDR": address}}


def test_an_unknown_user_costs_one_check_of_the_same_cost_as_a_known_one(make_app, users, checks):
    client = make_app(auth_file=users).test_client()
    assert client.get("/stats.json", **_from("192.0.2.1", "alice", "guess")).status_code == 401
    assert checks == [4]
    assert client.get("/stats.json", **_from("192.0.2.2", "mallory", "guess")).status_code == 401
    assert checks == [4, 4]  # against a hash of the file's cost, not answered at once


def test_wrong_passwords_are_throttled_without_a_check(make_app, users, checks):
    client = make_app(auth_file=users).test_client()
    assert client.get("/stats.json", **_from("192.0.2.9", "alice", "wonderland")).status_code == 200
    burst = auth.BY_ADDRESS[0]
    for guess in range(burst):
        guessed = client.get("/stats.json", **_from("192.0.2.1", "alice", f"g{guess}"))
        assert guessed.status_code == 401
    assert len(checks) == 1 + burst
    for guess in range(burst, burst + 20):
        throttled = client.get("/stats.json", **_from("192.0.2.1", "alice", f"g{guess}"))
        assert throttled.status_code == 429
        assert 1 <= int(throttled.headers["Retry-After"]) <= auth.BY_ADDRESS[1]
        assert "WWW-Authenticate" not in throttled.headers
    # a good login not yet verified waits too from that address: it would need a check
    assert client.get("/stats.json", **_from("192.0.2.1", "bob", "builder")).status_code == 429
    # a wrong password already refused is refused again, at once, without a check
    assert client.get("/stats.json", **_from("192.0.2.1", "alice", "g0")).status_code == 401
    # a login verified before works from anywhere, and other clients are not throttled
    assert client.get("/stats.json", **_from("192.0.2.1", "alice", "wonderland")).status_code == 200
    assert client.get("/stats.json", **_from("192.0.2.2", "bob", "builder")).status_code == 200
    assert len(checks) == 1 + burst + 1


def test_guesses_for_one_user_from_many_addresses_are_throttled(make_app, users, checks):
    client = make_app(auth_file=users).test_client()
    burst = auth.BY_USER[0]
    answers = [client.get("/stats.json", **_from(f"192.0.2.{n}", "bob", "guess")).status_code
               for n in range(burst)]  # the same guess is checked once
    answers += [client.get("/stats.json", **_from(f"198.51.100.{n}", "bob", f"g{n}")).status_code
                for n in range(burst + 5)]
    assert answers == [401] * (burst + burst - 1) + [429] * 6
    assert len(checks) == burst
    assert client.get("/stats.json", **_from("203.0.113.1", "alice", "x")).status_code == 401


def test_ipv6_clients_are_throttled_by_their_64_network():
    assert auth.client_key("2001:db8:1:2:aaaa::1") == auth.client_key("2001:db8:1:2::ffff")
    assert auth.client_key("2001:db8:1:3::1") == "2001:db8:1:3::/64"
    assert auth.client_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert auth.client_key("192.0.2.7") == "192.0.2.7"


def test_a_budget_refills_one_failure_per_interval_and_is_shared_by_every_worker(tmp_path):
    now = [100.0]
    budget = Budget(tmp_path / "budget", 2, 10.0, clock=lambda: now[0])
    other_worker = Budget(tmp_path / "budget", 2, 10.0, clock=lambda: now[0])
    budget.spend("a")
    other_worker.spend("a")
    assert budget.wait("a") == 10 and other_worker.wait("a") == 10 and budget.wait("b") == 0
    now[0] += 4
    assert budget.wait("a") == 6
    now[0] += 6
    assert other_worker.wait("a") == 0
    now[0] = 50.0  # counted before a reboot: forgotten
    assert budget.wait("a") == 0


def test_a_flood_of_new_keys_takes_no_room(tmp_path):
    budget = Budget(tmp_path / "budget", 1, 60.0, slots=64)
    size = (tmp_path / "budget").stat().st_size
    for n in range(1000):
        budget.spend(f"user{n}")
    assert (tmp_path / "budget").stat().st_size == size
    assert sum(budget.wait(f"other{n}") > 0 for n in range(100)) == 100  # shared buckets: sooner


def test_one_bcrypt_check_at_a_time_and_the_rest_are_told_to_retry(make_app, users,
                                                                   monkeypatch):
    running, most, real = [0], [0], bcrypt.checkpw
    lock, others_answered = threading.Lock(), threading.Event()

    def held(password: bytes, hashed: bytes) -> bool:  # holds its slot until the rest answered
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        others_answered.wait(30)
        with lock:
            running[0] -= 1
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", held)
    monkeypatch.setattr(auth, "CHECK_WAIT", 0.5)
    app = make_app(auth_file=users)
    answers: list[tuple[int, str | None]] = []

    def guess(n: int) -> None:
        answer = app.test_client().get("/stats.json", **_from(f"192.0.2.{n}", "alice", f"g{n}"))
        answers.append((answer.status_code, answer.headers.get("Retry-After")))
        if len(answers) == 5:
            others_answered.set()

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert most[0] == 1
    assert sorted(answers) == [(401, None)] + [(429, "1")] * 5


def test_the_fronts_login_question_trusts_its_client_address_only_with_its_key(make_app, users,
                                                                               tmp_path, checks):
    client = make_app(auth_file=users).test_client()
    (tmp_path / "cache" / "front").mkdir(parents=True, exist_ok=True)
    (tmp_path / "cache" / "front" / "key").write_text("front-secret\n")

    def ask(client_address: str, password: str, key: str, user: str = "alice"):
        headers = _basic(user, password) | {"X-Pypicache-Client": client_address,
                                               "X-Pypicache-Front-Key": key}
        return client.get(auth.LOGIN_PATH, headers=headers,
                          environ_base={"REMOTE_ADDR": "127.0.0.1"})

    assert ask("192.0.2.1", "wonderland", "front-secret").status_code == 200
    burst = auth.BY_ADDRESS[0]
    for n in range(burst):
        assert ask("192.0.2.1", f"g{n}", "front-secret").status_code == 401
    throttled = ask("192.0.2.1", "another", "front-secret")
    assert throttled.status_code == 403 and int(throttled.headers["Retry-After"]) >= 1
    assert ask("192.0.2.2", "and another", "front-secret").status_code == 401
    # without the key the claimed address is not believed: the peer's own is throttled
    for n in range(burst):
        assert ask(f"198.51.100.{n}", f"x{n}", "guessed", "bob").status_code == 401
    assert ask("198.51.100.99", "x99", "guessed", "bob").status_code == 403
    assert ask("192.0.2.3", "one more", "front-secret", "bob").status_code == 401


def test_the_login_question_exists_only_when_every_route_is_guarded(make_app, users):
    assert make_app(auth_file=users, auth_scope="dashboard").test_client().get(
        auth.LOGIN_PATH, headers=_basic("alice", "wonderland")).status_code == 404
    assert make_app().test_client().get(auth.LOGIN_PATH).status_code == 404


def test_login_checks_are_counted_in_the_metrics(make_app, users):
    client = make_app(auth_file=users).test_client()
    for password in ("wonderland", "wonderland", "guess"):
        client.get("/stats.json", headers=_basic("alice", password))
    metrics = client.get("/metrics", headers=_basic("alice", "wonderland")).get_data(as_text=True)
    assert 'pypicache_login_checks_total{outcome="accepted"} 1.0' in metrics
    assert 'pypicache_login_checks_total{outcome="refused"} 1.0' in metrics


def test_upstream_credentials_are_not_on_the_dashboard(make_app):
    client = make_app(mirror_url=f"http://mirror:{SECRET}@127.0.0.1:9/simple").test_client()
    page = client.get("/").get_data(as_text=True)
    assert SECRET not in page and "127.0.0.1:9/simple" in page


@pytest.mark.e2e
def test_pip_and_uv_log_in_with_credentials_in_the_index_url(tmp_path, users):
    up = Upstream(tmp_path / "up", layout="relative").start()
    add_chain(up)
    secret_file = tmp_path / "mirror-url"  # the upstream's own credentials, as a Docker secret
    secret_file.write_text(up.index_url.replace("http://", f"http://mirror:{SECRET}@"))
    proxy = Proxy(tmp_path / "cache", {"PYPI_MIRROR_URL_FILE": str(secret_file),
                                       "PYPI_PACKAGE_LOC": up.package_loc},
                  PYPI_AUTH_FILE=str(users)).start()
    logged_in = proxy.url.replace("http://", "http://alice:wonderland@") + "/simple"
    try:
        refused = pip_install(f"{proxy.url}/simple", tmp_path / "refused", "alpha")
        assert refused.returncode != 0 and "401" in refused.stdout + refused.stderr
        done = pip_install(logged_in, tmp_path / "pip", "alpha")
        assert done.returncode == 0, done.stderr
        assert installed(tmp_path / "pip") == {"alpha": "1.0", "beta": "1.0", "gamma": "1.0"}
        done = uv_install(logged_in, tmp_path / "uv", tmp_path / "uv-cache", "alpha")
        assert done.returncode == 0, done.stderr
        assert set(installed(tmp_path / "uv")) == {"alpha", "beta", "gamma"}
        assert requests.get(proxy.url + "/healthz", timeout=10).status_code == 200
        up.stop()  # an upstream failure is logged and reported: without its credentials
        assert requests.get(logged_in + "/delta/", timeout=30).status_code == 502
        deadline = time.monotonic() + 10  # workers flush what they saw about once a second
        while '"last_error":null' in (health := requests.get(proxy.url + "/healthz", timeout=10).text):
            assert time.monotonic() < deadline, health
            time.sleep(0.2)
        dashboard = requests.get(proxy.url + "/", auth=("alice", "wonderland"), timeout=10).text
        assert "127.0.0.1" in health and "127.0.0.1" in dashboard
        for shown in (health, dashboard, proxy.logs()):
            assert SECRET not in shown
    finally:
        proxy.stop()
        up.stop()


@pytest.mark.e2e
def test_pip_needs_no_login_when_only_the_dashboard_is_guarded(tmp_path, users):
    up = Upstream(tmp_path / "up").start()
    add_chain(up)
    proxy = Proxy(tmp_path / "cache", up.env(), PYPI_AUTH_FILE=str(users),
                  PYPI_AUTH_SCOPE="dashboard").start()
    try:
        done = pip_install(f"{proxy.url}/simple", tmp_path / "pip", "alpha")
        assert done.returncode == 0, done.stderr
        assert requests.get(proxy.url + "/stats.json", timeout=10).status_code == 401
        stats = requests.get(proxy.url + "/stats.json", auth=("bob", "builder"), timeout=10)
        assert {p["name"] for p in stats.json()["project_list"]} == {"alpha", "beta", "gamma"}
    finally:
        proxy.stop()
        up.stop()
