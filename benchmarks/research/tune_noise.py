"""How far apart do two trainings of the SAME configuration land? The noise floor under tune_efficiency's 1% target.

Compares two finished searches that trained the same configurations (same sampler seed, same spec, same
`train.seed`) but from separately prepared data: the same rows in another block order, so each trial sees its
batches in another order. For every configuration both searches trained to the end it prints the best
val_loss of each and the difference; a 1% target is only meaningful if this spread is well under 1%.

    python benchmarks/research/tune_noise.py runs/bench-tune-cos-pilot/no_stopping-s0 runs/bench-tune-cosine/no_stopping-s0
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path


def best_by_config(search: Path) -> dict[tuple[float, int], float]:
    results = search / "tune" / "results.csv"
    if not results.is_file():
        sys.exit(f"{results}: not found; give the output folder of a finished search (it holds tune/results.csv)")
    with results.open() as f:
        return {(round(float(r["lr"]), 10), int(r["batch_size"])): float(r["best_val_loss"])
                for r in csv.DictReader(f) if r["status"] == "completed" and r["best_val_loss"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("first", type=Path)
    ap.add_argument("second", type=Path)
    ap.add_argument("--top", type=int, default=10, help="configurations compared, best first (by the first search)")
    args = ap.parse_args()
    a, b = best_by_config(args.first), best_by_config(args.second)
    common = sorted(set(a) & set(b), key=a.get)[:args.top]
    if not common:
        sys.exit("the two searches trained no configuration in common to the end; were they run with the same "
                 "--samples, --seeds and --epochs?")
    print("| lr | batch size | best val_loss (first) | best val_loss (second) | difference |")
    print("|---:|---:|---:|---:|---:|")
    for k in common:
        print(f"| {k[0]:.3g} | {k[1]} | {a[k]:.5f} | {b[k]:.5f} | {100 * (b[k] / a[k] - 1):+.1f}% |")
    diffs = [abs(b[k] / a[k] - 1) * 100 for k in common]
    rank_a = sorted(common, key=a.get)
    rank_b = sorted(common, key=b.get)
    print(f"\n{len(common)} configurations: |difference| median {statistics.median(diffs):.1f}%, "
          f"max {max(diffs):.1f}%; the best of the first is #{rank_b.index(rank_a[0]) + 1} in the second; "
          f"the best of the second is #{rank_a.index(rank_b[0]) + 1} in the first.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
