"""Index pages cached on disk, rendered once per TTL and shared by every worker.

A project page is fetched from the upstream (JSON preferred, HTML parsed otherwise), turned
into the page model, and rendered once into HTML and JSON (and their gzip), so that a warm
request only sends a file. After the TTL one worker revalidates with the upstream's ETag while
the others keep serving the old copy; if the upstream fails, the old copy is served as stale.
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from . import index, indexes, parsing, render
from .encoding import ACCEPT_ENCODING
from .errors import NotFound, UpstreamError
from .store import key

log = logging.getLogger(__name__)
NEGATIVE_TTL = 60.0  # an upstream 404 is remembered this long (a new project appears soon)
GONE_GRACE = 86400.0  # a page we have outlives an upstream 404 this long (mirrors mid-sync)
MAX_ROOT = 1 << 30  # the root list is tens of MB; decoded past this it is a bomb or a fault
STATES_KEPT = 4096  # page states a worker keeps parsed in memory
ROOT = "_root"  # not a project name: those start with a letter or digit
UPSTREAM_ACCEPT = f"{render.V1_JSON}, {render.V1_HTML};q=0.2, {render.HTML};q=0.1"
# HTML first: the root list streams well as lines; JSON is parsed by the same regex.
ROOT_ACCEPT = f"{render.HTML}, {render.V1_JSON};q=0.5"


@dataclass
class Page:
    directory: Path
    etags: dict[str, str]
    cache: str  # hit, miss, revalidated, stale, updating
    age: float

    version: str = "page"  # the bodies' name stem: a refresh writes new names (see _bodies)

    def body(self, fmt: str, compressed: bool) -> Path:
        return self.directory / (f"{self.version}.{fmt}.gz" if compressed else f"{self.version}.{fmt}")


class Pages:
    def __init__(self, settings, store, catalog, upstream):
        self.settings, self.store, self.catalog, self.upstream = settings, store, catalog, upstream
        self.linkers = {up.name: index.Linker(up.files_url, up.prefix) for up in settings.indexes}
        self.parser = parsing.Parser()
        self._states: dict[str, tuple[tuple, dict]] = {}  # per worker: name -> (stat, state)
        # Per worker: names the upstream answered 404 for, and when. Not on disk, so a flood
        # of made-up names leaves nothing behind; at most PYPI_NEGATIVE_CACHE, oldest out first.
        self._missing: dict[str, float] = {}

    def project(self, name: str) -> Page:
        return self._get(name, self._refresh_project)

    def root(self) -> Page:
        return self._get(ROOT, self._refresh_root)

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

    def _get(self, name: str, refresh: Callable[[str, dict | None], None]) -> Page:
        state = self._state(name)
        if state and self._fresh(state):
            return self._answer(name, state, "hit")
        if state is None and self._known_missing(name):
            raise NotFound(f"no project named {name!r} upstream")
        lock = "page:" + name
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

    # --- refreshing ----------------------------------------------------------------------
    def _fetch(self, url: str, old: dict | None, accept: str):
        headers = {"Accept": accept, "Accept-Encoding": ACCEPT_ENCODING}
        if old and old.get("status") == 200 and old.get("upstream_etag"):
            headers["If-None-Match"] = old["upstream_etag"]
        return self.upstream.get(url, headers=headers)

    def _revalidated(self, name: str, response, old: dict | None) -> bool:
        if response.status_code != 304:
            return False
        response.close()
        path = self.store.pages / name / "state.json"
        if old and "gone_since" in old:  # the upstream has the page again
            self.store.write_json(path, {k: v for k, v in old.items() if k != "gone_since"})
        else:
            os.utime(path)
        return True

    def _ask(self, name: str, old: dict | None):
        """(upstream, response) of the first upstream in order that has the project.

        The next upstream is asked only after a 404: an upstream that fails raises here, so
        an outage never hands its projects to a later upstream (dependency confusion).
        """
        for up in indexes.candidates(self.settings, name):
            # The upstream the old page came from gets its ETag; its 404 ends the walk too,
            # so that the grace of a page gone upstream (_gone_lately) applies to it.
            owner = bool(old) and old.get("status") == 200 and old.get("upstream", "") == up.name
            try:
                return up, self._fetch(f"{up.url}/{name}/", old if owner else None, UPSTREAM_ACCEPT)
            except NotFound:
                if owner:
                    raise
        raise NotFound(f"no project named {name!r} upstream")

    def _refresh_project(self, name: str, old: dict | None) -> str:
        if old and old.get("metadata_known", 0) < self.catalog.metadata_known(name):
            # metadata hashes learnt since the render: render anew (no ETag, so no 304)
            old = {k: v for k, v in old.items() if k != "upstream_etag"}
        up, response = self._ask(name, old)
        if self._revalidated(name, response, old):
            return "revalidated"
        body = bytearray()
        for chunk in self.upstream.iter_decoded(response, self.settings.max_page_size):
            body += chunk
            self.store.touch_lock("page:" + name)  # progress: waiters keep waiting
        content_type = response.headers.get("Content-Type", "text/html")
        project = self.parser.parse(bytes(body), content_type, response.url, name, self.linkers[up.name])
        project = index.with_core_metadata(project, self.catalog.expect(project))
        for forgotten in self.catalog.prune_expected(name):
            self._forget_page(forgotten)  # its hashes are gone: fetch it again when asked
        bodies = {
            "html": render.project_html(project).encode(),
            "json": render.project_json(project).encode(),
        }
        etags = {fmt: '"' + hashlib.sha256(data).hexdigest()[:32] + '"' for fmt, data in bodies.items()}
        version = _version(etags)
        directory = self.store.pages / name
        for fmt, data in bodies.items():
            self.store.write_atomic(directory / f"{version}.{fmt}", data)
            self.store.write_atomic(directory / f"{version}.{fmt}.gz", gzip.compress(data, 6, mtime=0))
        self._write_state(name, response, etags, version, old, upstream=up.name,
                          metadata_known=self.catalog.metadata_known(name))
        return "miss"

    def _write_state(self, name: str, response, etags: dict[str, str], version: str,
                     old: dict | None, **more) -> None:
        """Switch readers to the new bodies in one rename, then drop all but the last two
        versions (a reader that has just read the old state may still open the old ones)."""
        etag = response.headers.get("ETag") if response is not None else None
        state = {"status": 200, "etags": etags, "upstream_etag": etag, "version": version, **more}
        directory = self.store.pages / name
        self.store.write_json(directory / "state.json", state)
        keep = {"state", version, (old or {}).get("version", "page")}
        for entry in directory.iterdir():
            if entry.name.split(".", 1)[0] not in keep:
                entry.unlink(missing_ok=True)

    def _forget_page(self, name: str) -> None:
        shutil.rmtree(self.store.pages / name, ignore_errors=True)
        self._states.pop(name, None)

    def upstream_of(self, name: str) -> str | None:
        """The name of the upstream a project's cached page came from (None: none cached)."""
        state = self._state(name)
        return state[0].get("upstream") if state and state[0]["status"] == 200 else None

    def _refresh_root(self, name: str, old: dict | None) -> str:
        response = None
        if len(self.settings.indexes) == 1:
            response = self._fetch(self.settings.indexes[0].url + "/", old, ROOT_ACCEPT)
            if self._revalidated(name, response, old):
                return "revalidated"
            names = self._root_names(response)
        else:
            names = self._union()
        directory = self.store.pages / name
        with contextlib.ExitStack() as cleanup:
            outputs, temps = {}, []
            for fmt in ("html", "json"):
                plain, packed = (self.store.new_temp(key(f"{name}.{fmt}{gz}")) for gz in ("", ".gz"))
                temps += [(plain[1], fmt), (packed[1], f"{fmt}.gz")]
                outputs[fmt] = cleanup.enter_context(_Tee(plain[0], packed[0]))
                cleanup.callback(plain[1].unlink, missing_ok=True)
                cleanup.callback(packed[1].unlink, missing_ok=True)
            count = render.write_root(names, outputs["html"], outputs["json"])
            etags = {fmt: f'"{out.digest.hexdigest()[:32]}"' for fmt, out in outputs.items()}
            for out in outputs.values():
                out.close()
            version = _version(etags)
            for temp, suffix in temps:
                self.store.publish(temp, directory / f"{version}.{suffix}")
        log.info("root list refreshed: %d projects", count)
        self._write_state(name, response, etags, version, old)
        return "miss"

    def _root_names(self, response) -> Iterator[str]:
        chunks = self.upstream.iter_decoded(response, MAX_ROOT)
        return index.iter_root_names(chunks, response.headers.get("Content-Type", ""))

    def _union(self) -> Iterator[str]:
        """Every upstream's project names, each once. The names of all upstreams but the last
        are kept in a set to skip repeats; the last (the public index, as a rule: the big one)
        is only streamed, so the union costs no more memory than the smaller lists."""
        seen: set[str] = set()
        last = self.settings.indexes[-1]
        for up in self.settings.indexes:
            for project in self._root_names(self._fetch(up.url + "/", None, ROOT_ACCEPT)):
                if project not in seen:
                    if up is not last:
                        seen.add(project)
                    yield project


def _version(etags: dict[str, str]) -> str:
    """The name stem of a page's bodies: new bodies get new names, so that a refresh never
    rewrites a file a reader of the current state.json may open."""
    return "v" + hashlib.sha256("".join(sorted(etags.values())).encode()).hexdigest()[:16]


class _Tee:
    """Writes text to a plain and a gzip file at once, hashing it for the ETag."""

    def __init__(self, plain_fd: int, packed_fd: int):
        self.plain = open(plain_fd, "wb")
        self.raw = open(packed_fd, "wb")
        self.packed = gzip.GzipFile(fileobj=self.raw, mode="wb", compresslevel=6, mtime=0)
        self.digest = hashlib.sha256()

    def write(self, text: str) -> None:
        data = text.encode()
        self.plain.write(data)
        self.packed.write(data)
        self.digest.update(data)

    def close(self) -> None:
        for stream in (self.plain, self.packed, self.raw):
            stream.close()

    def __enter__(self) -> "_Tee":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
