"""Blueprints: they decide how to answer, lower layers decide what."""
from __future__ import annotations

from typing import TYPE_CHECKING

from flask import current_app

if TYPE_CHECKING:  # app/__init__.py imports the views
    from .. import Services


def services() -> Services:
    """This app's services (app/__init__.py), built once per app, so once per worker."""
    return current_app.extensions["pypicache"]
