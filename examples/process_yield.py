"""Generate a process-yield data set: eight process settings of a batch reactor and the yield they gave.

A predictive-quality problem: the yield is a smooth but strongly non-linear response surface of the
settings (temperature and pressure interact like a wave, catalyst and stirring through a saturating term,
feed rate and residence time in a phase), measured with little noise. Two of the eight settings do not
matter. A batch id column is there to exclude. Fitting the surface well takes many optimisation steps, so
how fast a model learns — its learning rate and batch size — decides how good it is after a fixed number
of epochs; `benchmarks/tune_efficiency.py --task yield` searches it.

    python examples/process_yield.py --out data/process-yield --rows 30000 --shards 4
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from telemetry import write_example  # noqa: E402

# name: (mean, standard deviation) of each setting as run on the plant.
SETTINGS = {
    "temperature_c": (180.0, 12.0), "pressure_bar": (25.0, 3.0), "catalyst_pct": (1.2, 0.25),
    "stir_rpm": (300.0, 40.0), "feed_rate_kg_h": (520.0, 60.0), "residence_min": (45.0, 6.0),
    "ambient_c": (21.0, 3.0), "humidity_pct": (45.0, 10.0),
}


def generate(rows: int, seed: int = 0, noise_pct: float = 0.1) -> pd.DataFrame:
    """`rows` batches: the settings and `yield_pct`, measured with noise of standard deviation `noise_pct`
    (percentage points; the yield itself spreads by ~3 points)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(rows, len(SETTINGS)))       # settings in standard units
    response = (np.sin(2 * z[:, 0]) * np.cos(1.5 * z[:, 1]) + 0.5 * np.tanh(2 * z[:, 2] * z[:, 3])
                + 0.3 * np.sin(3 * z[:, 4] + z[:, 5]))        # ambient and humidity (z6, z7) do not matter
    df = pd.DataFrame({"batch_id": np.char.add("B-", np.arange(rows).astype(str))})
    for k, (name, (mean, sd)) in enumerate(SETTINGS.items()):
        df[name] = (mean + sd * z[:, k]).round(3)
    df["yield_pct"] = (82.0 + 5.0 * response + rng.normal(0, noise_pct, rows)).round(3)
    return df


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="data/process-yield")
    ap.add_argument("--rows", type=int, default=30000)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true", help="rewrite existing shards")
    args = ap.parse_args()
    write_example(lambda: generate(args.rows, args.seed), Path(args.out), args.shards, args.format, args.force)


if __name__ == "__main__":
    main()
