"""Fixtures: the app and its test client (in-process), and real servers on 127.0.0.1."""
from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from pypicache import create_app

from .fixture_upstream import Upstream
from .installed import install_checkout
from .s3_server import MotoS3
from .servers import Proxy

# In-process tests mock the upstream with `responses`; these URLs are never really reached.
MIRROR = "http://127.0.0.1:9/simple"
FILES = "http://127.0.0.1:9/packages"


class BufferedClient(FlaskClient):
    """Reads every response whole and closes it (as a WSGI server does)."""

    def open(self, *args, **kwargs):
        kwargs.setdefault("buffered", True)
        return super().open(*args, **kwargs)


@pytest.fixture
def make_app(tmp_path):
    def make(**overrides):
        # Fetching ahead is off in process unless a test turns it on (tests/test_prefetch.py):
        # its threads would ask the upstream behind the test's back, and outlive its mocks.
        settings = {"cache_dir": tmp_path / "cache", "mirror_url": MIRROR, "files_url": FILES,
                    "prefetch": False}
        app = create_app(settings | overrides)
        app.config["TESTING"] = True
        app.test_client_class = BufferedClient
        return app

    return make


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def upstream(tmp_path):
    server = Upstream(tmp_path / "upstream").start()
    yield server
    server.stop()


@pytest.fixture
def proxy(tmp_path, upstream):
    server = Proxy(tmp_path / "cache", upstream.env()).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    """moto's S3 server on 127.0.0.1 with one bucket, for the tests of one module."""
    server = MotoS3(tmp_path_factory.mktemp("moto")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def installed(tmp_path_factory):
    """bin/ of a fresh venv with `pip install <checkout>` done (tests/installed.py): made once
    per test session, for the tests of the package and of the image's command."""
    return install_checkout(tmp_path_factory.mktemp("installed"))
