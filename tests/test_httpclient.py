"""pypicache/httpclient.py takes from the environment what requests' trust_env took (a proxy,
NO_PROXY, a CA bundle, a ~/.netrc login), read once per origin rather than on every call; and
its threads share one session, so a connection one let go serves the next."""
import base64
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pypicache import config, connections
from pypicache.errors import UpstreamError
from pypicache.httpclient import Upstream

UPSTREAM = "http://upstream.test/simple"  # never resolved: only a proxy reaches it


SEEN: list[tuple[str, str | None]] = []  # (path, Authorization) of each GET _Recorder answered


class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        SEEN.append((self.path, self.headers.get("Authorization")))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture
def recorder():
    """A server on 127.0.0.1 that answers every GET 200 and remembers its path and login."""
    SEEN.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _client(tmp_path, url: str = UPSTREAM) -> Upstream:
    return Upstream(config.load({"PYPI_MIRROR_URL": url, "PYPI_CACHE_DIR": str(tmp_path)}))


def test_a_proxy_from_the_environment_carries_every_request(tmp_path, monkeypatch, recorder):
    monkeypatch.setenv("HTTP_PROXY", recorder)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = _client(tmp_path)
    for _ in range(2):  # the second from what the first read of the environment found
        client.get(UPSTREAM + "/alpha/").close()
    assert [path for path, _ in SEEN] == [UPSTREAM + "/alpha/"] * 2


def test_no_proxy_sends_the_origin_past_the_proxy(tmp_path, monkeypatch, recorder):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    response = _client(tmp_path, recorder + "/simple").get(recorder + "/simple/alpha/")
    response.close()
    assert response.status_code == 200 and SEEN == [("/simple/alpha/", None)]


def test_without_no_proxy_that_dead_proxy_fails_the_request(tmp_path, monkeypatch, recorder):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with pytest.raises(UpstreamError):
        _client(tmp_path, recorder + "/simple").get(recorder + "/simple/alpha/")
    assert SEEN == []


def test_a_netrc_login_is_sent_to_its_host(tmp_path, monkeypatch, recorder):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login reader password s3cret-netrc\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    _client(tmp_path, recorder + "/simple").get(recorder + "/simple/alpha/").close()
    expected = "Basic " + base64.b64encode(b"reader:s3cret-netrc").decode()
    assert SEEN == [("/simple/alpha/", expected)]


def test_a_ca_bundle_from_the_environment_is_what_requests_verify_with(tmp_path, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "bundle.pem"))
    found = _client(tmp_path)._environment(UPSTREAM + "/alpha/")
    assert found["verify"] == str(tmp_path / "bundle.pem")
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    assert _client(tmp_path)._environment(UPSTREAM + "/alpha/")["verify"] is True


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


class _Closing(BaseHTTPRequestHandler):
    """HTTP/1.0: every answer closes its connection, so every request is a new handshake."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture
def tls_upstream(tmp_path):
    """An HTTPS server on 127.0.0.1 whose certificate a CA of its own signed (trustme), and
    that CA's bundle; `other` is a bundle of a CA that signed nothing here."""
    trustme = pytest.importorskip("trustme")  # requirements-dev.txt pins it
    ca = trustme.CA()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Closing)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    bundle, other = tmp_path / "ca.pem", tmp_path / "other.pem"
    ca.cert_pem.write_to_path(str(bundle))
    trustme.CA().cert_pem.write_to_path(str(other))
    yield f"https://127.0.0.1:{server.server_address[1]}", bundle, other
    server.shutdown()
    server.server_close()


def test_a_ca_bundle_is_loaded_once_per_process_not_per_connection(tmp_path, monkeypatch, tls_upstream):
    """Loading a bundle costs ~70 ms of CPU; urllib3 given the path loaded it for every new
    connection, seconds of a worker's CPU when a cold install opened tens at once."""
    url, bundle, _ = tls_upstream
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    loads = []
    real = ssl.SSLContext.load_verify_locations

    def counted(context, *args, **kwargs):
        loads.append(args or kwargs)
        return real(context, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counted)
    monkeypatch.setattr(connections, "_contexts", {})
    client = _client(tmp_path, url + "/simple")

    def ask():
        assert b"".join(Upstream.iter_body(client.get(url + "/simple/alpha/"))) == b"{}"

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ask()
    assert len(loads) == 1


def test_https_is_still_verified_against_the_bundle_and_the_host_name(tmp_path, monkeypatch, tls_upstream):
    url, bundle, other = tls_upstream
    monkeypatch.setattr(connections, "_contexts", {})
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(other))
    with pytest.raises(UpstreamError, match="SSLError"):
        _client(tmp_path, url + "/simple").get(url + "/simple/alpha/")
    # The right CA, but a name the certificate does not carry.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    renamed = url.replace("127.0.0.1", "localhost")
    with pytest.raises(UpstreamError, match="SSLError"):
        _client(tmp_path, renamed + "/simple").get(renamed + "/simple/alpha/")
    assert _client(tmp_path, url + "/simple").get(url + "/simple/alpha/").status_code == 200
