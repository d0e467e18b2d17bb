"""Optional HTTP basic auth against an htpasswd file of bcrypt hashes (PYPI_AUTH_FILE)."""
from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import secrets
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import bcrypt
from flask import Flask, Response, request

from .stats.signals import login_checked
from .throttle import Budget

log = logging.getLogger(__name__)
OPEN = frozenset({"ops.healthz", "peers.file"})  # probes never log in; nodes show a token
# The routes that list what the organisation installs: the only ones PYPI_AUTH_SCOPE=dashboard guards.
DASHBOARD = frozenset({"browse.dashboard", "browse.project", "browse.stats_json",
                       "browse.project_json", "ops.metrics", "policy.page", "policy.page_json"})
# Uploads (pypicache/views/uploads.py) need a login whatever the scope.
ALWAYS = frozenset({"uploads.upload"})
CHALLENGE = {"WWW-Authenticate": 'Basic realm="pypicache", charset="UTF-8"'}
# The nginx front's question (docker/nginx/): 200 for a good login, 401 for a bad one, 403
# when throttled, the only refusals its auth_request passes on.
LOGIN_PATH = "/-/login"
# The front proves it is the front with the key it keeps on the volume (front/key), and then
# says who its client is: behind it, every request comes from the front's own address.
FRONT_KEY, FRONT_CLIENT = "X-Pypicache-Front-Key", "X-Pypicache-Client"
# Where a request's verified user is kept (the policy's audit log names it; never the password).
USER = "pypicache.user"
REMEMBERED = 4096  # verified and refused logins kept per worker, each as a 32-byte digest
CHECKS_AT_ONCE = 1  # bcrypt checks per worker: each takes a core for a quarter of a second
CHECK_WAIT = 2.0  # seconds a login waits for that; then 429
# bcrypt reads the first 72 bytes of a password, and `htpasswd -B` hashes a longer one so; bcrypt
# 5 refuses a longer one instead of cutting it, so it is cut here, as the file's hash was made.
BCRYPT_MAX = 72
# Failed checks allowed (burst, then one per interval in seconds), shared by the workers:
# per client address (IPv6 by /64, what one host is given), per user name, and in all. Each
# check takes a core for a quarter of a second: at most BURST of them at once, and then
# 1/60 + 1/30 + 1/10 of a check a second (a few per cent of one core) under any flood.
BY_ADDRESS, BY_USER, IN_ALL = (5, 60.0), (10, 30.0), (20, 10.0)


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    retry_after: int = 0  # > 0: not checked (throttled); the client may try again after it


class Htpasswd:
    """The users of an htpasswd file, re-read when it changes, and a hash of the same cost
    for names it does not have, so an unknown user costs what a known one does."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._signature: tuple | None = None
        self.users: dict[str, bytes] = {}
        self.dummy = b""

    def load(self) -> Htpasswd:
        try:
            stat = os.stat(self.path)
            signature = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            if signature != self._signature:
                with self._lock:
                    if signature != self._signature:
                        self._read(signature)
        except OSError as error:  # keep the last good list rather than lock everyone out
            log.warning("cannot read %s: %s", self.path, error.strerror)
        return self

    def _read(self, signature: tuple) -> None:
        users = {}
        for line in self.path.read_text(encoding="utf-8").splitlines():
            user, _, hashed = line.strip().partition(":")
            if user and not user.startswith("#") and hashed.startswith(("$2a$", "$2b$", "$2y$")):
                users[user] = hashed.encode()
            elif user and not user.startswith("#"):
                log.warning("%s: user %s has no bcrypt hash (htpasswd -B): ignored",
                            self.path, user)
        costs = Counter(hashed[4:6] for hashed in users.values())
        cost = int(costs.most_common(1)[0][0]) if costs else 12  # bcrypt's default
        dummy = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(min(max(cost, 4), 31)))
        self.users, self.dummy, self._signature = users, dummy, signature


class Logins:
    """Checks logins at most once each: a verified (or refused) login is remembered by an
    HMAC, with a key of this process, of the user, the password and the stored hash, so
    pip's hundreds of requests cost one bcrypt, a repeated wrong password none, and a
    changed password or a removed user takes effect at the next request. New wrong
    passwords spend budgets per address, per user and in all; past one, logins are not
    checked but answered "try again later"."""

    def __init__(self, path: Path, budgets: Path):
        self.htpasswd = Htpasswd(path)
        self._key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._known: OrderedDict[bytes, bool] = OrderedDict()  # digest -> accepted
        self._slots = threading.BoundedSemaphore(CHECKS_AT_ONCE)
        self.budgets = tuple(Budget(budgets / name, *limits) for name, limits in
                             (("address", BY_ADDRESS), ("user", BY_USER), ("all", IN_ALL)))

    def check(self, user: str, password: str, address: Callable[[], str]) -> Verdict:
        """The verdict on a login; `address` (the client's) is asked for only to check one."""
        found = self.htpasswd.load()
        stored = found.users.get(user)
        hashed = stored or found.dummy
        digest = hmac.digest(self._key, b"\0".join((user.encode(), password.encode(), hashed)),
                             "sha256")
        if (known := self._known.get(digest)) is not None:
            return Verdict(known)
        keys = (client_key(address()), user, "")
        wait = self._wait(keys)  # before the slot: a throttled login waits for nothing
        if wait or not self._slots.acquire(timeout=CHECK_WAIT):
            return self._throttled(wait or 1)
        try:  # the same login may have been checked while this one waited for the slot
            if (known := self._known.get(digest)) is not None:
                return Verdict(known)
            if wait := self._wait(keys):
                return self._throttled(wait)
            try:
                accepted = (bcrypt.checkpw(password.encode()[:BCRYPT_MAX], hashed)
                            and stored is not None)
            except ValueError:  # a malformed hash in the file
                accepted = False
        finally:
            self._slots.release()
        self._remember(digest, accepted)
        if not accepted:
            for budget, key in zip(self.budgets, keys):
                budget.spend(key)
        login_checked.send(self, outcome="accepted" if accepted else "refused")
        return Verdict(accepted)

    def _throttled(self, wait: int) -> Verdict:
        login_checked.send(self, outcome="throttled")
        return Verdict(False, wait)

    def _wait(self, keys: tuple[str, ...]) -> int:
        return max(budget.wait(key) for budget, key in zip(self.budgets, keys))

    def _remember(self, digest: bytes, accepted: bool) -> None:
        with self._lock:
            self._known[digest] = accepted
            while len(self._known) > REMEMBERED:
                self._known.popitem(last=False)


def client_key(address: str) -> str:
    """What one client is: its IPv4 address, or the /64 network of its IPv6 address."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:  # ::ffff:a.b.c.d, a dual-stack socket's IPv4 client
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)


class FrontKey:
    """The key the nginx front keeps on the cache volume (front/key, written by its start
    script) and sends with its login questions, re-read when it changes."""

    def __init__(self, path: Path):
        self.path = path
        self._signature: tuple | None = None
        self._key = b""

    def matches(self, given: str) -> bool:
        try:
            stat = os.stat(self.path)
            signature = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            if signature != self._signature:
                self._key, self._signature = self.path.read_bytes().strip(), signature
        except OSError:
            return False
        return bool(self._key) and hmac.compare_digest(given.encode(), self._key)


def install(app: Flask, auth_file: Path | None, scope: str, cache_dir: Path) -> None:
    """Require a login on every route but /healthz (scope "all"), or on the dashboard's."""
    if auth_file is None:
        return
    logins = app.extensions["pypicache.logins"] = Logins(auth_file, cache_dir / "logins")
    front = FrontKey(cache_dir / "front" / "key")

    def guarded(endpoint: str | None) -> bool:
        if scope == "dashboard":
            return endpoint in DASHBOARD or endpoint in ALWAYS
        return endpoint not in OPEN

    def address() -> str:
        claimed = request.headers.get(FRONT_CLIENT)
        if claimed and front.matches(request.headers.get(FRONT_KEY, "")):
            return claimed
        return request.remote_addr or ""

    @app.before_request
    def require_login() -> Response | None:
        if not guarded(request.endpoint):
            return None
        given = request.authorization
        if given is None or given.type != "basic":
            return Response("login required\n", 401, CHALLENGE, mimetype="text/plain")
        verdict = logins.check(given.username or "", given.password or "", address)
        if verdict.accepted:
            request.environ[USER] = given.username
            return None
        if verdict.retry_after:
            # 429 with Retry-After (RFC 6585): pip (urllib3) waits that long and asks again,
            # uv retries after its backoff, where a 401 ends their install. The front's
            # auth_request passes only 401 and 403 on; it turns this 403 into the 429.
            status = 403 if request.endpoint == "auth.login" else 429
            return Response("too many failed logins: try again later\n", status,
                            {"Retry-After": str(verdict.retry_after)}, mimetype="text/plain")
        return Response("login required\n", 401, CHALLENGE, mimetype="text/plain")

    if scope == "all":  # the front checks logins only then (docker/nginx/start)
        # A body, so that nginx keeps the answer as a file (proxy_store keeps 200s only).
        app.add_url_rule(LOGIN_PATH, "auth.login",
                         lambda: Response("accepted\n", 200, mimetype="text/plain"))
