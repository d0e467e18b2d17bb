"""The package as a user installs it: `pip install <checkout>` into a fresh venv.

Only what the package is made of is copied out of the checkout first (setup.cfg,
pyproject.toml, README.md, pypicache/), so the build leaves nothing in the checkout and never
finds a stale build/ of it. The dependencies come from the machine's registry through its
normal pip configuration: this pip is a user installing the package, not a client of the proxy.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from .servers import ROOT

PACKAGE_FILES = ("setup.cfg", "pyproject.toml", "README.md")


def install_checkout(directory: Path) -> Path:
    """A venv in `directory` with the checkout installed; its bin/ directory."""
    source, venv = directory / "source", directory / "venv"
    source.mkdir(parents=True)
    for name in PACKAGE_FILES:
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "pypicache", source / "pypicache",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYPI_", "UV_"))}
    env.pop("PYTHONPATH", None)  # nothing of this test run's own environment leaks in
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
         "--disable-pip-version-check", str(source)],
        env=env, capture_output=True, text=True, timeout=900,
    )
    if done.returncode:
        raise RuntimeError(f"pip install of the checkout failed:\n{done.stdout}{done.stderr}")
    return venv / "bin"
