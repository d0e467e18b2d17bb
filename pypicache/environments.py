"""What a client's User-Agent says of the environment it installs into: PEP 508 marker values
and the wheel tags it accepts, for fetching ahead what that client will ask for next.

pip and uv send `<installer>/<version> <json>`, the JSON being the fields the public index's
download statistics read (pip's `pip/_internal/network/session.py` `user_agent()`, uv's
`uv-client` linehaul): python, implementation, system name and release, cpu, distro and libc.
A client that says nothing of this kind is "unknown": only requirements whose markers need no
value of its environment apply to it, and only pure wheels are taken as fitting it.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Iterable

from packaging import tags
from packaging.markers import Marker
from packaging.requirements import Requirement

_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")
_SHORT = re.compile(r"[A-Za-z0-9._+ -]{1,100}")  # what a field of ours must look like
_QUOTED = re.compile(r"\"[^\"]*\"|'[^']*'")
_NAME = re.compile(r"[a-z_]+")
# platform.system() -> sys.platform and os.name, for the systems wheels are built for.
_SYSTEMS = {"Linux": ("linux", "posix"), "Darwin": ("darwin", "posix"), "Windows": ("win32", "nt")}
_WINDOWS = {"amd64": "win_amd64", "x86_64": "win_amd64", "x86": "win32", "i686": "win32",
            "arm64": "win_arm64", "aarch64": "win_arm64"}
# Architectures the manylinux1/2010 aliases exist for (PEP 513, 571); 2014 covers more (599).
_OLD_MANYLINUX = ("x86_64", "i686")
CLIENTS_KEPT = 256  # User-Agent strings a worker keeps parsed


@dataclass(frozen=True)
class Client:
    """A client's environment as far as its User-Agent tells (`environment` empty: unknown)."""

    environment: tuple[tuple[str, str], ...] = ()
    platforms: tuple[str, ...] = ()  # wheel platform tags, most specific first
    python: tuple[int, int] | None = None
    full_python: str | None = None
    cpython: bool = False
    _tags: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def known(self) -> bool:
        return self.python is not None

    def ranks(self) -> dict[tags.Tag, int]:
        """Each wheel tag this client accepts -> its preference (0 is best), as pip orders
        them (packaging.tags); empty for an unknown client."""
        if not self._tags and self.python is not None:
            interpreter = "cp%d%d" % self.python if self.cpython else None
            order: list[tags.Tag] = []
            if self.cpython:
                order += tags.cpython_tags(self.python, [interpreter], self.platforms)
            order += tags.compatible_tags(self.python, interpreter, self.platforms)
            self._tags.update((tag, rank) for rank, tag in enumerate(dict.fromkeys(order)))
        return self._tags


UNKNOWN = Client()


def client_of(user_agent: str) -> Client:
    """The Client a User-Agent describes, UNKNOWN when it describes none we can read."""
    _, _, rest = user_agent.partition(" ")
    if not rest.startswith("{"):
        return UNKNOWN
    try:
        data = json.loads(rest)
    except ValueError:
        return UNKNOWN
    if not isinstance(data, dict):
        return UNKNOWN
    full = _text(data.get("python"))
    match = _VERSION.fullmatch(full or "")
    if match is None:
        return UNKNOWN
    python = (int(match[1]), int(match[2]))
    environment = {"python_version": "%d.%d" % python, "python_full_version": full}
    implementation = _section(data, "implementation")
    name = _text(implementation.get("name"))
    if name:
        environment["platform_python_implementation"] = name
        environment["implementation_name"] = name.lower()
        version = _text(implementation.get("version"))
        if version:
            environment["implementation_version"] = version
    system = _section(data, "system")
    system_name, release = _text(system.get("name")), _text(system.get("release"))
    cpu = _text(data.get("cpu"))
    if system_name:
        environment["platform_system"] = system_name
        if system_name in _SYSTEMS:
            environment["sys_platform"], environment["os_name"] = _SYSTEMS[system_name]
    if release:
        environment["platform_release"] = release
    if cpu:
        environment["platform_machine"] = cpu
    return Client(tuple(sorted(environment.items())), _platforms(system_name, cpu, data),
                  python, full, name == "CPython")


def _text(value) -> str | None:
    return value if isinstance(value, str) and _SHORT.fullmatch(value) else None


def _section(data: dict, name: str) -> dict:
    value = data.get(name)
    return value if isinstance(value, dict) else {}


def _platforms(system: str | None, cpu: str | None, data: dict) -> tuple[str, ...]:
    """Platform tags for the system, most specific first (what packaging.tags would compute
    on that machine): manylinux/musllinux from the libc, macOS from its version."""
    if not cpu:
        return ()
    arch = cpu.lower().replace("-", "_").replace(".", "_")
    if system == "Linux":
        libc = _section(_section(data, "distro"), "libc")
        match = _VERSION.fullmatch(_text(libc.get("version")) or "")
        found: list[str] = []
        if match and libc.get("lib") == "glibc" and int(match[1]) == 2:
            lowest = 5 if arch in _OLD_MANYLINUX else 17
            for minor in range(int(match[2]), lowest - 1, -1):
                found.append(f"manylinux_2_{minor}_{arch}")
                legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}.get(minor)
                if legacy and (minor == 17 or arch in _OLD_MANYLINUX):
                    found.append(f"{legacy}_{arch}")
        elif match and libc.get("lib") == "musl" and int(match[1]) == 1:
            found += [f"musllinux_1_{minor}_{arch}" for minor in range(int(match[2]), -1, -1)]
        return tuple(found + [f"linux_{arch}"])
    if system == "Darwin":
        distro = _section(data, "distro")
        match = _VERSION.fullmatch(_text(distro.get("version")) or "")
        if match is None:
            return ()
        version = (int(match[1]), int(match[2]) if int(match[1]) == 10 else 0)
        return tuple(tags.mac_platforms(version, "arm64" if arch == "aarch64" else arch))
    if system == "Windows" and arch in _WINDOWS:
        return (_WINDOWS[arch],)
    return ()


def _variables(marker: Marker) -> set[str]:
    """The environment variables a marker reads (its quoted values taken out)."""
    return set(_NAME.findall(_QUOTED.sub("", str(marker))))


def applies(requirement: Requirement, client: Client, extras: Iterable[str] = ()) -> bool:
    """Whether a `Requires-Dist` applies to this client installing these extras of the
    project: its marker true for the client's environment. A marker that reads a value the
    User-Agent did not give (or any value, for an unknown client) is taken as false: a guess
    would take this server's own values."""
    marker = requirement.marker
    if marker is None:
        return True
    environment = dict(client.environment)
    if not _variables(marker) <= set(environment) | {"extra", "and", "or", "in", "not"}:
        return False
    return any(marker.evaluate(environment | {"extra": extra})
               for extra in ("", *sorted(extras)))
