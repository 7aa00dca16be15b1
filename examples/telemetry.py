"""Generate a machine-failure data set from equipment telemetry, as sharded Parquet (or CSV).

Numeric sensor readings (some missing, as real telemetry is), a categorical machine type, a low-cardinality
integer shift, an id column to exclude, and an imbalanced label: roughly 1 row in 12 is a failure.
Failures follow from the physics-ish rules below, so a model has something real to learn.

    python examples/telemetry.py --out data/telemetry --rows 20000 --shards 8
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd


def generate(rows: int, seed: int = 0, regression: bool = False, life_noise_h: float = 10.0) -> pd.DataFrame:
    """`rows` of telemetry labelled with failure, or with `regression` with remaining_life_h, whose measurement
    noise has a standard deviation of `life_noise_h` hours."""
    rng = np.random.default_rng(seed)
    machine_type = rng.choice(["L", "M", "H"], size=rows, p=[0.5, 0.3, 0.2])
    quality = np.select([machine_type == "L", machine_type == "M"], [0.0, 0.5], 1.0)
    air_temp = rng.normal(300.0, 2.0, rows)
    process_temp = air_temp + rng.normal(10.0, 1.0, rows)
    rpm = rng.normal(1540.0, 180.0, rows)
    torque = np.clip(rng.normal(40.0, 10.0, rows), 3, None)
    tool_wear = rng.uniform(0, 250, rows)
    vibration = rng.gamma(2.0, 0.6, rows) + 0.004 * tool_wear
    shift = rng.integers(1, 4, rows)
    power = torque * rpm * 2 * np.pi / 60.0
    risk = (2.2 * (tool_wear / 250.0) ** 3 + 1.4 * np.abs(power - 6500) / 3000.0 + 0.9 * (vibration > 2.6)
            + 0.8 * ((process_temp - air_temp) < 8.6) - 0.6 * quality + 0.15 * (shift == 3))
    df = pd.DataFrame({
        "machine_id": np.char.add("M-", rng.integers(1000, 9999, rows).astype(str)),
        "machine_type": machine_type, "shift": shift,
        "air_temp_k": air_temp.round(2), "process_temp_k": process_temp.round(2),
        "rpm": rpm.round(0), "torque_nm": torque.round(2), "tool_wear_min": tool_wear.round(1),
        "vibration_mm_s": vibration.round(3),
    })
    if regression:
        noise = rng.normal(0, life_noise_h, rows)
        df["remaining_life_h"] = np.clip(400 - 1.3 * tool_wear - 60 * risk + noise, 0, None)
    else:
        p = 1 / (1 + np.exp(-(risk - 3.0) * 3.0))
        df["failure"] = np.where(rng.uniform(size=rows) < p, "failure", "ok")
    # Sensors drop out now and then: about 2% of readings are missing.
    for col in ("air_temp_k", "rpm", "torque_nm", "vibration_mm_s"):
        df.loc[rng.uniform(size=rows) < 0.02, col] = np.nan
    return df


def write_shards(df: pd.DataFrame, out: Path, shards: int, fmt: str = "parquet") -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, part in enumerate(np.array_split(np.arange(len(df)), shards)):
        path = out / f"part-{i:03d}.{fmt}"
        chunk = df.iloc[part]
        chunk.to_parquet(path, index=False) if fmt == "parquet" else chunk.to_csv(path, index=False)
        paths.append(path)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="data/telemetry")
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    ap.add_argument("--regression", action="store_true", help="label remaining_life_h instead of failure")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true", help="rewrite existing shards")
    args = ap.parse_args()
    write_example(lambda: generate(args.rows, args.seed, args.regression), Path(args.out), args.shards,
                  args.format, args.force)


def write_example(make, out: Path, shards: int, fmt: str, force: bool) -> None:
    """The examples' command line: write `make()`'s rows as shards under `out`, unless it already holds data."""
    if out.exists() and any(out.iterdir()) and not force:
        print(f"{out} already holds data; keeping it (--force rewrites)")
        return
    df = make()
    paths = write_shards(df, out, shards, fmt)
    print(f"wrote {len(df)} rows in {len(paths)} {fmt} shards to {out}")


if __name__ == "__main__":
    main()
