"""The cache directory's locks and atomic writes."""
import fcntl
import os
import threading

from pypicache import wakeups
from pypicache.cachedir import CacheDir


def test_a_lock_file_lives_only_while_held_and_a_waiter_on_the_old_file_tries_again(tmp_path):
    cachedir = CacheDir(tmp_path)
    fd = cachedir.try_lock("a name")
    assert fd is not None and cachedir.try_lock("a name") is None
    waiter = os.open(cachedir.lock_path("a name"), os.O_RDWR)  # opened before the release
    cachedir.unlock("a name", fd)
    assert list(cachedir.locks.iterdir()) == []
    fcntl.flock(waiter, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the old file: locked, but gone
    again = cachedir.try_lock("a name")  # a new file at the path: not blocked by the old one
    assert again is not None and cachedir.try_lock("a name") is None
    os.close(waiter)
    cachedir.unlock("a name", again)
    assert list(cachedir.locks.iterdir()) == []


def test_write_atomic_keeps_its_temp_file_locked_until_the_rename(tmp_path):
    class Rebooting(CacheDir):
        def publish(self, temp, target, mtime=None):
            CacheDir(self.root).sweep_temp()  # another worker booting meanwhile (a HUP reload)
            super().publish(temp, target, mtime)

    cachedir = Rebooting(tmp_path)
    cachedir.write_atomic(cachedir.pages / "demo" / "page.html", b"<html>")
    assert (cachedir.pages / "demo" / "page.html").read_bytes() == b"<html>"
    assert list(cachedir.tmp.iterdir()) == []


def test_a_waiter_in_this_process_wakes_at_the_change_it_waits_for():
    """pypicache/wakeups.py: a download's follower or a lock's waiter in the writer's process wakes
    when told, not at the end of its delay; a change before the wait is not missed."""
    name = "demo.whl"
    early = wakeups.event(name)
    wakeups.changed(name)  # between the look and the wait
    assert wakeups.wait(name, early, 60)
    found = wakeups.event(name)
    assert found is not early  # each change starts a new event
    woke = []
    waiter = threading.Thread(target=lambda: woke.append(wakeups.wait(name, found, 60)))
    waiter.start()
    wakeups.changed("other.whl")
    wakeups.changed(name)
    waiter.join(30)
    assert woke == [True]
    quiet = wakeups.event(name)
    assert not wakeups.wait(name, quiet, 0.01)  # no change: the delay ends it
    assert name not in wakeups._events  # and nothing is left behind


def test_a_young_wait_looks_often_and_an_old_one_less():
    """wakeups.Backoff with `later`: within `most` for the first `after` seconds, then `later`
    (a follower of another worker's download looks 10 ms apart at first, then 50)."""
    young = wakeups.Backoff(0.0001, 0.0002, later=0.0008, after=3600)
    old = wakeups.Backoff(0.0001, 0.0002, later=0.0008, after=0)
    for _ in range(6):
        young.wait()
        old.wait()
    assert (young.delay, old.delay) == (0.0002, 0.0008)
    plain = wakeups.Backoff(0.0001, 0.0002)
    for _ in range(6):
        plain.wait()
    assert plain.delay == 0.0002
