"""The command-line tools (`pypicache ...`, pypicache/cli.py): warm, prune, verify, stats."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .fixture_upstream import Upstream
from pypicache.catalog import Catalog

from .servers import ROOT, Proxy, clean_environ, pip_install


def _put(app, path: str, data: bytes, project: str = "demo", record: bytes | None = None) -> None:
    """A cached file on disk, recorded in the catalog with the sha256 of `record` (or `data`)."""
    services = app.extensions["pypicache"]
    target = services.cachedir.file(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    digest = hashlib.sha256(data if record is None else record).hexdigest()
    services.catalog.add_cached(path, project, len(data), digest)


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def test_stats_prints_totals_and_projects(app, runner):
    _put(app, "aa/demo-1.0.tar.gz", b"x" * 2000)
    result = runner.invoke(args=["pypicache", "stats"])
    assert result.exit_code == 0, result.output
    assert "cached: 1 files, 1 projects, 2.0 KB; 0 index pages, 0 B; disk use " in result.output
    assert result.output.splitlines()[0].endswith("(no cap)")
    assert "demo" in result.output
    data = json.loads(runner.invoke(args=["pypicache", "stats", "--json"]).output)
    assert data["files"] == 1 and data["project_list"][0]["name"] == "demo"
    assert [round(row["note"], 4) for row in data["savings"]] == [0.4875, 0.65, 0.78, 0.8775]


def test_prune_to_a_size(app, runner):
    for i in range(4):
        _put(app, f"aa/demo-{i}.tar.gz", b"x" * 1000)
    own = app.extensions["pypicache"].catalog.usage().catalog_bytes  # counts against it too
    result = runner.invoke(args=["pypicache", "prune", "--to", str(2500 + own)])
    assert result.exit_code == 0, result.output
    assert "removed 2 files (2.0 KB)" in result.output
    assert len(app.extensions["pypicache"].catalog.files()) == 2


def test_prune_refuses_a_bad_size_and_no_size_without_a_cap(runner):
    bad = runner.invoke(args=["pypicache", "prune", "--to", "lots"])
    assert bad.exit_code == 2 and "--to" in bad.output
    missing = runner.invoke(args=["pypicache", "prune"])
    assert missing.exit_code == 2 and "PYPI_CACHE_MAX_SIZE" in missing.output


def test_verify_removes_and_records_mismatches_and_adopts_strays(app, runner):
    services = app.extensions["pypicache"]
    _put(app, "aa/good-1.0.tar.gz", b"good", project="good")
    _put(app, "aa/bad-1.0.tar.gz", b"flipped bits", project="bad", record=b"original bits")
    _put(app, "aa/gone-1.0.tar.gz", b"gone", project="gone")
    services.cachedir.file("aa/gone-1.0.tar.gz").unlink()
    stray = services.cachedir.file("bb/stray-1.0.tar.gz")  # on disk, unknown to the catalog
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"stray")
    result = runner.invoke(args=["pypicache", "verify"])
    assert result.exit_code == 0, result.output
    assert "verified 4 files" in result.output and "2 removed, 1 adopted" in result.output
    assert not services.cachedir.file("aa/bad-1.0.tar.gz").exists()
    assert sorted(row[0] for row in services.catalog.files()) == [
        "aa/good-1.0.tar.gz", "bb/stray-1.0.tar.gz"]
    assert {(r[0], r[3]) for r in services.catalog.removed()} == {
        ("aa/bad-1.0.tar.gz", "verify: sha256 mismatch"),
        ("aa/gone-1.0.tar.gz", "verify: file missing")}
    # The dashboard shows the removals too.
    assert b"verify: sha256 mismatch" in app.test_client().get("/").data


def _cli(cache_dir, *args: str, **env: str) -> subprocess.CompletedProcess:
    """The CLI as an operator runs it: a process of its own, settings from the environment."""
    environ = clean_environ() | {"PYPI_CACHE_DIR": str(cache_dir),
                                 "PYPI_MIRROR_URL": "http://127.0.0.1:9/simple"} | env
    command = [sys.executable, "-m", "pypicache", *args]
    return subprocess.run(command, cwd=ROOT, env=environ, capture_output=True, text=True,
                          timeout=120)


def test_verify_adoption_is_written_for_other_processes_and_eviction_counts_it(tmp_path):
    cache = tmp_path / "cache"
    for name in ("old", "new"):  # on disk, no catalog rows (a SIGKILL lost them)
        file = cache / "files" / "aa" / f"{name}-1.0.tar.gz"
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(name.encode() * 1000)
    done = _cli(cache, "verify")
    assert done.returncode == 0, done.stderr
    assert "2 adopted into the catalog" in done.stdout
    reader = Catalog(cache / "catalog.sqlite3")  # this process, not the one that adopted
    assert sorted((row[0], row[1], row[2]) for row in reader.files()) == [
        ("aa/new-1.0.tar.gz", "new", 3000), ("aa/old-1.0.tar.gz", "old", 3000)]
    own = reader.usage().catalog_bytes  # the catalog counts against the cap too
    prune = _cli(cache, "prune", PYPI_CACHE_MAX_SIZE=str(4000 + own))
    assert prune.returncode == 0, prune.stderr
    on_disk = [f for f in (cache / "files").rglob("*") if f.is_file()]
    assert len(on_disk) == 1 and sum(f.stat().st_size for f in on_disk) <= 4000


def _tree(root: Path) -> dict[str, tuple]:
    """Every entry under `root`, the root included: inode, size, mtime and mode."""
    return {str(p.relative_to(root)): (s.st_ino, s.st_size, s.st_mtime_ns, s.st_mode)
            for p in [root, *root.rglob("*")] for s in [p.lstat()]}


def _stopped_servers_cache(cache: Path) -> None:
    """A cache as a stopped server leaves it: a file with its row and a hit, a front log read
    to its end long ago, the temp file of a crashed download, no -wal or -shm."""
    file = cache / "files" / "aa" / "demo-1.0.tar.gz"
    file.parent.mkdir(parents=True)
    file.write_bytes(b"x" * 2000)
    catalog = Catalog(cache / "catalog.sqlite3")
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    catalog.add_cached("aa/demo-1.0.tar.gz", "demo", 2000, digest)
    catalog.add_stats([(1, 1.0, "aa/demo-1.0.tar.gz")], {"requests_hit": 1}, {})
    catalog.release()
    for directory in ("pages", "tmp", "locks", "front"):
        (cache / directory).mkdir()
    (cache / "tmp" / "0123.crashed.part").write_bytes(b"half")
    (cache / "front" / "2026-01-01T10.log").write_text("")
    os.utime(cache / "front" / "2026-01-01T10.log", (1e9, 1e9))
    assert not list(cache.glob("*-wal"))


def test_stats_writes_nothing_to_the_cache(tmp_path):
    cache = tmp_path / "cache"
    _stopped_servers_cache(cache)
    before = _tree(cache)
    entries = sorted([cache, *cache.rglob("*")], reverse=True)  # children before parents
    for entry in entries:  # a read-only cache; root ignores the modes, the tree shows it all
        entry.chmod(0o555 if entry.is_dir() else 0o444)
    try:
        done = _cli(cache, "stats")
        as_json = _cli(cache, "stats", "--json")
    finally:
        for entry in reversed(entries):
            entry.chmod(0o755 if entry.is_dir() else 0o644)
    assert done.returncode == 0, done.stderr
    assert "cached: 1 files, 1 projects, 2.0 KB" in done.stdout and "1 hit" in done.stdout
    assert as_json.returncode == 0 and json.loads(as_json.stdout)["files"] == 1
    assert _tree(cache) == before


def test_stats_reads_a_running_servers_catalog_through_its_wal(tmp_path):
    cache = tmp_path / "cache"
    _stopped_servers_cache(cache)
    server = Catalog(cache / "catalog.sqlite3")  # holds the WAL open, as a running server does
    server.add_cached("aa/new-1.0.tar.gz", "new", 3000, "0" * 64)
    names = set(_tree(cache))
    assert "catalog.sqlite3-wal" in names
    done = _cli(cache, "stats")
    assert done.returncode == 0, done.stderr
    assert "cached: 2 files, 2 projects, 5.0 KB" in done.stdout  # the row still in the WAL
    assert set(_tree(cache)) == names
    server.release()


def test_stats_on_a_missing_cache_says_so_and_makes_none(tmp_path):
    done = _cli(tmp_path / "nowhere", "stats")
    assert done.returncode == 1 and "no cache at" in done.stderr
    assert not (tmp_path / "nowhere").exists()


def test_the_flask_form_of_the_commands_still_works(tmp_path):
    """`flask --app pypicache:create_app pypicache ...`, the form before the `pypicache` command."""
    command = [sys.executable, "-m", "flask", "--app", "pypicache:create_app", "pypicache",
               "stats"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=clean_environ() | {"PYPI_CACHE_DIR": str(tmp_path / "nowhere")})
    assert done.returncode == 1 and "no cache at" in done.stderr


def test_a_bad_setting_is_one_line_naming_the_variable(tmp_path):
    done = _cli(tmp_path / "cache", "stats", PYPI_BIND="nowhere")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "pypicache: bad configuration: PYPI_BIND='nowhere': must be HOST:PORT or unix:PATH"]


@pytest.mark.e2e
def test_warm_fetches_everything_a_requirements_file_needs(tmp_path):
    up = Upstream(tmp_path / "up").start()
    up.add_wheel("alpha", "1.0", requires=["beta>=1"])
    up.add_wheel("beta", "1.0", requires=["gamma"])
    up.add_wheel("gamma", "1.0")
    up.add_wheel("unrelated", "1.0")
    proxy = Proxy(tmp_path / "cache", up.env()).start()
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("alpha\n")
    try:
        command = [sys.executable, "-m", "pypicache", "warm", "-r", str(requirements),
                   "--proxy", proxy.url]
        warm = subprocess.run(command, cwd=ROOT, env=proxy.env, capture_output=True, text=True,
                              timeout=120)
        assert warm.returncode == 0, warm.stderr
        assert "3 files to warm" in warm.stdout and "warmed 3 files" in warm.stdout
        assert "100%" in warm.stdout, warm.stdout  # the progress bar ran to its end
        wheels = {p.name for p in (proxy.cache_dir / "files").rglob("*.whl")}
        assert wheels == {f"{n}-1.0-py3-none-any.whl" for n in ("alpha", "beta", "gamma")}
        up.stop()  # everything pip needs is now in the cache
        again = pip_install(f"{proxy.url}/simple", tmp_path / "target", "alpha")
        assert again.returncode == 0, again.stderr
    finally:
        proxy.stop()
        up.stop()
