"""A regular JSON page rewritten as bytes gives the same document as the pass in Python; an
irregular one takes the long way, and nothing that the long way refuses is passed through."""
import json

import pytest

from pypicache import pagereader, passthrough
from pypicache.pagemodel import project_of

BASE = "http://127.0.0.1:9001/packages/"
PAGE_URL = "http://127.0.0.1:9000/simple/demo/"
SHA = "a" * 64


def entry(filename, *, metadata="absent", url=None, sha=SHA, **more):
    """One file as warehouse lists it: keys sorted, the two metadata keys before the name."""
    out = {}
    if metadata != "absent":
        out["core-metadata"] = out["data-dist-info-metadata"] = metadata
    out |= {"filename": filename, "hashes": {"sha256": sha} if sha else {}, "requires-python": None,
            "size": 10, "upload-time": "2024-01-01T00:00:00.000000Z",
            "url": url or f"{BASE}ab/cd/{filename}", "yanked": False} | more
    return dict(sorted(out.items()))


def page(files, version="1.1", spaced=True):
    data = {"files": files, "meta": {"_last-serial": 7, "api-version": version}, "name": "Demo",
            "versions": ["0.9", "1.0"]}
    return json.dumps(data, separators=(", ", ": ") if spaced else (",", ":")).encode()


def both(body, metadata=None, prefix=""):
    linker = pagereader.Linker(BASE, prefix)
    fast = passthrough.rewrite(body, linker.base, prefix, "demo", metadata or {})
    slow = pagereader._from_json(body, PAGE_URL, "demo", linker, metadata or {})
    return fast, slow


def same(fast, slow):
    ours, theirs = project_of(json.loads(fast[0])), project_of(slow)
    assert ours == theirs
    for entry in json.loads(fast[0])["files"] + slow["files"]:  # no false flag either way
        assert entry.get("core-metadata", True) and entry.get("data-dist-info-metadata", True)
    assert sorted(fast[1]) == sorted(slow["misfiled"])
    assert json.loads(fast[0])["meta"]["api-version"] == slow["meta"]["api-version"]


@pytest.mark.parametrize("spaced", [True, False])
def test_a_warehouse_page_with_metadata_for_some_wheels(spaced):
    files = [entry("demo-0.9-py3-none-any.whl", metadata=False),
             entry("demo-1.0-py3-none-any.whl", metadata={"sha256": "c" * 64}),
             entry("demo-1.0-cp311-cp311-manylinux_2_17_x86_64.whl", metadata=True),
             entry("demo-1.0.tar.gz", metadata=False, yanked="broken"),
             entry("Demo-0.1.zip", metadata=False, **{"requires-python": ">=3.8"})]
    fast, slow = both(page(files, spaced=spaced))
    assert fast is not None
    same(fast, slow)
    data = json.loads(fast[0])
    assert [f.get("core-metadata") for f in data["files"]] == [True, {"sha256": "c" * 64}, True,
                                                                 None, None]  # false: dropped
    assert data["files"][0]["url"] == "../../packages/ab/cd/demo-0.9-py3-none-any.whl"
    assert data["name"] == "demo" and data["versions"] == ["0.9", "1.0"]


def test_a_page_without_metadata_keys_gets_them_for_every_wheel():
    files = [entry("demo-1.0-py3-none-any.whl"), entry("demo-1.0.tar.gz")]
    fast, slow = both(page(files))
    same(fast, slow)
    wheel, sdist = json.loads(fast[0])["files"]
    assert wheel["core-metadata"] is True and wheel["data-dist-info-metadata"] is True
    assert "core-metadata" not in sdist


def test_metadata_the_proxy_served_is_advertised_with_its_hash_and_an_upstream_prefix():
    files = [entry("demo-1.0-py3-none-any.whl"), entry("other_name-1.0-py3-none-any.whl")]
    known = {"pub/ab/cd/demo-1.0-py3-none-any.whl.metadata": "e" * 64}
    fast, slow = both(page(files), known, prefix="pub/")
    same(fast, slow)
    data = json.loads(fast[0])
    assert data["files"][0]["core-metadata"] == {"sha256": "e" * 64}
    assert data["files"][0]["url"] == "../../packages/pub/ab/cd/demo-1.0-py3-none-any.whl"
    assert fast[1] == ["pub/ab/cd/other_name-1.0-py3-none-any.whl"]  # listed under another name


@pytest.mark.parametrize("spaced", [True, False])
def test_wheels_without_metadata_among_other_files_each_get_theirs(spaced):
    """The keys go before each such wheel's name only, with the hash the proxy knows for some."""
    files = [entry("demo-0.9.tar.gz"), entry("demo-0.9-py3-none-any.whl"),
             entry("demo-1.0-py3-none-any.whl", metadata=True), entry("demo-1.0.zip"),
             entry("demo-1.0-cp311-cp311-manylinux_2_17_x86_64.whl"), entry("demo-1.1.tar.gz")]
    known = {"ab/cd/demo-1.0-cp311-cp311-manylinux_2_17_x86_64.whl.metadata": "e" * 64}
    fast, slow = both(page(files, spaced=spaced), known)
    assert fast is not None
    same(fast, slow)
    assert [f.get("core-metadata") for f in json.loads(fast[0])["files"]] == [
        None, True, True, None, {"sha256": "e" * 64}, None]


def test_a_filename_key_s_name_as_a_value_elsewhere_takes_the_long_way():
    files = [entry("demo-1.0-py3-none-any.whl", yanked="filename")]
    fast, slow = both(page(files))
    assert fast is None
    assert slow["files"][0]["core-metadata"] is True


@pytest.mark.parametrize("odd", [
    entry("demo-1.0.tar.gz", url="http://127.0.0.1:6666/elsewhere/demo-1.0.tar.gz"),
    entry("demo-1.0.tar.gz", url=f"{BASE}ab/../../etc/passwd"),
    entry("demo-1.0+local.tar.gz", url=f"{BASE}ab/demo-1.0%2Blocal.tar.gz"),
    entry("demo-1.0.tar.gz", sha="A" * 64),
    entry("demo-1.0.tar.gz", sha=None),
    entry("demo-1.0.tar.gz", url="../../packages/ab/demo-1.0.tar.gz"),
])
def test_an_irregular_page_takes_the_long_way(odd):
    files = [entry("demo-0.9.tar.gz"), odd]
    fast, slow = both(page(files))
    assert fast is None
    assert all(f["url"].startswith("../../packages/") for f in slow["files"])


def test_a_newer_api_version_or_broken_json_takes_the_long_way():
    assert both(page([entry("demo-1.0.tar.gz")], version="1.5"))[0] is None
    linker = pagereader.Linker(BASE)
    assert passthrough.rewrite(b'{"files": [', linker.base, "", "demo", {}) is None


@pytest.mark.parametrize("edit", [
    lambda data: data["files"][0]["hashes"].update(md5=5),  # a hash that is no string
    lambda data: data.update(versions="1.0"),
    lambda data: data["meta"].update({"api-version": 1.1}),
    lambda data: data["files"][0].update(size=float("nan")),  # json.loads takes NaN
    lambda data: data["files"][0].pop("hashes"),
])
def test_values_of_other_types_take_the_long_way(edit):
    data = json.loads(page([entry("demo-1.0.tar.gz"), entry("demo-1.0-py3-none-any.whl")]))
    edit(data)
    linker = pagereader.Linker(BASE)
    assert passthrough.rewrite(json.dumps(data).encode(), linker.base, "", "demo", {}) is None


def test_a_page_not_in_utf_8_takes_the_long_way():
    body = page([entry("demo-1.0.tar.gz")]).decode().encode("utf-16")  # json.loads reads it
    fast, slow = both(body)
    assert fast is None and slow["files"][0]["url"].startswith("../../packages/")


def test_keys_in_any_order_when_none_is_false():
    unsorted = [{"url": f"{BASE}ab/demo-1.0-py3-none-any.whl", "filename": "demo-1.0-py3-none-any.whl",
                 "hashes": {"sha256": SHA}},
                {"filename": "demo-2.0-py3-none-any.whl", "hashes": {"sha256": SHA},
                 "data-dist-info-metadata": True, "url": f"{BASE}ab/demo-2.0-py3-none-any.whl",
                 "core-metadata": True}]
    known = {"ab/demo-1.0-py3-none-any.whl.metadata": "e" * 64,
             "ab/demo-2.0-py3-none-any.whl.metadata": "f" * 64}  # the upstream's true stays
    fast, slow = both(page(unsorted), known)
    same(fast, slow)
    assert [f["core-metadata"] for f in json.loads(fast[0])["files"]] == [{"sha256": "e" * 64}, True]


def test_a_false_flag_in_another_order_takes_the_long_way():
    unsorted = {"filename": "demo-1.0-py3-none-any.whl", "core-metadata": False,
                "hashes": {"sha256": SHA}, "url": f"{BASE}ab/demo-1.0-py3-none-any.whl"}
    fast, slow = both(page([unsorted]))
    assert fast is None and slow["files"][0]["core-metadata"] is True


@pytest.mark.parametrize("spaced", [True, False])
def test_absolute_provenance_urls_pass_as_they_are(spaced):
    files = [entry("demo-1.0.tar.gz", provenance="https://index.example/integrity/demo/1.0/p"),
             entry("demo-1.1.tar.gz")]
    fast, slow = both(page(files, spaced=spaced))
    assert fast is not None
    same(fast, slow)
    assert [f.get("provenance") for f in json.loads(fast[0])["files"]] == [
        "https://index.example/integrity/demo/1.0/p", None]


@pytest.mark.parametrize("odd", ["/integrity/demo/p", "p", None, "ftp://index.example/p"])
def test_a_provenance_url_not_absolute_takes_the_long_way(odd):
    fast, slow = both(page([entry("demo-1.0.tar.gz", provenance=odd)]))
    assert fast is None
    expected = {"/integrity/demo/p": "http://127.0.0.1:9000/integrity/demo/p",
                "p": "http://127.0.0.1:9000/simple/demo/p"}.get(odd)
    assert slow["files"][0].get("provenance") == expected


@pytest.mark.parametrize("spaced", [True, False])
def test_false_flags_anywhere_in_an_entry_are_dropped_as_the_long_way_drops_them(spaced):
    """Pairs of false flags (removed as bytes), a lone one and one that opens its entry
    (left to the regular expressions) all go."""
    files = [entry("demo-1.0.tar.gz", metadata=False),
             entry("demo-1.1.tar.gz", metadata=False) | {"core-metadata": True},
             {"core-metadata": False, "filename": "demo-1.2.tar.gz", "hashes": {"sha256": SHA},
              "url": f"{BASE}ab/demo-1.2.tar.gz"},
             entry("demo-1.3.tar.gz") | {"data-dist-info-metadata": False}]
    fast, slow = both(page(files, spaced=spaced))
    assert fast is not None
    same(fast, slow)
    assert b"false" not in fast[0].replace(b'"yanked": false', b"").replace(b'"yanked":false', b"")


def test_wheels_with_false_flags_get_a_hash_the_proxy_knows_or_true():
    files = [entry("demo-1.0-py3-none-any.whl", metadata=False),
             entry("demo-2.0-py3-none-any.whl", metadata=False)]
    for known in ({}, {"ab/cd/demo-2.0-py3-none-any.whl.metadata": "e" * 64}):
        fast, slow = both(page(files), known)
        same(fast, slow)
        flags = [f["core-metadata"] for f in json.loads(fast[0])["files"]]
        assert flags == [True, {"sha256": "e" * 64} if known else True]


def test_a_value_that_reads_url_is_no_link():
    files = [entry("demo-1.0.tar.gz", comment="url"), entry("demo-1.1.tar.gz", note='"url"')]
    fast, slow = both(page(files))
    assert fast is not None
    same(fast, slow)
