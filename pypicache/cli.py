"""The `pypicache` command: serve, warm, prune, verify, stats, policy, uploads.

Installed as a console script (`pypicache.cli:main`); the same group is also the app's flask
command, `flask --app pypicache:create_app pypicache ...`, as it was before the package.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import click
from flask import current_app
from flask.cli import ScriptInfo, with_appcontext
from packaging.utils import canonicalize_name
from tqdm import tqdm

from . import __version__, config, convert, database, names
from .bucketcli import prune_bucket, verify_bucket
from .catalog import Catalog
from .policycli import policy
from .servecli import serve
from .stats import report
from .uploadscli import uploads

CHUNK = 1 << 20


@click.group("pypicache")
@click.version_option(__version__, prog_name="pypicache", message="%(prog)s %(version)s")
def pypicache() -> None:
    """An on-demand caching mirror of a Python package index: the server and its cache."""


pypicache.add_command(serve)  # gunicorn with the shipped settings (pypicache/servecli.py)
pypicache.add_command(policy)  # policy check FILE, policy explain PROJECT (pypicache/policycli.py)
pypicache.add_command(uploads)  # uploads yank|unyank|delete PROJECT VERSION (uploadscli.py)


def main() -> None:
    """The console script: the group, with the app its commands need built from the environment
    (PYPI_* settings) when a command asks for it, as flask's `--app` would."""
    from . import create_app  # here: the package imports this module while it builds an app

    try:
        pypicache.main(prog_name="pypicache", obj=ScriptInfo(create_app=create_app))
    except config.ConfigError as error:  # one line naming the variable, as the server says it
        sys.exit(f"pypicache: bad configuration: {error}")


def _services():
    return current_app.extensions["pypicache"]


@pypicache.command()
@click.option("-r", "--requirement", "requirements", multiple=True, required=True,
              type=click.Path(exists=True, dir_okay=False),
              help="A requirements file (repeatable).")
@click.option("--proxy", help="The running proxy's URL [default: http://PYPI_BIND].")
@click.option("--python-version", help="Resolve for this Python (as pip's --python-version).")
@click.option("--platform", "platforms", multiple=True,
              help="Resolve for this platform (pip's --platform; repeatable).")
@with_appcontext
def warm(requirements, proxy, python_version, platforms) -> None:
    """Fetch everything the requirements need through the proxy, so later installs hit the cache.

    pip resolves through the proxy (which caches the index pages and metadata it reads); the
    files it picked are then downloaded through the proxy with a progress bar.
    """
    proxy = (proxy or f"http://{_services().settings.bind}").rstrip("/")
    files = _resolve(proxy, requirements, python_version, platforms)
    click.echo(f"{len(files)} files to warm through {config.redact(proxy)}/simple")
    failed = 0
    total = sum(size for _, _, size in files)
    with tqdm(total=total, unit="B", unit_scale=True, desc="warming", file=sys.stdout) as bar:
        for url, sha256, _ in files:
            try:
                _download(url, sha256, bar)
            except (OSError, ValueError) as error:  # urllib's errors are OSErrors
                failed += 1
                tqdm.write(f"failed: {config.redact(url)}: {config.redact_text(str(error))}")
    if failed:
        raise click.ClickException(f"{failed} of {len(files)} files failed")
    click.echo(f"warmed {len(files)} files")


def _resolve(proxy, requirements, python_version, platforms) -> list[tuple[str, str | None, int]]:
    """pip's resolution (`install --dry-run --report`) of the requirements, through the proxy."""
    with tempfile.TemporaryDirectory() as scratch:
        report_path = Path(scratch) / "report.json"
        command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
                   "--quiet", "--disable-pip-version-check", "--no-cache-dir",
                   "--index-url", f"{proxy}/simple", "--report", str(report_path)]
        for requirement in requirements:
            command += ["-r", requirement]
        if python_version or platforms:
            command += ["--only-binary=:all:", "--target", str(Path(scratch) / "target")]
            command += ["--python-version", python_version] if python_version else []
            for platform in platforms:
                command += ["--platform", platform]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
        env["PIP_CONFIG_FILE"] = os.devnull
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise click.ClickException(f"pip could not resolve the requirements:\n{done.stderr}")
        resolved = json.loads(report_path.read_text())
    files = []
    for item in resolved.get("install", []):
        info = item["download_info"]
        hashes = info.get("archive_info", {}).get("hashes", {})
        size = _size_on_page(proxy, item["metadata"]["name"], info["url"])
        files.append((info["url"], hashes.get("sha256"), size))
    return files


def _get(url: str, accept: str = "*/*"):
    # The CLI is a client of our own proxy, never of the upstream: stdlib HTTP is enough,
    # and pypicache/httpclient.py stays the one user of requests (with its origin checks).
    return urllib.request.urlopen(urllib.request.Request(url, headers={"Accept": accept}), timeout=60)


def _size_on_page(proxy: str, project: str, url: str) -> int:
    """The file's size from the proxy's JSON page (PEP 700), for the progress bar; 0 if absent."""
    try:
        with _get(f"{proxy}/simple/{canonicalize_name(project)}/",
                  "application/vnd.pypi.simple.v1+json") as page:
            files = json.load(page).get("files", [])
        filename = url.rsplit("/", 1)[-1].split("#", 1)[0]
        for entry in files:
            if entry.get("filename") == filename:
                return int(entry.get("size") or 0)
    except (OSError, ValueError):
        pass
    return 0


def _download(url: str, sha256: str | None, bar: tqdm) -> None:
    digest = hashlib.sha256()
    with _get(url) as response:  # an HTTP error status raises HTTPError, an OSError
        bar.set_postfix_str(url.rsplit("/", 1)[-1][:40])
        while chunk := response.read(CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    if sha256 and digest.hexdigest() != sha256:
        raise ValueError("sha256 does not match the index")


@pypicache.command()
@click.option("--to", "size", help="Target size, like 10G or 512M [default: PYPI_CACHE_MAX_SIZE].")
@click.option("--bucket", is_flag=True,
              help="Prune the bucket of PYPI_STORAGE_URL, oldest files first, not this node.")
@with_appcontext
def prune(size, bucket) -> None:
    """Remove least recently used files until the cache is at most the given size."""
    services = _services()
    try:
        limit = convert.size(size) if size else services.settings.max_size
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--to") from None
    if bucket:
        prune_bucket(services, size, limit)
        return
    if size is None and not limit:
        raise click.UsageError("no size given and PYPI_CACHE_MAX_SIZE is 0 (no cap): use --to")
    evictor = current_app.extensions["pypicache.stats"].evictor
    result = evictor.run(limit, reason="pruned")
    pages = f" and {result.pages} pages" if result.pages else ""
    click.echo(f"removed {result.files} files{pages} ({report.human_bytes(result.bytes)}); "
               f"{report.human_bytes(result.remaining)} on disk, limit {report.human_bytes(limit)}"
               + (f"; {result.skipped} in use kept" if result.skipped else ""))


@pypicache.command()
@click.option("--bucket", is_flag=True,
              help="Verify the bucket of PYPI_STORAGE_URL, not this node's directory.")
@with_appcontext
def verify(bucket) -> None:
    """Re-hash every cached file against its recorded sha256; remove (and log) those that differ.

    Files on disk the catalog does not know are checked against the hash their cached index
    page promised, and adopted into the catalog when they match (or when no page gave a hash).
    """
    services = _services()
    if bucket:
        verify_bucket(services)
        return
    cachedir, catalog, listings = services.cachedir, services.catalog, services.listings
    rows = catalog.files()
    known = {row[0] for row in rows}
    strays = [f for f in cachedir.files.rglob("*")
              if f.is_file() and f.relative_to(cachedir.files).as_posix() not in known]
    total = sum(row[2] for row in rows) + sum(f.stat().st_size for f in strays)
    removed = adopted = 0
    with tqdm(total=total, unit="B", unit_scale=True, desc="verifying", file=sys.stdout) as bar:
        for path, _, size, sha256, *_ in rows:
            digest = _hash(cachedir.file(path), bar)
            if digest != sha256:
                reason = "verify: file missing" if digest is None else "verify: sha256 mismatch"
                removed += _remove(cachedir, catalog, path, reason)
        for file in strays:
            path = file.relative_to(cachedir.files).as_posix()
            listed = listings.find(path)
            project, expected = (listed.project, listed.sha256) if listed else (None, None)
            digest = _hash(file, bar)
            if digest is not None and expected in (None, digest):
                size = file.stat().st_size
                catalog.add_cached(path, project or names.project_of_file(path), size, digest)
                adopted += 1
            elif digest is not None:
                removed += _remove(cachedir, catalog, path, "verify: sha256 mismatch")
    click.echo(f"verified {len(rows) + len(strays)} files ({report.human_bytes(total)}): "
               f"{removed} removed, {adopted} adopted into the catalog")


def _hash(file: Path, bar: tqdm) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(file, "rb") as stream:
            while chunk := stream.read(CHUNK):
                digest.update(chunk)
                bar.update(len(chunk))
    except FileNotFoundError:
        return None
    return digest.hexdigest()


def _remove(cachedir, catalog, path: str, reason: str) -> int:
    """Unlink under the file's lock (no download of it is running), and log why; 1 if done."""
    lock = cachedir.try_lock(path)
    if lock is None:
        tqdm.write(f"skipped (being downloaded): {path}")
        return 0
    try:
        cachedir.file(path).unlink(missing_ok=True)
        catalog.forget(path, reason)
    finally:
        cachedir.unlock(path, lock)
    tqdm.write(f"removed: {path} ({reason})")
    return 1


@pypicache.command()
@click.option("--json", "as_json", is_flag=True, help="Print the dashboard's data as JSON.")
@with_appcontext
def stats(as_json: bool) -> None:
    """Show what is cached, hits and misses, and the time the cache saved (writing nothing)."""
    settings = _services().settings
    path = settings.cache_dir / database.NAME
    if not path.is_file():
        raise click.ClickException(f"no cache at {settings.cache_dir} (PYPI_CACHE_DIR): "
                                   "nothing cached yet, or another directory")
    catalog = Catalog(path, readonly=True)
    overview = report.overview(catalog, settings.max_size)
    projects = report.projects(catalog, sort="size", descending=True)
    if as_json:
        data = overview.as_dict() | {"project_list": [vars(p) for p in projects]}
        click.echo(json.dumps(data, indent=2))
        return
    o = overview
    cap = f" of {report.human_bytes(o.max_size)}" if o.max_size else " (no cap)"
    ratio = "-" if o.hit_ratio is None else f"{o.hit_ratio:.1%}"
    t = "-" if o.upstream_mb_s is None else f"{o.upstream_mb_s:.1f} MB/s"
    d = "-" if o.local_mb_s is None else f"{o.local_mb_s:.0f} MB/s"
    saved = "-" if o.seconds_saved is None else f"{o.seconds_saved:.1f} s"
    click.echo(f"cached: {o.files} files, {o.projects} projects, {report.human_bytes(o.bytes)}; "
               f"{o.pages} index pages, {report.human_bytes(o.page_bytes)}; disk use "
               f"{report.human_bytes(o.disk)}{cap}")
    counts = ", ".join(f"{n} {kind}" for kind, n in sorted(o.requests.items())) or "none"
    click.echo(f"file requests: {counts}; hit ratio {ratio}")
    click.echo(f"served from cache {report.human_bytes(o.bytes_from_cache)}, from upstream "
               f"{report.human_bytes(o.bytes_from_upstream)} in {o.downloads} downloads")
    click.echo(f"t = {t}, d = {d}, time saved {saved}")
    for p in projects[:20]:
        click.echo(f"  {p.name:<40} {p.files:>5} files {report.human_bytes(p.size):>10} {p.hits:>7} hits")
