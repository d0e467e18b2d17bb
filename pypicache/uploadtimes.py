"""Upload times (PEP 700 `upload-time`) for the files whose upstream page gives none: an
HTML-only mirror (an nginx tree, pypiserver, devpi) gives no time at all, and without one a
client's own cooldown (uv `--exclude-newer`, pip `--uploaded-prior-to`) and the policy's
refuse every file.

A file's time is its upstream's when the upstream gives one. Else it is the one an earlier
version of our document had for the same sha256, else the one the time source gives
(PYPI_UPLOAD_TIME_SOURCE: a PEP 691 index that has them, such as the public index) for a file
with the same sha256: the same bytes, so the same upload, whatever the names say. Never by
name alone: a project of the same name on the source may be another project (dependency
confusion), and its times would then say nothing of our files. A file the source does not
have keeps an unknown time; the time this cache first saw a file is never taken for it.
The times go into our document, so they are cached with the page and served in its JSON
(PEP 700 gives the HTML no place for them).
"""
from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

from .config import redact
from .encoding import ACCEPT_ENCODING
from .errors import NotFound, ProxyError, UpstreamError, UpstreamTimeout

log = logging.getLogger(__name__)
ACCEPT = "application/vnd.pypi.simple.v1+json"
SOURCE_TIMEOUT = 5.0  # each wait for the source, at most: it must never hold a page miss long
SOURCE_DEADLINE = 15.0  # and for its whole answer (a source that trickles bytes)
# PEP 700's format, UTC: what clients parse (anything else from the source is not passed on).
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z")
_KEY = b'"upload-time"'


def lacking(body: bytes) -> bool:
    """Whether a file of our document (its bytes) may lack an upload time: a count of keys
    rather than a parse, as most pages give every time."""
    return (body.count(_KEY) < body.count(b'"filename"') or _KEY + b":null" in body
            or _KEY + b": null" in body)


def times_of(data: dict) -> dict[str, str]:
    """sha256 -> upload time of the files of a PEP 691 page (parsed) that give both."""
    times = {}
    for entry in data.get("files", ()) if isinstance(data, dict) else ():
        try:
            sha256, uploaded = entry["hashes"]["sha256"], entry["upload-time"]
        except (KeyError, TypeError):
            continue
        if isinstance(sha256, str) and isinstance(uploaded, str) and _TIME.fullmatch(uploaded):
            times[sha256.lower()] = uploaded
    return times


def fill(data: dict, times: dict[str, str]) -> tuple[int, int]:
    """Each file of our document (parsed) that lacks an upload time gets the one `times` has
    for its sha256: (how many got one, how many still lack one)."""
    given = left = 0
    for entry in data["files"]:
        if entry.get("upload-time"):
            continue
        found = times.get(entry["hashes"].get("sha256", ""))
        if found is None:
            left += 1
        else:
            entry["upload-time"] = found
            given += 1
    return given, left


class UploadTimes:
    """The times of one worker's page misses: `source` is PYPI_UPLOAD_TIME_SOURCE (None: none
    asked, and nothing here costs anything)."""

    def __init__(self, upstream, source: str | None, limit: int,
                 deadline: float = SOURCE_DEADLINE):
        self.upstream, self.source, self.limit = upstream, source, limit
        self.deadline = min(deadline, SOURCE_DEADLINE)

    def amend(self, name: str, body: bytes, earlier: Path | None) -> tuple[bytes, bool]:
        """Our document (its bytes) with the times it lacked that can be learned, and whether
        the source failed (the page is then asked for anew at its next refresh, not
        revalidated, so the times come once the source is back)."""
        if self.source is None or not lacking(body):
            return body, False
        data = json.loads(body)
        given, left = fill(data, self._earlier(earlier)) if earlier is not None else (0, 1)
        failed = False
        if left:
            try:
                more, _ = fill(data, self.ask(name))
                given += more
            except ProxyError as error:
                # The page is served all the same, its files' times unknown meanwhile.
                log.warning("upload time source %s failed for %s: %s", redact(self.source),
                            name, error.message)
                failed = True
        if not given:
            return body, failed
        return json.dumps(data, separators=(",", ":")).encode(), failed

    @staticmethod
    def _earlier(path: Path) -> dict[str, str]:
        try:
            return times_of(json.loads(path.read_bytes()))
        except (OSError, ValueError):
            return {}

    def ask(self, name: str) -> dict[str, str]:
        """sha256 -> upload time of the source's page of the project ({}: it has none);
        ProxyError when the source fails."""
        url, deadline = f"{self.source}/{name}/", time.monotonic() + self.deadline
        try:
            headers = {"Accept": ACCEPT, "Accept-Encoding": ACCEPT_ENCODING}
            response = self.upstream.source(url, headers, SOURCE_TIMEOUT)
        except NotFound:
            return {}
        if "json" not in response.headers.get("Content-Type", ""):
            response.close()
            raise UpstreamError(f"{redact(url)} is no PEP 691 JSON page: it gives no upload times")
        body = bytearray()
        chunks = self.upstream.iter_decoded(response, self.limit)
        for chunk in chunks:
            body += chunk
            if time.monotonic() > deadline:
                chunks.close()
                raise UpstreamTimeout(f"{redact(url)} took over {self.deadline:.0f} s")
        try:
            return times_of(json.loads(body))
        except ValueError as error:
            raise UpstreamError(f"{redact(url)} sent a page we cannot read: {error}") from None
