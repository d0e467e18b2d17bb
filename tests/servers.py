"""Real processes for end-to-end tests: the proxy under gunicorn, and pip/uv as clients."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_environ() -> dict[str, str]:
    """The machine's environment without our settings or pip's global configuration."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYPI_", "PIP_", "UV_"))}
    env["PIP_CONFIG_FILE"] = os.devnull
    return env


def stop_group(process: subprocess.Popen | None, timeout: float = 15) -> None:
    """SIGTERM a process started with start_new_session=True and all its children (gunicorn's
    workers), SIGKILL if they have not left after `timeout` seconds."""
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


class Proxy:
    """pypicache under real gunicorn (gunicorn.conf.py, several gthread workers)."""

    def __init__(self, cache_dir: Path, upstream_env: dict[str, str], workers: int = 3, **env: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cache_dir = cache_dir
        self.workers = workers
        self.env = clean_environ() | upstream_env | {
            "PYPI_CACHE_DIR": str(cache_dir),
            "PYPI_BIND": f"127.0.0.1:{self.port}",
            "PYPI_WORKERS": str(workers),
            "PYPI_READ_TIMEOUT": "10",
        } | env
        self.process: subprocess.Popen | None = None
        self.log = cache_dir.parent / f"gunicorn-{self.port}.log"

    def start(self) -> "Proxy":
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"],
                cwd=ROOT, env=self.env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if requests.get(self.url + "/healthz", timeout=1).ok and len(self.worker_pids()) == self.workers:
                    return self
            except (requests.ConnectionError, requests.Timeout):  # a busy machine: ask again
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"gunicorn did not start: {self.log.read_text()[-3000:]}")

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True)
        return [int(pid) for pid in out.stdout.split()]

    def stop(self) -> None:
        stop_group(self.process)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


def pip_install(index_url: str, target: Path, *args: str) -> subprocess.CompletedProcess:
    """Real pip, isolated from this machine's global pip configuration."""
    command = [
        sys.executable, "-m", "pip", "install", "--isolated", "--no-cache-dir",
        "--disable-pip-version-check", "--index-url", index_url, "--target", str(target), *args,
    ]
    return subprocess.run(command, env=clean_environ(), capture_output=True, text=True, timeout=300)


def uv_install(index_url: str, target: Path, cache: Path, *args: str) -> subprocess.CompletedProcess:
    """Real uv, with its own cache and without any uv.toml or pip configuration."""
    command = [str(Path(sys.executable).with_name("uv")), "pip", "install", "--no-config",
               "--cache-dir", str(cache), "--index-url", index_url, "--python", sys.executable,
               "--target", str(target), *args]
    return subprocess.run(command, env=clean_environ(), capture_output=True, text=True, timeout=300)


def add_chain(up) -> dict:
    """A small dependency chain of real wheels: alpha -> beta -> gamma (filename -> File)."""
    files = [
        up.add_wheel("alpha", "1.0", requires=["beta>=1"]),
        up.add_wheel("beta", "1.0", requires=["gamma"]),
        up.add_wheel("gamma", "1.0", requires_python=">=3.8"),
        up.add_wheel("gamma", "2.0", requires_python=">=4"),  # never chosen: requires-python
        up.add_file("gamma", "gamma-0.5.tar.gz", b"old sdist", yanked="broken"),
    ]
    return {f.filename: f for f in files}


def installed(target: Path) -> dict[str, str]:
    """name -> version of what pip or uv put in a --target directory."""
    return dict(p.name.removesuffix(".dist-info").split("-") for p in target.glob("*.dist-info"))


class Front:
    """The shipped nginx front (docker/nginx/start, Debian's nginx) before a running Proxy."""

    def __init__(self, proxy: Proxy, **env: str):
        self.proxy, self.extra_env = proxy, env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.directory = proxy.cache_dir.parent / f"nginx-{self.port}"
        self.log = proxy.cache_dir.parent / f"nginx-{self.port}.log"
        # The answers to logins stay in memory (the start script refuses a disk): one
        # directory per front, removed when it stops.
        self.logins = Path("/dev/shm") / f"pypicache-test-logins-{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> "Front":
        env = clean_environ() | {
            "PYPI_CACHE_DIR": str(self.proxy.cache_dir),
            "PYPICACHE_APP": f"127.0.0.1:{self.proxy.port}",
            "PYPICACHE_LISTEN": f"127.0.0.1:{self.port}",
            "PYPICACHE_FRONT_DIR": str(self.directory),
            "PYPICACHE_LOGIN_DIR": str(self.logins),
        } | self.extra_env
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                ["sh", str(ROOT / "docker" / "nginx" / "start")],
                env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if requests.get(self.url + "/healthz", timeout=1).ok:
                    return self
            except (requests.ConnectionError, requests.Timeout):
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nginx did not start: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        stop_group(self.process)
        shutil.rmtree(self.logins, ignore_errors=True)
