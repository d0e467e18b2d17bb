"""docker/pypicache/wait-for-store: the image's wait for the bucket's server before the start
of a node (the swarm stack's command, the Kubernetes init container), run as a process."""
from __future__ import annotations

import runpy
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "docker" / "pypicache" / "wait-for-store"


def start(url: str, *command: str) -> subprocess.Popen:
    env = {"AWS_ENDPOINT_URL": url, "PATH": "/usr/bin:/bin"}
    return subprocess.Popen([sys.executable, str(SCRIPT), *command], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_it_waits_until_the_store_listens_then_runs_the_command():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    waiting = start(f"http://127.0.0.1:{port}", "echo", "started")
    time.sleep(1.5)
    assert waiting.poll() is None, waiting.communicate()  # nothing listens yet: still waiting
    with socket.socket() as store:
        store.bind(("127.0.0.1", port))
        store.listen()
        threading.Thread(target=lambda: store.accept()[0].close(), daemon=True).start()
        out, err = waiting.communicate(timeout=10)
    assert (waiting.returncode, out, err) == (0, "started\n", "")


def test_without_an_endpoint_there_is_nothing_to_wait_for():
    started = time.monotonic()
    done = start("", "echo", "at once")
    assert done.communicate(timeout=10) == ("at once\n", "")
    assert time.monotonic() - started < 5


def test_a_store_that_never_answers_is_given_up_after_the_limit():
    wait = runpy.run_path(str(SCRIPT), run_name="wait_for_store")["wait"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    assert wait(f"http://127.0.0.1:{port}", limit=1) is False
    assert 1 <= time.monotonic() - started < 5
