"""Access control: an htpasswd file of bcrypt hashes, for every route or only the dashboard's;
upstream credentials never shown. Real pip and uv log in through real gunicorn."""
from __future__ import annotations

import base64
import time

import bcrypt
import pytest
import requests

from .fixture_upstream import Upstream
from .servers import Proxy, add_chain, installed, pip_install, uv_install

SECRET = "s3cret-upstream"


def _htpasswd(path, **users: str):
    # bcrypt as `htpasswd -B` writes it ($2y$); a low cost keeps the suite fast.
    lines = [f"{user}:" + bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode().replace("$2b$", "$2y$", 1)
             for user, password in users.items()]
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
