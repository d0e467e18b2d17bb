"""Several upstreams with real index servers and real clients: pypiserver as the private index,
Debian's nginx serving a static tree as an extra wheel index, the suite's fixture as the public
index. The public index carries the private project's name with a higher version."""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
import requests

from .fixture_upstream import Upstream
from .indexes import start_nginx, start_pypiserver
from .servers import Proxy, installed, pip_install, uv_install
from .test_clients_more import PROJECT, poetry_install
from .wheels import make_wheel

pytestmark = pytest.mark.e2e
PRIVATE = {"corp-app": "1.0", "corp-secret": "1.0", "extra-lib": "1.0", "pub-lib": "1.0"}


def _dists(directory: Path, *wheels: tuple) -> dict[str, bytes]:
    directory.mkdir(parents=True)
    made = dict(make_wheel(*wheel) for wheel in wheels)
    for filename, data in made.items():
        (directory / filename).write_bytes(data)
    return made


class Three:
    """The three upstreams, and what PYPI_INDEXES says of them."""

    def __init__(self, work: Path):
        self.work = work
        self.private_dists = work / "private"
        self.wheels = _dists(
            self.private_dists,
            ("corp-app", "1.0", ["corp-secret", "extra-lib", "pub-lib"]),
            ("corp-secret", "1.0"),
        )
        self.wheels |= _dists(work / "extra", ("extra-lib", "1.0"))
        self.extra = start_nginx(work / "nginx", work / "extra")
        self.public = Upstream(work / "public").start()
        self.attack = self.public.add_wheel("corp-secret", "99.0")  # dependency confusion
        self.public.add_wheel("extra-lib", "5.0")  # the extra index comes first all the same
        self.wheels[self.public.add_wheel("pub-lib", "1.0").filename] = None
        self.private = start_pypiserver(work, self.private_dists)

    def env(self, private=None, **more: str) -> dict[str, str]:
        private = private or self.private
        # Each as its users give it: nginx and pypiserver keep their files at /packages.
        indexes = (f"corp={private.simple} extra={self.extra.simple} "
                   f"pub={self.public.index_url},{self.public.files_url}")
        return {"PYPI_INDEXES": indexes} | more

    def stop(self) -> None:
        for server in (self.private, self.extra, self.public):
            server.stop()


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    upstreams = Three(tmp_path_factory.mktemp("indexes"))
    yield upstreams
    upstreams.stop()


@pytest.fixture(scope="module", params=["unpinned", "pinned"])
def proxy(request, three, tmp_path_factory):
    pinned = request.param == "pinned"
    pins = {"PYPI_INDEX_PINS": "corp-secret=corp corp-app=corp"} if pinned else {}
    server = Proxy(tmp_path_factory.mktemp("cache") / "cache", three.env(**pins), workers=2).start()
    yield server
    server.stop()


def test_pip_installs_a_mix_of_three_upstreams_hashes_checked(three, proxy, tmp_path):
    hashes = {}
    for filename in three.wheels:
        data = three.wheels[filename] or (three.public.root / "files" / filename).read_bytes()
        hashes[filename.split("-")[0].replace("_", "-")] = hashlib.sha256(data).hexdigest()
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("".join(
        f"{name}=={PRIVATE[name]} --hash=sha256:{digest}\n" for name, digest in hashes.items()))
    done = pip_install(f"{proxy.url}/simple", tmp_path / "t", "--require-hashes",
                       "-r", str(requirements))
    assert done.returncode == 0, done.stderr
    assert installed(tmp_path / "t") == {name.replace("-", "_"): v for name, v in PRIVATE.items()}
    page = requests.get(f"{proxy.url}/simple/extra-lib/", timeout=10).text
    assert "packages/extra/" in page and "5.0" not in page


def test_pip_installs_the_private_project_not_the_public_namesake(three, proxy, tmp_path):
    done = pip_install(f"{proxy.url}/simple", tmp_path / "t", "corp-secret")
    assert done.returncode == 0, done.stderr
    assert installed(tmp_path / "t") == {"corp_secret": "1.0"}
    assert three.public.downloads(three.attack.filename) == 0


def test_uv_installs_the_private_project_not_the_public_namesake(three, proxy, tmp_path):
    done = uv_install(f"{proxy.url}/simple", tmp_path / "t", tmp_path / "uv", "corp-app")
    assert done.returncode == 0, done.stderr
    assert installed(tmp_path / "t") == {name.replace("-", "_"): v for name, v in PRIVATE.items()}
    assert three.public.downloads(three.attack.filename) == 0


def test_poetry_installs_the_private_project_not_the_public_namesake(three, proxy, tmp_path):
    wants = PROJECT.replace('["alpha"]', '["corp-secret"]')
    project = poetry_install(tmp_path, f"{proxy.url}/simple/", wants)
    site = next((project / ".venv").glob("lib/python*/site-packages"))
    assert {p.name for p in site.glob("corp_secret-*.dist-info")} == {"corp_secret-1.0.dist-info"}
    lock = (project / "poetry.lock").read_text()
    assert 'version = "1.0"' in lock and "99.0" not in lock
    assert three.public.downloads(three.attack.filename) == 0


def test_an_outage_of_the_first_upstream_hands_nothing_to_the_next(three, tmp_path):
    private = start_pypiserver(tmp_path, three.private_dists)  # this test's own, to stop
    proxy = Proxy(tmp_path / "cache", three.env(private, PYPI_INDEX_TTL="1"), workers=2)
    try:
        proxy.start()
        warm = pip_install(f"{proxy.url}/simple", tmp_path / "t1", "corp-secret")
        assert warm.returncode == 0, warm.stderr
        private.stop()
        before = dict(three.public.requests)
        time.sleep(1.5)  # past the TTL: the next request asks the upstreams again
        page = requests.get(f"{proxy.url}/simple/corp-secret/", timeout=30)
        assert page.status_code == 200 and page.headers["X-Cache"] == "stale"
        assert "99.0" not in page.text
        again = pip_install(f"{proxy.url}/simple", tmp_path / "t2", "corp-secret")
        assert again.returncode == 0, again.stderr
        assert installed(tmp_path / "t2") == {"corp_secret": "1.0"}
        # A project the proxy has not seen: the private index might have it, so no answer.
        assert requests.get(f"{proxy.url}/simple/pub-lib/", timeout=30).status_code == 502
        assert dict(three.public.requests) == before  # the public index was not asked
        # Each worker adds what it saw to the shared state about once a second.
        deadline = time.monotonic() + 10
        while True:
            upstreams = requests.get(f"{proxy.url}/healthz", timeout=10).json()["upstreams"]
            health = {upstream["name"]: upstream["status"] for upstream in upstreams}
            if health["corp"] == "down" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert health["corp"] == "down" and "down" not in (health["extra"], health["pub"])
    finally:
        proxy.stop()
        private.stop()
