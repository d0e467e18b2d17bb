"""Clients that measure: curl (downloads, one per process), timed shell commands,
wrk (requests per second), a keep-alive latency sampler, and pip as the note's users run it."""

from __future__ import annotations

import http.client
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from tests.servers import clean_environ

# What pip sends for an index page (PEP 691: JSON preferred); pages are measured with it.
PIP_ACCEPT = {
    "Accept": "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, "
    "text/html; q=0.01"
}
CURL_OUT = "%{http_code} %{size_download} %{time_starttransfer} %{time_total}"


def curl_cmd(url: str) -> list[str]:
    return ["curl", "-sS", "-L", "-o", "/dev/null", "-w", CURL_OUT, url]


def download(url: str) -> dict:
    """One download with curl: status, size, time to first byte and total time (s)."""
    out = subprocess.run(curl_cmd(url), capture_output=True, text=True, timeout=600)
    code, size, ttfb, total = out.stdout.split()
    return {"code": int(code), "size": int(size), "ttfb": float(ttfb), "total": float(total)}


def herd(url: str, clients: int) -> dict:
    """`clients` curl processes started at once: each one's figures, and the batch's wall time."""
    t0 = time.monotonic()
    procs = [
        subprocess.Popen(curl_cmd(url), stdout=subprocess.PIPE, text=True) for _ in range(clients)
    ]
    results = []
    for proc in procs:
        code, size, ttfb, total = proc.communicate(timeout=600)[0].split()
        results.append(
            {"code": int(code), "size": int(size), "ttfb": float(ttfb), "total": float(total)}
        )
    return {"clients": results, "wall": time.monotonic() - t0}


def timed(command: str, env: dict | None = None) -> float:
    """Wall time (s) of one shell command, which must succeed."""
    t0 = time.perf_counter()
    out = subprocess.run(
        ["sh", "-c", command], capture_output=True, text=True, env=env, timeout=900
    )
    elapsed = time.perf_counter() - t0
    if out.returncode:
        raise RuntimeError(f"{command[:200]} failed: {(out.stderr or out.stdout)[-1500:]}")
    return elapsed


def parallel_curl(url: str, clients: int) -> str:
    """A shell command: `clients` curl processes at once; fails if any fails."""
    one = "curl -sSf -o /dev/null " + shlex.quote(url)
    start = f'p=; for i in $(seq {clients}); do {one} & p="$p $!"; done'
    return start + "; for x in $p; do wait $x || exit 1; done"


def wrk_command(url: str, seconds: float, headers: dict | None = None, connections: int = 64,
                threads: int = 2, script: Path | None = None, *args: str) -> list[str]:
    """wrk's command line; a Lua `script` (wrk -s) gets `args` after `--`."""
    extra = [arg for k, v in (headers or {}).items() for arg in ("-H", f"{k}: {v}")]
    if script is not None:
        extra += ["-s", str(script)]
    tail = ["--", *args] if args else []
    return ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", *extra, url,
            *tail]


def wrk(
    url: str, seconds: float, headers: dict | None = None, connections: int = 64, threads: int = 2
) -> dict:
    """Requests per second at `connections` keep-alive connections; errors are reported."""
    out = subprocess.run(
        wrk_command(url, seconds, headers, connections, threads),
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    ).stdout
    return wrk_figures(out)


def wrk_figures(out: str) -> dict:
    """wrk's report: requests per second and in all, non-2xx answers, socket errors."""
    count = re.search(r"(\d+) requests in", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": float(rps[1]) if rps else 0.0,
        "requests": int(count[1]) if count else 0,
        "non2xx": int(bad[1]) if bad else 0,
        "socket_errors": errors[1] if errors else "",
    }


def latencies(url: str, count: int, headers: dict | None = None) -> list[float]:
    """`count` sequential GETs on one keep-alive connection; each full response's time (s)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=300)
    path = parts.path + ("?" + parts.query if parts.query else "")
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        response.read()
        times.append(time.perf_counter() - t0)
        if response.status != 200:
            raise RuntimeError(f"{url}: HTTP {response.status}")
    conn.close()
    return times


def median_ms(times: list[float]) -> float:
    return statistics.median(times) * 1000


def pip_command(index_url: str, target: Path, *requirements: str) -> str:
    """pip as a fresh environment runs it, isolated from this machine's pip configuration."""
    host = urlsplit(index_url).hostname
    args = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--isolated",
        "--no-cache-dir",
        "--disable-pip-version-check",
        "--quiet",
        "--index-url",
        index_url,
        "--trusted-host",
        host,
        "--target",
        str(target),
        *requirements,
    ]
    return " ".join(shlex.quote(a) for a in args)


def pip_env() -> dict:
    return clean_environ() | {"PIP_CONFIG_FILE": os.devnull}


UV = str(Path(sys.executable).with_name("uv"))


def _shell(args) -> str:
    return " ".join(shlex.quote(str(a)) for a in args)


def pip_report_command(index_url: str, report: Path, *requirements: str) -> str:
    """pip resolving only (`--dry-run --report`): pages and metadata, no wheel downloaded."""
    return _shell([sys.executable, "-m", "pip", "install", "--isolated", "--no-cache-dir",
                   "--disable-pip-version-check", "--quiet", "--dry-run", "--ignore-installed",
                   "--report", report, "--index-url", index_url, *requirements])


def uv_compile_command(index_url: str, requirements: Path, cache: Path, output: Path) -> str:
    """`uv pip compile` with its own cache directory (give it an empty one for a cold client)."""
    return _shell([UV, "pip", "compile", "--quiet", "--no-config", "--cache-dir", cache,
                   "--index-url", index_url, "--python", sys.executable, "-o", output,
                   requirements])


def uv_install_command(index_url: str, target: Path, cache: Path, *requirements: str) -> str:
    """`uv pip install --target`, with its own cache directory and no uv or pip configuration."""
    return _shell([UV, "pip", "install", "--quiet", "--no-config", "--cache-dir", cache,
                   "--index-url", index_url, "--python", sys.executable, "--target", target,
                   *requirements])
