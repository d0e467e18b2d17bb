"""Budgets of failed logins per key (a client address, a user name), shared by the workers
through a file of fixed size: bounded memory and disk whatever the keys."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import math
import os
import secrets
import struct
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

SLOT = struct.Struct("<dd")  # tokens left, and when they were counted (time.monotonic)
KEY_SIZE = 32


class Budget:
    """A token bucket per key: `burst` failures at once, then one more every `interval`
    seconds. Keys are hashed, with a secret of the file, into one of `slots` buckets, so a
    flood of new keys takes no memory; keys that share a bucket share its budget, which
    only ever throttles sooner, never later. Every worker of the machine reads and writes
    the same file under flock, so the budget is the machine's, not one worker's."""

    def __init__(self, path: Path, burst: int, interval: float, slots: int = 4096,
                 clock: Callable[[], float] = time.monotonic):
        self.burst, self.interval, self.slots, self.clock = burst, interval, slots, clock
        self._lock = threading.Lock()  # flock does not exclude threads sharing one descriptor
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        size = KEY_SIZE + slots * SLOT.size
        with self._locked():
            if os.fstat(self._fd).st_size != size:  # new, or made for another table size
                os.ftruncate(self._fd, 0)
                os.pwrite(self._fd, secrets.token_bytes(KEY_SIZE), 0)
                os.ftruncate(self._fd, size)
            self._secret = os.pread(self._fd, KEY_SIZE, 0)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _offset(self, key: str) -> int:
        digest = hashlib.blake2b(key.encode(), key=self._secret, digest_size=8).digest()
        return KEY_SIZE + int.from_bytes(digest, "little") % self.slots * SLOT.size

    def _tokens(self, offset: int, now: float) -> float:
        tokens, at = SLOT.unpack(os.pread(self._fd, SLOT.size, offset))
        if at == 0 or at > now:  # never spent, or counted before this machine booted
            return float(self.burst)
        return min(self.burst, tokens + (now - at) / self.interval)

    def wait(self, key: str) -> int:
        """Whole seconds until `key` may fail once more: 0 when it may now."""
        offset = self._offset(key)
        with self._locked():
            missing = 1 - self._tokens(offset, self.clock())
        return max(1, math.ceil(missing * self.interval)) if missing > 0 else 0

    def spend(self, key: str) -> None:
        """One failure of `key`."""
        offset = self._offset(key)
        with self._locked():
            now = self.clock()
            os.pwrite(self._fd, SLOT.pack(self._tokens(offset, now) - 1, now), offset)
