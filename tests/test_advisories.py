"""The policy's `[advisories]`: OSV records read (pypicache/advisories.py), what they refuse and
let through the fast lane (pypicache/policy.py), and, in one process with `responses` as the
upstream, pages, files, the JSON API, reloads and the command line. tests/test_policy_e2e.py
runs them with real servers and clients."""
from __future__ import annotations

import json
import logging
import os
import re
import time
import zipfile
from pathlib import Path

import pytest
import responses
from packaging.version import Version

from pypicache import advisories, osvsource, policy, policywatch
from pypicache.pagemodel import File, Project
from pypicache.policyfile import PolicyError, parse

from .conftest import FILES, MIRROR
from .test_jsonapi import VALIDATOR
from .test_policy import DAY, JSON_ACCEPT, NOW, filenames, json_page, stamp


def record(id: str, project: str = "demo", ecosystem: str = "PyPI", **fields) -> dict:
    """An OSV record of one affected package; `fields` go into its `affected` entry, except
    the record's own (aliases, summary, details, withdrawn)."""
    own = {k: fields.pop(k) for k in ("aliases", "summary", "details", "withdrawn")
           if k in fields}
    return {"schema_version": "1.6.0", "id": id, "modified": "2026-11-01T00:00:00Z", **own,
            "affected": [{"package": {"ecosystem": ecosystem, "name": project}, **fields}]}


def ecosystem(*events: dict) -> list[dict]:
    return [{"type": "ECOSYSTEM", "events": list(events)}]


def write(directory: Path, *records: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for each in records:
        (directory / f"{each['id']}.json").write_text(json.dumps(each))
    return directory


def zipped(path: Path, *records: dict) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for each in records:
            archive.writestr(f"{each['id']}.json", json.dumps(each))
    return path


MAL = record("MAL-2026-1", "evil-pkg", versions=["1.0"], summary="Malicious code in evil-pkg")
MAL_ALL = record("MAL-2026-2", "Typo_Squat", ranges=ecosystem({"introduced": "0"}))
VULN = record("GHSA-aaaa-bbbb-cccc", "demo", aliases=["CVE-2026-1", "PYSEC-2026-1"],
              summary="Demo leaks", details="All of it.",
              ranges=ecosystem({"introduced": "0"}, {"fixed": "2.0"}))
LAST = record("PYSEC-2026-9", "lib", ranges=ecosystem({"introduced": "1.1"},
                                                     {"last_affected": "1.3"}))
GONE = record("GHSA-gone-gone-gone", "demo", withdrawn="2026-11-02T00:00:00Z",
              ranges=ecosystem({"introduced": "0"}))
NPM = record("GHSA-npm0-npm0-npm0", "demo", ecosystem="npm", ranges=ecosystem({"introduced": "0"}))
ALL = (MAL, MAL_ALL, VULN, LAST, GONE, NPM)


def affected(index, project, text) -> list[str]:
    return sorted(a.advisory.id for a in index.affecting(project, Version(text)))


# --- the records ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["dir", "zip"])
def test_a_directory_or_a_zip_of_records_indexed_by_canonical_project(tmp_path, kind):
    source = write(tmp_path / "osv", *ALL) if kind == "dir" else zipped(tmp_path / "osv.zip", *ALL)
    index = advisories.load(source)
    assert index.records == 4  # the withdrawn and the npm one count for nothing
    assert set(index.by_project) == {"evil-pkg", "typo-squat", "demo", "lib"}
    assert affected(index, "evil-pkg", "1.0") == ["MAL-2026-1"]
    assert affected(index, "evil-pkg", "1.0.0") == ["MAL-2026-1"]  # PEP 440 equality
    assert affected(index, "evil-pkg", "1.1") == []
    assert affected(index, "typo-squat", "0.0.1.dev0") == ["MAL-2026-2"]  # "0": before all
    assert index.entries("typo-squat")[0].every_version()
    assert index.by_project["evil-pkg"][0].advisory.malicious
    assert not index.by_project["demo"][0].advisory.malicious
    assert len(index.digest) == 16 and advisories.load(source).digest == index.digest


def test_ranges_fixed_is_exclusive_last_affected_inclusive():
    index = advisories.Index({"demo": (advisories._entry("x", advisories.Advisory("X"), {
        "ranges": ecosystem({"introduced": "1.0"}, {"fixed": "1.2"}, {"introduced": "2.0"},
                            {"last_affected": "2.1"}),
        "versions": ["0.5", "not a version!"]}),)})
    expectations = {"0.4": [], "0.5": ["X"], "0.9": [], "1.0": ["X"], "1.1.9": ["X"], "1.2": [],
                    "1.2rc1": ["X"], "2.0": ["X"], "2.1": ["X"], "2.1.1": [], "3": []}
    for version, expected in expectations.items():
        assert affected(index, "demo", version) == expected, version


def test_unsorted_events_limits_and_git_ranges():
    entry = advisories._compile(advisories._entry("x", advisories.Advisory("X"), {"ranges": [
        {"type": "ECOSYSTEM", "events": [{"fixed": "3.0"}, {"introduced": "2.5"}]},
        {"type": "GIT", "repo": "https://example.invalid/r", "events": [{"introduced": "abc"}]},
        {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"limit": "0.5"}]},
        {"type": "ECOSYSTEM", "events": [{"introduced": "5.0"}, {"limit": "*"}]},
        {"type": "ECOSYSTEM", "events": [{"introduced": "bogus version"}]},  # not evaluated
    ]}))
    checked = ("0.1", "0.5", "2.4", "2.5", "2.9", "3.0", "5.0", "99")
    assert [v for v in checked if entry.affects(Version(v))] == ["0.1", "2.5", "2.9", "5.0", "99"]
    assert entry.fixed == ("3.0",)


@pytest.mark.parametrize("content, problem", [
    (b"{not json", "not a JSON record"),
    (b'{"affected": []}', "not an OSV record (no id)"),
    (b'{"id": "X", "affected": {"package": 1}}', "affected or aliases is not a list"),
    (b'{"id": "X", "affected": [{"package": {"ecosystem": "PyPI", "name": "a"}, '
     b'"ranges": [{"type": "ECOSYSTEM"}]}]}', "a range without events"),
])
def test_a_bad_record_is_a_bad_source_that_names_it(tmp_path, content, problem):
    (tmp_path / "osv").mkdir()
    (tmp_path / "osv" / "BAD-1.json").write_bytes(content)
    with pytest.raises(osvsource.SourceError, match=re.escape(f"BAD-1.json: {problem}")):
        advisories.load(tmp_path / "osv")


def test_a_missing_or_broken_source_is_an_error(tmp_path):
    with pytest.raises(osvsource.SourceError, match="no such directory or zip"):
        advisories.load(tmp_path / "nothing.zip")
    (tmp_path / "half.zip").write_bytes(zipped(tmp_path / "whole.zip", *ALL).read_bytes()[:100])
    with pytest.raises(osvsource.SourceError, match="neither a directory nor a readable zip"):
        advisories.load(tmp_path / "half.zip")


def test_the_policy_table_is_validated(tmp_path):
    write(tmp_path / "osv", *ALL)
    good = parse(b'[advisories]\nosv = "osv"\nblock = ["malicious"]\nfast-lane = true\n'
                 b'ignore = ["CVE-2026-1"]', base=tmp_path)
    assert good.advisories.source == tmp_path / "osv" and good.advisories.fast_lane
    assert good.advisories.block == {"malicious"} and good.advisories.index.records == 4
    other = parse(b'[advisories]\nosv = "osv"\nblock = ["malicious"]\nfast-lane = true\n'
                  b'ignore = ["CVE-2026-1"]', base=tmp_path)
    assert other.digest == good.digest
    for text, where in [('[advisories]\nblock = ["malicious"]', "advisories.osv"),
                        ('[advisories]\nosv = "osv"\nblock = ["bad"]', "advisories.block[0]"),
                        ('[advisories]\nosv = "osv"\nfast-lane = "yes"', "advisories.fast-lane"),
                        ('[advisories]\nosv = "osv"\nfastlane = true', "advisories.fastlane"),
                        ('[advisories]\nosv = "nothing"', "advisories.osv")]:
        with pytest.raises(PolicyError) as caught:
            parse(text.encode(), base=tmp_path)
        assert caught.value.key == where, text


# --- decisions -----------------------------------------------------------------------------
def rules_of(tmp_path, text: str, *records: dict):
    write(tmp_path / "osv", *records)
    return parse(f'[advisories]\nosv = "{tmp_path / "osv"}"\n{text}'.encode())


def test_block_malicious_and_vulnerable(tmp_path):
    r = rules_of(tmp_path, 'block = ["malicious"]', *ALL)
    refusal = policy.file_refusal(r, "evil-pkg", "evil_pkg-1.0-py3-none-any.whl", None, NOW)
    assert refusal.rule == "advisory" and refusal.header == "advisory MAL-2026-1"
    assert "is reported malicious by the advisory MAL-2026-1 (Malicious code in evil-pkg)" in \
        refusal.message("evil_pkg-1.0-py3-none-any.whl")
    assert policy.file_refusal(r, "evil-pkg", "evil_pkg-1.1.tar.gz", None, NOW) is None
    assert policy.file_refusal(r, "typo-squat", "typo-squat-setup.exe", None, NOW).entry == \
        "MAL-2026-2"  # every version: a file whose name says none too
    assert policy.file_refusal(r, "demo", "demo-1.0.tar.gz", None, NOW) is None
    assert policy.touches(r, "demo") and not policy.touches(r, "numpy")
    vulnerable = rules_of(tmp_path, 'block = ["vulnerable"]', *ALL)
    assert policy.file_refusal(vulnerable, "demo", "demo-1.0.tar.gz", None, NOW).header == \
        "advisory GHSA-aaaa-bbbb-cccc"
    assert policy.file_refusal(vulnerable, "demo", "demo-2.0.tar.gz", None, NOW) is None
    ignored = rules_of(tmp_path, 'block = ["vulnerable"]\nignore = ["CVE-2026-1"]', *ALL)
    assert policy.file_refusal(ignored, "demo", "demo-1.0.tar.gz", None, NOW) is None
    nothing = rules_of(tmp_path, "", *ALL)
    assert not policy.touches(nothing, "evil-pkg")


def project(*files: tuple[str, float]) -> Project:
    return Project("demo", tuple(File(name, "ab/" + name, upload_time=stamp(ago))
                                 for name, ago in files))


FAST = project(("demo-1.0.tar.gz", 30 * DAY), ("demo-2.0.tar.gz", 3600),
               ("demo-3.0.tar.gz", 60))


@pytest.mark.parametrize("block", ["", 'block = ["malicious"]', 'block = ["vulnerable"]'])
def test_the_fast_lane_lets_the_fix_of_the_newest_served_release_through(tmp_path, block):
    r = rules_of(tmp_path, f'{block}\nfast-lane = true\n[cooldown]\nmin-age = "7d"', *ALL)
    verdict = policy.judge(r, FAST, NOW)
    # 2.0 fixes GHSA-aaaa (of 1.0, the newest release the cooldown lets through); 3.0, held
    # too, fixes nothing that 1.0 has that 2.0 does not already fix: both are past the fix.
    assert "demo-2.0.tar.gz" not in verdict.refused and "demo-3.0.tar.gz" not in verdict.refused
    if "vulnerable" in block:
        assert verdict.refused["demo-1.0.tar.gz"].rule == "advisory"
    off = rules_of(tmp_path, f'{block}\n[cooldown]\nmin-age = "7d"', *ALL)
    assert policy.judge(off, FAST, NOW).refused["demo-2.0.tar.gz"].rule == "cooldown"


def test_the_fast_lane_passes_no_release_that_is_still_affected_nor_the_freeze(tmp_path):
    still = record("GHSA-later-later-la", "demo", ranges=ecosystem({"introduced": "0"},
                                                                    {"fixed": "9"}))
    r = rules_of(tmp_path, 'fast-lane = true\n[cooldown]\nmin-age = "7d"', still)
    assert policy.judge(r, FAST, NOW).refused["demo-2.0.tar.gz"].rule == "cooldown"
    # Nothing older to fix: no fast lane either.
    young = project(("demo-2.0.tar.gz", 3600))
    r = rules_of(tmp_path, 'fast-lane = true\n[cooldown]\nmin-age = "7d"', VULN)
    assert policy.judge(r, young, NOW).refused["demo-2.0.tar.gz"].rule == "cooldown"
    frozen = rules_of(tmp_path, f'fast-lane = true\n[cooldown]\nfreeze-at = "{stamp(DAY)}"',
                      VULN)
    assert policy.judge(frozen, FAST, NOW).refused["demo-2.0.tar.gz"].rule == "freeze-at"


# --- served, in one process ----------------------------------------------------------------
DEMO = json_page(("demo-1.0-py3-none-any.whl", stamp(30 * DAY)),
                 ("demo-1.0.tar.gz", stamp(30 * DAY)),
                 ("demo-2.0-py3-none-any.whl", stamp(3600)), ("demo-2.0.tar.gz", stamp(3600)))


@pytest.fixture
def served(make_app, tmp_path):
    """make(policy text, *records) -> (app, client, policy file, OSV directory)."""
    def make(text: str, *records: dict):
        osv = write(tmp_path / "osv", *records)
        path = tmp_path / "policy.toml"
        path.write_text(f'[advisories]\nosv = "osv"\n{text}\n')
        responses.get(f"{MIRROR}/demo/", json=DEMO, content_type=JSON_ACCEPT)
        responses.get(f"{FILES}/ab/demo-1.0.tar.gz", body=b"old")
        responses.get(f"{FILES}/ab/demo-2.0.tar.gz", body=b"new")
        app = make_app(policy_file=path)
        watcher = app.extensions["pypicache"].policy.watcher
        watcher.interval = watcher.settle = 0
        return app, app.test_client(), path, osv
    return make


DEMO_MAL = record("MAL-2026-7", "demo", versions=["2.0"], summary="Malicious code in demo")


@responses.activate
def test_a_malicious_release_is_403_with_its_id_and_leaves_the_pages(served, caplog):
    _, client, _, _ = served('block = ["malicious"]', DEMO_MAL)
    with caplog.at_level(logging.WARNING, logger="pypicache.policyserve"):
        answer = client.get("/packages/ab/demo-2.0.tar.gz")
    assert answer.status_code == 403 and answer.headers["X-Pypicache-Policy"] == \
        "advisory MAL-2026-7"
    assert "demo-2.0.tar.gz is reported malicious by the advisory MAL-2026-7" in answer.text
    assert "advisory MAL-2026-7" in caplog.text
    assert client.get("/packages/ab/demo-2.0-py3-none-any.whl.metadata").status_code == 403
    page = client.get("/simple/demo/", headers={"Accept": JSON_ACCEPT})
    assert filenames(page) == ["demo-1.0-py3-none-any.whl", "demo-1.0.tar.gz"]
    assert page.get_json()["versions"] == ["1.0"]
    assert page.headers["X-Pypicache-Policy"] == "filtered advisory=2"
    assert "demo-2.0" not in client.get("/simple/demo/").text
    assert client.get("/packages/ab/demo-1.0.tar.gz").data == b"old"
    metrics = client.get("/metrics").text
    assert 'pypicache_policy_refusals_total{mode="enforce",rule="advisory",what="file"}' in metrics


@responses.activate
def test_report_mode_serves_and_counts_advisories(served):
    _, client, _, _ = served('block = ["malicious"]\n', DEMO_MAL)
    client.application.extensions["pypicache"].policy.watcher.path.write_text(
        'mode = "report"\n[advisories]\nosv = "osv"\nblock = ["malicious"]\n')
    assert client.get("/packages/ab/demo-2.0.tar.gz").data == b"new"
    assert 'mode="report",rule="advisory",what="file"' in client.get("/metrics").text


@responses.activate
def test_the_json_api_lists_the_advisories_of_the_release_it_describes(served):
    _, client, _, _ = served('block = ["malicious"]', VULN, GONE)
    document = client.get("/pypi/demo/1.0/json").json
    assert VALIDATOR.is_valid(document)
    assert document["vulnerabilities"] == [{
        "aliases": ["CVE-2026-1", "PYSEC-2026-1"], "details": "All of it.", "fixed_in": ["2.0"],
        "id": "GHSA-aaaa-bbbb-cccc", "link": "https://osv.dev/vulnerability/GHSA-aaaa-bbbb-cccc",
        "source": "osv", "summary": "Demo leaks", "withdrawn": None}]
    assert client.get("/pypi/demo/json").json["vulnerabilities"] == []  # 2.0 is fixed
    assert client.get("/pypi/demo/2.0/json").json["vulnerabilities"] == []


@responses.activate
def test_a_changed_osv_source_is_reloaded_and_a_bad_one_keeps_the_last_good(served, caplog):
    _, client, _, osv = served('block = ["malicious"]')
    assert client.get("/packages/ab/demo-2.0.tar.gz").data == b"new"
    write(osv, DEMO_MAL)  # a record added: the directory's mtime changes
    answer = client.get("/packages/ab/demo-2.0.tar.gz")
    assert answer.status_code == 403 and answer.headers["X-Pypicache-Policy"] == \
        "advisory MAL-2026-7"
    assert client.get("/healthz").json["policy"]["advisories"] == 1
    with caplog.at_level(logging.WARNING, logger="pypicache.policywatch"):
        (osv / "broken.json").write_text("{")
        assert client.get("/packages/ab/demo-2.0.tar.gz").status_code == 403  # the last good
    state = client.get("/healthz").json["policy"]
    assert state["status"] == "last good policy kept"
    assert state["error"] == "advisories.osv: broken.json: not a JSON record " \
        "(Expecting property name enclosed in double quotes: line 1 column 2 (char 1))"
    assert "not applied" in caplog.text
    (osv / "broken.json").unlink()
    (osv / "MAL-2026-7.json").unlink()
    assert client.get("/packages/ab/demo-2.0.tar.gz").data == b"new"


def test_the_watcher_looks_at_a_zip_source_by_its_stat(tmp_path):
    source = zipped(tmp_path / "osv.zip", VULN)
    path = tmp_path / "policy.toml"
    path.write_text('[advisories]\nosv = "osv.zip"\nblock = ["vulnerable"]\n')
    watcher = policywatch.Watcher(path, interval=0, settle=0)
    assert watcher.current().advisories.index.records == 1
    zipped(tmp_path / "new.zip", VULN, MAL).replace(source)
    assert watcher.current().advisories.index.records == 2
    source.write_bytes(b"PK\x03\x04 truncated")
    later = time.time() + 5
    os.utime(source, (later, later))
    assert watcher.current().advisories.index.records == 2 and watcher.error is not None


@responses.activate
def test_policy_check_and_explain_show_advisories(served, tmp_path):
    app, _, path, _ = served('block = ["vulnerable"]\nfast-lane = true\n[cooldown]\n'
                             'min-age = "7d"', VULN)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["pypicache", "policy", "check", str(path)])
    assert result.exit_code == 0, result.output
    assert "advisories: 1 OSV records of 1 projects from" in result.output
    assert "advisories block: vulnerable; fast lane: on" in result.output
    lines = runner.invoke(args=["pypicache", "policy", "explain", "demo"]).output.splitlines()
    assert any(line.startswith("demo-1.0.tar.gz") and "refused: advisory GHSA-aaaa-bbbb-cccc"
               in line and line.endswith("advisories: GHSA-aaaa-bbbb-cccc") for line in lines)
    assert any(line.startswith("demo-2.0.tar.gz") and "served by the fast lane" in line
               for line in lines)
    bad = tmp_path / "bad.toml"
    bad.write_text('[advisories]\nosv = "/nonexistent/osv"\n')
    result = runner.invoke(args=["pypicache", "policy", "check", str(bad)])
    assert result.exit_code == 1 and "advisories.osv: no such directory or zip" in result.output


@responses.activate
def test_the_fast_lane_serves_the_held_fix_on_pages_and_as_a_file(served):
    _, client, _, _ = served('block = ["vulnerable"]\nfast-lane = true\n[cooldown]\n'
                             'min-age = "7d"', VULN)
    assert filenames(client.get("/simple/demo/", headers={"Accept": JSON_ACCEPT})) == [
        "demo-2.0-py3-none-any.whl", "demo-2.0.tar.gz"]
    assert client.get("/packages/ab/demo-2.0.tar.gz").data == b"new"
    assert client.get("/packages/ab/demo-1.0.tar.gz").headers["X-Pypicache-Policy"] == \
        "advisory GHSA-aaaa-bbbb-cccc"


def test_a_worker_started_while_the_source_is_bad_takes_the_last_good_records(tmp_path):
    osv = write(tmp_path / "osv", DEMO_MAL)
    path, kept = tmp_path / "policy.toml", tmp_path / "cache" / "policy" / "last-good.toml"
    path.write_text('[advisories]\nosv = "osv"\nblock = ["malicious"]\n')
    kept.parent.mkdir(parents=True)
    kept.write_bytes(path.read_bytes())
    copy = kept.with_name(policywatch.LAST_GOOD_OSV)
    policywatch.keep_source(policywatch.Watcher(path).rules, copy)  # as the server starts
    assert copy.is_file() and not osvsource.keep(osv, advisories.load(osv).digest, copy)
    (osv / "broken.json").write_text("{")
    later = policywatch.Watcher(path, kept, interval=0, settle=0)
    assert later.error.key == "advisories.osv"
    assert [a.advisory.id for a in later.rules.advisories.index.by_project["demo"]] == \
        ["MAL-2026-7"]
    assert later.rules.advisories.source == osv  # the source is still the one looked at
    (osv / "broken.json").unlink()
    write(osv, VULN)
    assert later.current().advisories.index.records == 2 and later.error is None
    assert advisories.load(copy).records == 2  # the new good records kept in turn
    copy.unlink()
    (osv / "broken.json").write_text("{")
    with pytest.raises(PolicyError, match="advisories.osv: broken.json"):
        policywatch.Watcher(path, kept)
