"""Index pages: the root list and project pages cold and warm (5); small requests under load (2)."""

from __future__ import annotations

import statistics
import time

import requests

from .clients import PIP_ACCEPT, latencies, median_ms, wrk
from .procs import cpu_seconds, peak, reset_peak, rss
from .run import MIB, Run

W5 = "5. Index pages"
HTML = {"Accept": "text/html"}  # the root list as a browser (or a mirror tool) asks for it


def _get_ms(url: str, headers: dict) -> float:
    return latencies(url, 1, headers)[0] * 1000


def root_list(run: Run) -> None:
    """The root list (~1M projects): cold and warm latency, and the workers' peak RSS."""
    n = run.extra["root_projects"]
    direct = min(_get_ms(run.fixture.info["index_url"] + "/", HTML) for _ in range(2))
    case = f"root list of {n:,} projects"
    run.add(W5, f"{case}, cold", "direct", direct, "ms", "direct", direct)
    for server in run.peers("pypicache", "proxpi", "devpi"):
        pids = server.worker_pids()
        idle = max(rss(p) for p in pids)
        reset_peak(pids)
        try:
            cold = _get_ms(server.simple, HTML)
        except Exception as error:  # a peer that cannot serve it is reported, not fatal
            run.skipped.append(f"{server.name} root list: {error}")
            continue
        _root_case(run, server, f"{case}, cold", cold, direct, pids, idle)
        reset_peak(pids)
        warm = median_ms(latencies(server.simple, 3, HTML))
        _root_case(run, server, f"{case}, warm", warm, direct, pids, idle)


def _root_case(run: Run, server, case: str, ms: float, direct: float, pids, idle: int) -> None:
    """One root-list latency against the direct upstream, and the workers' peak RSS since reset."""
    top = max(peak(p) for p in pids)
    run.add(W5, case, server.name, ms, "ms", "direct", direct)
    goal = "<= 1.5" if server.name == "pypicache" else ""
    run.add(W5, f"{case}: peak worker RSS", server.name, top / MIB, "MiB", "idle worker RSS",
            idle / MIB, goal)


def project_pages(run: Run) -> None:
    """Pages of 244 and 5,000 files: first request (cold) and the median of many (warm)."""
    count = 30 if run.quick else 100
    for n in (244, 5000):
        project = f"page{n}"
        direct_url = f"{run.fixture.info['index_url']}/{project}/"
        direct = median_ms(latencies(direct_url, 5, PIP_ACCEPT))
        run.add(W5, f"{n}-file page, cold", "direct", direct, "ms", "direct", direct)
        for server in run.peers("pypicache", "proxpi", "devpi"):
            cold = _get_ms(server.page_url(project), PIP_ACCEPT)
            run.add(W5, f"{n}-file page, cold", server.name, cold, "ms", "direct", direct)
        _copy_page(run, project)
        nginx = median_ms(latencies(run.servers["nginx"].page_url(project), count, PIP_ACCEPT))
        run.add(W5, f"{n}-file page, warm (median)", "nginx", nginx, "ms", "nginx", nginx)
        for server in run.peers("pypicache", "pypicache front", "proxpi", "devpi"):
            warm = median_ms(latencies(server.page_url(project), count, PIP_ACCEPT))
            goal = "< 20" if server.name == "pypicache" and n == 5000 else ""
            row = run.add(
                W5, f"{n}-file page, warm (median)", server.name, warm, "ms", "nginx", nginx
            )
            if goal:  # the bar is absolute: 20 ms at the median
                run.add(
                    W5,
                    f"{n}-file page, warm (median), the 20 ms bar",
                    server.name,
                    warm,
                    "ms",
                    goal=goal,
                    note=f"{row.ratio:.2f}x nginx",
                )


def _copy_page(run: Run, project: str) -> None:
    """nginx and the bare app serve pypicache's rendered JSON page: the same bytes pip gets."""
    page = requests.get(
        run.servers["pypicache"].page_url(project),
        headers=PIP_ACCEPT | {"Accept-Encoding": "identity"},
        timeout=120,
    )
    page.raise_for_status()
    (run.extra["pages_dir"] / f"{project}.json").write_bytes(page.content)


def _until_ok(url: str, timeout: float = 20) -> None:
    """devpi answers a wheel's `.metadata` only once it has stored the wheel, a moment after."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            latencies(url, 1, PIP_ACCEPT)
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# The front's bars against nginx serving the same bytes from disk (an issue's "must show").
FRONT_GOALS = {".metadata": ">= 0.8", "small wheel": ">= 0.8", "244-file page": ">= 0.5"}


def small_requests(run: Run) -> None:
    """2: requests/s with 64 connections: a `.metadata` file, a small wheel (nginx, pypicache
    and its front only) and the 244-file page."""
    seconds = 2 if run.quick else 3
    run.fixture.throttle(None)
    stack = run.fixture.file("stack39")
    latencies(run.servers["pypicache"].page_url("page244"), 1, PIP_ACCEPT)  # rendered, if not yet
    _copy_page(run, "page244")
    targets = {}
    names = ("nginx", "bare Flask", "pypicache", "pypicache front", "proxpi", "devpi")
    for server in run.peers(*names):
        wheel = server.file_url(stack["project"], stack["filename"])
        latencies(wheel, 1)  # devpi extracts the metadata from the cached wheel only
        targets[server.name] = {
            ".metadata": wheel + ".metadata",
            "small wheel": wheel,
            "244-file page": server.page_url("page244"),
        }
        for url in targets[server.name].values():
            _until_ok(url)  # warm, and a 200
    rounds = 1 if run.quick else 3
    for what in (".metadata", "small wheel", "244-file page"):
        measured = {
            n: u for n, u in targets.items()
            if what != "small wheel" or n in ("nginx", "pypicache", "pypicache front")
        }
        results = {name: [] for name in measured}
        cpu = dict.fromkeys(measured, 0.0)  # the servers' CPU seconds per request: load-robust
        count = dict.fromkeys(measured, 0)
        for urls in measured.values():
            wrk(urls[what], 1, PIP_ACCEPT)  # settle
        for _ in range(rounds):  # interleaved: other load on the machine weighs on all alike
            for name, urls in measured.items():
                pids = run.servers[name].all_pids()
                before = cpu_seconds(pids)
                result = wrk(urls[what], seconds, PIP_ACCEPT)
                cpu[name] += cpu_seconds(pids) - before
                count[name] += result["requests"]
                if result["non2xx"] or result["socket_errors"]:
                    run.skipped.append(f"wrk {name} {what}: {result}")
                results[name].append(result["rps"])
        rps = {name: statistics.median(r) for name, r in results.items()}
        us = {name: cpu[name] / max(count[name], 1) * 1e6 for name in measured}
        w, case = "2. Warm small requests, 64 connections", what
        if "pypicache front" in rps:
            note = (f"{us['pypicache front']:.0f} us CPU/request (nginx and gunicorn), nginx alone"
                    f" {us['nginx']:.0f} us")
            front, goal = rps["pypicache front"], FRONT_GOALS[what]
            run.add(w, case, "pypicache front vs nginx", front, "req/s", "nginx", rps["nginx"],
                    goal, note=note)
        mine = rps["pypicache"]
        if what == "small wheel":
            run.add(w, case, "pypicache vs nginx", mine, "req/s", "nginx", rps["nginx"],
                    note=f"{us['pypicache']:.0f} us CPU/request")
            continue
        for name in ("nginx", "bare Flask", "proxpi", "devpi"):
            if name in rps:
                run.add(w, case, name, rps[name], "req/s", note=f"{us[name]:.0f} us CPU/request")
        note = f"{us['pypicache']:.0f} us CPU/request"
        run.add(w, case, "pypicache vs nginx", mine, "req/s", "nginx", rps["nginx"], note=note)
        ceiling = rps["bare Flask"]
        cpu_ratio = f"{note}; CPU/request ratio {us['bare Flask'] / us['pypicache']:.2f}x"
        run.add(
            w,
            case,
            "pypicache vs bare Flask",
            mine,
            "req/s",
            "bare Flask",
            ceiling,
            ">= 0.8",
            note=cpu_ratio,
        )
        for peer in ("proxpi", "devpi"):
            if peer in rps:
                cpu_ratio = f"CPU/request ratio {us[peer] / us['pypicache']:.2f}x"
                run.add(
                    w,
                    case,
                    f"pypicache vs {peer}",
                    mine,
                    "req/s",
                    peer,
                    rps[peer],
                    ">= 2",
                    note=cpu_ratio,
                )
