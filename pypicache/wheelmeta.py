"""A wheel's core metadata (`<name>.dist-info/METADATA`), read by the standard zipfile over a
seekable file whose reads become reads of a Source (the cached wheel, or Range requests)."""
from __future__ import annotations

import errno
import struct
import zipfile
import zlib
from email.parser import BytesHeaderParser
from typing import Iterator, Protocol

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from .errors import IntegrityError, ProxyError

# The first read, from the end: it holds the end record, the ZIP64 records, and for most
# wheels the whole directory and METADATA too (uv reads about as much). zipfile asks for the
# last 64 KiB only when the archive has a comment; the window then fetches what it lacks.
TAIL = 16 * 1024
MAX_DIRECTORY = 64 << 20  # a wheel of ~500,000 files; past this it is an upstream fault
MAX_METADATA = 16 << 20  # core metadata is a few KB; past this it is a bomb or a fault
_LOCAL_HEADER = 30  # APPNOTE 4.3.7, before the member's name and extra field
_LOCAL_EXTRA = 1024  # room for a local header's extra field, fetched with the member
_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)  # what wheel builders write
_INFO = ".dist-info"
# What zipfile raises for a malformed archive besides BadZipFile: a record cut short, a name
# that is not UTF-8 (ValueError), a version or method it does not know, a deflate stream that
# ends early (EOFError) or does not inflate, a seek before the start (OSError).
_MALFORMED = (zipfile.BadZipFile, zlib.error, struct.error, EOFError, NotImplementedError,
              ValueError, OSError)


class BadWheel(IntegrityError):
    """The bytes are not a wheel we can read metadata from: a 502, and nothing is cached."""


class Source(Protocol):
    """Random access to a file's bytes: the cached wheel, or the upstream's by Range."""

    size: int

    def read(self, offset: int, length: int) -> bytes: ...


class _Window:
    """The read-only, seekable file zipfile reads: each stretch of the source read once is
    kept, so zipfile's many small reads cost one read of the source per stretch it lacks.

    A fault of the source itself is kept in `failure`: zipfile turns some OSErrors into
    BadZipFile, and a storage or upstream fault must not pass for a bad wheel.
    """

    def __init__(self, source: Source):
        self.source, self.size = source, source.size
        self.position = 0
        self.failure: BaseException | None = None
        self._spans: list[tuple[int, bytes]] = []  # (start, bytes): sorted, never touching
        self.fetch(max(0, self.size - TAIL), self.size)

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = 0) -> int:
        position = offset + (0, self.position, self.size)[whence]
        if position < 0:  # as a real file answers; zipfile relies on it for small files
            raise OSError(errno.EINVAL, "seek before the start of the file")
        self.position = position
        return position

    def read(self, length: int | None = -1) -> bytes:
        stop = self.size if length is None or length < 0 else min(self.size, self.position + length)
        if stop - self.position > MAX_DIRECTORY:  # the directory is the longest read there is
            raise BadWheel(f"a zip record of {stop - self.position} bytes")
        data = self.fetch(self.position, stop)
        self.position += len(data)
        return data

    def fetch(self, start: int, stop: int) -> bytes:
        """The bytes [start, stop) (clipped to the file), reading only what is not kept."""
        start, stop = max(0, start), min(stop, self.size)
        if start >= stop:
            return b""
        near = [span for span in self._spans if span[0] <= stop and span[0] + len(span[1]) >= start]
        first = min([start] + [at for at, _ in near])
        pieces, at = [], first
        for span_start, data in near:  # in order, with a gap before each but the first
            if span_start > at:
                pieces.append(self._read(at, span_start - at))
            pieces.append(data)
            at = span_start + len(data)
        if at < stop:
            pieces.append(self._read(at, stop - at))
        merged = b"".join(pieces)
        self._spans = sorted([span for span in self._spans if span not in near] + [(first, merged)])
        return merged[start - first:stop - first]

    def _read(self, offset: int, length: int) -> bytes:
        try:
            data = self.source.read(offset, length)
        except BaseException as error:
            self.failure = error
            raise
        if len(data) != length:
            self.failure = BadWheel("the file ended early")
            raise self.failure
        return data


def core_metadata(source: Source, filename: str) -> bytes:
    """The exact bytes of the wheel's `.dist-info/METADATA` member (PEP 658 asks for them
    unchanged), checked against the member's CRC-32 and size by zipfile."""
    try:
        project = canonicalize_name(parse_wheel_filename(filename)[0])
    except InvalidWheelFilename as error:
        raise BadWheel(f"not a wheel file name: {filename}") from error
    window = _Window(source)
    try:
        with zipfile.ZipFile(window) as archive:  # type: ignore[arg-type]  # read, seek, tell
            member = _find(archive, project, filename)
            if member.flag_bits & 0x1:
                raise BadWheel("METADATA is encrypted")
            if member.compress_type not in _METHODS:
                raise BadWheel(f"METADATA uses zip compression method {member.compress_type}")
            if max(member.file_size, member.compress_size) > MAX_METADATA:
                raise BadWheel(f"METADATA of {member.file_size} bytes")
            # The local header, its name and extra field and the member in one read, not four.
            window.fetch(member.header_offset, member.header_offset + _LOCAL_HEADER
                         + len(member.orig_filename.encode()) + _LOCAL_EXTRA + member.compress_size)
            with archive.open(member) as opened:
                content = opened.read()
    except ProxyError:
        raise  # BadWheel, or the source's own fault (upstream, storage)
    except _MALFORMED as error:
        if window.failure is not None:
            raise window.failure from None
        raise BadWheel(f"{filename} is not a zip we can read: {type(error).__name__}: "
                       f"{str(error)[:200]}") from None
    if len(content) != member.file_size:
        raise BadWheel("METADATA does not match its size")
    return content


def _find(archive: zipfile.ZipFile, project: str, filename: str) -> zipfile.ZipInfo:
    """The METADATA of the one top-level .dist-info directory, as pip and uv find it: its
    name may differ from the file name in case and normalisation, never in the project."""
    names = archive.namelist()
    directories = {name.split("/", 1)[0] for name in names if name.count("/") == 1}
    info = [d[:-len(_INFO)] for d in directories if d.endswith(_INFO)]
    named = [d + _INFO for d in info if canonicalize_name(d.rsplit("-", 1)[0]) == project]
    if len(named) != 1:
        raise BadWheel(f"{filename} has {len(named) or 'no'} .dist-info directories of its project")
    try:
        return archive.getinfo(named[0] + "/METADATA")  # the last of that name, as pip reads it
    except KeyError:
        raise BadWheel(f"{filename} has no {named[0]}/METADATA") from None


def requirements(data: bytes) -> Iterator[Requirement]:
    """The `Requires-Dist` of a core metadata file (unreadable ones skipped)."""
    for line in BytesHeaderParser().parsebytes(data).get_all("Requires-Dist") or ():
        try:
            yield Requirement(str(line))
        except InvalidRequirement:
            continue
