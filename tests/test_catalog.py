"""The catalog's promised hashes and removal log: what a page can change, and their bounds."""
import multiprocessing
import subprocess
import sys
from pathlib import Path

from app import catalog as catalog_module, database
from app.catalog import Catalog
from app.index import File, Project

SHA = "a" * 64


def _project(name: str, count: int, sha256: str | None = SHA) -> Project:
    files = tuple(
        File(f"{name}-{i}.tar.gz", f"aa/{name}-{i}.tar.gz",
             {"sha256": sha256} if sha256 else {}, size=None if sha256 is None else 10)
        for i in range(count))
    return Project(name, files)


def test_a_page_without_hashes_never_erases_a_known_hash(tmp_path):
    catalog = Catalog(tmp_path / "catalog.sqlite3")
    catalog.expect(_project("demo", 1))
    catalog.expect(_project("demo", 1, sha256=None))  # the same file, re-read from bare HTML
    assert catalog.expected("aa/demo-0.tar.gz") == ("demo", SHA, 10)
    catalog.expect(_project("demo", 1, sha256="b" * 64))  # a page that names another hash wins
    assert catalog.expected("aa/demo-0.tar.gz")[1] == "b" * 64


def test_promised_hashes_stay_under_the_row_cap_forgetting_whole_old_projects(tmp_path):
    catalog = Catalog(tmp_path / "catalog.sqlite3", max_rows=10)
    catalog.expect(_project("first", 6))
    assert catalog.prune_expected("first") == []
    catalog.expect(_project("second", 6))
    assert catalog.prune_expected("second") == ["first"]
    assert catalog.expected("aa/first-0.tar.gz") == (None, None, None)
    assert catalog.expected("aa/second-5.tar.gz")[0] == "second"
    rows = catalog._connect().execute("SELECT COUNT(*) FROM expected").fetchone()[0]
    assert rows == 6


def test_the_removal_log_keeps_only_the_latest_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(catalog_module, "REMOVED_KEPT", 5)
    catalog = Catalog(tmp_path / "catalog.sqlite3")
    for i in range(12):
        catalog.forget(f"aa/demo-{i}.tar.gz", "evicted")
    assert [row[0] for row in catalog.removed()] == [f"aa/demo-{i}.tar.gz" for i in range(11, 6, -1)]


def _open_catalog(path: str, start) -> None:
    start.wait()
    Catalog(Path(path))


def test_workers_starting_together_all_open_a_new_catalog(tmp_path):
    """gunicorn's workers create the catalog at the same moment: SQLite refused one of two
    switching the new file to WAL about once in a hundred starts, and that worker died."""
    context = multiprocessing.get_context("fork")
    for round_ in range(30):
        path = tmp_path / f"{round_}.sqlite3"
        start = context.Barrier(6)
        workers = [context.Process(target=_open_catalog, args=(str(path), start))
                   for _ in range(6)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        assert [worker.exitcode for worker in workers] == [0] * 6, round_


def test_preparing_the_file_again_leaves_this_processs_connections_whole(tmp_path):
    """A process's first write prepares the catalog while other connections of the process
    may be open (another app, another thread). Closing a descriptor of the file would drop
    their fcntl locks: another process leaving then deleted the WAL under them, and they read
    on without the other processes' writes (a file listed on a page answered 404)."""
    path = tmp_path / "catalog.sqlite3"
    mine = Catalog(path).prepare()
    mine.add_cached("a/one-1.0.tar.gz", "one", 1, "0" * 64)  # this process's connection, open
    database.prepare(path)
    visit = ("import sqlite3, sys; "
             "sqlite3.connect(sys.argv[1]).execute('SELECT COUNT(*) FROM cached').fetchone()")
    write = ("import sqlite3, sys; sqlite3.connect(sys.argv[1], isolation_level=None).execute("
             "\"INSERT INTO cached VALUES ('b/two-1.0.tar.gz', 'two', 1, '0', 0, 0, 0)\")")
    for code in (visit, write):  # another process in and out, then a third that writes
        subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=60)
    assert sorted(row[0] for row in mine.files()) == ["a/one-1.0.tar.gz", "b/two-1.0.tar.gz"]
