"""`pypicache policy check FILE` and `pypicache policy explain PROJECT[==VERSION]`: a policy
file validated and its rules printed, and what the policy in force does to a project's files."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from . import policy as decide
from .errors import ProxyError
from .policyfile import PolicyError, Rules, read, rfc3339


@click.group("policy")
def policy() -> None:
    """Check a policy file (PYPI_POLICY_FILE), or see what it does to a project."""


@policy.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def check(file: Path) -> None:
    """Validate FILE and print its rules; exit status 1 when it is bad."""
    try:
        rules = read(file)
    except PolicyError as error:
        click.echo(f"{file}: {error}", err=True)
        sys.exit(1)
    click.echo(f"{file}: valid (version {rules.digest})")
    for line in describe(rules):
        click.echo("  " + line)


def describe(rules: Rules) -> list[str]:
    """The rules in words, one per line."""
    lines = [f"mode: {rules.mode} ("
             + ("refused files and projects are 403s, held files leave the pages)"
                if rules.mode == "enforce" else "nothing is refused; what would be is logged "
                "and counted)")]
    if rules.min_age is not None:
        lines.append(f"cooldown: files uploaded less than {rules.min_age_text} "
                     f"({rules.min_age:.0f} s) ago are held until they are that old")
    if rules.freeze_at is not None:
        lines.append(f"freeze: nothing uploaded after {rfc3339(rules.freeze_at)} is served")
    if rules.timed:
        lines.append(f"unknown upload time: {rules.unknown_time}")
        lines.append("exempt from the cooldown and the freeze: "
                     + (", ".join(rules.exempt) or "none"))
        pins = sorted(f"{project}=={version}" for project, version in rules.allow)
        lines.append("break-glass releases: " + (", ".join(pins) or "none"))
    for entry in rules.deny:
        what = "the whole project" if entry.specifier is None else "these versions"
        lines.append(f"deny: {entry.text} ({what})")
    lines.append("allow-only: " + (", ".join(rules.allow_only) or "every project"))
    if (osv := rules.advisories) is not None:
        lines.append(f"advisories: {osv.index.records} OSV records of "
                     f"{len(osv.index.by_project)} projects from {osv.source}")
        lines.append("advisories block: " + (", ".join(sorted(osv.block)) or "nothing")
                     + "; fast lane: " + ("on" if osv.fast_lane else "off"))
        if osv.ignore:
            lines.append("advisories ignored: " + ", ".join(sorted(osv.ignore)))
    return lines


@policy.command()
@click.argument("requirement")
@click.option("--file", "path", type=click.Path(dir_okay=False, path_type=Path),
              help="A policy file [default: PYPI_POLICY_FILE].")
@with_appcontext
def explain(requirement: str, path: Path | None) -> None:
    """What the policy does to each file of PROJECT (or of PROJECT==VERSION), and why.

    The project's page is the cached one, fetched from the upstream if it is not cached."""
    services = current_app.extensions["pypicache"]
    path = path or services.settings.policy_file
    if path is None:
        raise click.UsageError("no policy: set PYPI_POLICY_FILE or give --file")
    try:
        rules = read(path)
        wanted = Requirement(requirement)
    except PolicyError as error:
        raise click.ClickException(f"{path}: {error}") from None
    except InvalidRequirement:
        raise click.BadParameter("must be PROJECT or PROJECT==VERSION", param_hint="REQUIREMENT")
    name = canonicalize_name(wanted.name)
    refusal = decide.project_refusal(rules, name)
    if refusal is not None:
        click.echo(f"{name}: refused, the whole project ({refusal.header}); mode {rules.mode}")
        return
    try:
        project = services.pages.model(services.pages.project(name))
    except ProxyError as error:
        raise click.ClickException(f"no page for {name}: {error.message}") from None
    now, shown = time.time(), 0
    refused = {f.filename: r for f in project.files
               if (r := decide.file_refusal(rules, name, f.filename, f.upload_time, now))}
    passed = decide.fast_lane(rules, project, refused, now)
    for file in project.files:
        version = decide.version_of(file.filename)
        if wanted.specifier and (version is None or version not in wanted.specifier):
            continue
        shown += 1
        refusal = refused.get(file.filename)
        uploaded = file.upload_time or "upload time unknown"
        verdict = "served" if refusal is None else f"refused: {refusal.header}"
        if file.filename in passed:
            verdict = f"served by the fast lane (it fixes an advisory; else {refusal.header})"
        click.echo(f"{file.filename}  ({uploaded})  {verdict}{_advisories(rules, name, version)}")
    click.echo(f"{shown} files of {name}; mode {rules.mode}"
               + ("" if rules.mode == "enforce" else ": nothing is refused, only reported"))


def _advisories(rules: Rules, project: str, version) -> str:
    """The advisories that affect a file's version, for `explain`."""
    if rules.advisories is None:
        return ""
    found = sorted({a.advisory.id for a in rules.advisories.index.affecting(project, version)})
    return f"  advisories: {', '.join(found)}" if found else ""
