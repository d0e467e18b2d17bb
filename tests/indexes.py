"""Index servers other people wrote (nginx, pypiserver, devpi-server), started on 127.0.0.1 the
way their users run them, each serving the dists that build_dists makes."""
from __future__ import annotations

import email
import getpass
import hashlib
import html
import io
import json
import subprocess
import tarfile
import time
from pathlib import Path

import requests
from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename

from .servers import clean_environ, free_port, stop_group
from .toolenvs import tool_bin
from .wheels import make_wheel, metadata_from_wheel, wheel_metadata_text

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
CHAIN = {"alpha": "1.0", "beta": "1.0", "gamma": "1.0"}  # what `install alpha` must give


def make_sdist(name: str, version: str) -> tuple[str, bytes]:
    """A real sdist: <name>-<version>/ with PKG-INFO, pyproject.toml and the package."""
    base = f"{name}-{version}"
    members = {
        f"{base}/PKG-INFO": wheel_metadata_text(name, version),
        f"{base}/pyproject.toml": (b'[build-system]\nrequires = ["setuptools"]\n'
                                   b'build-backend = "setuptools.build_meta"\n'),
        f"{base}/{name}/__init__.py": f'__version__ = "{version}"\n'.encode(),
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for path, data in members.items():
            info = tarfile.TarInfo(path)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    return f"{base}.tar.gz", buf.getvalue()


def build_dists(directory: Path) -> Path:
    """The chain alpha -> beta -> gamma as wheels, and an older gamma as an sdist."""
    directory.mkdir(parents=True, exist_ok=True)
    for filename, data in (
        make_wheel("alpha", "1.0", requires=["beta>=1"]),
        make_wheel("beta", "1.0", requires=["gamma"]),
        make_wheel("gamma", "1.0", requires_python=">=3.8"),
        make_sdist("gamma", "0.5"),
    ):
        (directory / filename).write_bytes(data)
    return directory


def project_of(filename: str) -> str:
    if filename.endswith(".whl"):
        return canonicalize_name(parse_wheel_filename(filename)[0])
    return canonicalize_name(parse_sdist_filename(filename)[0])


def _wait(url: str, process: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            requests.get(url, timeout=2)
            return
        except requests.RequestException:
            time.sleep(0.1)
    stop_group(process)
    tail = log.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"{process.args[0]} did not answer {url}: {tail}")


def _spawn(command: list[str], log: Path, **kwargs) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, **kwargs)


class Index:
    """A running index server: `simple` is its simple URL (no trailing slash), `package_loc`
    where it keeps its files when that is not the default /packages."""

    def __init__(self, name: str, simple: str, process: subprocess.Popen, log: Path,
                 package_loc: str | None = None, access_log: Path | None = None):
        self.name, self.simple, self.package_loc = name, simple, package_loc
        self.process, self.log, self.access_log = process, log, access_log

    def env(self) -> dict[str, str]:
        """The settings a user of this server gives pypicache, and no more."""
        return {"PYPI_MIRROR_URL": self.simple} | (
            {"PYPI_PACKAGE_LOC": self.package_loc} if self.package_loc else {})

    def stop(self) -> None:
        stop_group(self.process)


# --- nginx: a static mirror tree -------------------------------------------------------------
NGINX_CONF = """user {user}; daemon off; worker_processes 1; pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 256; }}
http {{
  include /etc/nginx/mime.types;
  types {{ {json} v1_json; }}
  default_type application/octet-stream;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  log_format mirror '$request_uri $status "$http_user_agent" "$http_accept_encoding" '
                    'encoding=$sent_http_content_encoding type=$sent_http_content_type';
  access_log {d}/access.log mirror;
  # What TUNA, USTC and the bandersnatch docs set: pages gzipped, ETag and Last-Modified on.
  gzip on;
  gzip_vary on;
  gzip_types {json} application/json;
  # The PEP 691 variant chosen from Accept, as the bandersnatch docs show.
  map $http_accept $simple_index {{
    default index.html;
    "~*application/vnd\\.pypi\\.simple\\.v1\\+json" index.v1_json;
  }}
  server {{
    listen 127.0.0.1:{port};
    root {tree};
    location /simple/ {{
      index $simple_index;
      add_header Vary Accept;
    }}
  }}
}}
"""


def _mirror_tree(tree: Path, dists: Path, links: str) -> None:
    """simple/ and packages/ as bandersnatch writes them; file links `relative` (../../packages/..)
    or `root` (/packages/...); wheels get their .metadata (PEP 658); the sdist is yanked."""
    projects: dict[str, list[dict]] = {}
    for dist in sorted(dists.iterdir()):
        data = dist.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        path = f"packages/{digest[:2]}/{digest[2:4]}/{digest[4:]}/{dist.name}"
        (tree / path).parent.mkdir(parents=True, exist_ok=True)
        (tree / path).write_bytes(data)
        entry = {"filename": dist.name, "url": ("../../" if links == "relative" else "/") + path,
                 "hashes": {"sha256": digest}, "size": len(data)}
        metadata = metadata_from_wheel(data)
        if metadata is not None:
            (tree / (path + ".metadata")).write_bytes(metadata)
            entry["core-metadata"] = {"sha256": hashlib.sha256(metadata).hexdigest()}
            entry["data-dist-info-metadata"] = entry["core-metadata"]
            requires_python = email.message_from_bytes(metadata)["Requires-Python"]
            if requires_python:
                entry["requires-python"] = requires_python
        if dist.name.endswith(".tar.gz"):
            entry["yanked"] = "superseded"
        projects.setdefault(project_of(dist.name), []).append(entry)
    for name, files in projects.items():
        directory = tree / "simple" / name
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "index.v1_json").write_text(json.dumps(
            {"meta": {"api-version": "1.1"}, "name": name, "versions": [], "files": files}))
        anchors = []
        for f in files:
            attributes = "".join(
                f' {attr}="{html.escape(value)}"' for attr, value in (
                    ("data-requires-python", f.get("requires-python")),
                    ("data-yanked", f.get("yanked")),
                    ("data-dist-info-metadata", f.get("core-metadata") and
                     "sha256=" + f["core-metadata"]["sha256"]),
                    ("data-core-metadata", f.get("core-metadata") and
                     "sha256=" + f["core-metadata"]["sha256"]),
                ) if value)
            href = f"{f['url']}#sha256={f['hashes']['sha256']}"
            anchors.append(f'    <a href="{href}"{attributes}>{f["filename"]}</a><br/>\n')
        (directory / "index.html").write_text(
            f'<!DOCTYPE html>\n<html>\n  <head>\n    <meta name="pypi:repository-version" '
            f'content="1.0">\n    <title>Links for {name}</title>\n  </head>\n  <body>\n'
            f'    <h1>Links for {name}</h1>\n{"".join(anchors)}  </body>\n</html>\n')
    (tree / "simple" / "index.html").write_text("<!DOCTYPE html>\n<html><body>\n" + "".join(
        f'<a href="{n}/">{n}</a><br/>\n' for n in sorted(projects)) + "</body></html>\n")
    (tree / "simple" / "index.v1_json").write_text(json.dumps(
        {"meta": {"api-version": "1.0"}, "projects": [{"name": n} for n in sorted(projects)]}))


def start_nginx(work: Path, dists: Path, links: str = "relative") -> Index:
    """Debian's nginx as an unprivileged server with its own prefix, config and logs."""
    tree, directory, port = work / "tree", work / "nginx", free_port()
    directory.mkdir(parents=True, exist_ok=True)
    _mirror_tree(tree, dists, links)
    # nginx's workers drop to `user` when started as root: the same user keeps tmp readable.
    (directory / "nginx.conf").write_text(NGINX_CONF.format(
        user=getpass.getuser(), d=directory, port=port, tree=tree, json=JSON_TYPE))
    log = directory / "nginx.out"
    command = ["/usr/sbin/nginx", "-p", str(directory), "-c", str(directory / "nginx.conf"),
               "-e", str(directory / "error.log")]
    process = _spawn(command, log, env=clean_environ())
    origin = f"http://127.0.0.1:{port}"
    _wait(origin + "/simple/", process, log)
    return Index(f"nginx-{links}", origin + "/simple", process, log,
                 access_log=directory / "access.log")


# --- pypiserver ------------------------------------------------------------------------------
def start_pypiserver(work: Path, dists: Path) -> Index:
    """`pypi-server run` on a directory of packages; no fallback redirect to the public index."""
    port, log = free_port(), work / "pypiserver.log"
    command = [str(tool_bin("pypiserver") / "pypi-server"), "run", "--host", "127.0.0.1",
               "--port", str(port), "--disable-fallback", str(dists)]
    process = _spawn(command, log, env=clean_environ())
    origin = f"http://127.0.0.1:{port}"
    _wait(origin + "/health", process, log)
    return Index("pypiserver", origin + "/simple", process, log)


# --- devpi-server ----------------------------------------------------------------------------
def start_devpi(work: Path, dists: Path | None = None, mirror_of: str | None = None) -> Index:
    """devpi-init (without its mirror of the public index), devpi-server, then devpi-client:
    root/dev with `dists` uploaded, or root/mirror, `type=mirror` of `mirror_of`."""
    port, log, serverdir = free_port(), work / "devpi.log", work / "devpi-server"
    bin_ = tool_bin("devpi")  # its own venv (tests/toolenvs.py)
    env = clean_environ() | {"DEVPI_CLIENTDIR": str(work / "devpi-client")}
    subprocess.run([str(bin_ / "devpi-init"), "--serverdir", str(serverdir), "--no-root-pypi"],
                   check=True, capture_output=True, env=env, timeout=120)
    command = [str(bin_ / "devpi-server"), "--serverdir", str(serverdir),
               "--host", "127.0.0.1", "--port", str(port)]
    process = _spawn(command, log, env=env)
    origin = f"http://127.0.0.1:{port}"
    # devpi-server takes about 5 s to start on an idle machine and over 40 s on a loaded one.
    _wait(origin + "/+api", process, log, timeout=180)
    if mirror_of:
        index = "root/mirror"
        steps = [["index", "-c", index, "type=mirror", f"mirror_url={mirror_of}/"]]
    else:
        index = "root/dev"
        steps = [["index", "-c", index], ["use", index],
                 ["upload", *map(str, sorted(dists.iterdir()))]]
    for args in [["use", origin], ["login", "root", "--password", ""], *steps]:
        done = subprocess.run([str(bin_ / "devpi"), *args], capture_output=True, text=True,
                              env=env, cwd=work, timeout=120)
        if done.returncode:
            stop_group(process)
            output = done.stdout[-1500:] + done.stderr[-1500:]
            raise RuntimeError(f"devpi {' '.join(args)}: {output}")
    name = "devpi-mirror" if mirror_of else "devpi"
    return Index(name, f"{origin}/{index}/+simple", process, log, package_loc=f"/{index}/+f")
