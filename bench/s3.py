"""Several nodes sharing one bucket (moto's S3 server on 127.0.0.1): hits from the bucket,
streamed and redirected, beside hits from a node's own disk; a cold herd over two nodes."""

from __future__ import annotations

import shlex
import statistics
import subprocess

from tests.s3_server import MotoS3
from tests.servers import Proxy

from .clients import download, timed
from .run import MIB, Run

W_HIT = "9. Warm file from the shared bucket (moto's S3 server)"
W_HERD = "10. 16 cold clients over nodes sharing a bucket, throttled upstream"


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
    """Longer upstream than a waiting node's patience (10 s): without PYPI_NODE_URL each node
    would download it; with it, one download that every node reads as it lands."""
    nodes = []
    try:
        for name in ("p1", "p2", "p3"):
            node = Proxy(out / name / "cache", env, workers=2, PYPI_READ_TIMEOUT="")
            node.env["PYPI_NODE_URL"] = node.url
            nodes.append(node.start())
        run.fixture.throttle(5_000_000)
        f = run.fixture.file("herd-s3-long")
        direct = download(f["url"])["total"]  # the fixture's own body: not cached by anyone
        case = "3 nodes reading each other, 64 MiB"
        run.add(W_HERD, f"{case}: one direct download", "direct", direct, "s", "direct", direct)
        urls = [_url(node, run, "herd-s3-long") for node in nodes]
        before = run.fixture.downloads(f["filename"])
        seconds = timed(_curls([urls[i % 3] for i in range(clients)]))
        count = run.fixture.downloads(f["filename"]) - before
        run.add(W_HERD, f"{case}: upstream downloads", "pypicache", count, "x the file",
                goal="== 1")
        run.add(W_HERD, f"{case}: all clients done", "pypicache", seconds, "s",
                "one direct download", direct, goal="<= 1.2",
                note=f"{f['size'] // MIB} MiB at 5 MB/s upstream, longer than a node's patience")
    finally:
        for node in nodes:
            node.stop()
