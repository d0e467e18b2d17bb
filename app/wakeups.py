"""Waiting on another thread of this process without polling at a fixed pace.

A download's writer says when bytes landed and a lock's holder when it let go; a waiter in
the same process (the client that caused a download follows it from another thread) wakes
at once instead of after its next sleep: a `.metadata` miss waited 30 ms in sleeps for a
download that took 3. A waiter in another process still looks again after its delay, so
the delays stay as short as before and bound every wait.
"""
from __future__ import annotations

import threading

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
