"""What /healthz checks: each check does the thing it names, and says why it failed.

/healthz stays open when clients must log in (probes have no password), so a failure is said
in words that name no path, file or project; the exception itself goes to the log.
"""
from __future__ import annotations

import logging
import os
import sqlite3

from ..cachedir import CacheDir
from ..errors import StorageError

log = logging.getLogger(__name__)
HEALTH_LOCK = "healthz"


def cache_writable(cachedir: CacheDir) -> bool | str:
    """A temp file can be created, written and removed in the cache's tmp/ directory."""
    try:
        fd, temp = cachedir.new_temp("healthz")
        try:
            os.write(fd, b"ok")
        finally:
            os.close(fd)
            temp.unlink()
    except Exception as error:  # report, never raise: this is the health check
        return _failed("a file cannot be written in the cache", error)
    return True


def locks_work(cachedir: CacheDir) -> bool | str:
    """A lock taken here is seen as held through another open file, as other workers see it."""
    try:
        with cachedir.lock(HEALTH_LOCK, timeout=2):
            fd = os.open(cachedir.lock_path(HEALTH_LOCK), os.O_RDONLY)
            try:
                if not cachedir.held_by_other(fd):
                    return "a held lock was not seen as held (locks do not work on this filesystem)"
            finally:
                os.close(fd)
    except Exception as error:
        return _failed("a lock cannot be taken in the cache", error)
    return True


def catalog_readable(catalog) -> bool | str:
    try:
        catalog.usage()
    except Exception as error:
        return _failed("the catalog cannot be read", error)
    return True


def _failed(what: str, error: Exception) -> str:
    """`what` failed and why, naming no path (an OSError's text names its file); the whole
    error goes to the log."""
    log.warning("health check: %s: %s: %s", what, type(error).__name__, error)
    if isinstance(error, StorageError):
        reason = error.message  # ours, made of the errno's words (pypicache/cachedir.py)
    elif isinstance(error, OSError) and error.errno:
        reason = os.strerror(error.errno)
    elif isinstance(error, sqlite3.Error):
        reason = getattr(error, "sqlite_errorname", None) or type(error).__name__
    else:
        reason = type(error).__name__
    return f"{what}: {reason}"
