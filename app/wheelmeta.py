"""A wheel's core metadata (`<name>.dist-info/METADATA`) read out of its zip by byte ranges."""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Protocol

from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from .errors import IntegrityError

# The first read from the end: it holds the end record (22 bytes and a comment, rarely any),
# the ZIP64 locator, and for most wheels the whole directory and METADATA too (uv reads about
# as much). Only a comment longer than this costs a second read, of the most there can be.
TAIL = 16 * 1024
_LONGEST_TAIL = 22 + 0xFFFF + 20 + 56  # end record with the longest comment, ZIP64 records
MAX_DIRECTORY = 64 << 20  # a wheel of ~500,000 files; past this it is an upstream fault
MAX_METADATA = 16 << 20  # core metadata is a few KB; past this it is a bomb or a fault
_LOCAL_SLACK = 1024  # a local header's extra field, read with the member in one range

_END = struct.Struct("<4s4H2LH")  # APPNOTE 4.3.16: end of central directory record
_LOCATOR = struct.Struct("<4sLQL")  # 4.3.15: ZIP64 end of central directory locator
_END64 = struct.Struct("<4sQ2H2L4Q")  # 4.3.14: ZIP64 end of central directory record
_ENTRY = struct.Struct("<4s6H3L5H2L")  # 4.3.12: central directory file header
_LOCAL = struct.Struct("<4s5H3L2H")  # 4.3.7: local file header
_UTF8_NAMES = 0x800  # general purpose flag bit 11
_INFO = ".dist-info"


class BadWheel(IntegrityError):
    """The bytes are not a wheel we can read metadata from: a 502, and nothing is cached."""


class Source(Protocol):
    """Random access to a file's bytes: the cached wheel, or the upstream's by Range."""

    size: int

    def read(self, offset: int, length: int) -> bytes: ...


@dataclass(frozen=True)
class _Member:
    name: str
    method: int
    flags: int
    crc: int
    compressed: int
    size: int
    offset: int  # of the local header, in the file (prepended bytes accounted for)


def core_metadata(source: Source, filename: str) -> bytes:
    """The exact bytes of the wheel's `.dist-info/METADATA` member (PEP 658 asks for them
    unchanged), checked against the member's CRC-32 and size."""
    try:
        project = canonicalize_name(parse_wheel_filename(filename)[0])
    except InvalidWheelFilename as error:
        raise BadWheel(f"not a wheel file name: {filename}") from error
    member = _find(_directory(source), project, filename)
    return _extract(source, member)


def _read(source: Source, offset: int, length: int) -> bytes:
    if offset < 0 or length < 0 or offset + length > source.size:
        raise BadWheel("a zip record points outside the file")
    data = source.read(offset, length)
    if len(data) != length:
        raise BadWheel("the file ended early")
    return data


def _directory(source: Source) -> list[_Member]:
    tail_start = max(0, source.size - TAIL)
    tail = _read(source, tail_start, source.size - tail_start)
    end = _end_record(tail)
    if end < 0 and tail_start > 0:
        tail_start = max(0, source.size - _LONGEST_TAIL)
        tail = _read(source, tail_start, source.size - tail_start)
        end = _end_record(tail)
    if end < 0:
        raise BadWheel("no zip end record: not a zip, or truncated")
    _, disk, _, _, _, dir_size, dir_offset, _ = _END.unpack_from(tail, end)
    end_at = tail_start + end  # where the directory really ends (the records follow it)
    locator = end - _LOCATOR.size
    if locator >= 0 and tail[locator:locator + 4] == b"PK\x06\x07":
        _, _, record_at, _ = _LOCATOR.unpack_from(tail, locator)
        # The record sits just before the locator (zipfile reads it there too); the offset
        # in the locator is the fallback, as it is wrong when bytes were prepended.
        end_at = tail_start + locator - _END64.size
        record = _read(source, end_at, _END64.size) if end_at >= 0 else b""
        if record[:4] != b"PK\x06\x06":
            end_at = record_at
            record = _read(source, record_at, _END64.size)
        if record[:4] != b"PK\x06\x06":
            raise BadWheel("the ZIP64 locator points at no ZIP64 end record")
        fields = _END64.unpack(record)
        dir_size, dir_offset = fields[8], fields[9]
    elif disk != 0:
        raise BadWheel("a multi-disk zip")
    if dir_size > MAX_DIRECTORY:
        raise BadWheel(f"a zip directory of {dir_size} bytes")
    start = end_at - dir_size
    if start < 0:
        raise BadWheel("the zip directory runs before the file starts")
    shift = start - dir_offset  # bytes prepended to the zip (zipfile's "concat")
    if start >= tail_start:
        data = tail[start - tail_start:start - tail_start + dir_size]
    else:
        data = _read(source, start, dir_size)
    return _members(data, shift)


def _end_record(tail: bytes) -> int:
    """Where the end record starts (the last signature whose comment ends the file), or -1."""
    at = len(tail)
    while (at := tail.rfind(b"PK\x05\x06", 0, at)) >= 0:
        if at + _END.size <= len(tail):
            comment = _END.unpack_from(tail, at)[7]
            if at + _END.size + comment == len(tail):
                return at
    return -1


def _members(data: bytes, shift: int) -> list[_Member]:
    members, at = [], 0
    while at + _ENTRY.size <= len(data):
        (signature, _, _, flags, method, _, _, crc, compressed, size, name_length,
         extra_length, comment_length, _, _, _, offset) = _ENTRY.unpack_from(data, at)
        if signature != b"PK\x01\x02":
            raise BadWheel("a broken zip directory entry")
        at += _ENTRY.size
        raw_name = data[at:at + name_length]
        extra = data[at + name_length:at + name_length + extra_length]
        at += name_length + extra_length + comment_length
        if at > len(data):
            raise BadWheel("the zip directory ended early")
        size, compressed, offset = _zip64(extra, size, compressed, offset)
        name = raw_name.decode("utf-8" if flags & _UTF8_NAMES else "cp437", "replace")
        members.append(_Member(name, method, flags, crc, compressed, size, offset + shift))
    return members


def _zip64(extra: bytes, size: int, compressed: int, offset: int) -> tuple[int, int, int]:
    """Sizes and offset from the ZIP64 extra field where the 32-bit ones are saturated (4.5.3)."""
    at = 0
    while at + 4 <= len(extra):
        kind, length = struct.unpack_from("<2H", extra, at)
        if kind == 0x0001:
            values = list(struct.unpack_from(f"<{length // 8}Q", extra, at + 4))
            if size == 0xFFFFFFFF and values:
                size = values.pop(0)
            if compressed == 0xFFFFFFFF and values:
                compressed = values.pop(0)
            if offset == 0xFFFFFFFF and values:
                offset = values.pop(0)
            break
        at += 4 + length
    return size, compressed, offset


def _find(members: list[_Member], project: str, filename: str) -> _Member:
    """The METADATA of the one top-level .dist-info directory, as pip and uv find it: its
    name may differ from the file name in case and normalisation, never in the project."""
    directories = {m.name.split("/", 1)[0] for m in members if m.name.count("/") == 1}
    info = [d[:-len(_INFO)] for d in directories if d.endswith(_INFO)]
    named = [d + _INFO for d in info if canonicalize_name(d.rsplit("-", 1)[0]) == project]
    if len(named) != 1:
        raise BadWheel(f"{filename} has {len(named) or 'no'} .dist-info directories of its project")
    wanted = named[0] + "/METADATA"
    for member in members:
        if member.name == wanted:
            return member
    raise BadWheel(f"{filename} has no {wanted}")


def _extract(source: Source, member: _Member) -> bytes:
    if member.flags & 0x1:
        raise BadWheel("METADATA is encrypted")
    if member.size > MAX_METADATA or member.compressed > MAX_METADATA:
        raise BadWheel(f"METADATA of {member.size} bytes")
    span = min(_LOCAL.size + len(member.name.encode()) + _LOCAL_SLACK + member.compressed,
               source.size - member.offset)
    data = _read(source, member.offset, span)
    signature, *_, name_length, extra_length = _LOCAL.unpack_from(data)
    if signature != b"PK\x03\x04":
        raise BadWheel("no local header where the directory says")
    start = _LOCAL.size + name_length + extra_length
    if start + member.compressed > len(data):  # an unusually long extra field
        data = _read(source, member.offset, start + member.compressed)
    body = data[start:start + member.compressed]
    if member.method == 0:
        content = body
    elif member.method == 8:
        inflater = zlib.decompressobj(-15)
        try:
            content = inflater.decompress(body, member.size + 1)
        except zlib.error as error:
            raise BadWheel(f"METADATA does not inflate: {error}") from error
    else:
        raise BadWheel(f"METADATA uses zip compression method {member.method}")
    if len(content) != member.size or zlib.crc32(content) != member.crc:
        raise BadWheel("METADATA does not match its CRC-32 or size")
    return content
