"""Waiting on another thread of this process without polling at a fixed pace.

A download's writer says when bytes landed and a lock's holder when it let go; a waiter in
the same process (the client that caused a download follows it from another thread) wakes
at once instead of after its next sleep: a `.metadata` miss waited 30 ms in sleeps for a
download that took 3. A waiter in another process still looks again after its delay, so
the delays stay as short as before and bound every wait. `Backoff` is that wait, for every
loop here that waits until something happens (a lock, a download's start, its bytes, a
download slot, another node's lease).
"""
from __future__ import annotations

import threading
import time

_lock = threading.Lock()
_events: dict[str, threading.Event] = {}  # name -> set at its next change


def event(name: str) -> threading.Event:
    """The event the next change of `name` sets: take it before looking at what it guards,
    then wait on it, so that a change between the look and the wait is not missed."""
    with _lock:
        found = _events.get(name)
        if found is None:
            found = _events[name] = threading.Event()
        return found


def wait(name: str, found: threading.Event, timeout: float) -> bool:
    """Wait for the change `found` stands for, at most `timeout` seconds: whether it came."""
    if found.wait(timeout):
        return True
    with _lock:  # no change from this process: drop it (the dict stays small)
        if _events.get(name) is found:
            del _events[name]
    return False


def changed(name: str) -> None:
    """`name` changed: wake whoever waits on it in this process."""
    with _lock:
        found = _events.pop(name, None)
    if found is not None:
        found.set()


class Backoff:
    """The one way this code waits until something happens: delays doubling from `first` to
    `most`, ended early when `name` (if any) changes in this process.

        backoff = Backoff(0.005, 0.025, name)
        while True:
            backoff.arm()          # before looking: a change from now on ends the wait
            if done(): break
            backoff.wait()
    """

    def __init__(self, first: float, most: float, name: str | None = None, *,
                 later: float | None = None, after: float = 1.0):
        """With `later`, the delays stay within `most` for the first `after` seconds, then
        grow to `later`: a wait that usually ends soon looks often while it is young."""
        self.first, self.most, self.name = first, most, name
        self.later, self.after = later, after
        self.delay = first
        self._began = time.monotonic()
        self._event: threading.Event | None = None

    def arm(self) -> None:
        if self.name is not None:
            self._event = event(self.name)

    def wait(self) -> None:
        if self._event is not None:
            wait(self.name, self._event, self.delay)
            self._event = None
        else:
            time.sleep(self.delay)
        most = self.most
        if self.later is not None and time.monotonic() - self._began > self.after:
            most = self.later
        self.delay = min(self.delay * 2, most)

    def reset(self) -> None:
        """Progress was made: the next wait is short again."""
        self.delay = self.first
