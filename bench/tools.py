"""What the benchmark needs on the machine: Debian tools, and the peers in their own venvs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from .procs import VENVS

APT = {"nginx": "nginx-light", "wrk": "wrk", "curl": "curl"}
PEERS = {  # name -> pinned packages, installed with the machine's normal pip
    "proxpi": ["proxpi==1.3.1", "gunicorn==27.0.1"],
    "devpi": ["devpi-server==6.20.3", "devpi-client==7.3.0"],
}


def ensure_tools() -> None:
    """Install missing Debian tools when we may (root with apt-get); otherwise say what to run."""
    missing = [tool for tool in APT if not shutil.which(tool)]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        packages = [APT[tool] for tool in missing]
        print(f"bench: installing {' '.join(packages)} with apt-get", file=sys.stderr)
        subprocess.run(["apt-get", "update", "-q"], check=False, capture_output=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", *packages], check=False, capture_output=True
        )
        missing = [tool for tool in APT if not shutil.which(tool)]
    if missing:
        packages = " ".join(APT[tool] for tool in missing)
        sys.exit(
            f"bench: missing {', '.join(missing)}; install them with: apt-get install -y {packages}"
        )


def ensure_peer(name: str) -> bool:
    """bench/.venvs/<name> with the pinned peer; False (and why) if it cannot be installed."""
    venv, pins = VENVS / name, PEERS[name]
    marker = venv / ".installed"
    if marker.is_file() and marker.read_text() == "\n".join(pins):
        return True
    print(f"bench: installing {' '.join(pins)} into {venv}", file=sys.stderr)
    try:
        subprocess.run(
            [sys.executable, "-m", "venv", "--clear", str(venv)], check=True, capture_output=True
        )
        subprocess.run(
            [str(venv / "bin/python"), "-m", "pip", "install", "--quiet", *pins],
            check=True,
            capture_output=True,
            text=True,
            timeout=600,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
        detail = getattr(error, "stderr", "") or ""
        print(
            f"bench: skipping {name}: could not install it: {detail.strip()[-500:]}",
            file=sys.stderr,
        )
        return False
    marker.write_text("\n".join(pins))
    return True
