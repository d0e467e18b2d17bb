"""The cache directory's locks and atomic writes."""
import fcntl
import os
import threading

from app import wakeups
from app.store import Store


def test_a_lock_file_lives_only_while_held_and_a_waiter_on_the_old_file_tries_again(tmp_path):
    store = Store(tmp_path)
    fd = store.try_lock("a name")
    assert fd is not None and store.try_lock("a name") is None
    waiter = os.open(store.lock_path("a name"), os.O_RDWR)  # opened before the release
    store.unlock("a name", fd)
    assert list(store.locks.iterdir()) == []
    fcntl.flock(waiter, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the old file: locked, but gone
    again = store.try_lock("a name")  # a new file at the path: not blocked by the old one
    assert again is not None and store.try_lock("a name") is None
    os.close(waiter)
    store.unlock("a name", again)
    assert list(store.locks.iterdir()) == []


def test_write_atomic_keeps_its_temp_file_locked_until_the_rename(tmp_path):
    class Rebooting(Store):
        def publish(self, temp, target, mtime=None):
            Store(self.root).sweep_temp()  # another worker booting meanwhile (a HUP reload)
            super().publish(temp, target, mtime)

    store = Rebooting(tmp_path)
    store.write_atomic(store.pages / "demo" / "page.html", b"<html>")
    assert (store.pages / "demo" / "page.html").read_bytes() == b"<html>"
    assert list(store.tmp.iterdir()) == []


def test_a_waiter_in_this_process_wakes_at_the_change_it_waits_for():
    """app/wakeups.py: a download's follower or a lock's waiter in the writer's process wakes
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
