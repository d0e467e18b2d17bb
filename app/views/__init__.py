"""Blueprints: they decide how to answer, lower layers decide what."""
from __future__ import annotations

from flask import current_app


def services():
    return current_app.extensions["pypicache"]
