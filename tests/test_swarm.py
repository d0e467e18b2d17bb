"""The Docker Swarm stack (docker/swarm/pypicache-stack.yml) deployed on a real engine.

Three replicas of the pypicache image share moto's S3 server (docker/moto/, in the stack);
the fixture upstream runs in a container on the stack's network. pip in client containers
installs a small stack of packages: cold through the swarm's load balancing, then warm through
it and through each replica directly (every file from the cache, none from the upstream again),
then a second set while the busiest replica is stopped: no install fails.

The swarm's virtual IPs and its routing mesh are made by the kernel's IPVS. Where the kernel
has none (/proc/sys/net/ipv4/vs missing, as on the machines this suite runs on), the stack is
deployed with its services in `endpoint_mode: dnsrr` and no published port: the swarm's DNS
then balances the clients over the replicas' own addresses. Everything else is the file as
shipped. Engine, stand-in images and the upstream container: tests/engine.py.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.engine import (  # noqa: F401  (engine: a fixture)
    ROOT,
    docker,
    engine,
    image_exists,
    python_standin,
    run,
    start_upstream,
)

STACK_FILE = ROOT / "docker" / "swarm" / "pypicache-stack.yml"
STACK = "pypicacheswarm"  # its services, network, volumes: pypicacheswarm_*
SERVICE, NETWORK = f"{STACK}_pypicache", f"{STACK}_cache"
SECRETS = STACK  # the stack's PYPI_SECRETS: pypicacheswarm_cluster_secret, ...
UPSTREAM = f"{STACK}-upstream"
IMAGES = {"pypicache": f"{STACK}/pypicache:test", "moto": f"{STACK}/moto:test"}
MESH = Path("/proc/sys/net/ipv4/vs").is_dir()

# Installed first cold, then warm; the second set while a replica goes away. The upstream sends
# each file at 1 MB/s, so that downloads are in flight when the replica is stopped.
FIRST = [
    ("swarmstack", "1.0", ["swarmarray", "swarmframe>=2"], 0),
    ("swarmarray", "1.26.0", [], 2 << 20),
    ("swarmframe", "2.2.0", ["swarmarray", "swarmtz"], 1 << 20),
    ("swarmtz", "2024.1", [], 256 << 10),
]
SECOND = [
    ("swarmapp", "1.0", ["swarmlib", "swarmplot"], 0),
    ("swarmlib", "2.0", [], 3 << 20),
    ("swarmplot", "3.8.0", ["swarmcolor"], 2 << 20),
    ("swarmcolor", "0.4.6", [], 512 << 10),
]
THROTTLE = 1 << 20



def wheels(packages: list) -> list[str]:
    return [f"{name}-{version}-py3-none-any.whl" for name, version, _, _ in packages]


def deployed_file(tmp_path: Path) -> Path:
    """The stack file as shipped, or without IPVS its services in dnsrr mode, unpublished."""
    if MESH:
        return STACK_FILE
    stack = yaml.safe_load(STACK_FILE.read_text())
    for service in stack["services"].values():
        service["deploy"]["endpoint_mode"] = "dnsrr"
        service.pop("ports", None)
    path = tmp_path / "pypicache-stack.dnsrr.yml"
    path.write_text(yaml.safe_dump(stack, sort_keys=False))
    return path


# ---- the swarm and the stack -----------------------------------------------------------------

class Swarm:
    def __init__(self, port: int, standin: str):
        self.port, self.standin = port, standin

    def tasks(self) -> list[str]:
        """The names of the service's task containers that run (a task name is its address)."""
        return docker("ps", "--filter", f"label=com.docker.swarm.service.name={SERVICE}",
                      "--format", "{{.Names}}").stdout.split()

    def wait_converged(self, replicas: int = 3, limit: float = 180) -> list[str]:
        """Every task of both services running and healthy; the pypicache tasks."""
        deadline = time.monotonic() + limit
        while True:
            tasks = self.tasks()
            health = [docker("inspect", "--format", "{{.State.Health.Status}}", name,
                             check=False).stdout.strip() for name in tasks]
            s3 = docker("service", "ls", "--filter", f"name={STACK}_s3", "--format",
                        "{{.Replicas}}").stdout.strip()
            if health == ["healthy"] * replicas and s3 == "1/1":
                return tasks
            if time.monotonic() > deadline:
                logs = docker("service", "logs", "--tail", "30", SERVICE, check=False)
                pytest.fail(f"not converged in {limit} s: {health} s3 {s3}\n{logs.stdout}"
                            f"{logs.stderr}")
            time.sleep(1)

    def logs(self, container: str) -> list[str]:
        return docker("logs", container, check=False).stdout.splitlines()

    def client(self, name: str, package: str, host: str | None = None) -> subprocess.Popen:
        """pip in a new container with no pip cache: through the load balancing, or `host`."""
        if host is None and MESH:
            network, url = ["--network", "host"], f"http://127.0.0.1:{self.port}"
        else:
            network, url = ["--network", NETWORK], f"http://{host or 'pypicache'}"
        argv = ["docker", "run", "--rm", "--name", name, *network, self.standin, "python3",
                "-m", "pip", "install", "--no-cache-dir", "--disable-pip-version-check",
                "--target", "/tmp/site", "--index-url", f"{url}/simple",
                "--trusted-host", url.split("//")[1].split(":")[0], package]
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def upstream_stats(self) -> dict:
        ask = f"print(urllib.request.urlopen('http://{UPSTREAM}:8000/_stats').read().decode())"
        return json.loads(docker("exec", UPSTREAM, "python", "-c",
                                 f"import urllib.request; {ask}").stdout)


def served(lines: list[str], filename: str) -> list[str]:
    """X-Cache of each client GET of `filename` in a replica's access log (not node-to-node)."""
    return [match[1] for line in lines
            if '"GET ' in line and f"/{filename} " in line and "/-/node/" not in line
            for match in [re.search(r'" 200 \S+ (\S+) \d+ms$', line)] if match]


def installs(clients: dict[str, subprocess.Popen], packages: list) -> None:
    """Every client exited 0 having installed exactly `packages`."""
    expected = sorted(f"{name}-{version}" for name, version, _, _ in packages)
    for name, client in clients.items():
        output = client.communicate(timeout=300)[0]
        assert client.returncode == 0, f"{name}:\n{output}"
        line = next(line for line in output.splitlines() if "Successfully installed" in line)
        assert sorted(line.split()[2:]) == expected, f"{name}:\n{output}"


def remove_stack(tasks_gone: float = 90) -> None:
    docker("rm", "--force", UPSTREAM, check=False)
    docker("stack", "rm", STACK, check=False)
    deadline = time.monotonic() + tasks_gone
    label = f"label=com.docker.stack.namespace={STACK}"
    while docker("ps", "--all", "--quiet", "--filter", label).stdout.strip():
        if time.monotonic() > deadline:
            break
        time.sleep(1)
    docker("network", "rm", NETWORK, check=False)
    docker("volume", "rm", *(f"{SERVICE}-cache-{slot}" for slot in (1, 2, 3, 4)), check=False)
    docker("secret", "rm", f"{SECRETS}_cluster_secret", f"{SECRETS}_s3_credentials", check=False)


@pytest.fixture(scope="module")
def swarm(engine, tmp_path_factory):
    """The stack deployed on this engine's swarm (initialised here if it had none)."""
    from tests.servers import free_port

    state = docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()
    initialised = state == "inactive"
    if initialised:
        # swarm init makes docker_gwbridge too, which leaving keeps: removed then if made here.
        gwbridge = docker("network", "inspect", "docker_gwbridge", check=False).returncode == 0
        docker("swarm", "init", "--advertise-addr", "127.0.0.1")
    built, figures = [], {}
    try:
        remove_stack()
        started = time.monotonic()
        standin = python_standin(tmp_path_factory.mktemp("mmdebstrap"))
        for key, context in (("pypicache", ROOT), ("moto", ROOT / "docker" / "moto")):
            built += [] if image_exists(IMAGES[key]) else [IMAGES[key]]
            docker("build", "--build-arg", f"PYTHON_IMAGE={standin}", "-t", IMAGES[key],
                   str(context), timeout=900)
        figures["build_s"] = round(time.monotonic() - started, 1)
        keys = ("[default]\naws_access_key_id = swarm\n"
                f"aws_secret_access_key = {secrets.token_hex(16)}\n")
        for name, value in (("cluster_secret", secrets.token_hex(32)), ("s3_credentials", keys)):
            docker("secret", "create", f"{SECRETS}_{name}", "-", input=value)
        port = free_port()
        env = {key: value for key, value in os.environ.items()
               if not key.startswith(("AWS_", "PYPI_"))}
        env.update(PYPICACHE_IMAGE=IMAGES["pypicache"], MOTO_IMAGE=IMAGES["moto"],
                   PYPI_SECRETS=SECRETS, PYPI_PUBLISH_PORT=str(port),
                   PYPI_MIRROR_URL=f"http://{UPSTREAM}:8000/pypi/web/simple",
                   PYPI_PACKAGE_LOC="/pypi/web/packages")
        started = time.monotonic()
        run("docker", "stack", "deploy", "--resolve-image", "never", "--compose-file",
            str(deployed_file(tmp_path_factory.mktemp("stack"))), STACK, env=env)
        start_upstream(UPSTREAM, NETWORK, FIRST + SECOND, THROTTLE, image=IMAGES["pypicache"])
        deployment = Swarm(port, standin)
        deployment.wait_converged()
        figures["up_s"] = round(time.monotonic() - started, 1)
        yield deployment, figures
    finally:
        print(f"\nswarm figures (mesh: {MESH}): {json.dumps(figures)}", file=sys.stderr)
        remove_stack()
        if built:
            docker("image", "rm", *built, check=False)
        if initialised:
            docker("swarm", "leave", "--force", check=False)
            if not gwbridge:
                docker("network", "rm", "docker_gwbridge", check=False)


# ---- the tests -------------------------------------------------------------------------------

def test_the_stack_file_is_valid_against_the_compose_specification():
    from tests.test_deploy import schema_errors

    stack = yaml.safe_load(STACK_FILE.read_text())
    assert schema_errors(stack) == []
    service = stack["services"]["pypicache"]
    assert service["environment"]["PYPI_NODE_URL"] == "http://{{.Task.Name}}:80"
    assert service["deploy"]["replicas"] == 3
    files = {f"/run/secrets/{secret['target']}" for secret in service["secrets"]}
    assert {service["environment"][name] for name in (
        "PYPI_CLUSTER_SECRET_FILE", "AWS_SHARED_CREDENTIALS_FILE")} == files


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_three_replicas_install_once_serve_from_the_cache_and_survive_a_removal(swarm):
    swarm, figures = swarm
    tasks = swarm.tasks()
    # Each task's own address, as the others reach its gunicorn: its name on the network.
    for task in tasks:
        node_url = docker("exec", task, "printenv", "PYPI_NODE_URL").stdout.strip()
        assert node_url == f"http://{task}:80"
        # Started once the store answered (pypicache-wait-for-store): its writes were checked.
        assert "could not check" not in docker("logs", task).stderr
    # The secret is a file of the swarm's, never in the environment.
    environment = docker("exec", tasks[0], "env").stdout.splitlines()
    assert not [line for line in environment if line.startswith("PYPI_CLUSTER_SECRET=")]

    # Cold, through the load balancing: each file once from the upstream, by some replica.
    started = time.monotonic()
    installs({"cold": swarm.client(f"{STACK}-cold", "swarmstack")}, FIRST)
    figures["cold_install_s"] = round(time.monotonic() - started, 1)
    assert swarm.upstream_stats()["downloads"] == dict.fromkeys(wheels(FIRST), 1)
    before = {task: len(swarm.logs(task)) for task in tasks}

    # Warm, new clients: one through the load balancing, one at each replica directly.
    started = time.monotonic()
    clients = {"warm": swarm.client(f"{STACK}-warm", "swarmstack")}
    clients.update({task: swarm.client(f"{STACK}-warm-{slot}", "swarmstack", host=task)
                    for slot, task in enumerate(tasks)})
    installs(clients, FIRST)
    figures["warm_installs_s"] = round(time.monotonic() - started, 1)
    assert swarm.upstream_stats()["downloads"] == dict.fromkeys(wheels(FIRST), 1)
    answers = {task: swarm.logs(task)[before[task]:] for task in tasks}
    for task, lines in answers.items():
        for wheel in wheels(FIRST):
            states = served(lines, wheel)
            # The replica that downloaded it has it on disk; the others read the bucket.
            assert states and set(states) <= {"hit", "bucket"}, (task, wheel, states)
    figures["warm_x_cache"] = sorted({s for lines in answers.values()
                                      for w in wheels(FIRST) for s in served(lines, w)})

    # The second set by four clients at once; the replica that answered most of them so far
    # is stopped (SIGTERM: gunicorn finishes what it sends) while they install.
    before = {task: len(swarm.logs(task)) for task in tasks}
    started = time.monotonic()
    clients = {f"during-{i}": swarm.client(f"{STACK}-during-{i}", "swarmapp") for i in range(4)}
    deadline = time.monotonic() + 60
    while True:
        asked = {task: sum('"GET ' in line for line in swarm.logs(task)[before[task]:])
                 for task in tasks}
        busiest = max(asked, key=asked.get)
        if asked[busiest] >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert asked[busiest], "no replica answered the clients in 60 s"
    docker("stop", "--time", "35", busiest)
    figures["stopped_after_s"] = round(time.monotonic() - started, 1)
    installs(clients, SECOND)
    figures["installs_during_removal_s"] = round(time.monotonic() - started, 1)
    downloads = swarm.upstream_stats()["downloads"]
    figures["second_set_downloads"] = {w: downloads.get(w, 0) for w in wheels(SECOND)}
    peer_reads = sum("/-/node/files/" in line
                     for task in tasks for line in swarm.logs(task)[before[task]:])
    figures["node_to_node_reads"] = peer_reads
    # Each file once from the upstream: the stopped replica finishes its own downloads
    # (graceful), yet takes no connection from then on; a node that asks it for a download in
    # flight after the stop cannot read it, and copies the file from the bucket once the
    # stopped replica has put it there (pypicache/cluster.py, _elsewhere).
    refused = [line for task in tasks for line in docker("logs", task, check=False).stderr
               .splitlines() if re.search(rf"node http://{busiest}:80 did not give ", line)]
    figures["reads_refused_by_the_stopped_replica"] = len(refused)
    assert figures["second_set_downloads"] == dict.fromkeys(wheels(SECOND), 1), refused
    # The swarm replaces the stopped task.
    swarm.wait_converged()
