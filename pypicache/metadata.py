"""Core metadata (PEP 658) for every wheel: the upstream's `.metadata`, else the wheel's own."""
from __future__ import annotations

import contextlib
import hashlib
import logging
import time

from . import names, wheelmeta
from .errors import IntegrityError, NotFound, UpstreamError
from .fetch import Fetcher
from .ranges import RangeReader, RangesIgnored
from .results import BucketFile, FileAnswer, Follow, Head, Hit
from .uploads import PREFIX as UPLOADS
from .uploads import LocalIndex

log = logging.getLogger(__name__)
SUFFIX = ".whl.metadata"


class Metadata:
    """Answers `<wheel>.metadata`: the upstream's file where it has one (single flight, checked
    against the page's hash), else the wheel's METADATA, from the cached wheel or read from the
    upstream with Range requests, published at the same path so later hits are plain files."""

    def __init__(self, fetcher: Fetcher, uploads: LocalIndex | None = None):
        self.fetcher, self.cachedir, self.catalog = fetcher, fetcher.cachedir, fetcher.catalog
        self.uploads = uploads  # an uploaded wheel's METADATA was kept with it (uploads.py)
        self.wait = sum(fetcher.upstream.timeout)  # another worker's extraction: connect + read

    def open(self, path: str) -> FileAnswer:
        if self.uploads is not None and path.startswith(UPLOADS):
            return self.uploads.open(path)
        if (hit := self.fetcher.cached(path)) is not None:
            return hit
        wheel = path[:-len(".metadata")]
        # Nothing of an unlisted wheel is asked upstream.
        if not self.cachedir.file(wheel).is_file():
            listed = self.fetcher.listings.require(path)
        else:
            listed = self.fetcher.listings.find(path)
        try:
            # Where the page says the upstream has none, it is not asked for one: a 404 of a
            # mirror without .metadata files took hundreds of milliseconds, for each wheel.
            if not (listed and listed.file.extracted):
                return self.fetcher.single_flight(path, listed)  # not looked up again
        except NotFound:
            pass  # the upstream has no .metadata for it (or advertised one it cannot serve)
        except UpstreamError:
            if not self.cachedir.file(wheel).is_file():
                raise
            # The upstream is down, but the wheel is here: its METADATA is the same bytes.
        with self.cachedir.lock(path, timeout=self.wait):
            if (hit := self.fetcher.cached(path)) is not None:
                return hit
            project, sha256 = (listed.project, listed.sha256) if listed else (None, None)
            data = self._extract(wheel)
            digest = hashlib.sha256(data).hexdigest()
            if sha256 and digest != sha256:
                raise IntegrityError("the wheel's METADATA does not match the page's metadata hash")
            self.cachedir.write_file(path, data)
            # Its catalog row, and with it the hash the next render of the page advertises,
            # comes with the next statistics flush, as for every published file.
            self.catalog.record_cached(path, project or names.project_of_file(path), len(data), digest)
        self.fetcher.made_here(path)  # outside the lock: other nodes' copy (pypicache/cluster.py)
        result = self.fetcher.cached(path) or self.fetcher.single_flight(path)  # just published
        result.cache = "miss"
        return result

    def describe(self, path: str) -> FileAnswer:
        """A HEAD of `<wheel>.metadata`, which fetches nothing but what a HEAD of a file asks:
        the published file, else the upstream's HEAD of its `.metadata`; where the upstream
        has none, a 200 without a length, as a GET would extract it from the wheel, once the
        wheel is known to be there (here, or by the upstream's HEAD of it)."""
        if (hit := self.fetcher.cached(path)) is not None:
            return hit
        wheel = path[:-len(".metadata")]
        here = self.cachedir.file(wheel).is_file()
        listed = self.fetcher.listings.find(path) if here else self.fetcher.listings.require(path)
        try:
            if not (listed and listed.file.extracted):
                return self.fetcher.describe(path)
        except NotFound:
            pass  # a GET would extract it (docs/DESIGN.md)
        except UpstreamError:
            if not here:
                raise
        if not here:
            self.fetcher.upstream.head(self.fetcher.listings.url(wheel))  # a GET's 404 or 502
        return Head(path, None)

    def _extract(self, wheel: str) -> bytes:
        """METADATA of the cached wheel, else by ranges, else of the wheel once downloaded."""
        filename = names.filename(wheel)
        hit = self.fetcher.cached(wheel)
        if hit is None:
            listed = self.fetcher.listings.find(wheel)
            size = listed.size if listed else None
            started = time.monotonic()
            try:
                url = self.fetcher.listings.url(wheel)
                reader = RangeReader(self.fetcher.upstream, url, wheelmeta.TAIL, size)
                data = wheelmeta.core_metadata(reader, filename)
                log.info("metadata of %s extracted with %d range requests in %.3f s",
                         filename, reader.requests, time.monotonic() - started)
                return data
            except RangesIgnored:
                log.info("the upstream ignores ranges: downloading %s for its metadata", filename)
            hit = self._complete(wheel)
        with contextlib.closing(hit):  # here, or in the bucket other nodes share
            return wheelmeta.core_metadata(hit.blob, filename)

    def _complete(self, wheel: str) -> Hit | BucketFile:
        """The wheel through the single-flight download (so it is cached), once published."""
        result = self.fetcher.single_flight(wheel)
        if isinstance(result, Follow):
            for _ in result.chunks():  # ends once the file is published
                pass
            result = self.fetcher.cached(wheel)
            if result is None:
                raise UpstreamError(f"{names.filename(wheel)} was evicted before it was read")
        return result
