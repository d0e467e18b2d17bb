"""The policy in front of index servers others wrote (tests/indexes.py, started as their users
run them): pypiserver (HTML only), an nginx tree as bandersnatch writes it (HTML and PEP 691
JSON, no upload times in either) and devpi-server (an index of uploads, HTML only). Deny by
specifier works on any index; the rules of time meet files of unknown upload time, and
`unknown-time` decides, as docs/POLICY.md says.
Real gunicorn workers, real pip and uv; nothing beyond 127.0.0.1."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from . import indexes
from .servers import Proxy, installed, pip_install, uv_install
from .test_policy_e2e import COOLDOWN, eventually, rewrite
from .wheels import make_wheel

pytestmark = pytest.mark.e2e
JSON = "application/vnd.pypi.simple.v1+json"


@pytest.fixture(scope="module", params=["pypiserver", "nginx", "devpi"])
def stack(request, tmp_path_factory):
    """(proxy, {filename: its URL on the proxy}) in front of the index server named, with
    demo 1.0 and 2.0 and tool 1.0; the policy file starts empty (no rule)."""
    work = tmp_path_factory.mktemp(request.param)
    dists = work / "dists"
    dists.mkdir()
    for name, version in (("demo", "1.0"), ("demo", "2.0"), ("tool", "1.0")):
        filename, data = make_wheel(name, version)
        (dists / filename).write_bytes(data)
    start = {"pypiserver": indexes.start_pypiserver, "nginx": indexes.start_nginx,
             "devpi": indexes.start_devpi}[request.param]
    server = start(work, dists)
    policy = work / "policy.toml"
    policy.write_text("")
    try:
        proxy = Proxy(work / "cache", server.env(), workers=2,
                      PYPI_POLICY_FILE=str(policy)).start()
    except BaseException:
        server.stop()
        raise
    proxy.policy = policy
    urls = {}
    for project in ("demo", "tool"):
        page = requests.get(f"{proxy.url}/simple/{project}/", headers={"Accept": JSON},
                            timeout=30).json()
        urls |= {f["filename"]: f["url"] for f in page["files"]}
        assert not any(f.get("upload-time") for f in page["files"])  # none to be had
    yield proxy, urls
    proxy.stop()
    server.stop()


def apply(proxy: Proxy, text: str, url: str, header: str | None) -> None:
    """The policy file rewritten, and waited for until every worker has it."""
    rewrite(proxy, text)
    eventually(lambda: requests.get(url, timeout=10, headers={"Connection": "close"})
               .headers.get("X-Pypicache-Policy") == header)
    time.sleep(1.2)  # past every worker's next look at the file


def clients(proxy: Proxy, work: Path, *requirements: str) -> tuple:
    """What pip and `uv pip install` make of the requirements through the proxy."""
    index = f"{proxy.url}/simple"
    pip = pip_install(index, work / "pip", *requirements)
    uv = uv_install(index, work / "uv", work / "uv-cache", *requirements)
    return pip, uv


def test_deny_by_specifier_leaves_the_older_release(stack, tmp_path):
    proxy, urls = stack
    apply(proxy, '[deny]\nprojects = ["demo>=2"]\n', urls["demo-2.0-py3-none-any.whl"],
          "deny demo>=2")
    pip, uv = clients(proxy, tmp_path, "demo")
    assert pip.returncode == 0 and uv.returncode == 0, pip.stderr + uv.stderr
    assert installed(tmp_path / "pip") == installed(tmp_path / "uv") == {"demo": "1.0"}
    answer = requests.get(urls["demo-2.0-py3-none-any.whl"], timeout=10)
    assert answer.status_code == 403 and "denied by [deny] projects entry 'demo>=2'" in answer.text
    pinned = pip_install(f"{proxy.url}/simple", tmp_path / "pinned", "demo==2.0")
    assert pinned.returncode != 0 and "(from versions: 1.0)" in pinned.stderr


def test_unknown_time_hold_holds_everything_but_the_exempt(stack, tmp_path):
    proxy, urls = stack
    text = COOLDOWN + 'exempt = ["tool"]\nunknown-time = "hold"\n'
    apply(proxy, text, urls["demo-1.0-py3-none-any.whl"], "unknown-time hold")
    pip, uv = clients(proxy, tmp_path, "demo")
    assert pip.returncode != 0 and "(from versions: none)" in pip.stderr
    assert uv.returncode != 0 and "demo" in uv.stderr
    assert requests.get(urls["demo-1.0-py3-none-any.whl"], timeout=10).status_code == 403
    pip, uv = clients(proxy, tmp_path / "exempt", "tool")
    assert pip.returncode == 0 and uv.returncode == 0, pip.stderr + uv.stderr
    assert proxy.logs().count("unknown-time hold") >= 2


def test_unknown_time_serve_serves_the_newest(stack, tmp_path):
    proxy, urls = stack
    apply(proxy, COOLDOWN + 'unknown-time = "serve"\n', urls["demo-1.0-py3-none-any.whl"], None)
    pip, uv = clients(proxy, tmp_path, "demo")
    assert pip.returncode == 0 and uv.returncode == 0, pip.stderr + uv.stderr
    assert installed(tmp_path / "pip") == installed(tmp_path / "uv") == {"demo": "2.0"}
