"""Processes of a benchmark run: start, wait, stop (by process group), memory; the upstream.

Every server is started on 127.0.0.1 in its own session and stopped by its own process group.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.servers import ROOT, clean_environ, stop_group

BENCH = Path(__file__).resolve().parent
VENVS = BENCH / ".venvs"
_STARTED: list[subprocess.Popen] = []


def spawn(cmd, log: Path, **kw) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **kw
        )
    _STARTED.append(proc)
    return proc


def stop(proc: subprocess.Popen | None) -> None:
    stop_group(proc)


def stop_all() -> None:
    for proc in reversed(_STARTED):
        stop(proc)


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited: {log.read_text(errors='replace')[-1500:]}")
        try:
            requests.get(url, timeout=2)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError(
        f"{url} did not answer in {timeout}s: {log.read_text(errors='replace')[-1500:]}"
    )


# --- memory ----------------------------------------------------------------------------------
def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _status(pid: int, field: str) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(match[1]) * 1024 if match else 0


def rss(pid: int) -> int:
    return _status(pid, "VmRSS")


def peak(pid: int) -> int:
    return _status(pid, "VmHWM")


def threads(pid: int) -> int:
    try:
        match = re.search(r"^Threads:\s+(\d+)", Path(f"/proc/{pid}/status").read_text(), re.M)
    except OSError:
        return 0
    return int(match[1]) if match else 0


def cpu_seconds(pids) -> float:
    """User + system CPU time the processes have used so far."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def reset_peak(pids) -> None:
    """Linux: writing 5 to clear_refs resets VmHWM to the current RSS."""
    for pid in pids:
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        except OSError:
            pass


# --- the upstream ----------------------------------------------------------------------------
class Fixture:
    """bench.upstream in its own process; `info` is its JSON line, `throttle()` changes its rate."""

    def __init__(self, files_root: Path, log: Path, big: int, big_root: int, stack_payload: int):
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.upstream",
                    "--root",
                    str(files_root),
                    "--big",
                    str(big),
                    "--big-root",
                    str(big_root),
                    "--stack-payload",
                    str(stack_payload),
                ],
                cwd=ROOT,
                env=clean_environ(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,
            )
        _STARTED.append(self.proc)
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(
                f"fixture upstream exited: {log.read_text(errors='replace')[-1500:]}"
            )
        self.info = json.loads(line)

    def throttle(self, rate: int | None) -> None:
        self._command(f"throttle {rate or 0}")

    def bandwidth(self, rate: int | None) -> None:
        """All file connections together at most `rate` bytes/s (None: no limit)."""
        self._command(f"bandwidth {rate or 0}")

    def delay(self, seconds: float) -> None:
        """Every answer `seconds` late: a far upstream."""
        self._command(f"delay {seconds}")

    def _command(self, line: str) -> None:
        self.proc.stdin.write(f"{line}\n".encode())
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == b"ok"

    def downloads(self, filename: str) -> int:
        return requests.get(self.info["stats_url"], timeout=10).json()["downloads"].get(filename, 0)

    def written(self, filename: str) -> int:
        """Bytes of the file sent so far, a connection cut midway included (ranges too)."""
        return requests.get(self.info["stats_url"], timeout=10).json()["written"].get(filename, 0)

    def file(self, key: str) -> dict:
        return self.info["files"][key]
