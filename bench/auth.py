"""Logins (11): warm hits logged in against the same hits without a login, and good clients
under a flood of wrong passwords and of unknown users, from the app and from its nginx front.

A second pypicache and front, with PYPI_AUTH_FILE (a bcrypt hash of cost 12, bcrypt's own
default, about a quarter of a second of one core per check) and the product's defaults
otherwise, serve the small wheel that the run's pypicache and front serve without a login.
The flood is wrk with bench/flood.lua: ten connections, each sending a new password (or a
new user name) every 10 ms, so at most 1,000 wrong logins a second, each of which would cost
a bcrypt check if nothing throttled them. Every client here is on 127.0.0.1, the flood's and
the good clients' alike; the front's login TTL is long so that no re-check of the good login
falls in a flood, where it would share the flood's budget (clients behind one address do).
"""

from __future__ import annotations

import base64
import signal
import statistics
import subprocess
import time
from pathlib import Path

import bcrypt
import requests

from .clients import wrk, wrk_command, wrk_figures
from .procs import cpu_seconds
from .run import Run
from .servers import Pypicache, PypicacheFront

W = "14. Logins (PYPI_AUTH_FILE, bcrypt cost 12), 64 connections"
LOGIN = ("bench", "a long enough password")
FLOOD = Path(__file__).with_name("flood.lua")
FLOODS = {"wrong passwords": LOGIN[0], "unknown users": "*"}
HIT_ROUNDS = (6, 2)  # warm hits: rounds of each pair, seconds each (the noise is the load)


def _servers(run: Run) -> tuple[Pypicache, PypicacheFront]:
    logins = run.out / "htpasswd"
    hashed = bcrypt.hashpw(LOGIN[1].encode(), bcrypt.gensalt(12)).decode()
    logins.write_text(f"{LOGIN[0]}:{hashed.replace('$2b$', '$2y$', 1)}\n")  # as htpasswd -B
    app = Pypicache(run.out, run.fixture.info["env"], "pypicache-auth",
                    PYPI_AUTH_FILE=str(logins))
    app.name, app.login = "pypicache, logged in", LOGIN
    run.servers[app.name] = app  # stopped at the end of the run, whatever happens next
    front = PypicacheFront(app, PYPI_AUTH_FILE=str(logins), PYPICACHE_LOGIN_TTL="3600")
    front.name = "pypicache front, logged in"
    run.servers[front.name] = front
    return app, front


def logins(run: Run) -> None:
    seconds, rounds = (2, 3) if run.quick else (3, 5)  # the floods: paired rounds
    stack = run.fixture.file("stack39")
    app, front = _servers(run)
    header = {"Authorization": "Basic " + base64.b64encode(":".join(LOGIN).encode()).decode()}
    urls = {}
    for server in (run.servers["pypicache"], run.servers["pypicache front"], app, front):
        urls[server.name] = server.file_url(stack["project"], stack["filename"])
        requests.get(urls[server.name], auth=server.login, timeout=120).raise_for_status()
    plain = {app.name: "pypicache", front.name: "pypicache front"}
    _verified(urls[app.name])
    # The apps, then the fronts: a front's hits are read from its log by its app's workers
    # a second later, which must not land in the other app's turn.
    turns, length = (4, 1) if run.quick else HIT_ROUNDS
    for name, reference in plain.items():
        for server in (name, reference):
            _measure(run, server, urls[server], header, 1)  # settle; every worker saw the login
        rps: dict[str, list[float]] = {name: [], reference: []}
        cpu: dict[str, list[float]] = {name: [], reference: []}
        # Paired rounds, interleaved, each in the other order than the last: other load on
        # the machine, and its drift, weigh on both alike; the figure is the rounds' median.
        for turn in range(turns):
            for server in (name, reference)[::1 if turn % 2 else -1]:
                figures = _measure(run, server, urls[server], header, length)
                rps[server].append(figures[0])
                cpu[server].append(figures[1])
        ratios = sorted(mine / ref if ref else 0.0 for mine, ref in zip(rps[name], rps[reference]))
        note = (f"median of {turns} paired rounds' ratios (from {ratios[0]:.2f} to "
                f"{ratios[-1]:.2f}); {statistics.median(cpu[name]):.1f} us CPU/request "
                f"logged in, {statistics.median(cpu[reference]):.1f} us without")
        run.add(W, "warm small wheel, logged in", f"{reference}, logged in vs not",
                statistics.median(rps[name]), "req/s", "no login",
                statistics.median(rps[reference]), ">= 0.9", ratio=statistics.median(ratios),
                note=note)
    for server in (app, front):
        _flooded(run, server, urls[server.name], header, seconds, rounds)


def _measure(run: Run, name: str, url: str, header: dict, seconds: float) -> tuple[float, float]:
    """Requests/s of good clients (with the login where the server asks for one), and the
    server's CPU per request."""
    server = run.servers[name]
    pids = server.all_pids()
    before = cpu_seconds(pids)
    result = wrk(url, seconds, header if server.login else None)
    if result["non2xx"] or result["socket_errors"]:
        run.skipped.append(f"wrk {name} logins: {result}")
    return result["rps"], (cpu_seconds(pids) - before) / max(result["requests"], 1) * 1e6


def _flooded(run: Run, server, url: str, header: dict, seconds: float, rounds: int) -> None:
    """Good clients alone and during each flood, in paired rounds, each in the other order than
    the last (as the warm hits above): the machine's drift weighs on both alike, and the
    figure is the median of the rounds' ratios. The good clients are measured once the flood
    has spent its budget (its bcrypt checks stop growing): what a flood that lasts costs; the
    checks it got, and the cores the flood's own client burns beside them, are shown."""
    for kind, user in FLOODS.items():
        alone, flooded, flood_rps, flood_cores, checks = [], [], [], [], 0.0
        for turn in range(rounds):
            if turn % 2 == 0:
                alone.append(_measure(run, server.name, url, header, seconds)[0])
            before = _counts(run)[0]
            command = wrk_command(url, 600, None, 10, 1, FLOOD, user, "10")
            flood = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
            try:
                _until_spent(run)
                spent, start = cpu_seconds([flood.pid]), time.monotonic()
                flooded.append(_measure(run, server.name, url, header, seconds)[0])
                flood_cores.append((cpu_seconds([flood.pid]) - spent)
                                   / (time.monotonic() - start))
            finally:
                flood.send_signal(signal.SIGINT)  # wrk stops and prints its report
                out = flood.communicate(timeout=60)[0]
            flood_rps.append(wrk_figures(out)["rps"])
            checks += _counts(run)[0] - before
            if turn % 2:
                alone.append(_measure(run, server.name, url, header, seconds)[0])
        ratios = sorted(mine / ref if ref else 0.0 for mine, ref in zip(flooded, alone))
        note = (f"median of {rounds} paired rounds' ratios (from {ratios[0]:.2f} to "
                f"{ratios[-1]:.2f}); flood of {statistics.median(flood_rps):.0f} wrong "
                f"logins/s, its client using {statistics.median(flood_cores):.2f} of the "
                f"machine's cores; {checks:.0f} bcrypt checks in {rounds} rounds")
        run.add(W, f"warm small wheel during a flood of {kind}", f"{server.name}, flooded vs not",
                statistics.median(flooded), "req/s", "no flood", statistics.median(alone),
                ">= 0.8", ratio=statistics.median(ratios), note=note)


def _until_spent(run: Run, timeout: float = 60) -> None:
    """Until the flood is answered without checks: no new bcrypt check for 3 s (a check
    under load can take a second or two) while throttled answers keep coming."""
    deadline = time.monotonic() + timeout
    window = [_counts(run)]
    while time.monotonic() < deadline:
        time.sleep(0.5)
        window = (window + [_counts(run)])[-7:]
        (refused, throttled), (last_refused, last_throttled) = window[0], window[-1]
        if len(window) == 7 and refused == last_refused and last_throttled > throttled:
            return
    run.skipped.append("logins: the flood still got bcrypt checks after a minute")


def _counts(run: Run) -> tuple[float, float]:
    """The logged-in app's logins refused by a bcrypt check and throttled, so far."""
    app = run.servers["pypicache, logged in"]
    answer = requests.get(app.proxy.url + "/metrics", auth=LOGIN, timeout=60)
    answer.raise_for_status()  # every worker knows the login: see _verified
    found = {}
    for line in answer.text.splitlines():
        if line.startswith("pypicache_login_checks_total{"):
            found[line.split('"')[1]] = float(line.split()[-1])
    return found.get("refused", 0.0), found.get("throttled", 0.0)


def _verified(url: str) -> None:
    """Each worker checks a login once: new connections until every worker surely has (a
    worker that has not would need a check, which a flood from this address throttles)."""
    for _ in range(60):
        requests.get(url, auth=LOGIN, headers={"Connection": "close"}, timeout=60)
