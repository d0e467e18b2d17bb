"""Fetching ahead, measured: `python -m bench.ahead [--runs N] [--delay S] [--shape chain]`.

A cold `pip install` and `uv pip install` of the design note's 40-package stack (`stack-00`
needs five packages, each of those the rest; `--shape chain`: forty packages each needing the
next, so no level can be fetched before the one above), straight from a far upstream and
through a fresh pypicache with fetching ahead off (the defaults), on, and on with other
depths, thread counts, or the wheels too (CASES). The upstream is the test suite's fixture
in this process, each answer (page, `.metadata`, wheel) delayed `--delay` seconds (its
`slow:` fault on every path). Each case gets a new cache directory and client cache; runs are
interleaved so the machine's other load weighs on every case alike; the table gives each
case's median wall time and its ratio to the direct install measured in the same run.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from tests.fixture_upstream import Upstream
from tests.servers import Proxy, installed, pip_install, uv_install

STACK = 40
ON = {"PYPI_PREFETCH": "1"}
CASES = {  # name -> proxy settings (None: straight from the upstream)
    "direct": None,
    "off": {},  # the defaults
    "on": ON,
    "depth1": ON | {"PYPI_PREFETCH_DEPTH": "1"},
    "depth3": ON | {"PYPI_PREFETCH_DEPTH": "3"},
    "threads1": ON | {"PYPI_PREFETCH_CONCURRENCY": "1"},
    "threads2": ON | {"PYPI_PREFETCH_CONCURRENCY": "2"},
    "threads4": ON | {"PYPI_PREFETCH_CONCURRENCY": "4"},
    "threads8": ON | {"PYPI_PREFETCH_CONCURRENCY": "8"},
    "files": ON | {"PYPI_PREFETCH_FILES": "1"},
}

def stack(up: Upstream, delay: float, payload: int, shape: str) -> None:
    """The note's stack (bench/upstream.py's shape), or a chain as deep (each package needs
    the next), every answer of it `delay` late."""
    from tests.wheels import make_wheel

    for i in range(STACK):
        name = f"stack-{i:02d}"
        requires = [f"stack-{j:02d}" for j in range(i + 1, STACK)] if i < 5 else []
        if i == 0:
            requires = [f"stack-{j:02d}" for j in range(1, 6)]
        if shape == "chain":
            requires = [f"stack-{i + 1:02d}"] if i + 1 < STACK else []
        filename, data = make_wheel(name, "1.0", requires, payload=payload if i % 5 == 0 else 0)
        up.add_file(name, filename, data)
        if delay:
            up.project_fault(name, f"slow:{delay}")
            up.fault(filename, f"slow:{delay}")
            up.fault(filename + ".metadata", f"slow:{delay}")


def install(client: str, index: str, work: Path) -> float:
    target, cache = Path(tempfile.mkdtemp(dir=work)), Path(tempfile.mkdtemp(dir=work))
    started = time.perf_counter()
    done = (pip_install(index, target, "stack-00") if client == "pip"
            else uv_install(index, target, cache, "stack-00"))
    took = time.perf_counter() - started
    if done.returncode or len(installed(target)) != STACK:
        raise RuntimeError(f"{client} through {index} failed: {done.stderr[-2000:]}")
    return took


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.ahead", description=__doc__)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--delay", type=float, default=0.1, help="seconds before every upstream answer")
    p.add_argument("--payload", type=int, default=64 << 10, help="bytes in every fifth wheel")
    p.add_argument("--clients", default="pip,uv")
    p.add_argument("--shape", choices=("stack", "chain"), default="stack")
    p.add_argument("--cases", default=",".join(CASES), help="comma-separated names of CASES")
    a = p.parse_args(argv)
    cases = [name for name in a.cases.split(",") if name]
    with tempfile.TemporaryDirectory(prefix="bench-ahead-") as scratch:
        work = Path(scratch)
        up = Upstream(work / "up", gzip_pages=True).start()
        stack(up, a.delay, a.payload, a.shape)
        times: dict[tuple[str, str], list[float]] = {}
        try:
            for run in range(a.runs):
                for client in a.clients.split(","):
                    for name in cases:
                        settings = CASES[name]
                        if settings is None:
                            took = install(client, up.index_url, work)
                        else:
                            cache = Path(tempfile.mkdtemp(dir=work)) / "cache"  # cold
                            proxy = Proxy(cache, up.env(), **settings).start()
                            try:
                                took = install(client, f"{proxy.url}/simple", work)
                            finally:
                                proxy.stop()
                        times.setdefault((client, name), []).append(took)
                        print(f"run {run + 1} {client:3} {name:9} {took:6.2f} s", flush=True)
        finally:
            up.stop()
    print(f"\nmedian of {a.runs} cold installs of {STACK} packages ({a.shape}), every "
          f"upstream answer {a.delay * 1000:.0f} ms late")
    for client in a.clients.split(","):
        direct = statistics.median(times[(client, "direct")]) if "direct" in cases else None
        for name in cases:
            median = statistics.median(times[(client, name)])
            ratio = f"{median / direct:5.2f}x direct" if direct else ""
            print(f"{client:3} {name:9} {median:6.2f} s  {ratio}")


if __name__ == "__main__":
    main()
