"""The threads of work that outlives its request (a download's copy into its temp file): taken
from a pool of this process rather than started one per miss.

Starting a thread waits for it to run, and on a busy worker that wait was for the interpreter
lock: a fifth of the time a miss spent before it answered, in a profile of a cold install.
The pool's threads are joined at exit, after the work given them, as a non-daemon thread
would be: a worker leaving gracefully still finishes its downloads. How many run at once is
bounded by what is given to them (each download holds a download slot), not here.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from .perprocess import Once

MOST = 1024  # threads of the pool at most; it grows only as far as work overlaps

_pool: ThreadPoolExecutor | None = None


def _start() -> None:
    global _pool
    _pool = ThreadPoolExecutor(MOST, thread_name_prefix="background")


_once = Once(_start)  # made in each process (a forked worker makes its own)


def run(work: Callable[[], None]) -> None:
    """Run `work` in a thread of the pool; it must catch and log its own errors."""
    _once()
    _pool.submit(work)
