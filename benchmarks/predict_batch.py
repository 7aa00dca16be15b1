"""`trainyard predict --bundle` on a loan book against a plain loop over the same bundle, in one invocation.

    .venv/bin/python benchmarks/predict_batch.py [--rows 200000] [--shards 4] [--repeat 2]

A small classifier bundle (20 features: 10 numbers, 9 categories, an id; written here, untrained weights: the
model's cost is not what is measured) scores a generated book of Parquet shards:
- trainyard: `python -m trainyard predict --bundle OUT BOOK --out scored.parquet` as a cron job runs it, command
  start to exit (reading, the notes, the atomic write included);
- plain: what a user would write with the Python API: `jobs.bundle.load(path).predict(batch_df)` over pyarrow
  batches of 65,536 rows, the rows and predictions written with a ParquetWriter, in this process (imports not
  counted).
Peak memory of each is its process's max RSS (the plain loop runs in a child process too, for its own figure).
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NUMBERS = [f"x{i}" for i in range(10)]
CATEGORIES = {f"c{i}": [f"v{j}" for j in range(3 + i)] for i in range(9)}

PLAIN = """
import sys, time, pyarrow as pa, pyarrow.dataset as ds, pyarrow.parquet as pq, resource
sys.path.insert(0, {root!r})
from jobs.bundle import load, resolve
t0 = time.perf_counter()
bundle = load(resolve({out!r}))
writer = None
for batch in ds.dataset({book!r}, format="parquet").to_batches(batch_size=65536):
    df = batch.to_pandas()
    got = bundle.predict(df)
    df["prediction"] = got["predictions"]
    for i, c in enumerate(bundle.preprocessor.classes):
        df[f"probability_{{c}}"] = [p[i] for p in got["probabilities"]]
    table = pa.Table.from_pandas(df, preserve_index=False)
    writer = writer or pq.ParquetWriter({dest!r}, table.schema)
    writer.write_table(table)
writer.close()
print(time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def write_bundle(out: Path) -> None:
    from jobs import bundle as B
    from jobs.model import build_model
    from jobs.tabular import CategoricalState, NumericState, Preprocessor

    pre = Preprocessor(task="classification", label="default", classes=["no", "yes"],
                       numeric=[NumericState(n, fill=0.0, center=0.0, scale=1.0) for n in NUMBERS],
                       categorical=[CategoricalState(c, v) for c, v in CATEGORIES.items()],
                       stats={"numeric": {n: {"min": -4.0, "max": 4.0} for n in NUMBERS}})
    dim = len(NUMBERS) + sum(len(v) + 1 for v in CATEGORIES.values())
    config = {"kind": "mlp", "input_dim": dim, "output_dim": 2, "hidden": [128, 64], "dropout": 0.0,
              "activation": "relu"}
    B.write(out, state_dict=build_model(config).state_dict(), model_config=config, preprocessor=pre,
            metrics={"val": {}}, spec_yaml="name: loans\n", lineage={"version": "1", "name": "loans"},
            progress=lambda _line: None)


def write_book(folder: Path, rows: int, shards: int) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir()
    per = rows // shards
    for s in range(shards):
        df = pd.DataFrame({"loan_id": np.arange(s * per, (s + 1) * per)})
        for n in NUMBERS:
            df[n] = rng.normal(size=per).round(3)
        for c, values in CATEGORIES.items():
            df[c] = rng.choice(values, per)
        df.to_parquet(folder / f"part-{s:03d}.parquet", index=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="predict-batch-") as tmp:
        tmp = Path(tmp)
        write_bundle(tmp / "out")
        write_book(tmp / "book", args.rows, args.shards)
        print(f"[predict-batch] {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start; "
              f"{args.rows:,} rows in {args.shards} shard(s), 20 columns", flush=True)
        rows = []
        for r in range(args.repeat):
            dest = tmp / f"ty-{r}.parquet"
            t0 = time.perf_counter()
            run = subprocess.run([sys.executable, "-m", "trainyard", "predict", "--bundle", str(tmp / "out"),
                                  str(tmp / "book"), "--out", str(dest)], cwd=ROOT, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if run.returncode != 0:
                sys.exit(f"trainyard predict failed ({run.returncode}):\n{run.stderr[-3000:]}")
            ty_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            plain = subprocess.run([sys.executable, "-c", PLAIN.format(root=str(ROOT), out=str(tmp / "out"),
                                    book=str(tmp / "book"), dest=str(tmp / f"plain-{r}.parquet"))],
                                   capture_output=True, text=True, check=True).stdout.split()
            same = pd.read_parquet(dest)["prediction"].equals(pd.read_parquet(tmp / f"plain-{r}.parquet")["prediction"])
            rows.append((wall, float(plain[0]), ty_rss, int(plain[1]), same))
            print(f"[predict-batch] run {r + 1}: trainyard {wall:.1f} s (max RSS of the children so far "
                  f"{ty_rss / 1024:.0f} MB), plain {float(plain[0]):.1f} s ({int(plain[1]) / 1024:.0f} MB); "
                  f"same predictions: {same}", flush=True)
        med = lambda i: float(np.median([r[i] for r in rows]))      # noqa: E731
        print(f"\n| rows | trainyard predict --bundle | plain loop | plain/trainyard | trainyard rows/s |\n"
              f"|---:|---:|---:|---:|---:|\n| {args.rows:,} | {med(0):.1f} s | {med(1):.1f} s | "
              f"{med(1) / med(0):.2f} | {args.rows / med(0):,.0f} |")
        print(f"[predict-batch] load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
