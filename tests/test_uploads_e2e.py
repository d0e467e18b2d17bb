"""Uploads end to end: real twine and `uv publish` upload into the proxy under gunicorn, real
pip and uv install through it (with public dependencies from the fixture upstream), the
upstream's higher version of the same name ignored, yanks from the command line, and a
second node of a cluster serving an upload at once."""
from __future__ import annotations

import base64
import hashlib
import io
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from werkzeug.datastructures import FileStorage, MultiDict
from werkzeug.test import encode_multipart

from .servers import ROOT, Front, Proxy, clean_environ, installed, pip_install, uv_install
from .test_auth import _htpasswd
from .test_clients_more import isolated, poetry_install, run
from .test_s3_nodes import cluster
from .wheels import make_sdist, make_wheel

BIN = Path(sys.executable).parent
PASSWORD = "a long upload password"
JSON = "application/vnd.pypi.simple.v1+json"
pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def users(tmp_path):
    return _htpasswd(tmp_path / "htpasswd", alice=PASSWORD, bob="not an uploader")


def upload_env(users: Path) -> dict[str, str]:
    # Logins for uploads only: pip and uv install without credentials.
    return {"PYPI_UPLOADS": "1", "PYPI_AUTH_FILE": str(users), "PYPI_AUTH_SCOPE": "dashboard",
            "PYPI_UPLOADERS": "alice"}


def dist(tmp_path: Path, *made: tuple[str, bytes]) -> list[Path]:
    folder = tmp_path / "dist"
    folder.mkdir(exist_ok=True)
    paths = []
    for filename, data in made:
        (folder / filename).write_bytes(data)
        paths.append(folder / filename)
    return paths


def twine(url: str, files: list[Path], user: str = "alice", password: str = PASSWORD):
    # No ~/.pypirc, no keyring: only what is given here.
    env = clean_environ() | {"TWINE_NON_INTERACTIVE": "1", "PYTHON_KEYRING_BACKEND":
                             "keyring.backends.null.Keyring"}
    return subprocess.run(
        [str(BIN / "twine"), "upload", "--non-interactive", "--disable-progress-bar",
         "--config-file", str(files[0].parent / "no-pypirc"), "--repository-url", f"{url}/legacy/",
         "-u", user, "-p", password, *map(str, files)],
        env=env, capture_output=True, text=True, timeout=120)


def uv_publish(url: str, files: list[Path], cache: Path):
    return subprocess.run(
        [str(BIN / "uv"), "publish", "--no-config", "--cache-dir", str(cache),
         "--publish-url", f"{url}/legacy/", "--username", "alice", "--password", PASSWORD,
         "--keyring-provider", "disabled", *map(str, files)],
        env=clean_environ(), capture_output=True, text=True, timeout=120)


def cli(proxy: Proxy, *args: str):
    return subprocess.run([sys.executable, "-m", "flask", "--app", "pypicache:create_app",
                           "pypicache", "uploads", *args], cwd=ROOT, env=proxy.env,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def confusing(upstream):
    """The upstream: a public dependency, and the team's project name with a higher version."""
    upstream.add_wheel("public-dep", "1.0")
    upstream.add_wheel("team-pkg", "99.0")
    return upstream


def test_twine_and_uv_publish_then_pip_and_uv_install_the_uploads(tmp_path, confusing, users):
    proxy = Proxy(tmp_path / "cache", confusing.env(), workers=2, **upload_env(users)).start()
    try:
        # The upstream's page is cached first: the uploads must still win at once.
        assert pip_install(f"{proxy.url}/simple", tmp_path / "before", "team-pkg").returncode == 0
        assert installed(tmp_path / "before")["team_pkg"] == "99.0"

        old = dist(tmp_path, make_wheel("team-pkg", "1.0", requires=["public-dep"]),
                   make_sdist("team-pkg", "1.0", requires=["public-dep"]))
        done = twine(proxy.url, old)
        assert done.returncode == 0, done.stdout + done.stderr
        new = [p for p in dist(tmp_path, make_wheel("team-pkg", "1.1", requires=["public-dep"]),
                               make_sdist("team-pkg", "1.1", requires=["public-dep"]))]
        done = uv_publish(proxy.url, new, tmp_path / "uv-publish")
        assert done.returncode == 0, done.stdout + done.stderr

        url = f"{proxy.url}/simple"
        assert pip_install(url, tmp_path / "pip", "team-pkg").returncode == 0
        assert installed(tmp_path / "pip") == {"team_pkg": "1.1", "public_dep": "1.0"}
        done = uv_install(url, tmp_path / "uv", tmp_path / "uv-cache", "team-pkg")
        assert done.returncode == 0, done.stderr
        assert installed(tmp_path / "uv") == {"team_pkg": "1.1", "public_dep": "1.0"}

        # Hashes checked: pip with --require-hashes, against the bytes that were uploaded.
        dep = confusing.add_wheel("public-dep", "1.0")
        requirements = tmp_path / "requirements.txt"
        requirements.write_text(
            f"team-pkg==1.0 --hash=sha256:{hashlib.sha256(old[0].read_bytes()).hexdigest()}\n"
            f"public-dep==1.0 --hash=sha256:{dep.sha256}\n")
        done = pip_install(url, tmp_path / "hashed", "--require-hashes", "--only-binary", ":all:",
                           "-r", str(requirements))
        assert done.returncode == 0, done.stderr
        # The sdist builds (its in-tree backend) and installs too.
        done = pip_install(url, tmp_path / "sdist", "--no-binary", "team-pkg", "team-pkg==1.0")
        assert done.returncode == 0, done.stderr
        assert installed(tmp_path / "sdist")["team_pkg"] == "1.0"

        # The same file again: 409, and twine says why.
        again = twine(proxy.url, old[:1])
        assert again.returncode != 0 and "409" in again.stdout + again.stderr

        # Yanked from the command line: skipped unless pinned.
        done = cli(proxy, "yank", "team-pkg", "1.1", "--reason", "broken build")
        assert done.returncode == 0, done.stderr
        assert pip_install(url, tmp_path / "yanked", "team-pkg").returncode == 0
        assert installed(tmp_path / "yanked")["team_pkg"] == "1.0"
        done = uv_install(url, tmp_path / "uv-yanked", tmp_path / "uv-cache2", "team-pkg")
        assert done.returncode == 0 and installed(tmp_path / "uv-yanked")["team_pkg"] == "1.0"
        assert pip_install(url, tmp_path / "pinned", "team-pkg==1.1").returncode == 0
        assert installed(tmp_path / "pinned")["team_pkg"] == "1.1"
        assert confusing.downloads("team_pkg-99.0-py3-none-any.whl") == 1  # the one before
    finally:
        proxy.stop()


def test_refusals_reach_twine_with_their_reason(tmp_path, upstream, users):
    proxy = Proxy(tmp_path / "cache", upstream.env(), workers=1, **upload_env(users)).start()
    try:
        files = dist(tmp_path, make_wheel("team-pkg", "1.0"))
        done = twine(proxy.url, files, user="bob", password="not an uploader")
        assert done.returncode != 0 and "bob may not upload here" in done.stdout + done.stderr
        done = twine(proxy.url, files, password="wrong")
        assert done.returncode != 0 and "401" in done.stdout + done.stderr
        assert not (tmp_path / "cache" / "uploads").exists()
    finally:
        proxy.stop()


def test_a_second_node_serves_an_upload_at_once(tmp_path, moto, confusing, users):
    with cluster(tmp_path, moto, confusing, 2, **upload_env(users)) as nodes:
        first, second = nodes
        url = f"{second.url}/simple"
        # The second node has the upstream's page of the name cached before the upload.
        assert pip_install(url, tmp_path / "before", "team-pkg").returncode == 0
        files = dist(tmp_path, make_wheel("team-pkg", "1.0", requires=["public-dep"]))
        done = twine(first.url, files)
        assert done.returncode == 0, done.stdout + done.stderr
        assert moto.keys(f"{tmp_path.name}/uploads/") == [
            f"{tmp_path.name}/uploads/team-pkg/{files[0].name}",
            f"{tmp_path.name}/uploads/team-pkg/{files[0].name}.metadata"]
        assert moto.keys(f"{tmp_path.name}/upload-lists/") == [
            f"{tmp_path.name}/upload-lists/team-pkg.json"]
        assert not (first.cache_dir / "uploads").exists()  # in the bucket only
        done = pip_install(url, tmp_path / "second", "team-pkg")
        assert done.returncode == 0, done.stderr
        assert installed(tmp_path / "second") == {"team_pkg": "1.0", "public_dep": "1.0"}
        done = uv_install(url, tmp_path / "uv", tmp_path / "uv-cache", "team-pkg")
        assert done.returncode == 0 and installed(tmp_path / "uv")["team_pkg"] == "1.0"


def test_poetry_and_pdm_upload_and_poetry_installs_the_upload(tmp_path, confusing, users):
    proxy = Proxy(tmp_path / "cache", confusing.env(), workers=2, **upload_env(users)).start()
    try:
        for tool, version in (("poetry", "2.0"), ("pdm", "2.1")):
            project = tmp_path / f"team-pkg-{tool}"
            (project / "dist").mkdir(parents=True)
            (project / "pyproject.toml").write_text(
                f'[project]\nname = "team-pkg"\nversion = "{version}"\n')
            for filename, data in (make_wheel("team-pkg", version, requires=["public-dep"]),
                                   make_sdist("team-pkg", version, requires=["public-dep"])):
                (project / "dist" / filename).write_bytes(data)
            env = isolated(tmp_path / f"home-{tool}",
                           POETRY_CONFIG_DIR=str(tmp_path / "poetry-config"),
                           POETRY_CACHE_DIR=str(tmp_path / "poetry-cache"),
                           POETRY_REPOSITORIES_TEAM_URL=f"{proxy.url}/legacy/",
                           POETRY_HTTP_BASIC_TEAM_USERNAME="alice",
                           POETRY_HTTP_BASIC_TEAM_PASSWORD=PASSWORD,
                           POETRY_KEYRING_ENABLED="false", POETRY_NO_INTERACTION="1",
                           PDM_CHECK_UPDATE="false", PDM_CACHE_DIR=str(tmp_path / "pdm-cache"),
                           PDM_LOG_DIR=str(tmp_path / "pdm-log"))
            if tool == "poetry":
                run([str(BIN / "poetry"), "publish", "-r", "team"], project, env)
            else:
                run([str(BIN / "pdm"), "publish", "--no-build", "-r", f"{proxy.url}/legacy/",
                     "-u", "alice", "-P", PASSWORD], project, env)
        files = [f["filename"] for f in requests.get(
            f"{proxy.url}/simple/team-pkg/", headers={"Accept": JSON}, timeout=10).json()["files"]]
        assert sorted(files) == sorted(
            ["team_pkg-2.0-py3-none-any.whl", "team_pkg-2.0.tar.gz",
             "team_pkg-2.1-py3-none-any.whl", "team_pkg-2.1.tar.gz"])
        # poetry resolves the team's project from the uploads, not the upstream's 99.0.
        app = poetry_install(tmp_path, f"{proxy.url}/simple/",
                             '[project]\nname = "app"\nversion = "0.1"\n'
                             'requires-python = ">=3.8"\ndependencies = ["team-pkg"]\n')
        lock = (app / "poetry.lock").read_text()
        assert 'name = "team-pkg"\nversion = "2.1"' in lock
        assert 'name = "public-dep"\nversion = "1.0"' in lock
    finally:
        proxy.stop()


def _raw_post(proxy: Proxy, body: bytes, length: int, boundary: str) -> bytes:
    """A POST to /legacy/ over a plain socket: `length` announced, `body` sent, then the
    sending side closed (a client that died mid-upload, or a body cut short on the way)."""
    auth = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    head = (f"POST /legacy/ HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {auth}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {length}\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as sock:
        sock.sendall(head + body)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_cut_short_and_oversized_bodies_are_refused_and_keep_nothing(tmp_path, upstream, users):
    proxy = Proxy(tmp_path / "cache", upstream.env(), workers=1,
                  **upload_env(users) | {"PYPI_UPLOAD_MAX_SIZE": "1M"}).start()
    try:
        filename, data = make_wheel("team-pkg", "1.0", payload=300_000)
        fields = {":action": "file_upload", "name": "team-pkg", "version": "1.0",
                  "filetype": "bdist_wheel", "sha256_digest": hashlib.sha256(data).hexdigest()}
        boundary, body = encode_multipart(MultiDict(
            fields | {"content": FileStorage(io.BytesIO(data), filename)}))
        # Cut short: a third of the body, the length of all of it announced.
        answer = _raw_post(proxy, body[:len(body) // 3], len(body), boundary)
        assert answer.startswith(b"HTTP/1.1 400 the body was cut short"), answer[:300]
        # The whole body but its closing boundary.
        cut = body[:body.rindex(f"--{boundary}--".encode())]
        answer = _raw_post(proxy, cut, len(cut), boundary)
        assert answer.startswith(b"HTTP/1.1 400 the body was cut short"), answer[:300]
        # Too large: refused from its Content-Length, before its body is read.
        answer = _raw_post(proxy, b"", 50 << 20, boundary)
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:300]
        assert b"limit" in answer
        big = dist(tmp_path, make_wheel("team-pkg", "2.0", payload=2 << 20))
        done = twine(proxy.url, big)
        assert done.returncode != 0 and "413" in done.stdout + done.stderr
        assert not (tmp_path / "cache" / "uploads").exists()
        assert [p.name for p in (tmp_path / "cache" / "tmp").glob("*.part")] == []
        # And a whole one still goes through.
        answer = _raw_post(proxy, body, len(body), boundary)
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]
        assert "Traceback" not in proxy.logs()
    finally:
        proxy.stop()


def _post(url: str, made: tuple[str, bytes]) -> int:
    filename, data = made
    name, version = filename.split("-")[:2]
    fields = {":action": "file_upload", "name": name, "version": version.removesuffix(".tar.gz"),
              "filetype": "bdist_wheel" if filename.endswith(".whl") else "sdist",
              "sha256_digest": hashlib.sha256(data).hexdigest()}
    return requests.post(f"{url}/legacy/", data=fields, files={"content": (filename, data)},
                         auth=("alice", PASSWORD), timeout=60).status_code


def _listed(node: Proxy) -> list[str]:
    return sorted(f["filename"] for f in requests.get(
        f"{node.url}/simple/team-pkg/", headers={"Accept": JSON}, timeout=10).json()["files"])


def test_nodes_uploading_at_once_each_keep_theirs_and_one_name_once(tmp_path, moto, upstream,
                                                                      users):
    with cluster(tmp_path, moto, upstream, 2, **upload_env(users)) as nodes:
        first, second = nodes
        made = [make_wheel("team-pkg", f"1.{i}") for i in range(6)]
        with ThreadPoolExecutor(6) as pool:  # different files of one project, on both nodes
            codes = list(pool.map(_post, [nodes[i % 2].url for i in range(6)], made))
        assert codes == [200] * 6
        assert _listed(first) == _listed(second) == sorted(name for name, _ in made)
        same = make_wheel("team-pkg", "2.0")
        with ThreadPoolExecutor(2) as pool:  # one name on both nodes at once: one wins
            codes = sorted(pool.map(_post, [first.url, second.url], [same, same]))
        assert codes == [200, 409]
        # A yank from the command line (against the bucket) shows on the other node.
        done = cli(first, "yank", "team-pkg", "2.0", "--reason", "oops")
        assert done.returncode == 0, done.stderr
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            files = requests.get(f"{second.url}/simple/team-pkg/", headers={"Accept": JSON},
                                 timeout=10).json()["files"]
            if any(f.get("yanked") == "oops" for f in files):
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"the yank did not show on the second node: {files}")


def test_uploads_through_the_nginx_front(tmp_path, upstream, users):
    """A wheel over nginx's default body limit (1 MiB) goes through the front, and is then
    served through it; one over PYPI_UPLOAD_MAX_SIZE is the app's 413."""
    proxy = Proxy(tmp_path / "cache", upstream.env(), workers=1,
                  **upload_env(users) | {"PYPI_UPLOAD_MAX_SIZE": "4M"}).start()
    front = None
    try:
        front = Front(proxy).start()
        files = dist(tmp_path, make_wheel("team-pkg", "1.0", payload=2 << 20))
        done = twine(front.url, files)
        assert done.returncode == 0, done.stdout + done.stderr
        assert pip_install(f"{front.url}/simple", tmp_path / "pip", "team-pkg").returncode == 0
        assert installed(tmp_path / "pip") == {"team_pkg": "1.0"}
        big = dist(tmp_path, make_wheel("team-pkg", "2.0", payload=5 << 20))
        done = twine(front.url, big)
        assert done.returncode != 0 and "larger than the limit" in done.stdout + done.stderr
    finally:
        if front is not None:
            front.stop()
        proxy.stop()
