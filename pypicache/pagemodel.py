"""The page model: our PEP 691 document of a project page (the bytes the cache keeps and
serves, pypicache/pagereader.py makes them) and the Project and File objects read from it.

Links in the document point at the proxy, relative to the page (`../../packages/<path>`).
Reading the whole document builds an object per file; a download's lookup of one file only
searches the bytes for its link and reads that entry (`find_file`), and choosing a release
reads only the entries of the releases it looks at (`filenames`, `file_at`).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Iterator
from urllib.parse import quote, unquote

# Project pages live at /simple/<name>/, files at /packages/<path>: relative links keep a
# page valid behind any host name or path prefix.
FILE_PREFIX = "../../packages/"
# PEP 691 keeps keys with a leading underscore for the index itself: no standard will use it.
EXTRACTED = "_pypicache-extracted"
# The upstream's serial of the project's last change (Warehouse's "meta" key), kept when given.
LAST_SERIAL = "_last-serial"
# Characters quote() leaves alone: most paths need no quoting at all, and a page has thousands.
_UNQUOTED = re.compile(r"[A-Za-z0-9_.\-~/]*")


@dataclass(frozen=True)
class File:
    """One distribution file; `path` is relative to the files base (and to our /packages/)."""

    filename: str
    path: str
    hashes: dict[str, str] = field(default_factory=dict)
    requires_python: str | None = None
    yanked: bool | str = False  # False, True, or the reason (PEP 592)
    core_metadata: bool | dict[str, str] = False  # PEP 658/714: False, True or its hashes
    size: int | None = None
    upload_time: str | None = None
    # Core metadata the upstream does not have: the proxy extracts it from the wheel, without
    # asking the upstream for a `.metadata` first (in our document: EXTRACTED, a key that
    # clients ignore, PEP 691).
    extracted: bool = False
    # PEP 740: the URL of the file's provenance object, as the upstream gave it (absolute).
    provenance: str | None = None

    @property
    def sha256(self) -> str | None:
        return self.hashes.get("sha256")


@dataclass(frozen=True)
class Project:
    name: str
    files: tuple[File, ...]
    versions: tuple[str, ...] | None = None  # PEP 700
    status: str | None = None  # PEP 792
    status_reason: str | None = None
    last_serial: int | None = None  # the upstream's, when its page gave one


def file_href(path: str) -> str:
    return FILE_PREFIX + (path if _UNQUOTED.fullmatch(path) else quote(path))


def entry_path(entry: dict) -> str:
    """The path under /packages/ of a file of our document."""
    path = entry["url"][len(FILE_PREFIX):]
    return unquote(path) if "%" in path else path


def project_of(data: dict) -> Project:
    """The Project our document describes (it came from `document`: well formed)."""
    status = data.get("project-status") or {}
    versions = data.get("versions")
    serial = (data.get("meta") or {}).get(LAST_SERIAL)
    return Project(data["name"], tuple(map(_file, data["files"])),
                   tuple(versions) if isinstance(versions, list) else None,
                   status.get("status"), status.get("reason"),
                   serial if isinstance(serial, int) and not isinstance(serial, bool) else None)


def _file(entry: dict) -> File:
    yanked = entry.get("yanked", False)
    size = entry.get("size")
    provenance = entry.get("provenance")
    return File(
        filename=entry["filename"],
        path=entry_path(entry),
        hashes=entry["hashes"],
        requires_python=entry.get("requires-python") or None,
        yanked=yanked if isinstance(yanked, str) and yanked else bool(yanked),
        core_metadata=entry.get("core-metadata", False),
        size=size if isinstance(size, int) and size >= 0 else None,
        upload_time=entry.get("upload-time"),
        extracted=entry.get(EXTRACTED, False) is True,
        provenance=provenance if isinstance(provenance, str) else None,
    )


_ENTRY_STARTS = (b"},{", b"}, {", b"[{")
_ENTRY_WINDOW = 64 * 1024  # bytes of one file's entry at most (a long yanked reason)
_FILENAME = re.compile(rb'"filename"\s*:\s*"([^"\\]+)"')  # a key: never inside a string


def find_file(data: bytes, path: str) -> File | None:
    """The file of our document (its bytes) at `path`, found by its link without parsing the
    rest: a download's lookup costs a search, not a parse of thousands of files."""
    for link in {path, file_href(path)[len(FILE_PREFIX):]}:
        at = data.find(b"/packages/" + link.encode() + b'"')
        if at < 0:
            continue
        found = file_at(data, at)
        if found is not None and found.path == path:
            return found
        return project_files(data).get(path)  # an odd entry: read the whole page
    return None


def filenames(data: bytes) -> Iterator[tuple[str, int]]:
    """Each file of our document (its bytes) by name, with an offset inside its entry for
    `file_at`: what choosing a release needs, without building thousands of objects."""
    for match in _FILENAME.finditer(data):
        yield match[1].decode(), match.start()


def file_at(data: bytes, at: int) -> File | None:
    """The file whose entry holds the offset `at`; None if that entry cannot be read."""
    start = max(_entry_start(data, mark, at) for mark in _ENTRY_STARTS)
    for window in (4096, _ENTRY_WINDOW):  # most entries are a few hundred bytes
        try:
            entry, _ = json.JSONDecoder().raw_decode(
                data[start:start + window].decode("utf-8", "ignore"))
            return _file(entry)
        except ValueError:
            continue
        except (KeyError, TypeError, AttributeError):
            return None
    return None


def _entry_start(data: bytes, mark: bytes, at: int) -> int:
    """Where the entry holding `at` begins if `mark` precedes it (its '{'), else -1."""
    found = data.rfind(mark, 0, at)
    return found + len(mark) - 1 if found >= 0 else -1


def project_files(data: bytes) -> dict[str, File]:
    return {f.path: f for f in project_of(json.loads(data)).files}
