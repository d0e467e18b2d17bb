"""`prune --bucket` and `verify --bucket`: the shared bucket of PYPI_STORAGE_URL, not a node's
directory (pypicache/cli.py's commands for the node's own)."""
from __future__ import annotations

import hashlib
import sys

import click
from tqdm import tqdm

from .stats import report
from .storage import Storage


def _bucket(services):
    if services.cluster is None:
        raise click.UsageError("--bucket needs PYPI_STORAGE_URL=s3://bucket/prefix")
    return services.cluster.bucket


def prune_bucket(services, size: str | None, limit: int) -> None:
    bucket = _bucket(services)
    if size is None:
        raise click.UsageError("--bucket needs --to SIZE")
    files, freed, left = oldest_out(bucket, limit)
    click.echo(f"removed {files} files ({report.human_bytes(freed)}) from "
               f"{services.settings.storage_url}; {report.human_bytes(left)} left")


def oldest_out(bucket: Storage, limit: int) -> tuple[int, int, int]:
    """Remove the bucket's oldest files until it holds at most `limit` bytes: (files, bytes
    removed, bytes left). Oldest first, as S3 records no last use; a node streaming a file
    removed meanwhile finishes it (S3 keeps a GET under way), the next request downloads it."""
    items = sorted(bucket.list(), key=lambda item: item.mtime)
    left = sum(item.size for item in items)
    files = freed = 0
    for item in items:
        if left <= limit:
            break
        bucket.delete(item.path)
        files, freed, left = files + 1, freed + item.size, left - item.size
    return files, freed, left


def verify_bucket(services) -> None:
    """Re-hash every file in the bucket against the sha256 that this node's cached pages (or,
    for what they do not list, its catalog) give; remove those that differ. A file nothing
    here vouches for is left as it is and counted: run it on a node that has the pages."""
    bucket = _bucket(services)
    recorded = {row[0]: row[3] for row in services.catalog.files()}
    items = list(bucket.list())
    total = sum(item.size for item in items)
    removed = unchecked = 0
    with tqdm(total=total, unit="B", unit_scale=True, desc="verifying the bucket",
              file=sys.stdout) as bar:
        for item in items:
            listed = services.listings.find(item.path)
            expected = (listed.sha256 if listed else None) or recorded.get(item.path)
            if expected is None:
                unchecked += 1
                bar.update(item.size)
                continue
            digest = hashlib.sha256()
            try:
                for chunk in bucket.get(item.path).chunks():
                    digest.update(chunk)
                    bar.update(len(chunk))
            except FileNotFoundError:  # removed meanwhile (a prune, a lifecycle rule)
                continue
            if digest.hexdigest() != expected:
                bucket.delete(item.path)
                removed += 1
                tqdm.write(f"removed from the bucket: {item.path} (verify: sha256 mismatch)")
    click.echo(f"verified {len(items) - unchecked} of {len(items)} files in the bucket "
               f"({report.human_bytes(total)}): {removed} removed, {unchecked} that no page or "
               "row of this node vouches for left as they are")
