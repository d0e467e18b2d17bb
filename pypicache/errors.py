"""Errors that carry their HTTP status, so views never decide how a fault is answered."""
from __future__ import annotations


class ProxyError(Exception):
    """Base class: a message for the client and the status it is answered with."""

    status = 500

    def __init__(self, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after  # seconds, sent as Retry-After when given


class BadRequest(ProxyError):
    status = 400


class NotFound(ProxyError):
    status = 404


class UpstreamError(ProxyError):
    """The upstream failed (refused, bad status, bad bytes): 502 Bad Gateway."""

    status = 502


class UpstreamTimeout(UpstreamError):
    status = 504


class IntegrityError(UpstreamError):
    """The bytes do not match what the index said (length or sha256)."""


class StorageError(ProxyError):
    """The cache directory cannot take the file (disk full, read-only)."""

    status = 507


class Busy(ProxyError):
    """Every upstream download slot stayed taken for the bounded wait: 503, try again later."""

    status = 503
