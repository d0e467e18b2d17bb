"""The page model: upstream HTML and JSON, both link styles, every data-* attribute kept."""
import json

import pytest

from pypicache import pagereader
from pypicache.errors import UpstreamError

SHA = "a" * 64
ABSOLUTE_PAGE = f"""<!DOCTYPE html><html><head>
<meta name="pypi:repository-version" content="1.1">
<meta name="pypi:project-status" content="quarantined">
<meta name="pypi:project-status-reason" content="under review">
</head><body>
<a href="http://127.0.0.1:9001/packages/ab/cd/{SHA[:8]}/demo-1.0-py3-none-any.whl#sha256={SHA}"
   data-requires-python="&gt;=3.8,&lt;4" data-dist-info-metadata="sha256={'b' * 64}">demo-1.0-py3-none-any.whl</a><br>
<a href="http://127.0.0.1:9001/packages/ab/cd/ef/demo-0.9.tar.gz#sha256={SHA}" data-yanked="broken build">demo-0.9.tar.gz</a>
<a href="http://127.0.0.1:9001/packages/ab/cd/ef/demo-0.8.tar.gz" data-yanked="">demo-0.8.tar.gz</a>
<a href="http://127.0.0.1:6666/elsewhere/demo-0.7.tar.gz#sha256={SHA}">demo-0.7.tar.gz</a>
<a href="http://127.0.0.1:9001/packages/ab/../../../etc/passwd">evil</a>
</body></html>"""


def absolute():
    linker = pagereader.Linker("http://127.0.0.1:9001/packages")
    return pagereader.parse_html(ABSOLUTE_PAGE, "http://127.0.0.1:9000/simple/demo/", "demo", linker)


def test_absolute_links_become_paths_under_the_files_base():
    project = absolute()
    assert [f.path for f in project.files] == [
        f"ab/cd/{SHA[:8]}/demo-1.0-py3-none-any.whl",
        "ab/cd/ef/demo-0.9.tar.gz",
        "ab/cd/ef/demo-0.8.tar.gz",
    ]  # the foreign host and the traversal are dropped, never fetched


def test_data_attributes_are_kept_unescaped_once():
    wheel, sdist, old = absolute().files
    assert wheel.sha256 == SHA
    assert wheel.requires_python == ">=3.8,<4"
    assert wheel.core_metadata == {"sha256": "b" * 64}
    assert wheel.yanked is False
    assert sdist.yanked == "broken build"
    assert old.yanked is True and old.hashes == {}


def test_project_status_is_read():
    project = absolute()
    assert (project.status, project.status_reason) == ("quarantined", "under review")


def test_relative_links_of_a_mirror():
    page = f'<a href="../../packages/ab/cd/demo-1.0.tar.gz#sha256={SHA}">demo-1.0.tar.gz</a>'
    linker = pagereader.Linker("http://127.0.0.1:9000/pypi/web/packages")
    project = pagereader.parse_html(page, "http://127.0.0.1:9000/pypi/web/simple/demo/", "demo", linker)
    assert [(f.path, f.sha256) for f in project.files] == [("ab/cd/demo-1.0.tar.gz", SHA)]


def test_percent_encoded_names_are_decoded_once():
    page = '<a href="../../packages/ab/demo-1.0%2Blocal.tar.gz">x</a>'
    linker = pagereader.Linker("http://127.0.0.1:9000/packages")
    project = pagereader.parse_html(page, "http://127.0.0.1:9000/simple/demo/", "demo", linker)
    assert project.files[0].filename == "demo-1.0+local.tar.gz"


def test_json_pages():
    body = json.dumps(
        {
            "meta": {"api-version": "1.1"},
            "name": "demo",
            "versions": ["1.0"],
            "project-status": {"status": "archived"},
            "files": [
                {
                    "filename": "demo-1.0.tar.gz",
                    "url": "../../packages/ab/demo-1.0.tar.gz",
                    "hashes": {"sha256": SHA.upper()},
                    "requires-python": ">=3.9",
                    "yanked": "bad",
                    "core-metadata": {"sha256": "c" * 64},
                    "size": 123,
                    "upload-time": "2024-01-01T00:00:00.000000Z",
                }
            ],
        }
    )
    linker = pagereader.Linker("http://127.0.0.1:9000/packages")
    project = pagereader.parse(body.encode(), "application/vnd.pypi.simple.v1+json", "http://127.0.0.1:9000/simple/demo/", "demo", linker)
    (file,) = project.files
    assert file.sha256 == SHA and file.size == 123 and file.yanked == "bad"
    assert file.core_metadata == {"sha256": "c" * 64}
    assert file.upload_time == "2024-01-01T00:00:00.000000Z"
    assert project.versions == ("1.0",) and project.status == "archived"


def test_unreadable_json_is_an_upstream_fault():
    linker = pagereader.Linker("http://127.0.0.1:9000/packages")
    with pytest.raises(UpstreamError):
        pagereader.parse(b"{not json", "application/vnd.pypi.simple.v1+json", "http://x/simple/a/", "a", linker)


@pytest.mark.parametrize("content_type", ["text/html", "application/vnd.pypi.simple.v1+json"])
def test_root_names_stream_across_chunk_boundaries(content_type):
    names = [f"Project_{n}" for n in range(2000)] + ["<script>"]
    if "json" in content_type:
        body = json.dumps({"meta": {}, "projects": [{"name": n} for n in names]}).encode()
    else:
        body = "".join(f'<a href="/simple/{n}/">{n}</a>\n' for n in names).encode()
    chunks = [body[i : i + 7] for i in range(0, len(body), 7)]
    assert list(pagereader.iter_root_names(chunks, content_type)) == [f"project-{n}" for n in range(2000)]


def test_a_dropped_link_is_logged_without_the_upstreams_credentials(caplog):
    """Relative links resolve against the page's URL, which carries the mirror's login."""
    secret = "m1rror-t0ken"
    base = f"http://mirror:{secret}@127.0.0.1:9000"
    linker = pagereader.Linker(f"{base}/pypi/web/packages/sub")
    page = (f'<a href="../../packages/ab/demo-1.0.tar.gz#sha256={SHA}">demo-1.0.tar.gz</a>'
            f'<a href="{base}/pypi/web/packages/sub/%2e%2e/%2e%2e/x.tar.gz">evil</a>')
    with caplog.at_level("WARNING", logger="pypicache.index"):
        project = pagereader.parse_html(page, f"{base}/pypi/web/simple/demo/", "demo", linker)
    assert project.files == ()
    assert "outside the files base: 127.0.0.1:9000" in caplog.text
    assert "unsafe path" in caplog.text
    assert secret not in caplog.text


@pytest.mark.parametrize("page", ["", "  \n", "<html></html>", "no markup at all", "<a>no href</a>"])
def test_a_page_without_links_lists_no_file(page):
    linker = pagereader.Linker("http://127.0.0.1:9000/packages")
    assert pagereader.parse_html(page, "http://127.0.0.1:9000/simple/demo/", "demo", linker).files == ()
