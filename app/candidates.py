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
from packaging.utils import InvalidWheelFilename, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from .environments import Client
from .pagemodel import File

_SDIST_RANK = 1 << 30  # any wheel that fits comes before the sdist of the same release
_SDIST_SUFFIXES = (".tar.gz", ".zip")


def choose(files: Iterable[File], specifier: SpecifierSet, client: Client) -> File | None:
    """The wheel of the release a resolver would pick, or None (no release fits, or the best
    one fitting has no wheel for this client)."""
    releases: dict[Version, list[File]] = {}
    for file in files:  # thousands on a big page: only cheap checks here
        if file.yanked or not _python_fits(file.requires_python, client):
            continue
        version = _version(file.filename)
        if version is not None:
            releases.setdefault(version, []).append(file)
    for version in sorted(specifier.filter(releases), reverse=True):
        ranked = [(rank, file) for file in releases[version]
                  if (rank := _rank(file, client)) is not None]
        if ranked:
            rank, file = min(ranked, key=lambda pair: pair[0])
            return None if rank == _SDIST_RANK else file
    return None


def _version(filename: str) -> Version | None:
    """The version a wheel's or sdist's name says (PEP 427, 625), without parsing the rest."""
    if filename.endswith(".whl"):
        parts = filename.split("-")
        return _parsed(parts[1]) if len(parts) in (5, 6) else None
    if filename.endswith(_SDIST_SUFFIXES) and "-" in filename:
        return _parsed(filename.removesuffix(".tar.gz").removesuffix(".zip").rsplit("-", 1)[1])
    return None


@functools.lru_cache(maxsize=65536)  # a page lists each version for many files
def _parsed(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def _rank(file: File, client: Client) -> int | None:
    """How much this client prefers a file of the release it picked; None if it cannot
    install it."""
    if not file.filename.endswith(".whl"):
        return _SDIST_RANK
    try:
        wheel_tags = parse_wheel_filename(file.filename)[3]
    except (InvalidWheelFilename, InvalidVersion):
        return None
    return _wheel_rank(wheel_tags, client)


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
