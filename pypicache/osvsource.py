"""An OSV source on disk (the policy's `[advisories] osv`): a directory of OSV JSON records
(every *.json under it) or a zip of them, such as the PyPI export of the OSV database. Its
records read one at a time in the order of their names, what says it changed, and a copy of
its records kept as one zip (pypicache/policywatch.py's last good copy)."""
from __future__ import annotations

import fcntl
import os
import zipfile
from pathlib import Path
from typing import Iterator

RECORD_BYTES = 4 << 20  # no OSV record is this big: a bigger one is no record of ours


class SourceError(ValueError):
    """An OSV source we will not use, and why (the policy keeps its last good version)."""


def signature(path: Path) -> tuple | None:
    """What says a source changed, cheaply (one stat): a zip's inode, mtime and size; a
    directory's inode and mtime, which change when a record is added, removed or renamed
    into it (rsync, `mv`); a record rewritten in place changes neither (docs/POLICY.md)."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size if path.is_file() else 0


def records(path: Path) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of each record, by name; one in memory at a time (an export of tens of
    thousands of records is hundreds of MB unpacked)."""
    if path.is_dir():
        for file in sorted(path.rglob("*.json")):
            try:
                data = file.read_bytes()
            except OSError as error:
                raise SourceError(f"{file}: cannot be read: {error.strerror}") from None
            if len(data) > RECORD_BYTES:
                raise SourceError(f"{file.name}: too big for an OSV record")
            yield str(file.relative_to(path)), data
        return
    try:
        with zipfile.ZipFile(path) as archive:
            for info in sorted(archive.infolist(), key=lambda i: i.filename):
                if info.is_dir() or not info.filename.endswith(".json"):
                    continue
                if info.file_size > RECORD_BYTES:
                    raise SourceError(f"{info.filename}: too big for an OSV record")
                yield info.filename, archive.read(info)
    except FileNotFoundError:
        raise SourceError("no such directory or zip") from None
    except OSError as error:
        raise SourceError(f"cannot be read: {error.strerror or error}") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as error:
        raise SourceError(f"is neither a directory nor a readable zip ({error})") from None


def keep(source: Path, digest: str, copy: Path) -> bool:
    """A copy of a source's records as one zip at `copy`, unless the copy already has the
    records of `digest` or another process is writing it; whether it was written."""
    said = copy.with_name(copy.name + ".digest")
    try:
        if said.read_text() == digest:
            return False
    except OSError:
        pass
    copy.parent.mkdir(parents=True, exist_ok=True)
    with open(copy.with_name(copy.name + ".lock"), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another worker writes the same records
            return False
        temp = copy.with_name(f".{copy.name}.{os.getpid()}")
        with zipfile.ZipFile(temp, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in records(source):
                archive.writestr(name, data)
        os.replace(temp, copy)
        said.write_text(digest)
    return True
