"""Fixture upstream index on 127.0.0.1 (real HTTP server, stdlib only, plus `packaging`).

layout="absolute": index port serves /simple/..., a second port serves /packages/...;
layout="relative": one port, /pypi/web/simple/... and /pypi/web/packages/... with relative links.
Knobs for a far or narrow upstream: `set_delay(s)` before every answer, `set_bandwidth(rate)` shared
by all file bodies at once (beside `throttle`, per connection); `add_history(project, n)` lists n
files of older releases (big pages, as numpy's or botocore's) that take no disk.
See tests/test_fixture_upstream.py for usage; `python -m tests.fixture_upstream --help` for the CLI.
"""
from __future__ import annotations

import argparse, base64, gzip, hashlib, html, json, re, signal, socket, sys, tempfile, threading, time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename

from tests.wheels import generate_file, make_wheel, metadata_from_wheel, wheel_metadata_text

JSON_T, HTML_T = "application/vnd.pypi.simple.v1+json", "application/vnd.pypi.simple.v1+html"
HTML_HEAD = ('<!DOCTYPE html>\n<html>\n  <head>\n    <meta name="pypi:repository-version" content="1.1">\n'
             "    <title>{t}</title>\n  </head>\n  <body>\n    <h1>{t}</h1>\n")
HTML_TAIL = "  </body>\n</html>\n"


@dataclass
class File:
    project: str
    filename: str
    path: str  # URL path on the file host
    sha256: str
    size: int
    disk_path: Path
    requires_python: str | None = None
    yanked: bool | str | None = None
    upload_time: str | None = None
    metadata_sha256: str | None = None  # sha256 of "<file>.metadata" (wheels only)
    _up: "Upstream" = field(default=None, repr=False, compare=False)
    listed_only: bool = False  # on the page with a hash, but no body (404): add_history
    provenance: bool = False  # PEP 740: the page links its provenance (provenance_document)

    @property
    def url(self) -> str:
        return self._up._files_origin() + self.path


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header takes gzip (`gzip;q=0` refuses it; `*` takes it)."""
    coding = {}
    for part in accept_encoding.split(","):
        name, _, params = part.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        coding[name.strip().lower()] = q
    return coding.get("gzip", coding.get("x-gzip", coding.get("*", 0.0))) > 0


def negotiate(accept: str, formats) -> tuple[str, str] | None:
    """(content-type, "html"|"json") for an Accept header, or None for 406."""
    cands = [(t, f) for t, f in (("text/html", "html"), (HTML_T, "html"), (JSON_T, "json")) if f in formats]
    if not accept.strip():
        return cands[0]
    ranges = []
    for part in accept.split(","):
        bits = [b.strip() for b in part.split(";")]
        q = 1.0
        for p in bits[1:]:
            k, _, v = p.partition("=")
            if k.strip().lower() == "q":
                try:
                    q = float(v)
                except ValueError:
                    q = 0.0
        ranges.append((bits[0].lower(), q))
    best = None
    for t, f in cands:
        spec, q = -1, 0.0
        for mt, mq in ranges:
            s = 2 if mt == t else 1 if mt == t.split("/")[0] + "/*" else 0 if mt == "*/*" else -1
            if s > spec:
                spec, q = s, mq
        if q > 0 and (best is None or q > best[0]):
            best = (q, t, f)
    if best:
        return best[1], best[2]
    return cands[0] if len(set(formats)) == 1 else None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # many proxy workers and benchmark clients connect at once

    def __init__(self, addr, up, role):
        self.up, self.role, self.conns = up, role, set()
        super().__init__(addr, _Handler)

    def process_request(self, request, client_address):
        # As nginx (tcp_nodelay on) and CDNs answer on keep-alive connections: headers and body
        # are two writes here, and without it the body waited for the client's delayed ACK,
        # 40 ms on every answer but a connection's first.
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        self.conns.discard(request)
        super().shutdown_request(request)


class Upstream:
    def __init__(self, root, layout="absolute", formats=("html", "json"), metadata=True, throttle=None,
                 ranges=True, delay=0.0, bandwidth=None, provenance=False, gzip_pages=False):
        assert layout in ("absolute", "relative"), layout
        self.root, self.layout, self.formats = Path(root), layout, tuple(formats)
        self.metadata, self.throttle, self.ranges = metadata, throttle, ranges
        self.provenance = provenance  # files added get a PEP 740 provenance (add_file's default)
        # Project pages gzipped for clients that accept it, as a CDN or nginx's `gzip on` does
        # (Content-Encoding, Vary: Accept-Encoding, a weak ETag); off: every page as it is.
        self.gzip_pages = gzip_pages
        self.delay, self.bandwidth = delay, bandwidth  # see set_delay, set_bandwidth
        self._next_slot = 0.0  # when the shared bandwidth is free again (monotonic)
        self._rendered: dict[str, dict] = {}  # pages with a history: rendered once per change
        (self.root / "files").mkdir(parents=True, exist_ok=True)
        base = "/pypi/web" if layout == "relative" else ""
        self.simple_path, self.package_loc = base + "/simple", base + "/packages"
        self._projects: dict[str, tuple[str, list[File]]] = {}
        self._by_path: dict[str, File] = {}
        self._extra: list[str] = []
        self._big_root = 0
        self._faults: dict[str, str] = {}
        self._project_faults: dict[str, str] = {}
        self._status: dict[str, tuple[str, str | None]] = {}  # PEP 792: set_status
        self._dl: Counter = Counter()  # whole-file GETs
        self._bytes: Counter = Counter()  # body bytes sent per file name (.metadata, ranges too)
        self._written: Counter = Counter()  # of those, written so far by paced whole-file sends
        self.requests: Counter = Counter()
        self._lock = threading.Lock()
        self._ports: list[int] = []
        self._servers: list[_Server] = []
        self._stop = threading.Event()

    # ---- lifecycle ------------------------------------------------------------------
    def start(self) -> "Upstream":
        roles = ["index", "files"] if self.layout == "absolute" else ["both"]
        self._stop = threading.Event()
        ports = self._ports or [0] * len(roles)
        self._servers = [_Server(("127.0.0.1", p), self, r) for p, r in zip(ports, roles)]
        self._ports = [s.server_address[1] for s in self._servers]
        for s in self._servers:
            threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for s in self._servers:
            s.shutdown()
            s.server_close()
            for c in list(s.conns):
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self._servers = []

    def restart(self) -> "Upstream":
        self.stop()
        return self.start()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- URLs -----------------------------------------------------------------------
    def _origin(self, i=0) -> str:
        if not self._ports:
            raise RuntimeError("Upstream not started")
        return f"http://127.0.0.1:{self._ports[i]}"

    def _files_origin(self) -> str:
        return self._origin(1 if self.layout == "absolute" else 0)

    index_url = property(lambda self: self._origin() + self.simple_path)
    files_url = property(lambda self: self._files_origin() + self.package_loc)

    def env(self) -> dict:
        e = {"PYPI_MIRROR_URL": self.index_url, "PYPI_PACKAGE_LOC": self.package_loc}
        if self.layout == "absolute":
            e["PYPI_FILES_URL"] = self.files_url
        return e

    # ---- content --------------------------------------------------------------------
    def add_file(self, project, filename, content=None, *, size=None, requires_python=None,
                 yanked=None, upload_time=None, provenance=None) -> File:
        disk = self.root / "files" / filename
        if content is not None:
            disk.write_bytes(content)
            disk.with_name(filename + ".sha256").unlink(missing_ok=True)
            sha, n = hashlib.sha256(content).hexdigest(), len(content)
        elif size is not None:
            sha, n = generate_file(disk, filename, size), size
        else:
            raise ValueError("content or size is required")
        meta_sha = None
        if filename.endswith(".whl"):
            meta = metadata_from_wheel(content) if content is not None else None
            if meta is None:
                name, ver, *_ = parse_wheel_filename(filename)
                meta = wheel_metadata_text(name, ver, (), requires_python)
            disk.with_name(filename + ".metadata").write_bytes(meta)
            meta_sha = hashlib.sha256(meta).hexdigest()
        if upload_time is not None and not isinstance(upload_time, str):
            upload_time = upload_time.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        path = f"{self.package_loc}/{sha[:2]}/{sha[2:4]}/{sha[4:]}/{filename}"
        f = File(project, filename, path, sha, n, disk, requires_python, yanked,
                 upload_time or "2024-01-01T00:00:00.000000Z", meta_sha, self,
                 provenance=self.provenance if provenance is None else provenance)
        with self._lock:
            display, files = self._projects.setdefault(canonicalize_name(project), (project, []))
            files[:] = [x for x in files if x.filename != filename] + [f]
            if canonicalize_name(project) in self._rendered:
                self._rendered[canonicalize_name(project)] = {}
            self._by_path[path] = f
        return f

    def add_history(self, project, count, pure=False, requires_python=">=3.8", size=15 << 20
                    ) -> list[File]:
        """`count` files of releases 0.1.0, 0.1.1, ... (all below 1.0) as big projects publish
        them: an sdist and, per release, CPython 3.8 to 3.13 wheels for Linux, macOS and Windows
        (numpy) or one py3-none-any wheel (`pure`, botocore). Listed with a hash, size and core
        metadata but never stored: a GET of one is a 404, its `.metadata` is answered. The
        release a resolver picks must be a real one. Such a page is rendered once per change."""
        tags = ["py3-none-any"] if pure else [f"cp3{m}-cp3{m}-{plat}" for m in range(8, 14) for plat in (
            "manylinux_2_17_x86_64.manylinux2014_x86_64", "manylinux_2_17_aarch64.manylinux2014_aarch64",
            "macosx_11_0_arm64", "win_amd64")]
        dist, out = re.sub(r"[-_.]+", "_", project).lower(), []
        for i in range(count):
            release, k = divmod(i, len(tags) + 1)
            version = f"0.{release // 10 + 1}.{release % 10}"
            name = f"{dist}-{version}.tar.gz" if k == len(tags) else f"{dist}-{version}-{tags[k]}.whl"
            out.append(self._listed(project, name, size, requires_python))
        with self._lock:
            display, files = self._projects.setdefault(canonicalize_name(project), (project, []))
            files.extend(out)
            self._by_path.update((f.path, f) for f in out)
            self._rendered[canonicalize_name(project)] = {}
        return out

    def _listed(self, project, filename, size, requires_python) -> File:
        sha = hashlib.sha256(f"listed only: {filename}".encode()).hexdigest()  # of no real bytes
        meta = None
        if filename.endswith(".whl"):
            name, ver, *_ = parse_wheel_filename(filename)
            meta = hashlib.sha256(wheel_metadata_text(name, ver, (), requires_python)).hexdigest()
        path = f"{self.package_loc}/{sha[:2]}/{sha[2:4]}/{sha[4:]}/{filename}"
        return File(project, filename, path, sha, size, None, requires_python, None,
                    "2020-01-01T00:00:00.000000Z", meta, self, listed_only=True)

    def set_delay(self, seconds: float) -> None:
        """Wait `seconds` before answering every request (pages, files, .metadata): a far upstream."""
        self.delay = seconds

    def set_bandwidth(self, rate: int | None) -> None:
        """At most `rate` bytes/s of file bodies (whole, ranges, .metadata) over all connections
        of the file host at once, shared as they come; None: no limit."""
        self.bandwidth = rate

    def _pace(self, n: int) -> None:
        """Wait for `n` bytes' turn of the shared bandwidth: each chunk books the next free slot."""
        rate = self.bandwidth
        if not rate:
            return
        with self._lock:
            start = max(time.monotonic(), self._next_slot)
            self._next_slot = start + n / rate
        self._stop.wait(max(0.0, start + n / rate - time.monotonic()))

    def add_wheel(self, name, version, requires=(), requires_python=None) -> File:
        fn, data = make_wheel(name, version, requires, requires_python)
        return self.add_file(name, fn, data, requires_python=requires_python)

    def set_status(self, project, status=None, reason=None):
        """PEP 792's project status on the project's page (API 1.4; None: active again). A
        quarantined project's page lists no file, as the PEP says; its files are still served
        by URL, as a CDN that has them may."""
        norm = canonicalize_name(project)
        with self._lock:
            if status is None:
                self._status.pop(norm, None)
            else:
                self._status[norm] = (status, reason)
            if norm in self._rendered:
                self._rendered[norm] = {}

    def add_projects(self, names):
        self._extra.extend(names)

    def big_root(self, n: int):
        self._big_root = n

    def fault(self, filename, kind):
        self._faults[filename] = kind

    def project_fault(self, project, kind):
        self._project_faults[canonicalize_name(project)] = kind

    def clear_faults(self):
        self._faults.clear()
        self._project_faults.clear()

    def downloads(self, filename) -> int:
        return self._dl[filename]

    def bytes_sent(self) -> int:
        """Body bytes of files sent so far (whole files, ranges, .metadata)."""
        return sum(self._bytes.values())

    def written(self, filename) -> int:
        """Bytes of `filename` written so far by throttled whole-file answers, as they go (a
        connection cut midway counts what it sent), and by range answers."""
        with self._lock:
            return self._written[filename]

    def reset_counts(self):
        with self._lock:
            self._written.clear()
            self._dl.clear()
            self._bytes.clear()
            self.requests.clear()

    def stats(self) -> dict:
        with self._lock:
            return {"downloads": dict(self._dl), "requests": dict(self.requests),
                    "bytes": dict(self._bytes), "written": dict(self._written)}

    # ---- rendering ------------------------------------------------------------------
    def _href(self, f: File) -> str:
        return (f"../..{f.path[len(self.package_loc) - len('/packages'):]}" if self.layout == "relative"
                else f.url)

    def provenance_url(self, f: File) -> str:
        """Where the index serves a file's provenance: on the index's host, as PyPI does."""
        return f"{self._origin()}/integrity/{canonicalize_name(f.project)}/{f.filename}/provenance"

    def render_project(self, norm: str, fmt: str) -> bytes:
        cache = self._rendered.get(norm)
        if cache is not None:
            if fmt not in cache:
                cache[fmt] = self._render_project(norm, fmt)
            return cache[fmt]
        return self._render_project(norm, fmt)

    def _render_project(self, norm: str, fmt: str) -> bytes:
        display, files = self._projects[norm]
        files = list(files)
        status, reason = self._status.get(norm, (None, None))
        listed = [] if status == "quarantined" else files
        meta = lambda f: self.metadata and f.metadata_sha256
        if fmt == "json":
            versions = set()
            for f in files:
                try:
                    fn = f.filename
                    versions.add(parse_wheel_filename(fn)[1] if fn.endswith(".whl") else parse_sdist_filename(fn)[1])
                except Exception:
                    pass
            out = []
            for f in listed:
                d = {"filename": f.filename, "url": self._href(f), "hashes": {"sha256": f.sha256}}
                if f.requires_python:
                    d["requires-python"] = f.requires_python
                d["yanked"] = f.yanked if f.yanked not in (None, "") else bool(f.yanked == "")
                d["core-metadata"] = d["data-dist-info-metadata"] = (
                    {"sha256": f.metadata_sha256} if meta(f) else False)
                d.update({"size": f.size, "upload-time": f.upload_time})
                if f.provenance:
                    d["provenance"] = self.provenance_url(f)
                out.append(d)
            doc = {"meta": {"api-version": "1.4" if status else "1.1"}, "name": norm, "files": out,
                   "versions": [str(v) for v in sorted(versions)]}
            if status:
                doc["project-status"] = {"status": status} | ({"reason": reason} if reason else {})
            return json.dumps(doc).encode()
        head = HTML_HEAD.format(t=f"Links for {html.escape(display)}")
        if status:
            marks = f'    <meta name="pypi:project-status" content="{html.escape(status)}">\n'
            if reason:
                why = html.escape(reason)
                marks += f'    <meta name="pypi:project-status-reason" content="{why}">\n'
            head = head.replace('content="1.1">\n', 'content="1.4">\n' + marks)
        lines = [head]
        for f in listed:
            a = f'<a href="{html.escape(self._href(f))}#sha256={f.sha256}"'
            if f.requires_python:
                a += f' data-requires-python="{html.escape(f.requires_python)}"'
            if f.yanked is not None and f.yanked is not False:
                a += f' data-yanked="{"" if f.yanked is True else html.escape(str(f.yanked))}"'
            if meta(f):
                a += f' data-core-metadata="sha256={f.metadata_sha256}" data-dist-info-metadata="sha256={f.metadata_sha256}"'
            if f.provenance:
                a += f' data-provenance="{html.escape(self.provenance_url(f))}"'
            lines.append(f"    {a}>{html.escape(f.filename)}</a><br />\n")
        lines.append(HTML_TAIL)
        return "".join(lines).encode()

    def gzipped(self, norm: str, fmt: str) -> bytes:
        """The gzip of a project page (a CDN's copy), kept with the page where it is kept."""
        cache = self._rendered.get(norm)
        if cache is None:
            return gzip.compress(self.render_project(norm, fmt), 6, mtime=0)
        if fmt + ".gz" not in cache:
            cache[fmt + ".gz"] = gzip.compress(self.render_project(norm, fmt), 6, mtime=0)
        return cache[fmt + ".gz"]

    def render_root(self, fmt: str):
        """(length, etag, chunk iterator) for the root list; synthetic names are streamed."""
        names = {canonicalize_name(n): n for n in self._extra}
        names.update({k: v[0] for k, v in self._projects.items()})
        real = sorted(names.items())
        n = self._big_root
        if fmt == "json":
            head = '{"meta": {"api-version": "1.1"}, "projects": ['
            body = ", ".join(json.dumps({"name": d}) for _, d in real)
            one, tail, first_cut = ', {"name": "synthetic-%07d"}', "]}", 0 if real else 2
        else:
            head = HTML_HEAD.format(t="Simple index")
            body = "".join(f'    <a href="{self.simple_path}/{k}/">{html.escape(d)}</a>\n' for k, d in real)
            one = f'    <a href="{self.simple_path}/synthetic-%07d/">synthetic-%07d</a>\n'
            tail, first_cut = HTML_TAIL, 0
        small = (head + body).encode()
        per = len((one % ((0,) * one.count("%"))).encode())
        length = len(small) + n * per - (first_cut if n else 0) + len(tail)
        etag = hashlib.sha256(small + tail.encode() + str(n).encode()).hexdigest()[:32]

        def chunks():
            yield small
            for start in range(0, n, 10000):
                part = "".join(one % ((i,) * one.count("%")) for i in range(start, min(n, start + 10000)))
                yield (part[first_cut:] if start == 0 else part).encode()
            yield tail.encode()
        return length, etag, chunks()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def handle_one_request(self):
        try:
            super().handle_one_request()
        except (ConnectionError, socket.timeout, ValueError, OSError):
            self.close_connection = True

    def do_GET(self):
        self._route(True)

    def do_HEAD(self):
        self._route(False)

    def do_POST(self):
        if self.path == "/_reset":
            self.server.up.reset_counts()
            return self._send(200, b"{}", "application/json")
        self._send(405, b"method not allowed")

    def _send(self, status, data=b"", ctype="text/plain", headers=(), body=True):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _route(self, body: bool):
        up, role = self.server.up, self.server.role
        path = urlsplit(self.path).path
        if path == "/_stats" and role != "files":
            return self._send(200, json.dumps(up.stats()).encode(), "application/json", body=body)
        with up._lock:
            up.requests[f"{self.command} {self.path}"] += 1
        if up.delay and up._stop.wait(up.delay):  # a far upstream: every answer comes this late
            return
        if role != "files" and (path == up.simple_path or path.startswith(up.simple_path + "/")):
            return self._index(up, path[len(up.simple_path):], body)
        if role != "files" and path.startswith("/integrity/"):
            return self._provenance(up, path, body)
        if role != "index" and path.startswith(up.package_loc + "/"):
            return self._file(up, path, body)
        self._send(404, b"not found", body=body)

    def _fault(self, up, kind, body) -> bool:
        """Apply a status/slow/blackhole/redirect fault; True if the request is answered."""
        k, _, arg = kind.partition(":")
        if k == "status":
            self._send(int(arg), f"fault {arg}\n".encode(), body=body)
        elif k == "slow":
            up._stop.wait(float(arg))
            return False
        elif k == "blackhole":
            up._stop.wait()
            self.close_connection = True
        elif k == "redirect":
            self._send(302, b"", headers=[("Location", arg)], body=body)
        else:
            return False
        return True

    def _index(self, up, rest, body):
        if rest == "":
            return self._send(301, b"", headers=[("Location", up.simple_path + "/")], body=body)
        neg = negotiate(self.headers.get("Accept", ""), up.formats)
        if rest == "/":
            if neg is None:
                return self._send(406, b"not acceptable", body=body)
            length, etag, chunks = up.render_root(neg[1])
            return self._page(neg[0], etag, length, chunks, [], body)
        name = rest.strip("/")
        norm = canonicalize_name(name) if "/" not in name else None
        if not norm or not re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", norm):
            return self._send(404, b"not found", body=body)
        if rest != f"/{norm}/":
            return self._send(301, b"", headers=[("Location", f"{up.simple_path}/{norm}/")], body=body)
        kind = up._project_faults.get(norm)
        if kind and self._fault(up, kind, body):
            return
        if norm not in up._projects:
            return self._send(404, b"not found", body=body)
        if neg is None:
            return self._send(406, b"not acceptable", body=body)
        data = up.render_project(norm, neg[1])
        etag = hashlib.sha256(data).hexdigest()[:32]
        extra, vary = [("Cache-Control", "max-age=600")], "Accept"
        if up.gzip_pages:
            vary += ", Accept-Encoding"
            if accepts_gzip(self.headers.get("Accept-Encoding", "")):
                data = up.gzipped(norm, neg[1])
                extra.append(("Content-Encoding", "gzip"))
                etag = "W/" + etag  # nginx's gzip weakens the ETag it compresses
        self._page(neg[0], etag, len(data), [data], extra, body, vary)

    def _page(self, ctype, etag, length, chunks, extra, body, vary="Accept"):
        weak, etag = etag.startswith("W/"), etag.removeprefix("W/")
        headers = [("ETag", f'{"W/" if weak else ""}"{etag}"'), ("Vary", vary)] + extra
        inm = [t.strip().removeprefix("W/") for t in self.headers.get("If-None-Match", "").split(",")]
        if f'"{etag}"' in inm or "*" in inm:
            self.send_response(304)
            for k, v in headers:
                self.send_header(k, v)
            return self.end_headers()
        if ctype == "text/html":
            ctype += "; charset=utf-8"
        self.send_response(200)
        for k, v in [("Content-Type", ctype), ("Content-Length", str(length))] + headers:
            self.send_header(k, v)
        self.end_headers()
        if body:
            for c in chunks:
                self.wfile.write(c)

    def _provenance(self, up, path, body):
        """/integrity/<project>/<filename>/provenance: the file's provenance object."""
        parts = path.split("/")
        found = [f for f in up._by_path.values() if len(parts) == 5 and f.filename == parts[3]
                 and f.provenance and parts[4] == "provenance"]
        if not found:
            return self._send(404, b"not found", body=body)
        kind = up._faults.get(found[0].filename + ".provenance", "")  # fault("<file>.provenance")
        if kind and self._fault(up, kind, body):
            return
        data = provenance_document(found[0].filename, found[0].sha256)
        self._send(200, data, "application/vnd.pypi.integrity.v1+json", body=body)

    def _file(self, up, path, body):
        if path.endswith(".metadata"):
            f = up._by_path.get(path[: -len(".metadata")])
            if not (f and up.metadata and f.metadata_sha256):
                return self._send(404, b"not found", body=body)
            kind = up._faults.get(f.filename + ".metadata", "")  # fault("<wheel>.metadata", ...)
            if kind and self._fault(up, kind, body):
                return
            if f.listed_only:
                name, ver, *_ = parse_wheel_filename(f.filename)
                data = wheel_metadata_text(name, ver, (), f.requires_python)
            else:
                data = f.disk_path.with_name(f.filename + ".metadata").read_bytes()
            if body:
                up._pace(len(data))
                with up._lock:
                    up._bytes[f.filename + ".metadata"] += len(data)
            return self._send(200, data, "application/octet-stream", [("ETag", f'"{f.metadata_sha256}"')], body)
        f = up._by_path.get(path)
        if f is None or f.listed_only:
            return self._send(404, b"not found", body=body)
        span = self._range(f.size) if up.ranges and self.command == "GET" else None
        if body and span is None:
            with up._lock:
                up._dl[f.filename] += 1
        kind = up._faults.get(f.filename, "")
        if kind and self._fault(up, kind, body):
            return
        if span is not None:
            return self._partial(up, f, span)
        chunked = kind in ("chunked", "chunked-truncate")
        limit = f.size // 2 if kind in ("truncate", "chunked-truncate") else f.size
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("ETag", f'"{f.sha256}"')
        if up.ranges:
            self.send_header("Accept-Ranges", "bytes")  # what uv looks for before a range
        self.send_header(*(("Transfer-Encoding", "chunked") if chunked else ("Content-Length", str(f.size))))
        self.end_headers()
        if body:
            self._stream(up, f, limit, chunked, kind == "corrupt")
            with up._lock:
                up._bytes[f.filename] += limit
        if limit < f.size:
            self.close_connection = True
        elif chunked and body:
            self.wfile.write(b"0\r\n\r\n")

    def _range(self, size):
        """(start, stop) of a single `Range: bytes=...`, "bad" when unsatisfiable, else None."""
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
        if not m or m[1] == m[2] == "":
            return None
        if m[1] == "":
            return (max(0, size - int(m[2])), size) if int(m[2]) else "bad"
        start, stop = int(m[1]), min(size, int(m[2]) + 1) if m[2] else size
        return (start, stop) if start < size and start < stop else "bad"

    def _partial(self, up, f, span):
        if span == "bad":
            return self._send(416, b"", headers=[("Content-Range", f"bytes */{f.size}")])
        start, stop = span
        self.send_response(206)
        for k, v in [("Content-Type", "application/octet-stream"), ("ETag", f'"{f.sha256}"'),
                     ("Content-Range", f"bytes {start}-{stop - 1}/{f.size}"),
                     ("Content-Length", str(stop - start))]:
            self.send_header(k, v)
        self.end_headers()
        with up._lock:  # counted first: a fast client may look before the last write returns
            up._bytes[f.filename] += stop - start
            up._written[f.filename] += stop - start
        with open(f.disk_path, "rb") as fh:
            at = start
            if not up.bandwidth:
                self.connection.sendfile(fh, start, stop - start)
                at = stop
            fh.seek(at)
            while at < stop:
                chunk = fh.read(min(64 * 1024, stop - at))
                up._pace(len(chunk))
                self.wfile.write(chunk)
                at += len(chunk)

    def _stream(self, up, f, limit, chunked, corrupt):
        rate = up.throttle
        with open(f.disk_path, "rb") as fh:
            if not (rate or chunked or corrupt or up.bandwidth):
                self.connection.sendfile(fh, 0, limit)
                return
            step = max(1024, min(256 * 1024, int(rate) // 20)) if rate else 256 * 1024
            step = min(step, 64 * 1024) if up.bandwidth else step  # small turns: a fair share
            sent, t0, mid = 0, time.monotonic(), f.size // 2
            while sent < limit:
                chunk = fh.read(min(step, limit - sent))
                if not chunk:
                    break
                if corrupt and sent <= mid < sent + len(chunk):
                    b = bytearray(chunk)
                    for i in range(mid - sent, min(len(b), mid - sent + 16)):
                        b[i] ^= 0xFF
                    chunk = bytes(b)
                if rate:  # pace before sending: chunk k completes no earlier than its share of size/rate
                    delay = (sent + len(chunk)) / rate - (time.monotonic() - t0)
                    if delay > 0 and up._stop.wait(delay):
                        return
                up._pace(len(chunk))
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
                sent += len(chunk)
                with up._lock:
                    up._written[f.filename] += len(chunk)


def provenance_document(filename: str, sha256: str) -> bytes:
    """A PEP 740 provenance object of one file, in shape only: its one attestation's statement
    names the file and its sha256, its certificate and signature are placeholders (the proxy
    checks the statement, never the signature)."""
    statement = {"_type": "https://in-toto.io/Statement/v1",
                 "subject": [{"name": filename, "digest": {"sha256": sha256}}],
                 # Real ones name the public index's publish predicate; no check reads it.
                 "predicateType": "https://attestations.example/publish/v1",
                 "predicate": None}
    encoded = base64.b64encode(json.dumps(statement).encode()).decode()
    attestation = {"version": 1,
                   "verification_material": {"certificate": "", "transparency_entries": []},
                   "envelope": {"statement": encoded,
                                "signature": base64.b64encode(b"fixture").decode()}}
    document = {"version": 1, "attestation_bundles": [
        {"publisher": {"kind": "fixture", "claims": {}}, "attestations": [attestation]}]}
    return json.dumps(document).encode()


def _size(s: str) -> int:
    m = re.fullmatch(r"(\d+)\s*([kmg]?)i?b?", s.strip().lower())
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {s!r}")
    return int(m.group(1)) << {"": 0, "k": 10, "m": 20, "g": 30}[m.group(2)]


def main(argv=None):
    p = argparse.ArgumentParser(description="fixture upstream index on 127.0.0.1")
    p.add_argument("--root", default=None, help="directory for file bodies (default: a temp dir)")
    p.add_argument("--layout", choices=("absolute", "relative"), default="absolute")
    p.add_argument("--formats", default="html,json")
    p.add_argument("--no-metadata", action="store_true")
    p.add_argument("--no-ranges", action="store_true", help="answer Range requests with whole files")
    p.add_argument("--throttle", type=int, default=None, help="bytes/s per connection for file bodies")
    p.add_argument("--wheels", type=int, default=0, help="add N small wheels fixture-pkg-0000..")
    p.add_argument("--file", action="append", default=[], metavar="NAME:SIZE",
                   help="add a generated file NAME (a wheel/sdist filename) of SIZE bytes (k/m/g suffixes)")
    p.add_argument("--history", action="append", default=[], metavar="NAME:COUNT",
                   help="a wheel NAME 1.0 and COUNT listed-only files of older releases on its page")
    p.add_argument("--delay", type=float, default=0.0, help="seconds before every answer")
    p.add_argument("--bandwidth", type=int, default=None,
                   help="bytes/s for file bodies over all connections at once")
    p.add_argument("--big-root", type=int, default=0)
    p.add_argument("--gzip-pages", action="store_true",
                   help="gzip project pages for clients that accept it, as a CDN does")
    a = p.parse_args(argv)
    root = a.root or tempfile.mkdtemp(prefix="fixture-upstream-")
    up = Upstream(root, a.layout, tuple(a.formats.split(",")), not a.no_metadata, a.throttle,
                  not a.no_ranges, a.delay, a.bandwidth, gzip_pages=a.gzip_pages)
    for spec in a.history:
        name, _, count = spec.rpartition(":")
        up.add_wheel(name, "1.0")
        up.add_history(name, int(count))
    for i in range(a.wheels):
        up.add_wheel(f"fixture-pkg-{i:04d}", "1.0.0")
    files = []
    for spec in a.file:
        name, _, size = spec.rpartition(":")
        files.append(up.add_file(re.split(r"-\d", name, 1)[0], name, size=_size(size)))
    up.big_root(a.big_root)
    up.start()
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    info = {"index_url": up.index_url, "files_url": up.files_url, "package_loc": up.package_loc,
            "env": up.env(), "files": [{"filename": f.filename, "url": f.url, "sha256": f.sha256,
                                        "size": f.size} for f in files]}
    sys.stdout.write(json.dumps(info) + "\n")
    sys.stdout.flush()
    while not done.wait(0.5):
        pass
    up.stop()


if __name__ == "__main__":
    main()
