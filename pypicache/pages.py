"""Index pages cached on disk and shared by every worker: when a page is fetched anew, what is
served meanwhile, and the bodies clients get.

A project page is fetched from the upstream and kept as our PEP 691 document of it
(`v<version>.json`, refresh.py, pagereader.py), which is also its JSON body. The other
bodies (the gzip of it, HTML and its gzip) are made the first time a client asks for them and
kept beside it (pagebodies.py), so a page miss costs the upstream's answer and one pass over
its files, the client that caused it gets the document from memory, and a warm request only
sends a file. After the TTL one worker
revalidates with the upstream's ETag while the others keep serving the old copy; if the
upstream fails, or the disk cannot take the new copy, the old one is served as stale.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections import OrderedDict
from typing import BinaryIO, Callable

from .errors import Busy, NotFound, StorageError, UpstreamError
from .pagebodies import ROOT, Bodies
from .pagefiles import Body, Page, PageGone
from .pagemodel import File, Project, find_file, project_of
from .refresh import STATE_FORMAT, Refreshed, Refresher, local_token, lock_name
from .uploads import ORIGIN

log = logging.getLogger(__name__)
NEGATIVE_TTL = 60.0  # an upstream 404 is remembered this long (a new project appears soon)
GONE_GRACE = 86400.0  # a page we have outlives an upstream 404 this long (mirrors mid-sync)
STATES_KEPT = 4096  # page states a worker keeps parsed in memory
MODEL_FILES_KEPT = 50_000  # files of the page models a worker keeps loaded (file lookups)
# What serving a stale copy answers for: the upstream failed, or our disk or catalog did.
_REFRESH_FAULTS = (UpstreamError, StorageError, Busy)


class Pages:
    def __init__(self, settings, cachedir, catalog, upstream, local=None):
        self.settings, self.cachedir, self.catalog = settings, cachedir, catalog
        self.refresher = Refresher(settings, cachedir, catalog, upstream, local)
        self.local = local  # the uploads (pypicache/uploads.py): a page of them is current, or not
        self._states: dict[str, tuple[tuple, dict]] = {}  # per worker: name -> (stat, state)
        # Per worker: names the upstream answered 404 for, and when. Not on disk, so a flood
        # of made-up names leaves nothing behind; at most PYPI_NEGATIVE_CACHE, oldest out first.
        self._missing: dict[str, float] = {}
        # Per worker: loaded models by (name, version), with their files by path (lookups of
        # files to download need them; pypicache/listings.py), at most MODEL_FILES_KEPT files.
        self._models: OrderedDict[tuple[str, str], tuple[Project, dict[str, File]]] = OrderedDict()
        self._model_files = 0
        self.bodies = Bodies(settings, cachedir, self.refresher.record_size, self.model)

    def project(self, name: str, want: Body | None = None) -> Page:
        """A project's page; `want` is the body a refresh makes at once."""
        return self._get(name, lambda old: self.refresher.project(name, old), want)

    def root(self) -> Page:
        return self._get(ROOT, lambda old: self.refresher.root(ROOT, old), None)

    def open(self, name: str, want: Body) -> tuple[Page, BinaryIO | bytes]:
        """A page and that body of it: an open file, or the bytes just made."""
        page, body, _ = self._open(name, want, exact=True)
        return page, body

    def serve(self, name: str, want: Body) -> tuple[Page, BinaryIO | bytes, Body]:
        """A page, a body of it for a client that asked for `want`, and which body that is:
        `want`, or on a miss the same uncompressed (pypicache/pagebodies.py)."""
        return self._open(name, want, exact=False)

    def _open(self, name: str, want: Body, exact: bool) -> tuple[Page, BinaryIO | bytes, Body]:
        if name == ROOT:  # written whole by its refresh, with relative links only
            want = Body(want.fmt, want.compressed)
        for _ in range(3):  # evicted between the state and the body: fetched again
            page = self.root() if name == ROOT else self.project(name, want)
            try:
                if page.document is not None and not exact:
                    return page, *self.bodies.first(page, want)
                return page, self.body(page, want), want
            except PageGone:
                self._states.pop(name, None)
        raise StorageError(f"the cached page of {name} keeps disappearing")

    # --- freshness and single-flight -----------------------------------------------------
    def _state(self, name: str) -> tuple[dict, float] | None:
        """(state, age): one stat per warm request; the file is re-read only when it changed
        (it is replaced atomically, and touched when revalidated). A state of an older
        format (an earlier release's cache) counts as none: the page is fetched anew."""
        path = self.cachedir.pages / name / "state.json"
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
        if known[1].get("format") != STATE_FORMAT:
            return None
        return known[1], time.time() - stat.st_mtime

    def _answer(self, name: str, state: tuple[dict, float], cache: str) -> Page:
        data, age = state
        return Page(name, self.cachedir.pages / name, data["version"], cache, age)

    def _known_missing(self, name: str) -> bool:
        seen = self._missing.get(name)
        return seen is not None and time.monotonic() - seen < NEGATIVE_TTL

    def _remember_missing(self, name: str) -> None:
        self._missing.pop(name, None)
        while len(self._missing) >= self.settings.negative_cache:
            del self._missing[next(iter(self._missing))]  # the oldest (dicts keep order)
        self._missing[name] = time.monotonic()

    def _fresh(self, name: str, state) -> bool:
        """Within the TTL, and made from the uploads' current list if there is one: an
        upload (or a yank) shows on the next page read, on every node."""
        if state[1] >= self.settings.index_ttl:
            return False
        if self.local is None or name == ROOT:
            return True
        return state[0].get("local") == local_token(self.settings, self.local, name)

    def _get(self, name: str, refresh: Callable[[dict | None], Refreshed],
             want: Body | None) -> Page:
        state = self._state(name)
        if state and self._fresh(name, state):
            return self._answer(name, state, "hit")
        if state is None and self._known_missing(name) and not (
                name != ROOT and local_token(self.settings, self.local, name)):
            raise NotFound(f"no project named {name!r} upstream")
        lock = lock_name(name)
        if state is not None:
            # A copy to serve: whoever holds the lock is refreshing it, and we answer with the
            # old one rather than wait. If we get the lock we keep it for our own refresh:
            # letting go and waiting for it again let another worker's slow refresh in between.
            fd = self.cachedir.try_lock(lock)
            if fd is None:
                return self._answer(name, state, "updating")
            try:
                return self._refresh(name, refresh, want)
            finally:
                self.cachedir.unlock(lock, fd)
        # Nothing to serve meanwhile: wait as long as the leader's own wait for headers, and
        # longer while its body arrives (it touches the lock at each chunk).
        with self.cachedir.lock(lock, timeout=self.settings.connect_timeout
                             + self.settings.read_timeout):
            return self._refresh(name, refresh, want)

    def _refresh(self, name: str, refresh, want: Body | None) -> Page:
        """Under the page's lock: the page fetched anew, or the old copy if that fails."""
        state = self._state(name)
        if state and self._fresh(name, state):
            return self._answer(name, state, "hit")
        try:
            cache, document = refresh(state[0] if state else None)
        except NotFound:
            # A page of uploads whose last file was deleted is not kept through the grace.
            if state and state[0].get("upstream") != ORIGIN and self._gone_lately(name, state[0]):
                log.warning("upstream has no page for %s; serving the cached one", name)
                return self._answer(name, state, "stale")
            self.forget(name)
            self._remember_missing(name)
            raise
        except _REFRESH_FAULTS as error:
            if state:
                log.warning("serving a stale page for %s: %s", name, error.message)
                return self._answer(name, state, "stale")
            raise
        page = self._answer(name, self._state(name), cache)
        page.document = document  # a miss: this request's answer is made from it (Pages.serve)
        return page

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
            path = self.cachedir.pages / name / "state.json"
            validated = path.stat()
            self.cachedir.write_json(path, data | {"gone_since": now})
            os.utime(path, ns=(validated.st_atime_ns, validated.st_mtime_ns))
        return True

    def forget(self, name: str) -> None:
        """Drop a page from the disk (its lock held, or its project gone upstream)."""
        shutil.rmtree(self.cachedir.pages / name, ignore_errors=True)
        self._states.pop(name, None)
        self.catalog.record_page(name, 0)

    def upstream_of(self, name: str) -> str | None:
        """The name of the upstream a project's cached page came from (None: none cached)."""
        state = self._state(name)
        return state[0].get("upstream") if state else None

    # --- bodies and models ---------------------------------------------------------------
    def body(self, page: Page, want: Body) -> BinaryIO | bytes:
        """The body as a file when it is on disk; else made, kept, and returned as bytes."""
        return self.bodies.get(page, want)

    def find(self, name: str, path: str) -> File | None:
        """A file of a project's cached page (however old the page), or None: from the page
        when this worker has it loaded, else by a search of its bytes for the file's link."""
        state = self._state(name)
        if state is None:
            return None
        page = self._answer(name, state, "hit")
        loaded = self._models.get((name, page.version))
        if loaded is not None:
            return loaded[1].get(path)
        try:
            return find_file(page.path(Body()).read_bytes(), path)
        except (OSError, ValueError):
            return None

    def document(self, name: str) -> bytes | None:
        """Our document of a project's cached page (however old the page; None: none)."""
        state = self._state(name)
        if state is None:
            return None
        try:
            return self._answer(name, state, "hit").path(Body()).read_bytes()
        except OSError:
            return None

    def model(self, page: Page) -> Project:
        """The page model of a version of a cached page (loaded once per worker)."""
        return self._load(page)[0]

    def _load(self, page: Page) -> tuple[Project, dict[str, File]]:
        key = (page.name, page.version)
        loaded = self._models.get(key)
        if loaded is not None:
            self._models.move_to_end(key)
            return loaded
        try:  # a miss's document is still in memory: not read back from disk
            document = page.document
            if document is None:
                document = page.path(Body()).read_bytes()
            project = project_of(json.loads(document))
        except (OSError, ValueError):
            raise PageGone(page.name) from None
        loaded = self._models[key] = (project, {f.path: f for f in project.files})
        self._model_files += len(project.files)
        while self._model_files > MODEL_FILES_KEPT and len(self._models) > 1:
            _, (old, _) = self._models.popitem(last=False)
            self._model_files -= len(old.files)
        return loaded
