# pypicache: an on-demand caching mirror of the Python package index.
#   docker build -t pypicache \
#     --build-arg PYPI_MIRROR_URL=https://pypi.tuna.tsinghua.edu.cn/simple \
#     --build-arg PYPI_PACKAGE_LOC=/packages .
#   docker run -d --name pypicache -p 8080:80 -v pypicache:/srv/pypicache/data pypicache
# See docs/DEPLOY.md for the compose files, upgrades and sizing.

# Any Debian-like image with python3 and its venv module: the official one by default; tests
# build on a stand-in made from Debian's packages (tests/test_docker.py).
ARG PYTHON_IMAGE=python:3.12-slim
FROM ${PYTHON_IMAGE}

# The upstream, baked into the image (docker-compose.jupyterhub.yml passes them from .env).
# An empty value (the default, or an unset variable in .env) means "the default": pypicache/config.py
# treats an empty variable as unset, so the upstream is then the one pip itself uses by default
# and the package location /packages. Both can still be overridden with `docker run -e`.
ARG PYPI_MIRROR_URL=""
ARG PYPI_PACKAGE_LOC=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

WORKDIR /srv/pypicache/app

# A virtual environment: the same on the official image and on a distribution's python3,
# whose system pip refuses to install (PEP 668). Pinned requirements first, alone: this
# layer is rebuilt only when they change, not on every edit of the code below.
COPY requirements.txt .
RUN python3 -m venv /opt/venv \
    && pip install --no-cache-dir -r requirements.txt

# A system user without a home or shell owns the cache and nothing else: the code stays
# root-owned and read-only to the server.
RUN useradd --system --uid 10001 --user-group --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin pypicache \
    && mkdir -p /srv/pypicache/data \
    && chown pypicache:pypicache /srv/pypicache/data

COPY docker/pypicache/entrypoint.sh /usr/local/bin/pypicache-entrypoint
COPY docker/pypicache/wait-for-store /usr/local/bin/pypicache-wait-for-store

# The package, installed as `pip install .` installs it anywhere: its dependencies are the
# pinned layer above (--no-deps keeps them; pip check proves they meet the package's ranges).
# Built from a copy outside the workdir, which is removed: the server runs the installed
# package, never a source tree that the working directory would put first on sys.path.
COPY pyproject.toml setup.cfg README.md /tmp/pypicache-src/
COPY pypicache /tmp/pypicache-src/pypicache
RUN pip install --no-cache-dir --no-deps /tmp/pypicache-src \
    && pip check \
    && rm -rf /tmp/pypicache-src

# For a command that names it (`gunicorn -c gunicorn.conf.py`, docker/swarm/): the installed
# package's settings, the same as `pypicache serve`.
COPY gunicorn.conf.py .

ENV PYPI_MIRROR_URL=${PYPI_MIRROR_URL} \
    PYPI_PACKAGE_LOC=${PYPI_PACKAGE_LOC} \
    PYPI_CACHE_DIR=/srv/pypicache/data \
    PYPI_BIND=0.0.0.0:80

# Declared after the chown so a new named volume starts as a copy of this directory, owned by
# pypicache.
VOLUME /srv/pypicache/data

# No USER: the entrypoint starts as root only to give the cache volume to uid 10001 (a volume
# written by an older image that ran as root, a host directory), then drops to that uid before
# gunicorn starts. Started as 10001 itself (docker run --user, Kubernetes runAsUser), it
# changes nothing and just runs the command.
# Port 80 as non-root: since Docker 20.10 every container's network namespace has
# net.ipv4.ip_unprivileged_port_start=0, so any user may bind port 80 inside it. (Not with
# --network host, where the host's sysctl applies: set PYPI_BIND=0.0.0.0:8080 there.)
EXPOSE 80

# slim has no curl: ask the health endpoint with Python, on the port the server really binds
# (read through pypicache.config like everything else); any error or a non-200 answer is exit 1.
HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; from pypicache.config import load; port = load().bind.rpartition(':')[2]; sys.exit(urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4).status != 200)"]

# Exec form: after the entrypoint's exec and `pypicache serve`'s own, gunicorn is PID 1 and
# gets docker stop's SIGTERM itself (graceful shutdown).
ENTRYPOINT ["pypicache-entrypoint"]
CMD ["pypicache", "serve"]
