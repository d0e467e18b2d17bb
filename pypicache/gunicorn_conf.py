"""gunicorn settings for pypicache: every value comes from pypicache.config.load(); each says why.

`pypicache serve` runs gunicorn with this module (`-c python:pypicache.gunicorn_conf`); the
checkout's gunicorn.conf.py imports it, so `gunicorn -c gunicorn.conf.py` gives the same.
"""
import os
import sys
import tempfile

from pypicache.config import ConfigError, check_policy, load

try:
    _settings = load()
    check_policy(_settings)
except ConfigError as error:
    # One line naming the variable, then exit 1: better than gunicorn's traceback of a
    # config file, and Docker/compose show it as the container's last log line.
    sys.exit(f"pypicache: bad configuration: {error}")

# A cache directory nobody can write (a read-only volume or file system, a wrong owner) would
# fail every worker's boot with a SQLite traceback ("unable to open database file") and then
# gunicorn's "Worker failed to boot": say what is wrong in one line instead, like a bad setting.
try:
    _settings.cache_dir.mkdir(parents=True, exist_ok=True)
    tempfile.TemporaryFile(dir=_settings.cache_dir).close()
except OSError as error:
    sys.exit(f"pypicache: PYPI_CACHE_DIR={_settings.cache_dir} is not writable: {error.strerror}")

# Several nodes (PYPI_STORAGE_URL) rest on the store's conditional writes: one that ignores
# them would let every node "win" each file and lease unnoticed, so it stops the server here.
if _settings.storage_url:
    from pypicache.s3 import S3Storage, UnsafeStore  # noqa: E402  (boto3 only where a bucket is used)

    try:
        _unchecked = S3Storage(_settings.storage_url, connect_timeout=_settings.connect_timeout,
                               read_timeout=_settings.read_timeout).check_conditions()
    except UnsafeStore as error:
        sys.exit(f"pypicache: {error}")
    if _unchecked:
        print(f"pypicache: could not check the bucket's conditional writes, going on: {_unchecked}",
              file=sys.stderr)

# The Flask factory; gunicorn calls it once per worker, after fork, so file locks and
# HTTP sessions are made per process (as filelock advises: "build a lock per use").
wsgi_app = "pypicache:create_app()"

# PYPI_BIND: 127.0.0.1:8080 by default; the image sets 0.0.0.0:80 because user images
# reach the cache as http://pypicache/simple (no port).
bind = [_settings.bind]

# PYPI_TRUSTED_PROXIES: which fronts gunicorn believes when they say the client came over https
# (X-Forwarded-Proto and the other secure_scheme_headers); the app then sees an https request
# and points PEP 740 provenance URLs at itself. Unset: gunicorn's default.
if _settings.trusted_proxies is not None:
    forwarded_allow_ips = ",".join(_settings.trusted_proxies)

# PYPI_WORKERS / PYPI_THREADS: processes share the cache through the disk and file locks.
workers = _settings.workers
threads = _settings.threads

# gthread, not sync: a sync worker serves one request at a time and its heartbeat stops
# while it does, so the arbiter kills it after `timeout` seconds in the middle of a long
# download (a 2 GB wheel on a slow upstream), and a few slow clients would block every
# other pip. With gthread each request runs in a pool thread and the worker's main loop
# keeps notifying the arbiter about once a second whatever its requests are doing.
worker_class = "gthread"

# Because of the above, `timeout` bounds only a worker whose main loop is stuck (a
# deadlock, a C extension holding the GIL); it never cuts a download, however long.
# Upstream stalls are bounded per read by PYPI_READ_TIMEOUT inside the app instead.
timeout = 60

# On SIGTERM (docker stop, a deploy) or SIGHUP (reload) a worker stops accepting and
# gets this long to finish the transfers in flight; anything cut after it is safe (the
# temp file is never published, followers see an aborted response), just wasted work.
# docker-compose.jupyterhub.yml sets stop_grace_period a little above this.
graceful_timeout = 30

# pip reuses one connection for the index page and all its files; keep it open a bit
# longer than the default 2 s so a resolver thinking between requests does not pay a
# new TCP handshake. nginx in front (docs/DEPLOY.md) keeps its own upstream keepalive.
keepalive = 15

# Workers heartbeat by touching a file in worker_tmp_dir. In a container /tmp is often
# overlayfs or a disk where that touch can block for seconds under I/O load (the cache
# writing gigabytes) and get a healthy worker killed; /dev/shm is tmpfs, never blocks.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None

# Access log to stdout (docker logs); X-Cache says hit, miss, follower, stale or
# revalidated ("-" for routes that are not cached), %(M)s is the duration in ms, so
# `docker logs pypicache | grep ' miss '` shows what went upstream and how long it took.
# The size is the response's Content-Length: gunicorn's own %(B)s stays 0 for bodies
# sent with sendfile(2), which is every cache hit. No user agent: pip's and uv's are
# a few hundred characters of JSON each.
accesslog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %({content-length}o)s %({x-cache}o)s %(M)sms'
errorlog = "-"
loglevel = "info"

# gunicorn 25+ opens a control socket under $HOME/.gunicorn by default: the image's
# user has no home, and two servers on one machine (tests) would share the path.
# pypicache does not use gunicornc, so no socket.
control_socket_disable = True

# Statistics and metrics (pypicache/stats). Prometheus counters are summed over workers
# by prometheus_client's multiprocess mode: a per-run directory of metric files, set in
# on_starting (the arbiter, before any worker exists), emptied at start; a dead worker's
# live gauges go in child_exit. post_request runs after gunicorn has sent a response, which is
# when a cache hit's bytes have really left (sendfile): its duration is the throughput d.
# Each worker flushes its counters into catalog.sqlite3 about once a second and when it
# exits (sys.exit runs atexit), so a graceful stop loses no count.
from pypicache.stats import gunicorn as _stats_hooks  # noqa: E402
from pypicache.database import NAME as _CATALOG, prepare as _prepare_catalog  # noqa: E402
from pypicache.cachedir import CacheDir as _Store  # noqa: E402
from pypicache.policyserve import prepare as _prepare_policy  # noqa: E402

post_request = _stats_hooks.post_request
on_exit = _stats_hooks.on_exit


# The app writes nothing to the cache when it is built (so `pypicache stats` changes
# nothing); the server makes it ready here, once, before any worker exists: its directories,
# the catalog created or brought up to date, and temp files that a crash left removed (a
# live download keeps its temp file flocked). A worker's first connection to the catalog
# checks its schema again and finds nothing to do.
def on_starting(server):
    _stats_hooks.on_starting(server)
    _Store(_settings.cache_dir).prepare()
    _prepare_catalog(_settings.cache_dir / _CATALOG)
    # With a policy: the copy of its file that workers fall back on, and the nginx front
    # told to serve no file from disk (pypicache/policyserve.py).
    _prepare_policy(_settings.cache_dir, _settings.policy_file)


# A worker that died (SIGKILL, the timeout) leaves the temp file of its download, its flock
# gone with it: removed now rather than at the next start. Never raise in the arbiter.
def child_exit(server, worker):
    _stats_hooks.child_exit(server, worker)
    try:
        _Store(_settings.cache_dir).sweep_temp()
    except OSError as error:
        server.log.warning("could not sweep the cache's tmp/: %s", error.strerror)


# Each worker, once its app is built: the reader of the nginx front's log started
# (pypicache/stats/frontlog.py) before any request reaches the worker.
def post_worker_init(worker):
    from pypicache.stats.setup import worker_started

    worker_started(worker.wsgi)


# Downloads and followers move 256 KiB chunks through many threads. glibc raises its mmap
# threshold the first time such a chunk is freed and from then on carves them out of
# per-thread arenas, which keep what they grew: a worker's RSS crept up with the number of
# concurrent streams (docs/BENCHMARKS.md, workload 7). A fixed threshold keeps every chunk
# mmapped and returned to the system when freed: memory stays flat whatever the file size.
def post_fork(server, worker):
    import ctypes

    try:
        ctypes.CDLL(None).mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD (glibc's malloc.h)
    except (OSError, AttributeError):  # not glibc: nothing to pin
        pass
