"""How much ASHA saves: the same random search with and without early stopping, and a grid, in one run.

The data set is the machine-failure telemetry, where the learning rate matters: the search samples it
log-uniformly over three decades (1e-5 … 1e-1) with the batch size, and too small a rate barely moves val_loss
in the epochs given. Every search trains the same spec with `trainyard tune`'s code path (every trial a Ray
Train run). For each search we report

- trial-epochs and wall time until some trial first reported a val_loss within 1% of the best that ANY of
  the searches found (its "target"), counted over every trial's reports in the order they arrived;
- trial-epochs trained in total (read from the trials' Train checkpoints: a trial ASHA stops may have trained
  an epoch or two past the one it was judged on, and those count), and total wall time.

Goal (issue 3): ASHA reaches the target with ≤ 1/3 of the trial-epochs of the search without early stopping.

    python benchmarks/tune_efficiency.py                   # embedded local Ray
    python benchmarks/tune_efficiency.py --samples 8 --epochs 6 --rows 12000   # quicker
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples"))

WITHIN = 0.01        # "within 1% of the best"


def base_spec(data: Path, out: Path, epochs: int) -> dict:
    return {"name": "tune-efficiency",
            "data": {"path": str(data), "label": "failure", "features": {"exclude": ["machine_id"]}},
            "model": {"hidden": [64, 32], "dropout": 0.0},
            "train": {"epochs": epochs, "batch_size": 64, "lr": 1e-3, "workers": 1, "early_stop": None,
                      "max_failures": 0, "seed": 0},
            "output": str(out)}


def searches(samples: int, epochs: int, grace: int, rf: float) -> dict[str, dict]:
    space = {"lr": {"loguniform": [1e-5, 1e-1]}, "batch_size": {"choice": [32, 64, 128, 256]}}
    return {
        "asha": {"search": "random", "samples": samples, **space,
                 "scheduler": {"asha": {"grace_period": grace, "reduction_factor": rf}}},
        # Same seed, same sampler: the very configurations ASHA saw, each trained to the end.
        "no_stopping": {"search": "random", "samples": samples, **space, "scheduler": "none"},
        # The classic sweep: 4 learning rates × 2 batch sizes, every trial to the end.
        "grid": {"search": "grid", "lr": {"loguniform": [1e-4, 1e-1]}, "grid_points": 4,
                 "batch_size": {"choice": [64, 256]}, "scheduler": "none"},
    }


def reports(experiment: Path) -> list[dict]:
    """Every result Tune received, from each trial's result.json: trial, epoch, val_loss, arrival time."""
    rows = []
    for result_file in experiment.glob("trial-*/result.json"):
        for line in result_file.read_text().splitlines():
            r = json.loads(line)
            if "epoch" in r and isinstance(r.get("val_loss"), (int, float)) and not math.isnan(r["val_loss"]):
                rows.append({"trial": r["trial_id"], "epoch": r["epoch"], "val_loss": r["val_loss"],
                             "timestamp": r["timestamp"], "trial_started": r["timestamp"] - r["time_total_s"]})
    # One row per (trial, epoch): a trial resumed or re-reported keeps its first report of an epoch.
    seen, unique = set(), []
    for r in sorted(rows, key=lambda r: (r["timestamp"], r["trial"], r["epoch"])):
        if (r["trial"], r["epoch"]) not in seen:
            seen.add((r["trial"], r["epoch"]))
            unique.append(r)
    return unique


def experiment_dir(out: Path) -> Path:
    return sorted((out / "ray").glob("tune-*"))[-1]


def summarise(name: str, out: Path, wall_s: float, target: float) -> dict:
    events = reports(experiment_dir(out))
    start = min(e["trial_started"] for e in events)
    with (out / "tune" / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    epochs_to, seconds_to = None, None
    for n, e in enumerate(events, 1):
        if e["val_loss"] <= target:
            epochs_to, seconds_to = n, e["timestamp"] - start
            break
    return {"search": name, "trials": len(rows),
            "stopped": sum(r["status"] == "stopped" for r in rows),
            "best_val_loss": min(e["val_loss"] for e in events),
            "trial_epochs_to_target": epochs_to, "seconds_to_target": seconds_to,
            "trial_epochs_reported": len(events),
            "trial_epochs_trained": sum(int(r["epochs_run"]) for r in rows),
            "wall_s": wall_s, "configs": sorted((float(r["lr"]), int(r["batch_size"])) for r in rows)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=30000)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=9)
    ap.add_argument("--grace", type=int, default=1)
    ap.add_argument("--reduction", type=float, default=3)
    ap.add_argument("--only", nargs="*", choices=["asha", "no_stopping", "grid"], default=None)
    ap.add_argument("--out", default="runs/bench-tune")
    ap.add_argument("--address", default=None)
    args = ap.parse_args()

    from cluster import connect
    from jobs.cli import _quiet_ray
    from jobs.spec import validate_spec
    from telemetry import generate, write_shards
    from tuning import run_tune

    out = Path(args.out).resolve()
    data = out / f"data-{args.rows}"
    if not data.exists():
        write_shards(generate(args.rows, seed=7), data, 4)
    _quiet_ray()
    res = connect(args.address)
    print(f"[bench] {res['CPU']:g} CPU, {res['GPU']:g} GPU; {args.rows} rows; {args.samples} samples, "
          f"{args.epochs} epochs, ASHA grace {args.grace} reduction {args.reduction:g}", flush=True)

    # One prepared data set for all three searches. Preparing the same files twice gives the same rows in
    # another block order (and fitted statistics that differ in the last digits); the same config trained on
    # them lands on a val_loss up to ~1.5% away, more than the margin this benchmark measures. Shared, a config gives the same curve
    # in every search, and the searches differ only in how they schedule trials.
    from jobs.train import prepare
    prepared = prepare(validate_spec(base_spec(data, out / "prepare", args.epochs)), progress=lambda *_: None)

    walls = {}
    for name, tune in searches(args.samples, args.epochs, args.grace, args.reduction).items():
        if args.only and name not in args.only:
            continue
        raw = base_spec(data, out / name, args.epochs)
        raw["tune"] = tune
        spec = validate_spec(raw, f"<{name}>")
        t0 = time.time()
        run_tune(spec, prepared=prepared, progress=lambda line: print(line, flush=True) if line.startswith("[tune] ") and
                 ("trial(s) in" in line or "best trial" in line) else None)
        walls[name] = time.time() - t0
        print(f"[bench] {name}: {walls[name]:.0f}s", flush=True)

    best = min(e["val_loss"] for name in walls for e in reports(experiment_dir(out / name)))
    target = best * (1 + WITHIN)
    results = [summarise(name, out / name, walls[name], target) for name in walls]
    if "asha" in walls and "no_stopping" in walls:
        same = results[0]["configs"] == results[1]["configs"]
        print(f"[bench] ASHA and no-stopping searched the same configurations: {same}")
    (out / "tune_efficiency.json").write_text(json.dumps(
        {"best_val_loss": best, "target": target, "args": vars(args), "results": results}, indent=2))

    print(f"\nbest val_loss of any search {best:.4f}; target (within 1%) ≤ {target:.4f}\n")
    print("| search | trials (stopped) | trial-epochs to target | time to target | trial-epochs trained | "
          "wall time | best val_loss |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        to = (f"{r['trial_epochs_to_target']}" if r["trial_epochs_to_target"] else "not reached")
        ts = f"{r['seconds_to_target']:.0f} s" if r["seconds_to_target"] is not None else "-"
        print(f"| {r['search']} | {r['trials']} ({r['stopped']}) | {to} | {ts} | {r['trial_epochs_trained']} | "
              f"{r['wall_s']:.0f} s | {r['best_val_loss']:.4f} |")
    by = {r["search"]: r for r in results}
    if "asha" in by and "no_stopping" in by and by["asha"]["trial_epochs_to_target"] and \
            by["no_stopping"]["trial_epochs_to_target"]:
        a, n = by["asha"], by["no_stopping"]
        print(f"\nASHA / no stopping: {a['trial_epochs_to_target'] / n['trial_epochs_to_target']:.2f} of the "
              f"trial-epochs to target, {a['trial_epochs_trained'] / n['trial_epochs_trained']:.2f} of all "
              f"trial-epochs trained, {a['wall_s'] / n['wall_s']:.2f} of the wall time (goal: ≤ 0.33 trial-epochs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
