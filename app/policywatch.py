"""The policy in force in a worker: the policy file re-read when it changes, the last good
rules kept when a new version is bad (and why said in the log and on /healthz)."""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from .policyfile import PolicyError, Rules, read

log = logging.getLogger(__name__)
CHECK_EVERY = 1.0  # seconds between two looks at the file's stat, per worker
# A new version is read once it is this old (by its mtime): a file written in place (`cat >`
# truncates it first) is never taken half-written, nor empty, for a policy that refuses less.
SETTLE = 0.25


class Watcher:
    """The rules in force in this worker: the file's stat looked at at most once a second,
    the file re-read only when its inode, mtime or size changed and the change has settled.
    A bad new version keeps the last good rules; `error` says why until a good version comes."""

    def __init__(self, path: Path, interval: float = CHECK_EVERY, settle: float = SETTLE):
        self.path, self.interval, self.settle = path, interval, settle
        self._lock = threading.Lock()
        self._signature = self._stat()
        self.rules = read(path)  # a bad file here is the caller's error (the server's start)
        self.loaded = time.time()
        self._looked = time.monotonic()
        self._unsettled = False  # a change seen that was too fresh to read
        self.error: PolicyError | None = None
        self.error_since: float | None = None

    def current(self) -> Rules:
        if not self._due():
            return self.rules
        with self._lock:
            if self._due():
                self._unsettled = self._check()
                self._looked = time.monotonic()
        return self.rules

    def _due(self) -> bool:
        wait = min(self.settle, self.interval) if self._unsettled else self.interval
        return time.monotonic() - self._looked >= wait

    def _stat(self) -> tuple | None:
        try:
            stat = os.stat(self.path)
        except OSError:
            return None
        return stat.st_ino, stat.st_mtime_ns, stat.st_size

    def _check(self) -> bool:
        """Look at the file, read it if it changed; whether it changed too lately to read."""
        signature = self._stat()
        if signature == self._signature:
            return False
        if signature is not None and time.time() - signature[1] / 1e9 < self.settle:
            return True  # being written, perhaps: look again soon
        self._signature = signature
        try:
            rules = read(self.path)
        except PolicyError as error:
            log.warning("policy file %s not applied, the last good one stays in force: %s",
                        self.path, error)
            self.error, self.error_since = error, time.time()
            return False
        if rules.digest != self.rules.digest:
            log.info("policy file %s reloaded (%s, mode %s)", self.path, rules.digest, rules.mode)
            self.loaded = time.time()
        self.rules, self.error, self.error_since = rules, None, None
        return False
