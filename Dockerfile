# pypicache: an on-demand caching mirror of the Python package index.
#   docker build -t pypicache \
#     --build-arg PYPI_MIRROR_URL=https://pypi.tuna.tsinghua.edu.cn/simple \
#     --build-arg PYPI_PACKAGE_LOC=/packages .
#   docker run -d --name pypicache -p 8080:80 -v pypicache:/srv/pypicache/data pypicache
# See docs/DEPLOY.md for the JupyterHub compose file, nginx and upgrades.
FROM python:3.11-slim

# The upstream, baked into the image (docker-compose.jupyterhub.yml passes them from .env).
# An empty value (the default, or an unset variable in .env) means "the default": app/config.py
# treats an empty variable as unset, so the upstream is then the one pip itself uses by default
# and the package location /packages. Both can still be overridden with `docker run -e`.
ARG PYPI_MIRROR_URL=""
ARG PYPI_PACKAGE_LOC=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /srv/pypicache/app

# Pinned requirements first, alone: this layer is rebuilt only when they change, not on
# every edit of the code below.
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

# A system user without a home or shell owns the cache and nothing else: the code stays
# root-owned and read-only to the server.
RUN useradd --system --uid 10001 --user-group --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin pypicache \
    && mkdir -p /srv/pypicache/data \
    && chown pypicache:pypicache /srv/pypicache/data

COPY gunicorn.conf.py .
COPY templates ./templates
COPY app ./app

ENV PYPI_MIRROR_URL=${PYPI_MIRROR_URL} \
    PYPI_PACKAGE_LOC=${PYPI_PACKAGE_LOC} \
    PYPI_CACHE_DIR=/srv/pypicache/data \
    PYPI_BIND=0.0.0.0:80

# Declared after the chown so a new named volume starts as a copy of this directory, owned by
# pypicache (a host bind mount must be chowned to uid 10001 by hand, see docs/DEPLOY.md).
VOLUME /srv/pypicache/data

# Non-root on port 80: since Docker 20.10 every container's network namespace has
# net.ipv4.ip_unprivileged_port_start=0, so any user may bind port 80 inside it, no
# capability needed. (Not with --network host, where the host's sysctl applies: set
# PYPI_BIND=0.0.0.0:8080 there.) Port 80 because user images use http://pypicache/simple.
# Numeric, so a runtime that checks "not root" (Kubernetes runAsNonRoot) can verify it.
USER 10001:10001
EXPOSE 80

# slim has no curl: ask the health endpoint with Python, on the port the server really binds
# (read through app.config like everything else); any error or a non-200 answer is exit 1.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; from app.config import load; port = load().bind.rpartition(':')[2]; sys.exit(urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4).status != 200)"]

# Exec form: gunicorn is PID 1 and gets docker stop's SIGTERM itself (graceful shutdown).
CMD ["gunicorn", "-c", "gunicorn.conf.py"]
