"""PEP 792's `quarantined` acted on: "the index MUST NOT offer any distributions of the
project for download". A project its upstream marks so has no files in our document (so on
none of our pages, in either format, and no download finds it listed, also while the page is
served stale), its cached files and their `.metadata` are removed from the cache (this
node's directory and the bucket), and a request for one is a 404.

A 404, not the policy's 403: the refusal is not this index's rule but the upstream's state,
in which the file is not offered at all (a page that lists no file, as the PEP's examples
show); a 404 is what this index answers for any file no page lists, and what a client gets
once the file is gone. The other statuses (`archived`, `deprecated`) change nothing for an
index serving downloads and are carried through as they are (pypicache/pagereader.py,
pypicache/render.py).

Removed at the refresh that first sees the status: the files the earlier version of the
page listed, and those the catalog knows for the project. A project so seen is also marked
(an empty file under quarantine/ in the cache), and every worker looks at the marks at most
once a second, so that a file that comes back anyway (a download already under way as the
status came, a node that had not yet read the page put it in the bucket) is refused and
removed as soon as it is asked for. The mark goes when a new version of the page no longer
says `quarantined`; when the upstream cannot be asked the last page stands.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

from . import names
from .errors import NotFound, UpstreamTimeout
from .pagemodel import entry_path

log = logging.getLogger(__name__)
QUARANTINED = "quarantined"
MARKS = "quarantine"  # under the cache root: one empty file per project, named by its name
LOOK_EVERY = 1.0  # seconds between two looks of a worker at the marks
METADATA = ".metadata"


def without_files(body: bytes) -> tuple[bytes, list[str]] | None:
    """Our document (its bytes) of a quarantined project without its files, and the paths
    it listed; None when the project is not quarantined (a search, not a parse, for most)."""
    if b'"' + QUARANTINED.encode() + b'"' not in body:
        return None
    data = json.loads(body)
    status = data.get("project-status")
    if not isinstance(status, dict) or status.get("status") != QUARANTINED:
        return None
    paths = [entry_path(entry) for entry in data["files"]]
    # `versions` stays as the upstream gave it, as in the PEP's example: no file to go with any.
    data["files"] = []
    return json.dumps(data, separators=(",", ":")).encode(), paths


class Quarantine:
    """The marks and the removals; `stores` are where published files live (this node's
    directory, and the bucket when there is one: pypicache/__init__.py adds it)."""

    def __init__(self, cachedir, catalog, wait: float = 40.0):
        self.cachedir, self.catalog = cachedir, catalog
        self.stores = [cachedir.storage]
        self.directory: Path = cachedir.root / MARKS
        self.wait = wait  # for a download under way, before its file is removed
        self._names: frozenset[str] = frozenset()
        self._signature: int | None = None
        self._looked = float("-inf")

    # --- the marks -------------------------------------------------------------------------
    def marked(self) -> frozenset[str]:
        """The projects marked quarantined, as this worker last looked (at most a second ago)."""
        now = time.monotonic()
        if now - self._looked >= LOOK_EVERY:
            self._looked = now
            try:
                signature = os.stat(self.directory).st_mtime_ns
            except OSError:
                signature = None
            if signature != self._signature:
                try:
                    self._names = frozenset(os.listdir(self.directory))
                except OSError:
                    self._names = frozenset()
                self._signature = signature
        return self._names

    def mark(self, name: str, quarantined: bool) -> None:
        """Said by a new version of the project's page (name: canonical, a safe file name)."""
        mark = self.directory / name
        if quarantined:
            if not mark.exists():
                self.directory.mkdir(parents=True, exist_ok=True)
                mark.touch()
            self._names = self._names | {name}
        elif name in self.marked() or mark.exists():
            mark.unlink(missing_ok=True)
            self._names = self._names - {name}

    def check(self, path: str) -> str | None:
        """The project of a file path when it is marked quarantined; None to go on (one
        comparison while no project is marked)."""
        marked = self.marked()
        if not marked:
            return None
        project = names.project_of_file(path.removesuffix(METADATA))
        return project if project in marked else None

    def refuse(self, project: str, path: str) -> NotFound:
        """The answer to a request for a file of a quarantined project, which is removed."""
        distribution = path.removesuffix(METADATA)
        self.remove(project, [distribution])
        log.warning("refused %s: the upstream marks %s quarantined (PEP 792)",
                    names.filename(path), project)
        return NotFound(f"{names.filename(path)} is not offered: the upstream marks the "
                        f"project {project} quarantined (PEP 792)")

    # --- removals --------------------------------------------------------------------------
    def remove(self, project: str, listed: list[str]) -> None:
        """Remove the files (and their `.metadata`) of a quarantined project: `listed`, and
        those the catalog knows for it. A file being downloaded is removed once its download
        has published it and let go of its lock, in a thread of its own."""
        paths = set(listed) | {row[0] for row in self.catalog.files(project)}
        paths |= {path + METADATA for path in paths if not path.endswith(METADATA)}
        for store in self.stores[1:]:  # the bucket: a thousand keys a request
            store.delete_files(sorted(paths))
        busy = []
        for path in sorted(paths):
            # Neither published nor being downloaded (announced: pypicache/fetch.py)? Nothing
            # to do, and no lock to take for each of a big page's thousands of files.
            if not (self.cachedir.file(path).exists()
                    or self.cachedir.announce_path(path).exists()):
                continue
            lock = self.cachedir.try_lock(path)
            if lock is None:
                busy.append(path)
                continue
            try:
                self._remove_one(project, path)
            finally:
                self.cachedir.unlock(path, lock)
        if busy:
            threading.Thread(target=self._remove_later, args=(project, busy), daemon=True,
                             name=f"quarantine {project}").start()

    def _remove_one(self, project: str, path: str) -> None:
        self.cachedir.storage.delete(path)
        self.catalog.forget(path, "quarantined")
        log.warning("removed %s from the cache: the upstream marks %s quarantined (PEP 792)",
                    names.filename(path), project)

    def _remove_later(self, project: str, paths: list[str]) -> None:
        for path in paths:
            try:
                with self.cachedir.lock(path, timeout=self.wait):
                    self._remove_one(project, path)
            except UpstreamTimeout:
                log.warning("%s of quarantined %s stayed locked: removed when next asked for",
                            names.filename(path), project)
            for store in self.stores[1:]:  # put there by the download that just ended
                store.delete_files([path])
