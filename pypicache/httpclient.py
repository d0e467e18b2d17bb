"""The one user of requests: one session per process, bounded timeouts, no redirect off the allowed origins."""
from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Iterator
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter

from . import connections, encoding
from .config import Settings, redact
from .errors import NotFound, UpstreamError, UpstreamTimeout
from .perprocess import Once
from .stats.signals import upstream_answered

log = logging.getLogger(__name__)
CHUNK = 256 * 1024
_MAX_REDIRECTS = 5


class RedirectedAway(UpstreamError):
    """The upstream redirected outside the configured origins: refused (no SSRF), a 502 for a
    file; for a project page the caller may take it as "not here" (pypicache/refresh.py)."""


class _Adapter(HTTPAdapter):
    """requests' adapter, opening connections the way pypicache/connections.py says: names
    resolved once per process for a while, HTTPS verified with the process's context for the
    bundle that requests would use (`verify`: a path from the environment, else its default)."""

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = connections.POOLS

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS connections are urllib3's own
            manager.pool_classes_by_scheme = connections.POOLS
        return manager

    def build_connection_pool_key_attributes(self, request, verify, cert=None):
        host, pool = super().build_connection_pool_key_attributes(request, verify, cert)
        if host["scheme"] == "https" and verify is not False:
            bundle = verify if isinstance(verify, str) else requests.utils.DEFAULT_CA_BUNDLE_PATH
            pool.pop("ca_certs", None)
            pool.pop("ca_cert_dir", None)
            pool["ssl_context"] = connections.verifying_context(bundle)
        return host, pool

    def cert_verify(self, conn, url, verify, cert):
        super().cert_verify(conn, url, verify, cert)  # checks the bundle exists, as before
        if getattr(conn, "conn_kw", {}).get("ssl_context") is not None:
            conn.ca_certs = conn.ca_cert_dir = None  # in the context: not loaded again


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


class Upstream:
    """Fetches from the configured upstream origins only (no SSRF through redirects)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.allowed = {origin(url) for up in settings.indexes for url in (up.url, up.files_url)}
        self.timeout = (settings.connect_timeout, settings.read_timeout)
        # One session per process, made on first use (so never before a fork), shared by its
        # threads (below).
        self._made = Once(self._make_session)
        self._shared: requests.Session | None = None
        # Connections kept per upstream host: as many as the worker's threads may use at once
        # (clients' requests, downloads' copies, fetching ahead), so none is dropped after use.
        self._pool = settings.threads + settings.max_downloads + settings.prefetch_concurrency
        self._environments: dict[str, dict] = {}  # origin -> its settings from the environment

    def _session(self) -> requests.Session:
        """The process's session. One per thread made every thread's first request (on a
        fresh worker, most of a cold install's) build a session and open a connection of its
        own, a TCP and TLS handshake with a far upstream each; shared, a connection one thread
        let go serves the next (urllib3's pool is thread-safe, and requests' cookie jar locks)."""
        self._made()
        return self._shared

    def _make_session(self) -> None:
        session = requests.Session()
        session.headers["User-Agent"] = "pypicache"
        # The environment is read once per origin (_environment), not by requests on
        # every call: that scan of os.environ (and of ~/.netrc) was a fifth of a miss.
        session.trust_env = False
        adapter = _Adapter(pool_connections=8, pool_maxsize=self._pool)
        for scheme in ("http://", "https://"):
            session.mount(scheme, adapter)
        self._shared = session

    def _environment(self, url: str) -> dict:
        """What requests would take from the environment for `url` with trust_env on:
        HTTPS_PROXY and NO_PROXY, REQUESTS_CA_BUNDLE (or CURL_CA_BUNDLE), a ~/.netrc login.
        They are how a server behind a corporate proxy reaches its upstream at all. A
        process's environment does not change, so each origin's is read once."""
        key = origin(url)
        found = self._environments.get(key)
        if found is None:
            if len(self._environments) >= 64:  # peers and sources come and go: bounded
                self._environments.clear()
            verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            found = self._environments[key] = {
                "proxies": requests.utils.get_environ_proxies(url),
                "verify": verify or True,
                "auth": requests.utils.get_netrc_auth(url),
            }
        return found

    def get(self, url: str, headers: dict[str, str] | None = None, method: str = "GET") -> requests.Response:
        """GET (or HEAD) `url` as a stream; redirects are followed only within the allowed
        origins. Each call is timed and its outcome sent as a signal (pypicache/stats listens)."""
        start = time.perf_counter()
        outcome, message = "ok", None
        try:
            return self._get(url, headers, method)
        except NotFound:  # the upstream answered: it is up
            outcome = "not_found"
            raise
        except UpstreamError as error:
            outcome, message = "error", error.message
            raise
        finally:
            upstream_answered.send(self, outcome=outcome, seconds=time.perf_counter() - start,
                                   message=message, url=url)

    def peer(self, url: str, headers: dict[str, str]) -> requests.Response:
        """GET `url` of another node of the cluster (pypicache/peers.py): its address comes from its
        lease, not from the upstreams' origins, so only that origin is allowed and no
        redirect is followed; not counted as the upstream's health."""
        return self._get(url, headers, "GET", allowed={origin(url)}, redirects=0)

    def source(self, url: str, headers: dict[str, str], timeout: float) -> requests.Response:
        """GET `url` of the upload time source (PYPI_UPLOAD_TIME_SOURCE, pypicache/uploadtimes.py):
        its origin only, each wait at most `timeout`; not counted as the upstream's health."""
        return self._get(url, headers, "GET", allowed={origin(url)},
                         timeout=(min(timeout, self.timeout[0]), min(timeout, self.timeout[1])))

    def _get(self, url: str, headers: dict[str, str] | None, method: str,
             allowed: set[str] | None = None, redirects: int = _MAX_REDIRECTS,
             timeout: tuple[float, float] | None = None) -> requests.Response:
        allowed = self.allowed if allowed is None else allowed
        for hop in range(redirects + 1):
            if origin(url) not in allowed:
                if hop:
                    raise RedirectedAway("refused to follow a redirect outside the configured "
                                         f"upstream: {redact(url)}")
                raise UpstreamError(f"refused to fetch outside the configured upstream: {redact(url)}")
            try:
                response = self._session().request(
                    method, url, headers=headers, stream=True, timeout=timeout or self.timeout,
                    allow_redirects=False, **self._environment(url)
                )
            except requests.Timeout as error:
                raise UpstreamTimeout(f"upstream timed out: {redact(url)}") from error
            except requests.RequestException as error:
                raise UpstreamError(f"upstream unreachable: {redact(url)}: {type(error).__name__}") from error
            # What the upstream really sent, for scripts/real-index and for debugging a mirror.
            log.debug("upstream %s %s: %s, Content-Encoding %s, Content-Length %s, %.0f ms",
                      response.request.method, redact(url), response.status_code,
                      response.headers.get("Content-Encoding", "-"),
                      response.headers.get("Content-Length", "-"),
                      response.elapsed.total_seconds() * 1000)
            if response.status_code in (301, 302, 303, 307, 308) and "Location" in response.headers:
                response.close()
                url = urljoin(url, response.headers["Location"])
                continue
            if response.status_code == 404:
                response.close()
                raise NotFound(f"not found upstream: {redact(url)}")
            if response.status_code in (200, 304) or (
                response.status_code in (206, 416) and "Range" in (headers or {})
            ):
                return response
            response.close()
            raise UpstreamError(f"upstream answered {response.status_code} for {redact(url)}")
        raise UpstreamError(f"too many redirects from {redact(url)}")

    def head(self, url: str) -> int | None:
        """The length the upstream gives for `url` from a HEAD (None if it gives none)."""
        response = self.get(url, headers={"Accept-Encoding": "identity"}, method="HEAD")
        response.close()
        length = response.headers.get("Content-Length", "")
        return int(length) if length.isdigit() else None

    @staticmethod
    def iter_body(response: requests.Response, chunk_size: int = CHUNK) -> Iterator[bytes]:
        """The raw body bytes (identity: no decoding, so sizes and hashes match the index)."""
        try:
            while True:
                # read1: whatever has arrived, up to chunk_size. read() would block until a
                # whole chunk_size is in, so a slow upstream (20 KB/s) kept followers without
                # a byte for 13 s, past their stall limit and pip's 15 s.
                chunk = response.raw.read1(chunk_size, decode_content=False)
                if not chunk:
                    break
                yield chunk
        except (urllib3.exceptions.ReadTimeoutError, TimeoutError) as error:
            raise UpstreamTimeout("upstream stopped sending") from error
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as error:
            # urllib3 enforces Content-Length: a short body raises here, never ends quietly.
            raise UpstreamError(f"upstream transfer failed: {type(error).__name__}") from error
        finally:
            response.close()

    @staticmethod
    def iter_decoded(response: requests.Response, limit: int) -> Iterator[bytes]:
        """An index page's body with its Content-Encoding undone, at most `limit` bytes of it
        (files are never decoded: their bytes on the wire are what the hashes cover)."""
        coding = response.headers.get("Content-Encoding")
        with contextlib.closing(Upstream.iter_body(response)) as raw:
            yield from encoding.decode(raw, coding, limit, CHUNK)
