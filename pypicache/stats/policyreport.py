"""The policy page's model (/policy and /policy.json): the rules in force and the state of the
file, read from the worker's PolicyService, and what was refused recently and for whom, read
from the catalog (pypicache/catalogrefusals.py), where every worker's refusals are flushed.

Plain data: the template renders it, /policy.json serializes it. Instants are RFC 3339, as
the X-Pypicache-Policy header and /healthz give them.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..catalog import Catalog
from ..catalogrefusals import RefusalRow
from ..policy import version_of
from ..policyfile import Rules, rfc3339

if TYPE_CHECKING:  # the service sends the refusals this page reads: no import at run time
    from ..policyserve import PolicyService


@dataclass
class PolicyPage:
    configured: bool  # PYPI_POLICY_FILE set
    path: str | None = None
    mode: str | None = None
    version: str | None = None  # the digest of the file in force
    loaded: str | None = None  # when this worker took that version
    error: str | None = None  # why a newer version of the file was not applied
    error_since: str | None = None
    rules: dict = field(default_factory=dict)
    refused: list[dict] = field(default_factory=list)  # enforced, the last refused first
    reported: list[dict] = field(default_factory=list)  # what report mode would refuse
    held: list[dict] = field(default_factory=list)  # releases the cooldown holds: when they pass
    kept: int = 0  # rows the catalog keeps at most
    generated: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def rules_shown(rules: Rules) -> dict:
    """The rules, each as the file says it (canonical names), for a page or a script."""
    return {
        "mode": rules.mode,
        "cooldown": {
            "min-age": rules.min_age_text or None,
            "min-age-seconds": rules.min_age,
            "exempt": list(rules.exempt),
            "allow": sorted(f"{project}=={version}" for project, version in rules.allow),
            "freeze-at": rfc3339(rules.freeze_at) if rules.freeze_at is not None else None,
            "unknown-time": rules.unknown_time,
        },
        "deny": [entry.text for entry in rules.deny],
        "allow-only": list(rules.allow_only),
    }


def refusal(row: RefusalRow) -> dict:
    key = row.key
    return {"mode": key.mode, "rule": key.rule, "entry": row.entry, "project": key.project,
            "file": key.file or None, "what": key.what, "address": key.address,
            "user": key.user or None, "count": row.count, "first": rfc3339(row.first),
            "last": rfc3339(row.last),
            "passes_at": rfc3339(row.until) if row.until is not None else None}


def held(rows: list[RefusalRow], now: float) -> list[dict]:
    """The releases the cooldown held and still holds, by project and version: when the last
    of the files refused of each passes (the first, too, when they differ)."""
    releases: dict[tuple, dict] = {}
    for row in rows:
        key = row.key
        if key.rule != "cooldown" or row.until is None or row.until <= now or not key.file:
            continue
        version = version_of(key.file)
        release = releases.setdefault((key.mode, key.project, str(version or "?")), {
            "mode": key.mode, "project": key.project, "version": str(version or "?"),
            "files": set(), "first": row.until, "last": row.until, "refusals": 0})
        release["files"].add(key.file)
        release["first"], release["last"] = (min(release["first"], row.until),
                                             max(release["last"], row.until))
        release["refusals"] += row.count
    return [{"mode": r["mode"], "project": r["project"], "version": r["version"],
             "files": sorted(r["files"]), "refusals": r["refusals"],
             "first_passes_at": rfc3339(r["first"]), "passes_at": rfc3339(r["last"])}
            for r in sorted(releases.values(), key=lambda r: (r["last"], r["project"]))]


def build(service: PolicyService | None, catalog: Catalog, path: Path | None, kept: int) -> PolicyPage:
    """The page of the policy in force (`service`: the PolicyService, None without a policy)."""
    rows = catalog.refusals()
    now = time.time()
    page = PolicyPage(configured=service is not None, kept=kept, generated=rfc3339(now),
                      refused=[refusal(row) for row in rows if row.key.mode == "enforce"],
                      reported=[refusal(row) for row in rows if row.key.mode != "enforce"],
                      held=held(rows, now))
    if service is None:
        return page
    watcher = service.watcher
    rules = watcher.current()
    page.path, page.mode, page.version = str(path), rules.mode, rules.digest
    page.loaded, page.rules = rfc3339(watcher.loaded), rules_shown(rules)
    if watcher.error is not None:  # behind the dashboard's login: the whole message
        page.error, page.error_since = str(watcher.error), rfc3339(watcher.error_since)
    return page
