"""Where published files live: one small interface, a local directory or an S3 bucket behind it.

The shape is warehouse's file storage: `get(path)`, `store(path, file_path)`, delete by
prefix, and every storage fault turned into FileNotFoundError (or False) at the boundary, so a
caller never knows which implementation it has. The local directory is the default and stays
each node's spool (downloads in progress, followers on the same node); with
PYPI_STORAGE_URL=s3://bucket/prefix the bucket is shared by every node (pypicache/s3.py,
chosen by pypicache/__init__.py).
"""
from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Protocol

CHUNK = 256 * 1024
# Published files' mtimes lie in 2000-2019: in the past (a Last-Modified in the future is
# invalid, RFC 9110 8.8.2.1) and spread by path, so that no two files share an ETag by chance.
_MTIME_EPOCH = 946684800  # 2000-01-01T00:00:00Z
_MTIME_SPAN = 20 * 365 * 86400


def published_mtime(path: str) -> int:
    """The mtime of the file published at `path`: a function of the path alone, so that its
    validators (pypicache/conditional.py) are known before its download ends, and are the same on
    every node, after a restart and after an eviction and a new download."""
    return _MTIME_EPOCH + int(hashlib.sha1(path.encode()).hexdigest()[:8], 16) % _MTIME_SPAN


@dataclass(frozen=True)
class Item:
    """One stored file: its path under the storage root, size and last change (epoch seconds)."""

    path: str
    size: int
    mtime: float


class Blob(Protocol):
    """A stored file being read: its whole size, and the bytes [start, stop) as chunks."""

    size: int

    def chunks(self, start: int = 0, stop: int | None = None) -> Iterator[bytes]: ...

    def read(self, offset: int, length: int) -> bytes: ...

    def close(self) -> None: ...


class Storage(Protocol):
    def get(self, path: str) -> Blob:
        """The file, or FileNotFoundError (also for any fault of the storage itself)."""

    def store(self, path: str, file_path: Path, meta: dict[str, str] | None = None) -> bool:
        """Publish a verified file; False when another writer was first (the bytes are equal)."""

    def delete(self, prefix: str) -> int:
        """Remove the file `prefix`, or every file under the folder `prefix/`; how many went."""

    def delete_files(self, paths: list[str]) -> None:
        """Remove these files, whichever of them are there (none looked for first)."""

    def list(self, prefix: str = "") -> Iterator[Item]: ...


class FileBlob:
    """A local file, already open: an open descriptor keeps the bytes even if it is unlinked."""

    def __init__(self, file: BinaryIO):
        self.file = file
        self.size = os.fstat(file.fileno()).st_size

    def chunks(self, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
        stop = self.size if stop is None else stop
        fd = self.file.fileno()
        while start < stop and (chunk := os.pread(fd, min(CHUNK, stop - start), start)):
            start += len(chunk)
            yield chunk

    def read(self, offset: int, length: int) -> bytes:
        return b"".join(self.chunks(offset, min(offset + length, self.size)))

    def close(self) -> None:
        self.file.close()


class LocalStorage:
    """Files under one directory; publishing is an atomic rename of a file beside it."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def file(self, path: str) -> Path:
        return self.root / path  # `path` passed names.file_path: no '..', no absolute parts

    def get(self, path: str) -> FileBlob:
        try:
            return FileBlob(open(self.file(path), "rb"))
        except (IsADirectoryError, NotADirectoryError):
            raise FileNotFoundError(path) from None

    def store(self, path: str, file_path: Path, meta: dict[str, str] | None = None) -> bool:
        """Rename the file into place with its published_mtime (a fault is an OSError: the
        cache directory turns it into a 507, pypicache/cachedir.py)."""
        target = self.file(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(file_path, 0o644)
        os.utime(file_path, (time.time(), published_mtime(path)))
        os.replace(file_path, target)  # same inode: followers of the temp file see it published
        return True

    def delete(self, prefix: str) -> int:
        removed = 0
        for item in self.list(prefix):
            self.file(item.path).unlink(missing_ok=True)
            removed += 1
        return removed

    def delete_files(self, paths: list[str]) -> None:
        for path in paths:
            try:
                self.file(path).unlink(missing_ok=True)
            except (IsADirectoryError, NotADirectoryError):
                pass

    def list(self, prefix: str = "") -> Iterator[Item]:
        base = self.file(prefix) if prefix else self.root
        candidates = [base] if base.is_file() else base.rglob("*")
        for file in candidates:
            try:
                stat = file.stat()
            except OSError:
                continue
            if file.is_file():
                yield Item(file.relative_to(self.root).as_posix(), stat.st_size, stat.st_mtime)
