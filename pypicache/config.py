"""The one reader of the environment: every setting, its variable, parser and default."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from . import convert, policyfile, upstreams
from .cpus import usable_cpus


class ConfigError(ValueError):
    """A setting has a value we cannot use; the message names the variable."""


def _default_cache_dir(environ: Mapping[str, str]) -> str:
    """A user-writable place outside the image: $XDG_CACHE_HOME/pypicache or ~/.cache/pypicache."""
    home = environ.get("HOME") or os.path.expanduser("~")
    base = environ.get("XDG_CACHE_HOME") or os.path.join(home, ".cache")
    return os.path.join(base, "pypicache")


def redact(url: str) -> str:
    """The URL without credentials, for pages, logs and error messages."""
    if "@" not in url:
        return url
    parts = urlsplit(url)
    if "@" not in parts.netloc:  # a password with '/', '?' or '#' in it breaks the parse
        return redact_text(url)
    return parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]).geturl()


_WORD = re.compile(r"\S+")
_VARIABLE = re.compile(r"[A-Z][A-Z0-9_]*=['\"]?")  # how a message names a setting: PYPI_X='


def redact_text(text: str) -> str:
    """Text that may hold URLs (a setting's value, an error) with whatever could be their
    credentials masked: in each word with an `@`, from its scheme's `//` (else from its
    start, after a setting's name) to its last `@`. Cruder than `redact`, as it must hold
    for URLs too malformed to parse, and for passwords with any character but a space."""
    def mask(match: re.Match) -> str:
        word = match[0]
        end = word.rfind("@")
        if end < 0:
            return word
        start = word.find("//")
        if 0 <= start < end:
            start += 2
        else:
            named = _VARIABLE.match(word)
            start = named.end() if named else 0
        return word[:start] + "***" + word[end:]

    return _WORD.sub(mask, text)


def pip_default_index() -> tuple[str, str]:
    """The public index and its file host as pip itself defines them (so we name no host)."""
    from pip._internal.models.index import PyPI  # pip ships in every venv we run in

    return PyPI.simple_url, f"https://{PyPI.file_storage_domain}/packages"


def time_source(value: str) -> str:
    """PYPI_UPLOAD_TIME_SOURCE: a simple index URL, or `public` for the public index as pip
    defines it (so that no host is named here either)."""
    return pip_default_index()[0].rstrip("/") if value == "public" else convert.url(value)


@dataclass(frozen=True)
class Settings:
    mirror_url: str
    package_loc: str
    files_url: str
    cache_dir: Path
    index_ttl: float
    connect_timeout: float
    read_timeout: float
    max_size: int
    bind: str
    workers: int
    threads: int
    max_downloads: int
    max_downloads_total: int
    download_wait: float
    max_page_size: int
    negative_cache: int
    auth_file: Path | None
    auth_scope: str
    storage_url: str | None
    s3_redirect: bool
    node_url: str | None
    cluster_secret: str | None
    indexes: tuple[upstreams.Index, ...]  # in precedence order; one nameless for PYPI_MIRROR_URL
    index_pins: Mapping[str, str]  # canonical project -> upstream name
    prefetch: bool
    prefetch_depth: int
    prefetch_concurrency: int
    prefetch_queue: int
    prefetch_files: bool
    policy_file: Path | None
    upload_time_source: str | None
    uploads: bool
    uploaders: Mapping[str, tuple[str, ...]]  # user -> project globs ("*": any project)
    upload_max_size: int
    trusted_proxies: tuple[str, ...] | None  # None: gunicorn's own forwarded_allow_ips


# name -> (environment variable, parser, default). The default None means "derived below".
TABLE: dict[str, tuple[str, Callable[[str], Any], str | None]] = {
    "mirror_url": ("PYPI_MIRROR_URL", convert.url, None),
    "package_loc": ("PYPI_PACKAGE_LOC", convert.location, "/packages"),
    "files_url": ("PYPI_FILES_URL", convert.url, None),
    "cache_dir": ("PYPI_CACHE_DIR", Path, None),
    "index_ttl": ("PYPI_INDEX_TTL", convert.seconds, "600"),
    "connect_timeout": ("PYPI_CONNECT_TIMEOUT", convert.seconds, "10"),
    # Between two reads of one upstream response; pip itself waits 15 s.
    "read_timeout": ("PYPI_READ_TIMEOUT", convert.seconds, "30"),
    "max_size": ("PYPI_CACHE_MAX_SIZE", convert.size, "0"),
    "bind": ("PYPI_BIND", convert.bind, "127.0.0.1:8080"),
    # gunicorn's 2 x CPUs + 1, counting only the CPUs this container may really use.
    "workers": ("PYPI_WORKERS", convert.count, str(min(2 * usable_cpus() + 1, 9))),
    # Threads mostly wait on sockets; a slow download holds one for its whole length, and a
    # worker queues connections beyond this count, so be generous.
    "threads": ("PYPI_THREADS", convert.count, "32"),
    # Upstream downloads at once, per worker and over all workers; past either, a request
    # waits its turn up to PYPI_DOWNLOAD_WAIT seconds, then gets 503 with Retry-After.
    "max_downloads": ("PYPI_MAX_DOWNLOADS", convert.count, "16"),
    "max_downloads_total": ("PYPI_MAX_DOWNLOADS_TOTAL", convert.count, "64"),
    "download_wait": ("PYPI_DOWNLOAD_WAIT", convert.seconds, "10"),
    # No project page is near this; a bigger body is an upstream fault (502).
    "max_page_size": ("PYPI_MAX_PAGE_SIZE", convert.size, "64M"),
    # Project names the upstream answered 404 for, remembered per worker (a minute each).
    "negative_cache": ("PYPI_NEGATIVE_CACHE", convert.count, "10000"),
    # An htpasswd file of bcrypt hashes (htpasswd -B); unset: no login.
    "auth_file": ("PYPI_AUTH_FILE", convert.readable_file, None),
    "auth_scope": ("PYPI_AUTH_SCOPE", convert.auth_scope, "all"),
    # Unset: files live in PYPI_CACHE_DIR only. s3://bucket/prefix: shared by every node
    # (endpoint, region and credentials as boto3 reads them: AWS_ENDPOINT_URL, ...).
    "storage_url": ("PYPI_STORAGE_URL", convert.storage_url, None),
    # 1: a file found in the bucket is a redirect to a presigned URL, not streamed by us.
    "s3_redirect": ("PYPI_S3_REDIRECT", convert.flag, "0"),
    # This node's address as the other nodes reach it (http://host:port): a node downloading
    # a file then serves it to the others as it arrives (pypicache/peers.py). Unset: they wait for
    # the bucket, and past their patience download too.
    "node_url": ("PYPI_NODE_URL", convert.url, None),
    # What nodes prove to each other that they are nodes with (16 characters at least).
    "cluster_secret": ("PYPI_CLUSTER_SECRET", convert.secret, None),
    # Several upstreams in precedence order (pypicache/upstreams.py); unset: the one above.
    "indexes": ("PYPI_INDEXES", upstreams.parse_entries, None),
    "index_pins": ("PYPI_INDEX_PINS", upstreams.parse_pins, None),
    # Fetching ahead (pypicache/prefetch.py): a client sent a wheel's metadata will ask next for
    # the pages and metadata of its requirements, and theirs, this many levels down.
    "prefetch": ("PYPI_PREFETCH", convert.flag, "0"),
    "prefetch_depth": ("PYPI_PREFETCH_DEPTH", convert.count, "2"),
    # Threads per worker; they mostly wait on the upstream, and clients come first. A level
    # of a fan-out (the stack's 34 packages under its five) is fetched at this many at once.
    "prefetch_concurrency": ("PYPI_PREFETCH_CONCURRENCY", convert.count, "16"),
    # Work waiting per worker; past it, more is dropped (and counted).
    "prefetch_queue": ("PYPI_PREFETCH_QUEUE", convert.count, "256"),
    # 1: the chosen wheels too, for a fleet whose next container installs the same ones.
    "prefetch_files": ("PYPI_PREFETCH_FILES", convert.flag, "0"),
    # A policy (docs/POLICY.md): its rules checked as the server starts (check_policy), then
    # re-read by every worker when it changes (pypicache/policywatch.py). Unset: no policy.
    "policy_file": ("PYPI_POLICY_FILE", convert.readable_file, None),
    # A PEP 691 index whose pages give upload times (`public`: the public index): asked,
    # matching by sha256, for the files whose upstream page gives none (pypicache/uploadtimes.py).
    "upload_time_source": ("PYPI_UPLOAD_TIME_SOURCE", time_source, None),
    # The team's own packages (pypicache/uploads.py): a local index that comes before every
    # upstream, filled by twine or `uv publish` at /legacy/ by the users of PYPI_UPLOADERS
    # (`user` or `user=project-glob`, by spaces or commas), who log in from PYPI_AUTH_FILE.
    "uploads": ("PYPI_UPLOADS", convert.flag, "0"),
    "uploaders": ("PYPI_UPLOADERS", convert.uploaders, None),
    # A wheel of the team's is megabytes; past this an upload is refused (413).
    "upload_max_size": ("PYPI_UPLOAD_MAX_SIZE", convert.size, "100M"),
    # The fronts (addresses or networks, `*`: any) whose X-Forwarded-Proto gunicorn believes, so
    # that a request that reached a TLS front is https to the app: provenance URLs (PEP 740: of
    # a secure origin) point at this proxy only then. Unset: gunicorn's forwarded_allow_ips
    # (127.0.0.1, ::1; unix sockets always).
    "trusted_proxies": ("PYPI_TRUSTED_PROXIES", convert.addresses, None),
}


SECRETS = {"cluster_secret"}  # never echoed in an error


def _raw(environ: Mapping[str, str], variable: str) -> str:
    """The variable's value, or the content of the file `<variable>_FILE` names (a secret,
    such as a mirror URL with credentials, mounted as a file rather than put in the env)."""
    value = environ.get(variable, "").strip()
    secret = environ.get(variable + "_FILE", "").strip()
    if value or not secret:
        return value
    try:
        return Path(secret).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{variable}_FILE={secret!r}: cannot be read ({error})") from None


def load(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Read every setting from `environ` (default: os.environ); overrides win (tests)."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name, (variable, parse, default) in TABLE.items():
        if name in overrides:
            values[name] = overrides[name]
            continue
        raw = _raw(environ, variable) or default
        if raw is None:
            values[name] = None
            continue
        try:
            values[name] = parse(raw)
        except ValueError as error:
            # Any value may hold a URL with credentials (PYPI_INDEXES does), and so may the
            # parser's message, which may quote a word of it; a secret is never shown.
            shown = "(not shown)" if name in SECRETS else repr(raw)
            raise ConfigError(redact_text(f"{variable}={shown}: {error}")) from None
    values["index_pins"] = values["index_pins"] or {}
    if values["indexes"] and "indexes" not in overrides:
        values["indexes"] = _several(environ, values)
    elif values["index_pins"]:
        raise ConfigError("PYPI_INDEX_PINS needs PYPI_INDEXES: pins name its upstreams")
    if values["mirror_url"] is None:
        values["mirror_url"], public_files = pip_default_index()
        values["files_url"] = values["files_url"] or public_files
    if values["files_url"] is None:
        origin = urlsplit(values["mirror_url"])
        values["files_url"] = f"{origin.scheme}://{origin.netloc}{values['package_loc']}"
    if not values["indexes"]:
        values["indexes"] = (upstreams.Index("", values["mirror_url"], values["files_url"]),)
    if values["node_url"] and not (values["storage_url"] and values["cluster_secret"]):
        raise ConfigError("PYPI_NODE_URL needs PYPI_STORAGE_URL and PYPI_CLUSTER_SECRET")
    values["uploaders"] = values["uploaders"] or {}
    if values["uploads"] and not (values["auth_file"] and values["uploaders"]):
        raise ConfigError("PYPI_UPLOADS needs PYPI_AUTH_FILE and PYPI_UPLOADERS: uploaders log in")
    if values["cache_dir"] is None:
        values["cache_dir"] = Path(_default_cache_dir(environ))
    values["cache_dir"] = Path(values["cache_dir"]).absolute()
    return Settings(**{field.name: values[field.name] for field in fields(Settings)})


def check_policy(settings: Settings) -> None:
    """The rules of PYPI_POLICY_FILE valid, or ConfigError in one line: as the server starts
    (gunicorn.conf.py). Not in load(): a worker started later, with a bad new version of the
    file in place, must come up with the last good rules rather than halt the server."""
    if settings.policy_file is None:
        return
    try:
        policyfile.read(settings.policy_file)
    except policyfile.PolicyError as error:
        raise ConfigError(f"PYPI_POLICY_FILE={str(settings.policy_file)!r}: the policy file "
                          f"{error}") from None


def _several(environ: Mapping[str, str], values: dict[str, Any]) -> tuple[upstreams.Index, ...]:
    """PYPI_INDEXES' upstreams; the single-upstream URLs then name the first one."""
    for variable in ("PYPI_MIRROR_URL", "PYPI_FILES_URL"):
        if environ.get(variable, "").strip():
            raise ConfigError(f"{variable} and PYPI_INDEXES are both set: use one or the other")
    try:
        several = upstreams.build(values["indexes"], values["index_pins"], values["package_loc"],
                                pip_default_index())
    except ValueError as error:
        raise ConfigError(redact_text(f"PYPI_INDEXES / PYPI_INDEX_PINS: {error}")) from None
    values["mirror_url"], values["files_url"] = several[0].url, several[0].files_url
    return several
