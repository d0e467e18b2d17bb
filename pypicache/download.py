"""The background copy of one upstream body into its temp file, then verify and publish."""
from __future__ import annotations

import hashlib
import logging
import os
import time
from typing import Iterator

from . import names, wakeups
from .cachedir import storage_error, write_all
from .errors import IntegrityError, ProxyError, UpstreamError
from .stats.signals import file_cached

log = logging.getLogger(__name__)


class Download:
    """The background copy of one upstream body into its temp file, then verify and publish."""

    def __init__(self, fetcher, listed, sha256, size, response, fd, part, lock):
        self.fetcher, self.listed = fetcher, listed
        self.path, self.project = listed.path, listed.project
        self.sha256, self.size, self.response = sha256, size, response
        self.fd, self.part, self.lock = fd, part, lock

    def run(self) -> None:
        cachedir = self.fetcher.cachedir
        digest, written = hashlib.sha256(), 0
        started = time.monotonic()  # the upstream throughput t on the dashboard (pypicache/stats)
        failure: ProxyError | None = None
        try:
            for chunk in self._chunks():
                write_all(self.fd, chunk)
                wakeups.changed(self.path)  # its followers in this process read it now
                digest.update(chunk)
                written += len(chunk)
            if self.size is not None and written != self.size:
                raise IntegrityError(f"got {written} bytes, expected {self.size}")
            if self.sha256 and digest.hexdigest() != self.sha256:
                raise IntegrityError("sha256 does not match the index")
            cachedir.publish_file(self.part, self.path)
            wakeups.changed(self.path)  # the last bytes go out now, not after the catalog's write
            self.fetcher.catalog.record_cached(
                self.path, self.project or names.project_of_file(self.path), written, digest.hexdigest()
            )
            log.info("cached %s (%d bytes)", self.path, written)
            file_cached.send(self.fetcher, path=self.path, size=written,
                             seconds=time.monotonic() - started)
        except (ProxyError, OSError) as error:
            failure = storage_error(error) if isinstance(error, OSError) else error
            log.warning("download of %s failed: %s", self.path, failure.message)
            self.part.unlink(missing_ok=True)
        except BaseException:
            log.exception("download of %s failed", self.path)
            self.part.unlink(missing_ok=True)
        finally:
            self.response.close()
            self._leave_note(failure)
            os.close(self.fd)  # followers see the writer gone: published, or abort
            wakeups.changed(self.path)
            lock, slot = self.lock
            self.fetcher.slots.release(slot)
            cachedir.unlock(self.path, lock)
            self.fetcher.catalog.release()  # this thread ends here


    def _chunks(self) -> Iterator[bytes]:
        """The source's bytes; when it fails, those of the one the fetcher gives instead,
        from where they stopped (pypicache/cluster.py: another node's download died, and this
        node asks the upstream for the rest). A source that sends the whole file again has
        its first bytes skipped: the sha256 at the end covers every byte either way."""
        written = 0
        while True:
            skip = 0 if self.response.status_code == 206 else written
            if not skip and written and not self.response.headers.get(
                    "Content-Range", "").startswith(f"bytes {written}-"):
                raise IntegrityError(f"the rest of {self.path} came from another byte")
            try:
                for chunk in self.fetcher.upstream.iter_body(self.response):
                    if skip:  # bytes we have: the source began again from the first
                        kept = chunk[skip:]
                        skip -= len(chunk) - len(kept)
                        if not kept:
                            continue
                        chunk = kept
                    written += len(chunk)
                    yield chunk
                return
            except UpstreamError as error:
                response = self.fetcher.resume(self.path, self.listed, written)
                if response is None:
                    raise
                log.info("download of %s goes on from byte %d: %s", self.path, written,
                         error.message)
                self.response = response

    def _leave_note(self, failure: ProxyError | None) -> None:
        """Replace the announcement: by nothing after a publish, else by what failed, so that
        the clients following the download answer it (a full disk is a 507, not a 502) when
        none of its bytes has gone out yet. The temp file is gone first: the note has room."""
        cachedir = self.fetcher.cachedir
        if failure is not None:
            try:
                cachedir.write_json(cachedir.announce_path(self.path), {
                    "failed": failure.status, "message": failure.message, "at": time.time(),
                    "retry_after": failure.retry_after})
                return
            except (ProxyError, OSError):
                pass
        cachedir.announce_path(self.path).unlink(missing_ok=True)
