"""pypicache: an on-demand caching mirror of a Python package index (a Flask app)."""
from __future__ import annotations

# The one place of the version: setup.cfg reads it (`attr:`), `pypicache --version`, /healthz
# and the dashboard show it. CHANGELOG.md says what each one changed.
__version__ = "1.0.0"

import logging
import sqlite3
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flask import Flask, Response

from . import config, database, uploads
from .cachedir import CacheDir
from .catalog import Catalog
from .errors import ProxyError
from .fetch import Fetcher
from .httpclient import Upstream
from .legacyjson import LegacyJson
from .listings import Listings
from .metadata import Metadata
from .pages import Pages
from .policyfile import PolicyError
from .policywatch import LAST_GOOD, Watcher
from .policyserve import PolicyService
from .prefetch import Prefetcher
from .provenancefetch import Provenance
from .quarantine import Quarantine
from .stats.signals import file_cached
from .uploads import LocalIndex

if TYPE_CHECKING:  # boto3 only where a bucket is used
    from .cluster import Cluster

log = logging.getLogger(__name__)


@dataclass
class Services:
    """Everything a view needs, built once per app (and so once per worker)."""

    settings: config.Settings
    cachedir: CacheDir
    catalog: Catalog
    upstream: Upstream
    fetcher: Fetcher
    pages: Pages
    listings: Listings
    metadata: Metadata
    cluster: Cluster | None = None  # when files are shared through a bucket
    uploads: LocalIndex | None = None  # the team's own packages (PYPI_UPLOADS)
    prefetch: Prefetcher = field(init=False)  # what a client will ask for next
    policy: PolicyService | None = field(init=False)  # with PYPI_POLICY_FILE only
    legacy: LegacyJson = field(init=False)  # the legacy JSON API's documents
    provenance: Provenance = field(init=False)  # PEP 740 provenance, cached with the files
    quarantine: Quarantine = field(init=False)  # PEP 792: projects the upstream quarantined

    def __post_init__(self) -> None:
        self.prefetch = Prefetcher(self.settings, self.pages, self.metadata, self.fetcher)
        self.provenance = Provenance(self.fetcher)
        # A file's provenance comes along with its download, for sites without the upstream.
        file_cached.connect(self.provenance.after_download, sender=self.fetcher)
        self.legacy = LegacyJson(self.pages, self.metadata)
        self.quarantine = self.pages.refresher.status.quarantine
        if self.cluster is not None:  # a quarantined project's files go from the bucket too
            self.quarantine.stores.append(self.cluster.bucket)
        self.policy = None
        if self.settings.policy_file is not None:
            try:
                watcher = Watcher(self.settings.policy_file, self.settings.cache_dir / LAST_GOOD)
            except PolicyError as error:  # bad, and no good copy to fall back on
                raise config.ConfigError(f"PYPI_POLICY_FILE: the policy file {error}") from None
            self.policy = PolicyService(watcher, self.pages, self.listings)

    @classmethod
    def build(cls, settings: config.Settings) -> "Services":
        """The services of these settings; building them writes nothing to the cache."""
        cachedir = CacheDir(settings.cache_dir)
        catalog = Catalog(settings.cache_dir / database.NAME)
        upstream = Upstream(settings)
        local = uploads.build(settings, cachedir)
        pages = Pages(settings, cachedir, catalog, upstream, local)
        listings = Listings(settings, pages, catalog)
        if not settings.storage_url:
            fetcher = Fetcher(settings, cachedir, catalog, upstream, listings)
            return cls(settings, cachedir, catalog, upstream, fetcher, pages, listings,
                       Metadata(fetcher, local), uploads=local)
        from .cluster import Cluster, ClusterFetcher  # boto3 only where a bucket is used
        from .peers import Peers
        from .s3 import S3Storage

        bucket = S3Storage(settings.storage_url, connect_timeout=settings.connect_timeout,
                           read_timeout=settings.read_timeout, connections=settings.threads)
        bucket.address = settings.node_url  # in our leases: where the other nodes read from us
        peers = None
        if settings.node_url:
            peers = Peers(upstream, settings.cluster_secret, settings.node_url)
        cluster = Cluster(bucket, cachedir, catalog)
        fetcher = ClusterFetcher(settings, cachedir, catalog, upstream, listings, cluster=cluster,
                                 redirect=settings.s3_redirect, peers=peers)
        return cls(settings, cachedir, catalog, upstream, fetcher, pages, listings,
                   Metadata(fetcher, local), cluster, uploads=local)


def _log_like_gunicorn() -> None:
    """Under gunicorn, our log lines (app.*) go where its error log goes, at its level."""
    server = logging.getLogger("gunicorn.error")
    ours = logging.getLogger(__name__)
    if server.handlers and not ours.handlers:
        ours.handlers = list(server.handlers)
        ours.setLevel(server.level)
        ours.propagate = False


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """The app: settings from the environment (overridden by `test_config`), services, views."""
    _log_like_gunicorn()
    app = Flask(__name__)  # templates: pypicache/templates, shipped in the package
    overrides = dict(test_config or {})
    settings = config.load(overrides.pop("environ", None), **overrides)
    services = Services.build(settings)
    app.extensions["pypicache"] = services
    app.config["PYPICACHE"] = settings
    app.jinja_env.globals["pypicache_version"] = __version__
    # Nothing above wrote to the cache, so a read-only command (`pypicache stats`) leaves it
    # as it is: gunicorn prepares it as the server starts, a process's first write otherwise.

    @app.errorhandler(ProxyError)
    def proxy_error(error: ProxyError) -> Response:
        if error.status >= 500:
            log.warning("%s: %s", type(error).__name__, error.message)
        response = Response(error.message + "\n", status=error.status, mimetype="text/plain")
        if error.retry_after is not None:
            response.headers["Retry-After"] = str(error.retry_after)
        return response

    @app.errorhandler(sqlite3.OperationalError)
    def catalog_error(error: sqlite3.OperationalError) -> Response:
        # A full or read-only cache disk reaches the catalog too: a clear 507 (a busy one, 503).
        storage = database.storage_error(error)
        if storage is None:
            raise error
        return proxy_error(storage)

    from . import auth
    from .cli import pypicache
    from .stats.setup import install
    from .views import browse, jsonapi, ops, packages, peers, policypage, simple

    auth.install(app, settings.auth_file, settings.auth_scope, settings.cache_dir)
    app.register_blueprint(simple.bp)
    app.register_blueprint(jsonapi.bp)
    app.register_blueprint(packages.bp)
    app.register_blueprint(peers.bp)
    app.register_blueprint(ops.bp)
    install(app, services)  # statistics, metrics, eviction (pypicache/stats)
    app.register_blueprint(browse.bp)
    app.register_blueprint(policypage.bp)
    if settings.uploads:
        from .views import uploads as upload_view

        app.register_blueprint(upload_view.bp)
    app.cli.add_command(pypicache)
    return app
