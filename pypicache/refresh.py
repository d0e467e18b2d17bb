"""Index pages fetched anew: the upstream that has the project (of several, in order), our
document of its page written under a new version, and state.json switched to it in one rename."""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import logging
import os
import time
from typing import Iterator, NamedTuple

from . import pagereader, parsepool, render, upstreams
from .cachedir import key
from .encoding import ACCEPT_ENCODING
from .errors import NotFound
from .httpclient import RedirectedAway
from .pagestatus import PageStatus
from .uploads import ORIGIN

log = logging.getLogger(__name__)
STATE_FORMAT = 2  # state.json names our document of the page (v<version>.json): pagereader.py
RENDERING = "2"  # part of every version: a change to how pages render changes their ETags
MAX_ROOT = 1 << 30  # the root list is tens of MB; decoded past this it is a bomb or a fault
UPSTREAM_ACCEPT = f"{render.V1_JSON}, {render.V1_HTML};q=0.2, {render.HTML};q=0.1"
# HTML first: the root list streams well as lines; JSON is parsed by the same regex.
ROOT_ACCEPT = f"{render.HTML}, {render.V1_JSON};q=0.5"
# Seconds between two signs of progress of a page's download (its lock touched): a waiter
# gives up only after connect + read timeouts without one. Not per chunk: a syscall each.
PROGRESS = 0.25


class Refreshed(NamedTuple):
    """How a refresh answered: "miss" (fetched anew) or "revalidated" (the upstream's 304),
    and for a project page fetched anew our document of it (its answer is made from it)."""

    cache: str
    document: bytes | None = None


def local_token(settings, local, name: str) -> str | None:
    """The version of a project's uploaded files (None: none, or no local index, or the
    project is pinned to an upstream by PYPI_INDEX_PINS, which wins over uploads)."""
    if local is None or name in settings.index_pins:
        return None
    return local.token(name)


def lock_name(name: str) -> str:
    """The lock one worker holds while it refreshes a page (the others serve the old one)."""
    return "page:" + name


class Refresher:
    """Fetches a page from the upstream and writes it to disk (each refresh: Refreshed)."""

    def __init__(self, settings, cachedir, catalog, upstream, local=None):
        self.settings, self.cachedir, self.catalog = settings, cachedir, catalog
        self.upstream, self.local = upstream, local  # local: the uploads (pypicache/uploads.py)
        self.linkers = {up.name: pagereader.Linker(up.files_url, up.prefix)
                        for up in settings.indexes}
        self.parser = parsepool.Parser()
        # Upload times from PYPI_UPLOAD_TIME_SOURCE, PEP 792's quarantine (pypicache/pagestatus.py).
        self.status = PageStatus(settings, cachedir, catalog, upstream)
        self._redirected: set[str] = set()  # projects whose redirect away was logged

    def project(self, name: str, old: dict | None) -> Refreshed:
        """Fetch a project's page anew (revalidated with the ETag of `old`, its last state).
        A project with uploaded files is the local index's, whatever the upstreams have."""
        token = local_token(self.settings, self.local, name)
        if token is not None and (body := self.local.document(name)) is not None:
            version = _version(body)
            self.cachedir.write_atomic(self.cachedir.pages / name / f"{version}.json", body)
            self._write_state(name, None, version, old, upstream=ORIGIN, local=token)
            return Refreshed("miss", body)
        if old and old.get("local") != token:  # its uploads went: the upstream's page anew
            old = {k: v for k, v in old.items() if k != "upstream_etag"}
        # The sha256 of each wheel's .metadata the proxy served (the upstream's, or extracted
        # from the wheel): a page advertises them (PEP 658), so when there are more than the
        # page was written with, it is written anew (no ETag, so no 304).
        metadata = self.catalog.metadata_hashes(name)
        if old and (old.get("metadata_known", 0) < len(metadata) or self.status.fetch_anew(old)):
            old = {k: v for k, v in old.items() if k != "upstream_etag"}
        up, response = self._ask(name, old)
        if self._revalidated(name, response, old):
            return Refreshed("revalidated")
        chunks, shown = [], 0.0
        for chunk in self.upstream.iter_decoded(response, self.settings.max_page_size):
            chunks.append(chunk)
            if time.monotonic() - shown > PROGRESS:  # waiters keep waiting
                self.cachedir.touch_lock(lock_name(name))
                shown = time.monotonic()
        content_type = response.headers.get("Content-Type", "text/html")
        earlier = self.cachedir.pages / name / f"{old['version']}.json" if old else None
        body, misfiled = self.parser.document(b"".join(chunks), content_type, response.url,
                                              name, self.linkers[up.name], metadata, earlier)
        self.catalog.record_listed(name, misfiled)
        amended = self.status.amend(name, body, earlier)
        body = amended.body
        version = _version(body)
        self.cachedir.write_atomic(self.cachedir.pages / name / f"{version}.json", body)
        self._write_state(name, response, version, old, upstream=up.name,
                          metadata_known=len(metadata), local=token, **amended.state)
        self.status.settle(name, amended)
        return Refreshed("miss", body)

    def root(self, name: str, old: dict | None) -> Refreshed:
        """Fetch the root list anew: one upstream's, or the union of several."""
        response = None
        if len(self.settings.indexes) == 1:
            response = self._fetch(self.settings.indexes[0].url + "/", old, ROOT_ACCEPT)
            if self._revalidated(name, response, old):
                return Refreshed("revalidated")
            names = self._root_names(response)
        else:
            names = self._union()
        if self.local is not None:  # the uploads' projects first, each once
            names = _first(self.local.projects(), names)
        directory = self.cachedir.pages / name
        with contextlib.ExitStack() as cleanup:
            outputs, temps = {}, []
            for fmt in ("html", "json"):
                plain, packed = (self.cachedir.new_temp(key(f"{name}.{fmt}{gz}"))
                                 for gz in ("", ".gz"))
                temps += [(plain[1], fmt), (packed[1], f"{fmt}.gz")]
                outputs[fmt] = cleanup.enter_context(_Tee(plain[0], packed[0]))
                cleanup.callback(plain[1].unlink, missing_ok=True)
                cleanup.callback(packed[1].unlink, missing_ok=True)
            count = render.write_root(names, outputs["html"], outputs["json"])
            for out in outputs.values():
                out.close()
            digests = sorted(out.digest.hexdigest() for out in outputs.values())
            version = "v" + hashlib.sha256("".join(digests).encode()).hexdigest()[:16]
            for temp, suffix in temps:
                self.cachedir.publish(temp, directory / f"{version}.{suffix}")
        log.info("root list refreshed: %d projects", count)
        self._write_state(name, response, version, old)
        return Refreshed("miss")

    def _ask(self, name: str, old: dict | None):
        """(upstream, response) of the first upstream in order that has the project.

        The next upstream is asked only after a 404 (or a redirect off the configured origins,
        below): an upstream that fails raises here, so an outage never hands its projects to a
        later upstream (dependency confusion).
        """
        for up in upstreams.candidates(self.settings, name):
            # The upstream the old page came from gets its ETag; its 404 ends the walk too,
            # so that the grace of a page gone upstream (Pages._gone_lately) applies to it.
            owner = bool(old) and old.get("upstream", "") == up.name
            try:
                return up, self._fetch(f"{up.url}/{name}/", old if owner else None, UPSTREAM_ACCEPT)
            except RedirectedAway:
                # An index that sends the projects it lacks elsewhere (pypiserver's default
                # fallback redirects them to the public index) has said "not here": ask the
                # next upstream, as after a 404. Files never follow such a redirect.
                self._log_redirect(up.name, name)
                if owner:
                    raise NotFound(f"no project named {name!r} upstream") from None
            except NotFound:
                if owner:
                    raise
        raise NotFound(f"no project named {name!r} upstream")

    def _log_redirect(self, upstream: str, project: str) -> None:
        """Once per project and worker (a flood of names must not flood the log)."""
        if project in self._redirected:
            return
        if len(self._redirected) >= 10000:
            self._redirected.clear()
        self._redirected.add(project)
        log.info("upstream %s redirected %s off the configured upstreams: taken as not there",
                 upstream or "(the one)", project)

    def _fetch(self, url: str, old: dict | None, accept: str):
        headers = {"Accept": accept, "Accept-Encoding": ACCEPT_ENCODING}
        if old and old.get("upstream_etag"):
            headers["If-None-Match"] = old["upstream_etag"]
        return self.upstream.get(url, headers=headers)

    def _revalidated(self, name: str, response, old: dict | None) -> bool:
        if response.status_code != 304:
            return False
        response.close()
        path = self.cachedir.pages / name / "state.json"
        if old and "gone_since" in old:  # the upstream has the page again
            self.cachedir.write_json(path, {k: v for k, v in old.items() if k != "gone_since"})
        else:
            os.utime(path)
        return True

    def _write_state(self, name: str, response, version: str, old: dict | None, **more) -> None:
        """Switch readers to the new version in one rename, then drop all but the last two
        versions (a reader that has just read the old state may still open the old ones)."""
        etag = response.headers.get("ETag") if response is not None else None
        state = {"format": STATE_FORMAT, "status": 200, "upstream_etag": etag,
                 "version": version, **more}
        directory = self.cachedir.pages / name
        self.cachedir.write_json(directory / "state.json", state)
        keep = {"state", version, (old or {}).get("version")}
        for entry in directory.iterdir():
            if entry.name.split(".", 1)[0] not in keep:
                entry.unlink(missing_ok=True)
        self.record_size(name)

    def record_size(self, name: str) -> None:
        """The page's bytes on disk, for the disk use and the size cap (written with the next
        statistics flush, as the rows of files are)."""
        total = 0
        for entry in os.scandir(self.cachedir.pages / name):
            try:
                total += entry.stat().st_size
            except FileNotFoundError:  # an old version removed meanwhile
                pass
        self.catalog.record_page(name, total)

    def _root_names(self, response) -> Iterator[str]:
        chunks = self.upstream.iter_decoded(response, MAX_ROOT)
        return pagereader.iter_root_names(chunks, response.headers.get("Content-Type", ""))

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


def _version(document: bytes) -> str:
    """The version a document is kept under: a digest of it (and of how pages render)."""
    digest = hashlib.sha256(RENDERING.encode())
    digest.update(document)  # not hashed as one concatenation: a copy of a page of megabytes
    return "v" + digest.hexdigest()[:16]


def _first(first: list[str], rest: Iterator[str]) -> Iterator[str]:
    """The names of `first`, then those of `rest` not among them (`first` is small)."""
    known = set(first)
    yield from first
    yield from (name for name in rest if name not in known)


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
