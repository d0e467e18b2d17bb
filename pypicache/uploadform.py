"""What an upload through the legacy upload API (twine, `uv publish`, poetry, pdm) must be
before anything is kept: its form fields, its file name, its digests, its size, and the
metadata inside the wheel or sdist, each refusal a 4xx with a one-line reason (twine shows
the status line's reason phrase)."""
from __future__ import annotations

import fnmatch
import hashlib
import tarfile
import zlib
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import IO, Mapping

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.formparser import FormDataParser

from . import names, wheelmeta
from .cachedir import CacheDir, key
from .errors import BadRequest, ProxyError
from .storage import CHUNK, FileBlob
from .uploads import Upload

FILETYPES = {"bdist_wheel": ".whl", "sdist": ".tar.gz"}
MAX_PKG_INFO = 1 << 20  # an sdist's PKG-INFO is a few KB
MAX_MEMBERS = 100_000  # members of an sdist looked through for its PKG-INFO
FORM_MEMORY = 1 << 20  # the form's other fields (a long description) in memory at most


class Refused(ProxyError):
    """An upload refused: 400 unless said otherwise."""

    status = 400

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def allowed(uploaders: Mapping[str, tuple[str, ...]], user: str, project: str) -> bool:
    """Whether PYPI_UPLOADERS lets `user` upload files of `project` (canonical)."""
    return any(fnmatch.fnmatchcase(project, glob) for glob in uploaders.get(user, ()))


def check_form(form: Mapping[str, str], filename: str) -> tuple[str, str]:
    """(canonical project, version) of a form whose fields and file name agree."""
    if form.get(":action") != "file_upload":
        raise Refused("only :action=file_upload is supported here")
    for field in ("name", "version", "filetype", "sha256_digest"):
        if not form.get(field):
            raise Refused(f"the form has no {field}")
    suffix = FILETYPES.get(form["filetype"])
    if suffix is None:
        raise Refused(f"filetype {form['filetype'][:40]!r} is not one of {', '.join(FILETYPES)}")
    if "/" in filename or "\\" in filename or not filename.endswith(suffix):
        raise Refused(f"a {form['filetype']} file name ends with {suffix}")
    try:
        if suffix == ".whl":
            name, version, *_ = parse_wheel_filename(filename)
        else:
            name, version = parse_sdist_filename(filename)
        claimed = Version(form["version"])
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion) as error:
        raise Refused(f"invalid distribution: {str(error)[:200]}") from None
    try:
        project = names.project_name(form["name"])
    except BadRequest:
        raise Refused(f"{form['name'][:100]!r} is not a project name") from None
    if name != project:
        raise Refused(f"the file {filename} is not of the project {form['name'][:100]}")
    if version != claimed:
        raise Refused(f"the file {filename} is not of the version {form['version'][:40]}")
    return project, str(version)


class Spool:
    """Where the form's files land as the body is parsed: temp files in the cache's tmp/
    (never the whole upload in memory), each closed and removed at the end unless published
    meanwhile (renamed away)."""

    def __init__(self, cachedir: CacheDir):
        self.cachedir = cachedir
        self.files: list[tuple[IO[bytes], Path]] = []

    def __call__(self, total_content_length, content_type, filename, content_length=None):
        fd, path = self.cachedir.new_temp(key(f"upload:{filename}"))
        file = open(fd, "wb+")
        self.files.append((file, path))
        return file

    def path(self, file: IO[bytes]) -> Path:
        return next(path for opened, path in self.files if opened is file)

    def __enter__(self) -> "Spool":
        return self

    def __exit__(self, *exc) -> None:
        for file, path in self.files:
            file.close()
            path.unlink(missing_ok=True)


def parse(environ: dict, spool: Spool, limit: int):
    """(form, files) of a multipart body of at most `limit` bytes; Refused when it is larger,
    or cannot be read (cut short, malformed)."""
    parser = FormDataParser(stream_factory=spool, max_content_length=limit, silent=False,
                            max_form_memory_size=FORM_MEMORY)
    try:
        _, form, files = parser.parse_from_environ(environ)
    except RequestEntityTooLarge:
        raise Refused(f"the upload is larger than the limit of {limit} bytes", 413) from None
    except (HTTPException, ValueError):  # ClientDisconnected is a BadRequest
        raise Refused("the body was cut short, or is not a multipart form") from None
    return form, files


def receive(file: IO[bytes], path: Path, form: Mapping[str, str], filename: str, project: str,
            version: str, limit: int) -> Upload:
    """The spooled file's digests and size checked against the form, and its own metadata
    against the form's name and version; Refused otherwise."""
    sha256, md5, blake2, size = hashlib.sha256(), hashlib.md5(), hashlib.blake2b(digest_size=32), 0
    file.flush()
    file.seek(0)
    while chunk := file.read(CHUNK):
        size += len(chunk)
        if size > limit:
            raise Refused(f"the file is larger than the limit of {limit} bytes", 413)
        for digest in (sha256, md5, blake2):
            digest.update(chunk)
    for field, digest in (("sha256_digest", sha256), ("md5_digest", md5),
                          ("blake2_256_digest", blake2)):
        given = form.get(field)
        if given and given.strip().lower() != digest.hexdigest():
            raise Refused(f"the file does not match its {field}")
    if size == 0:
        raise Refused("the file is empty")
    if filename.endswith(".whl"):
        metadata = _wheel_metadata(path, filename)
    else:
        metadata = _pkg_info(path, filename)
    headers = BytesHeaderParser().parsebytes(metadata)
    _matches(headers, project, version, filename)
    return Upload(project, version, filename, path, sha256.hexdigest(), size,
                  (headers.get("Requires-Python") or "").strip() or None,
                  metadata if filename.endswith(".whl") else None)


def _wheel_metadata(temp: Path, filename: str) -> bytes:
    try:
        with open(temp, "rb") as file:
            return wheelmeta.core_metadata(FileBlob(file), filename)
    except ProxyError as error:  # BadWheel: its message says what is wrong
        raise Refused(f"not a readable wheel: {error.message[:200]}") from None


def _pkg_info(temp: Path, filename: str) -> bytes:
    """The PKG-INFO at the top of the sdist's directory (`<name>-<version>/PKG-INFO`, by
    the file's name or, as older tools wrote it, by the project's name as given)."""
    try:
        with tarfile.open(temp, "r:gz") as archive:
            for count, member in enumerate(archive):
                if count >= MAX_MEMBERS:
                    break
                parts = member.name.removeprefix("./").split("/")
                if len(parts) == 2 and parts[1] == "PKG-INFO" and member.isfile():
                    if member.size > MAX_PKG_INFO:
                        raise Refused("the sdist's PKG-INFO is too large")
                    found = archive.extractfile(member)
                    return found.read(MAX_PKG_INFO) if found is not None else b""
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        raise Refused(f"not a readable sdist (.tar.gz): {type(error).__name__}") from None
    raise Refused(f"the sdist has no {filename[:-len('.tar.gz')]}/PKG-INFO")


def _matches(headers, project: str, version: str, filename: str) -> None:
    name, found = headers.get("Name"), headers.get("Version")
    if not name or canonicalize_name(str(name)) != project:
        raise Refused(f"the metadata in {filename} names another project ({str(name)[:100]})")
    try:
        same = found is not None and Version(str(found)) == Version(version)
    except InvalidVersion:
        same = False
    if not same:
        raise Refused(f"the metadata in {filename} gives another version ({str(found)[:40]})")
