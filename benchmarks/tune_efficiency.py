"""How much ASHA saves: the same random search with and without early stopping, and a grid, in one run.

Three data sets. The equipment telemetry of `examples/telemetry.py`: `--task classification` (machine
failure, the default) and `--task regression` (remaining useful life in hours). And `--task yield`, the
process yield of `examples/process_yield.py`: a smooth response surface with little noise, searched with
batches of 256-2048 rows (`--space large-batch`), where training is limited by optimisation steps. The search
samples the learning rate log-uniformly over four decades (1e-5 … 1e-1) with the batch size; too small a rate
barely moves val_loss in the epochs given. On the remaining-life labels the learning rate matters all the way:
val_loss keeps falling with training and good and bad rates lie far apart; on the failure labels every rate in
1e-4 … 1e-2 ends within a few % of the others, about the size of the epoch-to-epoch noise. On the yield the
configuration that learns fastest early is, most often, the one that ends best. Every search trains the same spec with
`trainyard tune`'s code path (every trial a Ray Train run). For each search we report

- trial-epochs and wall time until some trial first reported a val_loss within 1% of the best that ANY of
  the searches found (its "target"), counted over every trial's reports in the order they arrived;
- trial-epochs trained in total (read from the trials' Train checkpoints: a trial ASHA stops may have trained
  an epoch or two past the one it was judged on, and those count), and total wall time.

Goal (issue 3): ASHA reaches the target with ≤ 1/3 of the trial-epochs of the search without early stopping.

    python benchmarks/tune_efficiency.py                   # embedded local Ray
    python benchmarks/tune_efficiency.py --task regression --epochs 27
    python benchmarks/tune_efficiency.py --task regression --epochs 27 --samples 32 --reduction 4 --lr-schedule cosine
    python benchmarks/tune_efficiency.py --task regression --epochs 27 --samples 64 --ema-epochs 1 --space wide
    python benchmarks/tune_efficiency.py --task yield --epochs 27 --samples 96 --grace 2 --ema-epochs 1 --seeds 2 3
    python benchmarks/tune_efficiency.py --samples 8 --epochs 6 --rows 12000 --seeds 0   # quicker
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples"))

WITHIN = 0.01        # "within 1% of the best"
LOOSE = 0.02         # also shown (not the goal): how the count moves when the margin is 2%


LABELS = {"classification": "failure", "regression": "remaining_life_h", "yield": "yield_pct"}


def base_spec(data: Path, out: Path, epochs: int, task: str, lr_schedule: str = "constant",
              ema_epochs: float | None = None) -> dict:
    yield_ = task == "yield"
    return {"name": "tune-efficiency",
            "data": {"path": str(data), "label": LABELS[task], "task": "regression" if yield_ else task,
                     "features": {"exclude": ["batch_id" if yield_ else "machine_id"]}},
            "model": {"hidden": [64, 32], "dropout": 0.0},
            "train": {"epochs": epochs, "batch_size": 64, "lr": 1e-3, "lr_schedule": lr_schedule,
                      "ema_epochs": ema_epochs, "workers": 1, "early_stop": None,
                      "max_failures": 0, "seed": 0},
            "output": str(out)}


# The random searches' space. "lr-batch": learning rate and batch size only. "wide": also the issue's optional
# axes (weight decay from negligible to strong, dropout off or light, four layer widths), as a search over a
# model one knows little about would be. The rate matters as much; configurations that end near the best are
# rarer (on these labels regularisation only hurts), so most trials are clearly bad early. The space holds the
# grid's model (dropout 0, near-zero decay, 64x32), so the grid's best is within the random searches' reach.
# "large-batch": learning rate and batch size, the batches of 256-2048 rows that a larger data set is trained
# with; the default for the process-yield data.
SPACES = {
    "lr-batch": {"lr": {"loguniform": [1e-5, 1e-1]}, "batch_size": {"choice": [32, 64, 128, 256]}},
    "large-batch": {"lr": {"loguniform": [1e-5, 1e-1]}, "batch_size": {"choice": [256, 512, 1024, 2048]}},
    "wide": {"lr": {"loguniform": [1e-5, 1e-1]}, "batch_size": {"choice": [32, 64, 128, 256]},
             "weight_decay": {"loguniform": [1e-6, 1e-2]}, "dropout": {"choice": [0.0, 0.1, 0.2]},
             "hidden": {"choice": [[32], [64, 32], [128, 64], [256, 128]]}},
}


def noise_suffix(life_noise_h: float) -> str:
    """What names data, outputs and curve caches of labels with other than the default 10 h of noise."""
    return "" if life_noise_h == 10.0 else f"-noise{life_noise_h:g}"


def bench_data(out: Path, task: str, rows: int, life_noise_h: float = 10.0) -> Path:
    """The telemetry shards under `out` (written on first use, seed 7): the same rows for every invocation.
    Written beside and then renamed into place, so a second process never reads half-written shards."""
    import shutil
    import tempfile

    from telemetry import generate, write_shards

    regression = task == "regression"
    data = out / ((f"data-{task}-{rows}" + noise_suffix(life_noise_h)) if task != "classification"
                  else f"data-{rows}")
    if not data.exists():
        out.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{data.name}-", dir=out))
        if task == "yield":
            import process_yield
            df = process_yield.generate(rows, seed=7)
        else:
            df = generate(rows, seed=7, regression=regression, life_noise_h=life_noise_h)
        write_shards(df, staging, 4)
        try:
            staging.rename(data)
        except OSError:             # another process got there first: its shards are the same rows
            shutil.rmtree(staging, ignore_errors=True)
    return data


def searches(samples: int, epochs: int, grace: int, rf: float, seeds: list[int],
             space_name: str = "lr-batch") -> dict[str, dict]:
    """{run name: tune section}. Random searches are repeated per sampler seed: how much ASHA saves before
    the target is reached depends on where in the sample order a good configuration turns up."""
    space = SPACES[space_name]
    runs = {}
    for seed in seeds:
        runs[f"asha-s{seed}"] = {"search": "random", "samples": samples, "seed": seed, **space,
                                 "scheduler": {"asha": {"grace_period": grace, "reduction_factor": rf}}}
        # Same seed, same sampler: the very configurations ASHA saw, each trained to the end.
        runs[f"no_stopping-s{seed}"] = {"search": "random", "samples": samples, "seed": seed, **space,
                                        "scheduler": "none"}
    # The classic sweep: 4 learning rates × 2 batch sizes (the space's second and largest), every trial to
    # the end.
    sizes = space["batch_size"]["choice"]
    runs["grid"] = {"search": "grid", "lr": {"loguniform": [1e-4, 1e-1]}, "grid_points": 4,
                    "batch_size": {"choice": [sizes[1], sizes[-1]]}, "scheduler": "none"}
    return runs


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


def _first_within(events: list[dict], target: float) -> tuple[Optional[int], Optional[float]]:
    """(trial-epochs, seconds since the first trial started) when a report first got to `target`."""
    start = min(e["trial_started"] for e in events)
    for n, e in enumerate(events, 1):
        if e["val_loss"] <= target:
            return n, e["timestamp"] - start
    return None, None


def summarise(name: str, out: Path, wall_s: float, target: float, loose: float) -> dict:
    events = reports(experiment_dir(out))
    with (out / "tune" / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    epochs_to, seconds_to = _first_within(events, target)
    return {"search": name, "trials": len(rows),
            "stopped": sum(r["status"] == "stopped" for r in rows),
            "best_val_loss": min(e["val_loss"] for e in events),
            "trial_epochs_to_target": epochs_to, "seconds_to_target": seconds_to,
            "trial_epochs_to_loose": _first_within(events, loose)[0],
            "trial_epochs_reported": len(events),
            "trial_epochs_trained": sum(int(r["epochs_run"]) for r in rows),
            "wall_s": wall_s, "configs": sorted((float(r["lr"]), int(r["batch_size"]), float(r["weight_decay"]),
                                                 float(r["dropout"]), r["hidden"]) for r in rows)}


def _summary_lines(line: str) -> None:
    if line.startswith("[tune] ") and ("trial(s) in" in line or "best trial" in line):
        print(line, flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=sorted(LABELS), default="classification",
                    help="label the telemetry with machine failure, or with remaining useful life (hours); or "
                         "yield: the process-yield data of examples/process_yield.py")
    ap.add_argument("--rows", type=int, default=30000)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=9)
    ap.add_argument("--grace", type=int, default=1)
    ap.add_argument("--reduction", type=float, default=3)
    ap.add_argument("--lr-schedule", choices=["constant", "cosine"], default="constant",
                    help="train.lr_schedule of every trial (cosine: each trial's rate decays to near zero at the "
                         "last epoch, so its last epochs settle instead of swinging with a constant rate)")
    ap.add_argument("--ema-epochs", type=float, default=None,
                    help="train.ema_epochs of every trial (validate an average of the weights; default: off)")
    ap.add_argument("--label-noise", type=float, default=10.0, metavar="H",
                    help="--task regression: standard deviation of the measurement noise on remaining_life_h, in "
                         "hours (default 10: the noise alone keeps val_loss, an MSE on the standardised label, at "
                         "or above ~0.0055; lower it and val_loss is mostly the fit's own error)")
    ap.add_argument("--space", choices=sorted(SPACES), default=None,
                    help="what the random searches sample (the grid always sweeps 4 rates × 2 of its batch "
                         "sizes); default: large-batch for --task yield, else lr-batch")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="sampler seeds of the random searches")
    ap.add_argument("--out", default=None, help="default: runs/bench-tune (classification), "
                    "runs/bench-tune-regression (with -noiseH when --label-noise is not 10), runs/bench-tune-yield")
    ap.add_argument("--address", default=None)
    ap.add_argument("--plan-only", action="store_true",
                    help="write the data, print the base spec and every search as JSON, and stop (no Ray)")
    args = ap.parse_args()
    if args.task != "regression" and args.label_noise != 10.0:
        ap.error("--label-noise is the noise on the remaining-life labels: give it with --task regression")
    args.space = args.space or ("large-batch" if args.task == "yield" else "lr-batch")

    out = Path(args.out or ("runs/bench-tune" if args.task == "classification"
                            else f"runs/bench-tune-{args.task}{noise_suffix(args.label_noise)}")).resolve()
    data = bench_data(out, args.task, args.rows, args.label_noise)
    if args.plan_only:
        print(json.dumps({"data": str(data),
                          "spec": base_spec(data, out / "prepare", args.epochs, args.task, args.lr_schedule,
                                            args.ema_epochs),
                          "searches": searches(args.samples, args.epochs, args.grace, args.reduction, args.seeds,
                                               args.space)}, default=str))
        return 0

    from cluster import connect
    from cluster.quiet import quiet_ray_logs
    from jobs.spec import validate_spec
    from tuning import run_tune

    quiet_ray_logs()
    res = connect(args.address)
    noise = f" ({args.label_noise:g} h label noise)" if args.task == "regression" else ""
    print(f"[bench] {res['CPU']:g} CPU, {res['GPU']:g} GPU; {args.task}{noise}, {args.rows} rows; "
          f"{args.samples} samples of {args.space}, {args.epochs} epochs ({args.lr_schedule} lr, "
          f"ema_epochs {args.ema_epochs}), ASHA grace {args.grace} reduction {args.reduction:g}", flush=True)

    # One prepared data set for all three searches. Preparing the same files twice gives the same rows in
    # another block order (and fitted statistics that differ in the last digits); the same config trained on
    # them lands on a val_loss up to ~1.5% away, more than the margin this benchmark measures. Shared, a config
    # gives the same curve in every search, and the searches differ only in how they schedule trials.
    from jobs.pipeline import prepare
    prepared = prepare(validate_spec(base_spec(data, out / "prepare", args.epochs, args.task, args.lr_schedule,
                                               args.ema_epochs)),
                       progress=lambda *_: None)

    walls = {}
    for name, tune in searches(args.samples, args.epochs, args.grace, args.reduction, args.seeds,
                                   args.space).items():
        raw = base_spec(data, out / name, args.epochs, args.task, args.lr_schedule, args.ema_epochs)
        raw["tune"] = tune
        spec = validate_spec(raw, f"<{name}>")
        t0 = time.time()
        run_tune(spec, prepared=prepared, progress=_summary_lines)
        walls[name] = time.time() - t0
        print(f"[bench] {name}: {walls[name]:.0f}s", flush=True)

    # Each seed is one comparison: its ASHA search, the same search without stopping, and the grid. The target
    # is within 1% of the best val_loss any of the three found.
    results, groups = [], {}
    for seed in args.seeds:
        members = [f"asha-s{seed}", f"no_stopping-s{seed}", "grid"]
        best = min(e["val_loss"] for name in members for e in reports(experiment_dir(out / name)))
        target = best * (1 + WITHIN)
        groups[seed] = {"best_val_loss": best, "target": target, "loose_target": best * (1 + LOOSE)}
        for name in members:
            results.append({"seed": seed, **summarise(name, out / name, walls[name], target, best * (1 + LOOSE))})
        same = results[-3]["configs"] == results[-2]["configs"]
        print(f"[bench] seed {seed}: ASHA and no-stopping searched the same configurations: {same}")
    (out / "tune_efficiency.json").write_text(json.dumps(
        {"groups": groups, "args": vars(args), "results": results}, indent=2))

    print("\n| seed | search | trials (stopped) | best val_loss | target | trial-epochs to target | "
          "time to target | trial-epochs to within 2% | trial-epochs trained | wall time |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        to = str(r["trial_epochs_to_target"]) if r["trial_epochs_to_target"] else "not reached"
        ts = f"{r['seconds_to_target']:.0f} s" if r["seconds_to_target"] is not None else "-"
        print(f"| {r['seed']} | {r['search'].split('-')[0]} | {r['trials']} ({r['stopped']}) | "
              f"{r['best_val_loss']:.4f} | {groups[r['seed']]['target']:.4f} | {to} | {ts} | "
              f"{r['trial_epochs_to_loose'] or 'not reached'} | "
              f"{r['trial_epochs_trained']} | {r['wall_s']:.0f} s |")
    by = {(r["seed"], r["search"].split("-")[0]): r for r in results}
    a_to = n_to = 0
    both = [s_ for s_ in args.seeds if by[(s_, "asha")]["trial_epochs_to_target"]
            and by[(s_, "no_stopping")]["trial_epochs_to_target"]]
    for seed in both:
        a_to += by[(seed, "asha")]["trial_epochs_to_target"]
        n_to += by[(seed, "no_stopping")]["trial_epochs_to_target"]
    loose = [s_ for s_ in args.seeds if by[(s_, "asha")]["trial_epochs_to_loose"]
             and by[(s_, "no_stopping")]["trial_epochs_to_loose"]]
    loose_ratio = (sum(by[(s_, "asha")]["trial_epochs_to_loose"] for s_ in loose)
                   / sum(by[(s_, "no_stopping")]["trial_epochs_to_loose"] for s_ in loose)) if loose else None
    trained = [sum(by[(s_, k)]["trial_epochs_trained"] for s_ in args.seeds) for k in ("asha", "no_stopping")]
    wall = [sum(by[(s_, k)]["wall_s"] for s_ in args.seeds) for k in ("asha", "no_stopping")]
    missed = {k: [s_ for s_ in args.seeds if not by[(s_, k)]["trial_epochs_to_target"]]
              for k in ("asha", "no_stopping")}
    print(f"\nASHA / no stopping over seeds {args.seeds}: "
          + (f"{a_to / n_to:.2f} of the trial-epochs to target (seeds where both reached it: {both}); "
             if both else "no seed where both reached the target; ")
          + f"{trained[0] / trained[1]:.2f} of all trial-epochs trained; {wall[0] / wall[1]:.2f} of the wall time. "
          f"Missed the target: ASHA in seeds {missed['asha']}, no stopping in seeds {missed['no_stopping']}. "
          "Goal: ≤ 0.33 of the trial-epochs to target."
          + (f" (Within 2% instead, not the goal: {loose_ratio:.2f}, seeds {loose}.)" if loose else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
