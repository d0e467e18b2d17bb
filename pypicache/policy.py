"""What the policy (pypicache/policyfile.py's rules) decides about a project and each of its files,
and a project page without the files it refuses. Pure functions of the rules, the page model
and the time: nothing here reads a file, a clock or a request.

Order of the rules: `[allow-only]`, then `[deny]` (a whole project, or the versions a
specifier names), then `[advisories] block` (the versions OSV records report malicious or
vulnerable: pypicache/advisories.py), then the rules of time, `[cooldown]`: an exempt
project or a break-glass release (`allow`) passes them; a file uploaded after `freeze-at`
is refused; one younger than `min-age` is held until it is that old; one whose upload time
is unknown is held or served as `unknown-time` says. Upload times are the index's (PEP
691/700 `upload-time`), never the time this cache first saw a file.

The fast lane (`[advisories] fast-lane`) lets a release the cooldown holds pass when it
fixes an advisory of the newest release that the rules other than `block = ["vulnerable"]`
let through: what the fleet would otherwise get.
"""
from __future__ import annotations

import fnmatch
import functools
import hashlib
import re
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime, timezone

from packaging.utils import parse_sdist_filename, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from .advisories import Affected
from .pagemodel import Project
from .policyfile import Rules, rfc3339

HEADER = "X-Pypicache-Policy"  # on every refusal: the rule, and for a cooldown when it passes


@dataclass(frozen=True)
class Refusal:
    rule: str  # allow-only, deny, advisory, freeze-at, cooldown, unknown-time
    # Which of the rule: "numpy==2.4.0", the advisory's id, "7d", the freeze instant, "hold"
    entry: str = ""
    until: float | None = None  # a cooldown's: when the file passes
    uploaded: float | None = None
    detail: str = ""  # an advisory's: "malicious" or "vulnerable"
    about: str = ""  # an advisory's summary

    @property
    def header(self) -> str:
        text = f"{self.rule} {self.entry}".strip()
        return text + (f"; passes-at={rfc3339(self.until)}" if self.until is not None else "")

    def message(self, what: str) -> str:
        """A sentence for the client about `what` (a file or a project)."""
        because = {
            "allow-only": "is not in [allow-only] projects",
            "deny": f"is denied by [deny] projects entry {self.entry!r}",
            "advisory": f"is reported {self.detail} by the advisory {self.entry}"
                        + (f" ({self.about})" if self.about else ""),
            "freeze-at": f"was uploaded after the freeze at {self.entry}",
            "cooldown": f"is held by the cooldown (min-age {self.entry})",
            "unknown-time": "has no known upload time, and unknown-time is \"hold\"",
        }[self.rule]
        text = f"refused by the policy of this index: {what} {because}"
        if self.uploaded is not None:
            text += f"; uploaded {rfc3339(self.uploaded)}"
        if self.until is not None:
            text += f"; it passes at {rfc3339(self.until)}"
        return text


@dataclass(frozen=True)
class Verdict:
    """What the rules refuse of one page at one time, and until when that holds."""

    refused: dict[str, Refusal]  # filename -> why
    changes_at: float | None  # the first held file's passing; None: never (for these rules)
    key: str  # names the rules and the refused files, for the ETag of the filtered page

    # Made once per verdict: a page that loses files is the request a worker answers most
    # under a cooldown, and each one is logged and counted.
    @functools.cached_property
    def rules(self) -> tuple[str, ...]:
        return tuple(sorted({r.rule for r in self.refused.values()}))

    @functools.cached_property
    def header(self) -> str:
        """The X-Pypicache-Policy header of a page that lost files."""
        counts = Counter(r.rule for r in self.refused.values())
        text = "filtered " + ", ".join(f"{rule}={n}" for rule, n in sorted(counts.items()))
        if self.changes_at is not None:
            text += f"; changes-at={rfc3339(self.changes_at)}"
        return text

    @functools.cached_property
    def shown(self) -> str:
        """The refused files for the audit log: five of them, and how many more."""
        shown = ", ".join(f"{name} ({r.header})" for name, r in sorted(self.refused.items())[:5])
        return shown + (f" and {len(self.refused) - 5} more" if len(self.refused) > 5 else "")


def matches(project: str, globs: tuple[str, ...]) -> bool:
    """Whether a canonical project name is one of the names, or matches one of the globs."""
    plain, wild = _patterns(globs)
    return project in plain or wild is not None and wild.match(project) is not None


@functools.lru_cache(maxsize=64)
def _patterns(globs: tuple[str, ...]) -> tuple[frozenset[str], re.Pattern | None]:
    """Plain names as a set, the globs as one regular expression: a list of thousands of
    names costs a request one lookup, not a match per name."""
    plain = frozenset(g for g in globs if not any(c in g for c in "*?["))
    wild = [fnmatch.translate(g) for g in globs if g not in plain]
    return plain, re.compile("|".join(wild)) if wild else None


def exempt(rules: Rules, project: str) -> bool:
    """Whether the rules of time (cooldown, freeze) pass the project by."""
    return matches(project, rules.exempt)


def project_refusal(rules: Rules, project: str) -> Refusal | None:
    """A refusal of the whole project (canonical name), or None."""
    if rules.allow_only and not matches(project, rules.allow_only):
        return Refusal("allow-only")
    if project in rules.denied_projects:
        entry = next(e for e in rules.deny if e.project == project and e.specifier is None)
        return Refusal("deny", entry.text)
    return None


def touches(rules: Rules, project: str) -> bool:
    """Whether the rules may refuse anything of the project: when not, nothing of it needs a
    look (its pages are served as they are cached, its files without a lookup)."""
    return (project_refusal(rules, project) is not None or project in rules.denied_versions
            or rules.timed and not exempt(rules, project) or blocks(rules, project))


def blocks(rules: Rules, project: str) -> bool:
    """Whether `[advisories] block` may refuse files of the project (an advisory names it)."""
    osv = rules.advisories
    return osv is not None and bool(osv.block) and project in osv.index.by_project


def file_refusal(rules: Rules, project: str, filename: str, upload_time: str | None,
                 now: float, block: frozenset[str] | None = None) -> Refusal | None:
    """A refusal of one file of a project the project rules let through, or None; `block`,
    which of `[advisories] block` counts (all of it unless said)."""
    version = version_of(filename)
    for entry in rules.denied_versions.get(project, ()):
        # A version that cannot be read from the name might be the denied one.
        if version is None or entry.specifier.contains(version, prereleases=True):
            return Refusal("deny", entry.text)
    if blocks(rules, project) and (refusal := advisory_refusal(rules, project, version, block)):
        return refusal
    if not rules.timed or exempt(rules, project):
        return None
    if version is not None and (project, version) in rules.allow:
        return None
    uploaded = upload_seconds(upload_time)
    if uploaded is None:
        return None if rules.unknown_time == "serve" else Refusal("unknown-time", "hold")
    if rules.freeze_at is not None and uploaded > rules.freeze_at:
        return Refusal("freeze-at", rfc3339(rules.freeze_at), uploaded=uploaded)
    if rules.min_age is not None and now < uploaded + rules.min_age:
        return Refusal("cooldown", rules.min_age_text, until=uploaded + rules.min_age,
                       uploaded=uploaded)
    return None


def advisory_refusal(rules: Rules, project: str, version: Version | None,
                     block: frozenset[str] | None = None) -> Refusal | None:
    """The refusal of `[advisories] block` for a version (None: a file whose name says none,
    refused only by a malicious record of every version), naming one advisory: a malicious
    one first, then the lowest id."""
    osv = rules.advisories
    block = osv.block if block is None else block & osv.block
    if version is None:
        found = [a for a in osv.index.entries(project)
                 if a.advisory.malicious and a.every_version()
                 and not a.advisory.names() & osv.ignore]
    else:
        found = osv.counted(project, version)
    found = [a for a in found if "vulnerable" in block or "malicious" in block
             and a.advisory.malicious]
    if not found:
        return None
    first = min(found, key=lambda a: (not a.advisory.malicious, a.advisory.id)).advisory
    return Refusal("advisory", first.id, detail="malicious" if first.malicious else "vulnerable",
                   about=(first.summary or "")[:200])


def judge(rules: Rules, project: Project, now: float) -> Verdict:
    """What the rules refuse of a page's files now (the project's own rules aside)."""
    refused = {}
    for file in project.files:
        refusal = file_refusal(rules, project.name, file.filename, file.upload_time, now)
        if refusal is not None:
            refused[file.filename] = refusal
    passed = fast_lane(rules, project, refused, now)
    for filename in passed:
        del refused[filename]
    times = [r.until for r in refused.values() if r.until is not None]
    # A release let through by the fast lane may, once it passes anyway, change which
    # release is the newest let through: the verdict holds until then at most.
    times += [r.until for r in passed.values() if r.until is not None]
    names = "\0".join([rules.digest, *sorted(refused)])
    return Verdict(refused, min(times) if times else None,
                   hashlib.sha256(names.encode()).hexdigest()[:12])


def fast_lane(rules: Rules, project: Project, refused: dict[str, Refusal],
              now: float) -> dict[str, Refusal]:
    """The files held by the cooldown that the fast lane lets through (filename -> the hold
    they pass): a release newer than the newest one the rules let through without the block
    of vulnerable releases, which an advisory of that one does not affect, and whose ranges
    end by it (the advisory names a fix it is past)."""
    osv = rules.advisories
    held = {name: r for name, r in refused.items() if r.rule == "cooldown"}
    if osv is None or not osv.fast_lane or not held or project.name not in osv.index.by_project:
        return {}
    block = osv.block - {"vulnerable"}
    served = [version_of(f.filename) for f in project.files
              if f.filename not in refused or refused[f.filename].rule == "advisory"
              and file_refusal(rules, project.name, f.filename, f.upload_time, now,
                               block) is None]
    served = [v for v in served if v is not None]
    if not served:
        return {}
    newest = max(served)
    against: list[Affected] = osv.counted(project.name, newest)
    passed = {}
    for name, refusal in held.items():
        version = version_of(name)
        if version is not None and version > newest and any(
                not a.affects(version) and a.ends_by(version) for a in against):
            passed[name] = refusal
    return passed


def without(project: Project, refused: dict[str, Refusal]) -> Project:
    """The page model without the refused files; `versions` recomputed (PEP 700)."""
    kept = tuple(f for f in project.files if f.filename not in refused)
    versions = project.versions
    if versions is not None:
        versions = tuple(kept_versions(versions, refused, (f.filename for f in kept)))
    return replace(project, files=kept, versions=versions)


def without_entries(document: dict, refused: dict[str, Refusal]) -> dict:
    """Our PEP 691 document (parsed) without the refused files, every other key kept."""
    kept = [entry for entry in document["files"] if entry["filename"] not in refused]
    result = dict(document, files=kept)
    if isinstance(document.get("versions"), list):
        result["versions"] = kept_versions(document["versions"], refused,
                                           (entry["filename"] for entry in kept))
    return result


def kept_versions(versions, refused: dict[str, Refusal], kept_files) -> list[str]:
    """The versions a page still offers: a version all of whose files are refused is gone, so
    that a resolver reading `versions` never sees a held release."""
    gone = {version_of(name) for name in refused} - {version_of(name) for name in kept_files}
    gone.discard(None)
    return [text for text in versions if _version(text) not in gone]


@functools.lru_cache(maxsize=65536)
def version_of(filename: str) -> Version | None:
    """The version a wheel's or an sdist's name says; None when the name is not one."""
    name = filename.removesuffix(".metadata")
    try:
        if name.endswith(".whl"):
            return parse_wheel_filename(name)[1]
        return parse_sdist_filename(name)[1]
    except ValueError:  # packaging's Invalid*Filename and InvalidVersion are ValueErrors
        return None


def _version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


@functools.lru_cache(maxsize=65536)
def upload_seconds(text: str | None) -> float | None:
    """An index's upload-time (ISO 8601, UTC when it says no offset) as seconds since the
    epoch; None when there is none or it cannot be read."""
    if not isinstance(text, str) or not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()
