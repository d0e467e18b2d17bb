"""`python -m bench` (or `make bench`): every workload in one run, on 127.0.0.1 only.

Writes docs/BENCHMARKS.md and docs/bench-experiment.png (a --quick run, or one of some
workloads with --only, writes them under bench/out/ instead, unless --docs is given).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

from . import auth, classroom, coldscale, far, files, pages, pipexp, policy, procs, report
from . import resolve
from . import s3, servers, tools
from .run import MIB, Run

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = {  # run in this order: each leaves the caches the next one expects
    "root": pages.root_list,  # first: devpi fetches the root list on its first project page
    "rss": files.streaming_rss,
    "large": files.warm_large,
    "cold": files.cold_throttled,
    "herd": files.cold_herd,
    "pages": pages.project_pages,
    "pip": pipexp.experiment,
    "small": pages.small_requests,
    "auth": auth.logins,  # its own pypicache and front, with logins
    "resolve": resolve.resolution,  # its own upstream (no .metadata) and fresh proxies
    "s3": s3.shared_bucket,
    "coldscale": coldscale.cold_scale,  # its own upstream and fresh proxies
    "delay": far.far_upstream,  # the upstream's stack-00 behind fresh proxies
    "classroom": classroom.classroom,  # its own upstream and fresh proxies
    "policy": policy.policy_costs,  # its own pypicache with a policy, before the run's upstream
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument(
        "--quick", action="store_true", help="smaller files and shorter runs (about 10 minutes)"
    )
    p.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(WORKLOADS)}")
    p.add_argument("--no-peers", action="store_true", help="skip proxpi and devpi-server")
    p.add_argument(
        "--docs", action="store_true", help="write docs/ even for a --quick or --only run"
    )
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    a = p.parse_args(argv)
    tools.ensure_tools()
    peers = [] if a.no_peers else [name for name in tools.PEERS if tools.ensure_peer(name)]
    work = a.out / "run"
    shutil.rmtree(work, ignore_errors=True)
    run = Run(out=work, quick=a.quick)
    run.extra["root_projects"] = 100_000 if a.quick else 1_000_000
    run.extra["peers"] = peers
    run.extra["pages_dir"] = work / "pages"
    run.extra["pages_dir"].mkdir(parents=True)
    if a.no_peers:
        run.skipped.append("proxpi and devpi-server: --no-peers")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    run.extra["load_start"] = load
    run.log(f"load average {load} (other processes on this machine disturb every figure)")
    try:
        start(run, a.out, peers)
        chosen = [w for w in a.only.split(",") if w] or list(WORKLOADS)
        for name in chosen:
            run.log(f"workload {name}")
            try:
                WORKLOADS[name](run)
            except Exception as error:  # one broken workload must not hide the others
                traceback.print_exc()
                run.skipped.append(f"workload {name} failed: {type(error).__name__}: {error}")
    finally:
        stop(run)
    run.extra["elapsed"] = time.monotonic() - run.t0
    docs = ROOT / "docs" if (not (a.quick or a.only) or a.docs) else a.out
    report.write(run, docs, sys.argv[1:])
    run.log(f"wrote {docs / 'BENCHMARKS.md'}")
    return 0


def start(run: Run, out: Path, peers: list[str]) -> None:
    big = (128 if run.quick else 512) * MIB
    run.log("starting the fixture upstream (first run: generating files)")
    run.fixture = procs.Fixture(
        out / "upstream",
        run.out / "logs" / "upstream.log",
        big,
        run.extra["root_projects"],
        3 * MIB,
    )
    info = run.fixture.info
    run.log("starting pypicache (default settings), its nginx front, nginx, the bare Flask app")
    py = servers.Pypicache(run.out, info["env"])
    run.servers["pypicache"] = py
    run.servers["pypicache front"] = servers.PypicacheFront(py)
    static = (out / "upstream" / "files", run.extra["pages_dir"])
    run.servers["nginx"] = servers.start_nginx(run.out, *static)
    threads = int(servers.TABLE["threads"][2])
    run.servers["bare Flask"] = servers.start_bare(run.out, *static, py.workers, threads)
    for name, cls in (("proxpi", servers.Proxpi), ("devpi", servers.Devpi)):
        if name in peers:
            run.log(f"starting {name}")
            try:
                run.servers[name] = cls(run.out, info["index_url"])
            except Exception as error:
                run.skipped.append(f"{name} did not start: {error}")


def stop(run: Run) -> None:
    fronts = [s for s in run.servers.values() if isinstance(s, servers.PypicacheFront)]
    apps = [s for s in run.servers.values() if isinstance(s, servers.Pypicache)]
    for server in fronts + apps:  # the fronts first: they talk to the apps
        server.stop()
    procs.stop_all()


if __name__ == "__main__":
    sys.exit(main())
