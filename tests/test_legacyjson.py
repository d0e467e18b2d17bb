"""The pure parts of the legacy JSON API: which releases a page has, which one is the latest
(Warehouse's choice), and what a release's core metadata gives `info`."""
from __future__ import annotations

import pytest

from pypicache import coremeta, legacyjson
from pypicache.pagemodel import File, Project


def file(filename: str, yanked: bool | str = False) -> File:
    return File(filename=filename, path=f"x/{filename}", yanked=yanked)


@pytest.mark.parametrize("listed, expected", [
    (["a-1.0.tar.gz", "a-1.1.tar.gz", "a-2.0rc1.tar.gz"], "1.1"),  # finals before pre-releases
    (["a-1.0.tar.gz", "a-1.10.tar.gz", "a-1.9.tar.gz"], "1.10"),  # PEP 440 order, not text
    (["a-1.0.tar.gz", ("a-1.1.tar.gz", "bad")], "1.0"),  # a yanked release passed over
    (["a-1.0.tar.gz", ("a-1.1.tar.gz", "bad"), "a-1.1-py3-none-any.whl"], "1.1"),  # one file yanked
    ([("a-1.0.tar.gz", True), "a-2.0b1.tar.gz"], "2.0b1"),  # a pre-release before a yanked final
    ([("a-1.0.tar.gz", True), ("a-1.1.tar.gz", True), ("a-2.0b1.tar.gz", True)], "1.1"),
    (["a-2.0.dev1.tar.gz", "a-2.0a1.tar.gz"], "2.0a1"),
    (["a-1!0.1.tar.gz", "a-9.0.tar.gz"], "1!0.1"),  # an epoch
])
def test_the_latest_release_is_warehouses_choice(listed, expected):
    files = [file(*item) if isinstance(item, tuple) else file(item) for item in listed]
    releases = legacyjson.releases_of(Project("a", tuple(files)))
    assert legacyjson.latest(releases) == expected


def test_releases_are_keyed_by_normalized_version_lowest_first():
    files = [file("a-1.0.0-py3-none-any.whl"), file("a-1.0.0.tar.gz"), file("a-0.9RC1.tar.gz"),
             file("a-weird_version.tar.gz")]
    releases = legacyjson.releases_of(Project("a", tuple(files), versions=("0.1",)))
    assert list(releases) == ["weird_version", "0.1", "0.9rc1", "1.0.0"]
    assert [f.filename for f in releases["1.0.0"]] == ["a-1.0.0-py3-none-any.whl", "a-1.0.0.tar.gz"]
    assert legacyjson.find_release(releases, "1.0") == "1.0.0"
    assert legacyjson.find_release(releases, "0.9rc1") == "0.9rc1"
    assert legacyjson.find_release(releases, "2") is None


RICH_METADATA = b"""Metadata-Version: 2.4
Name: Rich.Demo
Version: 3.1
Summary: A demo
Home-page: https://example.invalid/home
Author: Ada
Author-email: ada@example.invalid
License-Expression: MIT
License-File: LICENSE
Keywords: one,two
Platform: linux
Platform: macos
Classifier: Programming Language :: Python :: 3
Classifier: License :: OSI Approved :: MIT License
Requires-Python: >=3.10
Requires-Dist: beta>=1
Requires-Dist: gamma; extra == "fast"
Provides-Extra: fast
Project-URL: Source, https://example.invalid/src
Project-URL: Docs, https://example.invalid/docs
Description-Content-Type: text/markdown

# Rich demo
"""


def test_core_metadata_becomes_warehouses_info_fields():
    fields = coremeta.info_fields(RICH_METADATA)
    assert fields["name"] == "Rich.Demo" and fields["summary"] == "A demo"
    assert fields["home_page"] == "https://example.invalid/home"
    assert fields["author"] == "Ada" and fields["author_email"] == "ada@example.invalid"
    assert fields["license_expression"] == "MIT" and fields["license_files"] == ["LICENSE"]
    assert fields["license"] is None and fields["maintainer"] is None
    assert fields["keywords"] == "one,two" and fields["platform"] == "linux, macos"
    assert fields["classifiers"] == ["Programming Language :: Python :: 3",
                                     "License :: OSI Approved :: MIT License"]
    assert fields["requires_python"] == ">=3.10"
    assert fields["requires_dist"] == ["beta>=1", 'gamma; extra == "fast"']
    assert fields["provides_extra"] == ["fast"]
    assert fields["project_urls"] == {"Source": "https://example.invalid/src",
                                      "Docs": "https://example.invalid/docs"}
    assert fields["description"].strip() == "# Rich demo"
    assert fields["description_content_type"] == "text/markdown"
    assert set(fields) == set(coremeta.EMPTY)


@pytest.mark.parametrize("data", [b"", b"\x00\xff\xfe garbage", b"Summary: no name\n\n"])
def test_what_is_not_core_metadata_gives_no_fields(data):
    assert coremeta.info_fields(data) is None
