"""The policy end to end: real gunicorn workers, the fixture upstream (PEP 691 JSON with
upload times: some old, one an hour old), and real pip and `uv pip install` as clients."""
from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests

from .fixture_upstream import Upstream
from .servers import Proxy, installed, pip_install, uv_install
from .test_nginx_front import fronted
from .wheels import make_wheel

pytestmark = pytest.mark.e2e
COOLDOWN = '[cooldown]\nmin-age = "7d"\n'


def wheel(up: Upstream, name: str, version: str, age: timedelta, requires=()):
    filename, data = make_wheel(name, version, requires)
    return up.add_file(name, filename, data, upload_time=datetime.now(timezone.utc) - age)


@pytest.fixture
def fleet(tmp_path):
    """(upstream, start(policy text) -> Proxy): demo 1.0 (a month old) and 2.0 (an hour
    old), lib 1.0 and 1.1 (old), evil 1.0 (old), app 1.0 needing lib and demo."""
    up = Upstream(tmp_path / "up", formats=("json",)).start()
    old = timedelta(days=30)
    files = {
        "demo-1.0": wheel(up, "demo", "1.0", old),
        "demo-2.0": wheel(up, "demo", "2.0", timedelta(hours=1)),
        "lib-1.0": wheel(up, "lib", "1.0", old),
        "lib-1.1": wheel(up, "lib", "1.1", old),
        "evil-1.0": wheel(up, "evil", "1.0", old),
        "app-1.0": wheel(up, "app", "1.0", old, requires=["lib", "demo"]),
    }
    with policy_proxies(tmp_path, up, files) as start:
        yield up, start
    up.stop()


@contextlib.contextmanager
def policy_proxies(tmp_path: Path, up: Upstream, files: dict):
    """start(policy text, workers=2) -> a started Proxy of `up` with PYPI_POLICY_FILE, its
    `policy` path and `files` (the upstream's, by release) set; each in a cache of its own.
    Every proxy started is stopped on the way out."""
    policy, proxies = tmp_path / "policy.toml", []

    def start(text: str, workers: int = 2) -> Proxy:
        policy.write_text(text)
        proxy = Proxy(tmp_path / f"cache{len(proxies) or ''}", up.env(), workers=workers,
                      PYPI_POLICY_FILE=str(policy))
        proxies.append(proxy.start())
        proxy.policy, proxy.files = policy, files
        return proxy

    try:
        yield start
    finally:
        for proxy in proxies:
            proxy.stop()


def pip_ok(index: str, target: Path, *requirements: str) -> dict[str, str]:
    """What real pip installed through the proxy (it must succeed)."""
    done = pip_install(index, target, *requirements)
    assert done.returncode == 0, done.stderr
    return installed(target)


def uv_ok(index: str, target: Path, *requirements: str) -> dict[str, str]:
    """What real `uv pip install` installed through the proxy (it must succeed)."""
    done = uv_install(index, target, target.with_name(target.name + "-cache"), *requirements)
    assert done.returncode == 0, done.stderr
    return installed(target)


def file_url(proxy: Proxy, file) -> str:
    return proxy.url + "/packages" + file.path[len("/packages"):]


def rewrite(proxy: Proxy, text: str) -> None:
    """The policy file replaced while the server runs (a new inode, as editors and
    configuration tools write it)."""
    temp = proxy.policy.with_suffix(".new")
    temp.write_text(text)
    temp.replace(proxy.policy)


def eventually(check, seconds: float = 15.0):
    """Asks again until `check()` is true (a deadline, not a timed assertion)."""
    deadline = time.monotonic() + seconds
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError("never came true")
        time.sleep(0.1)
    return result


def test_pip_and_uv_resolve_to_the_release_the_cooldown_lets_through(fleet, tmp_path):
    _, start = fleet
    proxy = start(COOLDOWN)
    index = f"{proxy.url}/simple"
    assert pip_ok(index, tmp_path / "pip", "demo") == {"demo": "1.0"}
    assert uv_ok(index, tmp_path / "uv", "demo") == {"demo": "1.0"}
    # Asked for by name, the held release is not there for either client.
    refused = pip_install(index, tmp_path / "pip2", "demo==2.0")
    assert refused.returncode != 0 and "from versions: 1.0" in refused.stderr
    refused = uv_install(index, tmp_path / "uv2", tmp_path / "uv-cache", "demo==2.0")
    assert refused.returncode != 0 and "demo==2.0" in refused.stderr
    # A lock file names the URL: the file itself is refused, and says why and until when.
    held = proxy.files["demo-2.0"]
    for url in (file_url(proxy, held), file_url(proxy, held) + ".metadata"):
        answer = requests.get(url, timeout=10)
        assert answer.status_code == 403
        passes = answer.headers["X-Pypicache-Policy"]
        assert re.fullmatch(r"cooldown 7d; passes-at=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", passes)
        assert "held by the cooldown" in answer.text
    direct = pip_install(index, tmp_path / "pip3", file_url(proxy, held))
    assert direct.returncode != 0 and "403" in direct.stderr
    assert "refused the file demo-2.0-py3-none-any.whl of demo" in proxy.logs()
    assert held.filename not in [p.name for p in (proxy.cache_dir / "files").rglob("*")]


def test_break_glass_makes_a_held_release_installable_without_a_restart(fleet, tmp_path):
    _, start = fleet
    proxy = start(COOLDOWN)
    index, held = f"{proxy.url}/simple", proxy.files["demo-2.0"]
    assert requests.get(file_url(proxy, held), timeout=10).status_code == 403
    pid = proxy.process.pid
    rewrite(proxy, COOLDOWN + 'allow = ["demo==2.0"]\n')
    eventually(lambda: requests.get(file_url(proxy, held), timeout=10).status_code == 200)
    time.sleep(1.2)  # past every worker's next look at the file
    assert pip_ok(index, tmp_path / "pip", "demo==2.0") == {"demo": "2.0"}
    assert uv_ok(index, tmp_path / "uv", "demo") == {"demo": "2.0"}
    assert proxy.process.pid == pid and proxy.process.poll() is None


def test_the_incident_recipe_freeze_then_break_glass(fleet, tmp_path):
    _, start = fleet
    frozen = datetime.now(timezone.utc) - timedelta(hours=2)  # before demo 2.0's upload
    freeze = f'[cooldown]\nfreeze-at = "{frozen.strftime("%Y-%m-%dT%H:%M:%SZ")}"\n'
    proxy = start(freeze)
    index, held = f"{proxy.url}/simple", proxy.files["demo-2.0"]
    assert pip_ok(index, tmp_path / "pip", "app") == {"app": "1.0", "lib": "1.1", "demo": "1.0"}
    answer = requests.get(file_url(proxy, held), timeout=10)
    assert answer.status_code == 403 and answer.headers["X-Pypicache-Policy"] == \
        f"freeze-at {frozen.strftime('%Y-%m-%dT%H:%M:%SZ')}"
    assert "was uploaded after the freeze" in answer.text
    rewrite(proxy, freeze + 'allow = ["demo==2.0"]\n')
    eventually(lambda: requests.get(file_url(proxy, held), timeout=10).status_code == 200)
    time.sleep(1.2)
    assert uv_ok(index, tmp_path / "uv", "demo") == {"demo": "2.0"}


@pytest.mark.parametrize("unknown", ["hold", "serve"])
def test_an_html_only_upstream_gives_no_upload_times_and_unknown_time_decides(tmp_path, unknown):
    up = Upstream(tmp_path / "up", formats=("html",)).start()
    wheel(up, "demo", "1.0", timedelta(days=30))
    policy = tmp_path / "policy.toml"
    policy.write_text(COOLDOWN + f'unknown-time = "{unknown}"\n')
    proxy = Proxy(tmp_path / "cache", up.env(), workers=1, PYPI_POLICY_FILE=str(policy)).start()
    try:
        done = pip_install(f"{proxy.url}/simple", tmp_path / "pip", "demo")
        if unknown == "serve":
            assert done.returncode == 0, done.stderr
        else:
            assert done.returncode != 0 and "(from versions: none)" in done.stderr
            assert "unknown-time hold" in proxy.logs()
    finally:
        proxy.stop()
        up.stop()


def test_deny_by_name_and_by_specifier(fleet, tmp_path):
    up, start = fleet
    proxy = start('[deny]\nprojects = ["evil", "lib==1.1"]\n')
    index = f"{proxy.url}/simple"
    assert pip_ok(index, tmp_path / "pip", "app") == {"app": "1.0", "lib": "1.0", "demo": "2.0"}
    assert uv_ok(index, tmp_path / "uv", "lib") == {"lib": "1.0"}
    page = requests.get(f"{index}/evil/", timeout=10)
    assert page.status_code == 403 and page.headers["X-Pypicache-Policy"] == "deny evil"
    assert "the project evil is denied" in page.text
    pip_denied = pip_install(index, tmp_path / "pip2", "evil")
    assert pip_denied.returncode != 0 and "No matching distribution found for evil" in pip_denied.stderr
    uv_denied = uv_install(index, tmp_path / "uv2", tmp_path / "uv-cache", "evil")
    assert uv_denied.returncode != 0 and "403" in uv_denied.stderr
    # A 403, not a 404: uv does not go on to another index the client has (a 404 would let
    # the denied project come from there).
    elsewhere = uv_install(up.index_url, tmp_path / "uv3", tmp_path / "uv-cache", "evil",
                           "--extra-index-url", index)
    assert elsewhere.returncode != 0 and "403" in elsewhere.stderr
    file = requests.get(file_url(proxy, proxy.files["lib-1.1"]), timeout=10)
    assert file.status_code == 403 and file.headers["X-Pypicache-Policy"] == "deny lib==1.1"


def test_allow_only_serves_only_what_it_names(fleet, tmp_path):
    _, start = fleet
    proxy = start('[allow-only]\nprojects = ["app", "l*"]\n')
    index = f"{proxy.url}/simple"
    assert pip_ok(index, tmp_path / "pip", "lib") == {"lib": "1.1"}
    refused = pip_install(index, tmp_path / "pip2", "app")  # needs demo, which is not allowed
    assert refused.returncode != 0 and "demo" in refused.stderr
    answer = requests.get(f"{index}/demo/", timeout=10)
    assert answer.status_code == 403 and answer.headers["X-Pypicache-Policy"] == "allow-only"


def test_report_mode_serves_everything_and_counts_what_it_would_refuse(fleet, tmp_path):
    _, start = fleet
    proxy = start('mode = "report"\n' + COOLDOWN + '[deny]\nprojects = ["evil"]\n')
    index = f"{proxy.url}/simple"
    assert pip_ok(index, tmp_path / "pip", "demo", "evil") == {"demo": "2.0", "evil": "1.0"}
    metrics = requests.get(proxy.url + "/metrics", timeout=10).text
    for rule, what in (("cooldown", "page"), ("cooldown", "file"), ("deny", "project")):
        line = f'pypicache_policy_refusals_total{{mode="report",rule="{rule}",what="{what}"}}'
        assert line in metrics, metrics
    assert "would refuse (report mode) the file demo-2.0-py3-none-any.whl" in proxy.logs()
    assert 'mode="enforce"' not in metrics


def test_no_request_fails_while_the_policy_is_rewritten_under_installs(fleet, tmp_path):
    _, start = fleet
    proxy = start(COOLDOWN, workers=3)
    index, versions = f"{proxy.url}/simple", []
    # Two versions that differ in what these installs do not need: none of them may fail.
    first = COOLDOWN + '[deny]\nprojects = ["evil"]\n'
    second = COOLDOWN + '[deny]\nprojects = ["evil", "lib<1"]\n'
    with ThreadPoolExecutor(4) as pool:
        installs = [pool.submit(pip_install, index, tmp_path / f"pip{i}", "app") for i in range(12)]
        for i in range(6):
            rewrite(proxy, first if i % 2 else second)
            time.sleep(0.6)
        for install in installs:
            done = install.result()
            assert done.returncode == 0, done.stderr
            versions.append(installed(Path(done.args[done.args.index("--target") + 1])))
    assert versions == [{"app": "1.0", "lib": "1.1", "demo": "1.0"}] * 12
    assert proxy.logs().count("reloaded") > 1
    statuses = re.findall(r'"GET [^"]*" (\d{3}) ', proxy.logs())
    assert statuses and not [s for s in statuses if s.startswith("5")]


def _answers(proxy: Proxy, url: str, count: int = 30) -> set:
    """The policy header of `count` answers, each on a new connection (so to any worker)."""
    return {requests.get(url, timeout=10, headers={"Connection": "close"})
            .headers.get("X-Pypicache-Policy") for _ in range(count)}


def test_a_rewritten_policy_applies_on_every_worker_and_a_bad_one_keeps_the_last_good(fleet):
    _, start = fleet
    proxy = start(COOLDOWN, workers=3)
    lib = file_url(proxy, proxy.files["lib-1.1"])
    assert _answers(proxy, lib) == {None}
    assert (proxy.cache_dir / "files" / proxy.files["lib-1.1"].path[len("/packages/"):]).is_file()
    rewrite(proxy, COOLDOWN + '[deny]\nprojects = ["lib>1.0"]\n')
    eventually(lambda: _answers(proxy, lib, 1) == {"deny lib>1.0"})
    time.sleep(1.5)  # each worker looks at the file again at most a second after its last look
    # Asked until every worker has answered (each logs its refusals under its own pid): the
    # file is cached, and refused like any other by all of them.
    workers, answers = {str(pid) for pid in proxy.worker_pids()}, set()

    def every_worker_answered() -> bool:
        answers.update(_answers(proxy, lib, 10))
        logged = re.findall(r"\[(\d+)\] \[WARNING\] policy: refused the file lib-1.1",
                            proxy.logs())
        return workers <= set(logged)

    eventually(every_worker_answered, seconds=60)
    assert answers == {"deny lib>1.0"}
    # A bad rewrite: the last good policy stays, and /healthz says why on every worker.
    rewrite(proxy, COOLDOWN + '[deny]\nprojects = ["lib>1.0"]\nproject = ["typo"]\n')
    eventually(lambda: requests.get(proxy.url + "/healthz", timeout=10).json()["policy"]
               .get("error"))
    time.sleep(1.2)
    states = [requests.get(proxy.url + "/healthz", timeout=10,
                           headers={"Connection": "close"}).json() for _ in range(15)]
    for state in states:
        assert state["status"] == "ok"
        assert state["policy"]["status"] == "last good policy kept"
        assert state["policy"]["error"].startswith("deny.project: unknown key")
    assert _answers(proxy, lib) == {"deny lib>1.0"}
    assert "not applied, the last good one stays in force: deny.project" in proxy.logs()
    # A worker that dies now is replaced by one that starts with the bad file in place: it
    # comes up, with the last good policy, and the server stays up.
    before = set(proxy.worker_pids())
    os.kill(min(before), signal.SIGKILL)
    eventually(lambda: len(set(proxy.worker_pids()) - before) == 1
               and len(proxy.worker_pids()) == 3)
    (newcomer,) = set(proxy.worker_pids()) - before
    assert f"[{newcomer}] [WARNING] policy file {proxy.policy} not applied" in proxy.logs()
    workers, answers = {str(pid) for pid in proxy.worker_pids()}, set()
    eventually(every_worker_answered, seconds=60)
    assert answers == {"deny lib>1.0"} and proxy.process.poll() is None


def test_the_nginx_front_serves_no_held_or_denied_file_from_disk(fleet, tmp_path):
    """The front (docker/nginx/, Debian's nginx) serves published files without asking the
    app; while the app runs with a policy it passes them all to the app, cached or not."""
    up, start = fleet
    proxy = start(COOLDOWN)
    with fronted(proxy) as front:
        lib = proxy.files["lib-1.1"]
        answer = requests.get(front.url + "/packages" + lib.path[len("/packages"):], timeout=10)
        assert answer.status_code == 200 and "X-Front-Cache" not in answer.headers  # the app's
        rewrite(proxy, COOLDOWN + '[deny]\nprojects = ["lib>1.0"]\n')
        url = front.url + "/packages" + lib.path[len("/packages"):]
        eventually(lambda: requests.get(url, timeout=10).status_code == 403)
        time.sleep(1.2)
        for _ in range(10):  # cached on the volume, and refused through the front
            answer = requests.get(url, timeout=10, headers={"Connection": "close"})
            assert answer.status_code == 403
            assert answer.headers["X-Pypicache-Policy"] == "deny lib>1.0"
        held = front.url + "/packages" + proxy.files["demo-2.0"].path[len("/packages"):]
        assert requests.get(held, timeout=10).status_code == 403
        assert uv_ok(front.url + "/simple", tmp_path / "uv", "demo") == {"demo": "1.0"}
    proxy.stop()
    # Without a policy the same front serves the cached file from disk again.
    without = Proxy(proxy.cache_dir, up.env(), workers=1).start()
    try:
        with fronted(without) as front:
            answer = requests.get(front.url + "/packages" + lib.path[len("/packages"):],
                                  timeout=10)
            assert answer.status_code == 200 and answer.headers["X-Front-Cache"] == "disk"
    finally:
        without.stop()
