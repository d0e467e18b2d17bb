"""What /healthz checks: each check does the thing it names, and says why it failed."""
from __future__ import annotations

import os

from ..store import Store

HEALTH_LOCK = "healthz"


def cache_writable(store: Store) -> bool | str:
    """A temp file can be created, written and removed in the cache's tmp/ directory."""
    try:
        fd, temp = store.new_temp("healthz")
        try:
            os.write(fd, b"ok")
        finally:
            os.close(fd)
            temp.unlink()
    except Exception as error:  # report, never raise: this is the health check
        return f"{type(error).__name__}: {error}"
    return True


def locks_work(store: Store) -> bool | str:
    """A lock taken here is seen as held through another open file, as other workers see it."""
    try:
        with store.lock(HEALTH_LOCK, timeout=2):
            fd = os.open(store.lock_path(HEALTH_LOCK), os.O_RDONLY)
            try:
                if not store.held_by_other(fd):
                    return "a held lock was not seen as held (locks do not work on this filesystem)"
            finally:
                os.close(fd)
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    return True


def catalog_readable(catalog) -> bool | str:
    try:
        catalog.usage()
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    return True
