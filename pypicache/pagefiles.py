"""A cached page on disk: the files of one version of it, one per body a client can get.

A refresh writes a new version (a new name stem, pypicache/refresh.py) and points the page's
state at it; every body of that version is a file `<version><suffix>` beside it, so an
ETag names the version and the body, and readers of an older version keep their files.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from .pagemodel import FILE_PREFIX


@dataclass
class Page:
    name: str
    directory: Path
    version: str  # the name stem of its files: a refresh writes new names (pypicache/refresh.py)
    cache: str  # hit, miss, revalidated, stale, updating
    age: float
    # Our document of this version, in memory, when this request's refresh has just made it.
    document: bytes | None = field(default=None, repr=False, compare=False)

    def etag(self, body: Body) -> str:
        """A strong ETag per body: the version names the document, the body follows from it."""
        return '"' + self.version + body.suffix.replace(".", "-") + '"'

    def path(self, body: Body) -> Path:
        return self.directory / (self.version + body.suffix)


@dataclass(frozen=True)
class Body:
    """One body of a page: its format, gzipped or not, the URL its file links start with
    (None: relative links, `../../packages/`, right behind any host name and path prefix), and
    the https URL its PEP 740 provenance URLs start with when they point at our copies (None:
    the upstream's, pypicache/provenance.py)."""

    fmt: str = "json"
    compressed: bool = False
    base: str | None = None
    provenance: str | None = None

    @property
    def suffix(self) -> str:
        links = "." + hashlib.sha256(self.base.encode()).hexdigest()[:12] if self.base else ""
        if self.provenance:
            links += ".p" + hashlib.sha256(self.provenance.encode()).hexdigest()[:12]
        return f"{links}.{self.fmt}{'.gz' if self.compressed else ''}"

    def linked(self, data: bytes) -> bytes:
        """A body of this format made with relative links (`data`), with its file links
        starting with this body's base instead (see pypicache/views/simple.py)."""
        if not self.base:
            return data
        attribute = b'"url":"' if self.fmt == "json" else b'href="'
        return data.replace(attribute + FILE_PREFIX.encode(), attribute + self.base.encode())


class PageGone(Exception):
    """The page's files went (evicted) after its state was read: ask for the page again."""
