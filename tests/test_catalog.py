"""The catalog: what it holds (files, pages, rare listings), its bounds, its start-up."""
import multiprocessing
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from pypicache import catalog as catalog_module, database
from pypicache.catalog import Catalog
from pypicache.errors import Busy, StorageError

SHA = "a" * 64


def test_a_catalog_of_an_earlier_release_loses_its_per_file_rows_and_their_space(tmp_path):
    path = tmp_path / "catalog.sqlite3"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE expected (path TEXT PRIMARY KEY, project TEXT, sha256 TEXT, "
                "size INTEGER, at REAL)")
    old.executemany("INSERT INTO expected VALUES (?, 'demo', ?, 10, 0)",
                    [(f"aa/demo-{i}.tar.gz", SHA) for i in range(20_000)])
    old.commit()
    old.close()
    before = path.stat().st_size
    catalog = Catalog(path)
    tables = {row[0] for row in catalog._connect().execute("SELECT name FROM sqlite_master")}
    assert "expected" not in tables and {"cached", "pages", "listed_under"} <= tables
    assert path.stat().st_size < before / 4


def test_pages_count_in_the_disk_use_and_in_the_least_recent_order(tmp_path):
    catalog = Catalog(tmp_path / "catalog.sqlite3")
    catalog.add_cached("aa/old-1.0.tar.gz", "old", 1000, SHA)
    catalog.record_page("old", 300)
    catalog.record_page("new", 200)
    catalog.write_pending()
    db = catalog._connect()
    db.execute("UPDATE cached SET last_used = 20")
    db.execute("UPDATE pages SET last_used = 10 WHERE project = 'old'")
    db.execute("UPDATE pages SET last_used = 30 WHERE project = 'new'")
    usage = catalog.usage()
    assert (usage.files, usage.bytes, usage.pages, usage.page_bytes) == (1, 1000, 2, 500)
    assert usage.disk == 1500 + usage.catalog_bytes and usage.catalog_bytes > 0
    assert catalog.least_recent() == [("page", "old", 300), ("file", "aa/old-1.0.tar.gz", 1000),
                                      ("page", "new", 200)]
    catalog.add_stats([], {}, {}, pages={"old": 40.0})  # served again: now the most recent
    assert catalog.least_recent()[-1] == ("page", "old", 300)
    catalog.record_page("old", 0)  # gone from the disk
    catalog.write_pending()
    assert catalog.usage().pages == 1


def test_files_listed_under_another_project_are_found_and_nothing_else_is_written(tmp_path):
    catalog = Catalog(tmp_path / "catalog.sqlite3")
    catalog.record_listed("demo", [])  # the usual case: no write at all
    catalog.record_listed("demo", ["aa/Odd_Name-1.0.tar.bz2"])
    assert catalog.listed_under("aa/Odd_Name-1.0.tar.bz2") == "demo"
    assert catalog.listed_under("aa/other-1.0.tar.gz") is None


def test_metadata_hashes_are_those_of_cached_metadata_files(tmp_path):
    catalog = Catalog(tmp_path / "catalog.sqlite3")
    catalog.add_cached("aa/demo-1.0-py3-none-any.whl.metadata", "demo", 10, SHA)
    catalog.add_cached("aa/demo-1.0-py3-none-any.whl", "demo", 100, "b" * 64)
    catalog.add_cached("aa/other-1.0-py3-none-any.whl.metadata", "other", 10, "c" * 64)
    assert catalog.metadata_hashes("demo") == {"aa/demo-1.0-py3-none-any.whl.metadata": SHA}


@pytest.mark.parametrize("code, error", [(5, Busy), (6, Busy), (13, StorageError), (8, StorageError)])
def test_sqlite_faults_of_storage_become_our_errors(code, error):
    fault = sqlite3.OperationalError("database is locked")
    fault.sqlite_errorcode = code
    with pytest.raises(error):
        with database.translated():
            raise fault
    assert database.storage_error(sqlite3.OperationalError("no such table")) is None


def test_the_wal_is_truncated_by_a_checkpoint(tmp_path):
    catalog = Catalog(tmp_path / "catalog.sqlite3")
    for i in range(2000):
        catalog.record_cached(f"aa/demo-{i}.tar.gz", "demo", 10, SHA)
    catalog.write_pending()
    wal = tmp_path / "catalog.sqlite3-wal"
    assert wal.stat().st_size > 0
    catalog.checkpoint()
    assert wal.stat().st_size == 0


def test_the_removal_log_keeps_only_the_latest_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(catalog_module, "REMOVED_KEPT", 5)
    catalog = Catalog(tmp_path / "catalog.sqlite3")
    for i in range(12):
        catalog.forget(f"aa/demo-{i}.tar.gz", "evicted")
    assert [row[0] for row in catalog.removed()] == [f"aa/demo-{i}.tar.gz" for i in range(11, 6, -1)]


def _open_catalog(path: str, start) -> None:
    start.wait()
    Catalog(Path(path)).prepare()


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
