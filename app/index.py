"""The page model: upstream HTML (BeautifulSoup) or PEP 691 JSON becomes Project/File objects."""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Iterator
from urllib.parse import unquote, urljoin, urlsplit

from bs4 import BeautifulSoup

from . import names
from .config import redact_text
from .errors import BadRequest, UpstreamError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class File:
    """One distribution file; `path` is relative to the files base (and to our /packages/)."""

    filename: str
    path: str
    hashes: dict[str, str] = field(default_factory=dict)
    requires_python: str | None = None
    yanked: bool | str = False  # False, True, or the reason (PEP 592)
    core_metadata: bool | dict[str, str] = False  # PEP 658/714: False, True or its hashes
    size: int | None = None
    upload_time: str | None = None

    @property
    def sha256(self) -> str | None:
        return self.hashes.get("sha256")


@dataclass(frozen=True)
class Project:
    name: str
    files: tuple[File, ...]
    versions: tuple[str, ...] | None = None  # PEP 700
    status: str | None = None  # PEP 792
    status_reason: str | None = None


def _hashes_from_fragment(fragment: str) -> dict[str, str]:
    name, _, value = fragment.partition("=")
    return {name.lower(): value.lower()} if name and value else {}


def _metadata_flag(value: Any) -> bool | dict[str, str]:
    """PEP 658/714 attribute or key: 'true', 'sha256=...', a dict, or absent/false."""
    if value is None or value is False:
        return False
    if isinstance(value, dict):
        return {k.lower(): v.lower() for k, v in value.items()} or True
    if isinstance(value, str):
        return _hashes_from_fragment(value) or (value.strip().lower() != "false")
    return bool(value)


def with_core_metadata(project: Project, known: dict[str, str]) -> Project:
    """Every wheel advertises core metadata (PEP 658/714), since the proxy extracts it where
    the upstream has none: with the upstream's hashes, else the sha256 of what was served
    (`known`, by .metadata path) once there is one, else `true`, as the PEPs allow."""
    files = []
    for file in project.files:
        if file.filename.endswith(".whl") and not isinstance(file.core_metadata, dict):
            sha256 = known.get(file.path + ".metadata")
            file = replace(file, core_metadata={"sha256": sha256} if sha256 else True)
        files.append(file)
    return replace(project, files=tuple(files))


class Linker:
    """Maps upstream file URLs to paths under the files base; anything else is refused."""

    def __init__(self, files_url: str, prefix: str = ""):
        self.base = files_url.rstrip("/") + "/"
        self.prefix = prefix  # the upstream's name and '/' when there are several (app/indexes.py)

    def path(self, page_url: str, href: str) -> tuple[str, str] | None:
        href = href.strip()
        # Absolute links to the file host are the common case: skip urljoin, a third of the
        # cost of parsing a 5,000-file page.
        url = href if href.startswith(self.base) else urljoin(page_url, href)
        without_fragment, _, fragment = url.partition("#")
        without_query = without_fragment.split("?", 1)[0]
        if not without_query.startswith(self.base):
            # The host only: a relative link resolved against the page's URL carries the
            # upstream's credentials, if it has any.
            log.warning("dropped a file link outside the files base: %s",
                        urlsplit(url).netloc.rpartition("@")[2])
            return None
        try:
            return self.prefix + names.file_path(unquote(without_query[len(self.base):])), fragment
        except BadRequest:
            log.warning("dropped a file link with an unsafe path: %r", redact_text(href[:200]))
            return None


def parse_html(text: str | bytes, page_url: str, name: str, linker: Linker) -> Project:
    soup = BeautifulSoup(text, "lxml")
    files = []
    for anchor in soup.find_all("a", href=True):
        linked = linker.path(page_url, anchor["href"])
        if linked is None:
            continue
        path, fragment = linked
        yanked = anchor.get("data-yanked")
        files.append(
            File(
                filename=names.filename(path),
                path=path,
                hashes=_hashes_from_fragment(fragment),
                requires_python=anchor.get("data-requires-python") or None,
                yanked=False if yanked is None else (yanked or True),
                core_metadata=_metadata_flag(
                    anchor.get("data-core-metadata", anchor.get("data-dist-info-metadata"))
                ),
            )
        )
    status = soup.find("meta", attrs={"name": "pypi:project-status"})
    reason = soup.find("meta", attrs={"name": "pypi:project-status-reason"})
    return Project(
        name=name,
        files=tuple(files),
        status=status.get("content") if status else None,
        status_reason=reason.get("content") if reason else None,
    )


def parse_json(text: str | bytes, page_url: str, name: str, linker: Linker) -> Project:
    try:
        data = json.loads(text)
        files = []
        for entry in data["files"]:
            linked = linker.path(page_url, entry["url"])
            if linked is None:
                continue
            path, _ = linked
            yanked = entry.get("yanked", False)
            size = entry.get("size")
            files.append(
                File(
                    filename=names.filename(path),
                    path=path,
                    hashes={k.lower(): str(v).lower() for k, v in (entry.get("hashes") or {}).items()},
                    requires_python=entry.get("requires-python") or None,
                    yanked=yanked if isinstance(yanked, str) and yanked else bool(yanked),
                    core_metadata=_metadata_flag(
                        entry.get("core-metadata", entry.get("data-dist-info-metadata"))
                    ),
                    size=size if isinstance(size, int) and size >= 0 else None,
                    upload_time=entry.get("upload-time"),
                )
            )
        status = data.get("project-status") or {}
        versions = data.get("versions")
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise UpstreamError(f"upstream sent a page we cannot read: {error}") from error
    return Project(
        name=name,
        files=tuple(files),
        versions=tuple(versions) if isinstance(versions, list) else None,
        status=status.get("status"),
        status_reason=status.get("reason"),
    )


def parse(body: bytes, content_type: str, page_url: str, name: str, linker: Linker) -> Project:
    if "json" in content_type:
        return parse_json(body, page_url, name, linker)
    return parse_html(body, page_url, name, linker)


# The root list is tens of MB upstream: names are pulled out of the stream with a regex,
# never by parsing the whole document.
_ROOT_HTML = re.compile(rb"<a\s[^>]*>\s*([^<\s]+)\s*</a>", re.IGNORECASE)
_ROOT_JSON = re.compile(rb'"name"\s*:\s*"((?:[^"\\]|\\.)*)"')


def iter_root_names(chunks: Iterable[bytes], content_type: str) -> Iterator[str]:
    pattern = _ROOT_JSON if "json" in content_type else _ROOT_HTML
    pending = b""
    for chunk in chunks:
        pending += chunk
        end = 0
        for match in pattern.finditer(pending):
            end = match.end()
            yield from _root_name(match[1], json_escaped=pattern is _ROOT_JSON)
        # keep the unfinished tail (bounded: one entry is never near 64 KiB)
        pending = pending[end:] if end else pending[-65536:]


def _root_name(raw: bytes, json_escaped: bool) -> Iterator[str]:
    try:
        text = json.loads(b'"' + raw + b'"') if json_escaped else raw.decode("utf-8")
        yield names.project_name(text)
    except (ValueError, BadRequest):
        return
