"""8: resolution against an upstream without .metadata files: `uv pip compile` and
`pip install --dry-run --report` of a 64 MiB wheel and a five-wheel chain, directly and through
pypicache, proxpi and devpi-server, cold then warm: bytes read from the upstream, wall time.

The workload has its own upstream (the suite's fixture, in this process: no server's CPU is
measured here) with metadata=False and Range support, and its own fresh proxies for each client,
so that every cold run is really cold.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from tests.fixture_upstream import Upstream
from tests.wheels import make_wheel

from . import servers
from .clients import pip_env, pip_report_command, timed, uv_compile_command
from .run import MIB, Run

W8 = "8. Resolution, upstream without .metadata: 64 MiB wheel + 5-wheel chain"
CHAIN = [f"chain-{letter}" for letter in "abcde"]


def _upstream(root: Path, payload: int) -> Upstream:
    up = Upstream(root, metadata=False, gzip_pages=True).start()
    wheels = [make_wheel("big-wheel", "1.0", [CHAIN[0]], payload=payload)]
    wheels += [make_wheel(name, "1.0", [after] if after else [])
               for name, after in zip(CHAIN, CHAIN[1:] + [None])]
    for filename, data in wheels:
        up.add_file(filename.split("-1.0")[0], filename, data)
    return up


def _uv(index: str, work: Path) -> str:
    cache = Path(tempfile.mkdtemp(prefix="uv-cache-", dir=work))  # uv's own cache: always cold
    requirements = work / "requirements.in"
    requirements.write_text("big-wheel\n")
    return uv_compile_command(index, requirements, cache, work / "requirements.txt")


def _pip(index: str, work: Path) -> str:
    return pip_report_command(index, work / "report.json", "big-wheel")


CLIENTS = {"uv pip compile": _uv, "pip --dry-run --report": _pip}


def _measure(up: Upstream, client: str, index: str, work: Path) -> tuple[int, float]:
    """(bytes the upstream sent, wall time in s) of one run of `client` against `index`."""
    before = up.bytes_sent()
    took = timed(CLIENTS[client](index, work), env=pip_env())
    return up.bytes_sent() - before, took


def resolution(run: Run) -> None:
    payload = (16 if run.quick else 64) * MIB
    work = run.out / "resolve"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    up = _upstream(work / "upstream", payload)
    try:
        for client in CLIENTS:
            direct_bytes, direct_time = _measure(up, client, up.index_url, work)
            run.add(W8, f"{client}: upstream bytes", "direct", direct_bytes / 1024, "KiB")
            run.add(W8, f"{client}: wall time", "direct", direct_time, "s")
            started = servers.fresh(work / client.split()[0], up.env(), up.index_url,
                                    run.extra.get("peers", ()), run.skipped, "workload 8")
            try:
                for name, server in started.items():
                    index = server.simple.rstrip("/")
                    for state in ("cold", "warm"):
                        try:
                            sent, took = _measure(up, client, index, work)
                        except RuntimeError as error:  # a peer that fails: say so, go on
                            run.skipped.append(f"workload 8: {client} through {name}: {error}")
                            break
                        goal = ""
                        if name == "pypicache":
                            goal = "<= 1024" if state == "cold" else "== 0"
                        run.add(W8, f"{client}, {state}: upstream bytes", name, sent / 1024, "KiB",
                                goal=goal)
                        run.add(W8, f"{client}, {state}: wall time", name, took, "s",
                                "direct", direct_time)
            finally:
                servers.stop_fresh(started)
    finally:
        up.stop()
