"""Several nodes sharing one bucket: hits found there, one download cluster-wide, shared statistics.

A node looks on its own disk first, then in the bucket (pypicache/s3.py). A cold file is downloaded
exactly as on one node (pypicache/fetch.py: the node's flock, the temp file, followers, verify,
publish), under a lease in the bucket that tells the other nodes to wait; once published on
the downloading node, the file is put into the bucket (the first verified writer wins) and
the lease is released, and the waiting nodes serve it from the bucket.

With PYPI_NODE_URL the waiting nodes do not wait: they read the leading node's download as it
lands (pypicache/peers.py), and take it over from where their bytes stop if that node dies: one
upstream download cluster-wide whatever the file's size. Without it, the guarantee holds for a
file whose download ends within `patience` (LEASE_SECONDS, or half the read timeout if less);
a node cannot keep its clients waiting without a byte for longer (pip gives up after 15 s),
so past that it downloads too: at most one download per node. A node that dies lets its
lease expire (LEASE_SECONDS), and the next node takes it over.
"""
from __future__ import annotations

import fcntl
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from . import wakeups
from .cachedir import CacheDir
from .catalog import Catalog
from .conditional import PLAIN, Ask
from .fetch import Fetcher
from .listings import Listed
from .perprocess import Once
from .results import BucketFile, FileAnswer
from .peers import Peers
from .s3 import S3Storage
from .s3leases import CLOCK_STEP, LEASE_SECONDS

log = logging.getLogger(__name__)
SHARE_SECONDS = 10.0  # how often a node puts its statistics into the bucket
BUCKET_CHECK_SECONDS = 5.0
STATS_LOCK = "cluster-stats"  # not a file path (no '/'): one worker per node shares them


class ClusterFetcher(Fetcher):
    """The single-node fetcher, with the bucket as a second place to find files."""

    def __init__(self, *args, cluster: "Cluster", redirect: bool, peers: Peers | None = None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.cluster = cluster
        self.bucket = cluster.bucket
        self.redirect = redirect
        self.peers = peers  # with PYPI_NODE_URL: other nodes' downloads are read as they land
        self._claims: dict[str, Claim] = {}
        self.patience = min(LEASE_SECONDS, self.stall / 2)

    def open(self, path: str, ask: Ask = PLAIN) -> FileAnswer:
        self.cluster.start()  # after fork, in the worker: a thread of its own
        return super().open(path, ask)

    def cached(self, path: str) -> FileAnswer | None:
        if (hit := super().cached(path)) is not None:
            return hit
        try:
            blob = self.bucket.get(path)
        except FileNotFoundError:
            return None
        return BucketFile(path, blob, self.bucket.url(path) if self.redirect else None)

    def made_here(self, path: str) -> None:
        """Put it in the bucket too (a few KB, at once), so no other node extracts it again."""
        self.bucket.store(path, self.cachedir.file(path))

    def _lead(self, path: str, lock: int, listed: Listed | None = None) -> FileAnswer:
        claim = self._claim(path)
        if isinstance(claim, BucketFile):
            self.cachedir.unlock(path, lock)
            return claim
        self._claims[path] = claim  # for _source and resume, in this download's threads
        try:
            follow = super()._lead(path, lock, listed)
            # A description of our own on the temp file: its flock waits for the writer.
            watch = os.open(f"/proc/self/fd/{follow.fd}", os.O_RDONLY)
        except BaseException:
            self._claims.pop(path, None)
            claim.release()
            raise
        threading.Thread(target=self._share, args=(path, watch, claim), daemon=False,
                         name=f"share {path.rsplit('/', 1)[-1]}").start()
        return follow

    def _claim(self, path: str) -> BucketFile | Claim:
        """The file once another node has put it, else how this node gets it: under our lease,
        from the node that holds it (pypicache/peers.py), or alone once patience runs out."""
        deadline = time.monotonic() + self.patience
        backoff = wakeups.Backoff(0.05, 0.25)
        while (lease := self.bucket.lease(path)) is None:
            if isinstance(found := self.cached(path), BucketFile):
                return found
            if self.peers is not None and (address := self.bucket.holder(path)):
                return Claim(peer=address)
            if time.monotonic() > deadline:
                log.info("another node is still downloading %s: downloading here too", path)
                return Claim()
            backoff.wait()
        if isinstance(found := self.cached(path), BucketFile):  # put there as we asked
            lease.release()
            return found
        return Claim(lease)

    def _source(self, path: str, listed: Listed):
        claim = self._claims.get(path)
        if claim is None or claim.peer is None:
            return super()._source(path, listed)
        response = self.peers.open(claim.peer, path, 0, self.patience)
        if response is None:  # a node stopping gracefully refuses us, yet ends its download
            response = self._elsewhere(path, listed, claim, 0, time.monotonic() + self.patience)
        if response is not None:
            return response
        log.info("node %s did not give %s: downloading here too", claim.peer, path)
        claim.peer = None
        return super()._source(path, listed)

    def resume(self, path: str, listed: Listed, written: int):
        """The node we read from failed: the rest from the bucket once it is there, from the
        upstream once that node's lease expires, or from the node that took it over first."""
        claim = self._claims.get(path)
        if claim is None or claim.peer is None:
            return None  # we were reading the upstream: fail as on one node
        deadline = time.monotonic() + LEASE_SECONDS + CLOCK_STEP + self.patience
        return self._elsewhere(path, listed, claim, written, deadline)

    def _elsewhere(self, path: str, listed: Listed, claim: Claim, written: int,
                   deadline: float):
        """The bytes of `path` from `written` on, once the node we read from does not give
        them, from wherever they come first: the bucket (a node that stops gracefully refuses
        new connections but finishes its download and puts the file there), the upstream
        under our own lease once that node's lease is gone, or a third node that took the
        download over. None once `deadline` passes."""
        failed = claim.peer
        backoff = wakeups.Backoff(0.1, 1.0)
        while time.monotonic() < deadline:
            if (found := self._in_bucket(path, written)) is not None:
                return found
            if (lease := self.bucket.lease(path)) is not None:
                if (found := self._in_bucket(path, written)) is not None:  # put, then let go
                    lease.release()
                    return found
                claim.lease, claim.peer = lease, None
                log.info("took over the download of %s from node %s at byte %d", path, failed,
                         written)
                headers = {"Accept-Encoding": "identity"}
                if written:
                    headers["Range"] = f"bytes={written}-"
                return self.upstream.get(listed.url, headers=headers)
            address = self.bucket.holder(path)
            if address and address != failed:
                response = self.peers.open(address, path, written, self.patience)
                if response is not None:
                    claim.peer = address
                    return response
            backoff.wait()
        return None

    def _in_bucket(self, path: str, written: int) -> BucketSource | None:
        try:
            return BucketSource(self.bucket.get(path), written)
        except FileNotFoundError:
            return None

    def _share(self, path: str, watch: int, claim: Claim) -> None:
        """After the download: put the verified file into the bucket (unless another node,
        which we read it from, does), then let go of the lease."""
        try:
            fcntl.flock(watch, fcntl.LOCK_SH)  # the writer closes its temp file when done
            theirs = claim.peer is not None and claim.lease is None
            if not theirs and self.cachedir.published(path, watch):  # the same inode
                self.bucket.store(path, Path(f"/proc/self/fd/{watch}"))
        except Exception:
            log.exception("could not share %s", path)
        finally:
            os.close(watch)
            self._claims.pop(path, None)
            claim.release()


class BucketSource:
    """A file in the bucket from byte `start`, as the download copies an upstream's answer
    (status, headers, raw.read1, close): what another node put there while we read it."""

    def __init__(self, blob, start: int):
        self.status_code = 206 if start else 200
        self.headers = {"Content-Length": str(max(blob.size - start, 0))}
        if start:
            self.headers["Content-Range"] = f"bytes {start}-{blob.size - 1}/{blob.size}"
        self.raw = self
        self._chunks = blob.chunks(start)

    def read1(self, size: int, decode_content: bool = False) -> bytes:
        return next(self._chunks, b"")  # a bucket's chunk, whatever `size`: it is all there

    def close(self) -> None:
        self._chunks.close()


@dataclass
class Claim:
    """How this node gets a file no node has put yet: under `lease` (ours) from the upstream,
    from the node at `peer` as that node downloads it, or (neither) alone from the upstream."""

    lease: object = None  # S3Lease or NoLease
    peer: str | None = None

    def release(self) -> None:
        if self.lease is not None:
            self.lease.release()


def node_name(cachedir: CacheDir) -> str:
    """This node's name in the bucket: the host's, with a suffix kept in the cache directory
    (nodes on one host, or a pod that comes back with its volume, stay apart or the same)."""
    path = cachedir.root / "node"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    name = f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
    temp = cachedir.tmp / f"node.{name}"
    temp.write_text(name)
    try:
        os.link(temp, path)  # whole or not at all, and never over another worker's name
    except FileExistsError:
        name = path.read_text().strip()
    finally:
        temp.unlink()
    return name


class Cluster:
    """This node among the others: every SHARE_SECONDS one worker of the node puts the node's
    totals into the bucket, and every node's dashboard reads them all."""

    def __init__(self, bucket: S3Storage, cachedir: CacheDir, catalog: Catalog):
        self.bucket, self.cachedir, self.catalog = bucket, cachedir, catalog
        self._node: str | None = None
        self._bucket_state: tuple[float, dict] | None = None  # (when, what): bucket_state
        self.start = Once(self._start)  # the thread of this process: none survives a fork

    def bucket_state(self) -> dict:
        """Whether the bucket answers, for /healthz: asked at most every BUCKET_CHECK_SECONDS
        (a probe every second must not become a request to the store every second)."""
        now = time.monotonic()
        if self._bucket_state is None or now - self._bucket_state[0] >= BUCKET_CHECK_SECONDS:
            problem = self.bucket.ping()
            self._bucket_state = (now, {"reachable": problem is None, "error": problem})
        return self._bucket_state[1]

    @property
    def node(self) -> str:
        """This node's name, written into the cache the first time it is needed (a server's
        request or thread, never the building of the app)."""
        if self._node is None:
            self._node = node_name(self.cachedir)
        return self._node

    def _start(self) -> None:
        threading.Thread(target=self._run, name="share statistics", daemon=True).start()

    def _run(self) -> None:
        guard = None
        while True:
            guard = guard if guard is not None else self.cachedir.try_lock(STATS_LOCK)
            if guard is not None:  # kept for the worker's life: the kernel frees it on death
                try:
                    self.share()
                except Exception:
                    log.exception("could not share this node's statistics")
                finally:
                    self.catalog.release()
            time.sleep(SHARE_SECONDS)

    def share(self) -> None:
        self.bucket.put_node_stats(self.node, self._mine())

    def _mine(self) -> dict:
        usage = self.catalog.usage()
        return {"node": self.node, "at": time.time(), "files": usage.files, "bytes": usage.bytes,
                "totals": self.catalog.totals()}

    def nodes(self) -> list[dict]:
        """Every node's last shared statistics, by name; this node's fresh, and shared now."""
        mine = self._mine()
        self.bucket.put_node_stats(self.node, mine)
        nodes = self.bucket.node_stats() | {self.node: mine}
        return [nodes[name] for name in sorted(nodes)]
