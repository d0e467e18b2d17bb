"""The policy file (PYPI_POLICY_FILE, TOML): its rules read and validated (pypicache/policywatch.py
re-reads it when it changes).

Every key is known or an error: a typo must never silently turn a rule off. What the rules
decide is pypicache/policy.py's business; this module only says what they are.
"""
from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from . import advisories, osvsource
from .advisories import Advisories

MODES = ("enforce", "report")
UNKNOWN_TIME = ("hold", "serve")
BLOCKS = ("malicious", "vulnerable")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SHORT = re.compile(r"(\d+)\s*([smhdw])")
# ISO 8601 durations of fixed length only: a month or a year has no fixed number of seconds.
_ISO = re.compile(r"P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?")
_NAME_GLOB = re.compile(r"[A-Za-z0-9*?\[\]._-]+")
_KEYS = {
    "": {"mode", "cooldown", "deny", "allow-only", "advisories"},
    "cooldown": {"min-age", "exempt", "allow", "freeze-at", "unknown-time"},
    "deny": {"projects"},
    "allow-only": {"projects"},
    "advisories": {"osv", "block", "fast-lane", "ignore"},
}


class PolicyError(ValueError):
    """A policy file we will not use: where (`key`), what is wrong, and the value at fault.

    `public` leaves the value out: /healthz, which anyone may read, says where and why only."""

    def __init__(self, key: str, problem: str, value: Any = None):
        self.key, self.problem = key, problem
        self.public = f"{key}: {problem}" if key else problem
        super().__init__(self.public + (f" (got {value!r})" if value is not None else ""))


@dataclass(frozen=True)
class Deny:
    """One `[deny] projects` entry: a whole project (no specifier) or the versions it names."""

    text: str
    project: str
    specifier: SpecifierSet | None


@dataclass(frozen=True)
class Rules:
    """A valid policy file's rules; `digest` names this version of the file (the same in
    every worker, so page ETags made from it agree)."""

    digest: str
    mode: str = "enforce"
    min_age: float | None = None  # seconds
    min_age_text: str = ""
    exempt: tuple[str, ...] = ()  # canonical project globs
    allow: frozenset[tuple[str, Version]] = frozenset()  # break-glass (project, version)
    freeze_at: float | None = None  # seconds since the epoch
    unknown_time: str = "hold"
    deny: tuple[Deny, ...] = ()
    allow_only: tuple[str, ...] = ()  # canonical project globs; empty: every project
    advisories: Advisories | None = None  # the [advisories] table, its records read
    denied_projects: frozenset[str] = field(default=frozenset(), compare=False)
    denied_versions: dict[str, tuple[Deny, ...]] = field(default_factory=dict, compare=False)

    @property
    def timed(self) -> bool:
        """Whether a file's upload time matters (a cooldown or a freeze)."""
        return self.min_age is not None or self.freeze_at is not None


def duration(text: str) -> float:
    """7d, 36h, 90m, 3600s (or 2w), or ISO 8601 such as P7D, PT36H, P1DT12H: seconds."""
    text = text.strip()
    if match := _SHORT.fullmatch(text):
        seconds = int(match[1]) * _UNITS[match[2]]
    elif (match := _ISO.fullmatch(text.upper())) and text.upper() not in ("P", "PT") \
            and not text.upper().endswith("T"):
        weeks, days, hours, minutes, secs = (float(part or 0) for part in match.groups())
        seconds = (((weeks * 7 + days) * 24 + hours) * 60 + minutes) * 60 + secs
    else:
        raise ValueError("must be a duration like 7d, 36h, 90m, 3600s or ISO 8601 (P7D, PT36H)")
    if seconds <= 0:
        raise ValueError("must be longer than zero (leave min-age out for no cooldown)")
    return float(seconds)


def instant(value: Any) -> float:
    """An RFC 3339 instant (a string or a TOML offset date-time) as seconds since the epoch."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError("must be an RFC 3339 instant like 2026-11-20T00:00:00Z") from None
    if not isinstance(value, datetime):  # a TOML date or time of day is no instant either
        raise ValueError("must be an RFC 3339 instant like 2026-11-20T00:00:00Z")
    if value.tzinfo is None:
        raise ValueError("must say its offset (Z or +hh:mm): a local time is no instant")
    return value.timestamp()


def rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse(data: bytes, base: Path | None = None, osv_copy: Path | None = None) -> Rules:
    """The rules of a policy file's bytes; PolicyError saying where and why when they are bad.
    The OSV source of `[advisories]` is read now (a relative path is relative to `base`, the
    policy file's directory): a source that cannot be read is a bad policy. With `osv_copy`,
    the records are read from that copy of the source instead."""
    try:
        document = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise PolicyError("", "is not UTF-8") from None
    except tomllib.TOMLDecodeError as error:
        raise PolicyError("", f"is not valid TOML: {error}") from None
    _known(document, "")
    mode = _choice(document, "", "mode", MODES, "enforce")
    cooldown = _table(document, "cooldown")
    deny = _table(document, "deny")
    only = _table(document, "allow-only")
    for name, table in (("cooldown", cooldown), ("deny", deny), ("allow-only", only)):
        _known(table, name)
    osv = (_advisories(_table(document, "advisories"), base, osv_copy)
           if "advisories" in document else None)
    min_age = cooldown.get("min-age")
    if min_age is not None:
        min_age = _convert("cooldown.min-age", min_age, lambda v: duration(_string(v)))
    freeze = cooldown.get("freeze-at")
    if freeze is not None:
        freeze = _convert("cooldown.freeze-at", freeze, instant)
    entries = tuple(_deny(f"deny.projects[{i}]", text)
                    for i, text in enumerate(_strings(deny, "deny.projects")))
    digest = hashlib.sha256(data + (osv.index.digest.encode() if osv else b""))
    return Rules(
        digest=digest.hexdigest()[:16],
        mode=mode,
        min_age=min_age,
        min_age_text=str(cooldown.get("min-age", "")),
        exempt=tuple(_glob(f"cooldown.exempt[{i}]", text)
                     for i, text in enumerate(_strings(cooldown, "cooldown.exempt"))),
        allow=frozenset(_pin(f"cooldown.allow[{i}]", text)
                        for i, text in enumerate(_strings(cooldown, "cooldown.allow"))),
        freeze_at=freeze,
        unknown_time=_choice(cooldown, "cooldown.", "unknown-time", UNKNOWN_TIME, "hold"),
        deny=entries,
        allow_only=tuple(_glob(f"allow-only.projects[{i}]", text)
                         for i, text in enumerate(_strings(only, "allow-only.projects"))),
        advisories=osv,
        denied_projects=frozenset(e.project for e in entries if e.specifier is None),
        denied_versions=_by_project(e for e in entries if e.specifier is not None),
    )


def load(path: Path, base: Path | None = None,
         osv_copy: Path | None = None) -> tuple[Rules, bytes]:
    """A policy file's rules, and the bytes they were read from; `base` is where a relative
    OSV source is (the policy file's own directory unless said: a kept copy's is not)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise PolicyError("", f"cannot be read: {error.strerror}") from None
    return parse(data, path.parent if base is None else base, osv_copy), data


def read(path: Path) -> Rules:
    return load(path)[0]


def _advisories(table: dict, base: Path | None, copy: Path | None) -> Advisories:
    _known(table, "advisories")
    if not isinstance(table.get("osv"), str) or not table["osv"].strip():
        raise PolicyError("advisories.osv", "must name a directory or a zip of OSV records")
    source = Path(table["osv"].strip())
    if not source.is_absolute() and base is not None:
        source = base / source
    block = _strings(table, "advisories.block")
    for i, value in enumerate(block):
        if value not in BLOCKS:
            raise PolicyError(f"advisories.block[{i}]", "must be \"malicious\" or \"vulnerable\"",
                              value)
    fast_lane = table.get("fast-lane", False)
    if not isinstance(fast_lane, bool):
        raise PolicyError("advisories.fast-lane", "must be true or false", fast_lane)
    # Taken before reading: a change meanwhile is seen. None for a copy: the source itself is
    # then looked at as if it had changed.
    signature = osvsource.signature(source) if copy is None else None
    try:
        index = advisories.load(source if copy is None else copy)
    except advisories.SourceError as error:
        raise PolicyError("advisories.osv", str(error), str(source)) from None
    return Advisories(source, index, frozenset(block), fast_lane,
                      frozenset(_strings(table, "advisories.ignore")), signature)


def _known(table: dict, name: str) -> None:
    for key in table:
        if key not in _KEYS[name]:
            where = f"{name}.{key}" if name else key
            raise PolicyError(where, "unknown key (known: " + ", ".join(sorted(_KEYS[name])) + ")")


def _table(document: dict, name: str) -> dict:
    table = document.get(name, {})
    if not isinstance(table, dict):
        raise PolicyError(name, "must be a table ([" + name + "])")
    return table


def _choice(table: dict, prefix: str, key: str, choices: tuple[str, ...], default: str) -> str:
    value = table.get(key, default)
    if value not in choices:
        raise PolicyError(prefix + key, "must be " + " or ".join(f'"{c}"' for c in choices), value)
    return value


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


def _strings(table: dict, key: str) -> list[str]:
    values = table.get(key.rpartition(".")[2], [])
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise PolicyError(key, "must be a list of strings")
    return values


def _convert(key: str, value: Any, convert) -> Any:
    try:
        return convert(value)
    except ValueError as error:
        raise PolicyError(key, str(error), value) from None


def _glob(key: str, text: str) -> str:
    if not _NAME_GLOB.fullmatch(text.strip()):
        raise PolicyError(key, "must be a project name or a glob of names (corp-*)", text)
    return canonicalize_name(text.strip())


def _requirement(key: str, text: str) -> Requirement:
    try:
        requirement = Requirement(text)
    except InvalidRequirement:
        raise PolicyError(key, "must be a project name, or a name and a version specifier "
                          "(left-pad>=1.3)", text) from None
    if requirement.extras or requirement.marker or requirement.url:
        raise PolicyError(key, "must be a name and a specifier only (no extras, markers or URL)",
                          text)
    return requirement


def _deny(key: str, text: str) -> Deny:
    requirement = _requirement(key, text)
    specifier = requirement.specifier if str(requirement.specifier) else None
    return Deny(text.strip(), canonicalize_name(requirement.name), specifier)


def _pin(key: str, text: str) -> tuple[str, Version]:
    """A break-glass release: `name==version`, one exact version."""
    requirement = _requirement(key, text)
    specs = list(requirement.specifier)
    if len(specs) != 1 or specs[0].operator != "==" or "*" in specs[0].version:
        raise PolicyError(key, "must name one release, name==version", text)
    return canonicalize_name(requirement.name), Version(specs[0].version)


def _by_project(entries) -> dict[str, tuple[Deny, ...]]:
    found: dict[str, tuple[Deny, ...]] = {}
    for entry in entries:
        found[entry.project] = found.get(entry.project, ()) + (entry,)
    return found
