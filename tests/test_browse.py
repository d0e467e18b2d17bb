"""The dashboard in a real browser: Debian's chromium driven by Playwright, against
gunicorn with 3 workers after real pip installs through the proxy; and escaping, in-process."""
from __future__ import annotations

import os
import re
import time
from collections import Counter
from pathlib import Path

import pytest
import requests

from .fixture_upstream import Upstream
from .servers import ROOT, Proxy, pip_install
from .wheels import make_wheel

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
MIB = 1 << 20


# --- escaping, in one process ------------------------------------------------------------------
def test_names_render_as_text_never_as_markup(app, client):
    catalog = app.extensions["pypicache"].catalog
    evil = "<script>alert(1)</script>"
    catalog.add_cached(f"aa/{evil}-1.0.whl", evil, 10, "0" * 64)
    page = client.get("/").get_data(as_text=True)
    assert evil not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    project = client.get("/projects/%3Cscript%3Ealert(1)%3C%2Fscript%3E/")
    assert project.status_code == 200
    assert evil not in project.get_data(as_text=True)
    assert client.get("/?q=%3Cscript%3E").get_data(as_text=True).count("&lt;script&gt;") >= 2
    assert client.get("/projects/nothing/").status_code == 404


def test_stats_json_for_scripts(app, client):
    app.extensions["pypicache"].catalog.add_cached("aa/demo-1.0.tar.gz", "demo", 10, "0" * 64)
    data = client.get("/stats.json").json
    assert data["files"] == 1 and data["project_list"][0]["name"] == "demo"
    files = client.get("/stats/demo.json").json["files"]
    assert files[0]["filename"] == "demo-1.0.tar.gz" and files[0]["hits"] == 0


# --- a real browser after real installs ---------------------------------------------------------
def access_log_hits(log: str) -> Counter:
    """Hits per file name, from gunicorn's access log (X-Cache is in it): the truth to compare."""
    hits = Counter()
    for match in re.finditer(r'"GET /packages/\S*/([^/\s]+) HTTP/[\d.]+" 200 \d+ hit ', log):
        hits[match[1]] += 1
    return hits


def project_of(filename: str) -> str:
    return filename.split("-", 1)[0].replace("_", "-")


@pytest.fixture(scope="module")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail("chromium is missing: run scripts/test-deps as root (make test does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.mark.e2e
def test_dashboard_after_real_installs(tmp_path, browser):
    up = Upstream(tmp_path / "up", throttle=24 * MIB).start()  # a modest upstream, as t shows
    for name, version, requires, payload in [
        ("datakit", "2.0", ["numberz>=1", "plotty"], 300_000),
        ("numberz", "1.4", [], 9 * MIB),
        ("plotty", "0.9", ["numberz"], 3 * MIB),
        ("tiny-utils", "1.0", [], 20_000),
    ]:
        filename, data = make_wheel(name, version, requires, payload=payload)
        up.add_file(name, filename, data)
    proxy = Proxy(tmp_path / "cache", up.env(), workers=3).start()
    try:
        for container in range(3):  # three notebook containers install the same stack
            done = pip_install(f"{proxy.url}/simple", tmp_path / f"c{container}", "datakit")
            assert done.returncode == 0, done.stderr
        done = pip_install(f"{proxy.url}/simple", tmp_path / "c3", "tiny-utils")
        assert done.returncode == 0, done.stderr

        files = [p for p in (proxy.cache_dir / "files").rglob("*") if p.is_file()]
        sizes = Counter()
        for path in files:
            sizes[project_of(path.name)] += path.stat().st_size
        hits = Counter()
        for filename, count in access_log_hits(proxy.logs()).items():
            hits[project_of(filename)] += count
        assert set(sizes) == {"datakit", "numberz", "plotty", "tiny-utils"}
        # Two more installs: its .metadata and its wheel each; and the first install's
        # .metadata too when it was fetched ahead (datakit needs it) before pip asked for it.
        assert hits["numberz"] in (4, 5)
        _wait_for_flush(proxy, sum(hits.values()))

        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{proxy.url}/")
        rows = page.locator("#projects tbody tr")
        listed = {}
        for i in range(rows.count()):
            cells = rows.nth(i).locator("td")
            listed[cells.nth(0).inner_text()] = (
                int(cells.nth(2).get_attribute("data-bytes")), int(cells.nth(3).inner_text()))
        assert listed == {name: (sizes[name], hits[name]) for name in sizes}
        assert page.locator("#file-count").inner_text() == str(len(files))
        assert page.locator("#upstream-status").inner_text().strip() == "upstream up"
        assert page.locator("#savings tbody tr").count() == 4
        page.screenshot(path=str(screenshot(tmp_path, "dashboard.png")), full_page=True)

        page.fill("#search", "numb")  # filters as you type
        assert page.locator("#projects tbody tr:visible").all_inner_texts()[0].startswith("numberz")
        assert page.locator("#projects tbody tr:visible").count() == 1
        page.fill("#search", "nothing-like-this")
        assert page.locator("#no-match").is_visible()
        page.goto(f"{proxy.url}/?q=plot")  # and on the server, without JavaScript
        assert page.locator("#projects tbody tr").all_inner_texts()[0].startswith("plotty")
        assert page.locator("#projects tbody tr").count() == 1

        page.goto(f"{proxy.url}/")
        page.click("th a[data-sort=size]")
        assert page.locator("#projects tbody tr td.name").first.inner_text() == "numberz"
        page.click("#projects a:text-is('numberz')")
        page.wait_for_url("**/projects/numberz/")
        assert page.locator("#project-name").inner_text() == "numberz"
        assert page.locator("#files tbody tr").count() == 2  # the wheel and its .metadata
        assert page.locator("#project-hits").inner_text() == str(hits["numberz"])
        page.screenshot(path=str(screenshot(tmp_path, "dashboard-project.png")), full_page=True)
        page.click("#files a:text-matches('\\\\.whl$')")  # the file link downloads from the cache
        page.close()
    finally:
        proxy.stop()
        up.stop()


def screenshot(tmp_path: Path, name: str) -> Path:
    """docs/<name> when it is missing or UPDATE_SCREENSHOTS=1 (README shows it); otherwise a
    temporary file, so running the suite does not leave the work tree changed."""
    target = ROOT / "docs" / name
    if os.environ.get("UPDATE_SCREENSHOTS") == "1" or not target.exists():
        return target
    return tmp_path / name


def _wait_for_flush(proxy: Proxy, hits: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = requests.get(f"{proxy.url}/stats.json", timeout=10).json()
        if data["requests"].get("hit", 0) >= hits and data["local_mb_s"]:
            return
        time.sleep(0.1)
    raise AssertionError("the workers' statistics did not arrive")


