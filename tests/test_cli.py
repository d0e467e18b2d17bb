"""The command-line tools: warm, prune, verify, stats."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

from .fixture_upstream import Upstream
from app.catalog import Catalog

from .servers import ROOT, Proxy, clean_environ, pip_install


def _put(app, path: str, data: bytes, project: str = "demo", record: bytes | None = None) -> None:
    """A cached file on disk, recorded in the catalog with the sha256 of `record` (or `data`)."""
    services = app.extensions["pypicache"]
    target = services.store.file(path)
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
    services.store.file("aa/gone-1.0.tar.gz").unlink()
    stray = services.store.file("bb/stray-1.0.tar.gz")  # on disk, unknown to the catalog
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"stray")
    result = runner.invoke(args=["pypicache", "verify"])
    assert result.exit_code == 0, result.output
    assert "verified 4 files" in result.output and "2 removed, 1 adopted" in result.output
    assert not services.store.file("aa/bad-1.0.tar.gz").exists()
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
    command = [sys.executable, "-m", "flask", "--app", "app:create_app", "pypicache", *args]
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
        command = [sys.executable, "-m", "flask", "--app", "app:create_app", "pypicache", "warm",
                   "-r", str(requirements), "--proxy", proxy.url]
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
