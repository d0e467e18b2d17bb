"""How a setting's text becomes its value: one parser per kind of setting, each taking the
string pypicache/config.py read and raising ValueError that says what the string must be."""
from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from urllib.parse import urlsplit

# Who must log in when PYPI_AUTH_FILE is set: every route but /healthz, or only the pages
# that list what the organisation uses (the dashboard, its JSON and the metrics).
AUTH_SCOPES = ("all", "dashboard")
UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if parts.query or parts.fragment:
        raise ValueError("must not have a query or fragment")
    return value.rstrip("/")


def location(value: str) -> str:
    if not value.startswith("/") or "?" in value or "#" in value:
        raise ValueError("must be a URI path starting with '/', like /packages")
    return "/" + value.strip("/") if value.strip("/") else ""


def seconds(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError("must be a positive number of seconds")
    return number


def count(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError("must be a whole number of at least 1")
    return number


def size(value: str) -> int:
    """A byte count like 50G, 512M or 1000000; 0 means no cap."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", value, re.IGNORECASE)
    if not match:
        raise ValueError("must be a size like 50G, 512M or a number of bytes")
    return int(float(match[1]) * UNITS[match[2].upper()])


def bind(value: str) -> str:
    if not re.fullmatch(r"(unix:\S+|[\w.\-\[\]:]*:\d{1,5})", value):
        raise ValueError("must be HOST:PORT or unix:PATH")
    return value


def auth_scope(value: str) -> str:
    if value not in AUTH_SCOPES:
        raise ValueError("must be one of " + ", ".join(AUTH_SCOPES))
    return value


def readable_file(value: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise ValueError("must be a readable file")
    return path.absolute()


def s3_location(value: str) -> tuple[str, str]:
    """s3://bucket/some/prefix -> ("bucket", "some/prefix/"); ValueError when it is not one."""
    if not value.startswith("s3://"):
        raise ValueError("must be s3://bucket or s3://bucket/prefix")
    bucket, _, prefix = value[len("s3://"):].partition("/")
    if not re.fullmatch(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]", bucket):
        raise ValueError("must name a bucket (3-63 lower-case letters, digits, '.', '-')")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


def storage_url(value: str) -> str:
    s3_location(value)
    return value


def secret(value: str) -> str:
    if len(value) < 16:
        raise ValueError("must be 16 characters or more")
    return value


def flag(value: str) -> bool:
    if value.lower() not in ("0", "1", "true", "false", "yes", "no"):
        raise ValueError("must be 1 or 0")
    return value.lower() in ("1", "true", "yes")


def uploaders(value: str) -> dict[str, tuple[str, ...]]:
    """`user user=glob ...` (by spaces or commas) -> {user: project globs}; a bare user may
    upload any project ("*"), and a user named twice gets the globs of both."""
    found: dict[str, tuple[str, ...]] = {}
    for word in re.split(r"[\s,]+", value.strip()):
        if not word:
            continue
        user, equals, glob = word.partition("=")
        if not re.fullmatch(r"[^:\s=]{1,255}", user) or (equals and not glob):
            raise ValueError(f"{word!r} is not user or user=project-glob")
        glob = re.sub(r"[-_.]+", "-", glob.lower()) if equals else "*"  # as names canonicalize
        found[user] = found.get(user, ()) + (glob,)
    if not found:
        raise ValueError("must name at least one user")
    return found


def addresses(value: str) -> tuple[str, ...]:
    """Addresses or networks (`10.0.0.0/8`), by commas or spaces, or `*` for any: as gunicorn's
    forwarded_allow_ips takes them."""
    found = tuple(part for part in re.split(r"[,\s]+", value) if part)
    for part in found:
        if part != "*":
            try:
                ipaddress.ip_network(part, strict=False)
            except ValueError:
                raise ValueError(f"{part!r} is not an address or a network") from None
    return found
