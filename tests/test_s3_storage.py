"""The storage interface against a real S3 API (moto's server on 127.0.0.1) and a directory."""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
import yaml

from pypicache import bucketcli, config, convert, create_app, s3, s3leases
from pypicache.config import ConfigError
from pypicache.storage import LocalStorage

from .s3_server import ConditionsDropped
from .test_deploy import ROOT, schema_errors


@pytest.fixture
def bucket(moto, monkeypatch, request):
    for name, value in moto.env().items():
        monkeypatch.setenv(name, value)
    return s3.S3Storage(f"s3://{moto.bucket}/{request.node.name}")


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path):
    if request.param == "local":
        return LocalStorage(tmp_path / "files")
    return request.getfixturevalue("bucket")


def _file(tmp_path, data: bytes, name: str = "upload"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_store_get_and_ranges(storage, tmp_path):
    assert storage.store("ab/cd/pkg-1.0.tar.gz", _file(tmp_path, b"0123456789"))
    blob = storage.get("ab/cd/pkg-1.0.tar.gz")
    assert blob.size == 10
    assert b"".join(blob.chunks()) == b"0123456789"
    assert b"".join(blob.chunks(3, 7)) == b"3456"
    assert b"".join(blob.chunks(9)) == b"9"
    assert b"".join(blob.chunks(5, 5)) == b""
    assert blob.read(8, 100) == b"89"  # wheelmeta reads a wheel's METADATA so
    blob.close()
    with pytest.raises(FileNotFoundError):
        storage.get("ab/cd/other-1.0.tar.gz")
    with pytest.raises(FileNotFoundError):
        storage.get("ab/cd")  # a folder is no file


def test_delete_by_prefix_and_list(storage, tmp_path):
    for path in ("a/b/one.whl", "a/b/two.whl", "a/bc/three.whl", "z/four.whl"):
        assert storage.store(path, _file(tmp_path, path.encode()))
    assert sorted(item.path for item in storage.list("a/b")) == ["a/b/one.whl", "a/b/two.whl"]
    assert storage.delete("a/b") == 2
    assert storage.delete("z/four.whl") == 1
    assert [(item.path, item.size) for item in storage.list()] == [("a/bc/three.whl", 14)]


def test_first_verified_writer_wins_in_the_bucket(bucket, tmp_path):
    assert bucket.store("p/x.whl", _file(tmp_path, b"first"))
    assert not bucket.store("p/x.whl", _file(tmp_path, b"second"))  # If-None-Match: * -> 412
    assert b"".join(bucket.get("p/x.whl").chunks()) == b"first"


def test_presigned_url_serves_the_file(bucket, tmp_path):
    bucket.store("p/y.whl", _file(tmp_path, b"signed bytes"))
    answer = requests.get(bucket.url("p/y.whl"), timeout=10)
    assert answer.status_code == 200 and answer.content == b"signed bytes"


def test_leases_one_holder_then_the_next(bucket):
    first = bucket.lease("p/z.whl")
    assert isinstance(first, s3leases.S3Lease)
    assert bucket.lease("p/z.whl") is None
    other = bucket.lease("p/other.whl")
    assert isinstance(other, s3leases.S3Lease)
    first.release()
    other.release()
    second = bucket.lease("p/z.whl")
    assert isinstance(second, s3leases.S3Lease)
    second.release()


def test_a_lease_is_renewed_while_held_and_taken_over_once_expired(bucket, monkeypatch):
    monkeypatch.setattr(s3leases, "LEASE_SECONDS", 2.0)  # the store's clock counts whole seconds
    held = bucket.lease("p/long.whl")
    threading.Event().wait(4.5)  # more than twice the lifetime: only renewals keep it
    assert bucket.lease("p/long.whl") is None
    held._done.set()  # its node dies: no more renewals, no release
    threading.Event().wait(2 + s3leases.CLOCK_STEP + 1.5)
    taker = bucket.lease("p/long.whl")
    assert isinstance(taker, s3leases.S3Lease)
    held.release()  # a late release of the dead holder's ETag leaves the new lease alone
    assert bucket.lease("p/long.whl") is None
    taker.release()


@pytest.mark.parametrize("skew", [60, -60])
def test_leases_agree_whatever_the_nodes_clocks_say(bucket, monkeypatch, skew):
    """A lease's age is the store's to tell (its Date against the lease's Last-Modified): a node
    whose clock is a minute off neither takes a live lease nor waits on a dead one forever."""
    monkeypatch.setattr(s3leases, "LEASE_SECONDS", 2.0)
    held = bucket.lease("p/skew.whl")
    assert isinstance(held, s3leases.S3Lease)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + skew)  # the other node's clock
    other = s3.S3Storage(bucket.location)
    assert other.lease("p/skew.whl") is None  # live: renewed by its holder
    threading.Event().wait(3)
    assert other.lease("p/skew.whl") is None  # still live past its first lifetime
    held._done.set()  # its node dies: no more renewals
    threading.Event().wait(2 + s3leases.CLOCK_STEP + 1.5)
    taker = other.lease("p/skew.whl")
    assert isinstance(taker, s3leases.S3Lease)
    taker.release()


def test_a_store_that_ignores_conditional_writes_is_refused(bucket, moto, monkeypatch):
    assert bucket.check_conditions() is None  # moto honours If-None-Match and If-Match
    relay = ConditionsDropped(moto.url)
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", relay.url)
        ignoring = s3.S3Storage(bucket.location)
        with pytest.raises(s3.UnsafeStore, match="If-None-Match: \\*, If-Match"):
            ignoring.check_conditions()
        assert not [key for key in moto.keys() if "/checks/" in key]  # it cleans up after itself
    finally:
        relay.stop()


@pytest.mark.e2e
def test_the_server_refuses_cluster_mode_on_a_store_that_ignores_conditions(moto, tmp_path):
    relay = ConditionsDropped(moto.url)
    try:
        env = {key: value for key, value in os.environ.items() if not key.startswith("PYPI_")}
        env |= moto.env() | {"AWS_ENDPOINT_URL": relay.url, "PYPI_CACHE_DIR": str(tmp_path),
                             "PYPI_STORAGE_URL": f"s3://{moto.bucket}/refused/",
                             "PYPI_BIND": "127.0.0.1:0"}
        result = subprocess.run([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"],
                                cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "ignores conditional writes" in lines[0], result.stderr
    finally:
        relay.stop()


def test_healthz_says_whether_the_bucket_answers(bucket, make_app, monkeypatch):
    found = make_app(storage_url=bucket.location).test_client().get("/healthz")
    assert found.status_code == 200
    assert found.json["bucket"] == {"reachable": True, "error": None}
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    away = make_app(storage_url=bucket.location).test_client()
    answer = away.get("/healthz")
    assert answer.status_code == 200  # a node serves without its bucket: not a failure
    assert answer.json["bucket"]["reachable"] is False
    assert "did not answer" in answer.json["bucket"]["error"]
    assert "127.0.0.1" not in answer.json["bucket"]["error"]
    assert away.get("/healthz").json["bucket"] == answer.json["bucket"]  # cached, not asked again


def test_racing_nodes_get_one_lease(bucket):
    barrier, results = threading.Barrier(8), []

    def claim():
        storage = s3.S3Storage(bucket.location)  # a client of its own, as a node has
        barrier.wait()
        results.append(storage.lease("p/race.whl"))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    holders = [lease for lease in results if lease is not None]
    assert len(holders) == 1
    holders[0].release()


def test_an_unreachable_bucket_is_a_miss_not_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    away = s3.S3Storage("s3://nowhere/x", connect_timeout=1, read_timeout=1)
    with pytest.raises(FileNotFoundError):
        away.get("p/a.whl")
    assert away.store("p/a.whl", _file(tmp_path, b"bytes")) is False
    assert away.lease("p/a.whl") is not None  # on its own: the node's flock still holds
    assert away.node_stats() == {}
    assert away._away()  # and it does not wait for the store again at once
    with pytest.raises(FileNotFoundError):
        away.get("p/a.whl")


@pytest.mark.parametrize("url", ["s3:/b", "gs://bucket/x", "s3://", "s3:///prefix", "s3://B/x"])
def test_bad_storage_urls(url):
    with pytest.raises(ConfigError, match="PYPI_STORAGE_URL"):
        config.load({"PYPI_STORAGE_URL": url})


def test_storage_settings(tmp_path):
    assert convert.s3_location("s3://bucket") == ("bucket", "")
    assert convert.s3_location("s3://my.bucket/a/b/") == ("my.bucket", "a/b/")
    unset = config.load({})
    assert unset.storage_url is None and unset.s3_redirect is False
    assert config.load({"PYPI_S3_REDIRECT": "1"}).s3_redirect is True
    with pytest.raises(ConfigError, match="PYPI_S3_REDIRECT"):
        config.load({"PYPI_S3_REDIRECT": "maybe"})
    app = create_app({"environ": {"PYPI_CACHE_DIR": str(tmp_path)}})
    assert app.extensions["pypicache"].cluster is None  # no bucket: the local directory alone


def test_prune_bucket_oldest_first(tmp_path):
    files = LocalStorage(tmp_path / "files")
    for age, name in enumerate(["new.whl", "mid.whl", "old.whl"]):
        files.store(f"p/{name}", _file(tmp_path, b"x" * 100))
        os.utime(files.file(f"p/{name}"), (1e9 - age, 1e9 - age))
    assert bucketcli.oldest_out(files, 150) == (2, 200, 100)
    assert [item.path for item in files.list()] == ["p/new.whl"]


def test_prune_command_on_the_bucket(bucket, make_app, tmp_path):
    for name in ("a.whl", "b.whl", "c.whl"):
        bucket.store(f"p/{name}", _file(tmp_path, b"y" * 400))
    runner = make_app(storage_url=bucket.location).test_cli_runner()
    done = runner.invoke(args=["pypicache", "prune", "--bucket", "--to", "500"])
    assert done.exit_code == 0, done.output
    assert "removed 2 files (800 B)" in done.output and "400 B left" in done.output
    assert len(list(bucket.list())) == 1
    alone = make_app().test_cli_runner().invoke(
        args=["pypicache", "prune", "--bucket", "--to", "1"])
    assert alone.exit_code != 0 and "PYPI_STORAGE_URL" in alone.output


def test_verify_command_on_the_bucket(bucket, make_app, tmp_path):
    """A file whose bytes differ from what this node recorded goes; one nobody vouches for
    stays, counted."""
    good, bad = b"the right bytes", b"the right bytes, or so it says"
    app = make_app(storage_url=bucket.location)
    catalog = app.extensions["pypicache"].catalog
    for name in ("good", "bad"):
        catalog.add_cached(f"p/{name}-1.0.tar.gz", name, len(good),
                           hashlib.sha256(good).hexdigest())
    bucket.store("p/good-1.0.tar.gz", _file(tmp_path, good, "g"))
    bucket.store("p/bad-1.0.tar.gz", _file(tmp_path, bad, "b"))
    bucket.store("p/stranger-1.0.tar.gz", _file(tmp_path, b"?", "s"))
    done = app.test_cli_runner().invoke(args=["pypicache", "verify", "--bucket"])
    assert done.exit_code == 0, done.output
    assert "verified 2 of 3 files in the bucket" in done.output and "1 removed" in done.output
    assert "removed from the bucket: p/bad-1.0.tar.gz" in done.output
    assert sorted(item.path for item in bucket.list()) == [
        "p/good-1.0.tar.gz", "p/stranger-1.0.tar.gz"]
    alone = make_app().test_cli_runner().invoke(args=["pypicache", "verify", "--bucket"])
    assert alone.exit_code != 0 and "PYPI_STORAGE_URL" in alone.output


def _deploy_blocks(language: str) -> list[str]:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "DEPLOY.md").read_text()
    section = doc.split("## 14. Several nodes sharing one bucket", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, re.S)


def test_deploy_examples_parse_and_share_one_bucket():
    kubernetes, compose = (list(yaml.safe_load_all(block)) for block in _deploy_blocks("yaml"))
    kinds = {doc["kind"]: doc for doc in kubernetes}
    assert set(kinds) == {"Secret", "Deployment", "Service"}
    deployment = kinds["Deployment"]["spec"]
    assert deployment["replicas"] == 2
    container = deployment["template"]["spec"]["containers"][0]
    env = {item["name"]: item["value"] for item in container["env"]}
    config.load({"PYPI_STORAGE_URL": env["PYPI_STORAGE_URL"]})  # a valid setting
    assert container["envFrom"] == [{"secretRef": {"name": kinds["Secret"]["metadata"]["name"]}}]
    assert set(kinds["Secret"]["stringData"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert kinds["Service"]["spec"]["selector"] == deployment["selector"]["matchLabels"]
    (document,) = compose
    assert schema_errors(document) == []
    nodes = [s for s in document["services"].values()
             if "PYPI_STORAGE_URL" in s.get("environment", {})]
    assert len(nodes) == 2 and "minio" in document["services"]
    volumes = {node["volumes"][0] for node in nodes}
    assert volumes == {"node1:/srv/pypicache/data", "node2:/srv/pypicache/data"}
    rules = json.loads(_deploy_blocks("json")[0])["Rules"]
    assert {rule["Filter"]["Prefix"] for rule in rules} == {"cache/files/", "cache/leases/"}
