"""Build fixture package files: small real py3-none-any wheels and sdists (in memory), and large
deterministic pseudo-random bodies generated once onto disk."""
from __future__ import annotations

import base64
import hashlib
import io
import random
import re
import struct
import tarfile
import zipfile

_EPOCH = (1980, 1, 1, 0, 0, 0)
BLOCK = 1 << 20


def _escape(name: str) -> str:
    """Wheel-spec escaped distribution name: normalized, with underscores."""
    return re.sub(r"[-_.]+", "_", name).lower()


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def wheel_metadata_text(name, version, requires=(), requires_python=None) -> bytes:
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}",
             f"Summary: fixture package {name}"]
    if requires_python:
        lines.append(f"Requires-Python: {requires_python}")
    lines += [f"Requires-Dist: {r}" for r in requires]
    return ("\n".join(lines) + "\n\n").encode()


def make_wheel(name, version, requires=(), requires_python=None, payload=0, *, info_name=None,
               stored_metadata=False, data_dir=False, zip64=False, prefix=b"", comment=b""):
    """Return (filename, bytes) of a wheel `<name>-<version>-py3-none-any.whl`; `payload`
    incompressible bytes (the same for the same name and version) give it a realistic size.

    The keywords make the unusual wheels found in the wild: a .dist-info directory named
    otherwise than the file (`info_name`, e.g. other case or punctuation), METADATA stored
    rather than deflated, a .data directory (with a decoy METADATA deeper down), ZIP64
    records, bytes before the zip (`prefix`) and an archive comment.
    """
    dist = _escape(name)
    version = str(version)
    info = f"{info_name or dist}-{version}.dist-info"
    files = {
        f"{dist}/__init__.py": f'__version__ = "{version}"\n'.encode(),
        **({f"{dist}/data.bin": random.Random(f"{name}-{version}").randbytes(payload)}
           if payload else {}),
        **({f"{dist}-{version}.data/scripts/{dist}-tool": b"#!python\nprint('tool')\n",
            f"{dist}-{version}.data/purelib/decoy-1.0.dist-info/METADATA": b"Name: decoy\n"}
           if data_dir else {}),
        f"{info}/METADATA": wheel_metadata_text(name, version, requires, requires_python),
        f"{info}/WHEEL": (b"Wheel-Version: 1.0\nGenerator: pypicache-tests\n"
                          b"Root-Is-Purelib: true\nTag: py3-none-any\n\n"),
    }
    record = [_record_line(p, d) for p, d in files.items()] + [f"{info}/RECORD,,"]
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    buf = io.BytesIO()
    buf.write(prefix)
    limit = zipfile.ZIP64_LIMIT
    if zip64:  # as CPython's own tests of ZIP64 do: records without writing 4 GiB
        zipfile.ZIP64_LIMIT = 64
    try:
        with zipfile.ZipFile(buf, "a" if prefix else "w", zipfile.ZIP_DEFLATED) as zf:
            for path, data in files.items():
                zi = zipfile.ZipInfo(path, _EPOCH)
                # Random payload does not shrink: storing it spares the time of trying.
                stored = path.endswith("data.bin") or stored_metadata and path.endswith("/METADATA")
                zi.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
                zi.external_attr = 0o644 << 16
                zf.writestr(zi, data)
            zf.comment = comment
    finally:
        zipfile.ZIP64_LIMIT = limit
    return f"{dist}-{version}-py3-none-any.whl", buf.getvalue()


def metadata_from_wheel(data: bytes) -> bytes | None:
    """The `*.dist-info/METADATA` member of a wheel, or None if `data` is not a wheel."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            for n in zf.namelist():
                if n.count("/") == 1 and n.endswith(".dist-info/METADATA"):
                    return zf.read(n)
    except (zipfile.BadZipFile, OSError, ValueError):
        return None
    return None


def generate_file(path, filename: str, size: int) -> str:
    """Write `size` deterministic pseudo-random bytes to `path` (reused if present); return sha256."""
    side = path.with_name(path.name + ".sha256")
    if path.exists() and side.exists() and path.stat().st_size == size:
        return side.read_text().strip()
    block = random.Random(f"{filename}:{size}").randbytes(BLOCK)
    head, = struct.unpack("<Q", block[:8])
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for i in range(0, (size + BLOCK - 1) // BLOCK):
            chunk = (struct.pack("<Q", head ^ i) + block[8:])[: size - i * BLOCK]
            h.update(chunk)
            f.write(chunk)
    side.write_text(h.hexdigest())
    return h.hexdigest()


def central_entry(data: bytes, name: str) -> int:
    """Where the central directory entry (APPNOTE 4.3.12) of member `name` starts: the name's
    last occurrence is the directory's copy (the local header's comes first)."""
    return data.rindex(name.encode()) - 46


def short_zip64_extra(data: bytes, name: str) -> bytes:
    """The wheel with member `name`'s ZIP64 extra field (APPNOTE 4.5.3) claiming 16 bytes more
    than the entry holds."""
    entry = central_entry(data, name)
    extra = entry + 46 + struct.unpack_from("<H", data, entry + 28)[0]
    kind, length = struct.unpack_from("<2H", data, extra)
    assert kind == 0x0001, "a wheel made with zip64=True"
    return data[:extra + 2] + struct.pack("<H", length + 16) + data[extra + 4:]


def local_header_at(data: bytes, name: str, offset: int) -> bytes:
    """The wheel with member `name`'s directory entry pointing at a local header at `offset`."""
    entry = central_entry(data, name)
    return data[:entry + 42] + struct.pack("<L", offset) + data[entry + 46:]


# An in-tree PEP 517 backend with no build requirements: pip and uv build the sdist below
# without fetching setuptools, so an end-to-end test needs no build tools from any index.
_BACKEND = '''
import base64, hashlib, os, zipfile

NAME, DIST, VERSION, METADATA = {name!r}, {dist!r}, {version!r}, {metadata!r}


def _line(path, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{{path}},sha256={{digest}},{{len(data)}}"


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    info = f"{{DIST}}-{{VERSION}}.dist-info"
    files = {{f"{{DIST}}/__init__.py": f"__version__ = {{VERSION!r}}\\n".encode(),
             f"{{info}}/METADATA": METADATA.encode(),
             f"{{info}}/WHEEL": b"Wheel-Version: 1.0\\nGenerator: backend\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"}}
    record = [_line(p, d) for p, d in files.items()] + [f"{{info}}/RECORD,,"]
    files[f"{{info}}/RECORD"] = ("\\n".join(record) + "\\n").encode()
    filename = f"{{DIST}}-{{VERSION}}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return filename


def get_requires_for_build_wheel(config_settings=None):
    return []
'''


def make_sdist(name, version, requires=(), requires_python=None, *, pkg_info_name=None):
    """Return (filename, bytes) of an sdist `<name>-<version>.tar.gz` (PEP 625) that pip and
    uv can build offline; `pkg_info_name` puts another name in its PKG-INFO."""
    dist, version = _escape(name), str(version)
    metadata = wheel_metadata_text(name, version, requires, requires_python).decode()
    pkg_info = wheel_metadata_text(pkg_info_name or name, version, requires, requires_python)
    top = f"{dist}-{version}"
    files = {
        f"{top}/PKG-INFO": pkg_info,
        f"{top}/pyproject.toml": (b'[build-system]\nrequires = []\nbuild-backend = "backend"\n'
                                  b'backend-path = ["."]\n'),
        f"{top}/backend.py": _BACKEND.format(name=name, dist=dist, version=version,
                                             metadata=metadata).encode(),
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as archive:
        for path, data in files.items():
            member = tarfile.TarInfo(path)
            member.size, member.mtime, member.mode = len(data), 1700000000, 0o644
            archive.addfile(member, io.BytesIO(data))
    return f"{top}.tar.gz", buf.getvalue()
