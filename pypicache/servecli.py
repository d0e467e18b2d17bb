"""`pypicache serve`: gunicorn with the settings the package ships (pypicache/gunicorn_conf.py)."""
from __future__ import annotations

import os
import sys

import click

# A module, not a file path: an installed package has no gunicorn.conf.py beside it.
CONFIG = "python:pypicache.gunicorn_conf"


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("gunicorn_args", nargs=-1, type=click.UNPROCESSED)
def serve(gunicorn_args: tuple[str, ...]) -> None:
    """Run the server: gunicorn with pypicache's settings (PYPI_BIND, PYPI_WORKERS, ...).

    Every other argument goes to gunicorn, whose options win over the settings:
    `pypicache serve --log-level debug`, `pypicache serve --check-config`.
    """
    # `-m` puts the working directory first on sys.path: the image keeps no source tree there.
    command = [sys.executable, "-m", "gunicorn", "-c", CONFIG, *gunicorn_args]
    # exec, not a child: the server keeps this process's id, so a container's PID 1 is
    # gunicorn's arbiter and gets docker stop's SIGTERM itself (graceful shutdown).
    os.execv(sys.executable, command)
