"""OSV advisories (the policy's `[advisories] osv`): the records of a directory or a zip of
OSV JSON records (pypicache/osvsource.py), such as the PyPI export of the OSV database, read
into an index by project.

Only `affected` entries of the ecosystem "PyPI" count, their names compared canonically (PEP
503); a withdrawn record counts for nothing. A version is affected as the OSV schema's
evaluation says: it is in the entry's `versions` list, or within one of its ECOSYSTEM (or
SEMVER) ranges, whose events are sorted by version ("0" before every version), an
`introduced` opening the range, a `fixed` closing it before that version, a `last_affected`
after it. GIT ranges need the repository and are left to the `versions` list. Versions are
compared as PEP 440 versions (packaging); one that is not PEP 440 names no file of the index.
A record whose id (or an alias) starts with MAL- reports a malicious package.

An export has tens of thousands of records whose `versions` lists name hundreds of versions:
read, each entry keeps its version strings (interned: most repeat); a project's entries are
compiled (their versions parsed) when it is first asked about, and its details kept
compressed, so that a worker holds megabytes, not hundreds of them.

Nothing here knows the policy: pypicache/policy.py decides what an advisory refuses.
"""
from __future__ import annotations

import functools
import hashlib
import json
import sys
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from .osvsource import SourceError, records

__all__ = ["Advisories", "Advisory", "Affected", "Index", "SourceError", "load", "warehouse"]
ECOSYSTEM = "PyPI"
MALICIOUS = "MAL-"
_ORDERED = ("ECOSYSTEM", "SEMVER")  # ranges compared by version; GIT ones need the repository
_KINDS = ("introduced", "fixed", "last_affected", "limit")
COMPILED_KEPT = 4096  # projects whose entries a worker keeps compiled (versions parsed)


@dataclass(frozen=True)
class Advisory:
    id: str
    aliases: tuple[str, ...] = ()
    summary: str | None = None
    packed_details: bytes | None = field(default=None, repr=False)  # zlib: read rarely
    malicious: bool = False

    @property
    def details(self) -> str | None:
        if self.packed_details is None:
            return None
        return zlib.decompress(self.packed_details).decode()

    def names(self) -> set[str]:
        return {self.id, *self.aliases}


@dataclass(frozen=True)
class Entry:
    """One `affected` entry as read: version strings, compiled when first asked about."""

    advisory: Advisory
    versions: tuple[str, ...] = ()
    ranges: tuple[tuple[tuple[str, str], ...], ...] = ()  # ECOSYSTEM or SEMVER ranges' events


@dataclass(frozen=True)
class Affected:
    """One `affected` entry of a record for one project: its ranges and versions list."""

    advisory: Advisory
    # Each range's events, sorted; an introduced "0" (before every version) has None.
    ranges: tuple[tuple[tuple[str, Version | None], ...], ...] = ()
    versions: frozenset[Version] = frozenset()
    fixed: tuple[str, ...] = ()  # the versions its ranges name as fixed, as written

    def affects(self, version: Version) -> bool:
        return version in self.versions or any(_in_range(version, r) for r in self.ranges)

    def every_version(self) -> bool:
        """Whether every version is affected (a range opened at "0" and never closed)."""
        return any(r[0] == ("introduced", None) and all(k == "introduced" for k, _ in r)
                   for r in self.ranges)

    def ends_by(self, version: Version) -> bool:
        """Whether one of its ranges names an end (a fixed or last affected version) that
        `version` is past: the advisory names it as a fix, not merely as unaffected."""
        return any(kind == "fixed" and bound <= version or kind == "last_affected"
                   and bound < version for r in self.ranges for kind, bound in r)


@dataclass(frozen=True)
class Index:
    """The advisories of a source by canonical project name; `digest` names its content
    (the same in every worker that read the same records)."""

    by_project: dict[str, tuple[Entry, ...]] = field(default_factory=dict)
    records: int = 0
    digest: str = ""
    _compiled: dict = field(default_factory=dict, compare=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)

    def entries(self, project: str) -> tuple[Affected, ...]:
        """A project's entries (canonical name), compiled, kept for the next ask."""
        found = self._compiled.get(project)
        if found is None:
            found = tuple(_compile(e) for e in self.by_project.get(project, ()))
            with self._lock:
                if len(self._compiled) >= COMPILED_KEPT:
                    self._compiled.clear()  # a fleet's own projects come back at once
                self._compiled[project] = found
        return found

    def affecting(self, project: str, version: Version | None) -> list[Affected]:
        """The entries whose versions include `version` (of a canonical project name)."""
        if version is None or project not in self.by_project:
            return []
        return [a for a in self.entries(project) if a.affects(version)]


@dataclass(frozen=True)
class Advisories:
    """The policy's `[advisories]` table (pypicache/policyfile.py reads it): the OSV source,
    read into `index` as the policy was loaded."""

    source: Path
    index: Index
    block: frozenset[str] = frozenset()  # "malicious", "vulnerable"
    fast_lane: bool = False
    ignore: frozenset[str] = frozenset()  # advisory ids (or aliases) that count for nothing
    signature: tuple | None = field(default=None, compare=False)  # the source's, when read

    def counted(self, project: str, version: Version | None) -> list[Affected]:
        """The entries of advisories that count against a version of a project."""
        return [a for a in self.index.affecting(project, version)
                if not a.advisory.names() & self.ignore]


def load(path: Path) -> Index:
    """The index of a directory (every *.json under it) or a zip of OSV records."""
    by_project: dict[str, list[Entry]] = {}
    seen, count = hashlib.sha256(), 0
    for name, data in records(path):
        try:
            record = json.loads(data)
        except (ValueError, UnicodeDecodeError) as error:
            raise SourceError(f"{name}: not a JSON record ({error})") from None
        entries = _record(name, record)
        if entries is None:
            continue
        count += 1
        seen.update(f"{record['id']}\0{record.get('modified', '')}\n".encode())
        for project, affected in entries:
            by_project.setdefault(project, []).append(affected)
    return Index({p: tuple(a) for p, a in by_project.items()}, count, seen.hexdigest()[:16])


def _record(name: str, record: Any) -> list[tuple[str, Entry]] | None:
    """(project, entry) for each PyPI entry of a record; None for one that counts for nothing
    (withdrawn, or of no PyPI project). A record of the wrong shape is a SourceError."""
    if not isinstance(record, dict) or not isinstance(record.get("id"), str):
        raise SourceError(f"{name}: not an OSV record (no id)")
    if record.get("withdrawn"):
        return None
    affected = record.get("affected") or []
    aliases = record.get("aliases") or []
    if not isinstance(affected, list) or not _strings(aliases):
        raise SourceError(f"{name}: affected or aliases is not a list")
    details = _text(record.get("details"))
    advisory = Advisory(
        id=record["id"], aliases=tuple(aliases), summary=_text(record.get("summary")),
        packed_details=zlib.compress(details.encode(), 1) if details is not None else None,
        malicious=any(n.startswith(MALICIOUS) for n in (record["id"], *aliases)))
    entries = []
    for entry in affected:
        package = entry.get("package") if isinstance(entry, dict) else None
        if not isinstance(package, dict) or package.get("ecosystem") != ECOSYSTEM \
                or not isinstance(package.get("name"), str):
            continue
        entries.append((canonicalize_name(package["name"]), _entry(name, advisory, entry)))
    return entries or None


def _entry(name: str, advisory: Advisory, entry: dict) -> Entry:
    versions, ranges = entry.get("versions") or [], entry.get("ranges") or []
    if not _strings(versions) or not isinstance(ranges, list):
        raise SourceError(f"{name}: a versions or ranges field is not a list")
    kept = []
    for each in ranges:
        if not isinstance(each, dict) or not isinstance(each.get("events"), list):
            raise SourceError(f"{name}: a range without events")
        if each.get("type") in _ORDERED and (events := _raw_events(each["events"])):
            kept.append(events)
    return Entry(advisory, tuple(map(sys.intern, versions)), tuple(kept))


def _raw_events(events: list) -> tuple[tuple[str, str], ...] | None:
    """A range's events as (kind, version) strings; None for one of the wrong shape (it
    cannot be evaluated: the versions list still counts)."""
    found = []
    for event in events:
        if not isinstance(event, dict) or len(event) != 1:
            return None
        ((kind, text),) = event.items()
        if kind not in _KINDS or not isinstance(text, str):
            return None
        found.append((kind, sys.intern(text)))
    return tuple(found)


def _compile(entry: Entry) -> Affected:
    ranges = [r for r in map(_events, entry.ranges) if r is not None]
    fixed = tuple(text for r in entry.ranges for kind, text in r if kind == "fixed")
    return Affected(entry.advisory, tuple(ranges),
                    frozenset(v for v in map(_version, entry.versions) if v is not None), fixed)


def _events(events: tuple[tuple[str, str], ...]) -> tuple[tuple[str, Version | None], ...] | None:
    """A range's events sorted by version; None for one a version of which is not PEP 440."""
    found = []
    for kind, text in events:
        if kind == "limit" and text == "*":  # infinity: as no limit at all
            continue
        start = kind == "introduced" and text == "0"
        version = None if start else _version(text)
        if version is None and not start:
            return None
        found.append((kind, version))
    # "0" first; at one version an introduced before what closes it, as in the timeline.
    return tuple(sorted(found, key=lambda e: (e[1] is not None, e[1] or 0, e[0] != "introduced")))


def _in_range(version: Version, events: tuple[tuple[str, Version | None], ...]) -> bool:
    limits = [bound for kind, bound in events if kind == "limit"]
    if limits and not any(version < bound for bound in limits):
        return False
    affected = False
    for kind, bound in events:
        if kind == "introduced" and (bound is None or version >= bound):
            affected = True
        elif kind == "fixed" and version >= bound:
            affected = False
        elif kind == "last_affected" and version > bound:
            affected = False
    return affected


@functools.lru_cache(maxsize=65536)
def _version(text: str) -> Version | None:
    """A PEP 440 version (one object per text: most versions are in many records)."""
    try:
        return Version(text)
    except InvalidVersion:
        return None


def _strings(values: Any) -> bool:
    return isinstance(values, list) and all(isinstance(v, str) for v in values)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def warehouse(entries: list[Affected]) -> list[dict[str, Any]]:
    """The advisories of a release as the legacy JSON API lists them (Warehouse's
    `vulnerabilities`), one per advisory, lowest id first."""
    found: dict[str, dict[str, Any]] = {}
    for entry in sorted(entries, key=lambda a: a.advisory.id):
        advisory = entry.advisory
        shown = found.setdefault(advisory.id, {
            "aliases": list(advisory.aliases),
            "details": advisory.details,
            "fixed_in": [],
            "id": advisory.id,
            "link": f"https://osv.dev/vulnerability/{advisory.id}",
            "source": "osv",
            "summary": advisory.summary,
            "withdrawn": None,  # a withdrawn record is not read at all
        })
        shown["fixed_in"] += [v for v in entry.fixed if v not in shown["fixed_in"]]
    return list(found.values())
