"""6: the design note's experiment. pip installs a 40-package set into n fresh environments, one
after the other, straight from the throttled upstream and through a cold pypicache.

Each run of pip is independent, so one series of N runs gives every n <= N: the time for n
environments is the sum of the first n runs. The note's saving is (t1 - t2) / t1 with
t1 = n m / t (no cache) and t2 = m / t + (n - 1) m / d (on-demand cache), i.e.
1 - (n - 1) t / (n d) - 1 / n.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .clients import pip_command, pip_env, timed
from .files import T_RATE
from .run import MIB, Run

W6 = "6. The note's experiment: pip, 40 packages, n environments"


def formula(n: int, t: float, d: float) -> float:
    return 1 - (n - 1) * t / (n * d) - 1 / n


def _install(run: Run, index_url: str, label: str) -> float:
    """One pip install of the set into a fresh target; its wall time."""
    target = run.out / "pip" / label
    shutil.rmtree(target, ignore_errors=True)
    took = timed(pip_command(index_url, target, "stack-00"), env=pip_env())
    installed = list(Path(target).glob("*.dist-info"))
    if len(installed) != 40:
        raise RuntimeError(f"pip through {label} installed {len(installed)} packages, not 40")
    return took


def experiment(run: Run) -> None:
    ns = [1, 2, 5] if run.quick else [1, 2, 5, 10]
    run.fixture.throttle(T_RATE)
    m = run.fixture.info["stack_bytes"]
    direct, proxy = [], []
    for _ in range(max(ns)):  # interleaved, so the machine's other load weighs on both alike
        direct.append(_install(run, run.fixture.info["index_url"], "direct"))
        proxy.append(_install(run, run.servers["pypicache"].simple.rstrip("/"), "pypicache"))
    # t and d as pip experiences them: the set's bytes over one install's time, straight from the
    # upstream (mean of all runs) and from the warm cache (mean of the runs after the first).
    t_eff = m / (sum(direct) / len(direct))
    d_eff = m / (sum(proxy[1:]) / len(proxy[1:]))
    # One file's raw transfer rates from workloads 3 and 1 (else the note's own figures).
    t_wire, d_wire = run.extra.get("t", 5e6), run.extra.get("d", 200e6)
    points = []
    for n in ns:
        t1, t2 = sum(direct[:n]), sum(proxy[:n])
        saving = (t1 - t2) / t1
        predicted = formula(n, t_eff, d_eff)
        points.append(
            {
                "n": n,
                "t1": t1,
                "t2": t2,
                "saving": saving,
                "formula": predicted,
                "formula_wire": formula(n, t_wire, d_wire),
            }
        )
        run.add(
            W6,
            f"n = {n}: saving (t1 = {t1:.1f} s, t2 = {t2:.1f} s)",
            "pypicache",
            saving * 100,
            "%",
            "formula, measured t and d",
            predicted * 100,
            ">= 1" if n == max(ns) else "",
            note=f"formula with wire t, d: {formula(n, t_wire, d_wire) * 100:.1f} %",
        )
    run.extra["experiment"] = {
        "points": points,
        "m": m,
        "t_eff": t_eff,
        "d_eff": d_eff,
        "t_wire": t_wire,
        "d_wire": d_wire,
        "direct": direct,
        "proxy": proxy,
    }
    rates = f"t = {t_eff / MIB:.2f} MiB/s, d = {d_eff / MIB:.2f} MiB/s"
    run.log(f"  m = {m / MIB:.1f} MiB, {rates} as pip sees them")
