"""The package: one version, shown everywhere; and `pip install <checkout>` in a fresh venv gives
the `pypicache` command and a server that runs without the checkout."""
from __future__ import annotations

import configparser
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner
from packaging.requirements import Requirement
from packaging.version import Version

from pypicache import __version__
from pypicache.cli import pypicache

from .fixture_upstream import Upstream
from .servers import ROOT, clean_environ, free_port, stop_group

SETUP = configparser.ConfigParser()
SETUP.read(ROOT / "setup.cfg")


# ---- one version, in pypicache/__init__.py -------------------------------------------------

def test_the_version_has_one_place_and_a_changelog_entry():
    assert SETUP["metadata"]["version"] == "attr: pypicache.__version__"
    assert str(Version(__version__)) == __version__
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert re.search(rf"^## \[{re.escape(__version__)}\] - \d{{4}}-\d\d-\d\d$", changelog, re.M)


def test_version_option_prints_it():
    result = CliRunner().invoke(pypicache, ["--version"])
    assert result.exit_code == 0 and result.output == f"pypicache {__version__}\n"


def test_healthz_and_the_dashboard_show_the_version(client):
    assert client.get("/healthz").json["version"] == __version__
    assert f"pypicache {__version__} ·" in client.get("/").get_data(as_text=True)


# ---- the metadata -------------------------------------------------------------------------

def test_install_requires_are_the_pinned_runtime_requirements_as_ranges():
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            requirement = Requirement(line)
            pins[requirement.name.lower()] = next(iter(requirement.specifier)).version
    ranges = {Requirement(line).name.lower(): Requirement(line).specifier
              for line in SETUP["options"]["install_requires"].strip().splitlines()}
    assert set(ranges) == set(pins)
    for name, specifier in ranges.items():
        assert specifier.contains(pins[name]), f"{name} {pins[name]} outside {specifier}"
        assert any(spec.operator == ">=" for spec in specifier), f"{name}: no lower bound"


def test_only_the_package_ships_with_its_templates():
    found = SETUP["options.packages.find"]["include"].split()
    assert found == ["pypicache", "pypicache.*"]
    assert "templates/**/*.html" in SETUP["options.package_data"]["pypicache"]
    assert (ROOT / "pypicache" / "templates" / "browse" / "dashboard.html").is_file()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert [line for line in pyproject.splitlines() if line.startswith("[")] == ["[build-system]"]


def test_serve_runs_gunicorn_with_the_shipped_settings_and_passes_options_on(tmp_path):
    env = clean_environ() | {"PYPI_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    checked = subprocess.run([sys.executable, "-m", "pypicache", "serve", "--check-config"],
                             env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr
    bad = subprocess.run([sys.executable, "-m", "pypicache", "serve"], env=env | {
        "PYPI_WORKERS": "many"}, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    lines = bad.stderr.strip().splitlines()
    assert bad.returncode == 1 and len(lines) == 1, bad.stderr
    assert lines[0].startswith("pypicache: bad configuration: PYPI_WORKERS='many'")


# ---- pip install <checkout> in a fresh venv (tests/installed.py) --------------------------

@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    server = Upstream(tmp_path_factory.mktemp("upstream")).start()
    server.add_wheel("alpha", "1.0", requires=["beta"])
    server.add_wheel("beta", "1.0")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def served(installed, chain, tmp_path_factory):
    """`pypicache serve` of the fresh venv, from a directory with no checkout in it."""
    base = tmp_path_factory.mktemp("served")
    port = free_port()
    env = clean_environ() | chain.env() | {
        "PYPI_CACHE_DIR": str(base / "cache"), "PYPI_BIND": f"127.0.0.1:{port}",
        "PYPI_WORKERS": "2", "HOME": str(base)}
    env.pop("PYTHONPATH", None)
    log = base / "serve.log"
    with open(log, "wb") as out:
        server = subprocess.Popen([str(installed / "pypicache"), "serve"], cwd=base, env=env,
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        health = _wait_healthy(url, server, log)
        yield {"url": url, "env": env, "health": health, "base": base, "log": log}
    finally:
        stop_group(server)


def _wait_healthy(url: str, server: subprocess.Popen, log: Path) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as response:
                return json.load(response)
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"pypicache serve did not answer (exit {server.poll()}):\n{log.read_text()}")


@pytest.mark.e2e
def test_the_installed_command_prints_the_version(installed):
    done = subprocess.run([str(installed / "pypicache"), "--version"], env=clean_environ(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == f"pypicache {__version__}\n", done.stderr


@pytest.mark.e2e
def test_the_installed_package_runs_without_the_checkout_on_a_current_bcrypt(installed):
    code = "import bcrypt, pypicache; print(pypicache.__file__); print(bcrypt.__version__)"
    done = subprocess.run([str(installed / "python"), "-c", code], env=clean_environ(), cwd="/",
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    location, bcrypt_version = done.stdout.splitlines()
    assert Path(location).is_relative_to(installed.parent)
    assert not Path(location).is_relative_to(ROOT)
    assert (Path(location).parent / "templates" / "browse" / "dashboard.html").is_file()
    assert Version(bcrypt_version) >= Version("5"), "no test tool holds the runtime's bcrypt back"


@pytest.mark.e2e
def test_serve_answers_healthz_with_the_version(served):
    assert served["health"]["status"] == "ok" and served["health"]["version"] == __version__
    with urllib.request.urlopen(served["url"] + "/") as dashboard:  # the templates shipped
        assert f"pypicache {__version__}" in dashboard.read().decode()


@pytest.mark.e2e
def test_warm_through_the_served_proxy_shows_its_progress(installed, served, chain):
    requirements = served["base"] / "requirements.txt"
    requirements.write_text("alpha\n")
    done = subprocess.run(
        [str(installed / "pypicache"), "warm", "-r", str(requirements), "--proxy", served["url"]],
        env=served["env"], cwd=served["base"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 files to warm" in done.stdout and "warmed 2 files" in done.stdout
    assert re.search(r"warming: 100%\|", done.stdout), done.stdout  # tqdm's bar, at its end
    assert [chain.downloads(f"{name}-1.0-py3-none-any.whl") for name in ("alpha", "beta")] \
        == [1, 1]
    assert os.path.isdir(Path(served["env"]["PYPI_CACHE_DIR"]) / "files")
