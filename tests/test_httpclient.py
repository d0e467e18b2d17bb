"""pypicache/httpclient.py against the fixture upstream on 127.0.0.1: what it takes from the
environment (read once per origin, as requests' trust_env would read it on every request)."""
from __future__ import annotations

import threading

import pytest

from pypicache import config
from pypicache.errors import UpstreamError
from pypicache.httpclient import Upstream

MIRROR = "http://mirror.invalid/simple"  # reachable only through the proxy below


def client(tmp_path) -> Upstream:
    return Upstream(config.load({}, cache_dir=tmp_path, mirror_url=MIRROR,
                                files_url="http://mirror.invalid/packages"))


def test_the_environment_s_proxy_carries_the_requests(tmp_path, upstream, monkeypatch):
    upstream.add_wheel("alpha", "1.0")
    # The fixture answers an absolute-form request as a proxy would hand it on.
    monkeypatch.setenv("HTTP_PROXY", upstream.index_url.rsplit("/simple", 1)[0])
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    up = client(tmp_path)
    for _ in range(2):  # the second from what was read the first time
        response = up.get(MIRROR + "/alpha/")
        assert response.status_code == 200 and b"alpha-1.0" in response.content
    assert upstream.stats()["requests"].get("GET http://mirror.invalid/simple/alpha/") == 2


def test_no_proxy_is_honoured(tmp_path, upstream, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", upstream.index_url.rsplit("/simple", 1)[0])
    monkeypatch.setenv("NO_PROXY", "mirror.invalid")
    with pytest.raises(UpstreamError):  # asked directly: the name does not resolve
        client(tmp_path).get(MIRROR + "/alpha/")
    assert upstream.stats()["requests"] == {}


def test_threads_share_the_process_s_connections(tmp_path, upstream):
    """One session per process: a connection a thread let go serves another thread's request
    (each thread's own opened one per thread, a handshake with a far upstream each)."""
    upstream.add_wheel("alpha", "1.0")
    up = Upstream(config.load({}, cache_dir=tmp_path, mirror_url=upstream.index_url,
                              files_url=upstream.files_url))
    sessions = []

    def ask():
        sessions.append(up._session())
        body = b"".join(Upstream.iter_body(up.get(upstream.index_url + "/alpha/")))
        assert b"alpha-1.0" in body  # read to its end: the connection goes back to the pool

    for _ in range(3):
        thread = threading.Thread(target=ask)
        thread.start()
        thread.join()
    assert len({id(session) for session in sessions}) == 1
    # One connection open at the upstream, kept alive for the next (each thread's session
    # kept one of its own).
    assert sum(len(server.conns) for server in upstream._servers) == 1
