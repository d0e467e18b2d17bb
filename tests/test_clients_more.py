"""The clients people use besides pip and uv: poetry and pdm install a project through the proxy."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import requests

from .fixture_upstream import Upstream
from .servers import Front, Proxy, add_chain, clean_environ

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent
CHAIN = {"alpha": "1.0", "beta": "1.0", "gamma": "1.0"}
PROJECT = """[project]
name = "demo"
version = "0.1"
requires-python = ">=3.8"
dependencies = ["alpha"]
"""


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    work = tmp_path_factory.mktemp("clients")
    up = Upstream(work / "up", layout="relative").start()
    add_chain(up)
    proxy = Proxy(work / "cache", up.env(), workers=2).start()
    yield proxy
    proxy.stop()
    up.stop()


def isolated(home: Path, **tool: str) -> dict[str, str]:
    """The machine's environment with a home, config and cache of the test's own."""
    return clean_environ() | {
        "HOME": str(home), "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_CACHE_HOME": str(home / "cache"), "XDG_DATA_HOME": str(home / "data"),
        "VIRTUAL_ENV": "", "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring",
    } | tool


def run(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{command}: {done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done


def venv_versions(venv: Path) -> dict[str, str]:
    site = next(venv.glob("lib/python*/site-packages"))
    found = dict(p.name.removesuffix(".dist-info").split("-") for p in site.glob("*.dist-info"))
    return {name: found.get(name) for name in CHAIN}


def poetry_install(tmp_path: Path, index_url: str, project_text: str = PROJECT) -> Path:
    """`poetry install` of a project whose one source is `index_url`; the project's directory."""
    project = tmp_path / "demo"
    project.mkdir()
    # One primary source: poetry then asks no other index.
    (project / "pyproject.toml").write_text(project_text + f"""
[tool.poetry]
package-mode = false

[[tool.poetry.source]]
name = "pypicache"
url = "{index_url}"
priority = "primary"
""")
    env = isolated(tmp_path / "home", POETRY_CONFIG_DIR=str(tmp_path / "poetry-config"),
                   POETRY_CACHE_DIR=str(tmp_path / "poetry-cache"),
                   POETRY_DATA_DIR=str(tmp_path / "poetry-data"),
                   POETRY_VIRTUALENVS_IN_PROJECT="true", POETRY_KEYRING_ENABLED="false",
                   POETRY_NO_INTERACTION="1")
    run([str(BIN / "poetry"), "env", "use", sys.executable], project, env)
    run([str(BIN / "poetry"), "install"], project, env)
    return project


def test_poetry_installs_from_a_primary_source(proxy, tmp_path):
    project = poetry_install(tmp_path, f"{proxy.url}/simple/")
    assert venv_versions(project / ".venv") == CHAIN
    lock = (project / "poetry.lock").read_text()
    assert all(f'name = "{name}"' in lock for name in CHAIN) and "sha256:" in lock


def test_poetry_installs_through_the_nginx_front(proxy, tmp_path):
    front = Front(proxy).start()
    try:
        project = poetry_install(tmp_path, f"{front.url}/simple/")
        assert venv_versions(project / ".venv") == CHAIN
    finally:
        front.stop()


def test_poetry_reads_a_small_wheel_by_its_tail_on_every_path(tmp_path):
    """poetry's lazy wheel, for a wheel without PEP 658 metadata, first asks `bytes=-10000`,
    longer than a small wheel: a cold file (relayed from the upstream), a hit and the nginx
    front each answer it with the whole wheel (RFC 9110 14.1.2), so one request reads it."""
    from poetry.inspection.lazy_wheel import metadata_from_wheel_url

    up = Upstream(tmp_path / "up").start()
    wheel = up.add_wheel("alpha", "1.0")
    assert wheel.size < 10_000
    proxy = Proxy(tmp_path / "cache", up.env(), workers=2).start()
    front = Front(proxy).start()
    try:
        assert requests.get(f"{proxy.url}/simple/alpha/", timeout=30).ok
        path = "/packages/" + wheel.path.split("/packages/", 1)[1]
        answers: list[tuple[int, str | None]] = []
        session = requests.Session()
        session.hooks["response"].append(
            lambda response, *args, **kwargs: answers.append(
                (response.status_code, response.headers.get("X-Cache"))))
        read = lambda base: metadata_from_wheel_url("alpha", base + path, session)  # noqa: E731
        assert read(proxy.url)["name"] == "alpha"  # cold: nothing is downloaded for it
        assert up.downloads(wheel.filename) == 0
        assert requests.get(proxy.url + path, timeout=30).content == wheel.disk_path.read_bytes()
        assert read(proxy.url)["version"] == "1.0" and read(front.url)["name"] == "alpha"
        assert answers == [(206, "range"), (206, "hit"), (206, "hit")]
    finally:
        front.stop()
        proxy.stop()
        up.stop()


def test_pdm_installs_from_its_source(proxy, tmp_path):
    project = tmp_path / "demo"
    project.mkdir()
    # A source named "pypi" replaces the default index.
    (project / "pyproject.toml").write_text(PROJECT + f"""
[[tool.pdm.source]]
name = "pypi"
url = "{proxy.url}/simple/"
""")
    env = isolated(tmp_path / "home", PDM_CACHE_DIR=str(tmp_path / "pdm-cache"),
                   PDM_LOG_DIR=str(tmp_path / "pdm-log"), PDM_CHECK_UPDATE="false",
                   PDM_USE_UV="false", PDM_NON_INTERACTIVE="1")
    run([str(BIN / "pdm"), "venv", "create", sys.executable], project, env)
    env["PDM_PYTHON"] = str(project / ".venv" / "bin" / "python")  # never the suite's own
    run([str(BIN / "pdm"), "install", "--no-self"], project, env)
    assert venv_versions(project / ".venv") == CHAIN
    assert all(f'name = "{name}"' in (project / "pdm.lock").read_text() for name in CHAIN)
