"""`make clean` removes only what trainyard generates: never data/ as a whole (the README keeps users' data
there), never runs/ (trained bundles), and an example data set only if `make data` wrote it and nothing was
added to it. Runs the repository's Makefile with make in a scratch folder; no Ray, about a second."""
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAKE = shutil.which("make")
pytestmark = pytest.mark.skipif(MAKE is None, reason="needs make")


def _make(folder: Path, *targets: str, **variables: str) -> str:
    # -o: the venv counts as installed (`data` depends on `install`), so nothing is pip-installed here.
    out = subprocess.run([MAKE, "-C", str(folder), "-o", ".venv/.installed", *targets,
                          *(f"{k}={v}" for k, v in variables.items())],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


@pytest.fixture
def repo(tmp_path) -> Path:
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    (tmp_path / ".venv").mkdir()
    (tmp_path / "pyproject.toml").touch()
    (tmp_path / ".venv" / ".installed").touch()
    # Stands in for the example generators: writes one shard where --out says, as they do.
    fake = tmp_path / "fake-python"
    fake.write_text('#!/bin/sh\nmkdir -p "$3" && echo rows > "$3/part-000.parquet"\n')
    fake.chmod(0o755)
    return tmp_path


def test_clean_keeps_user_data_and_runs_and_removes_only_what_make_data_wrote(repo):
    (repo / "data" / "process-yield").mkdir(parents=True)
    (repo / "data" / "process-yield" / "mine.csv").write_text("a,b\n")      # the user's, before make data
    (repo / "data" / "customers.parquet").write_text("the user's")
    (repo / "runs" / "job" / "bundles" / "v1").mkdir(parents=True)
    out = _make(repo, "data", PY=str(repo / "fake-python"))
    assert "data/process-yield already holds data; keeping it" in out
    assert sorted(p.name for p in (repo / "data" / "telemetry").iterdir()) == [".written-by-make-data",
                                                                               "part-000.parquet"]
    (repo / "data" / "parts").mkdir()
    (repo / "data" / "parts" / "img.png").write_text("the user's")

    out = _make(repo, "clean")
    assert "removed data/telemetry" in out and not (repo / "data" / "telemetry").exists()
    assert (repo / "data" / "process-yield" / "mine.csv").is_file()
    assert (repo / "data" / "customers.parquet").is_file() and (repo / "data" / "parts" / "img.png").is_file()
    assert (repo / "runs" / "job" / "bundles" / "v1").is_dir()


def test_an_example_set_the_user_added_files_to_is_kept(repo):
    _make(repo, "data", PY=str(repo / "fake-python"))
    (repo / "data" / "telemetry" / "extra-readings.parquet").write_text("the user's")
    out = _make(repo, "clean")
    assert "kept data/telemetry" in out
    assert (repo / "data" / "telemetry" / "extra-readings.parquet").is_file()
