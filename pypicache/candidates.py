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
import re
from typing import Callable, Iterable, Iterator

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import InvalidWheelFilename, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from .environments import Client
from .pagemodel import File, file_at, filenames

_SDIST_RANK = 1 << 30  # any wheel that fits comes before the sdist of the same release
_SDIST_SUFFIXES = (".tar.gz", ".zip")
_PLAIN = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,9}){0,9}")  # a release number only


def choose(files: Iterable[File], specifier: SpecifierSet, client: Client) -> File | None:
    """The wheel of the release a resolver would pick, or None (no release fits, or the best
    one fitting has no wheel for this client)."""
    releases: dict[str, list[File]] = {}
    for file in files:
        if (text := version_text(file.filename)) is not None:
            releases.setdefault(text, []).append(file)
    return _pick(releases, releases.__getitem__, specifier, client)


def choose_in(document: bytes, specifier: SpecifierSet, client: Client) -> File | None:
    """`choose` over our document's bytes (pypicache/pagemodel.py): only the entries of the releases
    it looks at are read. A page of 5,000 files cost 60 ms parsed whole, each time a
    requirement named it; the names and a few versions are a few milliseconds."""
    offsets: dict[str, list[int]] = {}
    for filename, at in filenames(document):
        if (text := version_text(filename)) is not None:
            offsets.setdefault(text, []).append(at)

    def files_of(text: str) -> list[File]:
        return [file for at in offsets[text] if (file := file_at(document, at)) is not None]

    return _pick(offsets, files_of, specifier, client)


def _pick(versions: Iterable[str], files_of: Callable[[str], list[File]],
          specifier: SpecifierSet, client: Client) -> File | None:
    for text in _admitted(versions, specifier):
        ranked = [(rank, file) for file in files_of(text)
                  if not file.yanked and _python_fits(file.requires_python, client)
                  and (rank := _rank(file, client)) is not None]
        if ranked:
            rank, file = min(ranked, key=lambda pair: pair[0])
            return None if rank == _SDIST_RANK else file
    return None  # a release whose files are all yanked or unfit is passed over, as pip does


def _admitted(versions: Iterable[str], specifier: SpecifierSet) -> Iterator[str]:
    """The versions the specifier admits, highest first, as SpecifierSet.filter admits them:
    pre-releases when it names one, else only after every final release."""
    allow = specifier.prereleases
    later = []
    for version, text in _descending(versions):
        if not specifier.contains(version, prereleases=True):
            continue
        if version.is_prerelease and not allow:
            later.append(text)
            continue
        yield text
    if allow is not False:
        yield from later


def _descending(versions: Iterable[str]) -> Iterator[tuple[Version, str]]:
    """The versions, highest first. Plain ones ("1.2.3", most of a page) are ordered by their
    numbers and parsed only when reached: a page lists thousands of versions, and parsing
    them all cost more than the rest of the choice."""
    plain, other = [], []
    for text in versions:
        if _PLAIN.fullmatch(text):
            numbers = tuple(map(int, text.split(".")))
            while len(numbers) > 1 and numbers[-1] == 0:  # 1.0 == 1, as Version compares
                numbers = numbers[:-1]
            plain.append((numbers, text))
        elif (version := parsed_version(text)) is not None:
            other.append((version, text))
    plain.sort(reverse=True)
    other.sort(reverse=True)
    i = j = 0
    while i < len(plain) or j < len(other):
        version = parsed_version(plain[i][1]) if i < len(plain) else None
        if version is not None and (j == len(other) or version >= other[j][0]):
            yield version, plain[i][1]
            i += 1
        elif j < len(other):
            yield other[j]
            j += 1
        else:
            i += 1  # unparseable (not reached: plain versions parse)


def version_text(filename: str) -> str | None:
    """The version a wheel's or sdist's name says (PEP 427, 625), without parsing it."""
    if filename.endswith(".whl"):
        parts = filename.split("-")
        return parts[1] if len(parts) in (5, 6) else None
    if filename.endswith(_SDIST_SUFFIXES) and "-" in filename:
        return filename.removesuffix(".tar.gz").removesuffix(".zip").rsplit("-", 1)[1]
    return None


@functools.lru_cache(maxsize=65536)  # a page lists each version for many files
def parsed_version(text: str) -> Version | None:
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
