"""Canonical project names and the one validator for untrusted path parts."""
from __future__ import annotations

import re

from packaging.utils import canonicalize_name

from .errors import BadRequest

# PEP 508 names: letters and digits, with '.', '_' and '-' inside.
_PROJECT = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,200}[A-Za-z0-9])?")
# One segment of a file path as upstreams use them: no '/', no '%', nothing a shell or a
# header could misread; '+' and '!' appear in local versions and epochs.
_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9._+!~=-]{0,254}"
# A whole path of such segments in one match: a page lists thousands of files, each checked.
_PATH = re.compile(rf"(?:{_SEGMENT}/)*{_SEGMENT}")
MAX_PATH = 1024


def project_name(raw: str) -> str:
    """The canonical (PEP 503) form of a project name, or BadRequest if it cannot be one."""
    if not _PROJECT.fullmatch(raw):
        raise BadRequest(f"not a valid project name: {raw[:100]!r}")
    return canonicalize_name(raw)


def file_path(raw: str) -> str:
    """A relative file path ('ab/cd/<hash>/name.whl') safe to join under the cache root."""
    if len(raw) > MAX_PATH:
        raise BadRequest("file path too long")
    if not _PATH.fullmatch(raw):
        raise BadRequest(f"not a valid file path: {raw[:200]!r}")
    return raw


def filename(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def project_of_file(path: str) -> str:
    """The canonical project a file path belongs to, as its name says: a wheel's name ends at
    its first '-' (PEP 427 escapes the others), an sdist's at its last (PEP 625), anything else
    is guessed at its first. Without validating the rest: pages list thousands of files, and a
    guess that is wrong only sends the lookup to the catalog's list of exceptions."""
    name = filename(path).removesuffix(".metadata")
    if name.endswith((".tar.gz", ".zip")) and "-" in name:
        return canonicalize_name(name.rsplit("-", 1)[0])
    return canonicalize_name(name.split("-", 1)[0])


def names_project(filename: str, project: str) -> bool:
    """Whether a file's name says it is of `project` (canonical): project_of_file's answer,
    without its regex for the usual names (lower case, as the project or with each '-' a '_',
    as wheels escape it: PEP 427); a page has thousands."""
    name = filename.removesuffix(".metadata")
    sdist = name.endswith((".tar.gz", ".zip")) and "-" in name
    head = name.rsplit("-", 1)[0] if sdist else name.split("-", 1)[0]
    return (head == project or ("-" in project and head == project.replace("-", "_"))
            or project_of_file(filename) == project)
