"""Upstream pages read: a project page (HTML or PEP 691 JSON) becomes our own PEP 691 document
(pypicache/pagemodel.py), which the cache keeps and serves as it is; the root list's names are
pulled out of a stream.

The document is the upstream's JSON with its file links pointing at the proxy and core
metadata advertised for every wheel, every other key passed through, so a JSON page miss costs
one json.loads, a light pass over the files and one json.dumps. An HTML page becomes the same
document (API version 1.0: an HTML page gives no sizes).
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any, Iterable, Iterator
from urllib.parse import unquote, urljoin, urlsplit

import lxml.etree

from . import names, passthrough
from .config import redact_text
from .errors import BadRequest, UpstreamError
from .pagemodel import EXTRACTED, LAST_SERIAL, Project, file_href, project_of

log = logging.getLogger(__name__)
HIGHEST = (1, 4)  # the newest Simple API version this proxy knows (PEP 792's project status)


class Linker:
    """Maps upstream file URLs to paths under the files base; anything else is refused."""

    def __init__(self, files_url: str, prefix: str = ""):
        self.base = files_url.rstrip("/") + "/"
        self.prefix = prefix  # the upstream's name and '/' when there are several (upstreams.py)

    def path(self, page_url: str, href: str) -> tuple[str, str] | None:
        href = href.strip()
        # Absolute links to the file host are the common case: skip urljoin, a third of the
        # cost of parsing a 5,000-file page.
        url = href if href.startswith(self.base) else urljoin(page_url, href)
        without_fragment, _, fragment = url.partition("#")
        without_query = without_fragment.partition("?")[0]
        if not without_query.startswith(self.base):
            # The host only: a link resolved against the page's URL carries its login, if any.
            log.warning("dropped a file link outside the files base: %s",
                        urlsplit(url).netloc.rpartition("@")[2])
            return None
        relative = without_query[len(self.base):]
        try:
            return self.prefix + names.file_path(unquote(relative) if "%" in relative else relative), fragment
        except BadRequest:
            log.warning("dropped a file link with an unsafe path: %r", redact_text(href[:200]))
            return None


# --- an upstream page -> our document ----------------------------------------------------------
def document(body: bytes, content_type: str, page_url: str, name: str, linker: Linker,
             metadata: dict[str, str], earlier: Path | None = None) -> tuple[bytes, list[str]]:
    """Our PEP 691 document of an upstream page, as bytes, and the paths of the files whose
    names say another project (pypicache/listings.py finds those through the catalog).

    `metadata` has the sha256 of `.metadata` files the proxy served (by path), advertised for
    wheels whose upstream gives none; `earlier` is the previous version of the document, whose
    hashes a page without them keeps. A regular JSON page is rewritten as bytes
    (pypicache/passthrough.py); any other is built here, file by file."""
    if "json" in content_type:
        fast = passthrough.rewrite(body, linker.base, linker.prefix, name, metadata)
        if fast is not None:
            return fast
        data = _from_json(body, page_url, name, linker, metadata)
    else:
        data = _from_html(body, page_url, name, linker, metadata)
    misfiled = data.pop("misfiled")
    if earlier is not None and not all("sha256" in entry["hashes"] for entry in data["files"]):
        try:
            data = with_known_hashes(data, json.loads(earlier.read_bytes()))
        except (OSError, ValueError):  # no earlier version: nothing to keep
            pass
    return dump(data), misfiled


def dump(data: dict) -> bytes:
    """Our document as the PEP 691 JSON clients get."""
    return json.dumps(data, separators=(",", ":")).encode()


def _from_json(body: bytes | str, page_url: str, name: str, linker: Linker,
               metadata: dict[str, str]) -> dict:
    try:
        data = json.loads(body)
        files, misfiled = [], []
        for entry in data["files"]:
            linked = linker.path(page_url, entry["url"])
            if linked is None:
                continue
            path = linked[0]
            entry["filename"], entry["url"] = names.filename(path), file_href(path)
            if not names.names_project(entry["filename"], name):
                misfiled.append(path)
            hashes = entry.get("hashes") or {}
            entry["hashes"] = {k.lower(): str(v).lower() for k, v in hashes.items()}
            flag = entry.get("core-metadata", entry.get("data-dist-info-metadata"))
            _advertise(entry, path, _metadata_flag(flag), metadata)
            _provenance(entry, page_url, entry.pop("provenance", None))
            files.append(entry)
        data["files"], data["name"], data["misfiled"] = files, name, misfiled
        meta = data.get("meta", {})
        data["meta"] = {"api-version": _version(meta.get("api-version"))}
        if isinstance(meta.get(LAST_SERIAL), int):  # the rewritten pages keep it too
            data["meta"][LAST_SERIAL] = meta[LAST_SERIAL]
        if not isinstance(data.get("versions", []), list):
            del data["versions"]
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise UpstreamError(f"upstream sent a page we cannot read: {error}") from error
    return data


def _version(claimed: Any) -> str:
    """The upstream's API version, at most the newest this proxy knows (what it passes on is
    what the upstream said, so it claims no more than the upstream did)."""
    try:
        major, minor = (int(part) for part in str(claimed).split("."))
    except ValueError:
        return "1.0"
    return "%d.%d" % min((major, minor), HIGHEST)


def _from_html(text: str | bytes, page_url: str, name: str, linker: Linker,
               metadata: dict[str, str]) -> dict:
    page = _html_links(text)
    files, misfiled = [], []
    for anchor in page.anchors:
        linked = linker.path(page_url, anchor["href"])
        if linked is None:
            continue
        path, fragment = linked
        entry: dict[str, Any] = {"filename": names.filename(path), "url": file_href(path),
                                 "hashes": _hashes_from_fragment(fragment)}
        if not names.names_project(entry["filename"], name):
            misfiled.append(path)
        if anchor.get("data-requires-python"):
            entry["requires-python"] = anchor["data-requires-python"]
        if "data-yanked" in anchor:
            entry["yanked"] = anchor["data-yanked"] or True
        flag = anchor.get("data-core-metadata", anchor.get("data-dist-info-metadata"))
        _advertise(entry, path, _metadata_flag(flag), metadata)
        _provenance(entry, page_url, anchor.get("data-provenance"))
        files.append(entry)
    data: dict[str, Any] = {"meta": {"api-version": "1.0"}, "name": name, "files": files,
                            "misfiled": misfiled}
    if page.meta.get("pypi:project-status"):
        # PEP 792 defines it for 1.4, which needs sizes (1.1) that HTML does not give: the
        # document claims 1.0 and carries the status as a key 1.0 clients ignore (PEP 691).
        data["project-status"] = {"status": page.meta["pypi:project-status"]}
        if page.meta.get("pypi:project-status-reason"):
            data["project-status"]["reason"] = page.meta["pypi:project-status-reason"]
    return data


def _advertise(entry: dict, path: str, flag: bool | dict, known: dict[str, str]) -> None:
    """Every wheel advertises core metadata (PEP 658/714), since the proxy extracts it where
    the upstream has none: as the upstream does where it does, else with the sha256 of what the
    proxy served (`known`) once there is one, else `true`, as the PEPs allow; both keys, for
    old clients."""
    if path.endswith(".whl") and not flag:
        sha256 = known.get(path + ".metadata")
        flag = {"sha256": sha256} if sha256 else True
        entry[EXTRACTED] = True
    if flag:
        entry["core-metadata"] = entry["data-dist-info-metadata"] = flag
    else:
        entry.pop("core-metadata", None)
        entry.pop("data-dist-info-metadata", None)


def _provenance(entry: dict, page_url: str, url: Any) -> None:
    """PEP 740's provenance URL of a file, kept absolute (the spec asks for a fully qualified
    one; a relative one is resolved against the upstream's page, as the file's own link is);
    none claimed where the upstream gives none, or something that is not an http(s) URL."""
    if not isinstance(url, str) or not url.strip():
        return
    url = urljoin(page_url, url.strip())
    if urlsplit(url).scheme in ("http", "https"):
        entry["provenance"] = url


def with_known_hashes(data: dict, earlier: dict) -> dict:
    """A page that gives no sha256 for a file keeps the one an earlier page gave (a mirror
    that drops hashes now and then must not make downloads go unchecked)."""
    known = {e["url"]: e["hashes"]["sha256"] for e in earlier["files"] if "sha256" in e["hashes"]}
    for entry in data["files"]:
        if "sha256" not in entry["hashes"] and entry["url"] in known:
            entry["hashes"]["sha256"] = known[entry["url"]]
    return data


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


class _Links:
    """An lxml parser target that keeps the attributes of <a href> and <meta> and nothing else.

    The same lxml HTML parser BeautifulSoup's lxml builder is fed by, without building a tree:
    a 5,000-link page parses in about 20 ms instead of 220 (docs/DESIGN.md, "Index pages").
    """

    def __init__(self):
        self.anchors: list[dict[str, str]] = []
        self.meta: dict[str, str] = {}

    def start(self, tag: str, attrib) -> None:
        if tag == "a":
            if "href" in attrib:
                self.anchors.append(dict(attrib))
        elif tag == "meta" and "name" in attrib:
            self.meta[attrib["name"]] = attrib.get("content", "")

    def end(self, tag: str) -> None:
        pass

    def data(self, data: str) -> None:
        pass

    def close(self) -> "_Links":
        return self


_FEED = 64 * 1024  # characters per step: other threads get the GIL between two


def _html_links(text: str | bytes) -> _Links:
    if isinstance(text, bytes):  # PEP 503 pages are UTF-8; a stray byte is replaced, not fatal
        text = text.decode("utf-8", "replace")
    links = _Links()
    if not text.strip():  # an empty page lists no file (lxml calls it an error)
        return links
    parser = lxml.etree.HTMLParser(target=links)
    try:
        for start in range(0, len(text), _FEED):
            parser.feed(text[start:start + _FEED])
        parser.close()
    except lxml.etree.LxmlError as error:
        raise UpstreamError(f"upstream sent a page we cannot read: {error}") from error
    return links


# --- our document -> the typed model -----------------------------------------------------------
def parse(body: bytes, content_type: str, page_url: str, name: str, linker: Linker) -> Project:
    """An upstream page as a Project (advertising nothing the proxy served)."""
    return project_of(json.loads(document(body, content_type, page_url, name, linker, {})[0]))


def parse_html(text: str | bytes, page_url: str, name: str, linker: Linker) -> Project:
    return project_of(_from_html(text, page_url, name, linker, {}))


def parse_json(text: str | bytes, page_url: str, name: str, linker: Linker) -> Project:
    return project_of(_from_json(text, page_url, name, linker, {}))


# --- the root list -----------------------------------------------------------------------------
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
