"""Leases on downloads in the bucket (mixed into s3.py's S3Storage): which node downloads a
file now, where the other nodes reach it, and when a dead node's claim has expired.

A lease is an object `leases/<key>` created with `If-None-Match: *`; its holder renews it (a
put with `If-Match` its last ETag) every third of LEASE_SECONDS, so a node that dies lets go
within LEASE_SECONDS, and only one node can take an expired lease over (the `If-Match` on
the expired ETag). Its age is the store's to tell (`_age`): nodes' clocks may disagree.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import uuid
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from .cachedir import key as hashed
from .config import redact_text

log = logging.getLogger(__name__)
LEASE_SECONDS = 10.0
CLOCK_STEP = 1.0  # HTTP dates count whole seconds: a lease is live a second longer
_FAULTS = (BotoCoreError, ClientError, OSError)
NODE = f"{socket.gethostname()}-{os.getpid()}"


def _status(error: Exception) -> int | None:
    if isinstance(error, ClientError):
        return error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return None


def _age(answer: dict) -> float:
    """Seconds since the object of a GET was last written, by the store's own clock: its Date
    header against the object's Last-Modified, both from the store, so nodes whose clocks
    disagree still agree on which lease has expired. (A store that sends no Date: this node's
    clock against the Last-Modified.)"""
    date = answer.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    now = parsedate_to_datetime(date) if date else datetime.now(timezone.utc)
    return (now - answer["LastModified"]).total_seconds()


class NoLease:
    """No lease is needed: the bucket is away (this node goes on alone) or too small for the
    file (it stays on the node that has it)."""

    def release(self) -> None:
        pass


class S3Lease:
    """A live claim on one download, renewed by a thread of its own until released."""

    def __init__(self, storage: "Leasing", key: str, etag: str):
        self.storage, self.key, self.etag = storage, key, etag
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"lease {key}", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._done.wait(LEASE_SECONDS / 3):
            try:
                etag = self.storage._put_lease(self.key, if_match=self.etag)
            except _FAULTS as error:  # try again; if the store stays away the lease expires
                log.warning("could not renew the lease %s: %s", self.key, redact_text(str(error)))
                continue
            if etag is None:
                log.warning("lost the lease %s; the download goes on", self.key)
                return
            self.etag = etag

    def release(self) -> None:
        self._done.set()
        self._thread.join(5)  # a renewal under way changes the ETag we delete by
        try:
            self.storage.client().delete_object(
                Bucket=self.storage.bucket, Key=self.key, IfMatch=self.etag
            )
        except _FAULTS as error:  # it expires anyway
            log.info("could not release the lease %s: %s", self.key, redact_text(str(error)))


class Leasing:
    """S3Storage's leases; its `client`, `bucket`, `prefix`, `address`, `_away`, `_failed`."""

    bucket: str
    prefix: str
    address: str | None
    client: Any
    _away: Any
    _failed: Any

    def holder(self, name: str) -> str | None:
        """The address of the node holding the lease on `name` (None: no lease, no address,
        or the store is away)."""
        if self._away():
            return None
        try:
            answer = self.client().get_object(Bucket=self.bucket, Key=self._lease_key(name))
            return json.loads(answer["Body"].read()).get("address")
        except (*_FAULTS, ValueError, AttributeError):
            return None

    def _lease_key(self, name: str) -> str:
        return f"{self.prefix}leases/{hashed(name)}"

    def lease(self, name: str) -> S3Lease | NoLease | None:
        key = self._lease_key(name)
        if self._away():
            return NoLease()
        try:
            for _ in range(3):
                etag = self._put_lease(key, if_none_match=True)
                if etag is not None:
                    return S3Lease(self, key, etag)
                try:
                    current = self.client().get_object(Bucket=self.bucket, Key=key)
                except ClientError as error:
                    if _status(error) == 404:
                        continue  # released between our two looks: try again
                    raise
                holder = json.loads(current["Body"].read())
                if _age(current) <= LEASE_SECONDS + CLOCK_STEP:
                    return None
                etag = self._put_lease(key, if_match=current["ETag"])  # take the expired one
                if etag is not None:
                    log.info("took over %s's expired lease %s", holder.get("node"), key)
                    return S3Lease(self, key, etag)
            return None
        except (*_FAULTS, ValueError) as error:  # this node downloads on its own
            self._failed("a lease", error)
            return NoLease()

    def _put_lease(self, key: str, if_match: str | None = None,
                   if_none_match: bool = False) -> str | None:
        """The new ETag, or None when the condition failed (another node holds the lease)."""
        # No time in it: a lease's age is the store's to tell (_age), the nodes' clocks may differ.
        body = {"node": NODE, "nonce": uuid.uuid4().hex, "address": self.address}
        condition = {"IfMatch": if_match} if if_match else {"IfNoneMatch": "*"}
        try:
            answer = self.client().put_object(
                Bucket=self.bucket, Key=key, Body=json.dumps(body).encode(), **condition
            )
        except ClientError as error:
            if _status(error) in (412, 409):
                return None
            raise
        return answer["ETag"]
