"""What a page miss adds to our document of an upstream page before it is cached
(pypicache/refresh.py calls it, with the document pypicache/pagereader.py made): PEP 792's
`quarantined` acted on (pypicache/quarantine.py), and the upload times the upstream did not
give (pypicache/uploadtimes.py). Either costs a search of the document's bytes on a page that
needs neither."""
from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from .pagemodel import entry_path
from .quarantine import Quarantine, without_files
from .uploadtimes import UploadTimes

log = logging.getLogger(__name__)
# In the page's state.json: the time source failed, so the next refresh fetches the page
# anew (no ETag, no 304) and asks the source again.
RETRY_TIMES = "times_retry"
QUARANTINED = "quarantined"
# And how its document was amended: one made otherwise (before this module, or with another
# time source) is fetched anew once rather than revalidated, since a 304 keeps the old one.
AMENDED = "amended"
TREATMENT = "1"  # changed when amend() comes to do more


@dataclass(frozen=True)
class Amended:
    body: bytes
    state: dict = field(default_factory=dict)  # more keys for the page's state.json
    removals: list[str] | None = None  # quarantined: what to remove once the page is in place


class PageStatus:
    def __init__(self, settings, cachedir, catalog, upstream):
        # The source is asked under the page's lock, whose waiters give up after connect +
        # read timeouts without progress (pypicache/pages.py): it must answer well within.
        waited = (settings.connect_timeout + settings.read_timeout) / 2
        self.times = UploadTimes(upstream, settings.upload_time_source, settings.max_page_size,
                                 deadline=waited)
        self.quarantine = Quarantine(cachedir, catalog,
                                     wait=settings.connect_timeout + settings.read_timeout)
        self.treatment = TREATMENT + " " + (settings.upload_time_source or "")

    def fetch_anew(self, old: dict | None) -> bool:
        """Whether a page must be fetched whole rather than revalidated."""
        return bool(old) and (bool(old.get(RETRY_TIMES)) or old.get(AMENDED) != self.treatment)

    def amend(self, name: str, body: bytes, earlier: Path | None) -> Amended:
        """Our document of a new version of a project's page, before it is written."""
        stripped = without_files(body)
        if stripped is not None:  # no file to give a time to
            body, listed = stripped
            return Amended(body, {AMENDED: self.treatment, QUARANTINED: True},
                           listed + _listed(earlier))
        body, failed = self.times.amend(name, body, earlier)
        return Amended(body, {AMENDED: self.treatment} | ({RETRY_TIMES: True} if failed else {}))

    def settle(self, name: str, amended: Amended) -> None:
        """Once the new version is what readers get: a quarantined project marked and its
        cached files removed, or its mark gone."""
        try:
            self.quarantine.mark(name, amended.removals is not None)
            if amended.removals is not None:
                self.quarantine.remove(name, amended.removals)
        except (OSError, sqlite3.Error) as error:  # the page is right: its files wait
            log.warning("could not act on the quarantine of %s: %s", name, error)


def _listed(earlier: Path | None) -> list[str]:
    """The paths the earlier version of our document listed (a quarantine's removals)."""
    if earlier is None:
        return []
    try:
        return [entry_path(entry) for entry in json.loads(earlier.read_bytes())["files"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []
