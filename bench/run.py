"""One benchmark run: its settings, its servers, and the rows of figures it produces."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

MIB = 1 << 20


@dataclass
class Row:
    workload: str
    case: str
    server: str
    value: float
    unit: str
    ref: str = ""  # what the ratio is taken against
    ref_value: float | None = None
    ratio: float | None = None
    goal: str = ""  # e.g. ">= 0.9"; empty for figures shown for comparison only
    ok: bool | None = None
    note: str = ""


@dataclass
class Run:
    out: Path
    quick: bool
    fixture: object = None
    servers: dict = field(default_factory=dict)  # name -> servers.Server
    rows: list[Row] = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # figures other workloads or the report reuse
    skipped: list[str] = field(default_factory=list)
    t0: float = field(default_factory=time.monotonic)

    def log(self, message: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.1f}s] {message}", file=sys.stderr, flush=True)

    def add(
        self,
        workload,
        case,
        server,
        value,
        unit,
        ref="",
        ref_value=None,
        goal="",
        ratio=None,
        note="",
    ) -> Row:
        """A figure; its ratio is value/ref_value unless given; `goal` like '>= 0.9' is checked."""
        if ratio is None and ref_value:
            ratio = value / ref_value
        ok = None
        if goal:
            op, bound = goal.split()
            checked = ratio if ratio is not None else value
            ok = {
                ">=": checked >= float(bound),
                "<=": checked <= float(bound),
                "<": checked < float(bound),
                "==": checked == float(bound),
            }[op]
        row = Row(workload, case, server, value, unit, ref, ref_value, ratio, goal, ok, note)
        self.rows.append(row)
        shown = f" = {ratio:.3g}x {ref}" if ratio is not None else ""
        verdict = "" if ok is None else (" PASS" if ok else " MISS")
        self.log(f"  {workload} | {case} | {server}: {value:.4g} {unit}{shown}{verdict}")
        return row

    def peers(self, *names: str):
        """The servers of `names` that this run has, in that order."""
        return [self.servers[n] for n in names if n in self.servers]
