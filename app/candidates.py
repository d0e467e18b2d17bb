"""The release a resolver would most likely pick for a requirement, from a cached page's
files: the wheel whose core metadata (PEP 658) it will ask for next.

As pip and uv choose: the highest version the specifier admits, pre-releases only when the
specifier names one or nothing else matches (packaging's SpecifierSet.filter), yanked files
left out (PEP 592), `requires-python` satisfied for the client's Python when it is known
(PEP 503), and among that release's files the wheel with the client's most preferred tag. A
release whose best file is an sdist gets none: its metadata needs a build.
"""
from __future__ import annotations

import functools
from typing import Iterable

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import (
    InvalidSdistFilename, InvalidWheelFilename, parse_sdist_filename, parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from .environments import Client
from .index import File

_SDIST_RANK = 1 << 30  # any wheel that fits comes before the sdist of the same release


def choose(files: Iterable[File], specifier: SpecifierSet, client: Client) -> File | None:
    """The wheel of the release a resolver would pick, or None (no release fits, or the best
    one fitting has no wheel for this client)."""
    best: dict[Version, tuple[int, File]] = {}
    for file in files:
        fit = _fit(file, client)
        if fit is None:
            continue
        version, rank = fit
        if version not in best or rank < best[version][0]:
            best[version] = (rank, file)
    chosen = max(specifier.filter(best), default=None)
    if chosen is None or best[chosen][0] == _SDIST_RANK:
        return None
    return best[chosen][1]


def _fit(file: File, client: Client) -> tuple[Version, int] | None:
    """(version, preference) of a file this client could install, None if it could not."""
    if file.yanked or not _python_fits(file.requires_python, client):
        return None
    try:
        if file.filename.endswith(".whl"):
            _, version, _, wheel_tags = parse_wheel_filename(file.filename)
            rank = _wheel_rank(wheel_tags, client)
            return None if rank is None else (version, rank)
        _, version = parse_sdist_filename(file.filename)
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion):
        return None
    return version, _SDIST_RANK


def _wheel_rank(wheel_tags: frozenset, client: Client) -> int | None:
    """The client's preference for a wheel's best tag; for an unknown client a pure Python 3
    wheel only (py3-none-any first), since any other might not fit it."""
    if client.known:
        ranks = client.ranks()
        found = [ranks[tag] for tag in wheel_tags if tag in ranks]
        return min(found) if found else None
    pure = [tag for tag in wheel_tags if tag.abi == "none" and tag.platform == "any"
            and tag.interpreter.startswith("py3")]
    if not pure:
        return None
    return 0 if any(tag.interpreter == "py3" for tag in pure) else 1


def _python_fits(requires_python: str | None, client: Client) -> bool:
    if not requires_python or client.full_python is None:
        return True
    return _fits(requires_python, client.full_python)


@functools.lru_cache(maxsize=4096)  # a page of thousands of files has a few distinct ones
def _fits(requires_python: str, python: str) -> bool:
    try:
        return SpecifierSet(requires_python).contains(python, prereleases=True)
    except (InvalidSpecifier, InvalidVersion):
        return True  # as pip does: a file with an unreadable requires-python is not excluded
