"""How pypicache/httpclient.py's connections to an upstream are opened: names resolved once per
process for a while rather than once per connection, and one SSL context per CA bundle.

Both are per-connection costs that urllib3 pays afresh, and a cold install pays them tens of
times at once: uv asks dozens of questions in parallel, each a new upstream connection in
some worker. Measured on the machine docs/REAL-INDEX.md describes: 48 lookups of the index's
name at once stalled 5 s (the resolver's retry after a dropped answer) or failed outright
("Temporary failure in name resolution"), where 24 took a millisecond; and loading a CA
bundle cost 70 ms of CPU per connection."""
from __future__ import annotations

import ipaddress
import os
import socket
import ssl
import threading
import time

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util import connection
from urllib3.util.ssl_ import create_urllib3_context

FRESH = 30.0  # seconds a name's addresses are used before it is looked up again
STALE = 600.0  # an older answer still used while a new lookup fails

_addresses: dict[tuple[str, int], tuple[float, list[str]]] = {}  # (name, port) -> (when, IPs)
_lookups: dict[tuple[str, int], threading.Lock] = {}  # one lookup of a name at a time
_lock = threading.Lock()


def addresses(host: str, port: int) -> list[str]:
    """The IP addresses of `host`, in the resolver's order. One thread looks a name up while
    the others wait for its answer (so a burst of new connections makes one query, not one
    each); the answer is kept FRESH seconds, and up to STALE seconds while the resolver
    fails. An IP address is its own answer."""
    try:
        ipaddress.ip_address(host.strip("[]"))
        return [host.strip("[]")]
    except ValueError:
        pass
    key = (host, port)
    found = _addresses.get(key)
    if found is not None and time.monotonic() - found[0] < FRESH:
        return found[1]
    with _lock:
        lookup = _lookups.setdefault(key, threading.Lock())
    with lookup:
        found = _addresses.get(key)
        if found is not None and time.monotonic() - found[0] < FRESH:
            return found[1]  # looked up while this thread waited
        try:
            infos = socket.getaddrinfo(host, port, connection.allowed_gai_family(), socket.SOCK_STREAM)
        except socket.gaierror:
            if found is not None and time.monotonic() - found[0] < STALE:
                return found[1]
            raise
        ips = list(dict.fromkeys(info[4][0] for info in infos))
        if len(_addresses) >= 256:  # upstreams, peers and sources are few: bounded anyway
            _addresses.clear()
        _addresses[key] = (time.monotonic(), ips)
        return ips


class _Resolved:
    """A urllib3 connection whose socket goes to the addresses above, each in turn, with
    urllib3's own errors (the TLS layer and its server name are urllib3's, unchanged)."""

    def _new_conn(self) -> socket.socket:
        try:
            ips = addresses(self._dns_host, self.port)
        except socket.gaierror as error:
            raise NameResolutionError(self.host, self, error) from error
        failure: OSError = OSError(f"no address for {self.host}")
        for ip in ips:
            try:
                return connection.create_connection(
                    (ip, self.port), self.timeout, source_address=self.source_address,
                    socket_options=self.socket_options)
            except OSError as error:  # socket.timeout too: the next address, as urllib3 does
                failure = error
        if isinstance(failure, TimeoutError):
            raise ConnectTimeoutError(
                self, f"Connection to {self.host} timed out. (connect timeout={self.timeout})"
            ) from failure
        raise NewConnectionError(self, f"Failed to establish a new connection: {failure}") from failure


class _HTTPConnection(_Resolved, HTTPConnection):
    pass


class _HTTPSConnection(_Resolved, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


POOLS = {"http": _HTTPPool, "https": _HTTPSPool}  # a PoolManager's pool_classes_by_scheme

_contexts: dict[str, ssl.SSLContext] = {}  # CA bundle -> its context, for the process's life
_contexts_lock = threading.Lock()


def verifying_context(bundle: str) -> ssl.SSLContext:
    """One context per CA bundle for the process's life (a bundle replaced on disk is read at
    the next restart, as nginx reads its own). Loading a bundle of ~150 certificates costs
    ~70 ms of CPU; urllib3, given a path, loads it into a new context for every new
    connection. Made under a lock: threads opening their first connections at once load it
    once. Hostname and chain checks are urllib3's as before: only the loading is shared."""
    context = _contexts.get(bundle)
    if context is not None:
        return context
    with _contexts_lock:
        context = _contexts.get(bundle)
        if context is None:
            context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
            if os.path.isdir(bundle):
                context.load_verify_locations(capath=bundle)
            else:
                context.load_verify_locations(cafile=bundle)
            _contexts[bundle] = context
        return context
