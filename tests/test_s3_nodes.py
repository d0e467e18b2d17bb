"""Several gunicorn nodes with their own directories sharing one bucket (moto's S3 server)."""
from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import requests

from .fixture_upstream import Upstream
from .s3_server import MotoS3
from .servers import Proxy, add_chain, installed, pip_install, uv_install

pytestmark = pytest.mark.e2e
MIB = 1 << 20


@contextlib.contextmanager
def cluster(tmp_path: Path, moto: MotoS3, up: Upstream, count: int, peers: bool = False,
            **env: str):
    """`count` nodes (2 workers each: the machine has 2 cores), one bucket prefix per test;
    with `peers`, each node has its PYPI_NODE_URL (nodes read each other's downloads)."""
    prefix = f"{tmp_path.name}/"
    shared = up.env() | moto.env() | {"PYPI_STORAGE_URL": f"s3://{moto.bucket}/{prefix}"} | env
    if peers:
        shared |= {"PYPI_CLUSTER_SECRET": "a secret the nodes share"}
    nodes: list[Proxy] = []
    try:
        for i in range(count):
            node = Proxy(tmp_path / f"node{i}" / "cache", shared, workers=2)
            if peers:
                node.env["PYPI_NODE_URL"] = node.url
            nodes.append(node.start())
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def file_url(node: Proxy, file) -> str:
    return f"{node.url}/packages/{file.path.split('/packages/', 1)[1]}"


def bucket_files(moto: MotoS3, tmp_path: Path) -> list[str]:
    return [key.rsplit("/", 1)[-1] for key in moto.keys(f"{tmp_path.name}/files/")]


def shared_soon(moto: MotoS3, tmp_path: Path, timeout: float = 30) -> list[str]:
    """bucket_files, once the node's share thread (after its download) has put something."""
    deadline = time.monotonic() + timeout
    while not (found := bucket_files(moto, tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return found


def newcomer_name(node: Proxy) -> str:
    return (node.cache_dir / "node").read_text()


def fetch(url: str, **headers: str) -> tuple[str, str]:
    """(X-Cache, sha256 of the body); ("cut", ...) when the body was cut short."""
    digest = hashlib.sha256()
    try:
        with requests.get(url, headers=headers, stream=True, timeout=60) as response:
            response.raise_for_status()
            for chunk in response.iter_content(256 * 1024):
                digest.update(chunk)
            return response.headers.get("X-Cache", ""), digest.hexdigest()
    except requests.RequestException:
        return "cut", digest.hexdigest()


@pytest.mark.parametrize("count", [2, 3])
def test_sixteen_cold_clients_over_the_nodes_cause_one_download(tmp_path, moto, count):
    up = Upstream(tmp_path / "up", throttle=8 * MIB).start()
    big = up.add_file("big", "big-1.0.tar.gz", size=8 * MIB)  # about a second upstream
    try:
        with cluster(tmp_path, moto, up, count) as nodes:
            for node in nodes:  # each node renders the page (and learns the sha256) itself
                assert requests.get(f"{node.url}/simple/big/", timeout=10).ok
            results, barrier = [None] * 16, threading.Barrier(16)

            def client(i: int) -> None:
                barrier.wait()
                results[i] = fetch(file_url(nodes[i % count], big))

            threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(120)
            assert {digest for _, digest in results} == {big.sha256}, results
            assert up.downloads(big.filename) == 1
            kinds = sorted(kind for kind, _ in results)
            assert kinds.count("miss") == 1 and "bucket" in kinds, kinds
            # A client the loaded machine starts after the publish finds it on its node: a hit.
            assert set(kinds) <= {"miss", "follower", "bucket", "hit"}
            assert bucket_files(moto, tmp_path) == [big.filename]
    finally:
        up.stop()


def first_byte_then_all(url: str, first: list, i: int) -> tuple[str, str]:
    """fetch(), noting in first[i] the moment the first bytes came."""
    digest = hashlib.sha256()
    try:
        with requests.get(url, stream=True, timeout=60) as response:
            response.raise_for_status()
            for chunk in response.iter_content(64 * 1024):
                if first[i] is None:
                    first[i] = time.monotonic()
                digest.update(chunk)
            return response.headers.get("X-Cache", ""), digest.hexdigest()
    except requests.RequestException:
        return "cut", digest.hexdigest()


def test_a_long_download_is_read_by_the_other_nodes_as_it_lands(tmp_path, moto):
    """Longer than any node's patience (5.5 s here): without PYPI_NODE_URL each node downloads
    it; with it, one upstream download, and every client has bytes while it runs."""
    up = Upstream(tmp_path / "up", throttle=1 * MIB).start()
    big = up.add_file("big", "big-1.0.tar.gz", size=10 * MIB)  # ten seconds upstream
    try:
        with cluster(tmp_path, moto, up, 3, peers=True) as nodes:
            for node in nodes:
                assert requests.get(f"{node.url}/simple/big/", timeout=10).ok
            results, first = [None] * 9, [None] * 9
            ended = {}
            leader = threading.Thread(target=lambda: ended.setdefault(
                "at", (first_byte_then_all(file_url(nodes[0], big), first, 0), time.monotonic())))
            leader.start()
            while first[0] is None:  # the first node has begun: the others come after
                time.sleep(0.05)

            def client(i: int) -> None:
                results[i] = first_byte_then_all(file_url(nodes[i % 3], big), first, i)

            threads = [threading.Thread(target=client, args=(i,)) for i in range(1, 9)]
            for thread in threads:
                thread.start()
            for thread in threads + [leader]:
                thread.join(120)
            results[0], done = ended["at"]
            assert {digest for _, digest in results} == {big.sha256}, results
            assert up.downloads(big.filename) == 1
            assert all(at < done for at in first), "a client had no byte until the end"
            for node in nodes[1:]:
                assert "downloading here too" not in node.logs()
            assert shared_soon(moto, tmp_path) == [big.filename]
    finally:
        up.stop()


def test_a_leader_killed_midway_is_taken_over_from_where_the_bytes_stop(tmp_path, moto):
    """The node reading another's download takes the lease over once it expires and asks
    the upstream for the rest only; its client gets the whole, verified file."""
    up = Upstream(tmp_path / "up", throttle=1 * MIB).start()
    big = up.add_file("big", "big-1.0.tar.gz", size=12 * MIB)
    try:
        with cluster(tmp_path, moto, up, 2, peers=True, PYPI_READ_TIMEOUT="20") as (lead, other):
            for node in (lead, other):
                assert requests.get(f"{node.url}/simple/big/", timeout=10).ok
            with requests.get(file_url(lead, big), stream=True, timeout=60) as response:
                next(response.iter_content(64 * 1024))  # the lead node's download is under way
                result = {}
                reader = threading.Thread(target=lambda: result.setdefault(
                    "got", fetch(file_url(other, big))))
                reader.start()
                while up.written(big.filename) < 5 * MIB:
                    time.sleep(0.05)
                os.killpg(lead.process.pid, signal.SIGKILL)
                lead.process.wait()
            reader.join(120)
            assert result["got"][1] == big.sha256, result
            assert "took over the download" in other.logs()
            # The dead node's bytes, then the rest by a range: the file once, and little more.
            assert up.written(big.filename) <= big.size + 2 * MIB
            assert shared_soon(moto, tmp_path) == [big.filename]  # by the node that finished
    finally:
        up.stop()


def test_a_leader_stopping_gracefully_is_waited_for_not_downloaded_again(tmp_path, moto):
    """A `docker stop` of the node downloading a file: it refuses new connections at once but
    ends its download, serves its own client to the end and puts the file into the bucket; a
    node asked for the file meanwhile serves it from there instead of downloading it too."""
    up = Upstream(tmp_path / "up", throttle=1 * MIB).start()
    big = up.add_file("big", "big-1.0.tar.gz", size=4 * MIB)  # four seconds upstream
    try:
        with cluster(tmp_path, moto, up, 2, peers=True) as (lead, other):
            for node in (lead, other):
                assert requests.get(f"{node.url}/simple/big/", timeout=10).ok
            first, result = [None], {}
            leader = threading.Thread(target=lambda: result.setdefault(
                "lead", first_byte_then_all(file_url(lead, big), first, 0)))
            leader.start()
            while first[0] is None:  # its download is under way
                time.sleep(0.05)
            os.kill(lead.process.pid, signal.SIGTERM)  # gunicorn's graceful stop
            deadline = time.monotonic() + 10
            with contextlib.suppress(requests.ConnectionError, requests.Timeout):
                while time.monotonic() < deadline:  # refused, or left in the listen queue
                    requests.get(f"{lead.url}/healthz", timeout=1)
                    time.sleep(0.05)
            assert time.monotonic() < deadline, "the stopping node still answered"
            got = fetch(file_url(other, big))
            leader.join(60)
            assert result["lead"][1] == got[1] == big.sha256, (result, got)
            assert up.downloads(big.filename) == 1
            assert "downloading here too" not in other.logs()
            assert "took over" not in other.logs()
            assert shared_soon(moto, tmp_path) == [big.filename]
    finally:
        up.stop()


def test_a_node_killed_mid_download_leaves_nothing_and_another_node_serves(tmp_path, moto):
    up = Upstream(tmp_path / "up", throttle=1 * MIB).start()
    big = up.add_file("big", "big-1.0.tar.gz", size=6 * MIB)  # six seconds upstream
    try:
        with cluster(tmp_path, moto, up, 2) as (first, second):
            for node in (first, second):
                assert requests.get(f"{node.url}/simple/big/", timeout=10).ok
            with requests.get(file_url(first, big), stream=True, timeout=30) as response:
                assert response.headers["X-Cache"] == "miss"
                next(response.iter_content(64 * 1024))  # the download is under way
                os.killpg(first.process.pid, signal.SIGKILL)
                first.process.wait()
                with pytest.raises(requests.RequestException):
                    for _ in response.iter_content(64 * 1024):
                        pass
            assert bucket_files(moto, tmp_path) == []  # nothing partial was shared
            # The dead node's lease expires, or the second node's patience runs out first.
            assert fetch(file_url(second, big)) == ("miss", big.sha256)
            assert up.downloads(big.filename) == 2
            assert bucket_files(moto, tmp_path) == [big.filename]
            key = moto.keys(f"{tmp_path.name}/files/")[0]
            body = moto.client().get_object(Bucket=moto.bucket, Key=key)["Body"].read()
            assert hashlib.sha256(body).hexdigest() == big.sha256
    finally:
        up.stop()


def test_every_node_and_a_new_one_serve_every_file_with_the_upstream_stopped(tmp_path, moto):
    up = Upstream(tmp_path / "up").start()
    files = [up.add_file("pkg", f"pkg-{n}.0.tar.gz", size=(n + 1) * 100_000) for n in range(3)]
    try:
        with cluster(tmp_path, moto, up, 2) as nodes:
            for i, file in enumerate(files):  # each file warmed through one node only
                node = nodes[i % 2]
                assert requests.get(f"{node.url}/simple/pkg/", timeout=10).ok
                assert fetch(file_url(node, file)) == ("miss", file.sha256)
            up.stop()
            newcomer = Proxy(tmp_path / "new" / "cache", nodes[0].env, workers=2).start()
            try:
                for node in (*nodes, newcomer):
                    for file in files:
                        kind, digest = fetch(file_url(node, file))
                        assert digest == file.sha256 and kind in ("hit", "bucket")
                expected = files[2].disk_path.read_bytes()
                url = file_url(newcomer, files[2])
                part = requests.get(url, headers={"Range": "bytes=1000-1999"}, timeout=10)
                assert part.status_code == 206 and part.headers["X-Cache"] == "bucket"
                assert part.content == expected[1000:2000]
                assert part.headers["Content-Range"] == f"bytes 1000-1999/{len(expected)}"
                tail = requests.get(url, headers={"Range": "bytes=-10"}, timeout=10)
                assert tail.status_code == 206 and tail.content == expected[-10:]
                bad = requests.get(url, headers={"Range": f"bytes={len(expected)}-"}, timeout=10)
                assert bad.status_code == 416
                etag = part.headers["ETag"]
                again = requests.get(url, headers={"If-None-Match": etag}, timeout=10)
                assert again.status_code == 304
                head = requests.head(url, timeout=10)
                assert head.status_code == 200
                assert int(head.headers["Content-Length"]) == len(expected)
                assert not list((newcomer.cache_dir / "files").rglob("*.tar.gz"))  # streamed
                time.sleep(1.5)  # each worker adds its counts to its node's catalog each second
                for node in (*nodes, newcomer):  # each shares its own figures as it answers
                    requests.get(f"{node.url}/stats.json", timeout=10).raise_for_status()
                shared = requests.get(f"{nodes[0].url}/stats.json", timeout=10).json()["cluster"]
                assert len(shared["nodes"]) == 3
                assert shared["total"]["misses"] == shared["total"]["downloads"] == 3
                assert shared["total"]["hits"] >= 9
                by_node = {row["node"]: row for row in shared["nodes"]}
                assert by_node[newcomer_name(newcomer)]["files"] == 0
                assert sum(row["hits"] for row in by_node.values()) == shared["total"]["hits"]
                page = requests.get(f"{newcomer.url}/", timeout=10).text
                assert "(this node)" in page and newcomer_name(newcomer) in page
            finally:
                newcomer.stop()
            assert sum(up.downloads(f.filename) for f in files) == 3
    finally:
        up.stop()


def test_pip_through_one_node_then_uv_through_another_redirected_to_the_bucket(tmp_path, moto):
    up = Upstream(tmp_path / "up").start()
    wheels = add_chain(up)
    try:
        with cluster(tmp_path, moto, up, 1) as (first,):
            done = pip_install(f"{first.url}/simple", tmp_path / "t1", "alpha")
            assert done.returncode == 0, done.stderr
            redirecting = Proxy(tmp_path / "node1" / "cache",
                                first.env | {"PYPI_S3_REDIRECT": "1"}, workers=2).start()
            try:
                gamma = wheels["gamma-1.0-py3-none-any.whl"]
                url = file_url(redirecting, gamma)
                moved = requests.get(url, allow_redirects=False, timeout=10)
                assert moved.status_code == 302 and moved.headers["X-Cache"] == "bucket"
                # A HEAD is answered by the node: a URL presigned for a GET is a 403 to a HEAD.
                head = requests.head(url, allow_redirects=False, timeout=10)
                assert head.status_code == 200 and head.headers["X-Cache"] == "bucket"
                assert int(head.headers["Content-Length"]) == gamma.size
                assert moved.headers["Location"].startswith(moto.url + "/")
                assert hashlib.sha256(requests.get(moved.headers["Location"], timeout=10).content
                                      ).hexdigest() == gamma.sha256
                index = f"{redirecting.url}/simple"
                done = uv_install(index, tmp_path / "t2", tmp_path / "uv", "alpha")
                assert done.returncode == 0, done.stderr
                assert " 302 " in redirecting.logs()
            finally:
                redirecting.stop()
            assert installed(tmp_path / "t2") == {"alpha": "1.0", "beta": "1.0", "gamma": "1.0"}
            for name in ("alpha", "beta", "gamma"):
                assert up.downloads(f"{name}-1.0-py3-none-any.whl") == 1
    finally:
        up.stop()


def test_core_metadata_read_from_a_wheel_in_the_bucket(tmp_path, moto):
    up = Upstream(tmp_path / "up", metadata=False).start()
    gamma = add_chain(up)["gamma-1.0-py3-none-any.whl"]
    try:
        with cluster(tmp_path, moto, up, 2) as (first, second):
            for node in (first, second):
                assert requests.get(f"{node.url}/simple/gamma/", timeout=10).ok
            assert fetch(file_url(first, gamma)) == ("miss", gamma.sha256)
            answer = requests.get(file_url(second, gamma) + ".metadata", timeout=30)
            assert answer.status_code == 200, answer.text
            assert b"Name: gamma" in answer.content and b"Version: 1.0" in answer.content
            assert up.downloads(gamma.filename) == 1
            assert "metadata of gamma-1.0-py3-none-any.whl extracted" not in second.logs()
            # Extracted once, put in the bucket with the wheel: a third node takes it there.
            assert gamma.filename + ".metadata" in bucket_files(moto, tmp_path)
            third = Proxy(tmp_path / "node2" / "cache", first.env, workers=2).start()
            try:
                assert requests.get(f"{third.url}/simple/gamma/", timeout=10).ok
                answer = requests.get(file_url(third, gamma) + ".metadata", timeout=30)
                assert answer.status_code == 200 and answer.headers["X-Cache"] == "bucket"
                assert b"Name: gamma" in answer.content
                assert "extracted" not in third.logs()
            finally:
                third.stop()
    finally:
        up.stop()
