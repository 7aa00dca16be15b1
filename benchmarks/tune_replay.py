"""Replay asynchronous successive halving (ASHA) over learning curves a search without stopping recorded.

tune_efficiency.py takes ~20-45 min per setting here; this answers "what would grace G / reduction factor R /
N samples have done on these curves" in seconds. It reads every trial's val_loss per epoch from finished
no-stopping searches (their output folders; searches made in one tune_efficiency.py invocation share one
prepared data set, so their curves can be pooled), draws N configurations in many random orders, and
simulates, per order, the search with and without ASHA at the same concurrency:

- ASHA as Ray's ASHAScheduler does it: rungs at grace × R^k epochs; at a rung a trial goes on if its
  `best_val_loss` so far (what trainyard reports) is within the best 1/R of all results recorded at that
  rung so far (the first trials through a rung are never cut);
- trial-epochs until some report gets within 1% of the best of the drawn configurations, in arrival order,
  and trial-epochs in total, as tune_efficiency.py counts them.

`--oracle` ranks every trial by its final best from its first epoch on: the most any early-stopping rule can
save on these curves. It is a model of the scheduler, not Ray's code: figures that matter are measured with
tune_efficiency.py; this picks which settings are worth measuring.

    python benchmarks/tune_replay.py runs/bench-tune-cosine/no_stopping-s0 runs/bench-tune-cosine/no_stopping-s1 \\
        runs/bench-tune-cosine/no_stopping-s2 --samples 16 32 64 --oracle
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tune_efficiency import WITHIN, experiment_dir, reports  # noqa: E402

STARTUP = 9.0     # a trial's start-up, in epochs of time (only the interleaving of concurrent trials uses it)


def curves(search: Path) -> list[list[float]]:
    by_trial: dict[str, dict[int, float]] = {}
    for e in reports(experiment_dir(search)):
        by_trial.setdefault(e["trial"], {})[e["epoch"]] = e["val_loss"]
    full = max(len(c) for c in by_trial.values())
    return [[c[k] for k in sorted(c)] for c in by_trial.values() if len(c) == full]


def simulate(order: list[int], raw: list[list[float]], judged: list[list[float]], target: float,
             grace: int, rf: float, concurrency: int) -> tuple[int, int | None]:
    """(trial-epochs in total, trial-epochs when the target was first reported or None)."""
    max_t = len(raw[order[0]])
    rungs, m = [], float(grace)
    while m <= max_t:
        rungs.append((int(round(m)), {}))
        m *= rf
    queue, running, spent, to_target, now = list(order), [], 0, None, 0.0
    while queue or running:
        while len(running) < concurrency and queue:
            running.append([queue.pop(0), 0, now + STARTUP])
        running.sort(key=lambda r: r[2])
        trial = running[0]
        now = trial[2]
        i = trial[0]
        trial[1] += 1
        spent += 1
        if to_target is None and raw[i][trial[1] - 1] <= target:
            to_target = spent
        stop = trial[1] >= max_t
        for milestone, recorded in reversed(rungs):
            if trial[1] == milestone:
                score = judged[i][trial[1] - 1]
                if recorded and score > np.percentile(list(recorded.values()), 100 / rf):
                    stop = True
                recorded[i] = score
                break
        if stop:
            running.remove(trial)
        else:
            trial[2] = now + 1
    return spent, to_target


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("searches", nargs="+", type=Path, help="output folders of finished no-stopping searches")
    ap.add_argument("--samples", type=int, nargs="+", default=[16, 32])
    ap.add_argument("--settings", nargs="+", default=["1:3", "1:4", "2:3", "3:3"], help="grace:reduction_factor")
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--orders", type=int, default=300)
    ap.add_argument("--oracle", action="store_true", help="judge every trial by its final best from epoch 1")
    args = ap.parse_args()

    raw = [c for s in args.searches for c in curves(s)]
    if len({len(c) for c in raw}) != 1:
        sys.exit("the searches trained different numbers of epochs; replay them separately")
    judged = ([[min(c)] * len(c) for c in raw] if args.oracle
              else [list(np.minimum.accumulate(c)) for c in raw])
    print(f"{len(raw)} recorded curves of {len(raw[0])} epochs; {args.orders} random orders per line; "
          f"{'oracle ranking' if args.oracle else 'judged by best_val_loss so far'}")
    print("| samples | grace | reduction factor | trained (ASHA / none) | to target (ASHA / none) | ASHA missed |")
    print("|---|---|---|---|---|---|")
    for n in args.samples:
        if n > len(raw):
            print(f"| {n} | - | - | only {len(raw)} curves recorded | - | - |")
            continue
        for setting in args.settings:
            grace, rf = int(setting.split(":")[0]), float(setting.split(":")[1])
            spent, baseline, to_a, to_n, missed = 0, 0, 0, 0, 0
            for seed in range(args.orders):
                order = random.Random(seed).sample(range(len(raw)), n)
                target = min(min(raw[i]) for i in order) * (1 + WITHIN)
                a = simulate(order, raw, judged, target, grace, rf, args.concurrency)
                b = simulate(order, raw, judged, target, 10 ** 6, rf, args.concurrency)
                spent, baseline = spent + a[0], baseline + b[0]
                if a[1] is None:
                    missed += 1
                else:
                    to_a, to_n = to_a + a[1], to_n + b[1]
            to = f"{to_a / to_n:.2f}" if to_n else "-"
            print(f"| {n} | {grace} | {rf:g} | {spent / baseline:.2f} | {to} | {missed / args.orders:.0%} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
