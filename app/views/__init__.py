"""Blueprints: they decide how to answer, lower layers decide what."""
from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Response, current_app, request

from ..auth import USER
from ..policy import HEADER, Refusal
from ..policyserve import Who

if TYPE_CHECKING:  # app/__init__.py imports the views
    from .. import Services


def services() -> Services:
    """This app's services (app/__init__.py), built once per app, so once per worker."""
    return current_app.extensions["pypicache"]


def who() -> Who:
    """The client as the policy's audit log names it: its address (and what a proxy in front
    says of it), and its user once app/auth.py has verified the login."""
    address = request.remote_addr or "-"
    if forwarded := request.headers.get("X-Forwarded-For"):
        address += f" (forwarded for {forwarded[:200]})"
    return Who(address, request.environ.get(USER))


def refused(refusal: Refusal, what: str) -> Response:
    """A policy's refusal: 403, the rule in the body and the header (docs/POLICY.md)."""
    return Response(refusal.message(what) + "\n", 403, {HEADER: refusal.header},
                    mimetype="text/plain")
