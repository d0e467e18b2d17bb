"""The cache on disk: where things live, atomic publishing, and the locks workers share.

Layout under the cache root:
  files/<path>         published package files, exactly as the upstream had them
  pages/<project>/     rendered index pages (page.html, page.json, their .gz) and state.json
  tmp/                 downloads in progress (<key>.<random>.part) and their announcements
  locks/<key>.lock     lock files: opened per use after fork, removed by their holder on release

Correctness rests on os.replace of a fully written, verified temp file; locks only save
duplicate work and let followers find a download in progress.

A lock file exists only while its lock is held (plus those of holders killed since, until the
name is next locked and released), so locks/ stays as small as the work in flight, whatever
names clients send. Removing a lock file is safe because the holder removes it before it lets
go, and whoever gets a lock checks that the file it locked is still the one at the path: a
waiter that opened the old file sees the difference and tries again with the new one.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Iterator

from . import wakeups
from .errors import StorageError, UpstreamTimeout
from .storage import LocalStorage, published_mtime

log = logging.getLogger(__name__)


def key(name: str) -> str:
    """The name of a lock, temp or claim file of `name` (a path, a page)."""
    return hashlib.sha1(name.encode()).hexdigest()


CLAIMS_PRUNED_EVERY = 1000  # claims between two removals of the expired ones
class CacheDir:
    """The cache directory's layout and its write primitives; making it touches nothing."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.files = self.root / "files"
        self.pages = self.root / "pages"
        self.tmp = self.root / "tmp"
        self.locks = self.root / "locks"
        self.storage = LocalStorage(self.files)  # the published files (pypicache/storage.py)
        self._claims = 0  # made by this process, see `claim`

    def prepare(self) -> "CacheDir":
        """Make the directories and remove what crashed writers left in tmp/: gunicorn does
        as the server starts; a process's first write makes the directories it lacks."""
        self._make_directories()
        self.sweep_temp()
        return self

    def _make_directories(self) -> None:
        for directory in (self.files, self.pages, self.tmp, self.locks):
            directory.mkdir(parents=True, exist_ok=True)

    def _first_write(self, make):
        """`make()`, once the directories are made if the cache has none yet (a read-only
        command never writes, so building a CacheDir makes none). Not swept then: another
        thread's temp file, made but not yet locked, would go (a concurrent /healthz saw it)."""
        try:
            return make()
        except FileNotFoundError:
            self._make_directories()
            return make()

    def file(self, path: str) -> Path:
        return self.files / path  # `path` passed names.file_path: no '..', no absolute parts

    def lock_path(self, name: str) -> Path:
        return self.locks / f"{key(name)}.lock"

    def announce_path(self, name: str) -> Path:
        return self.tmp / f"{key(name)}.json"

    # --- locks ---------------------------------------------------------------------------
    def try_lock(self, name: str) -> int | None:
        """An exclusive lock on `name`'s lock file, or None if another holder has it.
        Release it with `unlock`."""
        path = self.lock_path(name)
        while True:
            fd = self._first_write(lambda: os.open(path, os.O_RDWR | os.O_CREAT, 0o644))
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
            try:
                current = os.stat(path)
            except FileNotFoundError:
                current = None
            mine = os.fstat(fd)
            if current is not None and (current.st_ino, current.st_dev) == (mine.st_ino, mine.st_dev):
                return fd
            os.close(fd)  # its holder removed it as we locked it: lock the file there now

    def unlock(self, name: str, fd: int) -> None:
        """Release a lock from try_lock, removing its file first (while still holding it)."""
        try:
            self.lock_path(name).unlink(missing_ok=True)
        finally:
            os.close(fd)
            wakeups.changed("lock " + name)

    def claim(self, kind: str, name: str, ttl: float) -> bool:
        """Whether the caller is the one on this machine to do the work `name` now: once per
        `ttl` seconds, whichever worker asks first. A claim is a file under tmp/<kind>/, its
        mtime when the work was begun; two workers that look at the same instant may both get
        it, so it is for work that is only wasted when repeated (fetching ahead), not a lock."""
        directory = self.tmp / kind
        path = directory / hashlib.sha1(name.encode()).hexdigest()
        now = time.time()
        try:
            if now - os.stat(path).st_mtime < ttl:
                return False
        except FileNotFoundError:
            pass
        try:
            directory.mkdir(exist_ok=True)
            path.touch()
        except OSError:
            return True  # a claim that cannot be written only costs repeated work
        self._claims += 1
        if self._claims % CLAIMS_PRUNED_EVERY == 0:
            for old in directory.iterdir():
                with contextlib.suppress(OSError):
                    if now - old.stat().st_mtime >= ttl:
                        old.unlink()
        return True

    def touch_lock(self, name: str) -> None:
        """The holder shows progress: waiters in `lock` count their timeout from now."""
        with contextlib.suppress(OSError):
            os.utime(self.lock_path(name))

    def _idle(self, name: str) -> float:
        """Seconds since the lock's holder took it or last showed progress."""
        try:
            return time.time() - os.stat(self.lock_path(name)).st_mtime
        except FileNotFoundError:
            return 0.0  # just released: try again

    @contextlib.contextmanager
    def lock(self, name: str, timeout: float) -> Iterator[None]:
        """Wait for the lock until its holder has shown no progress for `timeout` seconds
        (never block a worker for ever, never give up on a slow but healthy holder)."""
        start = time.monotonic()
        # Unlock wakes us in this process; from another, a page's fetch (another worker's,
        # or its fetch ahead) is looked at 10 ms apart for a second, then 25.
        backoff = wakeups.Backoff(0.005, 0.01, "lock " + name, later=0.025)
        while True:
            backoff.arm()
            if (fd := self.try_lock(name)) is not None:
                break
            if time.monotonic() - start > timeout and self._idle(name) > timeout:
                raise UpstreamTimeout("timed out waiting for another worker's fetch")
            backoff.wait()
        try:
            yield
        finally:
            self.unlock(name, fd)  # the kernel releases the flock too if we die

    @staticmethod
    def held_by_other(fd: int) -> bool:
        """True while another open file description holds an exclusive flock on this file."""
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False

    # --- atomic writes -------------------------------------------------------------------
    def new_temp(self, prefix: str) -> tuple[int, Path]:
        try:
            fd, name = self._first_write(
                lambda: tempfile.mkstemp(dir=self.tmp, prefix=prefix + ".", suffix=".part"))
        except OSError as error:
            raise storage_error(error) from error
        # Held until the writer closes it or dies: how sweep_temp and followers tell a live
        # download from a dead one.
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd, Path(name)

    def publish(self, temp: Path, target: Path, mtime: int | None = None) -> None:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(temp, 0o644)
            if mtime is not None:
                os.utime(temp, (time.time(), mtime))
            os.replace(temp, target)
        except OSError as error:
            raise storage_error(error) from error

    def publish_file(self, temp: Path, path: str) -> None:
        """Publish the verified file `temp` at `path` (with its published_mtime)."""
        try:
            self.storage.store(path, temp)
        except OSError as error:
            raise storage_error(error) from error

    def published(self, path: str, fd: int) -> bool:
        """Whether the open temp file `fd` is the file now published at `path` (its inode)."""
        try:
            done = os.stat(self.file(path))
        except OSError:
            return False
        mine = os.fstat(fd)
        return (done.st_ino, done.st_dev) == (mine.st_ino, mine.st_dev)

    def write_file(self, path: str, data: bytes) -> None:
        """Publish bytes made here (a wheel's METADATA) at `path`, as publish_file does."""
        self.write_atomic(self.file(path), data, published_mtime(path))

    def write_atomic(self, target: Path, data: bytes, mtime: int | None = None) -> None:
        # The temp file stays open, and so flocked, until it is renamed: a worker booting
        # meanwhile (a HUP reload) runs sweep_temp, which removes only unlocked temp files.
        fd, temp = self.new_temp(key(str(target)))
        try:
            try:
                write_all(fd, data)
            except OSError as error:  # ENOSPC lands here, not in mkstemp (an inode is free)
                raise storage_error(error) from error
            self.publish(temp, target, mtime)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)

    def write_json(self, target: Path, data: dict) -> None:
        self.write_atomic(target, json.dumps(data).encode())

    # --- clean-up ------------------------------------------------------------------------
    def sweep_temp(self, older_than: float = 0.0) -> int:
        """Remove temp files no live writer holds (a writer keeps its .part flocked), and the
        notes of downloads that failed before their first byte (pypicache/fetch.py)."""
        removed = 0
        now = time.time()
        for note in self.tmp.glob("*.json"):
            with contextlib.suppress(OSError, ValueError):
                if "failed" in json.loads(note.read_bytes()) and now - note.stat().st_mtime > 60:
                    note.unlink()
        for part in self.tmp.glob("*.part"):
            try:
                fd = os.open(part, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                if self.held_by_other(fd) or now - os.fstat(fd).st_mtime < older_than:
                    continue
                part.unlink(missing_ok=True)
                removed += 1
            finally:
                os.close(fd)
        return removed


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def storage_error(error: OSError) -> StorageError:
    if error.errno == errno.ENOSPC:
        return StorageError("the cache disk is full")
    if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return StorageError("the cache directory is not writable")
    return StorageError(f"cache storage failed: {error.strerror}")
