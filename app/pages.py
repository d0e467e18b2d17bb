"""Index pages cached on disk, rendered once per TTL and shared by every worker.

A project page is fetched from the upstream (JSON preferred, HTML parsed otherwise), turned
into the page model, and rendered once into HTML and JSON (and their gzip), so that a warm
request only sends a file. After the TTL one worker revalidates with the upstream's ETag while
the others keep serving the old copy; if the upstream fails, the old copy is served as stale.
This module decides when a page is fetched and what is served meanwhile; app/refresh.py
fetches and writes it.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import NotFound, UpstreamError
from .refresh import Refresher, lock_name

log = logging.getLogger(__name__)
NEGATIVE_TTL = 60.0  # an upstream 404 is remembered this long (a new project appears soon)
GONE_GRACE = 86400.0  # a page we have outlives an upstream 404 this long (mirrors mid-sync)
STATES_KEPT = 4096  # page states a worker keeps parsed in memory
ROOT = "_root"  # not a project name: those start with a letter or digit


@dataclass
class Page:
    directory: Path
    etags: dict[str, str]
    cache: str  # hit, miss, revalidated, stale, updating
    age: float

    version: str = "page"  # the bodies' name stem: a refresh writes new names (app/refresh.py)

    def body(self, fmt: str, compressed: bool) -> Path:
        return self.directory / (f"{self.version}.{fmt}.gz" if compressed else f"{self.version}.{fmt}")


class Pages:
    def __init__(self, settings, store, catalog, upstream):
        self.settings, self.store = settings, store
        self.refresher = Refresher(settings, store, catalog, upstream, forget=self._forget_page)
        self._states: dict[str, tuple[tuple, dict]] = {}  # per worker: name -> (stat, state)
        # Per worker: names the upstream answered 404 for, and when. Not on disk, so a flood
        # of made-up names leaves nothing behind; at most PYPI_NEGATIVE_CACHE, oldest out first.
        self._missing: dict[str, float] = {}

    def project(self, name: str) -> Page:
        return self._get(name, self.refresher.project)

    def root(self) -> Page:
        return self._get(ROOT, self.refresher.root)

    # --- freshness and single-flight -----------------------------------------------------
    def _state(self, name: str) -> tuple[dict, float] | None:
        """(state, age): one stat per warm request; the file is re-read only when it changed
        (it is replaced atomically, and touched when revalidated)."""
        path = self.store.pages / name / "state.json"
        try:
            stat = path.stat()
            signature = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            known = self._states.get(name)
            if known is None or known[0] != signature:
                if len(self._states) >= STATES_KEPT:
                    self._states.clear()  # bounded memory; the warm set refills in a request each
                known = self._states[name] = (signature, json.loads(path.read_bytes()))
        except (OSError, ValueError):
            return None
        return known[1], time.time() - stat.st_mtime

    def _answer(self, name: str, state: tuple[dict, float], cache: str) -> Page:
        data, age = state
        if data["status"] == 404:  # a page state from before the negative cache was in memory
            raise NotFound(f"no project named {name!r} upstream")
        return Page(self.store.pages / name, data["etags"], cache, age, data.get("version", "page"))

    def _known_missing(self, name: str) -> bool:
        seen = self._missing.get(name)
        return seen is not None and time.monotonic() - seen < NEGATIVE_TTL

    def _remember_missing(self, name: str) -> None:
        self._missing.pop(name, None)
        while len(self._missing) >= self.settings.negative_cache:
            del self._missing[next(iter(self._missing))]  # the oldest (dicts keep order)
        self._missing[name] = time.monotonic()

    def _fresh(self, state) -> bool:
        data, age = state
        return age < (self.settings.index_ttl if data["status"] == 200 else NEGATIVE_TTL)

    def _get(self, name: str, refresh: Callable[[str, dict | None], str]) -> Page:
        state = self._state(name)
        if state and self._fresh(state):
            return self._answer(name, state, "hit")
        if state is None and self._known_missing(name):
            raise NotFound(f"no project named {name!r} upstream")
        lock = lock_name(name)
        if state and state[0]["status"] == 200:
            fd = self.store.try_lock(lock)
            if fd is None:  # another worker is revalidating: the old copy is good enough
                return self._answer(name, state, "updating")
            self.store.unlock(lock, fd)
        # As long as the leader's own wait for headers, and longer while its body arrives:
        # the leader touches the lock at each chunk (Store.lock counts from the last touch).
        wait = self.settings.connect_timeout + self.settings.read_timeout
        with self.store.lock(lock, timeout=wait):
            state = self._state(name)
            if state and self._fresh(state):
                return self._answer(name, state, "hit")
            try:
                cache = refresh(name, state[0] if state else None)
            except NotFound:
                if state and state[0]["status"] == 200 and self._gone_lately(name, state[0]):
                    log.warning("upstream has no page for %s; serving the cached one", name)
                    return self._answer(name, state, "stale")
                self._forget_page(name)
                self._remember_missing(name)
                raise
            except UpstreamError as error:
                if state and state[0]["status"] == 200:
                    log.warning("serving a stale page for %s: %s", name, error.message)
                    return self._answer(name, state, "stale")
                raise
            return self._answer(name, self._state(name), cache)

    def _gone_lately(self, name: str, data: dict) -> bool:
        """Whether the upstream's 404 for a page we have began less than GONE_GRACE ago.

        A mirror in the middle of a sync answers 404 for a while: users keep the page (stale,
        asked again on every request as when the upstream is down) rather than losing a
        project; after the grace the 404 wins. The first 404's time goes into the state with
        its old mtime kept, so the page stays due for revalidation.
        """
        now = time.time()
        if now - data.get("gone_since", now) >= GONE_GRACE:
            return False
        if "gone_since" not in data:
            path = self.store.pages / name / "state.json"
            validated = path.stat()
            self.store.write_json(path, data | {"gone_since": now})
            os.utime(path, ns=(validated.st_atime_ns, validated.st_mtime_ns))
        return True

    def _forget_page(self, name: str) -> None:
        shutil.rmtree(self.store.pages / name, ignore_errors=True)
        self._states.pop(name, None)

    def upstream_of(self, name: str) -> str | None:
        """The name of the upstream a project's cached page came from (None: none cached)."""
        state = self._state(name)
        return state[0].get("upstream") if state and state[0]["status"] == 200 else None

