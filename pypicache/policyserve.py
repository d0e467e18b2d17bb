"""The policy applied to what is served (PYPI_POLICY_FILE): a refused project's pages, the
files a page no longer lists, the files and `.metadata` refused, each refusal logged and
counted. Unset, none of this exists (pypicache/__init__.py) and nothing is asked of it.

Pages stay cached as the upstream gave them, and the policy is applied when they are served:
a cooldown makes the answer depend on the time (a file held now passes later), so no
filtered page is ever written to disk. Per worker, the verdict on a page version (which of
its files the rules refuse, and when the first held one passes) is kept until that instant,
keyed by the version of the policy file; a page whose files the rules do not touch is then
served as fast as without a policy (its cached body, its ETag), and one that loses files is
made from the page model for the time being, kept in memory under an ETag that names the
rules and the files refused. A file request is decided by the file itself (its page's entry,
its upload time), never by whether the client saw a filtered page: lock files name URLs.
"""
from __future__ import annotations

import gzip
import json
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from . import names, policy, provenance, render
from .errors import Busy, ProxyError
from .pagefiles import Body, Page, PageGone
from .pagebodies import GZIP_LEVEL
from .policy import Refusal, Verdict
from .policyfile import Rules, read, rfc3339
from .policywatch import LAST_GOOD, LAST_GOOD_OSV, Watcher, keep_source, write_atomic
from .stats.signals import policy_refused

log = logging.getLogger(__name__)
VERDICTS_KEPT = 4096  # page versions whose verdict a worker keeps
BODIES_KEPT = 64  # filtered bodies a worker keeps (a few per page that loses files)
BODY_BYTES_KEPT = 32 << 20  # and their bytes at most: a big project's page is megabytes
FILES_KEPT = 65536  # file decisions a worker keeps
METADATA = ".metadata"
# On the cache volume while the app runs with a policy: the nginx front (docker/nginx/) then
# passes every file to the app instead of serving it from disk.
FRONT_MARK = Path("front") / "policy"


@dataclass(frozen=True)
class Who:
    """Who asked, for the audit log: the client's address, and the user once logged in."""

    address: str
    user: str | None = None

    def __str__(self) -> str:
        return self.address + (f" user {self.user}" if self.user else "")


@dataclass(frozen=True)
class Policed:
    """A page body the policy changed: the body, its ETag, how long it holds, a header."""

    body: bytes
    etag: str
    max_age: float | None
    header: str


class _Kept(OrderedDict):
    """A bounded map, oldest out first, safe across a worker's threads; with `max_bytes`,
    of byte strings, bounded by their total length too."""

    def __init__(self, size: int, max_bytes: int | None = None):
        super().__init__()
        self.size, self.lock = size, threading.Lock()
        self.max_bytes = float("inf") if max_bytes is None else max_bytes
        self.weigh = len if max_bytes is not None else (lambda value: 0)
        self.bytes = 0

    def get_fresh(self, key, now: float):
        with self.lock:
            found = self.get(key)
        if found is None or found[1] is not None and now >= found[1]:
            return None
        return found[0]

    def keep(self, key, value, until: float | None) -> None:
        weight = self.weigh(value)
        if weight > self.max_bytes:
            return  # made again for each request rather than pushing out everything else
        with self.lock:
            if (old := self.pop(key, None)) is not None:
                self.bytes -= self.weigh(old[0])
            self[key] = (value, until)
            self.bytes += weight
            while len(self) > self.size or self.bytes > self.max_bytes:
                _, (gone, _) = self.popitem(last=False)
                self.bytes -= self.weigh(gone)


def prepare(cache_dir: Path, policy_file: Path | None) -> None:
    """As the server starts (gunicorn's arbiter, the file checked): the copies of the policy
    file and of its OSV records that workers fall back on (pypicache/policywatch.py), and
    whether the front must pass files to the app, said by FRONT_MARK (a mark a crash leaves
    only sends files to the app)."""
    mark = cache_dir / FRONT_MARK
    if policy_file is None:
        mark.unlink(missing_ok=True)
        return
    write_atomic(cache_dir / LAST_GOOD, policy_file.read_bytes())
    keep_source(read(policy_file), cache_dir / LAST_GOOD.with_name(LAST_GOOD_OSV))
    write_atomic(mark, b"the app judges every file by its policy (PYPI_POLICY_FILE): "
                 b"the nginx front serves none from disk\n")


class PolicyService:
    def __init__(self, watcher: Watcher, pages, listings):
        self.watcher, self.pages, self.listings = watcher, pages, listings
        self._verdicts = _Kept(VERDICTS_KEPT)
        self._bodies = _Kept(BODIES_KEPT, BODY_BYTES_KEPT)
        self._files = _Kept(FILES_KEPT)

    # --- projects and pages ----------------------------------------------------------------
    def project(self, name: str, who: Who) -> Refusal | None:
        """The refusal of a whole project (before its page is even fetched), if enforced."""
        rules = self.watcher.current()
        refusal = policy.project_refusal(rules, name)
        if refusal is None:
            return None
        self._audit(rules, "project", {name: refusal}, name, who)
        return refusal if rules.mode == "enforce" else None

    def verdict(self, page: Page, who: Who, what: str = "page") -> Verdict | None:
        """What the rules refuse of the page's files now, when they are enforced and refuse
        something (logged and counted as refusals of `what`); None: serve it all."""
        rules = self.watcher.current()
        if not policy.touches(rules, page.name) or policy.project_refusal(rules, page.name):
            return None  # (a project refused as a whole reaches here in report mode only)
        verdict = self._judged(rules, page, time.time())
        if not verdict.refused:
            return None
        self._audit(rules, what, verdict.refused, page.name, who, verdict)
        return verdict if rules.mode == "enforce" else None

    def _judged(self, rules: Rules, page: Page, now: float) -> Verdict:
        """The verdict on a page version, kept until it changes."""
        key = (page.name, page.version, rules.digest)
        verdict: Verdict | None = self._verdicts.get_fresh(key, now)
        if verdict is None:
            verdict = policy.judge(rules, self._model(page), now)
            self._verdicts.keep(key, verdict, verdict.changes_at)
        return verdict

    def advisories(self):
        """The advisories in force (pypicache/advisories.py's Advisories), or None."""
        return self.watcher.current().advisories

    def page(self, page: Page, want: Body, who: Who) -> Policed | None:
        """The page's body without the files the rules refuse now; None to serve it as it is."""
        verdict = self.verdict(page, who)
        if verdict is None:
            return None
        now = time.time()
        body_key = (page.name, page.version, verdict.key, want)
        body = self._bodies.get_fresh(body_key, now)
        if body is None:
            body = self._filtered(page, want, verdict)
            self._bodies.keep(body_key, body, verdict.changes_at)
        header = verdict.header
        etag = page.etag(want)[:-1] + "-p" + verdict.key + '"'
        max_age = verdict.changes_at - now if verdict.changes_at is not None else None
        return Policed(body, etag, max_age, header)

    def _model(self, page: Page):
        try:
            return self.pages.model(page)
        except PageGone:  # evicted since it was opened: rare, and the client may ask again
            raise Busy("the cached page changed while it was being read; try again",
                       retry_after=1) from None

    def _filtered(self, page: Page, want: Body, verdict: Verdict) -> bytes:
        """The body `want` made from the page without the refused files: the JSON from our
        document (every key it has kept), the HTML from the page model."""
        if want.fmt == "json":
            try:
                document = json.loads(page.path(Body()).read_bytes())
            except OSError:
                raise Busy("the cached page changed while it was being read; try again",
                           retry_after=1) from None
            data = json.dumps(policy.without_entries(document, verdict.refused),
                              separators=(",", ":")).encode()
        else:
            data = render.project_html(policy.without(self._model(page), verdict.refused)).encode()
        data = want.linked(provenance.point(data, want, self.pages.settings))
        return gzip.compress(data, GZIP_LEVEL, mtime=0) if want.compressed else data

    # --- files -----------------------------------------------------------------------------
    def file(self, path: str, who: Who) -> Refusal | None:
        """The refusal of a file or its `.metadata` (as of the distribution), if enforced."""
        rules = self.watcher.current()
        distribution = provenance.distribution(path.removesuffix(METADATA))
        project = names.project_of_file(distribution)
        if not policy.touches(rules, project):  # most files of most policies: no lookup
            return None
        now = time.time()
        key = (rules.digest, distribution)
        found = self._files.get_fresh(key, now)
        if found is None:
            found = self._decide(rules, distribution, project, now)
        project, refusal = found
        if refusal is None:
            return None
        self._audit(rules, "file", {names.filename(path): refusal}, project, who)
        return refusal if rules.mode == "enforce" else None

    def _decide(self, rules: Rules, distribution: str, project: str, now: float):
        """(project, refusal or None) of a file, kept while it holds. The upload time is its
        page's (fetched if no cached page lists it); a file no page can be found for has an
        unknown time, a verdict not kept (the page may come back)."""
        refusal = policy.project_refusal(rules, project)
        if refusal is not None:
            self._files.keep((rules.digest, distribution), (project, refusal), None)
            return project, refusal
        listed = self.listings.find(distribution)
        if listed is None:
            try:
                listed = self.listings.require(distribution)
            except ProxyError:
                listed = None
        if listed is not None and listed.project != project:  # a file of another's page
            project = listed.project
            refusal = policy.project_refusal(rules, project)
        upload_time = listed.file.upload_time if listed is not None else None
        if refusal is None:
            refusal = policy.file_refusal(rules, project, names.filename(distribution),
                                          upload_time, now)
        until = refusal.until if refusal is not None else None
        if refusal is not None and refusal.rule == "cooldown" and self._fast(rules, project):
            # Whether the fast lane lets it through depends on the project's other releases:
            # its page's verdict says (a page that cannot be had keeps the hold).
            try:
                verdict = self._judged(rules, self.pages.project(project), now)
            except ProxyError:
                verdict = None
            if verdict is not None:
                refusal = verdict.refused.get(names.filename(distribution))
                until = verdict.changes_at
        if listed is not None:
            self._files.keep((rules.digest, distribution), (project, refusal), until)
        return project, refusal

    @staticmethod
    def _fast(rules: Rules, project: str) -> bool:
        osv = rules.advisories
        return osv is not None and osv.fast_lane and project in osv.index.by_project

    # --- audit and health ------------------------------------------------------------------
    def _audit(self, rules: Rules, what: str, refused: dict[str, Refusal], project: str,
               who: Who, verdict: Verdict | None = None) -> None:
        """One log line per request, and one count per rule, for what was (or in report mode
        would have been) refused; a page's from its verdict."""
        verb = "refused" if rules.mode == "enforce" else "would refuse (report mode)"
        if verdict is not None:  # the index page, or the JSON API's document
            where = "page" if what == "page" else "JSON document"
            log.warning("policy: %s %d files of the %s of %s to %s: %s", verb,
                        len(refused), where, project, who, verdict.shown)
        elif what == "project":
            log.warning("policy: %s the project %s to %s: %s", verb, project, who,
                        refused[project].header)
        else:
            ((name, refusal),) = refused.items()
            log.warning("policy: %s the file %s of %s to %s: %s", verb, name, project, who,
                        refusal.header)
        counted = verdict.rules if verdict is not None else {r.rule for r in refused.values()}
        for rule in sorted(counted):
            policy_refused.send(self, rule=rule, mode=rules.mode, what=what, project=project,
                                who=who, refused={name: r for name, r in refused.items()
                                                  if r.rule == rule})

    def health(self) -> dict:
        """For /healthz, which anyone may read: the rules' version and state, and where a bad
        new version of the file is wrong (not the values it holds)."""
        rules = self.watcher.current()
        state = {"status": "ok", "mode": rules.mode, "version": rules.digest,
                 "loaded": rfc3339(self.watcher.loaded)}
        if rules.advisories is not None:
            state["advisories"] = rules.advisories.index.records
        if self.watcher.error is not None:
            state |= {"status": "last good policy kept", "error": self.watcher.error.public,
                      "error_since": rfc3339(self.watcher.error_since)}
        return state
