"""The policy: its file parsed and validated (policyfile.py), its decisions (policy.py),
and, in one process with `responses` as the upstream, what pages, files, /healthz and
/metrics show of it (pypicache/policyserve.py). tests/test_policy_e2e.py runs real servers."""
from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import time
from datetime import datetime, timezone

import pytest
import responses

from pypicache import config, policy, policyfile, policywatch
from pypicache.pagemodel import File, Project
from pypicache.policyfile import PolicyError, parse

from .conftest import FILES, MIRROR

NOW = time.time()
DAY = 86400.0


def stamp(seconds_ago: float) -> str:
    """An index's upload-time, `seconds_ago` before NOW."""
    moment = datetime.fromtimestamp(NOW - seconds_ago, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def rules(text: str) -> policyfile.Rules:
    return parse(text.encode())


def refusal(r, project, filename, uploaded, now=NOW):
    return policy.file_refusal(r, project, filename, uploaded, now)


# --- the file ------------------------------------------------------------------------------
@pytest.mark.parametrize("text, seconds", [
    ("7d", 7 * DAY), ("36h", 36 * 3600), ("90m", 5400), ("3600s", 3600), ("2w", 14 * DAY),
    ("P7D", 7 * DAY), ("PT36H", 36 * 3600), ("P1DT12H", 36 * 3600), ("PT90M", 5400),
    ("PT3600S", 3600), ("P2W", 14 * DAY), ("pt1.5s", 1.5),
])
def test_each_form_of_min_age(text, seconds):
    assert rules(f'[cooldown]\nmin-age = "{text}"').min_age == seconds


@pytest.mark.parametrize("text", ["7", "7 days", "P1M", "P1Y", "P", "PT", "P1DT", "0d", "-1d",
                                  "PT0S", "d7", ""])
def test_bad_min_age_says_where_and_what(text):
    with pytest.raises(PolicyError) as caught:
        rules(f'[cooldown]\nmin-age = "{text}"')
    assert caught.value.key == "cooldown.min-age"
    assert repr(text) in str(caught.value) and repr(text) not in caught.value.public


def test_the_example_of_the_issue_without_advisories():
    r = rules("""
mode = "enforce"
[cooldown]
min-age = "7d"
exempt = ["corp-*", "certifi"]
allow = ["urllib3==2.6.1"]
freeze-at = "2026-11-20T00:00:00Z"
unknown-time = "hold"
[deny]
projects = ["evil-pkg", "numpy==2.4.0", "left-pad>=1.3"]
[allow-only]
projects = []
""")
    assert r.mode == "enforce" and r.min_age == 7 * DAY and r.unknown_time == "hold"
    assert r.exempt == ("corp-*", "certifi")
    assert r.freeze_at == datetime(2026, 11, 20, tzinfo=timezone.utc).timestamp()
    assert r.denied_projects == {"evil-pkg"} and set(r.denied_versions) == {"numpy", "left-pad"}
    assert r.allow_only == () and len(r.digest) == 16


def test_an_empty_file_is_a_policy_that_refuses_nothing():
    r = rules("")
    assert r.mode == "enforce" and not r.timed and not policy.touches(r, "anything")


def test_freeze_at_may_be_a_toml_date_time_but_must_have_an_offset():
    assert rules("[cooldown]\nfreeze-at = 2026-11-20T01:00:00+01:00").freeze_at == \
        datetime(2026, 11, 20, tzinfo=timezone.utc).timestamp()
    for value in ['"2026-11-20T00:00:00"', "2026-11-20T00:00:00", "2026-11-20", '"yesterday"', "3"]:
        with pytest.raises(PolicyError, match="cooldown.freeze-at"):
            rules(f"[cooldown]\nfreeze-at = {value}")


@pytest.mark.parametrize("text, where", [
    ('mode = "enforcing"', "mode"),
    ("[cooldown]\nmin_age = \"7d\"", "cooldown.min_age"),  # a typo must not turn a rule off
    ("[cooldown]\nexcempt = []", "cooldown.excempt"),
    ("colldown = 1", "colldown"),
    ("[deny]\nproject = [\"x\"]", "deny.project"),
    ("[allow-only]\nnames = []", "allow-only.names"),
    ('[cooldown]\nunknown-time = "drop"', "cooldown.unknown-time"),
    ('[cooldown]\nexempt = "corp-*"', "cooldown.exempt"),
    ("[cooldown]\nmin-age = 7", "cooldown.min-age"),
    ('[deny]\nprojects = ["numpy[extra]==1"]', "deny.projects[0]"),
    ('[deny]\nprojects = ["ok", "numpy ; python_version<\'3\'"]', "deny.projects[1]"),
    ('[deny]\nprojects = ["not a name!"]', "deny.projects[0]"),
    ('[cooldown]\nallow = ["urllib3>=2"]', "cooldown.allow[0]"),
    ('[cooldown]\nallow = ["urllib3==2.*"]', "cooldown.allow[0]"),
    ('[cooldown]\nallow = ["urllib3"]', "cooldown.allow[0]"),
    ('[allow-only]\nprojects = ["a b"]', "allow-only.projects[0]"),
    ("deny = 3", "deny"),
])
def test_bad_values_and_unknown_keys_are_errors_that_say_where(text, where):
    with pytest.raises(PolicyError) as caught:
        rules(text)
    assert caught.value.key == where


def test_advisories_from_a_source_that_is_not_there_are_a_bad_policy():
    with pytest.raises(PolicyError, match="advisories.osv: no such directory or zip"):
        rules('[advisories]\nosv = "/nonexistent/osv"\nblock = ["malicious"]')


def test_toml_syntax_and_encoding_errors():
    with pytest.raises(PolicyError, match="is not valid TOML"):
        rules("[cooldown\nmin-age = 7d")
    with pytest.raises(PolicyError, match="is not UTF-8"):
        parse(b"mode = \"\xff\"")


def test_the_setting_checks_the_file_at_start(tmp_path):
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text('[cooldown]\nmin-age = "7d"\n')
    bad.write_text('[cooldown]\nmin-age = "a week"\n')
    settings = config.load({"PYPI_POLICY_FILE": str(good)})
    assert settings.policy_file == good
    config.check_policy(settings)
    config.check_policy(config.load({}))
    assert config.load({}).policy_file is None
    with pytest.raises(config.ConfigError) as caught:
        config.check_policy(config.load({"PYPI_POLICY_FILE": str(bad)}))
    message = str(caught.value)
    assert message.startswith("PYPI_POLICY_FILE=") and "cooldown.min-age" in message
    assert "\n" not in message
    with pytest.raises(config.ConfigError, match="PYPI_POLICY_FILE=.*must be a readable file"):
        config.load({"PYPI_POLICY_FILE": str(tmp_path / "missing.toml")})


def test_the_watcher_reloads_and_keeps_the_last_good_rules(tmp_path, caplog):
    path = tmp_path / "policy.toml"
    path.write_text('[cooldown]\nmin-age = "7d"\n')
    watcher = policywatch.Watcher(path, interval=0, settle=0)
    first = watcher.current()
    assert first.min_age == 7 * DAY
    path.write_text('[cooldown]\nmin-age = "36h"\n')
    assert watcher.current().min_age == 36 * 3600 and watcher.error is None
    with caplog.at_level(logging.WARNING, logger="pypicache.policywatch"):
        path.write_text('[cooldown]\nmin-age = "36 hours"\n')
        assert watcher.current().min_age == 36 * 3600  # the last good one
        assert watcher.current().min_age == 36 * 3600
    assert watcher.error.key == "cooldown.min-age"
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1  # once
    assert "the last good one stays in force" in caplog.records[0].message
    path.unlink()
    assert watcher.current().min_age == 36 * 3600 and "cannot be read" in str(watcher.error)
    path.write_text('mode = "report"\n')
    assert watcher.current().mode == "report" and watcher.error is None


def test_a_worker_started_with_a_bad_file_in_place_takes_the_last_good_copy(tmp_path):
    path, kept = tmp_path / "policy.toml", tmp_path / "cache" / "policy" / "last-good.toml"
    path.write_text('[deny]\nprojects = ["evil"]\n')
    watcher = policywatch.Watcher(path, kept, interval=0, settle=0)
    assert not kept.exists()  # building writes nothing to the cache
    path.write_text('[deny]\nprojects = ["evil", "worse"]\n')
    assert watcher.current().denied_projects == {"evil", "worse"}
    assert kept.read_text() == path.read_text()  # each good new version is kept
    path.write_text('[deny]\nprojects = ["evil", "worse"]\ntypo = 1\n')
    later = policywatch.Watcher(path, kept)
    assert later.rules.denied_projects == {"evil", "worse"} and later.error.key == "deny.typo"
    kept.unlink()
    with pytest.raises(PolicyError, match="deny.typo: unknown key"):
        policywatch.Watcher(path, kept)


def test_the_watcher_takes_a_new_version_only_once_it_has_settled(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text('[deny]\nprojects = ["evil"]\n')
    watcher = policywatch.Watcher(path, interval=0, settle=3600)
    path.write_text("")  # truncated, about to be written again: no policy to take
    assert watcher.current().denied_projects == {"evil"}
    path.write_text('[deny]\nprojects = ["evil", "worse"]\n')
    assert watcher.current().denied_projects == {"evil"}
    settled = time.time() - 3601
    os.utime(path, (settled, settled))
    assert watcher.current().denied_projects == {"evil", "worse"}
    path.write_text('[deny]\nprojects = ["worst"]\n')
    ahead = time.time() + 7200  # a clock apart: the mtime says nothing, the file is read
    os.utime(path, (ahead, ahead))
    assert watcher.current().denied_projects == {"worst"}


def test_the_watcher_looks_at_the_file_at_most_once_per_interval(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text('mode = "report"\n')
    watcher = policywatch.Watcher(path, interval=3600)
    path.write_text('mode = "enforce"\n')
    assert watcher.current().mode == "report"


# --- decisions -----------------------------------------------------------------------------
COOL = rules("""
[cooldown]
min-age = "7d"
exempt = ["corp-*", "certifi"]
allow = ["urllib3==2.6.1"]
""")


def test_cooldown_holds_young_files_until_they_are_old_enough():
    held = refusal(COOL, "urllib3", "urllib3-2.6.2-py3-none-any.whl", stamp(3600))
    assert held.rule == "cooldown" and held.until == pytest.approx(NOW - 3600 + 7 * DAY)
    assert held.header.startswith("cooldown 7d; passes-at=")
    assert "it passes at" in held.message("a file")
    assert refusal(COOL, "urllib3", "urllib3-2.6.0.tar.gz", stamp(8 * DAY)) is None
    later = NOW - 3600 + 7 * DAY + 1
    assert refusal(COOL, "urllib3", "urllib3-2.6.2-py3-none-any.whl", stamp(3600), later) is None


def test_exempt_projects_and_break_glass_releases_pass_the_cooldown():
    assert refusal(COOL, "corp-auth", "corp_auth-1.0-py3-none-any.whl", stamp(60)) is None
    assert refusal(COOL, "certifi", "certifi-2026.1.1.tar.gz", stamp(60)) is None
    assert refusal(COOL, "urllib3", "urllib3-2.6.1-py3-none-any.whl", stamp(60)) is None
    assert refusal(COOL, "urllib3", "urllib3-2.6.1.tar.gz", stamp(60)) is None
    assert refusal(COOL, "urllib3", "urllib3-2.6.1.0.tar.gz", stamp(60)) is None  # same version
    assert refusal(COOL, "urllib3", "urllib3-2.6.11.tar.gz", stamp(60)).rule == "cooldown"
    assert not policy.touches(COOL, "corp-auth") and policy.touches(COOL, "urllib3")


def test_freeze_at_refuses_what_was_uploaded_after_it_even_when_old_enough():
    r = rules(f'[cooldown]\nfreeze-at = "{stamp(10 * DAY)}"\nallow = ["six==1.17.0"]')
    frozen = refusal(r, "six", "six-1.18.0.tar.gz", stamp(9 * DAY))
    assert frozen.rule == "freeze-at" and frozen.until is None
    assert refusal(r, "six", "six-1.16.0.tar.gz", stamp(11 * DAY)) is None
    assert refusal(r, "six", "six-1.17.0.tar.gz", stamp(9 * DAY)) is None  # break-glass


@pytest.mark.parametrize("uploaded", [None, "", "last tuesday"])
def test_unknown_time_holds_or_serves(uploaded):
    hold = rules('[cooldown]\nmin-age = "7d"')
    serve = rules('[cooldown]\nmin-age = "7d"\nunknown-time = "serve"')
    assert refusal(hold, "six", "six-1.0.tar.gz", uploaded).rule == "unknown-time"
    assert refusal(serve, "six", "six-1.0.tar.gz", uploaded) is None
    assert refusal(rules(""), "six", "six-1.0.tar.gz", uploaded) is None  # no rule of time


def test_deny_a_project_or_the_versions_a_specifier_names():
    r = rules('[deny]\nprojects = ["Evil_Pkg", "numpy==2.4.0", "left-pad>=1.3", "left-pad<0.5"]')
    assert policy.project_refusal(r, "evil-pkg").header == "deny Evil_Pkg"
    assert policy.project_refusal(r, "numpy") is None
    assert refusal(r, "numpy", "numpy-2.4.0-cp312-cp312-manylinux_2_17_x86_64.whl", None).rule == "deny"
    assert refusal(r, "numpy", "numpy-2.3.9.tar.gz", None) is None
    assert refusal(r, "left-pad", "left_pad-1.4rc1.tar.gz", None).entry == "left-pad>=1.3"
    assert refusal(r, "left-pad", "left_pad-0.4.tar.gz", None).entry == "left-pad<0.5"
    assert refusal(r, "left-pad", "left_pad-1.0.tar.gz", None) is None
    assert refusal(r, "left-pad", "left-pad-installer.exe", None).rule == "deny"  # no version
    assert refusal(r, "numpy", "numpy-2.4.0.tar.gz.metadata", None).rule == "deny"


def test_deny_wins_over_break_glass_and_exemption():
    r = rules('[cooldown]\nmin-age = "1d"\nexempt = ["six"]\nallow = ["six==1.0"]\n'
              '[deny]\nprojects = ["six==1.0"]')
    assert refusal(r, "six", "six-1.0.tar.gz", stamp(60)).rule == "deny"


def test_allow_only_serves_only_the_projects_it_names():
    r = rules('[allow-only]\nprojects = ["requests", "corp-*"]')
    assert policy.project_refusal(r, "requests") is None
    assert policy.project_refusal(r, "corp-tools") is None
    assert policy.project_refusal(r, "urllib3").rule == "allow-only"


def sample_project() -> Project:
    def f(name, ago):
        return File(name, "ab/" + name, {"sha256": "ab" * 32}, upload_time=stamp(ago))
    return Project("demo", (f("demo-1.0-py3-none-any.whl", 30 * DAY), f("demo-1.0.tar.gz", 30 * DAY),
                            f("demo-2.0-py3-none-any.whl", 3600), f("demo-2.0.tar.gz", 2 * DAY)),
                   versions=("1.0", "2.0", "3.0"))


def test_a_page_verdict_and_the_page_without_its_refused_files():
    verdict = policy.judge(rules('[cooldown]\nmin-age = "7d"'), sample_project(), NOW)
    assert sorted(verdict.refused) == ["demo-2.0-py3-none-any.whl", "demo-2.0.tar.gz"]
    assert verdict.changes_at == pytest.approx(NOW - 2 * DAY + 7 * DAY)  # the first to pass
    filtered = policy.without(sample_project(), verdict.refused)
    assert [f.filename for f in filtered.files] == ["demo-1.0-py3-none-any.whl", "demo-1.0.tar.gz"]
    assert filtered.versions == ("1.0", "3.0")  # 3.0 has no files: nothing of it was held
    again = policy.judge(rules('[cooldown]\nmin-age = "7d"'), sample_project(), NOW)
    assert again.key == verdict.key
    other = policy.judge(rules('[cooldown]\nmin-age = "36h"'), sample_project(), NOW)
    assert sorted(other.refused) == ["demo-2.0-py3-none-any.whl"] and other.key != verdict.key


def test_a_version_keeps_its_place_while_one_of_its_files_is_served():
    project = sample_project()
    refused = {"demo-2.0-py3-none-any.whl": policy.Refusal("cooldown", "7d")}
    assert policy.without(project, refused).versions == ("1.0", "2.0", "3.0")


# --- served, in one process ----------------------------------------------------------------
JSON_ACCEPT = "application/vnd.pypi.simple.v1+json"


BODIES = {"demo-1.0.tar.gz": b"old", "demo-2.0.tar.gz": b"new"}


def json_page(*files: tuple[str, str | None]) -> dict:
    entries = []
    for filename, uploaded in files:
        sha256 = hashlib.sha256(BODIES.get(filename, b"any")).hexdigest()
        entry = {"filename": filename, "url": f"{FILES}/ab/{filename}", "hashes": {"sha256": sha256},
                 "requires-python": ">=3.8", "size": 3, "yanked": False}
        if uploaded is not None:
            entry["upload-time"] = uploaded
        entries.append(entry)
    versions = sorted({policy.version_of(name).public for name, _ in files})
    return {"meta": {"api-version": "1.1"}, "name": "demo", "files": entries, "versions": versions}


DEMO = json_page(("demo-1.0-py3-none-any.whl", stamp(30 * DAY)), ("demo-1.0.tar.gz", stamp(30 * DAY)),
                 ("demo-2.0-py3-none-any.whl", stamp(3600)), ("demo-2.0.tar.gz", stamp(3600)))


@pytest.fixture
def policed(make_app, tmp_path):
    """make(policy text) -> (app, client, policy file) with DEMO as the upstream's page."""
    def make(text: str, page: dict = DEMO):
        path = tmp_path / "policy.toml"
        path.write_text(text)
        responses.get(f"{MIRROR}/demo/", json=page, content_type=JSON_ACCEPT)
        responses.get(f"{FILES}/ab/demo-1.0.tar.gz", body=b"old")
        app = make_app(policy_file=path)
        watcher = app.extensions["pypicache"].policy.watcher
        watcher.interval = watcher.settle = 0  # every request looks, and takes what it finds
        return app, app.test_client(), path
    return make


def filenames(response) -> list[str]:
    return [entry["filename"] for entry in response.get_json()["files"]]


@responses.activate
def test_a_held_release_leaves_the_json_and_html_pages(policed):
    _, client, _ = policed('[cooldown]\nmin-age = "7d"')
    page = client.get("/simple/demo/", headers={"Accept": JSON_ACCEPT})
    assert page.status_code == 200
    assert filenames(page) == ["demo-1.0-py3-none-any.whl", "demo-1.0.tar.gz"]
    assert page.get_json()["versions"] == ["1.0"]
    assert page.headers["X-Pypicache-Policy"].startswith("filtered cooldown=2; changes-at=")
    assert "-p" in page.headers["ETag"]
    assert int(page.headers["Cache-Control"].split("=")[1].split(",")[0]) <= 600
    html = client.get("/simple/demo/").get_data(as_text=True)
    assert "demo-1.0.tar.gz" in html and "demo-2.0" not in html
    zipped = client.get("/simple/demo/", headers={"Accept": JSON_ACCEPT, "Accept-Encoding": "gzip"})
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert [e["filename"] for e in json.loads(gzip.decompress(zipped.data))["files"]] == \
        filenames(page)
    # Served directly, links are absolute to the host asked, as without a policy.
    assert page.get_json()["files"][0]["url"].startswith("http://localhost/packages/")
    revalidated = client.get("/simple/demo/", headers={"Accept": JSON_ACCEPT,
                                                       "If-None-Match": page.headers["ETag"]})
    assert revalidated.status_code == 304


@responses.activate
def test_a_held_release_is_no_release_of_the_json_api_either(policed):
    """What Renovate and auditors read: the newest release the policy allows, and no other."""
    _, client, path = policed('[cooldown]\nmin-age = "7d"')
    document = client.get("/pypi/demo/json")
    assert document.status_code == 200, document.data
    assert document.json["info"]["version"] == "1.0"
    assert list(document.json["releases"]) == ["1.0"]
    assert {entry["filename"] for entry in document.json["urls"]} == {
        "demo-1.0-py3-none-any.whl", "demo-1.0.tar.gz"}
    assert client.get("/pypi/demo/2.0/json").status_code == 404
    path.write_text('[deny]\nprojects = ["demo"]')
    denied = client.get("/pypi/demo/json")
    assert denied.status_code == 403 and denied.headers["X-Pypicache-Policy"].startswith("deny")
    path.write_text("")  # no rule: every release again
    assert list(client.get("/pypi/demo/json").json["releases"]) == ["1.0", "2.0"]


@responses.activate
def test_an_untouched_page_is_the_cached_body_with_its_own_etag(policed):
    _, client, _ = policed('[cooldown]\nmin-age = "7d"\nexempt = ["demo"]')
    page = client.get("/simple/demo/", headers={"Accept": JSON_ACCEPT})
    assert len(filenames(page)) == 4 and "X-Pypicache-Policy" not in page.headers
    assert "-p" not in page.headers["ETag"]


@responses.activate
def test_a_held_file_is_403_with_the_rule_and_when_it_passes(policed):
    _, client, _ = policed('[cooldown]\nmin-age = "7d"')
    for path in ("/packages/ab/demo-2.0.tar.gz", "/packages/ab/demo-2.0-py3-none-any.whl.metadata"):
        for method in (client.get, client.head):
            answer = method(path)
            assert answer.status_code == 403
            assert answer.headers["X-Pypicache-Policy"].startswith("cooldown 7d; passes-at=")
    body = client.get("/packages/ab/demo-2.0.tar.gz").get_data(as_text=True)
    assert "held by the cooldown (min-age 7d)" in body and "it passes at" in body
    assert client.get("/packages/ab/demo-1.0.tar.gz").data == b"old"  # no page asked first
    assert not any("demo-2.0" in call.request.url for call in responses.calls)


@responses.activate
def test_a_denied_project_is_403_without_asking_the_upstream(policed):
    _, client, _ = policed('[deny]\nprojects = ["demo"]')
    answer = client.get("/simple/demo/")
    assert answer.status_code == 403 and answer.headers["X-Pypicache-Policy"] == "deny demo"
    assert "the project demo is denied" in answer.get_data(as_text=True)
    assert client.get("/packages/ab/demo-1.0.tar.gz").status_code == 403
    assert len(responses.calls) == 0


@responses.activate
def test_deny_by_specifier_and_allow_only_on_pages(policed):
    _, client, path = policed('[deny]\nprojects = ["demo>=2"]')
    assert filenames(client.get("/simple/demo/", headers={"Accept": JSON_ACCEPT})) == [
        "demo-1.0-py3-none-any.whl", "demo-1.0.tar.gz"]
    assert client.get("/packages/ab/demo-2.0.tar.gz").headers["X-Pypicache-Policy"] == "deny demo>=2"
    path.write_text('[allow-only]\nprojects = ["other"]\n')
    answer = client.get("/simple/demo/")
    assert answer.status_code == 403 and answer.headers["X-Pypicache-Policy"] == "allow-only"


@responses.activate
def test_a_project_whose_files_are_all_held_has_an_empty_page(policed):
    _, client, _ = policed('[cooldown]\nmin-age = "7d"',
                           json_page(("demo-2.0-py3-none-any.whl", stamp(60))))
    page = client.get("/simple/demo/", headers={"Accept": JSON_ACCEPT})
    assert page.status_code == 200 and page.get_json()["files"] == []
    assert page.get_json()["versions"] == []


@responses.activate
def test_unknown_upload_times_follow_unknown_time(policed, tmp_path):
    _, client, path = policed('[cooldown]\nmin-age = "7d"',
                              json_page(("demo-1.0.tar.gz", None), ("demo-2.0.tar.gz", stamp(30 * DAY))))
    assert filenames(client.get("/simple/demo/", headers={"Accept": JSON_ACCEPT})) == ["demo-2.0.tar.gz"]
    assert client.get("/packages/ab/demo-1.0.tar.gz").headers["X-Pypicache-Policy"] == \
        "unknown-time hold"
    path.write_text('[cooldown]\nmin-age = "7d"\nunknown-time = "serve"\n')
    assert len(filenames(client.get("/simple/demo/", headers={"Accept": JSON_ACCEPT}))) == 2
    assert client.get("/packages/ab/demo-1.0.tar.gz").data == b"old"


@responses.activate
def test_report_mode_serves_everything_and_logs_and_counts(policed, caplog):
    _, client, _ = policed('mode = "report"\n[cooldown]\nmin-age = "7d"')
    with caplog.at_level(logging.WARNING, logger="pypicache.policyserve"):
        page = client.get("/simple/demo/", headers={"Accept": JSON_ACCEPT})
        assert len(filenames(page)) == 4 and "X-Pypicache-Policy" not in page.headers
        responses.get(f"{FILES}/ab/demo-2.0.tar.gz", body=b"new")
        assert client.get("/packages/ab/demo-2.0.tar.gz").data == b"new"
    lines = [r.getMessage() for r in caplog.records]
    assert any("would refuse (report mode) 2 files of the page of demo" in line for line in lines)
    assert any("would refuse (report mode) the file demo-2.0.tar.gz of demo to 127.0.0.1"
               in line for line in lines)
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'pypicache_policy_refusals_total{mode="report",rule="cooldown",what="page"} 1.0' in metrics
    assert 'pypicache_policy_refusals_total{mode="report",rule="cooldown",what="file"} 1.0' in metrics


@responses.activate
def test_every_refusal_is_logged_once_with_the_user_and_never_the_password(policed, caplog,
                                                                         tmp_path, make_app):
    import bcrypt

    passwords = tmp_path / "htpasswd"
    passwords.write_text("ann:" + bcrypt.hashpw(b"s3cret-pw", bcrypt.gensalt(4)).decode() + "\n")
    path = tmp_path / "policy.toml"
    path.write_text('[cooldown]\nmin-age = "7d"\n')
    responses.get(f"{MIRROR}/demo/", json=DEMO, content_type=JSON_ACCEPT)
    client = make_app(policy_file=path, auth_file=passwords).test_client()
    with caplog.at_level(logging.WARNING, logger="pypicache.policyserve"):
        answer = client.get("/packages/ab/demo-2.0.tar.gz", auth=("ann", "s3cret-pw"))
    assert answer.status_code == 403
    lines = [r.getMessage() for r in caplog.records if r.name == "pypicache.policyserve"]
    assert len(lines) == 1
    assert "refused the file demo-2.0.tar.gz of demo to 127.0.0.1 user ann: cooldown 7d" in lines[0]
    assert "s3cret" not in caplog.text and "Basic" not in caplog.text
    metrics = client.get("/metrics", auth=("ann", "s3cret-pw")).get_data(as_text=True)
    assert 'pypicache_policy_refusals_total{mode="enforce",rule="cooldown",what="file"} 1.0' in metrics


@responses.activate
def test_healthz_says_a_bad_new_policy_was_not_applied(policed):
    _, client, path = policed('[deny]\nprojects = ["demo"]')
    health = client.get("/healthz").get_json()["policy"]
    assert health["status"] == "ok" and health["mode"] == "enforce"
    path.write_text('[deny]\nprojects = ["demo", "secret-name[x]"]\n')
    assert client.get("/simple/demo/").status_code == 403  # the last good policy
    health = client.get("/healthz")
    assert health.status_code == 200
    state = health.get_json()["policy"]
    assert state["status"] == "last good policy kept"
    assert state["error"].startswith("deny.projects[1]: must be a name")
    assert "secret-name" not in health.get_data(as_text=True)  # an open page names no project


def test_no_policy_no_policy_service(app, client):
    assert app.extensions["pypicache"].policy is None
    assert "policy" not in client.get("/healthz").get_json()


def test_a_bad_policy_file_stops_gunicorn_with_one_line(tmp_path):
    import subprocess
    import sys

    from .servers import ROOT, clean_environ

    path = tmp_path / "policy.toml"
    path.write_text("[cooldown]\nmin-age = \"7d\"\nfreeze = \"2026-01-01T00:00:00Z\"\n")
    env = clean_environ() | {"PYPI_POLICY_FILE": str(path), "PYPI_CACHE_DIR": str(tmp_path / "c"),
                             "PYPI_MIRROR_URL": MIRROR, "PYPI_FILES_URL": FILES}
    done = subprocess.run([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--check-config"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert lines == [f"pypicache: bad configuration: PYPI_POLICY_FILE={str(path)!r}: the policy "
                     "file cooldown.freeze: unknown key (known: allow, exempt, freeze-at, "
                     "min-age, unknown-time)"]


# --- the command line ----------------------------------------------------------------------
def test_policy_check_prints_the_rules_or_fails_with_status_1(app, tmp_path):
    runner = app.test_cli_runner()
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text('[cooldown]\nmin-age = "P7D"\nallow = ["urllib3==2.6.1"]\n'
                    '[deny]\nprojects = ["evil-pkg", "numpy==2.4.0"]\n')
    bad.write_text('[deny]\nprojects = ["numpy==2.4.0"]\n[advisories]\nosv = "/nonexistent"\n')
    result = runner.invoke(args=["pypicache", "policy", "check", str(good)])
    assert result.exit_code == 0, result.output
    assert "valid (version " in result.output
    for words in ("files uploaded less than P7D (604800 s) ago are held",
                  "break-glass releases: urllib3==2.6.1", "deny: evil-pkg (the whole project)",
                  "deny: numpy==2.4.0 (these versions)", "allow-only: every project"):
        assert words in result.output
    result = runner.invoke(args=["pypicache", "policy", "check", str(bad)])
    assert result.exit_code == 1 and "advisories.osv: no such directory or zip" in result.output
    result = runner.invoke(args=["pypicache", "policy", "check", str(tmp_path / "none.toml")])
    assert result.exit_code == 1 and "cannot be read" in result.output


@responses.activate
def test_policy_explain_says_what_happens_to_each_file(policed):
    app, _, _ = policed('[cooldown]\nmin-age = "7d"\n[deny]\nprojects = ["evil"]\n')
    runner = app.test_cli_runner()
    result = runner.invoke(args=["pypicache", "policy", "explain", "demo"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.startswith("demo-1.0.tar.gz") and line.endswith("served") for line in lines)
    assert any(line.startswith("demo-2.0.tar.gz") and "refused: cooldown 7d; passes-at=" in line
               for line in lines)
    assert lines[-1] == "4 files of demo; mode enforce"
    result = runner.invoke(args=["pypicache", "policy", "explain", "demo==2.0"])
    assert result.output.splitlines()[-1] == "2 files of demo; mode enforce"
    result = runner.invoke(args=["pypicache", "policy", "explain", "evil"])
    assert result.output.strip() == "evil: refused, the whole project (deny evil); mode enforce"


def test_filtered_bodies_kept_in_memory_are_bounded_by_their_bytes():
    from pypicache.policyserve import _Kept

    kept = _Kept(10, max_bytes=100)
    for i in range(5):
        kept.keep(i, b"x" * 40, None)
    assert list(kept) == [3, 4] and kept.bytes == 80
    kept.keep(4, b"y" * 10, None)
    assert kept.bytes == 50 and kept.get_fresh(4, 0) == b"y" * 10
    kept.keep("big", b"z" * 101, None)  # bigger than the whole: not kept
    assert "big" not in kept and kept.bytes == 50
    assert kept.get_fresh(3, 0) is not None
    kept.keep(5, b"w", 10.0)
    assert kept.get_fresh(5, 9.9) == b"w" and kept.get_fresh(5, 10.0) is None  # until passed
