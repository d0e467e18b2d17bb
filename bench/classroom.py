"""13: a classroom. N clients (30; 8 with --quick), each a real pip process (and a uv variant)
with its own empty cache and target, are released together and install the same cold stack, 40
small wheels of workload 6's shape and one big wheel, through one new pypicache, through a new
pypicache behind its nginx front, and directly from the upstream.

Reported per case: the wall time until the last client is done (against the N clients
direct), errors (a client that exits non-zero or lacks one of the 41 packages), upstream
downloads per file (the fixture's count of whole-file GETs: a cache must make exactly one),
and the peak RSS (VmHWM, reset before) and peak thread count (sampled) of the gunicorn workers.

Sizing the throttled case: on 2 cores the clients' own CPU sets the floor, about 37 s for 30
pip processes installing such a stack at once. With the upstream's bandwidth at 5 MB/s shared
by all connections, the direct run lasts N x (stack + big wheel) / 5 MB/s; a proxy's run is one
copy at 5 MB/s plus that CPU floor. For the 0.3x goal to measure the proxy rather than pip, the
direct run must last well past 37 s / 0.3 = 125 s; with a 32 MiB wheel it lasts about 215 s
(30 x 36 MB / 5 MB/s) on an idle machine, under 4 minutes, where a 64 MiB one (as unthrottled)
would take 7.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path

from tests.fixture_upstream import Upstream
from tests.wheels import make_wheel

from . import servers
from .clients import pip_command, pip_env, uv_install_command
from .procs import peak, reset_peak, threads
from .run import MIB, Run

W13 = "13. A classroom: N clients at once install 40 wheels + 1 big wheel, cold"
STACK = 40
BANDWIDTH = 5_000_000  # the design note's t, shared by all clients


def _upstream(root: Path, big_sizes: dict[str, int]) -> tuple[Upstream, dict[str, list[str]]]:
    """The stack (room-00 needs room-01..05, each of those the rest) and one big wheel per
    version: requirement set -> the file names a client downloads."""
    up = Upstream(root, gzip_pages=True).start()
    stack = []
    for i in range(STACK):
        requires = [f"room-{j:02d}" for j in (range(1, 6) if i == 0 else range(i + 1, STACK))]
        payload = 256 * 1024 if i % 5 == 0 else 0
        filename, data = make_wheel(f"room-{i:02d}", "1.0", requires if i < 5 else [],
                                    payload=payload)
        up.add_file(f"room-{i:02d}", filename, data)
        stack.append(filename)
    sets = {}
    for version, size in big_sizes.items():
        filename, data = make_wheel("room-big", version, payload=size)
        up.add_file("room-big", filename, data)
        sets[version] = stack + [filename]
    return up, sets


class _Sampler(threading.Thread):
    """The most threads each process had, sampled every 0.2 s until stop()."""

    def __init__(self, pids: list[int]):
        super().__init__(daemon=True)
        self.most = dict.fromkeys(pids, 0)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.2):
            for pid in self.most:
                self.most[pid] = max(self.most[pid], threads(pid))

    def stop(self) -> int:
        self.done.set()
        self.join()
        return max(self.most.values(), default=0)


def _release(commands: list[str], logs: Path) -> tuple[float, list[int]]:
    """Start every command waiting on its stdin, then release them all at once: the seconds
    until the last one exits, and their exit codes."""
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    for i, command in enumerate(commands):
        with open(logs / f"client-{i:02d}.log", "wb") as err:
            procs.append(subprocess.Popen(
                ["sh", "-c", f"read go; exec {command} < /dev/null"], stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL, stderr=err, env=pip_env()))
    t0 = time.monotonic()
    for proc in procs:
        proc.stdin.write(b"go\n")
        proc.stdin.close()
    codes = [proc.wait(timeout=1200) for proc in procs]
    return time.monotonic() - t0, codes


def _lesson(client: str, index: str, clients: int, big: str, work: Path) -> tuple[float, int]:
    """N clients at once: (seconds until the last is done, clients that failed)."""
    shutil.rmtree(work, ignore_errors=True)
    requirements = ("room-00", f"room-big=={big}")
    commands = []
    for i in range(clients):
        target = work / f"target-{i:02d}"
        if client == "pip":
            commands.append(pip_command(index, target, *requirements))
        else:
            commands.append(uv_install_command(index, target, work / f"cache-{i:02d}",
                                               *requirements))
    wall, codes = _release(commands, work / "logs")
    errors = sum(1 for i, code in enumerate(codes) if code or len(list(
        (work / f"target-{i:02d}").glob("*.dist-info"))) != STACK + 1)
    for path in [*work.glob("target-*"), *work.glob("cache-*")]:  # N x 64 MiB and more
        shutil.rmtree(path, ignore_errors=True)
    return wall, errors


def classroom(run: Run) -> None:
    clients = 8 if run.quick else 30
    big = {"1.0": (16 if run.quick else 64) * MIB, "2.0": (16 if run.quick else 32) * MIB}
    cases = [("pip", None, "1.0"), ("uv", None, "1.0"), ("pip", BANDWIDTH, "2.0")]
    work = run.out / "classroom"
    shutil.rmtree(work, ignore_errors=True)
    up, sets = _upstream(work / "upstream", big)
    try:
        for client, bandwidth, version in cases:
            up.set_bandwidth(bandwidth)
            rate = f"upstream {bandwidth / 1e6:g} MB/s shared" if bandwidth else "unthrottled"
            case = f"{clients} {client} clients, {big[version] // MIB} MiB wheel, {rate}"
            run.log(f"  classroom: {case}")
            _case(run, up, sets[version], case, client, clients, version, bandwidth, work)
    finally:
        up.stop()


def _case(run, up, files, case, client, clients, version, bandwidth, work) -> None:
    up.reset_counts()
    direct, errors = _lesson(client, up.index_url, clients, version, work / "direct")
    run.add(W13, f"{case}: last client done", "direct", direct, "s", "direct", direct)
    run.add(W13, f"{case}: errors", "direct", errors, "clients")
    goal = ("<= 0.3" if bandwidth else "<= 1.0") if client == "pip" else ""
    for name in ("pypicache", "pypicache front"):
        up.reset_counts()
        home = work / f"{client}-{version}-{name.replace(' ', '-')}"  # a new, empty cache
        shutil.rmtree(home, ignore_errors=True)
        app = servers.Pypicache(home, up.env())
        front = servers.PypicacheFront(app) if name == "pypicache front" else None
        try:
            server = front or app
            pids = app.worker_pids()  # the gunicorn workers, front or not
            reset_peak(pids)
            sampler = _Sampler(pids)
            sampler.start()
            wall, errors = _lesson(client, server.simple.rstrip("/"), clients, version,
                                   home / "clients")
            most_threads = sampler.stop()
            rss = max(peak(pid) for pid in pids)
        finally:
            if front:
                front.stop()
            app.stop()
        counts = [up.downloads(filename) for filename in files]
        requests = sum(up.stats()["requests"].values())
        run.add(W13, f"{case}: last client done", name, wall, "s", "direct", direct, goal)
        run.add(W13, f"{case}: errors", name, errors, "clients", goal="== 0")
        run.add(W13, f"{case}: upstream downloads per file, most", name, max(counts),
                "x the file", goal="== 1",
                note=f"fewest {min(counts)}, {len(files)} files; {requests} upstream requests")
        run.add(W13, f"{case}: peak RSS per worker", name, rss / MIB, "MiB",
                note=f"{len(pids)} workers, at most {most_threads} threads in one")
