"""11: resolving a real-shaped stack, cold and warm: `uv pip compile` (parallel) and
`pip install --dry-run --report` (serial) of one root that needs 100 projects, many of whose
pages list thousands of files (numpy's and botocore's sizes), directly and through new proxies.

The stack has the shape of a big application's closure (jupyterlab's is about 100 projects): a
random graph, the same in every run, in which each project is reached from the root through a
few levels of requirements. Every project has one real release, 1.0, a small real wheel with its
requirements; a tenth of them also list 5,000 files of older releases (a wheel and an sdist each,
like botocore: a 2.5 MB JSON page), a tenth 3,000 (wheels for every CPython and platform, like
numpy: 1.6 MB of HTML), three tenths 300 and the rest 30, none of them stored
(tests/fixture_upstream.py `add_history`). Every client run starts with an empty cache, every
cold run with a new proxy; "warm" is the next run through that proxy.

The miss overhead is what a new proxy adds to a page it has never seen over the upstream's own
answer: the median of cold GETs of five ~2 MB pages (4,000 files) through it minus the median
of the direct GETs of the same pages, with pip's Accept header.

The upstream is the suite's fixture in this process (as in workload 8), with its big pages
rendered (and gzipped, as a CDN sends them to clients that accept it) once, so that its own
time is the transfer rather than Python building JSON. Each run through a server notes the CPU
time its processes used.
"""

from __future__ import annotations

import json
import random
import shutil
import statistics
import tempfile
from pathlib import Path

from tests.fixture_upstream import Upstream
from tests.wheels import make_wheel

from . import servers
from .clients import (
    PIP_ACCEPT, latencies, pip_env, pip_report_command, timed, uv_compile_command,
)
from .procs import cpu_seconds
from .run import Run

W11 = "11. Resolution of a real-shaped stack, pages of up to 5,000 files"
UV, PIP = "uv pip compile", "pip --dry-run --report"
PAGE_PROJECTS, PAGE_FILES = 5, 4000


def _history(i: int) -> tuple[int, bool]:
    """(files of older releases, pure-Python or not) of project i."""
    if i % 10 == 1:
        return 5000, True
    if i % 10 == 4:
        return 3000, False
    return (300, False) if i % 10 in (2, 6, 8) else (30, True)


def _requires(n: int) -> list[list[int]]:
    """Each project after the first is required by one or two earlier ones: all reach the root."""
    rng = random.Random(11)
    requires: list[list[int]] = [[] for _ in range(n)]
    for j in range(1, n):
        for parent in sorted({rng.randrange(j), rng.randrange(j)}):
            requires[parent].append(j)
    return requires


def _name(i: int) -> str:
    return f"scale-{i:03d}"


def _upstream(root: Path, n: int) -> Upstream:
    up = Upstream(root, gzip_pages=True).start()
    for i, needs in enumerate(_requires(n)):
        filename, data = make_wheel(_name(i), "1.0", [_name(j) for j in needs])
        up.add_file(_name(i), filename, data)
        count, pure = _history(i)
        up.add_history(_name(i), count, pure=pure)
    for k in range(PAGE_PROJECTS):
        up.add_wheel(f"page-2mb-{k}", "1.0")
        up.add_history(f"page-2mb-{k}", PAGE_FILES, pure=True)
    names = [_name(i) for i in range(n)] + [f"page-2mb-{k}" for k in range(PAGE_PROJECTS)]
    for name in names:  # rendered (and gzipped) now, not during the first measured run
        for fmt in ("json", "html"):
            up.render_project(name, fmt)
            up.gzipped(name, fmt)
    return up


def _resolve(client: str, index: str, work: Path, n: int) -> float:
    """Wall time of one client run with an empty cache; it must pin all n projects."""
    run_dir = Path(tempfile.mkdtemp(prefix="client-", dir=work))
    try:
        if client == UV:
            requirements = run_dir / "requirements.in"
            requirements.write_text(_name(0) + "\n")
            output = run_dir / "requirements.txt"
            took = timed(uv_compile_command(index, requirements, run_dir / "cache", output),
                         env=pip_env())
            pins = [line for line in output.read_text().splitlines() if "==" in line
                    and not line.startswith((" ", "#"))]
        else:
            report = run_dir / "report.json"
            took = timed(pip_report_command(index, report, _name(0)), env=pip_env())
            pins = json.loads(report.read_text())["install"]
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    if len(pins) != n:
        raise RuntimeError(f"{client} through {index} pinned {len(pins)} projects, not {n}")
    return took


def _miss_overhead(run: Run, up: Upstream, server) -> None:
    """Cold GETs of never-seen ~2 MB pages through `server` against the same GETs direct."""
    cold, direct = [], []
    for k in range(PAGE_PROJECTS):
        project = f"page-2mb-{k}"
        direct.append(latencies(f"{up.index_url}/{project}/", 1, PIP_ACCEPT)[0])
        cold.append(latencies(server.page_url(project), 1, PIP_ACCEPT)[0])
        direct.append(latencies(f"{up.index_url}/{project}/", 1, PIP_ACCEPT)[0])
    size = len(up.render_project("page-2mb-0", "json")) / 1e6
    cold_ms, direct_ms = statistics.median(cold) * 1000, statistics.median(direct) * 1000
    run.add(W11, f"one {size:.1f} MB page ({PAGE_FILES:,} files), cold: miss overhead",
            server.name, cold_ms - direct_ms, "ms",
            note=f"cold GET {cold_ms:.0f} ms, direct GET {direct_ms:.0f} ms (medians)")


def cold_scale(run: Run) -> None:
    n = 40 if run.quick else 100
    work = run.out / "coldscale"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    up = _upstream(work / "upstream", n)
    peers = run.extra.get("peers", ())
    if "devpi" in peers:
        run.skipped.append(f"workload 11: {PIP} through devpi-server is not run: it alone took "
                           "about 3 minutes cold with these pages (uv shows devpi's figures)")
    try:
        for client in (UV, PIP):
            direct = _resolve(client, up.index_url, work, n)
            run.add(W11, f"{client}, {n} projects: wall time", "direct", direct, "s", "direct",
                    direct)
            started = servers.fresh(work / client.split()[0], up.env(), up.index_url,
                                    [p for p in peers if (client, p) != (PIP, "devpi")],
                                    run.skipped, "workload 11")
            try:
                for name, server in started.items():
                    if client == UV:  # a new server: every page is cold
                        _miss_overhead(run, up, server)
                    _through(run, client, name, server, work, n, direct)
            finally:
                servers.stop_fresh(started)
    finally:
        up.stop()


def _through(run: Run, client: str, name: str, server, work: Path, n: int, direct: float) -> None:
    """A cold run through a new server, then a warm one; goals for pypicache."""
    pids = server.all_pids()
    for state, goal in (("cold", "<= 1.1"), ("warm", "<= 1.0")):
        before = cpu_seconds(pids)
        try:
            took = _resolve(client, server.simple.rstrip("/"), work, n)
        except RuntimeError as error:  # a peer that fails: say so, go on
            run.skipped.append(f"workload 11: {client} through {name}: {error}")
            return
        used = cpu_seconds(pids) - before
        run.add(W11, f"{client}, {n} projects, {state}: wall time", name, took, "s", "direct",
                direct, goal if name == "pypicache" else "",
                note=f"server CPU {used:.2f} s")
