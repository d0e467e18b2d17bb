"""Optional HTTP basic auth against an htpasswd file of bcrypt hashes (PYPI_AUTH_FILE)."""
from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path

import bcrypt
from flask import Flask, Response, request

log = logging.getLogger(__name__)
OPEN = frozenset({"ops.healthz"})  # probes never log in
# The routes that list what the organisation installs: the only ones PYPI_AUTH_SCOPE=dashboard guards.
DASHBOARD = frozenset({"browse.dashboard", "browse.project", "browse.stats_json",
                       "browse.project_json", "ops.metrics"})
ACCEPTED_KEPT = 1024  # verified logins remembered per worker
CHALLENGE = {"WWW-Authenticate": 'Basic realm="pypicache", charset="UTF-8"'}


class Htpasswd:
    """The users of an htpasswd file, re-read when it changes. bcrypt is slow on purpose (a
    quarter of a second): a login once verified is remembered by a digest of the user, the
    password and the stored hash, so pip's hundreds of requests cost one check, and a changed
    password or a removed user takes effect at the next request."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._signature: tuple | None = None
        self._users: dict[str, bytes] = {}
        self._accepted: dict[bytes, None] = {}

    def _load(self) -> dict[str, bytes]:
        try:
            stat = os.stat(self.path)
            signature = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            if signature != self._signature:
                users = {}
                for line in self.path.read_text(encoding="utf-8").splitlines():
                    user, _, hashed = line.strip().partition(":")
                    if user and not user.startswith("#") and hashed.startswith(("$2a$", "$2b$", "$2y$")):
                        users[user] = hashed.encode()
                    elif user and not user.startswith("#"):
                        log.warning("%s: user %s has no bcrypt hash (htpasswd -B): ignored",
                                    self.path, user)
                with self._lock:
                    self._users, self._signature = users, signature
        except OSError as error:  # keep the last good list rather than lock everyone out
            log.warning("cannot read %s: %s", self.path, error.strerror)
        return self._users

    def check(self, user: str, password: str) -> bool:
        hashed = self._load().get(user)
        if hashed is None:
            return False
        token = hashlib.sha256(b"\0".join((user.encode(), password.encode(), hashed))).digest()
        if token in self._accepted:
            return True
        try:
            ok = bcrypt.checkpw(password.encode(), hashed)
        except ValueError:  # a malformed hash in the file
            return False
        if ok:
            with self._lock:
                if len(self._accepted) >= ACCEPTED_KEPT:
                    self._accepted.clear()
                self._accepted[token] = None
        return ok


def install(app: Flask, auth_file: Path | None, scope: str) -> None:
    """Require a login on every route but /healthz (scope "all"), or on the dashboard's."""
    if auth_file is None:
        return
    users = Htpasswd(auth_file)

    def guarded(endpoint: str | None) -> bool:
        return endpoint in DASHBOARD if scope == "dashboard" else endpoint not in OPEN

    @app.before_request
    def require_login() -> Response | None:
        if not guarded(request.endpoint):
            return None
        given = request.authorization
        if given and given.type == "basic" and users.check(given.username or "", given.password or ""):
            return None
        return Response("login required\n", 401, CHALLENGE, mimetype="text/plain")
