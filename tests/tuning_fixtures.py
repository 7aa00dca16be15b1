"""Specs and helpers for the tuning tests (imported by tests/test_tuning*.py; conftest.py stays shared)."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from tests.conftest import ROOT, small_spec

# The learning rates the searches in these tests sweep: two that learn within an epoch, two that do not move
# (lr 1e-5/1e-6 leave val_loss where it started). Searched as a grid they run in this order, so with two
# trials at a time the slow pair reaches ASHA's first rung after the good pair has set the bar: ASHA stops them.
GOOD_AND_BAD_LRS = [0.03, 0.01, 1e-5, 1e-6]


def tuning_spec(name: str, data, output, *, epochs: int = 4, tune: dict | None = None, **train) -> dict:
    """A small job with a `tune` section: one worker per trial (two trials fit the 4 logical CPUs at once)."""
    spec = small_spec(name, data, output, epochs=epochs, workers=1, early_stop=None, **train)
    spec["tune"] = {"search": "grid", "lr": {"choice": GOOD_AND_BAD_LRS}, "batch_size": None,
                    "scheduler": {"asha": {"grace_period": 1, "reduction_factor": 2}}, **(tune or {})}
    return spec


def read_results(output: Path) -> list[dict]:
    with (Path(output) / "tune" / "results.csv").open() as f:
        return list(csv.DictReader(f))


def experiment_dir(output: Path) -> Path:
    found = sorted((Path(output) / "ray").glob("tune-*"))
    assert found, f"no experiment under {output}/ray"
    return found[-1]


def ended_trials(output: Path) -> set[str]:
    try:
        return {p.stem for p in (experiment_dir(output) / "ended").glob("*.json")}
    except AssertionError:
        return set()


def checkpoints(train_run: Path) -> list[str]:
    """The checkpoint folders of a Train run (not its checkpoint_manager_snapshot.json)."""
    return sorted(p.name for p in Path(train_run).glob("checkpoint_*") if p.is_dir())


def ray_address() -> str:
    import ray
    return ray.get_runtime_context().gcs_address


def start_driver(spec_path: Path, log: Path, *extra: str) -> subprocess.Popen:
    """`trainyard tune SPEC` as its own process, a driver of the test session's Ray cluster (a job of its own:
    killing it ends its trials, their Train runs and their placement groups, as for a user's driver)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "trainyard", "tune", str(spec_path), "--address", ray_address(), *extra],
        cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen, log: Path, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the driver exited ({proc.returncode}) before {what}:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    stop(proc, signal.SIGKILL)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen, sig: int, timeout: float = 120) -> int:
    """Send `sig` to the driver we started (only that process) and wait for it to exit."""
    if proc.poll() is None:
        os.kill(proc.pid, sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        return proc.wait(30)
