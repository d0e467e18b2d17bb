"""Budgets of failed logins per key (a client address, a user name) in bounded memory."""
from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from typing import Callable


class Budget:
    """A token bucket per key: `burst` failures at once, then one more every `interval`
    seconds. At most `keys` keys are remembered; the one that failed longest ago is forgotten
    first, which gives it back no more than the burst it had to spend to be remembered."""

    def __init__(self, burst: int, interval: float, keys: int,
                 clock: Callable[[], float] = time.monotonic):
        self.burst, self.interval, self.keys, self.clock = burst, interval, keys, clock
        self._lock = threading.Lock()
        self._spent: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def _tokens(self, key: str, now: float) -> float:
        tokens, at = self._spent.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - at) / self.interval)

    def wait(self, key: str) -> int:
        """Whole seconds until `key` may fail once more: 0 when it may now."""
        with self._lock:
            missing = 1 - self._tokens(key, self.clock())
        return max(1, math.ceil(missing * self.interval)) if missing > 0 else 0

    def spend(self, key: str) -> None:
        """One failure of `key`."""
        with self._lock:
            now = self.clock()
            self._spent[key] = (self._tokens(key, now) - 1, now)
            self._spent.move_to_end(key)
            while len(self._spent) > self.keys:
                self._spent.popitem(last=False)
