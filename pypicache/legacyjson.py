"""The legacy JSON API (Warehouse's `/pypi/<project>/json` and `/pypi/<project>/<version>/json`)
built from the cache's own page model and the core metadata of one release.

Bots and auditors read it to learn versions, release dates and a release's metadata. It is
made from what the cache already keeps: our PEP 691 document of the project's page
(pypicache/pages.py, so it works for any upstream, HTML-only ones too, and is served stale with the
upstream down) and the `.metadata` of the one release that `info` describes (pypicache/metadata.py,
which extracts it from the wheel where the upstream has none). Never the metadata of every
release: a project has hundreds, each an upstream request.

- Releases are the versions the file names say (wheels and sdists; PEP 427, 625), keyed by
  the normalized version, with the versions a PEP 700 page lists without files as empty
  lists, as Warehouse lists a release without files.
- The latest release is Warehouse's choice: the highest release that is not yanked, a final
  one before any pre-release; when every release is yanked, the highest final one, else the
  highest of all. A release is yanked when all its files are (PEP 592 yanks files).
- `info` comes from the release's core metadata (`_pypicache_source: "metadata"`); when none
  can be had (no wheel, or the upstream down and nothing cached), from the page alone
  (`"page"`: name, version, requires_python, yanked; everything else null).
- What the page does not say is null (size and upload times from an HTML page, an md5 nobody
  gave); `last_serial` only when the upstream's page gave one.
- `vulnerabilities` lists the advisories (the policy's `[advisories]` OSV records,
  pypicache/advisories.py) that affect the release `info` describes, as Warehouse does; an
  empty list without a policy that reads advisories.
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from . import advisories, coremeta
from .candidates import parsed_version, version_text
from .errors import NotFound, ProxyError
from .pagefiles import Body, Page
from .pagemodel import FILE_PREFIX, File, Project, file_href, project_of
from .policy import without

log = logging.getLogger(__name__)
METADATA_LIMIT = 4 << 20  # a core metadata file is a few KB
KEPT_BYTES = 32 << 20  # documents a worker keeps built, in all
NOT_TRACKED = -1  # Warehouse's count of downloads it does not track
SOURCE = "_pypicache_source"  # where `info` came from: "metadata" or "page"
# Warehouse's names of the digests a page may give (PEP 691 names them as hashlib does).
_DIGESTS = ("blake2b_256", "md5", "sha256")


@dataclass(frozen=True)
class Document:
    page: Page  # the cached page it was made from (its cache state and age)
    body: bytes
    etag: str
    serial: int | None = None  # the upstream's last serial of the project, when it gave one


class LegacyJson:
    """The documents of the JSON API, made from the cached pages and kept per worker (by the
    page's version, the release and the links' base) once their `info` is complete."""

    def __init__(self, pages, metadata):
        self.pages, self.metadata = pages, metadata
        self._kept: OrderedDict[tuple, tuple[bytes, str, int | None]] = OrderedDict()
        self._kept_bytes = 0
        self._lock = threading.Lock()  # a worker's threads share what it keeps

    def document(self, name: str, version: str | None, base: str, policy=None,
                 who=None) -> Document:
        """The project's document (`version` None) or one release's; `base` is what file
        links start with (the URL of our /packages/, absolute or relative to the document).
        NotFound when the upstream has no such project, or that release has no files. With
        a policy (pypicache/policyserve.py), the files it refuses now are not listed: a held
        release is no release here either."""
        page, body = self.pages.open(name, Body())
        verdict = policy.verdict(page, who, "json") if policy is not None else None
        osv = policy.advisories() if policy is not None else None
        key = (name, page.version, version, base, verdict.key if verdict else None,
               osv.index.digest if osv else None)
        with self._lock:
            kept = self._kept.get(key)
            if kept is not None:
                self._kept.move_to_end(key)
        if kept is not None:
            if not isinstance(body, bytes):
                body.close()
            return Document(page, *kept)
        if not isinstance(body, bytes):
            with body:
                body = body.read()
        project = project_of(json.loads(body))
        if verdict is not None:
            project = without(project, verdict.refused)
        made, complete = self._make(project, version, base, osv)
        data = json.dumps(made, separators=(",", ":")).encode()
        document = Document(page, data, '"' + hashlib.sha256(data).hexdigest()[:32] + '"',
                            project.last_serial)
        if complete:  # a document made without metadata tries again next time
            self._keep(key, document)
        return document

    def _keep(self, key: tuple, document: Document) -> None:
        if len(document.body) > KEPT_BYTES // 4:
            return
        with self._lock:
            if key not in self._kept:
                self._kept[key] = (document.body, document.etag, document.serial)
                self._kept_bytes += len(document.body)
            while self._kept_bytes > KEPT_BYTES:
                _, (old, *_) = self._kept.popitem(last=False)
                self._kept_bytes -= len(old)

    def _make(self, project: Project, version: str | None, base: str,
              osv=None) -> tuple[dict, bool]:
        releases = releases_of(project)
        chosen = latest(releases) if version is None else find_release(releases, version)
        if chosen is None or not releases[chosen]:
            what = "any release" if version is None else f"a release {version[:100]!r}"
            raise NotFound(f"{project.name} has no files of {what}")
        files = releases[chosen]
        fields = self._core_metadata(files)
        root = base.removesuffix("packages/")  # our site's root, as the links reach it
        info = info_of(project, chosen, files, fields) | {
            "package_url": f"{root}projects/{project.name}/",  # the dashboard's project page
            "project_url": f"{root}projects/{project.name}/",
            "release_url": f"{root}pypi/{project.name}/{chosen}/json",
        }
        made: dict[str, Any] = {"info": dict(sorted(info.items()))}
        if project.last_serial is not None:
            made["last_serial"] = project.last_serial
        if version is None:  # Warehouse's release documents no longer carry every release
            made["releases"] = {text: [file_entry(f, base) for f in listed]
                                for text, listed in releases.items()}
        made["urls"] = [file_entry(file, base) for file in files]
        affecting = osv.index.affecting(project.name, parsed_version(chosen)) if osv else []
        made["vulnerabilities"] = advisories.warehouse(affecting)
        return made, fields is not None

    def _core_metadata(self, files: list[File]) -> dict[str, Any] | None:
        """`info`'s fields from one wheel's `.metadata` (one already cached first, a yanked
        one last); None when it cannot be had."""
        wheels = [f for f in files if f.filename.endswith(".whl") and f.core_metadata]
        if not wheels:
            return None
        cached = self.metadata.cachedir.file
        wheel = min(wheels, key=lambda f: (bool(f.yanked),
                                           not cached(f.path + ".metadata").is_file(), f.filename))
        try:
            data = self.metadata.open(wheel.path + ".metadata").read_all(METADATA_LIMIT)
        except ProxyError as error:  # upstream down and nothing cached, a bad wheel, ...
            log.info("no core metadata of %s for its JSON document: %s", wheel.filename,
                     error.message)
            return None
        return coremeta.info_fields(data) if data else None


def releases_of(project: Project) -> dict[str, list[File]]:
    """Version -> its files (by name), lowest version first."""
    releases: dict[str, list[File]] = {}
    for file in project.files:
        if (text := version_text(file.filename)) is not None:
            releases.setdefault(_normal(text), []).append(file)
    for text in project.versions or ():
        releases.setdefault(_normal(text), [])
    return {text: sorted(releases[text], key=lambda f: f.filename)
            for text in sorted(releases, key=_order)}


def latest(releases: dict[str, list[File]]) -> str | None:
    """Warehouse's latest release: not yanked before yanked, final before pre-release, then
    the highest; only releases with files."""
    def rank(text: str) -> tuple:
        version = parsed_version(text)
        final = version is not None and not version.is_prerelease
        return not _yanked(releases[text]), final, _order(text)

    with_files = [text for text, files in releases.items() if files]
    return max(with_files, key=rank) if with_files else None


def find_release(releases: dict[str, list[File]], asked: str) -> str | None:
    """The release a URL names: its exact text, else the same version (1.0 is 1.0.0)."""
    if asked in releases:
        return asked
    wanted = parsed_version(asked)
    if wanted is None:
        return None
    return next((text for text in releases if parsed_version(text) == wanted), None)


def info_of(project: Project, version: str, files: list[File],
            fields: dict[str, Any] | None) -> dict[str, Any]:
    """`info` without our site's URLs: the core metadata's fields, else the page's."""
    source = "page" if fields is None else "metadata"
    if fields is None:
        fields = coremeta.EMPTY | {
            "name": project.name,
            "requires_python": next((f.requires_python for f in files if f.requires_python), None),
        }
    yanked = _yanked(files)
    reason = next((f.yanked for f in files if isinstance(f.yanked, str)), None) if yanked else None
    return fields | {
        "bugtrack_url": None,
        "docs_url": None,
        "downloads": {"last_day": NOT_TRACKED, "last_month": NOT_TRACKED, "last_week": NOT_TRACKED},
        "version": version,
        "yanked": yanked,
        "yanked_reason": reason,
        SOURCE: source,
    }


def file_entry(file: File, base: str) -> dict[str, Any]:
    """One file as Warehouse lists it in `urls` and `releases`."""
    wheel = file.filename.endswith(".whl")
    uploaded = _uploaded(file.upload_time)
    return {
        "comment_text": "",
        "digests": {name: file.hashes[name] for name in _DIGESTS if file.hashes.get(name)},
        "downloads": NOT_TRACKED,
        "filename": file.filename,
        "has_sig": False,
        "md5_digest": file.hashes.get("md5"),
        "packagetype": "bdist_wheel" if wheel else "sdist",
        # A wheel's Python tag (PEP 427), as Warehouse gives it; an sdist's is "source".
        "python_version": file.filename.split("-")[-3] if wheel else "source",
        "requires_python": file.requires_python,
        "size": file.size,
        "upload_time": uploaded.strftime("%Y-%m-%dT%H:%M:%S") if uploaded else None,
        "upload_time_iso_8601": uploaded.isoformat() + "Z" if uploaded else None,
        "url": base + file_href(file.path)[len(FILE_PREFIX):],
        "yanked": bool(file.yanked),
        "yanked_reason": file.yanked if isinstance(file.yanked, str) else None,
    }


def _uploaded(text: str | None) -> datetime | None:
    """A PEP 700 upload time as UTC without a zone (how Warehouse formats it), or None."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment


def _yanked(files: list[File]) -> bool:
    return bool(files) and all(file.yanked for file in files)


def _normal(text: str) -> str:
    version = parsed_version(text)
    return str(version) if version is not None else text


def _order(text: str) -> tuple:
    """Versions in PEP 440 order; a version packaging cannot read comes before all."""
    version = parsed_version(text)
    return (1, version) if version is not None else (0, text)
