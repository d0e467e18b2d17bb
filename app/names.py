"""Canonical project names and the one validator for untrusted path parts."""
from __future__ import annotations

import re

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)

from .errors import BadRequest

# PEP 508 names: letters and digits, with '.', '_' and '-' inside.
_PROJECT = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,200}[A-Za-z0-9])?")
# One segment of a file path as upstreams use them: no '/', no '%', nothing a shell or a
# header could misread; '+' and '!' appear in local versions and epochs.
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+!~=-]{0,254}")
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
    segments = raw.split("/")
    if not all(_SEGMENT.fullmatch(segment) for segment in segments):
        raise BadRequest(f"not a valid file path: {raw[:200]!r}")
    return raw


def filename(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def project_of_file(path: str) -> str:
    """The canonical project a file path belongs to, guessed from its name (wheels and sdists
    by packaging's own parsers; anything else by the part before the first '-')."""
    name = filename(path).removesuffix(".metadata")
    try:
        if name.endswith(".whl"):
            return parse_wheel_filename(name)[0]
        if name.endswith((".tar.gz", ".zip")):
            return parse_sdist_filename(name)[0]
    except (InvalidWheelFilename, InvalidSdistFilename):
        pass
    return canonicalize_name(name.split("-", 1)[0])
