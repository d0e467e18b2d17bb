"""Published files in an S3-compatible bucket shared by several nodes, and leases on downloads.

Keys under s3://bucket/prefix: `files/<path>` (published, verified files), `leases/<key>` (a
node's claim on a download in progress) and `nodes/<node>.json` (each node's statistics).
Endpoint, region and credentials are boto3's own (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...).

The first verified writer wins cluster-wide: files are put with `If-None-Match: *`, so a
second node's put of the same path fails with 412 and changes nothing. Leases are created the
same way (pypicache/s3leases.py, whose methods S3Storage has). Every fault of the store
becomes FileNotFoundError, False or "no lease needed" here: a node whose bucket is away
keeps serving from its own directory and the upstream.
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from .config import redact_text
from .convert import s3_location
from .perprocess import Once
from .s3leases import _FAULTS, NODE, Leasing, _status
from .storage import CHUNK, Item

log = logging.getLogger(__name__)
_PING = Config(connect_timeout=2, read_timeout=2, retries={"total_max_attempts": 1})
PRESIGNED_SECONDS = 600  # a redirected client fetches at once; the URL need not live long
MAX_PUT = 5 * 1024**3  # S3's limit for one PUT; larger files stay on the node that has them
AWAY_SECONDS = 30.0  # after a fault of the store, how long a node goes on without it


class UnsafeStore(Exception):
    """The store does not honour the conditional writes cluster mode rests on."""


class S3Blob:
    """A file in the bucket; its bytes are asked for only when they are read."""

    def __init__(self, storage: "S3Storage", key: str, size: int):
        self.storage, self.key, self.size = storage, key, size
        self._body = None

    def chunks(self, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
        stop = self.size if stop is None else stop
        if start >= stop:
            return
        try:
            self._body = self._get(f"bytes={start}-{stop - 1}")
            yield from self._body.iter_chunks(CHUNK)
        except _FAULTS as error:  # the object went (a lifecycle rule, a prune) or the store did
            raise FileNotFoundError(f"{self.key}: {error}") from None
        finally:
            self.close()

    def _get(self, byte_range: str) -> Any:
        """The object's body. A range of its size that the store calls unsatisfiable means it
        showed the object before all of it could be read (moto's server does, for a moment,
        when a node puts it as others read it): ask again, briefly."""
        for attempt in range(5):
            try:
                return self.storage.client().get_object(
                    Bucket=self.storage.bucket, Key=self.key, Range=byte_range)["Body"]
            except ClientError as error:
                if _status(error) != 416 or attempt == 4:
                    raise
                time.sleep(0.05 * 2 ** attempt)

    def read(self, offset: int, length: int) -> bytes:
        return b"".join(self.chunks(offset, min(offset + length, self.size)))

    def close(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None


class S3Storage(Leasing):
    """Files in a bucket under a prefix (see the module's docstring)."""

    def __init__(self, url: str, connect_timeout: float = 10, read_timeout: float = 30,
                 connections: int = 32, area: str = "files/"):
        self.location = url
        self.address: str | None = None  # where other nodes reach this one (PYPI_NODE_URL)
        self.bucket, self.prefix = s3_location(url)
        self.root = self.prefix + area  # files/, or uploads/ (the local index: uploads.py)
        self.config = Config(
            connect_timeout=connect_timeout, read_timeout=read_timeout,
            max_pool_connections=connections, retries={"mode": "standard", "max_attempts": 3},
            signature_version="s3v4",  # presigned URLs MinIO and Ceph accept too
        )
        self._client: Any = None
        self._pinger: Any = None  # the same, with short timeouts and no retry (/healthz)
        self._connect = Once(self._make_client)  # it holds sockets: one per process
        self._away_until = 0.0  # a store that failed is not asked again (and waited for) at once

    def _away(self) -> bool:
        return time.monotonic() < self._away_until

    def _failed(self, what: str, error: Exception) -> None:
        # botocore's messages name the endpoint (AWS_ENDPOINT_URL), which could hold a login.
        log.warning("bucket %s: %s failed (%s); going on without it for %.0f s",
                    self.location, what, redact_text(str(error)), AWAY_SECONDS)
        self._away_until = time.monotonic() + AWAY_SECONDS

    def client(self) -> Any:
        """boto3's client, made once per process after fork (it holds sockets)."""
        self._connect()
        return self._client

    def _make_client(self) -> None:
        session = boto3.session.Session()
        self._client = session.client("s3", config=self.config)
        self._pinger = session.client("s3", config=self.config.merge(_PING))

    # --- files ---------------------------------------------------------------------------
    def get(self, path: str) -> S3Blob:
        key = self.root + path
        if self._away():
            raise FileNotFoundError(path)
        try:
            head = self.client().head_object(Bucket=self.bucket, Key=key)
        except _FAULTS as error:
            if _status(error) != 404:
                self._failed("a lookup", error)
            raise FileNotFoundError(path) from None
        return S3Blob(self, key, head["ContentLength"])

    def store(self, path: str, file_path: Path, meta: dict[str, str] | None = None) -> bool:
        if file_path.stat().st_size > MAX_PUT:
            log.warning("%s is larger than one PUT allows: kept on this node only", path)
            return False
        if self._away():
            return False
        try:
            with open(file_path, "rb") as body:
                self.client().put_object(
                    Bucket=self.bucket, Key=self.root + path, Body=body, IfNoneMatch="*",
                    ContentType="application/octet-stream", Metadata=meta or {},
                )
        except _FAULTS as error:
            if _status(error) not in (412, 409):  # 412/409: another node was first
                self._failed(f"putting {path}", error)
            return False
        return True

    def delete(self, prefix: str) -> int:
        items = [self.root + item.path for item in self.list(prefix)]
        for start in range(0, len(items), 1000):
            batch = [{"Key": key} for key in items[start:start + 1000]]
            self.client().delete_objects(Bucket=self.bucket, Delete={"Objects": batch})
        return len(items)

    def delete_files(self, paths: list[str]) -> None:
        """A thousand keys a request, none listed first (a project's page may list
        thousands); a fault is logged, and the bucket left alone for a while (as `store`)."""
        if self._away():
            return
        try:
            for start in range(0, len(paths), 1000):
                batch = [{"Key": self.root + path} for path in paths[start:start + 1000]]
                self.client().delete_objects(Bucket=self.bucket,
                                             Delete={"Objects": batch, "Quiet": True})
        except _FAULTS as error:
            self._failed("a removal", error)

    def list(self, prefix: str = "") -> Iterator[Item]:
        yield from self._list(self.root, prefix)

    def _list(self, root: str, prefix: str) -> Iterator[Item]:
        pages = self.client().get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=root + prefix
        )
        for page in pages:
            for entry in page.get("Contents", []):
                name = entry["Key"][len(root):]
                if prefix and name != prefix and not name.startswith(prefix.rstrip("/") + "/"):
                    continue  # `a/b` must not match `a/bc`
                yield Item(name, entry["Size"], entry["LastModified"].timestamp())

    # --- small documents replaced in place, keys under the prefix (pypicache/uploads.py) ---------
    def read_document(self, key: str) -> tuple[bytes, str] | None:
        """The object's bytes and ETag, None when there is none; OSError when the store fails."""
        try:
            answer = self.client().get_object(Bucket=self.bucket, Key=self.prefix + key)
            return answer["Body"].read(), answer["ETag"]
        except _FAULTS as error:
            if _status(error) == 404:
                return None
            raise OSError(f"the bucket failed reading {key}: {redact_text(str(error))}") from None

    def write_document(self, key: str, data: bytes, etag: str | None) -> bool:
        """Replace the object if its ETag is still `etag` (None: create it if there is none);
        False when another writer changed it first."""
        condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
        try:
            self.client().put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data,
                                     ContentType="application/json", **condition)
        except _FAULTS as error:
            if _status(error) in (412, 409):
                return False
            raise OSError(f"the bucket failed writing {key}: {redact_text(str(error))}") from None
        return True

    def delete_document(self, key: str) -> None:
        try:
            self.client().delete_object(Bucket=self.bucket, Key=self.prefix + key)
        except _FAULTS as error:
            raise OSError(f"the bucket failed deleting {key}: {redact_text(str(error))}") from None

    def etags(self, folder: str) -> dict[str, str]:
        """{name: ETag} of every object under the folder; OSError on a fault."""
        root, found = self.prefix + folder, {}
        try:
            pages = self.client().get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=root)
            for page in pages:
                for entry in page.get("Contents", []):
                    found[entry["Key"][len(root):]] = entry["ETag"]
            return found
        except _FAULTS as error:
            raise OSError(f"the bucket failed listing: {redact_text(str(error))}") from None

    def url(self, path: str) -> str:
        return self.client().generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self.root + path},
            ExpiresIn=PRESIGNED_SECONDS,
        )

    def ping(self) -> str | None:
        """Whether the bucket answers now, within 2 s and with no retry: None, or
        why not in a few words (an HTTP status or the kind of fault, never a URL)."""
        try:
            self._connect()
            self._pinger.head_bucket(Bucket=self.bucket)
        except ClientError as error:
            return f"the bucket answered {_status(error)}"
        except _FAULTS as error:
            return f"the bucket did not answer ({type(error).__name__})"
        return None

    def check_conditions(self) -> str | None:
        """Whether the store honours conditional writes, on which the first writer's win and
        every lease rest: a second create of a key with If-None-Match, and a write with an
        If-Match of another ETag, must both fail. Raises UnsafeStore when either succeeds; a
        store that cannot be asked (away, no such bucket) returns why (this node then goes on
        without it, as after any fault of the store); None when all is well."""
        key = f"{self.prefix}checks/{NODE}-{uuid.uuid4().hex}"
        ignored = []
        try:
            client = self.client()
            client.put_object(Bucket=self.bucket, Key=key, Body=b"first", IfNoneMatch="*")
            try:
                for name, condition in (("If-None-Match: *", {"IfNoneMatch": "*"}),
                                        ("If-Match", {"IfMatch": '"not-its-etag"'})):
                    try:
                        client.put_object(Bucket=self.bucket, Key=key, Body=b"x", **condition)
                        ignored.append(name)
                    except ClientError as error:
                        if _status(error) not in (412, 409):
                            raise
            finally:
                client.delete_object(Bucket=self.bucket, Key=key)
        except _FAULTS as error:
            return redact_text(str(error))
        if ignored:
            raise UnsafeStore(
                f"the bucket of PYPI_STORAGE_URL ignores conditional writes ({', '.join(ignored)}"
                " on an existing key succeeded): several nodes would download and lease the same"
                " file at once; use a store that honours them, or no PYPI_STORAGE_URL")
        return None

    # --- statistics of every node --------------------------------------------------------
    def put_node_stats(self, node: str, data: dict) -> None:
        try:
            self.client().put_object(Bucket=self.bucket, Key=f"{self.prefix}nodes/{node}.json",
                                     Body=json.dumps(data).encode())
        except _FAULTS as error:
            log.warning("could not share this node's statistics: %s", redact_text(str(error)))

    def node_stats(self) -> dict[str, dict]:
        nodes: dict[str, dict] = {}
        try:
            for item in self._list(f"{self.prefix}nodes/", ""):
                body = self.client().get_object(Bucket=self.bucket,
                                                Key=f"{self.prefix}nodes/{item.path}")["Body"]
                nodes[item.path.removesuffix(".json")] = json.loads(body.read())
        except (*_FAULTS, ValueError) as error:
            log.warning("could not read the nodes' statistics: %s", redact_text(str(error)))
        return nodes
