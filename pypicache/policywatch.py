"""The policy in force in a worker: the policy file re-read when it changes, or when the OSV
source its `[advisories]` name does (a stat of each, at most once a second), the last good
rules kept when a new version is bad (and why said in the log and on /healthz).

The last good version is also kept as a copy in the cache (LAST_GOOD: written as the server
starts, and by a worker each time it takes a new version), so that a worker started while a
bad version is in place (after a crash of another, say) comes up with the last good rules
rather than failing to boot, which would halt the whole server.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from . import osvsource
from .policyfile import PolicyError, Rules, load

log = logging.getLogger(__name__)
CHECK_EVERY = 1.0  # seconds between two looks at the file's stat, per worker
# A new version is read once it is this old (by its mtime): a file written in place (`cat >`
# truncates it first) is never taken half-written, nor empty, for a policy that refuses less.
SETTLE = 0.25
LAST_GOOD = Path("policy") / "last-good.toml"  # under the cache directory
LAST_GOOD_OSV = "last-good-osv.zip"  # beside it: the records of the last good OSV source


class Watcher:
    """The rules in force in this worker: the file's stat looked at at most once a second,
    the file re-read only when its inode, mtime or size changed and the change has settled.
    A bad new version keeps the last good rules; `error` says why until a good version comes."""

    def __init__(self, path: Path, last_good: Path | None = None, interval: float = CHECK_EVERY,
                 settle: float = SETTLE):
        self.path, self.last_good, self.interval, self.settle = path, last_good, interval, settle
        self.last_good_osv = last_good.with_name(LAST_GOOD_OSV) if last_good else None
        self._lock = threading.Lock()
        signature = self._stat_file()
        self.error: PolicyError | None = None
        self.error_since: float | None = None
        try:
            self.rules = load(path)[0]
        except PolicyError as error:  # raised when there is no good copy either
            if last_good is None or not last_good.is_file():
                raise
            self.rules = self._last_good(last_good)
            self._refuse(error)
        self._signature = (signature, self._source_signature(self.rules))
        self.loaded = time.time()
        self._looked = time.monotonic()
        self._unsettled = False  # a change seen that was too fresh to read

    def _last_good(self, last_good: Path) -> Rules:
        """The last good copy's rules; their records from the last good OSV source's copy
        when the source itself cannot be read now."""
        try:
            return load(last_good, base=self.path.parent)[0]
        except PolicyError as error:
            copy = self.last_good_osv
            if error.key != "advisories.osv" or copy is None or not copy.is_file():
                raise
            return load(last_good, base=self.path.parent, osv_copy=copy)[0]

    def current(self) -> Rules:
        if not self._due():
            return self.rules
        # One thread looks (and reads, which takes a second or so for an OSV source of
        # thousands of records); the others go on with the rules in force meanwhile.
        if not self._lock.acquire(blocking=False):
            return self.rules
        try:
            if self._due():
                self._unsettled = self._check()
                self._looked = time.monotonic()
        finally:
            self._lock.release()
        return self.rules

    def _due(self) -> bool:
        wait = min(self.settle, self.interval) if self._unsettled else self.interval
        return time.monotonic() - self._looked >= wait

    def _stat_file(self) -> tuple | None:
        try:
            stat = os.stat(self.path)
        except OSError:
            return None
        return stat.st_ino, stat.st_mtime_ns, stat.st_size

    @staticmethod
    def _source_signature(rules: Rules) -> tuple | None:
        """The OSV source's signature as the rules read it (None: no advisories)."""
        return rules.advisories.signature if rules.advisories is not None else None

    def _stat(self) -> tuple:
        osv = self.rules.advisories
        return self._stat_file(), osvsource.signature(osv.source) if osv is not None else None

    def _check(self) -> bool:
        """Look at the file and the OSV source, read them if one changed; whether it changed
        too lately to read."""
        signature = self._stat()
        if signature == self._signature:
            return False
        # Being written, perhaps: look again soon. (An mtime in the future, a clock apart or
        # a copy that kept it, says nothing of that: read it.)
        if any(part is not None and 0 <= time.time() - part[1] / 1e9 < self.settle
               for part in signature):
            return True
        self._signature = signature
        try:
            rules, data = load(self.path)
        except PolicyError as error:
            self._refuse(error)
            return False
        if rules.digest != self.rules.digest:
            log.info("policy file %s reloaded (%s, mode %s)", self.path, rules.digest, rules.mode)
            self.loaded = time.time()
            self._keep(data)
            self._keep_source(rules)
        self.rules, self.error, self.error_since = rules, None, None
        self._signature = (signature[0], self._source_signature(rules))  # its source, as read
        return False

    def _refuse(self, error: PolicyError) -> None:
        log.warning("policy file %s not applied, the last good one stays in force: %s",
                    self.path, error)
        self.error, self.error_since = error, time.time()

    def _keep(self, data: bytes) -> None:
        if self.last_good is None:
            return
        try:
            write_atomic(self.last_good, data)
        except OSError as error:  # a worker started later falls back on an older copy
            log.warning("could not keep a copy of the policy file: %s", error.strerror)


    def _keep_source(self, rules: Rules) -> None:
        if self.last_good_osv is not None:
            keep_source(rules, self.last_good_osv)


def keep_source(rules: Rules, copy: Path) -> None:
    """The records of a good OSV source copied beside the last good policy file, for a worker
    that starts while the source is bad (as the server starts, and by a worker that takes a
    new version); only rules read from the source itself, not from a copy."""
    osv = rules.advisories
    if osv is None or osv.signature is None:
        return
    try:
        osvsource.keep(osv.source, osv.index.digest, copy)
    except (OSError, osvsource.SourceError) as error:  # changed since: the next look
        log.warning("could not keep a copy of the OSV records: %s", error)


def write_atomic(path: Path, data: bytes) -> None:
    """`data` at `path`, whole or not at all (several workers may write it at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    temp.write_bytes(data)
    os.replace(temp, path)
