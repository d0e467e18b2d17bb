"""What the index pages promise about the files they list: the project, sha256 and size of a
path, read from the cached page's own model.

Only files a page lists are fetched, and each is checked against what its page said. The
page a file belongs to is found by its name (packaging's parsers: a wheel or sdist names its
project); the rare file listed on another project's page is in the catalog's `listed_under`.
"""
from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from . import names, upstreams
from .errors import BadRequest, NotFound
from .pagemodel import File

METADATA = ".metadata"


@dataclass(frozen=True)
class Listed:
    """A file as its page lists it; for a `.metadata`, as its distribution's entry says."""

    project: str
    sha256: str | None
    size: int | None
    file: File  # the page's entry (of the distribution, for a `.metadata`)
    path: str  # ours, under /packages/
    url: str  # where its upstream serves it (its upstream's files URL: pypicache/upstreams.py)


class Listings:
    def __init__(self, settings, pages, catalog):
        self.settings, self.pages, self.catalog = settings, pages, catalog

    def find(self, path: str) -> Listed | None:
        """What a cached page (however old) lists for `path`; None when no cached page does."""
        distribution = path.removesuffix(METADATA)
        guessed = names.project_of_file(distribution)
        project = guessed
        file = self.pages.find(project, distribution) if project else None
        if file is None:  # the catalog is asked only when that page does not list it
            project = self.catalog.listed_under(distribution)
            if project and project != guessed:
                file = self.pages.find(project, distribution)
        return None if file is None else _listed(project, file, path, self.url(path))

    def url(self, path: str) -> str:
        """The upstream URL of a file path."""
        up, upstream_path = upstreams.locate(self.settings, path)
        return f"{up.files_url}/{quote(upstream_path)}"

    def require(self, path: str) -> Listed:
        """What its page lists for `path`, the page fetched first if it is not cached (or is
        due): NotFound for a file no page lists, so nothing unlisted is ever asked upstream."""
        if (listed := self.find(path)) is not None:
            # A page past its TTL is asked for anew before a download trusts it: the new
            # one may no longer list the file, or say the project is quarantined (PEP 792).
            if self.pages.project(listed.project).cache != "miss":
                return listed
            if (listed := self.find(path)) is not None:
                return listed
            raise NotFound(f"{names.filename(path)} is no longer listed on its page")
        upstreams.locate(self.settings, path)  # a file of no configured upstream: 404 at once
        try:
            project = names.project_name(names.project_of_file(path))
        except BadRequest:
            raise NotFound(f"no project for a file named {names.filename(path)}") from None
        self.pages.project(project)
        if (listed := self.find(path)) is None:
            raise NotFound(f"{names.filename(path)} is not listed on the page of {project}")
        return listed


def _listed(project: str, file: File, path: str, url: str) -> Listed | None:
    if not path.endswith(METADATA) or path == file.path:
        return Listed(project, file.sha256, file.size, file, path, url)
    # A distribution's core metadata is listed when its page says so (PEP 658), and for every
    # wheel, whose METADATA the proxy can extract (pypicache/metadata.py).
    if not (file.core_metadata or file.filename.endswith(".whl")):
        return None
    sha256 = file.core_metadata.get("sha256") if isinstance(file.core_metadata, dict) else None
    return Listed(project, sha256, None, file, path, url)
