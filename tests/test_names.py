"""Project names and file paths: the one validator every untrusted path part passes."""
import pytest

from pypicache import names
from pypicache.errors import BadRequest


@pytest.mark.parametrize(
    "raw, canonical",
    [("Foo.Bar_baz", "foo-bar-baz"), ("foo", "foo"), ("Django", "django"), ("a", "a"), ("zope.interface", "zope-interface")],
)
def test_canonical_project_names(raw, canonical):
    assert names.project_name(raw) == canonical


@pytest.mark.parametrize(
    "raw", ["", "-foo", "foo-", "..", "a/b", "foo\x00", "foo\r\nX: y", "<script>", "é", "a" * 300, "foo bar"]
)
def test_invalid_project_names(raw):
    with pytest.raises(BadRequest):
        names.project_name(raw)


@pytest.mark.parametrize(
    "raw",
    [
        "ab/cd/0123abcd/pkg-1.0-py3-none-any.whl",
        "pkg-1.0.tar.gz",
        "ab/pkg-1.0+local.whl",
        "ab/pkg-1!2.0.tar.gz",
        "ab/cd/pkg-1.0-py3-none-any.whl.metadata",
    ],
)
def test_valid_file_paths(raw):
    assert names.file_path(raw) == raw


@pytest.mark.parametrize(
    "raw",
    [
        "../etc/passwd",
        "ab/../../etc/passwd",
        "ab/./x.whl",
        "/etc/passwd",
        "ab//x.whl",
        "ab/x.whl/",
        "ab/%2e%2e/x",
        "ab/x\x00.whl",
        "ab/x\r\n.whl",
        "ab/x y.whl",
        "ab/\ufffd.whl",
        ".hidden",
        "a/" * 600 + "x.whl",
        "ab/" + "x" * 300,
    ],
)
def test_unsafe_file_paths(raw):
    with pytest.raises(BadRequest):
        names.file_path(raw)


@pytest.mark.parametrize(
    "path, project",
    [("ab/cd/Foo_Bar-1.0-py3-none-any.whl", "foo-bar"), ("x/zope.interface-5.0.tar.gz", "zope-interface"),
     ("x/foo-bar-1.0.tar.gz", "foo-bar"), ("x/Demo-1.0-py3-none-any.whl.metadata", "demo"),
     ("x/Odd_Name-1.0.win32.exe", "odd-name")],
)
def test_project_of_a_file_name(path, project):
    assert names.project_of_file(path) == project
