"""The benchmark's upstream: tests/fixture_upstream.py's Upstream filled with the workloads' files.

Run as its own process (`python -m bench.upstream --root DIR ...`) so its CPU is never charged to
a measured server. It prints one JSON line describing what it serves, then reads commands on
stdin, each answered by `ok`: `throttle N` (bytes/s per connection for file bodies, 0 = none),
`bandwidth N` (bytes/s for all file connections together, 0 = none), `delay S` (seconds before
every answer).
"""

from __future__ import annotations

import argparse
import json
import sys

from tests.fixture_upstream import Upstream
from tests.wheels import make_wheel

MIB = 1 << 20
STACK = 40  # packages in the design note's experiment
STACK_BIG = 8  # of which this many carry a payload
PEERS = ("direct", "pypicache", "proxpi", "devpi", "pypicache front")


def fill(up: Upstream, big: int, stack_payload: int) -> dict:
    """Every workload's content; returns what the benchmark needs to know about it."""
    info: dict = {"files": {}}

    def add(key: str, project: str, filename: str, **kw) -> None:
        f = up.add_file(project, filename, **kw)
        info["files"][key] = {
            "project": project,
            "filename": filename,
            "size": f.size,
            "url": f.url,
            "sha256": f.sha256,
        }

    add("large64", "large", "large-1.64-py3-none-any.whl", size=64 * MIB)
    add(
        "large512", "large", f"large-1.{big // MIB}-py3-none-any.whl", size=big
    )  # 512 MiB (--quick: 128)
    for i, peer in enumerate(PEERS, 1):  # a cold file per server and test
        add(f"cold-{peer}", "cold", f"cold-1.{i}-py3-none-any.whl", size=16 * MIB)
        add(f"herd-{peer}", "herd", f"herd-1.{i}-py3-none-any.whl", size=16 * MIB)
    add("herd-s3", "herd", "herd-1.9-py3-none-any.whl", size=16 * MIB)  # bench/s3.py
    # bench/s3.py: far longer upstream than a waiting node's patience (34 s at 8 MB/s), twice:
    # all nodes alive, and the leading node killed halfway
    for i, key in enumerate(("herd-s3-long", "herd-s3-killed")):
        # 256 MiB (--quick: 64)
        add(key, "herd", f"herd-1.{10 + i}-py3-none-any.whl", size=big // 2)
    for n in (244, 5000):
        for i in range(n):
            up.add_file(
                f"page{n}", f"page{n}-{i // 100}.{i % 100}.0-py3-none-any.whl", size=64 + i % 7
            )
    for i in range(STACK):  # stack-00 needs the next five, each of those the rest: 40 packages
        name = f"stack-{i:02d}"
        requires = [f"stack-{j:02d}" for j in range(i + 1, STACK)] if i < 5 else []
        if i == 0:
            requires = [f"stack-{j:02d}" for j in range(1, 6)]
        size = stack_payload if i % (STACK // STACK_BIG) == 0 else 0
        fn, data = make_wheel(name, "1.0", requires, payload=size)
        up.add_file(name, fn, data)
        info["files"][f"stack{i}"] = {"project": name, "filename": fn, "size": len(data)}
    info["stack_bytes"] = sum(v["size"] for k, v in info["files"].items() if k.startswith("stack"))
    return info


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--root", required=True)
    p.add_argument("--big", type=int, default=512 * MIB, help="size of the large file")
    p.add_argument(
        "--stack-payload", type=int, default=3 * MIB, help="bytes in each big stack wheel"
    )
    p.add_argument("--big-root", type=int, default=1_000_000, help="projects in the root list")
    a = p.parse_args(argv)
    # Pages gzipped as the public index's CDN and nginx mirrors send them (bench/prose.md).
    up = Upstream(a.root, layout="absolute", gzip_pages=True).start()  # ports known only now
    info = fill(up, a.big, a.stack_payload)
    up.big_root(a.big_root)
    info.update(
        index_url=up.index_url,
        files_url=up.files_url,
        env=up.env(),
        stats_url=up.index_url.rsplit("/simple", 1)[0] + "/_stats",
    )
    print(json.dumps(info), flush=True)
    for line in sys.stdin:  # the benchmark's commands; EOF (the benchmark gone) ends us
        cmd, _, arg = line.strip().partition(" ")
        if cmd == "throttle":
            up.throttle = int(arg) or None
        elif cmd == "bandwidth":
            up.set_bandwidth(int(arg) or None)
        elif cmd == "delay":
            up.set_delay(float(arg))
        print("ok", flush=True)
    up.stop()


if __name__ == "__main__":
    main()
