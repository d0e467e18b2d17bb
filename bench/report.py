"""docs/BENCHMARKS.md and the experiment's plot, written from one run's rows."""

from __future__ import annotations

import datetime
import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path

from .procs import VENVS
from .run import MIB, Run

ROOT = Path(__file__).resolve().parent.parent
PLOT = "bench-experiment.png"


def _cmd(*args: str) -> str:
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=30)
    except OSError:
        return "absent"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else "?"


def _venv_version(venv: str, package: str) -> str:
    found = list(
        (VENVS / venv).glob(f"lib/python*/site-packages/{package.replace('-', '_')}-*.dist-info")
    )
    return found[0].name.split("-")[1].removesuffix(".dist") if found else "absent"


def machine(load: str) -> list[tuple[str, str]]:
    end = " ".join(f"{x:.2f}" for x in os.getloadavg())
    cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
    mem = re.search(r"MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text())
    commit = _cmd("git", "-C", str(ROOT), "log", "-1", "--format=%h %s")
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "pypicache", "gunicorn.conf.py"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return [
        ("cores (nproc)", str(os.cpu_count())),
        ("CPU", cpu[1] if cpu else "?"),
        ("memory", f"{int(mem[1]) / (1 << 20):.1f} GiB" if mem else "?"),
        ("kernel", platform.release()),
        ("Python", platform.python_version()),
        ("load average (1, 5, 15 min)", f"{load} at the start, {end} at the end"),
        ("pypicache", commit + (" (pypicache/ had uncommitted changes)" if dirty else "")),
        (
            "flask, gunicorn, requests",
            ", ".join(metadata.version(p) for p in ("flask", "gunicorn", "requests")),
        ),
        ("pip (the client)", metadata.version("pip")),
        ("uv (the client, workload 8)", metadata.version("uv")),
        ("proxpi", _venv_version("proxpi", "proxpi")),
        ("devpi-server", _venv_version("devpi", "devpi-server")),
        ("nginx", _cmd("nginx", "-v")),
        ("wrk", _cmd("wrk", "-v")),
        ("curl", _cmd("curl", "--version")[:12]),
    ]


def _fmt(x) -> str:
    if x is None:
        return ""
    if isinstance(x, float):
        return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"
    return str(x)


def _verdict(ok) -> str:
    return "" if ok is None else ("**pass**" if ok else "**MISS**")


def tables(run: Run) -> list[str]:
    lines: list[str] = []
    for workload in sorted({r.workload for r in run.rows}, key=lambda w: int(w.split(".")[0])):
        lines += [
            f"### {workload}",
            "",
            "| case | server | figure | ratio to | ratio | goal | result | note |",
            "| --- | --- | ---: | --- | ---: | --- | --- | --- |",
        ]
        for r in (r for r in run.rows if r.workload == workload):
            ratio = f"{r.ratio:.2f}x" if r.ratio is not None else ""
            lines.append(
                f"| {r.case} | {r.server} | {_fmt(r.value)} {r.unit} | {r.ref} | {ratio} | "
                f"{r.goal} | {_verdict(r.ok)} | {r.note} |"
            )
        lines.append("")
    return lines


def summary(run: Run) -> list[str]:
    goals = [r for r in run.rows if r.goal]
    missed = [r for r in goals if not r.ok]
    lines = [
        f"{len(goals) - len(missed)} of {len(goals)} goals met.",
        "",
        "| workload | case | measured | goal | result |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in goals:
        shown = f"{r.ratio:.2f}x {r.ref}" if r.ratio is not None else f"{_fmt(r.value)} {r.unit}"
        lines.append(
            f"| {r.workload} | {r.case} ({r.server}) | {shown} | {r.goal} | {_verdict(r.ok)} |"
        )
    return lines + [""]


def plot(run: Run, path: Path) -> bool:
    exp = run.extra.get("experiment")
    if not exp:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .pipexp import formula

    ns = [p["n"] for p in exp["points"]]
    grid = [n / 10 for n in range(10, max(ns) * 10 + 1)]
    t, d, tw, dw = (exp[k] / MIB for k in ("t_eff", "d_eff", "t_wire", "d_wire"))
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    label = f"formula, t and d as pip sees them ({t:.1f}, {d:.1f} MiB/s)"
    ax.plot(grid, [100 * formula(n, t, d) for n in grid], "-", color="tab:blue", label=label)
    label = f"formula, one file's wire t and d ({tw:.1f}, {dw:,.0f} MiB/s)"
    ax.plot(grid, [100 * formula(n, tw, dw) for n in grid], "--", color="tab:gray", label=label)
    label = "measured: pip through pypicache vs straight from the upstream"
    savings = [100 * p["saving"] for p in exp["points"]]
    ax.plot(ns, savings, "o", color="tab:red", ms=8, label=label)
    ax.set_xlabel("n environments (pip installs of the same 40 packages)")
    ax.set_ylabel("time saved, %")
    m = exp["m"] / MIB
    ax.set_title(f"1 - (n-1)t/(n d) - 1/n against pip, m = {m:.1f} MiB, upstream at 5 MB/s")
    ax.set_xticks(ns)
    ax.set_ylim(-5, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


INTRO = """\
Written by `python -m bench`: run it again rather than edit this file. Every server
runs on 127.0.0.1 on this machine in one run, and every figure is compared with a reference
measured in that same run. pypicache runs under gunicorn with its default settings;
"pypicache front" is the same gunicorn and cache behind the shipped nginx front (docker/nginx/:
nginx serves published files from the cache volume and keeps index pages for a second)."""


def write(run: Run, directory: Path, argv: list[str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    has_plot = plot(run, directory / PLOT)
    command = "make bench" + (f"  # python -m bench {' '.join(argv)}" if argv else "")
    kind = "quick" if run.quick else "full"
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    took = f"{run.extra.get('elapsed', 0):.0f} s"
    lines = [
        "# Benchmarks",
        "",
        INTRO,
        "",
        f"Command: `{command}` ({kind} run, {when}, {took}).",
        "",
    ]
    lines += ["## Machine", "", "| | |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in machine(run.extra.get("load_start", "?"))] + [""]
    lines += ["## Goals", "", *summary(run), "## Figures", "", *tables(run)]
    if has_plot:
        lines += [
            "### The note's experiment, plotted",
            "",
            f"![saving against the formula]({PLOT})",
            "",
        ]
    if run.skipped:
        lines += ["## Not measured, or with errors", "", *[f"- {s}" for s in run.skipped], ""]
    lines.append((Path(__file__).with_name("prose.md")).read_text())
    (directory / "BENCHMARKS.md").write_text("\n".join(lines))
