"""Validators, conditional requests and byte ranges of package files (RFC 9110 sections 8.8, 13
and 14): one resolver for every way a file is served, answering as the nginx front does.

The front serves published files with nginx's own logic, which no setting can replace; the
app answers every other request (a cached hit without the front, a download in progress, a
range relayed from the upstream, a file in the shared bucket) with this port of it, so a client
gets the same status, Content-Range and bytes wherever its request lands (docs/DESIGN.md,
"Validators and ranges"). The validators are nginx's too: the ETag is `"<mtime>-<size>"` in
hex, and a published file's mtime is a function of its path (pypicache/cachedir.py), so they are
known before its download ends, and the same on every node.
"""
from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from typing import Mapping

from werkzeug.http import http_date, parse_date

from .storage import published_mtime

# nginx's largest offset (off_t): a bigger number in a Range is unsatisfiable, not ignored.
_MAX_OFFSET = 2**63 - 1
# One range-spec of a Range header as nginx reads it: spaces around it and around the dash
# of first-last, none inside a suffix (RFC 9110 14.1.1 allows no spaces at all).
_SPEC = re.compile(r" *(?:(\d+) *- *(\d*)|-(\d+)) *")
# Formatting a date is a tenth of a hit's cost, and a file's never changes.
_http_date = functools.lru_cache(maxsize=65536)(http_date)


@dataclass(frozen=True)
class Validator:
    """The validators of a file's bytes: nginx's strong ETag and Last-Modified."""

    mtime: int
    size: int

    @property
    def etag(self) -> str:
        return f'"{self.mtime:x}-{self.size:x}"'  # nginx's ngx_http_set_etag

    @property
    def last_modified(self) -> str:
        return _http_date(self.mtime)


def of_open_file(fd: int) -> Validator:
    """What nginx computes for a file on disk: its mtime and size."""
    stat = os.fstat(fd)
    return Validator(int(stat.st_mtime), stat.st_size)


def validator(path: str, size: int | None) -> Validator | None:
    """What the file at `path` carries once published; None while its size is unknown."""
    return None if size is None else Validator(published_mtime(path), size)


@dataclass(frozen=True)
class Ask:
    """The request headers that decide how a file is answered."""

    range: str | None = None
    if_range: str | None = None
    if_match: str | None = None
    if_none_match: str | None = None
    if_modified_since: str | None = None
    if_unmodified_since: str | None = None

    @classmethod
    def of(cls, environ: Mapping[str, str]) -> "Ask":
        # RFC 9110 14.2: Range is defined for GET only; a HEAD ignores it (the front sends
        # those to the app, as nginx would answer them 206).
        get = environ.get
        return cls(get("HTTP_RANGE") if get("REQUEST_METHOD") == "GET" else None,
                   get("HTTP_IF_RANGE"), get("HTTP_IF_MATCH"), get("HTTP_IF_NONE_MATCH"),
                   get("HTTP_IF_MODIFIED_SINCE"), get("HTTP_IF_UNMODIFIED_SINCE"))

    @property
    def plain(self) -> bool:
        """No header here can make the answer other than the whole file (an If-Range alone
        cannot)."""
        return (self.range, self.if_match, self.if_none_match, self.if_modified_since,
                self.if_unmodified_since) == (None,) * 5


PLAIN = Ask()


@dataclass(frozen=True)
class Answer:
    """How to answer: 200 (the whole file), 206 (bytes [start, stop)), 304, 412 or 416."""

    status: int
    start: int = 0
    stop: int | None = None  # exclusive; None: to the end

    @property
    def has_body(self) -> bool:
        return self.status in (200, 206)


WHOLE = Answer(200)


def resolve(ask: Ask, file: Validator | None) -> Answer:
    """The answer nginx gives to `ask` for a file with these validators (its not-modified and
    range filters, with `max_ranges 1` and `if_modified_since before`). Without validators
    (the size is not known yet) the whole file, as nginx does for a body of unknown length."""
    if file is None:
        return WHOLE
    if ask.if_unmodified_since is not None and not _unmodified(ask.if_unmodified_since, file):
        return Answer(412)
    if ask.if_match is not None and not _listed(ask.if_match, file.etag, weak=False):
        return Answer(412)
    if ask.if_modified_since is not None or ask.if_none_match is not None:
        # nginx asks both when both are sent (RFC 9110 13.2.2 would ignore If-Modified-Since):
        # a client's own pair of validators always agrees, so only a forged pair differs.
        modified = ask.if_modified_since is not None and _modified(ask.if_modified_since, file)
        if not modified and (ask.if_none_match is None
                             or _listed(ask.if_none_match, file.etag, weak=True)):
            return Answer(304)
    if ask.range is None or len(ask.range) < 7 or ask.range[:6].lower() != "bytes=":
        return WHOLE  # no range, or a unit we do not know (RFC 9110 14.2)
    if ask.if_range is not None and not _same(ask.if_range, file):
        return WHOLE  # RFC 9110 13.1.5: other bytes than the client holds
    return _spans(ask.range[6:], file.size)


def _spans(specs: str, size: int) -> Answer:
    """nginx's ngx_http_range_parse, one range at most: a second satisfiable range makes the
    answer the whole file (RFC 9110 14.2 lets a server ignore Range; one body for all paths
    beats a multipart one that a relay from the upstream could not give). A syntax error is a
    416, which RFC 9110 14.2 allows for an invalid ranges-specifier."""
    found = None
    for spec in specs.split(","):
        match = _SPEC.fullmatch(spec)
        if match is None:
            return Answer(416)
        first, last, suffix = (_offset(number) for number in match.groups())
        if -1 in (first, last, suffix):
            return Answer(416)
        if suffix is not None:  # RFC 9110 14.1.2: a suffix longer than the file is all of it
            start, stop = max(size - suffix, 0), size
        else:
            start, stop = first, size if last is None or last >= size else last + 1
        if start < stop:
            if found is not None:
                return WHOLE
            found = Answer(206, start, stop)
        elif start == 0:
            return WHOLE  # an empty file has no range to give
    return found if found is not None else Answer(416)


def _offset(digits: str | None) -> int | None:
    """A position of a range-spec; -1 past nginx's largest (read without converting thousands
    of digits, which Python refuses to do)."""
    if not digits:
        return None
    digits = digits.lstrip("0") or "0"
    return -1 if len(digits) > 19 or int(digits) > _MAX_OFFSET else int(digits)


def _unmodified(value: str, file: Validator) -> bool:
    since = _time(value)
    return since is not None and since >= file.mtime


def _modified(value: str, file: Validator) -> bool:
    since = _time(value)
    return since is None or since < file.mtime  # RFC 9110 13.1.3: earlier means modified


def _same(if_range: str, file: Validator) -> bool:
    """RFC 9110 13.1.5: a strong ETag compared byte for byte, or exactly the Last-Modified."""
    if len(if_range) >= 2 and if_range.endswith('"'):
        return if_range == file.etag
    return _time(if_range) == file.mtime


def _listed(header: str, etag: str, weak: bool) -> bool:
    """Whether an If-Match (strong comparison) or If-None-Match (weak) list names `etag`, read
    as nginx's ngx_http_test_if_match reads it (RFC 9110 8.8.3.2)."""
    if header == "*":
        return True
    start, end = 0, len(header)
    while start < end:
        if weak and end - start > 2 and header.startswith("W/", start):
            start += 2
        if len(etag) > end - start:
            return False
        if header.startswith(etag, start):
            start += len(etag)
            while start < end and header[start] in " \t":
                start += 1
            if start == end or header[start] == ",":
                return True
        while start < end and header[start] != ",":
            start += 1
        while start < end and header[start] in " \t,":
            start += 1
    return False


def _time(value: str) -> int | None:
    parsed = parse_date(value)
    return None if parsed is None else int(parsed.timestamp())
