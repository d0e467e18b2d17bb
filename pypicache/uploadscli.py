"""`pypicache uploads yank|unyank|delete PROJECT VERSION`: the local index's releases
(PYPI_UPLOADS) marked yanked (PEP 592) or not, or removed; shown on the next page read."""
from __future__ import annotations

import sys

import click
from flask import current_app
from flask.cli import with_appcontext
from packaging.version import InvalidVersion, Version

from .errors import BadRequest, ProxyError
from .names import project_name


@click.group("uploads")
def uploads() -> None:
    """Yank, un-yank or delete releases of the local index (PYPI_UPLOADS)."""


def _change(what: str, project: str, version: str, reason: str | None = None) -> None:
    index = current_app.extensions["pypicache"].uploads
    if index is None:
        click.echo("the local index is off: set PYPI_UPLOADS=1", err=True)
        sys.exit(1)
    try:
        name = project_name(project)
        Version(version)
        if what == "delete":
            count = index.delete(name, version)
        else:
            count = index.yank(name, version, reason)
    except (BadRequest, ProxyError) as error:
        click.echo(f"{project}: {error.message}", err=True)
        sys.exit(1)
    except InvalidVersion:
        click.echo(f"{version}: not a version", err=True)
        sys.exit(1)
    if not count:
        click.echo(f"{name} {version}: no such release in the local index", err=True)
        sys.exit(1)
    click.echo(f"{name} {version}: {count} file{'s' if count != 1 else ''} {what}"
               f"{'d' if what.endswith('e') else 'ed'}")


@uploads.command()
@click.argument("project")
@click.argument("version")
@click.option("--reason", default="", help="Why (clients show it).")
@with_appcontext
def yank(project: str, version: str, reason: str) -> None:
    """Yank VERSION of PROJECT: installers skip it unless it is pinned (PEP 592)."""
    _change("yank", project, version, reason)


@uploads.command()
@click.argument("project")
@click.argument("version")
@with_appcontext
def unyank(project: str, version: str) -> None:
    """Undo a yank of VERSION of PROJECT."""
    _change("unyank", project, version, None)


@uploads.command()
@click.argument("project")
@click.argument("version")
@click.confirmation_option(prompt="Delete these files for good?")
@with_appcontext
def delete(project: str, version: str) -> None:
    """Remove VERSION of PROJECT's files from the local index for good."""
    _change("delete", project, version)
