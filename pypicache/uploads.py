"""The local index of the team's own packages (PYPI_UPLOADS): uploaded files and each project's
list of them, kept in the storage the cache uses (the cache directory, or the bucket every node
shares), and the page document a project of it is served with.

A project with files here is never taken from an upstream (pypicache/refresh.py asks this index
first), unless PYPI_INDEX_PINS pins it to one. Files are immutable: a name that exists is
refused. Each project has a list its page is made from (pypicache/uploadlists.py), replaced whole:
on one node under the project's lock, and in the bucket only if its ETag is still the one
read (so nodes uploading to one project at once each add their file). A page knows it is
current by the list's token (its stat here, its ETag in the bucket: docs/DESIGN.md).
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from . import pagereader
from .cachedir import CacheDir
from .errors import NotFound, ProxyError
from .pagemodel import file_href
from .results import BucketFile, FileAnswer, Hit
from .storage import FileBlob, LocalStorage, Storage
from .uploadlists import INDEX, BucketShelf, LocalShelf, Shelf

# Under /packages/: a first segment no upstream of PYPI_INDEXES can be named (a '.'), and that
# the upstreams' own layouts (hash directories) never use.
PREFIX = "local.uploads/"
ORIGIN = "(uploads)"  # what a page's state says it came from: not an upstream's name
LOOK_EVERY = 1.0  # seconds a worker trusts its list of the bucket's projects
WRITE_TRIES = 20  # a list changed by another node meanwhile is read and written again


class Exists(ProxyError):
    """Files are immutable: a name that exists is refused."""

    status = 409


class Unavailable(ProxyError):
    """The storage of the local index cannot be read or written now."""

    status = 503


@dataclass
class Upload:
    """A checked upload (pypicache/uploadform.py): its file on disk, and what its entry says."""

    project: str  # canonical
    version: str
    filename: str
    temp: Path
    sha256: str
    size: int
    requires_python: str | None
    metadata: bytes | None  # a wheel's METADATA (PEP 658)


class LocalIndex:
    def __init__(self, cachedir: CacheDir, bucket: Any = None, wait: float = 30.0):
        self.cachedir, self.wait = cachedir, wait
        if bucket is None:
            self.storage: Storage = LocalStorage(cachedir.root / "uploads")
            self.shelf: Shelf = LocalShelf(cachedir, cachedir.root / "uploads")
        else:
            self.storage, self.shelf = bucket, BucketShelf(bucket)
        self.bucket = bucket
        self._known: dict[str, str] | None = None  # the bucket's lists: project -> ETag
        self._looked = 0.0
        self._lock = threading.Lock()

    # --- what pages ask ------------------------------------------------------------------
    def token(self, project: str) -> str | None:
        """The version of a project's list (None: no file here). Asked for every page: a stat
        on one node; with the bucket, its listing at most once a second per worker. A bucket
        that cannot be listed is Unavailable rather than "nothing here", so an outage never
        hands the team's project names to an upstream."""
        if self.bucket is None:
            return self.shelf.tag(project)  # type: ignore[attr-defined]
        with self._lock:
            if self._known is None or time.monotonic() - self._looked >= LOOK_EVERY:
                try:
                    self._known = self.shelf.tags()
                    self._looked = time.monotonic()
                except OSError as error:
                    if self._known is None:
                        raise Unavailable(f"the local index cannot be read: {error}") from None
            return self._known.get(project)

    def projects(self) -> list[str]:
        """The projects with files here (for the root list)."""
        try:
            return sorted(self.shelf.tags())
        except OSError:  # none yet, or the bucket is away: the root list goes without them
            return []

    def entries(self, project: str) -> tuple[list[dict], str | None]:
        """The project's list and its tag (an empty list and None: no list)."""
        try:
            found = self.shelf.read(project)
        except OSError as error:
            raise Unavailable(f"the local index cannot be read: {error}") from None
        if found is None:
            return [], None
        return json.loads(found[0])["files"], found[1]

    def document(self, project: str) -> bytes | None:
        """Our PEP 691 document of the project's page (None: no file here)."""
        entries, _ = self.entries(project)
        if not entries:
            return None
        files = []
        for entry in entries:
            item = {"filename": entry["filename"],
                    "url": file_href(PREFIX + f"{project}/{entry['filename']}"),
                    "hashes": {"sha256": entry["sha256"]}, "size": entry["size"],
                    "upload-time": entry["upload-time"]}
            if entry.get("requires-python"):
                item["requires-python"] = entry["requires-python"]
            if entry.get("yanked") is not None:
                item["yanked"] = entry["yanked"] or True
            if entry.get("metadata-sha256"):
                item["core-metadata"] = item["data-dist-info-metadata"] = {
                    "sha256": entry["metadata-sha256"]}
            files.append(item)
        versions = list(dict.fromkeys(entry["version"] for entry in entries))
        return pagereader.dump({"meta": {"api-version": "1.1"}, "name": project,
                                "versions": versions, "files": files})

    def open(self, path: str) -> FileAnswer:
        """A file of the local index (its path under /packages/), or NotFound."""
        try:
            if path.endswith("/" + INDEX):  # the list is served as the page, not as a file
                raise FileNotFoundError(path)
            blob = self.storage.get(path[len(PREFIX):])
        except FileNotFoundError:
            raise NotFound(f"no uploaded file {path.rsplit('/', 1)[-1]}") from None
        if isinstance(blob, FileBlob):
            return Hit(path, blob, cache="upload")
        answer = BucketFile(path, blob, None)
        answer.cache = "upload"
        return answer

    # --- what uploads and the command line change ----------------------------------------
    def add(self, upload: Upload) -> dict:
        """Publish a checked upload and list it; Exists when its name is taken."""
        base = f"{upload.project}/{upload.filename}"
        with self.cachedir.lock(f"upload:{upload.project}", timeout=self.wait):
            entries, _ = self.entries(upload.project)
            if any(entry["filename"] == upload.filename for entry in entries):
                raise Exists(f"{upload.filename} exists: files are immutable")
            if self.bucket is None and (self.storage.file(base)).exists():  # type: ignore[attr-defined]
                self.storage.delete(base)  # left by an upload killed before it was listed
            if upload.metadata is not None:
                metadata = upload.temp.with_suffix(".metadata")
                try:
                    self.cachedir.write_atomic(metadata, upload.metadata)
                    self._store(base + ".metadata", metadata)
                finally:
                    metadata.unlink(missing_ok=True)
            if not self._store(base, upload.temp) and not self._same(base, upload):
                raise Exists(f"{upload.filename} exists: files are immutable")
            entry = {"filename": upload.filename, "version": upload.version,
                     "sha256": upload.sha256, "size": upload.size,
                     "upload-time": _now(), "requires-python": upload.requires_python,
                     "metadata-sha256": _sha256(upload.metadata), "yanked": None}
            self._change(upload.project, lambda files: _added(files, entry))
        return entry

    def _same(self, path: str, upload: Upload) -> bool:
        """Whether the bucket's unlisted file at `path` has the upload's bytes: left by an
        upload cut off between its put and its list, it is then listed rather than refused."""
        try:
            blob = self.storage.get(path)
            digest = hashlib.sha256()
            try:
                for chunk in blob.chunks() if blob.size == upload.size else ():
                    digest.update(chunk)
            finally:
                blob.close()
        except FileNotFoundError:  # gone meanwhile, or the bucket is away
            return False
        return blob.size == upload.size and digest.hexdigest() == upload.sha256

    def _store(self, path: str, temp: Path) -> bool:
        try:
            return self.storage.store(path, temp)
        except OSError as error:
            raise Unavailable(f"the local index cannot keep {path}: {error}") from None

    def yank(self, project: str, version: str, reason: str | None) -> int:
        """Mark (reason given, "" for none) or unmark (None) a version's files (PEP 592)."""
        def change(files: list[dict]) -> list[dict]:
            return [f | {"yanked": reason} if _same(f["version"], version) else f for f in files]
        return self._count(project, version, change)

    def delete(self, project: str, version: str) -> int:
        """Remove a version's files from the list, then from the storage."""
        def change(files: list[dict]) -> list[dict]:
            return [f for f in files if not _same(f["version"], version)]
        gone = [f["filename"] for f in self.entries(project)[0] if _same(f["version"], version)]
        count = self._count(project, version, change)
        for filename in gone:
            self.storage.delete(f"{project}/{filename}")
            self.storage.delete(f"{project}/{filename}.metadata")
        with self.cachedir.lock(f"upload:{project}", timeout=self.wait):
            if count and not self.entries(project)[0]:  # its last: the upstreams may have it
                self.shelf.remove(project)
                self._known = None
        return count

    def _count(self, project: str, version: str, change) -> int:
        with self.cachedir.lock(f"upload:{project}", timeout=self.wait):
            count = sum(_same(f["version"], version) for f in self.entries(project)[0])
            if count:
                self._change(project, change)
            return count

    def _change(self, project: str, change) -> None:
        """Replace the project's list by change(list), if it is still the one read; read and
        change again when another node wrote it meanwhile."""
        for _ in range(WRITE_TRIES):
            entries, tag = self.entries(project)
            changed = change(entries)
            try:
                if self.shelf.write(project, json.dumps({"files": changed}).encode(), tag):
                    self._known = None  # this worker sees its own change at once
                    return
            except OSError as error:
                raise Unavailable(f"the local index cannot be written: {error}") from None
        raise Unavailable(f"the list of {project} keeps changing: try again")


def _added(files: list[dict], entry: dict) -> list[dict]:
    """The list with the entry; Exists when another node listed that name first."""
    if any(f["filename"] == entry["filename"] for f in files):
        raise Exists(f"{entry['filename']} exists: files are immutable")
    return files + [entry]


def _same(listed: str, version: str) -> bool:
    """Whether two versions are one (1.0 is 1.0.0, PEP 440); `version` is valid."""
    try:
        return Version(listed) == Version(version)
    except InvalidVersion:
        return listed == version


def _now() -> str:
    """The upload instant, as PEP 700 writes it."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _sha256(data: bytes | None) -> str | None:
    if data is None:
        return None
    return hashlib.sha256(data).hexdigest()


def build(settings, cachedir: CacheDir) -> LocalIndex | None:
    """The local index of these settings: in the bucket when there is one, else in the cache
    directory; None without PYPI_UPLOADS."""
    if not settings.uploads:
        return None
    bucket = None
    if settings.storage_url:
        from .s3 import S3Storage  # boto3 only where a bucket is used

        bucket = S3Storage(settings.storage_url, connect_timeout=settings.connect_timeout,
                           read_timeout=settings.read_timeout, connections=8, area="uploads/")
    return LocalIndex(cachedir, bucket, wait=settings.connect_timeout + settings.read_timeout)
