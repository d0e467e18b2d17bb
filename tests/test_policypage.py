"""The dashboard's policy page (/policy, /policy.json), in one process with `responses` as
the upstream: refusals counted per rule, project, file and client through the `policy_refused`
signal, flushed to the catalog with the statistics, bounded there; the rules in force and a
bad reload shown. tests/test_policypage_e2e.py runs it under gunicorn and in chromium."""
from __future__ import annotations

import time

import bcrypt
import pytest
import responses

from pypicache.catalogrefusals import REFUSALS_KEPT, RefusalKey, write_refusals

from .conftest import FILES, MIRROR
from .test_policy import DEMO, JSON_ACCEPT

COOLDOWN = '[cooldown]\nmin-age = "7d"\n'


@pytest.fixture
def served(make_app, tmp_path):
    """make(policy text, **settings) -> (app, client, policy file, flush) with DEMO upstream."""
    def make(text: str, **settings):
        path = tmp_path / "policy.toml"
        path.write_text(text)
        responses.get(f"{MIRROR}/demo/", json=DEMO, content_type=JSON_ACCEPT)
        responses.get(f"{FILES}/ab/demo-1.0.tar.gz", body=b"old")
        app = make_app(policy_file=path, **settings)
        watcher = app.extensions["pypicache"].policy.watcher
        watcher.interval = watcher.settle = 0
        return app, app.test_client(), path, app.extensions["pypicache.stats"].recorder.flush
    return make


@responses.activate
def test_refusals_are_counted_per_rule_project_file_and_client(served):
    _, client, _, flush = served(COOLDOWN + '[deny]\nprojects = ["evil"]\n')
    for _ in range(3):
        assert client.get("/packages/ab/demo-2.0.tar.gz").status_code == 403
    client.get("/packages/ab/demo-2.0.tar.gz", headers={"X-Forwarded-For": "10.0.3.7"})
    assert client.get("/simple/demo/", headers={"Accept": JSON_ACCEPT}).status_code == 200
    assert client.get("/simple/evil/").status_code == 403
    assert client.get("/policy.json").json["refused"] == []  # buffered: nothing written yet
    flush()
    data = client.get("/policy.json").json
    assert data["configured"] and data["mode"] == "enforce" and data["reported"] == []
    rows = {(r["rule"], r["project"], r["file"], r["what"], r["address"]): r
            for r in data["refused"]}
    assert set(rows) == {
        ("cooldown", "demo", "demo-2.0.tar.gz", "file", "127.0.0.1"),
        ("cooldown", "demo", "demo-2.0.tar.gz", "file", "127.0.0.1 (forwarded for 10.0.3.7)"),
        ("cooldown", "demo", "demo-2.0.tar.gz", "page", "127.0.0.1"),
        ("cooldown", "demo", "demo-2.0-py3-none-any.whl", "page", "127.0.0.1"),
        ("deny", "evil", None, "project", "127.0.0.1"),
    }
    download = rows[("cooldown", "demo", "demo-2.0.tar.gz", "file", "127.0.0.1")]
    assert download["count"] == 3 and download["entry"] == "7d" and download["user"] is None
    assert download["passes_at"].endswith("Z") and download["first"] <= download["last"]
    assert rows[("deny", "evil", None, "project", "127.0.0.1")]["entry"] == "evil"
    (held,) = data["held"]
    assert held["project"] == "demo" and held["version"] == "2.0" and held["refusals"] == 6
    assert held["files"] == ["demo-2.0-py3-none-any.whl", "demo-2.0.tar.gz"]
    assert held["passes_at"] == download["passes_at"]
    assert data["rules"]["cooldown"]["min-age"] == "7d" and data["rules"]["deny"] == ["evil"]
    page = client.get("/policy").get_data(as_text=True)
    assert 'id="refused"' in page and "demo-2.0.tar.gz" in page and held["passes_at"] in page
    assert "127.0.0.1 (forwarded for 10.0.3.7)" in page


@responses.activate
def test_counts_of_several_flushes_add_up_in_one_row(served):
    _, client, _, flush = served(COOLDOWN)
    client.get("/packages/ab/demo-2.0.tar.gz")
    flush()
    client.get("/packages/ab/demo-2.0.tar.gz")
    client.get("/packages/ab/demo-2.0.tar.gz")
    flush()
    (row,) = client.get("/policy.json").json["refused"]
    assert row["count"] == 3


@responses.activate
def test_report_mode_rows_are_apart_and_marked(served):
    _, client, _, flush = served('mode = "report"\n' + COOLDOWN)
    responses.get(f"{FILES}/ab/demo-2.0.tar.gz", body=b"new")
    assert client.get("/packages/ab/demo-2.0.tar.gz").status_code == 200
    flush()
    data = client.get("/policy.json").json
    assert data["refused"] == [] and data["mode"] == "report"
    (row,) = data["reported"]
    assert row["mode"] == "report" and row["file"] == "demo-2.0.tar.gz"
    assert data["held"][0]["mode"] == "report"
    page = client.get("/policy").get_data(as_text=True)
    assert 'id="reported"' in page and 'class="pill report">would' in page


@responses.activate
def test_the_user_is_named_when_logged_in(served, tmp_path):
    users = tmp_path / "htpasswd"
    users.write_text("ann:" + bcrypt.hashpw(b"pw-of-ann", bcrypt.gensalt(4)).decode() + "\n")
    _, client, _, flush = served(COOLDOWN, auth_file=users, auth_scope="all")
    assert client.get("/packages/ab/demo-2.0.tar.gz", auth=("ann", "pw-of-ann")).status_code == 403
    flush()
    (row,) = client.get("/policy.json", auth=("ann", "pw-of-ann")).json["refused"]
    assert row["user"] == "ann"
    # Guarded like the dashboard when only the dashboard is (downloads are anonymous then).
    _, client, _, _ = served(COOLDOWN, auth_file=users, auth_scope="dashboard")
    for url in ("/policy", "/policy.json"):
        assert client.get(url).status_code == 401
        assert client.get(url, auth=("ann", "pw-of-ann")).status_code == 200


@responses.activate
def test_a_bad_reload_is_shown_with_the_last_good_rules(served):
    _, client, path, _ = served('[deny]\nprojects = ["evil"]\n')
    path.write_text('[deny]\nprojects = ["evil"]\nproject = ["typo"]\n')
    data = client.get("/policy.json").json
    assert data["rules"]["deny"] == ["evil"] and data["path"] == str(path)
    assert data["error"].startswith("deny.project: unknown key") and data["error_since"]
    assert "deny.project: unknown key" in client.get("/policy").get_data(as_text=True)


def test_without_a_policy_the_page_says_so(client):
    page = client.get("/policy")
    assert page.status_code == 200 and 'id="no-policy"' in page.get_data(as_text=True)
    data = client.get("/policy.json").json
    assert data["configured"] is False and data["refused"] == [] and data["rules"] == {}
    assert 'href="/policy"' in client.get("/").get_data(as_text=True)  # the dashboard's link


def test_the_catalog_keeps_the_last_refusals_only(app):
    catalog = app.extensions["pypicache"].catalog
    now = time.time()
    pending = {RefusalKey("enforce", "deny", f"p{i}", f"p{i}-1.0.tar.gz", "file", "10.0.0.1", ""):
               [1, now - 1000 + i, now - 1000 + i, f"p{i}", None]
               for i in range(REFUSALS_KEPT + 100)}
    catalog._transaction(lambda db: write_refusals(db, pending))
    rows = catalog.refusals()
    assert len(rows) == REFUSALS_KEPT
    assert rows[0].key.project == f"p{REFUSALS_KEPT + 99}"  # the last refused first
    assert {row.key.project for row in rows} == {f"p{i}" for i in range(100, REFUSALS_KEPT + 100)}


@responses.activate
def test_a_failed_flush_keeps_the_refusals_for_the_next(served, monkeypatch):
    import sqlite3

    app, client, _, flush = served(COOLDOWN)
    catalog = app.extensions["pypicache"].catalog
    client.get("/packages/ab/demo-2.0.tar.gz")
    real = catalog.add_stats

    def locked(*args, **kwargs):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(catalog, "add_stats", locked)
    flush()
    monkeypatch.setattr(catalog, "add_stats", real)
    client.get("/packages/ab/demo-2.0.tar.gz")
    flush()
    (row,) = client.get("/policy.json").json["refused"]
    assert row["count"] == 2
