"""pypicache/connections.py: a burst of new upstream connections makes one name lookup (the
resolver of docs/REAL-INDEX.md's machine stalled 5 s or failed under 48 at once), kept a
while and used past its time while the resolver fails; the connections it opens still carry
the name (Host, TLS server name and certificate check)."""
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pypicache import config, connections
from pypicache.errors import UpstreamError
from pypicache.httpclient import Upstream

NAME = "upstream.test"  # never in DNS: only the fake resolver below knows it


class _Resolver:
    """socket.getaddrinfo for NAME (127.0.0.1, slowly, as a far resolver answers), counted;
    `failing` makes it fail as a resolver that dropped the query does."""

    def __init__(self):
        self.asked, self.failing = 0, False
        self.real = socket.getaddrinfo

    def __call__(self, host, port, *args, **kwargs):
        if host != NAME:
            return self.real(host, port, *args, **kwargs)
        self.asked += 1
        time.sleep(0.05)
        if self.failing:
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return self.real("127.0.0.1", port, *args, **kwargs)


@pytest.fixture
def resolver(monkeypatch):
    fake = _Resolver()
    monkeypatch.setattr(connections.socket, "getaddrinfo", fake)
    monkeypatch.setattr(connections, "_addresses", {})
    monkeypatch.setattr(connections, "_lookups", {})
    return fake


class _Host(BaseHTTPRequestHandler):
    """Answers each GET with the Host header it was sent; HTTP/1.0: a new connection each."""

    def do_GET(self):
        body = self.headers.get("Host", "").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _serve(tls: ssl.SSLContext | None = None):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Host)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _client(tmp_path, url):
    return Upstream(config.load({"PYPI_MIRROR_URL": url, "PYPI_CACHE_DIR": str(tmp_path)}))


def _body(client, url):
    return b"".join(Upstream.iter_body(client.get(url))).decode()


def test_a_burst_of_new_connections_makes_one_lookup(tmp_path, resolver):
    server = _serve()
    url = f"http://{NAME}:{server.server_address[1]}/simple"
    client, hosts = _client(tmp_path, url), []
    threads = [threading.Thread(target=lambda: hosts.append(_body(client, url + "/a/")))
               for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    server.shutdown()
    server.server_close()
    assert hosts == [f"{NAME}:{server.server_address[1]}"] * 12  # the name, not the address
    assert resolver.asked == 1


def test_an_answer_is_asked_again_after_its_time_and_kept_while_the_resolver_fails(resolver, monkeypatch):
    assert connections.addresses(NAME, 80) == ["127.0.0.1"]
    assert connections.addresses(NAME, 80) == ["127.0.0.1"] and resolver.asked == 1
    clock = [time.monotonic()]
    monkeypatch.setattr(connections.time, "monotonic", lambda: clock[0])
    clock[0] += connections.FRESH + 1
    resolver.failing = True
    assert connections.addresses(NAME, 80) == ["127.0.0.1"]  # stale, while it fails
    assert resolver.asked == 2
    clock[0] += connections.STALE
    with pytest.raises(socket.gaierror):
        connections.addresses(NAME, 80)
    assert connections.addresses("127.0.0.1", 80) == ["127.0.0.1"]  # no lookup of an address
    assert resolver.asked == 3


def test_a_name_that_does_not_resolve_is_an_upstream_error(tmp_path, resolver):
    resolver.failing = True
    url = f"http://{NAME}:9/simple"
    with pytest.raises(UpstreamError, match="unreachable"):
        _client(tmp_path, url).get(url + "/a/")


def test_https_to_a_resolved_name_checks_the_certificate_for_that_name(tmp_path, monkeypatch, resolver):
    trustme = pytest.importorskip("trustme")  # requirements-dev.txt pins it
    ca = trustme.CA()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(NAME).configure_cert(tls)
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    monkeypatch.setattr(connections, "_contexts", {})
    server = _serve(tls)
    port = server.server_address[1]
    try:
        url = f"https://{NAME}:{port}/simple"
        assert _body(_client(tmp_path, url), url + "/a/") == f"{NAME}:{port}"
        by_address = f"https://127.0.0.1:{port}/simple"  # the certificate names NAME only
        with pytest.raises(UpstreamError, match="SSLError"):
            _client(tmp_path, by_address).get(by_address + "/a/")
    finally:
        server.shutdown()
        server.server_close()
