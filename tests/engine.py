"""A real Docker engine for the deployment tests (tests/test_docker.py, tests/test_swarm.py).

Image registries are out of reach, so the base images are stand-ins made here from Debian's
packages (mmdebstrap, then `docker import`) and passed as the Dockerfiles' build arguments;
only image builds reach the package registries. The upstream is the suite's fixture index, in
a container on a network the test made: nothing at test time reaches the internet.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The stand-in for the official python image: Debian 12's python3 with venv and pip. This
# machine's egress to the package registries needs its CA bundle, so the stand-in carries it
# and points pip, requests and npm at it (the official images need none of this).
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
MMDEBSTRAP = [
    "mmdebstrap", "--variant=minbase",
    "--include=python3,python3-venv,python3-pip,ca-certificates,passwd",
    # As on this machine's own apt: the archive's Valid-Until may not match its clock.
    "--aptopt=Acquire::Check-Valid-Until \"false\"", "--aptopt=Acquire::Check-Date \"false\"",
    f"--customize-hook=copy-in {CA_BUNDLE} /etc/ssl/certs",
    "bookworm", "-", "http://deb.debian.org/debian",
]
IMPORT_CHANGES = [
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    f"ENV SSL_CERT_FILE={CA_BUNDLE} PIP_CERT={CA_BUNDLE} REQUESTS_CA_BUNDLE={CA_BUNDLE}"
    f" NODE_EXTRA_CA_CERTS={CA_BUNDLE}",
    'CMD ["python3"]',
]

# The fixture upstream, run from this checkout's tests/ inside the pypicache image, bound to
# the container's address on the network instead of 127.0.0.1.
UPSTREAM_SCRIPT = """
import json, sys, threading
from tests import fixture_upstream
from tests.wheels import make_wheel

class OnTheNetwork(fixture_upstream._Server):
    def __init__(self, address, upstream, role):
        super().__init__(("0.0.0.0", 8000), upstream, role)

fixture_upstream._Server = OnTheNetwork
stack, throttle = json.loads(sys.argv[1])
up = fixture_upstream.Upstream("/tmp/upstream", layout="relative", throttle=throttle)
for name, version, requires, payload in stack:
    filename, data = make_wheel(name, version, requires, payload=payload)
    up.add_file(name, filename, data)
up.start()
print("serving", flush=True)
threading.Event().wait()
"""


def run(*argv: str, timeout: float = 600, check: bool = True,
        **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(argv[:6])} ... exited {result.returncode}:\n"
                    f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def docker(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    return run("docker", *argv, **kwargs)


def engine_answers() -> bool:
    return docker("info", check=False, timeout=30).returncode == 0


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """A running dockerd: this machine's, or one started here (and stopped at the end)."""
    missing = [tool for tool in ("docker", "dockerd", "docker-compose", "mmdebstrap")
               if not shutil.which(tool)]
    assert not missing, f"{missing} missing: scripts/test-deps installs them (as root)"
    daemon = None
    if not engine_answers():
        assert os.geteuid() == 0, "no Docker engine runs, and only root may start dockerd"
        log = tmp_path_factory.mktemp("dockerd") / "dockerd.log"
        with open(log, "wb") as out:
            daemon = subprocess.Popen(["dockerd"], stdout=out, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        deadline = time.monotonic() + 60
        while not engine_answers():
            if daemon.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"dockerd did not come up (exit {daemon.poll()}):\n"
                            f"{log.read_text()[-4000:]}")
            time.sleep(1)
    yield
    if daemon is not None:
        daemon.terminate()
        try:
            daemon.wait(60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


def image_exists(tag: str) -> bool:
    return docker("image", "inspect", tag, check=False).returncode == 0


def content_tag(name: str, *parts: object) -> str:
    """A tag that changes with what makes the image: a second run finds it and builds nothing."""
    return f"{name}:{hashlib.sha256(repr(parts).encode()).hexdigest()[:12]}"


def python_standin(log_dir: Path) -> str:
    """The stand-in python image's tag, made (once) if this engine has none yet."""
    python = content_tag("pypicache-standin/python", MMDEBSTRAP, IMPORT_CHANGES,
                         Path(CA_BUNDLE).read_bytes())
    if not image_exists(python):
        log = log_dir / "mmdebstrap.log"
        changes = [arg for change in IMPORT_CHANGES for arg in ("--change", change)]
        with open(log, "wb") as errors:
            debootstrap = subprocess.Popen(MMDEBSTRAP, stdout=subprocess.PIPE, stderr=errors)
            with debootstrap.stdout:
                imported = subprocess.run(["docker", "import", *changes, "-", python],
                                          stdin=debootstrap.stdout, capture_output=True,
                                          timeout=900)
        assert debootstrap.wait() == 0 and imported.returncode == 0, (
            log.read_text()[-3000:] + imported.stderr.decode())
    return python


def start_upstream(name: str, network: str, stack: list, throttle: int | None,
                   *options: str, image: str = "pypicache") -> None:
    """The fixture upstream serving `stack` as container `name` on `network`, port 8000."""
    docker("run", "--detach", "--name", name, "--network", network, "--user", "10001", *options,
           "--volume", f"{ROOT / 'tests'}:/srv/pypicache/app/tests:ro", "--entrypoint", "python",
           image, "-c", UPSTREAM_SCRIPT, json.dumps([stack, throttle]))
    deadline = time.monotonic() + 60
    while "serving" not in docker("logs", name).stdout:
        assert time.monotonic() < deadline, docker("logs", name).stderr
        time.sleep(0.5)
