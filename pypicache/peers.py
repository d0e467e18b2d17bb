"""Nodes of a cluster reading a download in progress from the node that makes it.

With PYPI_NODE_URL, the lease a node takes on a download (pypicache/s3.py) names the node's address.
A node whose clients ask for a file another node is downloading does not wait for the bucket:
it makes its own download of the file (its flock, temp file, local followers, sha256 check,
publish: pypicache/fetch.py, pypicache/download.py) whose source is the leading node's
`/-/node/files/<path>` (pypicache/views/peers.py), which streams that node's own download as it
lands, the last bytes only once it has checked them. One upstream download cluster-wide,
whatever the file's size and speed.

Each request carries a token: an HMAC of the path with PYPI_CLUSTER_SECRET, so the route is
no way around the login the packages route asks for. If the leading node dies, the reading
node takes its lease over once it expires and asks the upstream for the rest only (a Range
from where its bytes stop); the sha256 over all of them is checked at the end as always.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import time
from urllib.parse import quote

import requests

from . import wakeups
from .errors import NotFound, UpstreamError

log = logging.getLogger(__name__)
ROUTE = "/-/node/files/"
HEADER = "X-Pypicache-Node"


def token(secret: str, path: str) -> str:
    return hmac.new(secret.encode(), path.encode(), hashlib.sha256).hexdigest()


def valid(secret: str | None, path: str, given: str | None) -> bool:
    return bool(secret and given) and hmac.compare_digest(token(secret, path), given)


class Peers:
    """How this node reads a download from another one."""

    def __init__(self, upstream, secret: str, own_address: str | None):
        self.upstream, self.secret, self.own_address = upstream, secret, own_address

    def open(self, address: str, path: str, start: int, wait: float) -> requests.Response | None:
        """The node at `address`'s bytes of `path` from `start` (a 200 from 0, else a 206), or
        None if it has none within `wait` seconds (its download may not have begun: the
        lease is taken before the upstream is asked) or cannot be reached."""
        if address == self.own_address:
            return None
        headers = {HEADER: token(self.secret, path), "Accept-Encoding": "identity"}
        if start:
            headers["Range"] = f"bytes={start}-"
        url = address.rstrip("/") + ROUTE + quote(path)
        deadline = time.monotonic() + wait
        backoff = wakeups.Backoff(0.02, 0.5)
        while True:
            try:
                response = self.upstream.peer(url, headers)
            except NotFound:
                response = None  # not begun there yet, or already gone from its disk
            except UpstreamError as error:
                log.info("node %s did not give %s: %s", address, path, error.message)
                return None
            if response is not None:
                if response.status_code == (206 if start else 200):
                    return response
                response.close()
                return None
            if time.monotonic() > deadline:
                return None
            backoff.wait()
