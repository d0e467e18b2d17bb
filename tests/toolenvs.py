"""Index servers the tests start (pypiserver, devpi-server), each from a venv of its own.

They are test tools, not the server's dependencies: in the server's environment their passlib
held bcrypt back to a release it still ran with (4.0.1), and the image shipped that old bcrypt
for a test tool's sake. Each venv is made once, with the machine's normal pip configuration,
under the user's cache directory (PYPICACHE_TEST_TOOLS to choose another), named by its pins
and its Python, and shared by every checkout and test run; a lock makes concurrent runs wait
for the one that builds it.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

# name -> pinned packages (the versions the suite was written against).
TOOLS = {
    "pypiserver": ("pypiserver==2.4.2",),
    "devpi": ("devpi-server==6.20.3", "devpi-client==7.3.0"),
}


def tools_dir() -> Path:
    chosen = os.environ.get("PYPICACHE_TEST_TOOLS")
    if chosen:
        return Path(chosen)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "pypicache-tests" / "tools"


def tool_bin(name: str) -> Path:
    """The bin/ directory of the venv of tool `name`, made first if it is not there yet."""
    pins = TOOLS[name]
    key = hashlib.sha256("\n".join((sys.version, *pins)).encode()).hexdigest()[:12]
    root = tools_dir()
    root.mkdir(parents=True, exist_ok=True)
    venv = root / f"{name}-{key}"
    with open(root / f"{name}-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run building it: wait for it
        done = venv / ".complete"
        if not done.is_file():
            _build(venv, pins)
            done.write_text("\n".join(pins) + "\n")
    return venv / "bin"


def _build(venv: Path, pins: tuple[str, ...]) -> None:
    shutil.rmtree(venv, ignore_errors=True)  # a build that died half-way
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    # The machine's pip configuration (its registry), but none of the suite's own settings.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYPI_", "UV_"))}
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
         "--disable-pip-version-check", *pins],
        env=env, capture_output=True, text=True, timeout=900,
    )
    if done.returncode:
        shutil.rmtree(venv, ignore_errors=True)
        raise RuntimeError(f"could not install {' '.join(pins)}: {done.stderr[-2000:]}")
