"""PEP 691 JSON pages rewritten as bytes: the upstream's own JSON with its file links pointed at
the proxy and core metadata advertised for every wheel, by a few passes of regular expressions
over the whole body instead of a pass in Python that rebuilds every file's entry.

A big project page lists thousands of files; checked, rebuilt and dumped again in Python, each
cost microseconds, and a cold page cost the proxy far more than the upstream took to send it.
Here the parsed page is only read (which wheels lack core metadata, which files are named for
another project) and the bytes are edited in C. This applies when the page is regular: every
link under the files base with a plain path, every file with a lower-case sha256, and each
wheel's metadata keys absent, true, or false in warehouse's sorted order. `rewrite` answers
None otherwise, and pagereader.py builds the document in Python instead; both give the same
document (tests/test_passthrough.py compares them).
"""
from __future__ import annotations

import re
from typing import Any

import msgspec

from . import names
from .pagemodel import EXTRACTED

_SEGMENT = rb"[A-Za-z0-9][A-Za-z0-9._+!~=-]{0,254}"
_PATH = rb"(?:" + _SEGMENT + rb"/){0,6}" + _SEGMENT  # no '%': an encoded path takes the long way
_URL_KEY = re.compile(rb'"url"\s*:')
_FILENAME = b'"filename"'
# Warehouse sorts keys: the two metadata keys come just before the file name.
_NOT_ADVERTISED = re.compile(
    rb'"core-metadata"\s*:\s*false\s*,\s*"data-dist-info-metadata"\s*:\s*false\s*,\s*'
    rb'("filename"\s*:\s*"([^"\\]*\.whl)")')
# The same, the file name left in place: when no such wheel has a sha256 to advertise, every
# match has the same replacement, a literal (no Python call per wheel).
_NOT_ADVERTISED_AHEAD = re.compile(
    rb'"core-metadata"\s*:\s*false\s*,\s*"data-dist-info-metadata"\s*:\s*false\s*,\s*'
    rb'(?="filename"\s*:\s*"[^"\\]*\.whl")')
_NAME = re.compile(rb'"name"\s*:\s*"[^"\\]*"')
# A false flag says what an absent one says; the long way drops them, and so does HTML.
_FLAG_KEY = rb'"(?:core-metadata|data-dist-info-metadata)"\s*:\s*false'
_FALSE_AFTER = re.compile(rb",\s*" + _FLAG_KEY + rb"(?=\s*[,}])")
_FALSE_FIRST = re.compile(rb"\{\s*" + _FLAG_KEY + rb"\s*,\s*")  # a literal first: no lookbehind
# The two false flags of a file as json.dumps writes them, spaced or compact: removed by
# bytes.replace, what _FALSE_AFTER does to them (valid JSON has ',' or '}' after a value), so
# that the regexes, slow to scan a page of megabytes for a ',', run only where others are left.
_FALSE_PAIRS = (b', "core-metadata": false, "data-dist-info-metadata": false',
                b',"core-metadata":false,"data-dist-info-metadata":false')
_FALSE_LEFT = re.compile(rb'metadata"\s*:\s*false')
_RELATIVE = b'"url":"../../packages/'
# PEP 740 provenance URLs pass as they are when absolute; the long way resolves the others.
_ODD_PROVENANCE = re.compile(rb'"provenance"\s*:\s*(?=\S)(?!"https?://)')
HIGHEST = (1, 4)


# Only what the rewrite reads, decoded by msgspec, which skips every other key in C: the
# page's other values are never built as Python objects (json.loads and a pass over its dicts
# were half of a cold page's CPU). A page whose values are not of these types, or that
# msgspec refuses (not UTF-8, NaN), takes the long way, which says what is wrong with it.
class _File(msgspec.Struct):
    filename: str
    hashes: dict[str, str]
    core_metadata: Any = msgspec.field(name="core-metadata", default=msgspec.UNSET)
    dist_info: Any = msgspec.field(name="data-dist-info-metadata", default=msgspec.UNSET)


class _Meta(msgspec.Struct):
    api_version: str = msgspec.field(name="api-version")


class _Page(msgspec.Struct):
    meta: _Meta
    files: list[_File]
    versions: list[Any] = []


_DECODE = msgspec.json.Decoder(_Page).decode


def rewrite(body: bytes, files_base: str, prefix: str, name: str,
            metadata: dict[str, str]) -> tuple[bytes, list[str]] | None:
    """(our document's bytes, the paths of files whose names say another project), or None
    when the page is not regular enough. `files_base` ends with '/'; `prefix` is the upstream's
    name and '/' when there are several; `metadata` the sha256 of `.metadata` files the proxy
    served, by path, advertised for the wheels the upstream gives no core metadata for."""
    try:
        data = _DECODE(body)
        claimed = tuple(int(part) for part in data.meta.api_version.split("."))
    except (msgspec.DecodeError, ValueError):
        return None  # the long way says what is wrong with it
    files = data.files
    wheels, odd, false = _read(files, name)
    if claimed > HIGHEST or wheels is None:
        return None
    if b'"provenance"' in body and _ODD_PROVENANCE.search(body):
        return None
    # Only the base is replaced, a literal (a group in the replacement costs a Python call per
    # link), and only where a plain path follows: a link whose path is not plain is left, so
    # the count falls short of the files.
    links = rb'"url"\s*:\s*"' + re.escape(files_base.encode()) + rb"(?=" + _PATH + rb'")'
    body, count = re.subn(links, _RELATIVE + prefix.encode(), body)
    # Every "url" key was replaced: counted as a literal first (each key is one), the regex only
    # when the literal is found more often (a value "url" somewhere).
    if count != len(files) or (body.count(b'"url"') != count
                               and len(_URL_KEY.findall(body)) != count):
        return None  # an odd path, or a link elsewhere
    known = {names.filename(path.removesuffix(".metadata")): sha256
             for path, sha256 in metadata.items()}
    body = _advertise(body, wheels, known)
    if body is None:
        return None
    if false:
        body = _without_false_flags(body)
    # The project's name: the first "name" key (no file entry has one), in one copy.
    body, count = _NAME.subn(b'"name":"' + name.encode() + b'"', body, count=1)
    if not count:
        return None
    return body, [_path_of(body, filename) for filename in odd]


def _read(files: list[_File], name: str) -> tuple[list[tuple[str, str | None]] | None, list[str], int]:
    """Each file in order with, for a wheel, "ok", "false" or "absent" (its core metadata;
    None for other files), the files named for another project, and how many files have a
    false flag; None for the first when a file is not regular. One pass in Python over thousands of files: kept lean
    (names.names_project is asked only about a name whose head is not the project's, as the
    head of a wheel or an sdist: the rare ones)."""
    wheels, odd, false = [], [], 0
    heads = (name, name.replace("-", "_"))  # names_project's two quick answers
    unset = msgspec.UNSET
    for entry in files:
        filename, hashes = entry.filename, entry.hashes
        sha256 = hashes.get("sha256")
        if sha256 is None:
            return None, odd, false  # a file without a sha256 may keep an earlier page's
        if len(hashes) == 1:
            if sha256 != sha256.lower():
                return None, odd, false  # the long way writes them in lower case
        elif any(key != key.lower() or value != value.lower() for key, value in hashes.items()):
            return None, odd, false
        flag, other = entry.core_metadata, entry.dist_info
        if flag is False or other is False:
            false += 1
        if filename.endswith(".whl"):
            if flag if flag is not unset else (other if other is not unset else False):
                state = "ok"
            elif flag is not unset or other is not unset:
                state = "false"
            else:
                state = "absent"
            head = filename.split("-", 1)[0]
        elif filename.endswith((".tar.gz", ".zip")) and "-" in filename:
            state, head = None, filename.rsplit("-", 1)[0]
        else:
            state = head = None
        wheels.append((filename, state))
        if head not in heads and not names.names_project(filename, name):
            odd.append(filename)
    return wheels, odd, false


def _advertise(body: bytes, wheels: list[tuple[str, str | None]], known: dict[str, str]) -> bytes | None:
    """Every wheel advertises its core metadata (PEP 658/714; the proxy extracts it where the
    upstream has none), with the sha256 of what the proxy served where it knows one."""

    def flag(filename: bytes) -> bytes:
        sha256 = known.get(filename.decode())
        return b'{"sha256":"' + sha256.encode() + b'"}' if sha256 else b"true"

    def keys(filename: bytes) -> bytes:
        value = flag(filename)
        return (b'"core-metadata":' + value + b',"data-dist-info-metadata":' + value + b',"'
                + EXTRACTED.encode() + b'":true,')

    false = [filename for filename, state in wheels if state == "false"]
    if false:
        if any(filename in known for filename in false):
            body, count = _NOT_ADVERTISED.subn(lambda m: keys(m[2]) + m[1], body)
        else:
            body, count = _NOT_ADVERTISED_AHEAD.subn(keys(b""), body)  # "true" for each
        if count != len(false):
            return None  # keys in another order: the long way
    if not any(state == "absent" for _, state in wheels):
        return body
    # The keys go before each such wheel's "filename" key. Split there (in C), one piece per
    # file when the key occurs nowhere else, and joined again with the keys where they go:
    # one call of keys() per wheel took 17 ms of a 2 MB page whose wheels all lack them.
    parts = body.split(_FILENAME)
    if len(parts) != len(wheels) + 1:
        return None  # "filename" elsewhere too: the long way
    plain, bare = keys(b"") + _FILENAME, _FILENAME  # "true": no sha256 known for it
    seps = [bare if state != "absent" else
            keys(filename.encode()) + _FILENAME if filename in known else plain
            for filename, state in wheels]
    return b"".join([piece for pair in zip(parts, seps) for piece in pair]) + parts[-1]


def _without_false_flags(body: bytes) -> bytes:
    """The body without its false metadata flags (what the long way drops)."""
    for pair in _FALSE_PAIRS:
        body = body.replace(pair, b"")
    if _FALSE_LEFT.search(body) is None:
        return body
    return _FALSE_FIRST.sub(b"{", _FALSE_AFTER.sub(b"", body))


def _path_of(body: bytes, filename: str) -> str:
    """The path of a file of our document, by its link (a file named for another project)."""
    end = body.find(b"/" + filename.encode() + b'"')
    start = body.rfind(_RELATIVE, 0, end) + len(_RELATIVE)
    return body[start:end + 1 + len(filename.encode())].decode()
