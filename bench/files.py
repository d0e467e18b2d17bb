"""Package files: warm (1), cold throttled (3), 16 cold clients (4), RSS when streaming (7)."""

from __future__ import annotations

import statistics
import subprocess
import time

from .clients import download, herd, parallel_curl, timed
from .procs import peak, reset_peak, rss
from .run import MIB, Run

T_RATE = 5_000_000  # the design note's t = 5 MB/s


def _check(results: list[dict], size: int, what: str) -> None:
    bad = [r for r in results if r["code"] != 200 or r["size"] != size]
    if bad:
        raise RuntimeError(
            f"{what}: {len(bad)} bad downloads, e.g. {bad[0]} (expected {size} bytes)"
        )


def _warm(server, url: str) -> None:
    """Download once, and for proxpi wait until it serves from its cache rather than redirecting."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        out = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url],
            capture_output=True,
            text=True,
            timeout=600,
        ).stdout
        if out == "200":
            return
        time.sleep(0.5)
    raise RuntimeError(f"{server.name} never served {url} from its cache")


def streaming_rss(run: Run) -> None:
    """7: peak RSS of pypicache's workers while 8 clients stream a cold file (64 MiB, 512 MiB)."""
    run.fixture.throttle(None)
    py = run.servers["pypicache"]
    peaks = {}
    for key in ("large64", "large512"):
        f = run.fixture.file(key)
        url = py.file_url(f["project"], f["filename"])
        pids = py.worker_pids()
        idle = max(rss(p) for p in pids)
        reset_peak(pids)
        result = herd(url, 8)
        _check(result["clients"], f["size"], f"cold {key}")
        peaks[key] = max(peak(p) for p in pids)
        run.add(
            "7. Peak RSS per worker, 8 clients streaming",
            f"{f['size'] // MIB} MiB, cold",
            "pypicache",
            peaks[key] / MIB,
            "MiB",
            "idle worker RSS",
            idle / MIB,
            note=f"{result['wall']:.1f} s for all 8",
        )
    big = run.fixture.file("large512")["size"] // MIB
    run.add(
        "7. Peak RSS per worker, 8 clients streaming",
        f"{big} MiB vs 64 MiB, cold",
        "pypicache",
        peaks["large512"] / MIB,
        "MiB",
        "peak at 64 MiB",
        peaks["large64"] / MIB,
        "<= 1.1",
    )
    run.extra["rss_peak_64"] = peaks["large64"]


def warm_large(run: Run) -> None:
    """1: throughput of 1 and 8 clients of a cached 64 MiB and 512 MiB file, against nginx.

    The servers take turns run after run (interleaved), so that whatever else loads the machine
    weighs on each of them alike; the first round warms up and is dropped.
    """
    run.fixture.throttle(None)
    names = ["nginx", "pypicache", "pypicache front"]
    names += [] if run.quick else ["bare Flask", "proxpi", "devpi"]
    for key in ("large64", "large512"):
        f = run.fixture.file(key)
        urls = {}
        for server in run.peers(*names):
            urls[server.name] = server.file_url(f["project"], f["filename"])
            _warm(server, urls[server.name])
        rounds = (10 if key == "large64" else 3) // (2 if run.quick else 1)
        for clients in (1, 8):
            py = run.servers["pypicache"]
            reset_peak(py.worker_pids())
            times = {name: [] for name in urls}
            for _ in range(rounds + 1):
                for name, url in urls.items():
                    times[name].append(timed(parallel_curl(url, clients)))
            rates = {
                n: clients * f["size"] / statistics.median(t[1:]) / MIB for n, t in times.items()
            }
            case = f"{f['size'] // MIB} MiB, {clients} client{'s' if clients > 1 else ''}"
            for name, rate in rates.items():
                goal = ">= 0.9" if name in ("pypicache", "pypicache front") else ""
                run.add(
                    "1. Warm large file", case, name, rate, "MiB/s", "nginx", rates["nginx"], goal
                )
            if clients == 1 and key == "large64":
                run.extra["d"] = rates["pypicache"] * MIB  # the note's local bandwidth d
            if clients == 8 and key == "large512" and "rss_peak_64" in run.extra:
                top = max(peak(p) for p in py.worker_pids())
                w7 = "7. Peak RSS per worker, 8 clients streaming"
                ref = run.extra["rss_peak_64"] / MIB
                case = f"{f['size'] // MIB} MiB, warm"
                run.add(
                    w7, case, "pypicache", top / MIB, "MiB", "peak at 64 MiB cold", ref, "<= 1.1"
                )


def cold_throttled(run: Run) -> None:
    """3: one client, cold file, upstream throttled to t: time against the direct download."""
    run.fixture.throttle(T_RATE)
    direct = download(run.fixture.file("cold-direct")["url"])
    _check([direct], run.fixture.file("cold-direct")["size"], "direct")
    run.extra["direct_cold"] = direct["total"]
    run.extra["t"] = direct["size"] / direct["total"]  # the note's upstream bandwidth t
    run.add(
        "3. Cold file, throttled upstream (5 MB/s), one client",
        "16 MiB",
        "direct",
        direct["total"],
        "s",
        "direct",
        direct["total"],
    )
    for server in run.peers("pypicache", "pypicache front", "proxpi", "devpi"):
        f = run.fixture.file(f"cold-{server.name}")
        url = server.file_url(f["project"], f["filename"])
        got = download(url)
        _check([got], f["size"], f"{server.name} cold")
        run.add(
            "3. Cold file, throttled upstream (5 MB/s), one client",
            "16 MiB",
            server.name,
            got["total"],
            "s",
            "direct",
            direct["total"],
            "<= 1.1" if server.name.startswith("pypicache") else "",
            note=f"first byte after {got['ttfb'] * 1000:.0f} ms",
        )


def cold_herd(run: Run, clients: int = 16) -> None:
    """4: 16 clients at once on one cold file, throttled upstream: downloads, first bytes, ends."""
    run.fixture.throttle(T_RATE)
    w = f"4. {clients} simultaneous clients, one cold file, throttled upstream"
    f = run.fixture.file("herd-direct")
    direct = download(f["url"])
    _check([direct], f["size"], "direct")
    run.add(w, "one direct download", "direct", direct["total"], "s", "direct", direct["total"])
    for server in run.peers("pypicache", "pypicache front", "proxpi", "devpi"):
        f = run.fixture.file(f"herd-{server.name}")
        url = server.file_url(f["project"], f["filename"])
        before = run.fixture.downloads(f["filename"])
        result = herd(url, clients)
        _check(result["clients"], f["size"], f"{server.name} herd")
        goal = server.name.startswith("pypicache")
        count = run.fixture.downloads(f["filename"]) - before
        run.add(
            w, "upstream downloads", server.name, count, "x the file", goal="== 1" if goal else ""
        )
        slowest = max(r["total"] for r in result["clients"])
        run.add(
            w,
            "slowest completion",
            server.name,
            slowest,
            "s",
            "one direct download",
            direct["total"],
            "<= 1.2" if goal else "",
        )
        first = max(r["ttfb"] for r in result["clients"])
        run.add(
            w,
            "slowest first byte",
            server.name,
            first,
            "s",
            goal="< 0.5" if goal else "",
            note=f"{first / direct['total']:.2f}x one direct download",
        )
