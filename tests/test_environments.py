"""A client's environment from its User-Agent (pypicache/environments.py), and the release it would
pick (pypicache/candidates.py): checked against what pip itself sends and what packaging computes
for this very machine."""
from __future__ import annotations

import json

from packaging import tags
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from pip._internal.network.session import user_agent as pips_user_agent

from pypicache.candidates import choose, choose_in
from pypicache.environments import UNKNOWN, applies, client_of
from pypicache.pagemodel import File

# What uv 0.13.8 sent from this kind of machine (captured from a request to a local server).
UV = ('uv/0.13.8 {"installer":{"name":"uv","version":"0.13.8","subcommand":["pip","install"]},'
      '"python":"3.12.1","implementation":{"name":"CPython","version":"3.12.1"},"distro":'
      '{"name":"macOS","version":"14.2","id":null,"libc":null},"system":{"name":"Darwin",'
      '"release":"23.2.0"},"cpu":"arm64","openssl_version":null,"setuptools_version":null,'
      '"rustc_version":null,"ci":null}')


def test_pips_own_user_agent_gives_this_machines_tags_and_markers():
    client = client_of(pips_user_agent())
    assert client.known
    ranked = sorted(client.ranks(), key=client.ranks().get)
    assert ranked == list(tags.sys_tags())  # the same tags, in the same order of preference
    here = default_environment()
    for name, value in client.environment:
        assert here[name] == value, name
    told = dict(client.environment).keys()
    assert {"python_full_version", "sys_platform", "platform_machine"} <= told


def test_uvs_user_agent_on_macos():
    client = client_of(UV)
    environment = dict(client.environment)
    assert environment["sys_platform"] == "darwin" and environment["python_version"] == "3.12"
    assert client.platforms[:2] == ("macosx_14_0_arm64", "macosx_14_0_universal2")
    assert tags.Tag("cp312", "cp312", "macosx_11_0_arm64") in client.ranks()
    assert tags.Tag("cp312", "cp312", "macosx_10_9_x86_64") not in client.ranks()


def test_windows_and_musl():
    windows = client_of('pip/26.3 {"cpu":"AMD64","implementation":{"name":"CPython",'
                        '"version":"3.11.4"},"python":"3.11.4","system":{"name":"Windows",'
                        '"release":"10"}}')
    assert windows.platforms == ("win_amd64",) and dict(windows.environment)["os_name"] == "nt"
    musl = client_of('uv/0.13.8 ' + json.dumps({
        "python": "3.12.1", "implementation": {"name": "CPython", "version": "3.12.1"},
        "system": {"name": "Linux", "release": "6.1"}, "cpu": "aarch64",
        "distro": {"libc": {"lib": "musl", "version": "1.2"}}}))
    assert musl.platforms == ("musllinux_1_2_aarch64", "musllinux_1_1_aarch64",
                              "musllinux_1_0_aarch64", "linux_aarch64")


def test_what_cannot_be_read_is_an_unknown_client():
    for agent in ("", "curl/8.5.0", "pip/26.3 {not json", 'pip/26.3 {"python": "three"}',
                  'pip/26.3 ["3.12"]', 'pip/26.3 {"python": "3.12\\n<script>"}'):
        assert client_of(agent) == UNKNOWN, agent


def test_markers_need_every_value_they_read():
    py38 = client_of(pips_user_agent().replace('"python":"', '"python":"3.8.18","x":"'))
    assert dict(py38.environment)["python_version"] == "3.8"
    later = Requirement('foo; python_version >= "3.11"')
    assert not applies(later, py38)
    assert applies(later, client_of(UV))
    assert not applies(Requirement('foo; platform_version == "1"'), client_of(UV))  # not sent
    assert applies(Requirement("foo"), UNKNOWN)
    assert not applies(later, UNKNOWN)
    extra = Requirement('foo; extra == "speed" and python_version >= "3"')
    assert not applies(extra, client_of(UV)) and applies(extra, client_of(UV), ["speed"])
    assert applies(Requirement('foo; extra == "Speed"'), UNKNOWN, ["speed"])  # names normalized


def wheel(name: str, **kwargs) -> File:
    return File(name, f"ab/{name}", **kwargs)


def test_the_release_a_resolver_would_pick():
    linux = client_of(pips_user_agent())
    files = [wheel("demo-1.0-py3-none-any.whl"), wheel("demo-1.1-py3-none-any.whl"),
             wheel("demo-1.2-py3-none-any.whl", yanked="broken"),
             wheel("demo-1.3-py3-none-any.whl", requires_python=">=4"),
             wheel("demo-2.0rc1-py3-none-any.whl")]
    assert choose(files, SpecifierSet(""), linux).filename == "demo-1.1-py3-none-any.whl"
    assert choose(files, SpecifierSet("<1.1"), linux).filename == "demo-1.0-py3-none-any.whl"
    assert choose(files, SpecifierSet(">=2.0rc1"), linux).filename == "demo-2.0rc1-py3-none-any.whl"
    only_fit = choose(files, SpecifierSet(">1.1"), linux)  # nothing final fits
    assert only_fit.filename == "demo-2.0rc1-py3-none-any.whl"
    assert choose(files, SpecifierSet(">=3"), linux) is None
    # requires-python is not known for an unknown client: the newest release is its guess
    assert choose(files, SpecifierSet(""), UNKNOWN).filename == "demo-1.3-py3-none-any.whl"


def test_the_wheel_that_fits_the_client_best():
    here = next(iter(tags.sys_tags()))
    native = wheel(f"demo-1.0-{here.interpreter}-{here.abi}-{here.platform}.whl")
    files = [wheel("demo-1.0-py2.py3-none-any.whl"), native,
             wheel("demo-1.0-cp312-cp312-win_amd64.whl"), wheel("demo-1.0.tar.gz")]
    assert choose(files, SpecifierSet(""), client_of(pips_user_agent())) == native
    assert choose(files, SpecifierSet(""), UNKNOWN).filename == "demo-1.0-py2.py3-none-any.whl"
    # Only an sdist fits the newest release: a resolver would build it, and there is no
    # metadata to fetch; an older wheel is not what it would ask for.
    files = [wheel("demo-1.0-py3-none-any.whl"), wheel("demo-2.0.tar.gz"),
             wheel("demo-2.0-cp312-cp312-win_amd64.whl")]
    assert choose(files, SpecifierSet(""), client_of(pips_user_agent())) is None
    assert choose([wheel("demo-1.0-cp312-cp312-win_amd64.whl")], SpecifierSet(""), UNKNOWN) is None
    # A newer release with no file for this client: the resolver takes the one before.
    files = [wheel("demo-1.0-py3-none-any.whl"), wheel("demo-2.0-cp312-cp312-win_amd64.whl")]
    assert choose(files, SpecifierSet(""), client_of(pips_user_agent())) == files[0]


def _document(files: list[File]) -> bytes:
    """Our PEP 691 document of these files, as pypicache/pagereader.py writes it (compact, sorted
    keys)."""
    entries = [{"filename": f.filename, "hashes": {"sha256": "0" * 64},
                "requires-python": f.requires_python, "url": f"../../packages/{f.path}",
                "yanked": f.yanked} for f in files]
    return json.dumps({"files": entries, "meta": {"api-version": "1.1"}, "name": "demo"},
                      separators=(",", ":"), sort_keys=True).encode()


def test_the_choice_read_from_the_pages_bytes_is_the_choice_from_its_files():
    """Fetching ahead chooses from our document's bytes, reading only the entries of the
    releases it looks at; it must pick what the choice from every parsed file picks."""
    here = next(iter(tags.sys_tags()))
    files = [wheel(f"demo-{v}-py3-none-any.whl") for v in
             ("0.9", "1.0", "1.0.1", "1.10", "1.9", "2.0.dev1", "2.0rc1", "1!0.1", "3.0.0")]
    files += [wheel("demo-3.0-py3-none-any.whl", yanked=True),  # 3.0 and 3.0.0 are one release
              wheel("demo-2.5-py3-none-any.whl", requires_python=">=4"),
              wheel("demo-2.4.tar.gz"), wheel(f"demo-2.4-{here.interpreter}-{here.abi}-{here.platform}.whl"),
              wheel("demo-2.3-cp27-cp27m-win32.whl"), wheel("demo-not.a.version-py3-none-any.whl")]
    document = _document(files)
    for client in (client_of(pips_user_agent()), UNKNOWN):
        for spec in ("", "<1.1", "<2", ">=1.9,<1.10", "~=1.0", "<1!0", ">=2.0rc1,<2.1", ">3",
                     "==2.0.*", "!=3.0.0", "<2.5", "<2.4", ">=5"):
            expected = choose(files, SpecifierSet(spec), client)
            got = choose_in(document, SpecifierSet(spec), client)
            assert (got and got.filename) == (expected and expected.filename), (spec, client.known)
    assert choose_in(document, SpecifierSet("<1.1"), UNKNOWN).filename == "demo-1.0.1-py3-none-any.whl"
    assert choose_in(document, SpecifierSet(""), UNKNOWN).filename == "demo-1!0.1-py3-none-any.whl"
