"""The policy page in a real browser (Debian's chromium driven by Playwright, as the
dashboard's test does) after real pip installs through gunicorn with 2 workers: the rules in
force, what was refused and for whom, when the held release passes, and, once the file says
`mode = "report"`, what report mode would refuse, marked apart."""
from __future__ import annotations

import re
import time
from datetime import timedelta

import pytest
import requests

from .fixture_upstream import Upstream
from .servers import Proxy, pip_install
from .test_browse import browser, screenshot  # noqa: F401 (a fixture)
from .test_policy_e2e import COOLDOWN, eventually, rewrite, wheel

pytestmark = pytest.mark.e2e
RULES = COOLDOWN + 'exempt = ["corp-*"]\n[deny]\nprojects = ["evil"]\n'


def flushed(proxy: Proxy, key: str, count: int) -> dict:
    """/policy.json once `count` rows of `key` (refused, reported) are in the catalog."""
    return eventually(lambda: (data := requests.get(f"{proxy.url}/policy.json",
                                                    timeout=10).json())
                      and len(data[key]) >= count and data)


def test_the_policy_page_in_a_browser(tmp_path, browser):  # noqa: F811
    up = Upstream(tmp_path / "up", formats=("json",)).start()
    wheel(up, "demo", "1.0", timedelta(days=30))
    held = wheel(up, "demo", "2.0", timedelta(hours=1))
    wheel(up, "evil", "1.0", timedelta(days=30))
    policy = tmp_path / "policy.toml"
    policy.write_text(RULES)
    proxy = Proxy(tmp_path / "cache", up.env(), workers=2, PYPI_POLICY_FILE=str(policy)).start()
    proxy.policy = policy
    try:
        index = f"{proxy.url}/simple"
        assert pip_install(index, tmp_path / "a", "demo").returncode == 0
        assert pip_install(index, tmp_path / "b", "evil").returncode != 0
        file_url = proxy.url + "/packages" + held.path[len("/packages"):]
        assert requests.get(file_url, timeout=10).status_code == 403
        data = flushed(proxy, "refused", 3)  # demo 2.0 left off the page, its file, evil
        passes_at = next(r["passes_at"] for r in data["refused"] if r["what"] == "file")

        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{proxy.url}/")
        page.click("#policy-link")
        page.wait_for_url("**/policy")
        assert page.locator("#policy-mode").inner_text() == "enforce"
        assert page.locator("#rule-min-age").inner_text() == "7d"
        assert page.locator("#rule-exempt").inner_text() == "corp-*"
        assert page.locator("#rule-deny").inner_text() == "evil"
        assert page.locator("#policy-path").inner_text() == str(policy)
        rows = page.locator("#refused tbody tr")
        seen = {(rows.nth(i).get_attribute("data-rule"), rows.nth(i).get_attribute("data-project"),
                 rows.nth(i).locator("td").nth(3).inner_text()) for i in range(rows.count())}
        assert {("cooldown", "demo", "download"), ("cooldown", "demo", "left off the page"),
                ("deny", "evil", "page refused")} <= seen
        assert "127.0.0.1" in page.locator("#refused").inner_text()
        release = page.locator("#held tr[data-project=demo][data-version='2.0']")
        assert release.locator(".passes-at").inner_text() == passes_at
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", passes_at)
        assert page.locator("#reported").count() == 0

        # Report mode: served, and listed apart, marked as what would be refused.
        rewrite(proxy, 'mode = "report"\n' + RULES)
        eventually(lambda: requests.get(file_url, timeout=10,
                                        headers={"Connection": "close"}).status_code == 200)
        assert pip_install(index, tmp_path / "c", "evil").returncode == 0
        flushed(proxy, "reported", 1)
        time.sleep(1.2)  # past every worker's next look at the file
        page.reload()
        assert page.locator("#policy-mode").inner_text() == "report"
        marked = page.locator("#reported tbody tr.report[data-project=evil]")
        assert marked.count() >= 1 and marked.first.locator(".pill.report").inner_text() == "would"
        assert page.locator("#refused tbody tr").count() == rows.count()  # the enforced stay
        page.screenshot(path=str(screenshot(tmp_path, "policy.png")), full_page=True)

        # A bad file: the last good rules stay, and the page says why.
        rewrite(proxy, 'mode = "report"\n' + RULES + 'typo = 1\n')
        eventually(lambda: requests.get(f"{proxy.url}/policy.json", timeout=10).json()["error"])
        time.sleep(1.2)
        page.reload()
        assert "typo: unknown key" in page.locator("#policy-error").inner_text()
        page.close()
    finally:
        proxy.stop()
        up.stop()
