"""A policy (15): warm pages and files with a policy of 1,000 deny rules and 10,000 OSV
advisories against the same requests without a policy.

A second pypicache, with PYPI_POLICY_FILE and the product's defaults otherwise, serves what
the run's pypicache serves without one. The policy denies 500 projects and 500 releases of
other projects (specifiers), and reads a zip of 10,000 OSV records (malicious ones with
versions lists, vulnerable ranges with fixes) of 5,000 other projects, blocking malicious and
vulnerable releases. Two kinds of request are measured: of projects no rule names (what
almost every request is: the policy must cost them a lookup, not a walk through the rules),
and of projects an advisory names (page244 loses one release, stack-39 has an advisory of a
release it does not serve: the page's verdict and each file's decision are kept per worker).
"""

from __future__ import annotations

import json
import statistics
import time
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

import requests

from .clients import PIP_ACCEPT, wrk
from .procs import cpu_seconds
from .run import Run
from .servers import Pypicache, clean_environ

W = "15. A policy of 1,000 deny rules and 10,000 advisories, 64 connections"
DENY, ADVISORIES = 1000, 10_000
BATCH, BATCHES = 100, 15  # requests of one timed batch in process, and batches


def write_policy(directory: Path) -> Path:
    """The policy file and its OSV zip; returns the policy file."""
    directory.mkdir(parents=True, exist_ok=True)
    deny = [f'"denied-{i:04d}"' for i in range(DENY // 2)]
    deny += [f'"versioned-{i:04d}>={i % 7}.{i % 5}"' for i in range(DENY - len(deny))]
    osv = directory / "osv.zip"
    with zipfile.ZipFile(osv, "w", zipfile.ZIP_DEFLATED) as archive:
        for i in range(ADVISORIES):
            archive.writestr(f"osv/{_record(i)['id']}.json", json.dumps(_record(i)))
        for record in _touching():
            archive.writestr(f"osv/{record['id']}.json", json.dumps(record))
    policy = directory / "policy.toml"
    policy.write_text("[deny]\nprojects = [\n  " + ",\n  ".join(deny) + "\n]\n"
                      f'[advisories]\nosv = "{osv}"\nblock = ["malicious", "vulnerable"]\n')
    return policy


def _record(i: int) -> dict:
    project = f"osv-project-{i % (ADVISORIES // 2):05d}"
    if i % 3 == 0:  # as the malicious-packages records: a versions list
        affected = {"versions": [f"0.{i % 10}.0", f"0.{i % 10}.1"]}
        prefix = "MAL-2026-"
    else:
        events = [{"introduced": "0"}, {"fixed": f"{i % 9 + 1}.{i % 4}"},
                  {"introduced": f"{i % 9 + 2}.0"}, {"last_affected": f"{i % 9 + 2}.5"}]
        affected = {"ranges": [{"type": "ECOSYSTEM", "events": events}]}
        prefix = "GHSA-bench-"
    return {"id": f"{prefix}{i:05d}", "modified": "2026-11-01T00:00:00Z",
            "summary": f"bench advisory {i}", "aliases": [f"CVE-2026-{i:05d}"],
            "affected": [{"package": {"ecosystem": "PyPI", "name": project}, **affected}]}


def _touching() -> list[dict]:
    """Records of the projects measured as touched: one release of page244 (which its page
    then lacks), and a release of stack-39 that the index does not have."""
    return [
        {"id": "GHSA-bench-page", "modified": "2026-11-01T00:00:00Z", "affected": [
            {"package": {"ecosystem": "PyPI", "name": "page244"}, "versions": ["1.5.0"]}]},
        {"id": "GHSA-bench-stack", "modified": "2026-11-01T00:00:00Z", "affected": [
            {"package": {"ecosystem": "PyPI", "name": "stack-39"}, "ranges": [
                {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "0.9"}]}]}]},
    ]


def policy_costs(run: Run) -> None:
    # Seven short rounds rather than a long one: other load on the machine comes and goes.
    seconds, rounds = (2, 7) if run.quick else (3, 7)
    started = time.monotonic()
    policy = write_policy(run.out / "policy")
    run.log(f"  policy written in {time.monotonic() - started:.1f}s")
    app = Pypicache(run.out, run.fixture.info["env"], "pypicache-policy",
                    PYPI_POLICY_FILE=str(policy))
    app.name = "pypicache, with the policy"
    run.servers[app.name] = app  # stopped at the end of the run, whatever happens next
    plain = run.servers["pypicache"]
    stack, touched = run.fixture.file("stack39"), run.fixture.file("stack38")
    targets = {}
    for server in (plain, app):
        targets[server.name] = {
            "page, no rule names it": server.page_url("page5000"),
            "small wheel, no rule names it": server.file_url(touched["project"],
                                                             touched["filename"]),
            "page an advisory names (one release refused)": server.page_url("page244"),
            "small wheel an advisory names": server.file_url(stack["project"],
                                                             stack["filename"]),
        }
        for url in targets[server.name].values():  # warm, and a 200
            requests.get(url, headers=PIP_ACCEPT, timeout=120).raise_for_status()
    page = requests.get(app.page_url("page244"), headers=PIP_ACCEPT, timeout=60)
    assert "page244-1.5.0-py3-none-any.whl" not in page.text, "the advisory did not apply"
    for what in targets[plain.name]:
        results: dict[str, list[float]] = {plain.name: [], app.name: []}
        cpu: dict[str, list[float]] = {plain.name: [], app.name: []}
        for server in (plain, app):
            wrk(targets[server.name][what], 1, PIP_ACCEPT)  # settle
        for turn in range(rounds):  # interleaved, and each first in turn (ABBA): other
            # load on the machine, and its drift, weigh on both alike
            for server in (plain, app) if turn % 2 == 0 else (app, plain):
                pids = server.all_pids()
                before = cpu_seconds(pids)
                result = wrk(targets[server.name][what], seconds, PIP_ACCEPT)
                if result["non2xx"] or result["socket_errors"]:
                    run.skipped.append(f"wrk {server.name} {what}: {result}")
                results[server.name].append(result["rps"])
                cpu[server.name].append((cpu_seconds(pids) - before)
                                        / max(result["requests"], 1) * 1e6)
        # The median of each round's ratio: a round's two halves ran a few seconds apart.
        ratio = statistics.median(a / b for a, b in zip(results[app.name], results[plain.name]))
        note = (f"paired rounds; {statistics.median(cpu[app.name]):.0f} us CPU/request with "
                f"the policy, {statistics.median(cpu[plain.name]):.0f} us without")
        run.add(W, what, "pypicache, policy vs none", statistics.median(results[app.name]),
                "req/s", "no policy", statistics.median(results[plain.name]), ">= 0.9",
                ratio=ratio, note=note)
    _in_process(run, {name: targets[name] for name in (plain.name, app.name)},
                {plain.name: (plain, None), app.name: (app, policy)})


def _in_process(run: Run, targets: dict, servers: dict) -> None:
    """The same requests to the app in this process (Flask's test client on each server's
    cache, one thread, no network), timed by the CPU time this process spent (which other
    processes on the machine do not add to, as they add to the wall time), the least of
    batches interleaved. What the policy costs a request with less of the noise of a busy
    machine, which wrk's figures above carry; a stricter ratio, too, as an in-process request
    costs less than one through gunicorn and a socket."""
    from pypicache import create_app

    clients = {}
    for name, (server, policy) in servers.items():
        environ = clean_environ() | run.fixture.info["env"] | {
            "PYPI_CACHE_DIR": str(server.proxy.cache_dir)}
        if policy is not None:
            environ["PYPI_POLICY_FILE"] = str(policy)
        clients[name] = create_app({"environ": environ, "prefetch": False}).test_client()
    plain, policed = servers
    for what in targets[plain]:
        best = {name: float("inf") for name in servers}
        for _ in range(BATCHES):
            for name, client in clients.items():
                path = urlsplit(targets[name][what]).path
                started = time.process_time()
                for _ in range(BATCH):
                    answer = client.get(path, headers=PIP_ACCEPT)
                    answer.get_data()  # the body read, as a server sends it
                    answer.close()
                best[name] = min(best[name], (time.process_time() - started) / BATCH)
            assert answer.status_code == 200, (what, answer.status_code)
        # No goal: a diagnostic (the bar is the throughput above, through gunicorn).
        run.add(W, f"{what}, in process", "pypicache, policy vs none", 1 / best[policed],
                "req/s", "no policy", 1 / best[plain],
                note=f"{best[policed] * 1e6:.0f} us CPU/request with the policy, "
                     f"{best[plain] * 1e6:.0f} us without, in process (no HTTP, no socket)")
