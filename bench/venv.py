"""The harness's own virtualenv (bench/.venv): created and kept in step with bench/requirements*.txt.

`python -m bench` run from any interpreter re-executes itself inside bench/.venv after making sure it holds
the peers, gopherq itself (editable, `fast` extra) and the pycall example executor. A stamp of the
requirements files and pyproject.toml decides when to install again.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
VENV = BENCH / ".venv"
PYTHON = VENV / "bin" / "python"
STAMP = VENV / ".bench-stamp"
INPUTS = [
    BENCH / "requirements.txt",
    BENCH / "requirements-nodeps.txt",
    REPO / "pyproject.toml",
    REPO / "examples" / "gopherq-pycall" / "pyproject.toml",
]


def inside() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


def fingerprint() -> str:
    digest = hashlib.sha256()
    for path in INPUTS:
        if path.exists():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def pip(*args: str) -> None:
    subprocess.run([str(PYTHON), "-m", "pip", "install", "-q", *args], cwd=REPO, check=True)


def ensure() -> None:
    """Create or update bench/.venv (prints what it does; takes a few minutes the first time)."""
    if not PYTHON.exists():
        print(f"bench: creating {VENV}", flush=True)
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(VENV)], check=True)
    if STAMP.exists() and STAMP.read_text() == fingerprint():
        return
    print("bench: installing the peers and gopherq into bench/.venv (bench/requirements.txt)", flush=True)
    pip("-U", "pip")
    pip(
        "-r",
        str(BENCH / "requirements.txt"),
        "-e",
        f"{REPO}[fast,otel]",
        "-e",
        str(REPO / "examples" / "gopherq-pycall"),
    )
    pip("--no-deps", "-r", str(BENCH / "requirements-nodeps.txt"))
    STAMP.write_text(fingerprint())


def reexec(argv: list[str]) -> None:
    """Replace this process with the same command inside bench/.venv."""
    os.chdir(REPO)
    os.execv(str(PYTHON), [str(PYTHON), "-m", "bench", *argv])
