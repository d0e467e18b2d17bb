"""A release's core metadata (a `.metadata` file, PEP 658) read into the fields of the legacy
JSON API's `info` (pypicache/legacyjson.py), with Warehouse's names and its nulls.

packaging's `parse_email` reads the fields (every Metadata-Version, multiple-use fields as
lists, Project-URL as a mapping) and never raises on a bad one: what it cannot read is left
out, and a field that is absent is null, as Warehouse answers it.
"""
from __future__ import annotations

from typing import Any

from packaging.metadata import parse_email

# info key -> RawMetadata key, for fields Warehouse answers as the text (or list) they hold.
_SAME = {
    "name": "name",
    "summary": "summary",
    "description": "description",
    "description_content_type": "description_content_type",
    "author": "author",
    "author_email": "author_email",
    "maintainer": "maintainer",
    "maintainer_email": "maintainer_email",
    "license": "license",
    "license_expression": "license_expression",
    "license_files": "license_files",
    "home_page": "home_page",
    "download_url": "download_url",
    "requires_python": "requires_python",
    "requires_dist": "requires_dist",
    "provides_extra": "provides_extra",
    "dynamic": "dynamic",
    "project_urls": "project_urls",
}
# What info holds for a field the metadata does not give (Warehouse's own answers).
EMPTY: dict[str, Any] = {key: None for key in _SAME} | {
    "classifiers": [],
    "keywords": None,
    "platform": None,
}


def info_fields(data: bytes) -> dict[str, Any] | None:
    """The `info` fields that `data` (a core metadata file) gives; None when it names no
    project (not core metadata at all)."""
    try:
        raw, _unparsed = parse_email(data)
    except (ValueError, TypeError, LookupError):  # bytes no email parser reads
        return None
    if not raw.get("name"):
        return None
    fields = dict(EMPTY)
    for key, field in _SAME.items():
        value = raw.get(field)
        if value:  # an empty list or text is absent, as Warehouse stores it
            fields[key] = dict(value) if isinstance(value, dict) else value
    fields["classifiers"] = list(raw.get("classifiers") or [])
    # Warehouse keeps Keywords and Platform as the text of the field: one string.
    if raw.get("keywords"):
        fields["keywords"] = ",".join(raw["keywords"])
    if raw.get("platforms"):
        fields["platform"] = ", ".join(raw["platforms"])
    return fields
