"""The policy end to end with the clients of lock files: `uv sync` of a lock file made before
a rule covered what it names (it fails on the 403; the log and the policy page name the rule),
and poetry resolving to the release the cooldown lets through. Real gunicorn workers, the
fixture upstream (PEP 691 JSON with upload times), nothing beyond 127.0.0.1."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import tomllib
from datetime import timedelta
from pathlib import Path

import pytest
import requests

from .fixture_upstream import Upstream
from .servers import Proxy, clean_environ
from .test_policy_e2e import COOLDOWN, eventually, rewrite, wheel

pytestmark = pytest.mark.e2e
UV = str(Path(sys.executable).with_name("uv"))
POETRY = str(Path(sys.executable).with_name("poetry"))


@pytest.fixture
def fleet(tmp_path):
    """A proxy (2 workers) whose policy file is empty (no rule) until a test rewrites it, in
    front of demo 1.0 (a month old) and 2.0 (an hour old), lib 1.0, app 1.0 needing both."""
    up = Upstream(tmp_path / "up", formats=("json",)).start()
    old = timedelta(days=30)
    wheel(up, "demo", "1.0", old)
    wheel(up, "demo", "2.0", timedelta(hours=1))
    wheel(up, "lib", "1.0", old)
    wheel(up, "app", "1.0", old, requires=["lib", "demo"])
    policy = tmp_path / "policy.toml"
    policy.write_text("")
    proxy = Proxy(tmp_path / "cache", up.env(), workers=2, PYPI_POLICY_FILE=str(policy))
    proxy.policy = policy
    yield proxy.start()
    proxy.stop()
    up.stop()


def project(directory: Path, *dependencies: str, extra: str = "") -> Path:
    directory.mkdir(parents=True)
    listed = ", ".join(f'"{d}"' for d in dependencies)
    # No [build-system]: uv and poetry (package-mode = false) install the dependencies only.
    (directory / "pyproject.toml").write_text(
        f'[project]\nname = "notebook-env"\nversion = "0"\nrequires-python = ">=3.9"\n'
        f"dependencies = [{listed}]\n{extra}")
    return directory


def uv(directory: Path, cache: Path, *args: str) -> subprocess.CompletedProcess:
    """Real uv in a project, without any uv.toml, with its own cache."""
    command = [UV, *args, "--no-config", "--cache-dir", str(cache), "--python", sys.executable]
    env = clean_environ() | {"UV_PYTHON_DOWNLOADS": "never"}
    return subprocess.run(command, cwd=directory, env=env, capture_output=True, text=True,
                          timeout=300)


def locked(directory: Path) -> dict[str, str]:
    lock = tomllib.loads((directory / "uv.lock").read_text())
    return {p["name"]: p["version"] for p in lock["package"] if "registry" in p["source"]}


def venv_has(directory: Path) -> dict[str, str]:
    (site,) = (directory / ".venv" / "lib").glob("python*/site-packages")
    return dict(p.name.removesuffix(".dist-info").split("-") for p in site.glob("*.dist-info")
                if not p.name.startswith(("pip-", "setuptools-", "wheel-")))


def test_uv_sync_of_a_lock_made_before_the_policy_fails_on_the_403(fleet, tmp_path):
    work = project(tmp_path / "env", "app")
    index = f"{fleet.url}/simple"
    done = uv(work, tmp_path / "c0", "lock", "--default-index", index)
    assert done.returncode == 0, done.stderr
    assert locked(work) == {"app": "1.0", "lib": "1.0", "demo": "2.0"}
    assert index in (work / "uv.lock").read_text()  # the file URLs of the proxy, named
    rewrite(fleet, COOLDOWN)  # demo 2.0 is an hour old: now held
    held = f"{fleet.url}/simple/demo/"
    eventually(lambda: "filtered" in requests.get(
        held, timeout=10, headers={"Connection": "close"}).headers.get("X-Pypicache-Policy", ""))
    # One worker has the new rules; the other takes them at its next look at the file, at
    # most a second after its last one (pypicache/policywatch.py): past it, every worker has.
    time.sleep(1.5)
    for i, args in enumerate((["sync", "--frozen"], ["sync", "--locked"], ["sync"])):
        refused = uv(work, tmp_path / f"c{i + 1}", *args, "--default-index", index)
        assert refused.returncode != 0, (args, refused.stderr)
        assert "403" in refused.stderr and "demo-2.0-py3-none-any.whl" in refused.stderr, \
            refused.stderr
    assert locked(work)["demo"] == "2.0"  # `uv sync` did not lock again: the lock stands
    assert "refused the file demo-2.0-py3-none-any.whl of demo to 127.0.0.1: cooldown 7d; " \
        "passes-at=" in fleet.logs()

    logged = fleet.logs().count("refused the file demo-2.0-py3-none-any.whl")
    assert logged >= 3  # one per sync at least (a worker logs each request it refuses)

    def on_the_page():  # each worker flushes within a second or so
        data = requests.get(f"{fleet.url}/policy.json", timeout=10).json()
        downloads = [r for r in data["refused"] if r["what"] == "file"]
        return (downloads, data) if sum(r["count"] for r in downloads) == logged else None

    downloads, data = eventually(on_the_page)
    assert {(r["rule"], r["entry"], r["project"], r["file"], r["address"])
            for r in downloads} == {("cooldown", "7d", "demo", "demo-2.0-py3-none-any.whl",
                                     "127.0.0.1")}
    assert [(h["project"], h["version"]) for h in data["held"]] == [("demo", "2.0")]
    assert data["held"][0]["passes_at"] == downloads[0]["passes_at"]
    # Break-glass for the locked release: the same lock installs, nothing restarted.
    rewrite(fleet, COOLDOWN + 'allow = ["demo==2.0"]\n')
    eventually(lambda: uv(work, tmp_path / "c9", "sync", "--frozen",
                          "--default-index", index).returncode == 0, seconds=30)
    assert venv_has(work) == {"app": "1.0", "lib": "1.0", "demo": "2.0"}


def poetry(directory: Path, *args: str) -> subprocess.CompletedProcess:
    """Real poetry with its own configuration, cache and data (nothing of this machine's), the
    project's virtual environment in the project."""
    home = directory.parent / "poetry-home"
    env = clean_environ() | {
        "POETRY_CONFIG_DIR": str(home / "config"), "POETRY_CACHE_DIR": str(home / "cache"),
        "POETRY_DATA_DIR": str(home / "data"), "POETRY_VIRTUALENVS_IN_PROJECT": "true",
        "POETRY_NO_INTERACTION": "1", "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring",
    }
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return subprocess.run([POETRY, *args], cwd=directory, env=env, capture_output=True,
                          text=True, timeout=300)


def test_poetry_takes_the_release_the_cooldown_lets_through(fleet, tmp_path):
    rewrite(fleet, COOLDOWN)
    eventually(lambda: "filtered" in requests.get(
        f"{fleet.url}/simple/demo/", timeout=10, headers={"Connection": "close"})
        .headers.get("X-Pypicache-Policy", ""))
    time.sleep(1.5)  # past every worker's next look at the file
    source = (f'[tool.poetry]\npackage-mode = false\n\n[[tool.poetry.source]]\n'
              f'name = "pypicache"\nurl = "{fleet.url}/simple/"\npriority = "primary"\n')
    work = project(tmp_path / "env", extra=source)
    done = poetry(work, "env", "use", sys.executable)
    assert done.returncode == 0, done.stdout + done.stderr
    done = poetry(work, "add", "app")
    assert done.returncode == 0, done.stdout + done.stderr
    lock = tomllib.loads((work / "poetry.lock").read_text())
    assert {p["name"]: p["version"] for p in lock["package"]} == \
        {"app": "1.0", "lib": "1.0", "demo": "1.0"}
    assert venv_has(work) == {"app": "1.0", "lib": "1.0", "demo": "1.0"}
    asked = poetry(work, "add", "demo==2.0")  # the held release, by name: not there
    assert asked.returncode != 0
    assert "demo" in asked.stdout + asked.stderr
    assert '"GET /simple/demo/' in fleet.logs()  # poetry read the proxy, nothing else
