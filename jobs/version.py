"""Which trainyard this is (and which Ray, torch and Python), for a bundle's lineage and `trainyard --version`.

The package's version alone does not tell two trainyards apart (it has said 0.1.0 since the start, while what a
bundle holds and how a search resumes changed under it): from a git checkout the commit is added, and "+changes"
when the checkout's tracked files differ from it. A copy without git (a wheel, a Ray job's shipped working
directory) gives the package's version alone.
"""
from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path

_SOURCE = Path(__file__).resolve().parents[1]


@functools.lru_cache(maxsize=1)
def trainyard_version() -> str:
    """'0.1.0 (git 6d0b8b8)', '0.1.0 (git 6d0b8b8+changes)' or '0.1.0'."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        number = version("trainyard")
    except PackageNotFoundError:          # run from a source tree that was never installed
        number = "unknown"
    if not (_SOURCE / ".git").exists():
        return number
    try:
        commit = subprocess.run(["git", "-C", str(_SOURCE), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
        changed = subprocess.run(["git", "-C", str(_SOURCE), "diff", "--quiet", "HEAD", "--"], capture_output=True,
                                 timeout=5).returncode == 1
    except (OSError, subprocess.SubprocessError):    # no git on PATH, a broken checkout: the number alone
        return number
    return f"{number} (git {commit}{'+changes' if changed else ''})" if commit else number


def versions() -> dict:
    """What a bundle's lineage.json records of the software that wrote it."""
    import ray
    import torch

    return {"trainyard": trainyard_version(), "ray": ray.__version__, "torch": torch.__version__,
            "python": platform.python_version()}
