"""Index pages fetched anew: the upstream that has the project (of several, in order), its
page rendered into new versioned bodies, and state.json switched to them in one rename."""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import logging
import os
from typing import Callable, Iterator

from . import index, indexes, parsing, render
from .encoding import ACCEPT_ENCODING
from .errors import NotFound
from .store import key

log = logging.getLogger(__name__)
MAX_ROOT = 1 << 30  # the root list is tens of MB; decoded past this it is a bomb or a fault
UPSTREAM_ACCEPT = f"{render.V1_JSON}, {render.V1_HTML};q=0.2, {render.HTML};q=0.1"
# HTML first: the root list streams well as lines; JSON is parsed by the same regex.
ROOT_ACCEPT = f"{render.HTML}, {render.V1_JSON};q=0.5"


def lock_name(name: str) -> str:
    """The lock one worker holds while it refreshes a page (the others serve the old one)."""
    return "page:" + name


class Refresher:
    """Fetches a page from the upstream and writes it to disk; each refresh returns how the
    page was answered: "miss" (rendered anew) or "revalidated" (the upstream's 304)."""

    def __init__(self, settings, store, catalog, upstream, forget: Callable[[str], None]):
        self.settings, self.store, self.catalog, self.upstream = settings, store, catalog, upstream
        self.forget = forget  # drops a cached page whose hashes the catalog let go
        self.linkers = {up.name: index.Linker(up.files_url, up.prefix) for up in settings.indexes}
        self.parser = parsing.Parser()

    def project(self, name: str, old: dict | None) -> str:
        """Fetch a project's page anew (revalidated with the ETag of `old`, its last state)."""
        if old and old.get("metadata_known", 0) < self.catalog.metadata_known(name):
            # metadata hashes learnt since the render: render anew (no ETag, so no 304)
            old = {k: v for k, v in old.items() if k != "upstream_etag"}
        up, response = self._ask(name, old)
        if self._revalidated(name, response, old):
            return "revalidated"
        body = bytearray()
        for chunk in self.upstream.iter_decoded(response, self.settings.max_page_size):
            body += chunk
            self.store.touch_lock(lock_name(name))  # progress: waiters keep waiting
        content_type = response.headers.get("Content-Type", "text/html")
        linker = self.linkers[up.name]
        project = self.parser.parse(bytes(body), content_type, response.url, name, linker)
        project = index.with_core_metadata(project, self.catalog.expect(project))
        for forgotten in self.catalog.prune_expected(name):
            self.forget(forgotten)  # its hashes are gone: fetch it again when asked
        bodies = {
            "html": render.project_html(project).encode(),
            "json": render.project_json(project).encode(),
        }
        etags = {fmt: _etag(hashlib.sha256(data)) for fmt, data in bodies.items()}
        version = _version(etags)
        directory = self.store.pages / name
        for fmt, data in bodies.items():
            self.store.write_atomic(directory / f"{version}.{fmt}", data)
            packed = gzip.compress(data, 6, mtime=0)
            self.store.write_atomic(directory / f"{version}.{fmt}.gz", packed)
        self._write_state(name, response, etags, version, old, upstream=up.name,
                          metadata_known=self.catalog.metadata_known(name))
        return "miss"

    def root(self, name: str, old: dict | None) -> str:
        """Fetch the root list anew: one upstream's, or the union of several."""
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
                plain, packed = (self.store.new_temp(key(f"{name}.{fmt}{gz}"))
                                 for gz in ("", ".gz"))
                temps += [(plain[1], fmt), (packed[1], f"{fmt}.gz")]
                outputs[fmt] = cleanup.enter_context(_Tee(plain[0], packed[0]))
                cleanup.callback(plain[1].unlink, missing_ok=True)
                cleanup.callback(packed[1].unlink, missing_ok=True)
            count = render.write_root(names, outputs["html"], outputs["json"])
            etags = {fmt: _etag(out.digest) for fmt, out in outputs.items()}
            for out in outputs.values():
                out.close()
            version = _version(etags)
            for temp, suffix in temps:
                self.store.publish(temp, directory / f"{version}.{suffix}")
        log.info("root list refreshed: %d projects", count)
        self._write_state(name, response, etags, version, old)
        return "miss"

    def _ask(self, name: str, old: dict | None):
        """(upstream, response) of the first upstream in order that has the project.

        The next upstream is asked only after a 404: an upstream that fails raises here, so
        an outage never hands its projects to a later upstream (dependency confusion).
        """
        for up in indexes.candidates(self.settings, name):
            # The upstream the old page came from gets its ETag; its 404 ends the walk too,
            # so that the grace of a page gone upstream (Pages._gone_lately) applies to it.
            owner = bool(old) and old.get("status") == 200 and old.get("upstream", "") == up.name
            try:
                return up, self._fetch(f"{up.url}/{name}/", old if owner else None, UPSTREAM_ACCEPT)
            except NotFound:
                if owner:
                    raise
        raise NotFound(f"no project named {name!r} upstream")

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


def _etag(digest) -> str:
    """A page body's ETag, from the sha256 of its bytes."""
    return f'"{digest.hexdigest()[:32]}"'


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
