"""Validators, conditional requests and ranges (pypicache/conditional.py): the table of questions
that every path must answer alike (tests/test_conditional_e2e.py asks it of real servers)."""
from __future__ import annotations

import os
import time

import pytest
from werkzeug.http import http_date

from pypicache.conditional import Answer, Ask, Validator, resolve, validator
from pypicache.cachedir import CacheDir
from pypicache.storage import published_mtime

SIZE = 300_000

# (name, request headers, expected status, start, stop): {etag} and {modified} are the file's
# validators, {before} and {after} a second either side of its Last-Modified.
QUESTIONS = [
    ("no header", {}, 200, 0, SIZE),
    ("a suffix longer than the file", {"Range": "bytes=-1000000"}, 206, 0, SIZE),
    ("a suffix", {"Range": "bytes=-1000"}, 206, SIZE - 1000, SIZE),
    ("an empty suffix", {"Range": "bytes=-0"}, 416, 0, 0),
    ("from a position", {"Range": "bytes=1000-"}, 206, 1000, SIZE),
    ("a span", {"Range": "bytes=1000-1999"}, 206, 1000, 2000),
    ("a span past the end", {"Range": f"bytes=1000-{2 * SIZE}"}, 206, 1000, SIZE),
    ("the last byte", {"Range": f"bytes={SIZE - 1}-{SIZE - 1}"}, 206, SIZE - 1, SIZE),
    ("two ranges", {"Range": "bytes=0-9,20-29"}, 200, 0, SIZE),
    ("two ranges with spaces", {"Range": "bytes=0-9, 20-29"}, 200, 0, SIZE),
    ("two ranges, one satisfiable", {"Range": f"bytes=0-9,{SIZE}-"}, 206, 0, 10),
    ("the same range twice", {"Range": "bytes=0-9,0-9"}, 200, 0, SIZE),
    ("past the end", {"Range": f"bytes={SIZE}-"}, 416, 0, 0),
    ("backwards", {"Range": "bytes=9-0"}, 416, 0, 0),
    ("not a number", {"Range": "bytes=abc"}, 416, 0, 0),
    ("a trailing comma", {"Range": "bytes=0-9,"}, 416, 0, 0),
    ("beyond any offset", {"Range": f"bytes=0-{2 ** 63}"}, 416, 0, 0),
    ("thousands of digits", {"Range": "bytes=" + "9" * 5000 + "-"}, 416, 0, 0),
    ("leading zeros", {"Range": "bytes=" + "0" * 30 + "10-19"}, 206, 10, 20),
    ("spaces around the dash", {"Range": "bytes= 10 - 19"}, 206, 10, 20),
    ("a capital unit", {"Range": "Bytes=10-19"}, 206, 10, 20),
    ("no range-spec", {"Range": "bytes="}, 200, 0, SIZE),
    ("another unit", {"Range": "items=0-9"}, 200, 0, SIZE),
    ("If-Range: its ETag", {"Range": "bytes=0-9", "If-Range": "{etag}"}, 206, 0, 10),
    ("If-Range: another ETag", {"Range": "bytes=0-9", "If-Range": '"other"'}, 200, 0, SIZE),
    ("If-Range: its ETag, weak", {"Range": "bytes=0-9", "If-Range": "W/{etag}"}, 200, 0, SIZE),
    ("If-Range: its date", {"Range": "bytes=0-9", "If-Range": "{modified}"}, 206, 0, 10),
    ("If-Range: another date", {"Range": "bytes=0-9", "If-Range": "{after}"}, 200, 0, SIZE),
    ("If-Range without Range", {"If-Range": "{etag}"}, 200, 0, SIZE),
    ("If-None-Match: its ETag", {"If-None-Match": "{etag}"}, 304, 0, 0),
    ("If-None-Match: its ETag, weak", {"If-None-Match": "W/{etag}"}, 304, 0, 0),
    ("If-None-Match: a list", {"If-None-Match": '"a", {etag}'}, 304, 0, 0),
    ("If-None-Match: any", {"If-None-Match": "*"}, 304, 0, 0),
    ("If-None-Match: another ETag", {"If-None-Match": '"other"'}, 200, 0, SIZE),
    ("If-None-Match before Range", {"If-None-Match": "{etag}", "Range": "bytes=0-9"}, 304, 0, 0),
    ("If-Modified-Since: its date", {"If-Modified-Since": "{modified}"}, 304, 0, 0),
    ("If-Modified-Since: later", {"If-Modified-Since": "{after}"}, 304, 0, 0),
    ("If-Modified-Since: earlier", {"If-Modified-Since": "{before}"}, 200, 0, SIZE),
    ("If-Modified-Since: no date", {"If-Modified-Since": "yesterday"}, 200, 0, SIZE),
    ("both, disagreeing", {"If-None-Match": "{etag}", "If-Modified-Since": "{before}"},
     200, 0, SIZE),
    ("If-Match: its ETag", {"If-Match": "{etag}", "Range": "bytes=0-9"}, 206, 0, 10),
    ("If-Match: any", {"If-Match": "*"}, 200, 0, SIZE),
    ("If-Match: weak", {"If-Match": "W/{etag}"}, 412, 0, 0),
    ("If-Match: another ETag", {"If-Match": '"other"'}, 412, 0, 0),
    ("If-Unmodified-Since: its date", {"If-Unmodified-Since": "{modified}"}, 200, 0, SIZE),
    ("If-Unmodified-Since: earlier", {"If-Unmodified-Since": "{before}"}, 412, 0, 0),
]
NAMES = [question[0] for question in QUESTIONS]


def headers_for(headers: dict[str, str], file: Validator) -> dict[str, str]:
    """The question's headers with the file's validators filled in."""
    values = {"etag": file.etag, "modified": file.last_modified,
              "before": http_date(file.mtime - 1), "after": http_date(file.mtime + 1)}
    return {name: value.format(**values) for name, value in headers.items()}


def environ(headers: dict[str, str], method: str = "GET") -> dict[str, str]:
    return {"REQUEST_METHOD": method} | {
        "HTTP_" + name.upper().replace("-", "_"): value for name, value in headers.items()}


@pytest.mark.parametrize("name, headers, status, start, stop", QUESTIONS, ids=NAMES)
def test_each_question_gets_its_answer(name, headers, status, start, stop):
    file = Validator(published_mtime("ab/demo-1.0.tar.gz"), SIZE)
    answer = resolve(Ask.of(environ(headers_for(headers, file))), file)
    if status == 200:
        assert answer == Answer(200)
    elif status == 206:
        assert answer == Answer(206, start, stop)
    else:
        assert answer.status == status and not answer.has_body


def test_a_head_ignores_range_but_not_its_validators():
    file = Validator(published_mtime("ab/demo-1.0.tar.gz"), SIZE)
    assert resolve(Ask.of(environ({"Range": "bytes=0-9"}, "HEAD")), file) == Answer(200)
    asked = environ(headers_for({"If-None-Match": "{etag}"}, file), "HEAD")
    assert resolve(Ask.of(asked), file).status == 304


def test_without_a_size_the_answer_is_the_whole_file():
    for _, headers, *_ in QUESTIONS:
        assert resolve(Ask.of(environ(headers)), None) == Answer(200)
    assert validator("ab/demo-1.0.tar.gz", None) is None


def test_an_empty_file_has_no_range_to_give():
    empty = Validator(published_mtime("ab/empty-1.0.tar.gz"), 0)
    for spec in ("bytes=0-", "bytes=-5", "bytes=0-0"):
        assert resolve(Ask(range=spec), empty) == Answer(200)


def test_what_is_plain():
    assert Ask().plain and Ask(if_range='"x"').plain
    assert not any(Ask(**{field: "x"}).plain for field in (
        "range", "if_match", "if_none_match", "if_modified_since", "if_unmodified_since"))


def test_a_published_file_carries_the_validators_promised_before(tmp_path):
    """The ETag nginx computes for the published file is the one the app gave before."""
    cachedir = CacheDir(tmp_path)
    paths = [f"{n:02x}/{n:02x}/demo-{n}.0-py3-none-any.whl" for n in range(50)]
    for number, path in enumerate(paths):
        fd, temp = cachedir.new_temp("demo")
        os.write(fd, b"x" * number)
        os.close(fd)
        cachedir.publish_file(temp, path)
        stat = os.stat(cachedir.file(path))
        assert f'"{int(stat.st_mtime):x}-{stat.st_size:x}"' == validator(path, number).etag
        assert stat.st_mtime < time.time() - 365 * 86400  # a Last-Modified in the past
    cachedir.write_file("ab/demo-1.0-py3-none-any.whl.metadata", b"Metadata-Version: 2.1\n")
    metadata = os.stat(cachedir.file("ab/demo-1.0-py3-none-any.whl.metadata"))
    assert metadata.st_mtime == published_mtime("ab/demo-1.0-py3-none-any.whl.metadata")
    assert len({published_mtime(path) for path in paths}) == len(paths)  # spread by path
