"""OSV advisories (the policy's `[advisories] osv`): a directory or a zip of OSV JSON records,
such as the PyPI export of the OSV database, read into an index by project.

Only `affected` entries of the ecosystem "PyPI" count, their names compared canonically (PEP
503); a withdrawn record counts for nothing. A version is affected as the OSV schema's
evaluation says: it is in the entry's `versions` list, or within one of its ECOSYSTEM (or
SEMVER) ranges, whose events are sorted by version ("0" before every version), an
`introduced` opening the range, a `fixed` closing it before that version, a `last_affected`
after it. GIT ranges need the repository and are left to the `versions` list. Versions are
compared as PEP 440 versions (packaging); one that is not PEP 440 names no file of the index.
A record whose id (or an alias) starts with MAL- reports a malicious package.

Nothing here knows the policy: pypicache/policy.py decides what an advisory refuses.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

ECOSYSTEM = "PyPI"
MALICIOUS = "MAL-"
RECORD_BYTES = 4 << 20  # no OSV record is this big: a bigger one is no record of ours
_ORDERED = ("ECOSYSTEM", "SEMVER")  # ranges compared by version; GIT ones need the repository


class SourceError(ValueError):
    """An OSV source we will not use, and why (the policy keeps its last good version)."""


@dataclass(frozen=True)
class Advisory:
    id: str
    aliases: tuple[str, ...] = ()
    summary: str | None = None
    details: str | None = None
    malicious: bool = False

    def names(self) -> set[str]:
        return {self.id, *self.aliases}


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

    by_project: dict[str, tuple[Affected, ...]] = field(default_factory=dict)
    records: int = 0
    digest: str = ""

    def affecting(self, project: str, version: Version | None) -> list[Affected]:
        """The entries whose versions include `version` (of a canonical project name)."""
        if version is None:
            return []
        return [a for a in self.by_project.get(project, ()) if a.affects(version)]


def signature(path: Path) -> tuple | None:
    """What says a source changed, cheaply (one stat): a zip's inode, mtime and size; a
    directory's inode and mtime, which change when a record is added, removed or renamed
    into it (rsync, `mv`); a record rewritten in place changes neither (docs/POLICY.md)."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size if path.is_file() else 0


def load(path: Path) -> Index:
    """The index of a directory (every *.json under it) or a zip of OSV records."""
    by_project: dict[str, list[Affected]] = {}
    seen, count = hashlib.sha256(), 0
    for name, data in sorted(_records(path)):
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


def keep(source: Path, digest: str, copy: Path) -> bool:
    """A copy of a source's records as one zip at `copy` (pypicache/policywatch.py's last good
    copy, for a worker that starts while the source is bad), unless the copy already has the
    records of `digest` or another process is writing it; whether it was written."""
    said = copy.with_name(copy.name + ".digest")
    try:
        if said.read_text() == digest:
            return False
    except OSError:
        pass
    copy.parent.mkdir(parents=True, exist_ok=True)
    with open(copy.with_name(copy.name + ".lock"), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another worker writes the same records
            return False
        temp = copy.with_name(f".{copy.name}.{os.getpid()}")
        with zipfile.ZipFile(temp, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in _records(source):
                archive.writestr(name, data)
        os.replace(temp, copy)
        said.write_text(digest)
    return True


def _records(path: Path) -> Iterator[tuple[str, bytes]]:
    if path.is_dir():
        for file in path.rglob("*.json"):
            try:
                yield str(file.relative_to(path)), _small(file.read_bytes(), file.name)
            except OSError as error:
                raise SourceError(f"{file}: cannot be read: {error.strerror}") from None
        return
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.is_dir() or not info.filename.endswith(".json"):
                    continue
                if info.file_size > RECORD_BYTES:
                    raise SourceError(f"{info.filename}: too big for an OSV record")
                yield info.filename, archive.read(info)
    except FileNotFoundError:
        raise SourceError("no such directory or zip") from None
    except OSError as error:
        raise SourceError(f"cannot be read: {error.strerror or error}") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as error:
        raise SourceError(f"is neither a directory nor a readable zip ({error})") from None


def _small(data: bytes, name: str) -> bytes:
    if len(data) > RECORD_BYTES:
        raise SourceError(f"{name}: too big for an OSV record")
    return data


def _record(name: str, record: Any) -> list[tuple[str, Affected]] | None:
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
    advisory = Advisory(
        id=record["id"], aliases=tuple(aliases),
        summary=_text(record.get("summary")), details=_text(record.get("details")),
        malicious=any(n.startswith(MALICIOUS) for n in (record["id"], *aliases)))
    entries = []
    for entry in affected:
        package = entry.get("package") if isinstance(entry, dict) else None
        if not isinstance(package, dict) or package.get("ecosystem") != ECOSYSTEM \
                or not isinstance(package.get("name"), str):
            continue
        entries.append((canonicalize_name(package["name"]), _affected(name, advisory, entry)))
    return entries or None


def _affected(name: str, advisory: Advisory, entry: dict) -> Affected:
    versions, ranges = entry.get("versions") or [], entry.get("ranges") or []
    if not _strings(versions) or not isinstance(ranges, list):
        raise SourceError(f"{name}: a versions or ranges field is not a list")
    parsed, fixed = [], []
    for each in ranges:
        if not isinstance(each, dict) or not isinstance(each.get("events"), list):
            raise SourceError(f"{name}: a range without events")
        if each.get("type") not in _ORDERED:
            continue
        events = _events(each["events"])
        if events is not None:
            parsed.append(events)
            fixed += [text for event in each["events"] for kind, text in event.items()
                      if kind == "fixed"]
    return Affected(advisory, tuple(parsed),
                    frozenset(v for v in map(_version, versions) if v is not None),
                    tuple(fixed))


def _events(events: list) -> tuple[tuple[str, Version | None], ...] | None:
    """A range's events sorted by version; None for one a version of which is not PEP 440
    (it cannot be evaluated: the versions list still counts)."""
    found = []
    for event in events:
        if not isinstance(event, dict) or len(event) != 1:
            return None
        ((kind, text),) = event.items()
        if kind == "limit" and text == "*":  # infinity: as no limit at all
            continue
        start = kind == "introduced" and text == "0"
        version = None if start else _version(text)
        if kind not in ("introduced", "fixed", "last_affected", "limit") \
                or version is None and not start:
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


def _version(text: Any) -> Version | None:
    if not isinstance(text, str):
        return None
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
