"""The process-yield data set (examples/process_yield.py) and how tune_efficiency.py searches it (no Ray)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import process_yield  # noqa: E402

from jobs.spec import validate_spec  # noqa: E402


def test_generate_is_reproducible_and_complete():
    a, b = process_yield.generate(500, seed=3), process_yield.generate(500, seed=3)
    pd.testing.assert_frame_equal(a, b)
    assert not process_yield.generate(500, seed=4).equals(a)
    assert list(a.columns) == ["batch_id", *process_yield.SETTINGS, "yield_pct"]
    assert a["batch_id"].is_unique
    assert not a.isna().any().any()
    for name, (mean, sd) in process_yield.SETTINGS.items():
        assert a[name].mean() == pytest.approx(mean, abs=4 * sd / np.sqrt(500))
        assert a[name].std() == pytest.approx(sd, rel=0.15)


def test_yield_is_a_surface_of_six_settings_with_little_noise():
    quiet = process_yield.generate(4000, seed=1, noise_pct=0.0)
    noisy = process_yield.generate(4000, seed=1)
    # The same settings: the default noise moves the yield by ~0.1 points against a spread of ~3.
    assert (noisy["yield_pct"] - quiet["yield_pct"]).std() == pytest.approx(0.1, rel=0.15)
    assert 2.0 < quiet["yield_pct"].std() < 5.0
    # Temperature matters through a wave: yield is not monotone in it, so its linear correlation is weak while
    # the mean yield moves by points between its bins.
    bins = pd.qcut(quiet["temperature_c"], 8)
    by_bin = quiet.groupby(bins, observed=True)["yield_pct"].mean()
    assert by_bin.max() - by_bin.min() > 1.0
    # Ambient temperature and humidity do not enter the surface.
    for name in ("ambient_c", "humidity_pct"):
        by_bin = quiet.groupby(pd.qcut(quiet[name], 4), observed=True)["yield_pct"].mean()
        assert by_bin.max() - by_bin.min() < 0.5


def _benchmark_plan(out: Path, task: str) -> dict:
    """What benchmarks/tune_efficiency.py would run (its --plan-only: data written, nothing trained), read the way a
    user reads it: from the script's output, not by importing the benchmark."""
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "tune_efficiency.py"), "--plan-only",
                          "--task", task, "--rows", "400", "--epochs", "3", "--samples", "8", "--grace", "1",
                          "--reduction", "3", "--seeds", "0", "--out", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_benchmark_spec_and_grid(tmp_path):
    plan = _benchmark_plan(tmp_path / "yield", "yield")
    data = Path(plan["data"])
    assert sorted(p.name for p in data.iterdir()) == [f"part-{i:03d}.parquet" for i in range(4)]
    assert len(pd.read_parquet(data)) == 400
    spec = validate_spec(plan["spec"])
    assert (spec.data.task, spec.data.label, spec.data.features.exclude) == ("regression", "yield_pct",
                                                                               ["batch_id"])
    runs = plan["searches"]
    assert runs["asha-s0"]["batch_size"] == {"choice": [256, 512, 1024, 2048]}
    assert runs["grid"]["batch_size"] == {"choice": [512, 2048]}
    assert _benchmark_plan(tmp_path / "classification", "classification")["searches"]["grid"]["batch_size"] == {
        "choice": [64, 256]}
