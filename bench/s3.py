"""Several nodes sharing one bucket (moto's S3 server on 127.0.0.1): hits from the bucket,
streamed and redirected, beside hits from a node's own disk; a cold herd over two nodes."""

from __future__ import annotations

import os
import shlex
import signal
import statistics
import subprocess
import time

from tests.s3_server import MotoS3
from tests.servers import Proxy

from .clients import download, timed
from .run import MIB, Run

W_HIT = "9. Warm file from the shared bucket (moto's S3 server)"
W_HERD = "10. 16 cold clients over nodes sharing a bucket, throttled upstream"
RATE = 8_000_000  # bytes/s per upstream connection in the long herds: 256 MiB take 34 s


def _curls(urls: list[str]) -> str:
    """A shell command: one curl per URL at once (following redirects); fails if any fails."""
    start = "p=; " + " ".join(
        f"curl -sSfL -o /dev/null {shlex.quote(url)} & p=\"$p $!\";" for url in urls
    )
    return start + " for x in $p; do wait $x || exit 1; done"


def shared_bucket(run: Run) -> None:
    out = run.out / "s3"
    moto = MotoS3(out).start()
    env = run.fixture.info["env"] | moto.env() | {"PYPI_STORAGE_URL": f"s3://{moto.bucket}/bench"}
    nodes = []
    try:
        for name, extra in (("a", {}), ("b", {}), ("redirect", {"PYPI_S3_REDIRECT": "1"})):
            node = Proxy(out / name / "cache", env, workers=2, PYPI_READ_TIMEOUT="", **extra)
            nodes.append(node.start())
        _hits(run, *nodes)
        _herd(run, *nodes[:2])
    finally:
        for node in nodes:
            node.stop()
    try:
        _long_herd(run, out, env | {"PYPI_STORAGE_URL": f"s3://{moto.bucket}/bench-peers",
                                    "PYPI_CLUSTER_SECRET": "the bench's nodes share this"})
    finally:
        moto.stop()


def _url(node: Proxy, run: Run, key: str) -> str:
    f = run.fixture.file(key)
    page = f"{node.url}/simple/{f['project']}/"
    subprocess.run(["curl", "-sSf", "-o", "/dev/null", page], check=True, timeout=120)
    return f"{node.url}/packages/" + f["url"].split("/packages/", 1)[1]


def _hits(run: Run, a: Proxy, b: Proxy, redirect: Proxy) -> None:
    run.fixture.throttle(None)
    f = run.fixture.file("large64")
    warm = _url(a, run, "large64")
    if download(warm)["size"] != f["size"]:
        raise RuntimeError("node a did not serve the file")
    urls = {"pypicache, own disk": warm, "pypicache, bucket streamed": _url(b, run, "large64"),
            "pypicache, bucket redirected": _url(redirect, run, "large64")}
    if "nginx" in run.servers:
        urls = {"nginx": run.servers["nginx"].file_url(f["project"], f["filename"])} | urls
    rounds = 3 if run.quick else 6
    for clients in (1, 8):
        times = {name: [] for name in urls}
        for _ in range(rounds + 1):  # interleaved; the first round warms up and is dropped
            for name, url in urls.items():
                times[name].append(timed(_curls([url] * clients)))
        rates = {n: clients * f["size"] / statistics.median(t[1:]) / MIB for n, t in times.items()}
        case = f"64 MiB, {clients} client{'s' if clients > 1 else ''}"
        for name, rate in rates.items():
            run.add(W_HIT, case, name, rate, "MiB/s", "own disk", rates["pypicache, own disk"])


def _herd(run: Run, a: Proxy, b: Proxy, clients: int = 16) -> None:
    run.fixture.throttle(5_000_000)
    direct = download(run.fixture.file("herd-direct")["url"])["total"]
    run.add(W_HERD, "2 nodes, 16 MiB: one direct download", "direct", direct, "s", "direct",
            direct)
    f = run.fixture.file("herd-s3")
    urls = [_url(a, run, "herd-s3"), _url(b, run, "herd-s3")]
    before = run.fixture.downloads(f["filename"])
    seconds = timed(_curls([urls[i % 2] for i in range(clients)]))
    count = run.fixture.downloads(f["filename"]) - before
    run.add(W_HERD, "2 nodes, 16 MiB: upstream downloads", "pypicache", count, "x the file",
            goal="== 1")
    run.add(W_HERD, "2 nodes, 16 MiB: all clients done", "pypicache", seconds, "s",
            "one direct download", direct,
            note=f"{f['size'] // MIB} MiB at 5 MB/s upstream")


def _long_herd(run: Run, out, env: dict, clients: int = 16) -> None:
    """Far longer upstream than a waiting node's patience (10 s): without PYPI_NODE_URL each
    node would download it; with it, one download that every node reads as it lands. Then
    again with the leading node killed halfway: another node finishes it."""
    nodes = []
    try:
        for name in ("p1", "p2", "p3"):
            node = Proxy(out / name / "cache", env, workers=2, PYPI_READ_TIMEOUT="")
            node.env["PYPI_NODE_URL"] = node.url
            nodes.append(node.start())
        run.fixture.throttle(RATE)
        f = run.fixture.file("herd-s3-long")
        direct = download(f["url"])["total"]  # the fixture's own body: not cached by anyone
        case = f"3 nodes reading each other, {f['size'] // MIB} MiB"
        run.add(W_HERD, f"{case}: one direct download", "direct", direct, "s", "direct", direct)
        before = run.fixture.downloads(f["filename"])
        got, seconds = _herd_of(run, nodes, "herd-s3-long", clients)
        count = run.fixture.downloads(f["filename"]) - before
        run.add(W_HERD, f"{case}: upstream downloads", "pypicache", count, "x the file",
                goal="== 1")
        run.add(W_HERD, f"{case}: all clients done", "pypicache", seconds, "s",
                "one direct download", direct, goal="<= 1.2",
                note=f"at {RATE / 1e6:.0f} MB/s upstream, longer than a node's patience")
        firsts = [first for _, _, first in got]
        run.add(W_HERD, f"{case}: slowest first byte after the leader's", "pypicache",
                max(firsts) - firsts[0], "s", goal="<= 1")
        run.add(W_HERD, f"{case}: bodies right (sha256)", "pypicache",
                sum(ok for ok, _, _ in got), f"of {clients}", goal=f"== {clients}")
        _killed_leader(run, nodes, clients)
    finally:
        for node in nodes:
            node.stop()


def _herd_of(run: Run, nodes: list[Proxy], key: str, clients: int, kill=None):
    """`clients` curl processes over the nodes, the first one alone until the upstream sends
    its first byte (it leads), each body hashed as it arrives: [(sha256 right, presented as
    whole, the moment of its first byte)] and the wall time. `kill(first node)` runs once
    the others are under way."""
    f = run.fixture.file(key)
    urls = [_url(nodes[i % len(nodes)], run, key) for i in range(clients)]
    write = "%{stderr}%{http_code} %{time_starttransfer}"

    def curl(url: str) -> subprocess.Popen:  # pipefail: curl's own status, a cut body fails
        command = f"set -o pipefail; curl -sS -o - -w '{write}' {shlex.quote(url)} | sha256sum"
        return subprocess.Popen(["bash", "-c", command], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    started = time.monotonic()
    procs = [(started, curl(urls[0]))]
    while run.fixture.written(f["filename"]) == 0 and time.monotonic() - started < 30:
        time.sleep(0.05)
    procs += [(time.monotonic(), curl(url)) for url in urls[1:]]
    if kill is not None:
        kill(nodes[0])
    got = []
    for began, proc in procs:
        digest, figures = proc.communicate(timeout=900)
        code, ttfb = (["0", "0"] + figures.split())[-2:]
        whole = proc.returncode == 0 and code == "200"
        got.append((digest.split()[0] == f["sha256"], whole, began + float(ttfb)))
    return got, time.monotonic() - started


def _killed_leader(run: Run, nodes: list[Proxy], clients: int) -> None:
    """The leading node's every process SIGKILLed at half the file: the clients of the other
    nodes get the whole file, its missing bytes fetched once more, and no client a short
    body presented as complete (curl sees the cut)."""
    f = run.fixture.file("herd-s3-killed")
    case = f"3 nodes reading each other, {f['size'] // MIB} MiB, leading node killed halfway"
    before = run.fixture.written(f["filename"])

    def kill(leader: Proxy) -> None:
        while run.fixture.written(f["filename"]) - before < f["size"] // 2:
            time.sleep(0.05)
        os.killpg(leader.process.pid, signal.SIGKILL)
        leader.process.wait()

    got, seconds = _herd_of(run, nodes, "herd-s3-killed", clients, kill)
    survivors = [item for i, item in enumerate(got) if i % len(nodes)]
    cut = [item for i, item in enumerate(got) if not i % len(nodes)]
    again = (run.fixture.written(f["filename"]) - before) / f["size"]
    run.add(W_HERD, f"{case}: upstream bytes", "pypicache", again, "x the file", goal="<= 1.05",
            note="the dead node's bytes, then a range from where the others' stop")
    run.add(W_HERD, f"{case}: other nodes' bodies right (sha256)", "pypicache",
            sum(ok for ok, _, _ in survivors), f"of {len(survivors)}",
            goal=f"== {len(survivors)}")
    run.add(W_HERD, f"{case}: the dead node's clients given a wrong body as whole", "pypicache",
            sum(whole and not ok for ok, whole, _ in cut), "clients",
            goal="== 0", note=f"all clients done in {seconds:.1f} s")
