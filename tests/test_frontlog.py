"""The nginx front's log of hits read into the statistics: once, whoever reads, whatever is cut."""
from __future__ import annotations

import os
import time

import pytest

from pypicache.catalog import Catalog
from pypicache.stats import frontlog
from pypicache.stats.frontlog import FrontLog
from pypicache.cachedir import CacheDir


def line(path: str, method="GET", status=200, size=10, seconds=0.002) -> str:
    """One line as docker/nginx/nginx.conf.template's log_format writes it."""
    return f"{time.time():.3f}\t{method}\t{status}\t{path}\t{size}\t{seconds:.3f}\n"


def readers(tmp_path, count=2):
    """A cache with a front, and `count` readers of its log as separate workers would have."""
    cachedir = CacheDir(tmp_path / "cache").prepare()
    (cachedir.root / "front").mkdir()
    seen = []
    catalog = cachedir.root / "catalog.sqlite3"
    made = [FrontLog(cachedir, Catalog(catalog).prepare(), lambda *counts: seen.append(counts))
            for _ in range(count)]
    return cachedir, made, seen


def test_every_complete_line_counts_once_whichever_worker_reads(tmp_path):
    cachedir, (one, two), seen = readers(tmp_path)
    log = cachedir.root / "front" / "2026-01-01T10.log"
    log.write_text(line("a/x.whl") + line("a/x.whl", status=304, size=0) + line("a/x.whl", "HEAD")
                   + line("a/x.whl", status=416) + "not a line of ours\n" + line("b/y.whl", status=206)[:20])
    assert one.read() == 5  # the cut last line waits for its end
    assert two.read() == 0 and one.read() == 0
    with open(log, "a") as out:
        out.write(line("b/y.whl", status=206)[20:])
    assert two.read() == 1
    totals = one.catalog.totals()
    assert totals["requests_hit"] == 3  # two GETs of a.whl (200, 304) and the 206
    assert totals["bytes_hit"] == 20
    assert totals[frontlog.OFFSET + log.name] == log.stat().st_size
    assert seen == [(2, 10), (1, 10)]


def test_a_log_read_to_its_end_goes_once_nginx_has_moved_on(tmp_path):
    cachedir, (one,), _ = readers(tmp_path, 1)
    old = cachedir.root / "front" / "2026-01-01T10.log"
    new = cachedir.root / "front" / "2026-01-01T11.log"
    old.write_text(line("a/x.whl"))
    new.write_text(line("a/x.whl"))
    assert one.read() == 2
    assert old.exists()  # written to recently: nginx may still finish a request there
    past = time.time() - frontlog.DONE_AFTER - 1
    os.utime(old, (past, past))
    os.utime(new, (past, past))
    assert one.read() == 0
    assert not old.exists() and new.exists()  # the newest stays: nginx writes there
    assert one.catalog.totals()["requests_hit"] == 2


def test_no_front_no_work_and_one_thread_per_process(tmp_path):
    cachedir = CacheDir(tmp_path / "cache").prepare()
    reader = FrontLog(cachedir, Catalog(cachedir.root / "catalog.sqlite3").prepare())
    assert reader.read() == 0 and reader.catalog.totals() == {}
    reader.start()
    thread = reader._thread
    reader.start()
    assert reader._thread is thread and thread.is_alive()


def test_a_log_that_goes_takes_its_offset_with_it(tmp_path):
    cachedir, (one,), _ = readers(tmp_path, 1)
    logs = [cachedir.root / "front" / f"2026-01-01T1{i}.log" for i in range(4)]
    past = time.time() - frontlog.DONE_AFTER - 1
    for log in logs:
        log.write_text(line("a/x.whl"))
        os.utime(log, (past, past))
    assert one.read() == 4
    offsets = {name for name in one.catalog.totals() if name.startswith(frontlog.OFFSET)}
    assert offsets == {frontlog.OFFSET + logs[-1].name}  # the newest stays, as its total
    assert one.catalog.totals()["requests_hit"] == 4


def test_a_crash_while_a_log_goes_never_counts_its_lines_twice(tmp_path, monkeypatch):
    cachedir, (one,), _ = readers(tmp_path, 1)
    old, new = (cachedir.root / "front" / f"2026-01-01T1{hour}.log" for hour in (0, 1))
    old.write_text(line("a/x.whl") + line("a/x.whl"))
    new.write_text("")
    past = time.time() - frontlog.DONE_AFTER - 1
    os.utime(old, (past, past))
    real_unlink = type(old).unlink

    def cannot(path, missing_ok=False):  # the log's unlink fails: its total must stay
        if path != old:
            return real_unlink(path, missing_ok=missing_ok)
        raise PermissionError(path)

    monkeypatch.setattr(type(old), "unlink", cannot)
    with pytest.raises(PermissionError):
        one.read()
    assert old.exists() and one.catalog.totals()[frontlog.OFFSET + old.name] == old.stat().st_size

    def crash_after(path, missing_ok=False):  # the log goes, the process dies before the commit
        real_unlink(path, missing_ok=missing_ok)
        if path == old:
            raise KeyboardInterrupt

    monkeypatch.setattr(type(old), "unlink", crash_after)
    with pytest.raises(KeyboardInterrupt):
        one.read()
    monkeypatch.setattr(type(old), "unlink", real_unlink)
    assert not old.exists() and frontlog.OFFSET + old.name in one.catalog.totals()
    assert one.read() == 0  # the total of a file that is gone goes at the next read
    totals = one.catalog.totals()
    assert frontlog.OFFSET + old.name not in totals and totals["requests_hit"] == 2
