"""Several upstream indexes in precedence order: which ones a project may come from, and which
one a file path belongs to.

With PYPI_INDEXES set, every file path under /packages/ starts with its upstream's name, so
cache paths, catalog rows, statistics and locks of different upstreams never meet. Without it
there is one upstream with an empty name and paths stay as they always were.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping
from urllib.parse import urlsplit

from . import convert, names
from .errors import BadRequest, NotFound

# Lower case, as it appears in file URLs and cache paths; a valid path segment (pypicache/names.py).
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")


@dataclass(frozen=True)
class Index:
    """One upstream: its simple URL and the base URL of its files (no trailing slashes)."""

    name: str  # "" for the single upstream of PYPI_MIRROR_URL
    url: str
    files_url: str

    @property
    def prefix(self) -> str:
        """What file paths of this upstream start with."""
        return self.name + "/" if self.name else ""


def parse_entries(value: str) -> tuple[tuple[str, str, str | None], ...]:
    """`name=URL[,FILES_URL] ...` -> (name, url, files_url or None); URL may be `default`."""
    entries, seen = [], set()
    for word in value.split():
        name, equals, urls = word.partition("=")
        if not equals or not _NAME.fullmatch(name):
            raise ValueError(f"{word!r} is not name=URL (a name is a-z, 0-9, '-' and '_')")
        if name in seen:
            raise ValueError(f"the name {name!r} is given twice")
        seen.add(name)
        url, _, files_url = urls.partition(",")
        entries.append((name, url, files_url or None))
    return tuple(entries)


def parse_pins(value: str) -> dict[str, str]:
    """`project=name ...` -> {canonical project: upstream name}."""
    pins: dict[str, str] = {}
    for word in value.split():
        project, equals, name = word.partition("=")
        try:
            project = names.project_name(project)
        except BadRequest:
            raise ValueError(f"{word!r}: {project!r} is not a project name") from None
        if not equals or not name:
            raise ValueError(f"{word!r} is not project=name")
        if project in pins:
            raise ValueError(f"the project {project!r} is pinned twice")
        pins[project] = name
    return pins


def build(
    entries: tuple[tuple[str, str, str | None], ...],
    pins: Mapping[str, str],
    package_loc: str,
    default: tuple[str, str],
) -> tuple[Index, ...]:
    """The upstreams of PYPI_INDEXES, each URL checked as any URL setting; a files URL not given
    is the public index's own for `default`, else the upstream's origin + PYPI_PACKAGE_LOC, as
    for the single upstream."""
    indexes = []
    for name, simple, files in entries:
        try:
            if simple == "default":
                simple, own_files = default
            else:
                origin = urlsplit(simple)
                own_files = f"{origin.scheme}://{origin.netloc}{package_loc}"
            indexes.append(Index(name, convert.url(simple), convert.url(files or own_files)))
        except ValueError as error:
            raise ValueError(f"{name}: {error}") from None
    known = {index.name for index in indexes}
    for project, name in pins.items():
        if name not in known:
            raise ValueError(f"{project} is pinned to {name!r}, which is not in PYPI_INDEXES")
    return tuple(indexes)


def candidates(settings, project: str) -> tuple[Index, ...]:
    """The upstreams to ask for a project, in order: its pinned one, or all of them."""
    pinned = settings.index_pins.get(project)
    if pinned is None:
        return settings.indexes
    return tuple(index for index in settings.indexes if index.name == pinned)


def locate(settings, path: str) -> tuple[Index, str]:
    """(upstream, path under its files base) of a file path; NotFound for an unknown upstream."""
    first = settings.indexes[0]
    if not first.name:
        return first, path
    name, _, rest = path.partition("/")
    for index in settings.indexes:
        if index.name == name and rest:
            return index, rest
    raise NotFound(f"no upstream named {name!r}")


def of_url(settings, url: str) -> Index | None:
    """The upstream a URL we fetch belongs to (for its health), by the longest base it starts
    with; None for a redirect target outside every base."""
    best, length = None, -1
    for index in settings.indexes:
        for base in (index.url, index.files_url):
            if url.startswith(base) and len(base) > length:
                best, length = index, len(base)
    return best
