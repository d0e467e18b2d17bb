"""The servers compared: pypicache, proxpi, devpi-server; nginx and a bare Flask app as limits."""

from __future__ import annotations

import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin

import requests

from pypicache.config import TABLE
from tests.servers import ROOT, Front, Proxy, clean_environ, free_port

from .procs import VENVS, children, cpu_seconds, spawn, stop, wait_http


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.hrefs += [v for k, v in attrs if k == "href" and v]


class Server:
    """A package index on 127.0.0.1: its simple URL, and its file URLs read from its pages."""

    name = "?"
    pids: list[int] = []
    login: tuple[str, str] | None = None  # (user, password) for a server that asks

    def __init__(self, simple: str):
        self.simple = simple.rstrip("/") + "/"

    def page_url(self, project: str) -> str:
        return f"{self.simple}{project}/"

    def file_url(self, project: str, filename: str) -> str:
        page = self.page_url(project)
        parser = _Links()
        parser.feed(requests.get(page, auth=self.login, timeout=120).text)
        for href in parser.hrefs:
            url = urljoin(page, href).split("#", 1)[0]
            if url.rsplit("/", 1)[-1] == filename:
                return url
        raise LookupError(f"{self.name}: no link to {filename} on {page}")

    def worker_pids(self) -> list[int]:
        return self.pids

    def all_pids(self) -> list[int]:
        """Every process of the server (a master too), for its CPU time."""
        proc = getattr(self, "proc", None) or getattr(getattr(self, "proxy", None), "process", None)
        return sorted({*self.worker_pids(), *([proc.pid] if proc else [])})


class Pypicache(Server):
    name = "pypicache"

    def __init__(self, out: Path, upstream_env: dict[str, str], directory: str = "pypicache",
                 **env: str):
        # The product's defaults: an empty variable means "default" (README), so the test
        # helper's own choices (workers, read timeout) are blanked here.
        workers = int(TABLE["workers"][2])
        self.proxy = Proxy(
            out / directory / "cache",
            upstream_env,
            workers=workers,
            **({"PYPI_WORKERS": "", "PYPI_READ_TIMEOUT": ""} | env),
        ).start()
        self.workers = workers
        super().__init__(self.proxy.url + "/simple/")
        settle(self.worker_pids())

    def worker_pids(self) -> list[int]:
        return self.proxy.worker_pids()

    def stop(self) -> None:
        self.proxy.stop()


def settle(pids: list[int], quiet: float = 0.5, timeout: float = 30) -> None:
    """Wait until every worker has built its app: gunicorn forks them all at once and each
    imports the app on its own, so the first answers /healthz while the others still take a
    second of CPU on two cores, which a cold run measured at once was charged with. Built,
    a worker is idle: its CPU time stays the same for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    last = {pid: cpu_seconds([pid]) for pid in pids}
    since = {pid: time.monotonic() for pid in pids}
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = time.monotonic()
        for pid in pids:
            used = cpu_seconds([pid])
            if used != last[pid]:
                last[pid], since[pid] = used, now
        if all(now - since[pid] >= quiet for pid in pids):
            return


class PypicacheFront(Server):
    """The same pypicache (its gunicorn and cache) behind its nginx front, docker/nginx/."""

    name = "pypicache front"

    def __init__(self, app: Pypicache, **env: str):
        self.app, self.login = app, app.login
        self.front = Front(app.proxy, **env).start()
        self.proc = self.front.process  # the start script execs nginx: its master
        super().__init__(self.front.url + "/simple/")

    def worker_pids(self) -> list[int]:
        return children(self.proc.pid) + self.app.worker_pids()

    def stop(self) -> None:
        self.front.stop()


class Proxpi(Server):
    """proxpi as its Docker image runs it: gunicorn --preload, one worker, 2 threads."""

    name = "proxpi"

    def __init__(self, out: Path, index_url: str):
        port, log = free_port(), out / "logs" / "proxpi.log"
        env = clean_environ() | {
            "PROXPI_INDEX_URL": index_url + "/",
            "PROXPI_CACHE_DIR": str(out / "proxpi"),
        }
        self.proc = spawn(
            [
                str(VENVS / "proxpi/bin/gunicorn"),
                "--preload",
                "--no-control-socket",
                "--access-logfile",
                "-",
                "--bind",
                f"127.0.0.1:{port}",
                "--threads",
                "2",
                "proxpi.server:app",
            ],
            log,
            env=env,
            cwd=out,
        )
        wait_http(f"http://127.0.0.1:{port}/health", self.proc, log)
        super().__init__(f"http://127.0.0.1:{port}/index/")

    def worker_pids(self) -> list[int]:
        return children(self.proc.pid)


class Devpi(Server):
    """devpi-server with its defaults (waitress, 50 threads), root/pypi mirroring our upstream.

    --enable-core-metadata is on so that it answers the `.metadata` requests pip makes.
    """

    name = "devpi"

    def __init__(self, out: Path, index_url: str):
        port, log, bin_ = free_port(), out / "logs" / "devpi.log", VENVS / "devpi/bin"
        serverdir, env = (
            out / "devpi",
            clean_environ() | {"DEVPI_CLIENTDIR": str(out / "devpi-client")},
        )
        subprocess.run(
            [str(bin_ / "devpi-init"), "--serverdir", str(serverdir), "--no-root-pypi"],
            check=True,
            capture_output=True,
            env=env,
        )
        self.proc = spawn(
            [
                str(bin_ / "devpi-server"),
                "--serverdir",
                str(serverdir),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--enable-core-metadata",
            ],
            log,
            env=env,
            cwd=out,
        )
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/+api", self.proc, log)
        for args in (
            ["use", url],
            ["login", "root", "--password", ""],
            ["index", "-c", "root/pypi", "type=mirror", f"mirror_url={index_url}/"],
        ):
            subprocess.run(
                [str(bin_ / "devpi"), *args], check=True, capture_output=True, env=env, cwd=out
            )
        super().__init__(f"{url}/root/pypi/+simple/")
        self.pids = [self.proc.pid]


def fresh(out: Path, upstream_env: dict, index_url: str, peers, skipped: list, label: str) -> dict:
    """A new pypicache (empty cache), and new proxpi and devpi-server of `peers`, before one
    upstream: name -> Server. A peer that does not start is noted in `skipped` under `label`."""
    started = {"pypicache": Pypicache(out, upstream_env)}
    for name, cls in (("proxpi", Proxpi), ("devpi", Devpi)):
        if name in peers:
            try:
                started[name] = cls(out, index_url)
            except Exception as error:  # a peer that does not start must not hide the rest
                skipped.append(f"{label}: {name} did not start: {error}")
    return started


def stop_fresh(started: dict) -> None:
    for server in started.values():
        if isinstance(server, (Pypicache, PypicacheFront)):
            server.stop()
        else:
            stop(server.proc)


class Static(Server):
    """nginx or the bare Flask app: the same bytes from disk, at /files/<name> and /pages/<name>."""

    def __init__(self, name: str, url: str, proc: subprocess.Popen):
        self.name, self.base, self.proc = name, url, proc
        super().__init__(url + "/pages/")

    def page_url(self, project: str) -> str:
        return f"{self.base}/pages/{project}.json"

    def file_url(self, project: str, filename: str) -> str:
        return f"{self.base}/files/{filename}"

    def worker_pids(self) -> list[int]:
        return children(self.proc.pid)


NGINX_CONF = """daemon off; worker_processes auto; pid {d}/nginx.pid; error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off; sendfile on; tcp_nopush on; keepalive_requests 1000000;
  default_type application/octet-stream; types {{ application/vnd.pypi.simple.v1+json json; }}
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  server {{
    listen 127.0.0.1:{port};
    location /files/ {{ alias {files}/; }}
    location /pages/ {{ alias {pages}/; }}
  }}
}}
"""


def start_nginx(out: Path, files: Path, pages: Path) -> Static:
    directory, port = out / "nginx", free_port()
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "nginx.conf"
    conf.write_text(NGINX_CONF.format(d=directory, port=port, files=files, pages=pages))
    log = out / "logs" / "nginx.log"
    proc = spawn(["nginx", "-c", str(conf), "-p", str(directory)], log)
    wait_http(f"http://127.0.0.1:{port}/", proc, log)
    return Static("nginx", f"http://127.0.0.1:{port}", proc)


def start_bare(out: Path, files: Path, pages: Path, workers: int, threads: int) -> Static:
    """bench/bareapp.py under gunicorn with pypicache's worker class, workers and threads."""
    port, log = free_port(), out / "logs" / "bare.log"
    env = clean_environ() | {"BARE_FILES": str(files), "BARE_PAGES": str(pages)}
    proc = spawn(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--no-control-socket",
            "--config",  # not ./gunicorn.conf.py, pypicache's own hooks
            "/dev/null",
            "--worker-class",
            "gthread",
            "--workers",
            str(workers),
            "--threads",
            str(threads),
            "--bind",
            f"127.0.0.1:{port}",
            "--keep-alive",
            "15",
            "bench.bareapp:app",
        ],
        log,
        env=env,
        cwd=ROOT,
    )
    wait_http(f"http://127.0.0.1:{port}/files/", proc, log)
    return Static("bare Flask", f"http://127.0.0.1:{port}", proc)
