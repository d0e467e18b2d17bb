"""12: a far upstream. Every answer of the upstream (pages, files, `.metadata`) comes 100 ms
late; pip and uv install workload 6's stack (`stack-00`, 40 packages) directly from it and
through a new, cold pypicache, each client with an empty cache.

A serial client pays the delay once per request: pip asks for 40 pages, 40 `.metadata` files
and 40 wheels one after the other, so about 12 s of its time directly is waiting. A proxy that
only relays pays the same; one that fetches the dependency closure ahead of the client (the
pages and metadata the client will ask for next) pays it about once per level of the graph.
The goals (pip at most 0.5x direct, uv at most 0.8x) need that: they are set for pypicache
with fetching ahead on (PYPI_PREFETCH=1, off by default: on a near upstream it costs more CPU
than it saves, docs/DESIGN.md), beside the defaults. "warm" is a second run through the same
proxy, for scale: what is left when nothing waits for the upstream.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from . import servers
from .clients import pip_command, pip_env, timed, uv_install_command
from .run import Run
from .upstream import STACK

W12 = "12. Far upstream (100 ms per request): install the 40-package stack"
DELAY = 0.1
GOALS = {"pip install": "<= 0.5", "uv pip install": "<= 0.8"}


def _install(client: str, index: str, work: Path) -> float:
    """Wall time of one install into a new target with an empty client cache; all 40 land."""
    run_dir = Path(tempfile.mkdtemp(prefix="client-", dir=work))
    target = run_dir / "target"
    try:
        if client == "pip install":
            command = pip_command(index, target, "stack-00")
        else:
            command = uv_install_command(index, target, run_dir / "cache", "stack-00")
        took = timed(command, env=pip_env())
        count = len(list(target.glob("*.dist-info")))
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    if count != STACK:
        raise RuntimeError(f"{client} through {index} installed {count}, not {STACK}")
    return took


AHEAD = "pypicache, fetching ahead"


def far_upstream(run: Run) -> None:
    work = run.out / "far"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    fixture = run.fixture
    fixture.throttle(None)
    fixture.bandwidth(None)
    fixture.delay(DELAY)
    try:
        for client, goal in GOALS.items():
            direct = _install(client, fixture.info["index_url"], work)
            run.add(W12, client, "direct", direct, "s", "direct", direct)
            for label, env in (("pypicache", {}), (AHEAD, {"PYPI_PREFETCH": "1"})):
                proxy = servers.Pypicache(work / client.split()[0], fixture.info["env"],
                                          directory=label.replace(" ", "-"), **env)
                try:
                    cold = _install(client, proxy.simple.rstrip("/"), work)
                    warm = _install(client, proxy.simple.rstrip("/"), work)
                finally:
                    proxy.stop()
                run.add(W12, f"{client}, cold", label, cold, "s", "direct", direct,
                        goal if env else "")
                run.add(W12, f"{client}, warm", label, warm, "s", "direct", direct)
    finally:
        fixture.delay(0)
