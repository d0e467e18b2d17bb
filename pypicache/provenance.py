"""PEP 740 provenance through the proxy, its pages' side: provenance URLs pointed at the
proxy's copies (`/packages/<path>.provenance`, pypicache/provenancefetch.py caches and serves
them), and the check a provenance object passes before it is cached.

The simple API wants a provenance URL fully qualified and of a secure origin: a client that
talks plain http to the proxy keeps the upstream's URL on its pages (the copy is still served
at the path above), one behind a TLS front that says so (X-Forwarded-Proto from a trusted
front, PYPI_TRUSTED_PROXIES) gets `https://<host>/packages/<path>.provenance`. Where the
upstream gives no provenance, none is claimed, and the path is a 404.
"""
from __future__ import annotations

import base64
import binascii
import functools
import html
import json
import re

from .errors import IntegrityError, UpstreamError
from .httpclient import origin
from .pagefiles import Body
from .pagemodel import FILE_PREFIX

SUFFIX = ".provenance"


def distribution(path: str) -> str:
    """The path of the file a `.provenance` path is the provenance of."""
    return path.removesuffix(SUFFIX)


# --- pages: provenance URLs pointed at our copies ----------------------------------------------
@functools.lru_cache(maxsize=16)
def _fetchable(indexes: tuple) -> frozenset[str]:
    return frozenset(origin(url) for up in indexes for url in (up.url, up.files_url))


_JSON_KEY = re.compile(rb'"provenance"\s*:\s*"')
# Our own anchors (pypicache/render.py): the file's link, then its attributes.
_ANCHOR = re.compile(r'<a href="' + re.escape(FILE_PREFIX)
                     + r'([^"#]*)(?:#[^"]*)?"([^>]*?) data-provenance="([^"]*)"')


def point(data: bytes, want: Body, settings) -> bytes:
    """A body with relative links (`data`, of `want`'s format) with the provenance URLs that
    the proxy can fetch (those of the configured upstreams' origins) pointed at its copies,
    under `want.provenance` (an https base ending in /packages/); unchanged when `want` has
    none, or the page claims no provenance (the common case costs one search)."""
    if not want.provenance:
        return data
    fetchable = _fetchable(settings.indexes)
    if want.fmt == "json":
        if not _JSON_KEY.search(data):
            return data
        document = json.loads(data)
        for entry in document["files"]:
            url = entry.get("provenance")
            if isinstance(url, str) and origin(url) in fetchable:
                entry["provenance"] = want.provenance + entry["url"][len(FILE_PREFIX):] + SUFFIX
        return json.dumps(document, separators=(",", ":")).encode()
    text = data.decode()
    if " data-provenance=" not in text:
        return data
    base = html.escape(want.provenance)

    def ours(match: re.Match) -> str:
        if origin(html.unescape(match[3])) not in fetchable:
            return match[0]
        return match[0][:match.start(3) - match.start()] + base + match[1] + SUFFIX + '"'

    return _ANCHOR.sub(ours, text).encode()


def check(data: bytes, filename: str, sha256: str | None) -> None:
    """A provenance object (PEP 740: version 1, attestation bundles) whose every attestation's
    statement names the file's sha256 (when its page gives one): the provenance of another
    file, or something else, is refused before it is cached. Signatures are the client's to
    verify (against a root of trust it has): this only keeps a wrong document out."""
    try:
        document = json.loads(data)
        if document.get("version") != 1 or not isinstance(document["attestation_bundles"], list):
            raise ValueError("not a version 1 provenance object")
        for bundle in document["attestation_bundles"]:
            for attestation in bundle["attestations"]:
                statement = json.loads(base64.b64decode(attestation["envelope"]["statement"],
                                                        validate=True))
                digest = statement["subject"][0]["digest"]["sha256"]
                if sha256 and digest.lower() != sha256:
                    raise IntegrityError(f"the provenance of {filename} attests another file")
    except IntegrityError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, IndexError, binascii.Error) as error:
        raise UpstreamError(f"the provenance of {filename} cannot be read: {error}") from error
