"""How many CPUs this process may really use (the default of PYPI_WORKERS): its affinity, capped
by its cgroup's CPU quota, which a container's `--cpus` sets and os.cpu_count() ignores."""
from __future__ import annotations

import math
import os
from pathlib import Path


def usable_cpus(root: Path = Path("/sys/fs/cgroup"), own: Path = Path("/proc/self/cgroup")) -> int:
    """CPUs this process may really use: its affinity, capped by its cgroup's CPU quota.

    In a container os.cpu_count() is the host's: a 64-core host running pypicache with
    `cpus: 2` would start 9 workers that share 2 CPUs' worth of time (and RAM for 9).
    """
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        count = os.cpu_count() or 1
    quotas = [quota for quota in _cgroup_quotas(root, own) if quota > 0]
    return max(1, min([count] + [math.ceil(quota) for quota in quotas]))


def _cgroup_quotas(root: Path, own: Path) -> list[float]:
    """The CPU quota (in CPUs) of our cgroup and each ancestor: v2's cpu.max, v1's cfs files."""
    try:
        lines = own.read_text().splitlines()
    except OSError:
        lines = []
    found = []
    for line in lines:
        if line.count(":") < 2:
            continue
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: one unified tree
            base, files = root, ("cpu.max",)
        elif "cpu" in controllers.split(","):
            base, files = root / controllers, ("cpu.cfs_quota_us", "cpu.cfs_period_us")
        else:
            continue
        # Walk up from our own cgroup; in a container without a cgroup namespace the path
        # names the host's tree, which is mounted as the root: the walk ends there too.
        directory = base / path.strip("/")
        for candidate in [directory, *directory.parents]:
            if candidate == base.parent:
                break
            quota = _read_quota(candidate, files)
            if quota is not None:
                found.append(quota)
    return found


def _read_quota(directory: Path, files: tuple[str, ...]) -> float | None:
    try:
        if len(files) == 1:  # "max 100000" or "200000 100000"
            quota, period = (directory / files[0]).read_text().split()
        else:
            quota, period = ((directory / name).read_text().strip() for name in files)
        if quota in ("max", "-1"):
            return None
        return int(quota) / int(period)
    except (OSError, ValueError, ZeroDivisionError):
        return None
