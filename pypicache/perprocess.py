"""What each process makes for itself: threads, sockets and queues, which a fork does not copy.

gunicorn forks its workers from the arbiter after the app's module is imported, and tests and
the CLI build apps without forking at all, so nothing may be started when the app is built.
Each owner of such a thing (fetching ahead's threads, the bucket's client, the readers of the
front's log and of the cluster's statistics) starts it through `Once` on first use: started
once per process, and again in a child that a fork made. gunicorn's post_worker_init
(pypicache/stats/setup.py's worker_started) calls the ones a worker needs before its first request.
The one other idiom is the statistics recorder's (pypicache/stats/recorder.py): what a parent had
counted is dropped in the child at the fork itself (os.register_at_fork), as it is the
parent's to flush.
"""
from __future__ import annotations

import os
import threading
from typing import Callable


class Once:
    """Call `start` once in each process that calls this (again in a forked child)."""

    def __init__(self, start: Callable[[], None]):
        self._start = start
        self._pid = 0
        self._lock = threading.Lock()

    def __call__(self) -> None:
        if self._pid == os.getpid():  # the common case, without the lock
            return
        with self._lock:
            if self._pid != os.getpid():
                self._start()
                self._pid = os.getpid()

    @property
    def done(self) -> bool:
        """Whether `start` ran in this process."""
        return self._pid == os.getpid()

    def forget(self) -> None:
        """What `start` made has been stopped: the next call starts it again."""
        self._pid = 0
