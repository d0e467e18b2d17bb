"""Where the local index keeps each project's list of uploaded files (pypicache/uploads.py): in the
cache directory beside the files, or in the bucket apart from them; read with a tag, and
replaced only while the tag still holds."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

from .cachedir import CacheDir

INDEX = "index.json"  # a project's list, in the cache directory
LISTS = "upload-lists/"  # the lists, in the bucket (under its prefix)


class Shelf(Protocol):
    """Where each project's list lives: read with a tag, replaced only if the tag still holds."""

    def read(self, project: str) -> tuple[bytes, str] | None: ...

    def write(self, project: str, data: bytes, tag: str | None) -> bool: ...

    def remove(self, project: str) -> None: ...

    def tags(self) -> dict[str, str]: ...


class LocalShelf:
    """The lists in the cache directory, `<project>/index.json` beside the files, replaced by
    an atomic rename under the project's lock (which the caller holds: no race on the tag)."""

    def __init__(self, cachedir: CacheDir, root: Path):
        self.cachedir, self.root = cachedir, root

    def tag(self, project: str) -> str | None:
        try:
            stat = os.stat(self.root / project / INDEX)
        except OSError:
            return None
        return f"{stat.st_ino}-{stat.st_mtime_ns}-{stat.st_size}"

    def read(self, project: str) -> tuple[bytes, str] | None:
        tag = self.tag(project)
        try:
            return (self.root / project / INDEX).read_bytes(), tag or ""
        except FileNotFoundError:
            return None

    def write(self, project: str, data: bytes, tag: str | None) -> bool:
        if self.tag(project) != tag:
            return False
        self.cachedir.write_atomic(self.root / project / INDEX, data)
        return True

    def remove(self, project: str) -> None:
        (self.root / project / INDEX).unlink(missing_ok=True)

    def tags(self) -> dict[str, str]:
        try:
            return {d.name: tag for d in self.root.iterdir() if (tag := self.tag(d.name))}
        except OSError:  # no upload yet
            return {}


class BucketShelf:
    """The lists in the bucket, `upload-lists/<project>.json` (apart from the files, so that one
    listing of a few keys per project tells every list's ETag), replaced with If-Match."""

    def __init__(self, bucket: Any):
        self.bucket = bucket

    def read(self, project: str) -> tuple[bytes, str] | None:
        return self.bucket.read_document(f"{LISTS}{project}.json")

    def write(self, project: str, data: bytes, tag: str | None) -> bool:
        return self.bucket.write_document(f"{LISTS}{project}.json", data, tag)

    def remove(self, project: str) -> None:
        self.bucket.delete_document(f"{LISTS}{project}.json")

    def tags(self) -> dict[str, str]:
        return {name.removesuffix(".json"): tag for name, tag in self.bucket.etags(LISTS).items()}
