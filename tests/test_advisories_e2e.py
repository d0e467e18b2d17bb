"""The policy's `[advisories]` end to end: real gunicorn workers before the fixture upstream,
OSV records written by the test into a directory (a zip for one), and real pip and
`uv pip install` as clients."""
from __future__ import annotations

import json
import os
import signal
import time
import zipfile
from datetime import timedelta

import pytest
import requests

from .fixture_upstream import Upstream
from .servers import pip_install, uv_install
from .test_policy_e2e import (COOLDOWN, eventually, file_url, pip_ok, policy_proxies, rewrite,
                              uv_ok, wheel)

pytestmark = pytest.mark.e2e
OLD, YOUNG = timedelta(days=30), timedelta(hours=1)
MAL = {"id": "MAL-2026-1234", "modified": "2026-11-01T00:00:00Z",
       "summary": "Malicious code in evil (PyPI)",
       "affected": [{"package": {"ecosystem": "PyPI", "name": "Evil"}, "versions": ["1.0"]}]}
VULN = {"id": "GHSA-lib0-lib0-lib0", "aliases": ["CVE-2026-4242"],
        "modified": "2026-11-01T00:00:00Z",
        "summary": "lib runs what it reads",
        "affected": [{"package": {"ecosystem": "PyPI", "name": "lib"}, "ranges": [
            {"type": "ECOSYSTEM", "events": [{"introduced": "1.1"}, {"fixed": "1.3"}]}]}]}


@pytest.fixture
def osv_fleet(tmp_path):
    """(start(policy text) -> Proxy, osv directory): evil 1.0 and 2.0 (old), lib 1.0, 1.1 and
    1.2 (old) and 1.3 (an hour old), app 1.0 needing lib."""
    up = Upstream(tmp_path / "up", formats=("json",)).start()
    files = {"evil-1.0": wheel(up, "evil", "1.0", OLD), "evil-2.0": wheel(up, "evil", "2.0", OLD)}
    for version in ("1.0", "1.1", "1.2"):
        files[f"lib-{version}"] = wheel(up, "lib", version, OLD)
    files["lib-1.3"] = wheel(up, "lib", "1.3", YOUNG)
    wheel(up, "app", "1.0", OLD, requires=["lib"])
    osv = tmp_path / "osv"
    osv.mkdir()
    for record in (MAL, VULN):
        (osv / f"{record['id']}.json").write_text(json.dumps(record))
    with policy_proxies(tmp_path, up, files) as start:
        yield start, osv
    up.stop()


def test_a_malicious_record_blocks_its_release_for_pip_and_uv(osv_fleet, tmp_path):
    start, osv = osv_fleet
    proxy = start(f'[advisories]\nosv = "{osv}"\nblock = ["malicious"]\n')
    index = f"{proxy.url}/simple"
    assert pip_ok(index, tmp_path / "pip", "evil") == {"evil": "2.0"}  # 2.0 is not reported
    refused = pip_install(index, tmp_path / "pip2", "evil==1.0")
    assert refused.returncode != 0 and "(from versions: 2.0)" in refused.stderr
    refused = uv_install(index, tmp_path / "uv", tmp_path / "uv-cache", "evil==1.0")
    assert refused.returncode != 0 and "evil==1.0" in refused.stderr
    answer = requests.get(file_url(proxy, proxy.files["evil-1.0"]), timeout=10)
    assert answer.status_code == 403
    assert answer.headers["X-Pypicache-Policy"] == "advisory MAL-2026-1234"
    assert "is reported malicious by the advisory MAL-2026-1234" in answer.text
    direct = uv_install(index, tmp_path / "uv2", tmp_path / "uv-cache",
                        "evil @ " + file_url(proxy, proxy.files["evil-1.0"]))
    assert direct.returncode != 0 and "403" in direct.stderr
    assert "refused the file evil-1.0-py3-none-any.whl of evil" in proxy.logs()
    assert "advisory MAL-2026-1234" in proxy.logs()
    document = requests.get(f"{proxy.url}/pypi/evil/json", timeout=10).json()
    assert list(document["releases"]) == ["2.0"] and document["vulnerabilities"] == []


def test_a_vulnerable_range_blocks_the_affected_releases_and_the_resolver_takes_a_fixed_one(
        osv_fleet, tmp_path):
    start, osv = osv_fleet
    proxy = start(f'[advisories]\nosv = "{osv}"\nblock = ["vulnerable"]\n' + COOLDOWN)
    index = f"{proxy.url}/simple"
    # 1.1 and 1.2 are affected, 1.3 (the fix) is held by the cooldown: 1.0 is what passes.
    assert pip_ok(index, tmp_path / "pip", "app") == {"app": "1.0", "lib": "1.0"}
    assert uv_ok(index, tmp_path / "uv", "lib") == {"lib": "1.0"}
    refused = pip_install(index, tmp_path / "pip2", "lib==1.2")
    assert refused.returncode != 0 and "(from versions: 1.0)" in refused.stderr
    answer = requests.get(file_url(proxy, proxy.files["lib-1.2"]), timeout=10)
    assert answer.status_code == 403
    assert answer.headers["X-Pypicache-Policy"] == "advisory GHSA-lib0-lib0-lib0"
    # Without the cooldown, the fixed release is the newest that passes.
    rewrite(proxy, f'[advisories]\nosv = "{osv}"\nblock = ["vulnerable"]\n')
    eventually(lambda: requests.get(file_url(proxy, proxy.files["lib-1.3"]), timeout=10).ok)
    time.sleep(1.2)  # past every worker's next look at the file
    assert uv_ok(index, tmp_path / "uv2", "lib") == {"lib": "1.3"}
    assert pip_ok(index, tmp_path / "pip3", "lib<1.3") == {"lib": "1.0"}


@pytest.mark.parametrize("kind", ["directory", "zip"])
def test_the_fast_lane_lets_the_held_fix_through(osv_fleet, tmp_path, kind):
    start, osv = osv_fleet
    source = osv
    if kind == "zip":
        source = tmp_path / "osv.zip"
        with zipfile.ZipFile(source, "w") as archive:
            for record in osv.iterdir():
                archive.write(record, f"osv/{record.name}")
    proxy = start(f'[advisories]\nosv = "{source}"\nblock = ["vulnerable"]\nfast-lane = true\n'
                  + COOLDOWN)
    index = f"{proxy.url}/simple"
    # 1.3 is an hour old, but it fixes the advisory of 1.2, the newest release otherwise
    # served: it passes the cooldown, on the page and as a file.
    assert pip_ok(index, tmp_path / "pip", "app") == {"app": "1.0", "lib": "1.3"}
    assert uv_ok(index, tmp_path / "uv", "lib") == {"lib": "1.3"}
    assert requests.get(file_url(proxy, proxy.files["lib-1.3"]), timeout=10).status_code == 200
    assert requests.get(file_url(proxy, proxy.files["lib-1.1"]), timeout=10).status_code == 403
    document = requests.get(f"{proxy.url}/pypi/lib/1.2/json", timeout=10)
    assert document.status_code == 404  # refused, so no release of the JSON API either
    latest = requests.get(f"{proxy.url}/pypi/lib/json", timeout=10).json()
    assert latest["info"]["version"] == "1.3" and latest["vulnerabilities"] == []


def test_a_record_added_to_the_source_applies_without_a_restart(osv_fleet, tmp_path):
    start, osv = osv_fleet
    (osv / f"{MAL['id']}.json").unlink()
    proxy = start(f'[advisories]\nosv = "{osv}"\nblock = ["malicious"]\n')
    url, pid = file_url(proxy, proxy.files["evil-1.0"]), proxy.process.pid
    assert requests.get(url, timeout=10).status_code == 200
    temp = tmp_path / "MAL.json.tmp"  # written beside, then renamed in, as rsync does
    temp.write_text(json.dumps(MAL))
    temp.replace(osv / f"{MAL['id']}.json")
    eventually(lambda: requests.get(url, timeout=10).status_code == 403)
    time.sleep(1.5)  # past every worker's next look
    answers = {requests.get(url, timeout=10, headers={"Connection": "close"}).status_code
               for _ in range(20)}
    assert answers == {403} and proxy.process.pid == pid
    assert "reloaded" in proxy.logs()


def test_a_bad_source_keeps_the_last_good_records_even_in_a_new_worker(osv_fleet, tmp_path):
    start, osv = osv_fleet
    proxy = start(f'[advisories]\nosv = "{osv}"\nblock = ["malicious"]\n')
    url = file_url(proxy, proxy.files["evil-1.0"])
    assert requests.get(url, timeout=10).status_code == 403
    (osv / "broken.json").write_text("{")  # a record cut short
    eventually(lambda: requests.get(proxy.url + "/healthz", timeout=10).json()["policy"]
               .get("error", "").startswith("advisories.osv: broken.json: not a JSON record"))
    assert requests.get(url, timeout=10).status_code == 403
    # A worker that dies now is replaced by one that starts with the bad source in place:
    # it comes up with the last good records (kept as the server started), and the server
    # stays up.
    assert (proxy.cache_dir / "policy" / "last-good-osv.zip").is_file()
    before = set(proxy.worker_pids())
    os.kill(min(before), signal.SIGKILL)
    eventually(lambda: len(set(proxy.worker_pids()) - before) == 1
               and len(proxy.worker_pids()) == 2)
    (newcomer,) = set(proxy.worker_pids()) - before
    eventually(lambda: f"[{newcomer}] [WARNING] policy file {proxy.policy} not applied"
               in proxy.logs())
    answers = {requests.get(url, timeout=10, headers={"Connection": "close"}).headers
               .get("X-Pypicache-Policy") for _ in range(20)}
    assert answers == {"advisory MAL-2026-1234"} and proxy.process.poll() is None
