"""The compose deployments on a real Docker engine: built, brought up, installed through.

The fleet file with its nginx front: two installs from this host, the second from nginx's
disk, every hit counted. The JupyterHub file: used by two users, then down and up again.

The engine, the stand-in base images and the fixture upstream in a container: tests/engine.py.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from email.message import Message
from pathlib import Path

import pytest

from tests.engine import (  # noqa: F401  (engine: a fixture)
    ROOT,
    content_tag,
    docker,
    engine,
    image_exists,
    python_standin,
    run,
    start_upstream,
)

COMPOSE = ROOT / "docker-compose.jupyterhub.yml"

# The stand-in for the official notebook image: what DockerSpawner and the user image rely on
# (user jovyan with a pip it may use, ~/work, jupyterhub-singleuser as the command).
NOTEBOOK_STANDIN = """\
ARG BASE
FROM ${BASE}
RUN useradd --create-home --uid 1000 --shell /bin/bash jovyan \\
    && mkdir /home/jovyan/work && chown jovyan:jovyan /home/jovyan/work \\
    && python3 -m venv /opt/venv \\
    && /opt/venv/bin/pip install --no-cache-dir jupyterhub==6.1.1 jupyter_server==2.17.0 \\
    && chown -R jovyan:jovyan /opt/venv
ENV PATH=/opt/venv/bin:$PATH
USER jovyan
WORKDIR /home/jovyan
CMD ["jupyterhub-singleuser"]
"""

PROJECT = "pypicachetest"
NETWORK = "pypicache-test-network"
CACHE_VOLUME = "pypicache-test-cache"
USERS = ("pypicacheada", "pypicachebob")  # no "-": DockerSpawner escapes it in names
TOKEN = hashlib.sha256(os.urandom(32)).hexdigest()
UPSTREAM = "pypicache-test-upstream"
# Build arguments of the pypicache image too: both deployments give the same, so it is built once.
MIRROR_URL, PACKAGE_LOC = f"http://{UPSTREAM}:8000/pypi/web/simple", "/pypi/web/packages"

# A small data stack with a dependency tree, as a notebook user would install it. The wheels
# carry incompressible payloads; the upstream sends each file at the design note's t = 5 MB/s.
STACK = [
    ("datastack", "1.0", ["arraylib", "framelib>=2", "plotlib"], 0),
    ("arraylib", "1.26.0", [], 8 << 20),
    ("framelib", "2.2.0", ["arraylib", "tzlib"], 6 << 20),
    ("plotlib", "3.8.0", ["arraylib", "colorlib"], 4 << 20),
    ("colorlib", "0.4.6", [], 1 << 20),
    ("tzlib", "2024.1", [], 512 << 10),
]
THROTTLE = 5 << 20

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]


# ---- the engine (tests/engine.py) and the stand-ins ----------------------------------------

@pytest.fixture(scope="module")
def standins(engine, tmp_path_factory) -> dict[str, str]:
    python = python_standin(tmp_path_factory.mktemp("mmdebstrap"))
    notebook = content_tag("pypicache-standin/notebook", python, NOTEBOOK_STANDIN)
    if not image_exists(notebook):
        docker("build", "--build-arg", f"BASE={python}", "-t", notebook, "-",
               input=NOTEBOOK_STANDIN, timeout=900)
    return {"python": python, "notebook": notebook}


# ---- the deployment --------------------------------------------------------------------------

def write_env(path: Path, **values: str) -> Path:
    """.env.example with the test's values: every other line as a user would copy it."""
    lines = []
    for line in (ROOT / ".env.example").read_text().splitlines():
        name = line.partition("=")[0]
        lines.append(f"{name}={values.pop(name)}" if name in values else line)
    assert not values, f"not in .env.example: {values}"
    path.write_text("\n".join(lines) + "\n")
    return path


def wait_healthy(container: str, limit: float = 180) -> None:
    deadline = time.monotonic() + limit
    while True:
        state = docker("inspect", "--format", "{{.State.Health.Status}} {{.State.Status}}",
                       container, check=False).stdout.strip()
        if state.startswith("healthy"):
            return
        if time.monotonic() > deadline:
            logs = docker("logs", "--tail", "40", container, check=False)
            pytest.fail(f"{container} not healthy in {limit} s ({state}):\n"
                        f"{logs.stdout}{logs.stderr}")
        time.sleep(1)


class Deployment:
    def __init__(self, env_file: Path, hub_port: int):
        self.env_file, self.hub_port = env_file, hub_port

    def compose(self, *argv: str, timeout: float = 900, check: bool = True):
        return run("docker-compose", "--project-name", PROJECT, "--file", str(COMPOSE),
                   "--env-file", str(self.env_file), *argv, timeout=timeout, check=check)

    def hub(self, method: str, path: str, token: str | None = TOKEN) -> tuple[int, dict | None]:
        """A call of the hub's REST API: (status, parsed body)."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.hub_port}/hub/api{path}", method=method,
            headers={"Authorization": f"token {token}"} if token else {},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                text = response.read().decode()
                return response.status, json.loads(text) if text else None
        except urllib.error.HTTPError as error:
            return error.code, None

    def stats(self) -> dict:
        code = ("import sys, urllib.request; sys.stdout.write("
                "urllib.request.urlopen('http://127.0.0.1/stats.json').read().decode())")
        return json.loads(docker("exec", "pypicache", "python", "-c", code).stdout)


def remove_leftovers(deployment: Deployment) -> None:
    docker("rm", "--force", UPSTREAM, *(f"jupyter-{user}" for user in USERS), check=False)
    deployment.compose("down", "--volumes", "--remove-orphans", check=False)
    docker("volume", "rm", "--force", *(f"jupyterhub-user-{user}" for user in USERS),
           check=False)


@pytest.fixture(scope="module")
def deployment(standins, tmp_path_factory):
    """The compose file built on the stand-ins and brought up, the upstream beside it."""
    from tests.servers import free_port

    base = tmp_path_factory.mktemp("compose")
    hub_port = free_port()
    env_file = write_env(
        base / ".env", PYPI_CACHE_HOST=CACHE_VOLUME, DATA_VOLUME_HOST="pypicache-test-hub",
        PYPI_MIRROR_URL=MIRROR_URL, PYPI_PACKAGE_LOC=PACKAGE_LOC, PYPI_CACHE_MAX_SIZE="1G",
        PYTHON_IMAGE=standins["python"], NOTEBOOK_IMAGE=standins["notebook"],
        LOCAL_NOTEBOOK_IMAGE="pypicache-test-user", DOCKER_NETWORK_NAME=NETWORK,
        JUPYTERHUB_PUBLISH=f"127.0.0.1:{hub_port}", JUPYTERHUB_OPS_TOKEN=TOKEN,
    )
    deployment = Deployment(env_file, hub_port)
    remove_leftovers(deployment)
    figures = {}
    try:
        bring_up(deployment, figures)
        yield deployment, figures
    finally:
        print(f"\ndocker deployment figures: {json.dumps(figures)}", file=sys.stderr)
        remove_leftovers(deployment)


def bring_up(deployment: Deployment, figures: dict) -> None:
    """Build, take over a root-owned cache volume, compose up, start the upstream."""
    started = time.monotonic()
    deployment.compose("build", timeout=1500)
    figures["build_s"] = time.monotonic() - started
    root_owned_volume(CACHE_VOLUME)
    started = time.monotonic()
    deployment.compose("up", "--detach", timeout=600)
    wait_healthy("pypicache")
    wait_healthy("jupyterhub")
    figures["up_s"] = time.monotonic() - started
    start_upstream(UPSTREAM, NETWORK, STACK, THROTTLE)


def root_owned_volume(name: str) -> None:
    """The volume as the design note's image left it: written by root. The image must take it
    over (no crash loop on "not writable")."""
    docker("volume", "create", name)
    docker("run", "--rm", "--user", "0", "--entrypoint", "sh", "--volume", f"{name}:/old",
           "pypicache", "-c", "mkdir -p /old/files/old && echo old > /old/files/old/root-file")


# ---- the fleet file with its nginx front (before the hub: one deployment up at a time) -------

FLEET = ROOT / "docker-compose.fleet.yml"
FLEET_PROJECT = "pypicachefleet"  # its containers and network: pypicachefleet_*
FLEET_VOLUME = "pypicache-fleet-cache"
FLEET_UPSTREAM = "pypicache-fleet-upstream"
CACHE = "/srv/pypicache/data"  # .env.example's PYPI_CACHE_CONTAINER
# A small chain, as a CI job installs it: fleetapp -> fleetlib -> fleetbase.
CHAIN = [
    ("fleetapp", "1.0", ["fleetlib>=2"], 0),
    ("fleetlib", "2.0", ["fleetbase"], 256 << 10),
    ("fleetbase", "0.1", [], 64 << 10),
]


class Fleet:
    """docker-compose.fleet.yml with `--profile front`, runners' address on 127.0.0.1."""

    def __init__(self, env_file: Path, front_port: int):
        self.env_file, self.url = env_file, f"http://127.0.0.1:{front_port}"

    def compose(self, *argv: str, timeout: float = 900, check: bool = True):
        return run("docker-compose", "--project-name", FLEET_PROJECT, "--file", str(FLEET),
                   "--env-file", str(self.env_file), "--profile", "front", *argv,
                   timeout=timeout, check=check)

    def container(self, service: str) -> str:
        return self.compose("ps", "--quiet", service).stdout.strip()

    def get(self, path: str, **headers: str) -> tuple[Message, bytes]:
        """GET through the front's published port: (headers, body)."""
        request = urllib.request.Request(self.url + path, headers=headers)
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.headers, response.read()

    @property
    def cache_dir(self) -> Path:
        """The cache volume as this host sees it (where nginx's hits log is)."""
        return Path(docker("volume", "inspect", "--format", "{{.Mountpoint}}",
                           FLEET_VOLUME).stdout.strip())

    def up(self) -> None:
        """`up`, and wait until the front answers (once the app is healthy, it starts)."""
        self.compose("up", "--detach", timeout=600)
        wait_healthy(self.container("pypicache"))
        deadline = time.monotonic() + 60
        while True:
            try:
                self.get("/healthz")
                return
            except OSError as error:
                logs = docker("logs", self.container("front"), check=False)
                assert time.monotonic() < deadline, f"{error}\n{logs.stdout}{logs.stderr}"
                time.sleep(0.5)

    def remove(self) -> None:
        docker("rm", "--force", FLEET_UPSTREAM, check=False)
        self.compose("down", "--volumes", "--remove-orphans", check=False)


@pytest.fixture
def fleet(standins, tmp_path):
    """The fleet file with its front, built on the stand-ins (not up), removed at the end."""
    from tests.servers import free_port

    front_port = free_port()
    env_file = write_env(
        tmp_path / ".env", PYPI_CACHE_HOST=FLEET_VOLUME, PYPI_MIRROR_URL=MIRROR_URL,
        PYPI_PACKAGE_LOC=PACKAGE_LOC, PYPI_CACHE_MAX_SIZE="1G", PYTHON_IMAGE=standins["python"],
        NGINX_BASE=standins["python"], PYPI_PUBLISH=f"127.0.0.1:{free_port()}",
        PYPI_FRONT_PUBLISH=f"127.0.0.1:{front_port}",
    )
    fleet = Fleet(env_file, front_port)
    fleet.remove()
    try:
        fleet.compose("build", timeout=1500)
        yield fleet
    finally:
        fleet.remove()


def test_a_fleet_installs_through_the_front_and_warm_files_come_from_nginx(fleet, tmp_path):
    from tests.servers import installed, pip_install
    from tests.test_nginx_front import _counted_once, _front_gets

    root_owned_volume(FLEET_VOLUME)
    fleet.up()
    # Under the name the image was built for, on the network compose made for the file.
    start_upstream(FLEET_UPSTREAM, f"{FLEET_PROJECT}_default", CHAIN, None,
                   "--network-alias", UPSTREAM)
    app, front = fleet.container("pypicache"), fleet.container("front")
    # Both run as uid 10001, on a volume root wrote: the app took it over before the front
    # started and made its log directory.
    for container in (app, front):
        status = docker("exec", container, "cat", "/proc/1/status").stdout
        assert re.search(r"^Uid:\t10001\t", status, re.MULTILINE), status
    owners = docker("exec", front, "stat", "-c", "%u", f"{CACHE}/files/old/root-file",
                    f"{CACHE}/front").stdout.split()
    assert owners == ["10001", "10001"]

    # Real pip from this host through the published port, twice, as two runners would.
    for target in ("first", "second"):
        result = pip_install(f"{fleet.url}/simple", tmp_path / target, "fleetapp")
        assert result.returncode == 0, result.stdout + result.stderr
        assert installed(tmp_path / target) == {name: version for name, version, *_ in CHAIN}
    wheels = [f"{name}-{version}-py3-none-any.whl" for name, version, _, _ in CHAIN]
    # The app saw each wheel once, a miss: the second install's came from nginx.
    assert [[state for state, _ in served(wheel, app)] for wheel in wheels] == [["miss"]] * 3

    # Pages negotiate through the micro-cache as the app does (q-values included).
    json_type, html_type = "application/vnd.pypi.simple.v1+json", "text/html"
    for accept, expected in [
        (json_type, json_type), (html_type, html_type),
        (f"{json_type};q=0.2, {html_type};q=0.9", html_type),
    ]:
        headers, body = fleet.get("/simple/fleetlib/", Accept=accept)
        assert headers["Content-Type"].startswith(expected), (accept, headers)
        assert "Accept" in headers["Vary"]
        assert headers["X-Front-Cache"] in ("MISS", "HIT", "EXPIRED", "UPDATING")
    page = json.loads(fleet.get("/simple/fleetlib/", Accept=json_type)[1])
    (wheel,) = page["files"]
    url = urllib.parse.urljoin("/simple/fleetlib/", wheel["url"])
    headers, body = fleet.get(url)
    assert headers["X-Front-Cache"] == "disk"
    assert headers["Cache-Control"] == "max-age=365000000, immutable, public"
    assert headers["Content-Type"] == "application/octet-stream"
    assert "Content-Encoding" not in headers
    assert hashlib.sha256(body).hexdigest() == wheel["hashes"]["sha256"]

    # Every GET nginx answered is counted once in /stats.json, nothing left the upstream twice.
    answered = _front_gets(fleet, len(wheels) + 1)
    assert answered >= len(wheels) + 1  # the second install's wheels, and ours
    assert _counted_once(fleet, answered) == answered
    stats = json.loads(fleet.get("/stats.json")[1])
    # The upstream's own count: each wheel and each .metadata fetched once, by the first install.
    ask = f"print(urllib.request.urlopen('http://{UPSTREAM}:8000/_stats').read().decode())"
    upstream = json.loads(docker("exec", app, "python", "-c", f"import urllib.request; {ask}")
                          .stdout)
    assert upstream["downloads"] == dict.fromkeys(wheels, 1)
    fetched = {request: count for request, count in upstream["requests"].items()
               if "/packages/" in request}
    assert set(fetched.values()) == {1}
    assert stats["downloads"] == stats["files"] == len(fetched)
    assert stats["bytes_from_upstream"] == stats["bytes"]


def test_the_front_starts_on_a_fresh_volume_too(fleet):
    """Not only on a volume root wrote (above): on a new one, the front writes its log too."""
    from tests.test_nginx_front import _front_gets

    fleet.up()
    front = fleet.container("front")
    assert docker("exec", front, "stat", "-c", "%u", f"{CACHE}/front").stdout.split() == ["10001"]
    # A file in the cache, as the app's user puts it there: nginx serves it and logs the hit.
    docker("exec", "--user", "10001", fleet.container("pypicache"), "sh", "-c",
           f"mkdir -p {CACHE}/files/fresh && echo fresh > {CACHE}/files/fresh/probe.whl")
    headers, body = fleet.get("/packages/fresh/probe.whl")
    assert (headers["X-Front-Cache"], body) == ("disk", b"fresh\n")
    assert _front_gets(fleet, 1) == 1



# ---- the test --------------------------------------------------------------------------------

def spawn(deployment: Deployment, user: str, limit: float = 180) -> str:
    """Create `user` and start their server through the REST API; the container's name."""
    assert deployment.hub("POST", f"/users/{user}")[0] in (201, 409)
    assert deployment.hub("POST", f"/users/{user}/server")[0] in (201, 202)
    deadline = time.monotonic() + limit
    while not deployment.hub("GET", f"/users/{user}")[1]["servers"].get("", {}).get("ready"):
        assert time.monotonic() < deadline, docker("logs", "jupyterhub").stderr[-4000:]
        time.sleep(1)
    return f"jupyter-{user}"


def pip_install(container: str, *extra: str) -> float:
    """`pip install` the stack with the image's own settings (its pip.conf); the seconds it took."""
    started = time.monotonic()
    result = docker(*extra, container, "pip", "install", "--no-cache-dir",
                    "--disable-pip-version-check", "datastack", timeout=300, check=False)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Successfully installed" in result.stdout and "pypicache/simple" in result.stdout
    return elapsed


def settled_stats(deployment: Deployment, **expected: int) -> dict:
    """/stats.json once the workers have flushed their counters (about once a second)."""
    deadline = time.monotonic() + 30
    while True:
        stats = deployment.stats()
        counts = {"downloads": stats["downloads"], "files": stats["files"],
                  **{key: stats["requests"].get(key, 0) for key in ("hit", "miss")}}
        if all(counts[key] >= value for key, value in expected.items()):
            return stats
        assert time.monotonic() < deadline, (counts, expected)
        time.sleep(0.5)


def served(filename: str, container: str = "pypicache") -> list[tuple[str, int]]:
    """(X-Cache, milliseconds) of each GET of `filename` in pypicache's access log, in order."""
    log = docker("logs", container).stdout
    # access_log_format: ... "%(r)s" %(s)s %({content-length}o)s %({x-cache}o)s %(M)sms
    return [(match[1], int(match[2])) for line in log.splitlines()
            if '"GET ' in line and f"/{filename} " in line
            for match in [re.search(r'" \d{3} \S+ (\S+) (\d+)ms$', line)]]


# Run in pypicache: the resident KiB of each gunicorn worker (the children of PID 1, the arbiter).
WORKER_RSS = r"""
import glob, re
for status in glob.glob("/proc/[0-9]*/status"):
    text = open(status).read()
    if re.search(r"^PPid:\t1$", text, re.M) and "gunicorn" in open(status[:-6] + "cmdline").read():
        print(re.search(r"^VmRSS:\s+(\d+)", text, re.M)[1])
"""


def worker_rss_kib() -> list[int]:
    output = docker("exec", "pypicache", "python", "-c", WORKER_RSS).stdout
    values = [int(kib) for kib in output.split()]
    assert values, "no gunicorn worker found in pypicache"
    return values


def test_two_users_install_through_the_cache_and_the_cache_survives_down_and_up(deployment):
    deployment, figures = deployment
    wheels = [f"{name}-{version}-py3-none-any.whl" for name, version, _, _ in STACK]

    # Taken over from root, not crash-looping: the old file now belongs to the server's user.
    owner = docker("exec", "pypicache", "stat", "-c", "%u",
                   "/srv/pypicache/data/files/old/root-file")
    assert owner.stdout.strip() == "10001"
    status = docker("exec", "pypicache", "cat", "/proc/1/status").stdout
    assert re.search(r"^Uid:\t10001\t10001\t10001\t10001$", status, re.MULTILINE), status
    # Never an open hub: the API wants a token, the shared password was made on first start.
    assert deployment.hub("GET", "/users", token=None)[0] == 403
    password = docker("exec", "jupyterhub", "cat", "/data/shared-password").stdout.strip()
    assert len(password) >= 16

    first, second = (spawn(deployment, user) for user in USERS)
    figures["cold_install_s"] = pip_install(first, "exec")
    stats = settled_stats(deployment, downloads=len(STACK), files=len(STACK), miss=len(STACK))
    assert stats["downloads"] == len(STACK)
    figures["warm_install_s"] = pip_install(second, "exec")
    stats = settled_stats(deployment, hit=len(STACK))
    # Nothing more left the upstream: every file of the second user was a cache hit.
    assert (stats["downloads"], stats["files"]) == (len(STACK), len(STACK))
    assert stats["bytes_from_upstream"] == stats["bytes"] > sum(payload for *_, payload in STACK)
    requests = [served(wheel) for wheel in wheels]
    assert [[state for state, _ in each] for each in requests] == [["miss", "hit"]] * len(STACK)
    figures["stack_mb"] = stats["bytes"] / (1 << 20)
    # What the proxy spent sending the files, beside pip's own wall time above.
    figures["cold_files_ms"], figures["warm_files_ms"] = (
        sum(each[i][1] for each in requests) for i in (0, 1))
    figures["worker_rss_mib"] = max(worker_rss_kib()) / 1024

    # down, then up: the cache is kept. The upstream is gone by then: the third install comes
    # from the cache alone (its index pages and files), in a fresh container of the user image.
    for user in USERS:
        deployment.hub("DELETE", f"/users/{user}/server")
    docker("rm", "--force", UPSTREAM)
    deployment.compose("down")
    deployment.compose("up", "--detach")
    wait_healthy("pypicache")
    figures["after_restart_install_s"] = pip_install(
        "pypicache-test-user", "run", "--rm", "--network", NETWORK)
    stats = settled_stats(deployment, hit=2 * len(STACK))
    assert stats["downloads"] == len(STACK)
    assert [[state for state, _ in served(wheel)] for wheel in wheels] == [["hit"]] * len(STACK)


def test_workers_follow_the_cpus_the_container_may_use(engine, deployment):
    count = "from pypicache.config import load; print(load().workers)"
    assert docker("run", "--rm", "--cpus", "1", "pypicache", "python", "-c", count).stdout == "3\n"
    assert docker("run", "--rm", "--cpuset-cpus", "0", "pypicache", "python", "-c",
                  count).stdout == "3\n"


@pytest.mark.parametrize(("name", "profiles"), [
    ("docker-compose.jupyterhub.yml", []),
    ("docker-compose.fleet.yml", []),
    ("docker-compose.fleet.yml", ["--profile", "front"]),
])
def test_compose_config_is_clean_with_env_example(name, profiles, tmp_path):
    """docker-compose (v1, Debian's) reads the file as a user's `cp .env.example .env` has it."""
    assert shutil.which("docker-compose"), "scripts/test-deps installs docker-compose (as root)"
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    result = run("docker-compose", "--project-directory", str(ROOT), "--file", str(ROOT / name),
                 "--env-file", str(tmp_path / ".env"), *profiles, "config", check=False)
    assert result.returncode == 0 and "WARNING" not in result.stderr, result.stderr
