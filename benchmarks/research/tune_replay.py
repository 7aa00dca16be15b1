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
save on these curves. `--projected` judges a trial by a learning-curve extrapolation instead of its best so
far: the power law through the second half of its best-so-far curve, carried to the last epoch (credits slow
starters that are still falling fast; needs two epochs, so at epoch 1 it is the best so far; trainyard does
not judge this way). It is a model of the scheduler, not Ray's code: figures that matter are measured with
tune_efficiency.py; this picks which settings are worth measuring.

`--plain SPACE` records the curves itself instead, for a space no search has run yet: it trains `--configs`
configurations drawn from tune_efficiency.py's SPACES[SPACE], and tune_efficiency.py's 8-trial grid, in plain
PyTorch (weight_average.py's loop: the same data, model and weight average, no Ray in the loop; ~2-20 s a
curve here), caching them under `--out`. The target is then within 1% of the best of the drawn
configurations and the grid, as tune_efficiency.py sets it, so a search without stopping can miss it too.
A finished cache of a longer draw with the same seed serves a shorter one (its first `--configs` curves and
its grid). `--label-noise H` trains on labels with that much noise; `--first E` replays the first E epochs of
the cached curves as trials of E epochs (at --plain's constant rate, the same thing).

    python benchmarks/research/tune_replay.py runs/bench-tune-cosine/no_stopping-s0 runs/bench-tune-cosine/no_stopping-s1 \\
        runs/bench-tune-cosine/no_stopping-s2 --samples 16 32 64 --oracle
    python benchmarks/research/tune_replay.py --plain wide --configs 200 --samples 32 64 --ema-epochs 1
    python benchmarks/research/tune_replay.py --plain lr-batch --configs 96 --ema-epochs 1 --label-noise 2 --projected
    python benchmarks/research/tune_replay.py --plain lr-batch --configs 64 --epochs 81 --first 27 --ema-epochs 1
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # tune_efficiency, a product benchmark
from tune_efficiency import (SPACES, WITHIN, base_spec, experiment_dir, noise_suffix, reports,  # noqa: E402
                             searches)

STARTUP = 9.0     # a trial's start-up, in epochs of time (only the interleaving of concurrent trials uses it)


def curves(search: Path) -> list[list[float]]:
    by_trial: dict[str, dict[int, float]] = {}
    for e in reports(experiment_dir(search)):
        by_trial.setdefault(e["trial"], {})[e["epoch"]] = e["val_loss"]
    full = max(len(c) for c in by_trial.values())
    return [[c[k] for k in sorted(c)] for c in by_trial.values() if len(c) == full]


def _draw(dist: dict, rnd: random.Random):
    if "choice" in dist:
        return rnd.choice(dist["choice"])
    if "loguniform" in dist:
        lo, hi = dist["loguniform"]
        return 10 ** rnd.uniform(math.log10(lo), math.log10(hi))
    return rnd.uniform(*dist["uniform"])


def plain_curves(space: str, configs: int, epochs: int, ema_epochs: float | None, seed: int,
                 out: Path, life_noise_h: float = 10.0,
                 task: str = "regression") -> tuple[list[list[float]], list[list[float]]]:
    """(curves of `configs` configurations drawn from SPACES[space], curves of the grid): val_loss per epoch,
    of the averaged weights when ema_epochs is set. Trained in plain PyTorch; cached one JSON line a curve,
    so an interrupted run picks up where it stopped."""
    import torch
    from weight_average import regression_tensors, train

    # One thread: these MLPs are too small to gain from more, and two replays can then share two cores.
    torch.set_num_threads(1)
    rnd = random.Random(seed)
    drawn = [{axis: _draw(dist, rnd) for axis, dist in SPACES[space].items()} for _ in range(configs)]
    # tune_efficiency.py's grid, on the base spec's model, with the values `trainyard tune` itself would try.
    from jobs.spec import validate_spec
    from tuning.space import param_space

    grid_spec = validate_spec({**base_spec(out, out, epochs, task),
                               "tune": searches(1, epochs, 1, 3, [], space)["grid"]}, "<grid>")
    axes = param_space(grid_spec)
    grid = [{"lr": lr, "batch_size": bs} for lr in axes["lr"]["grid_search"]
            for bs in axes["batch_size"]["grid_search"]]
    kind = "average" if ema_epochs else "raw"
    # The drawn configurations, then the grid's: the count is part of the name, so the lines stay in order.
    name = (("" if task == "regression" else f"{task}-")
            + f"{space}-seed{seed}-{{}}configs-{epochs}ep-ema{ema_epochs}{noise_suffix(life_noise_h)}.jsonl")
    cache = out / name.format(configs)
    done = [json.loads(line) for line in cache.read_text().splitlines()] if cache.exists() else []
    if not done:
        # A finished longer draw of the same seed holds these configurations first (same sampler), then the grid.
        for longer in sorted(out.glob(name.format("*"))):
            count = int(longer.name[len(f"{space}-seed{seed}-"):].split("configs")[0])
            lines = [json.loads(line) for line in longer.read_text().splitlines()]
            if count > configs and len(lines) == count + len(grid) and all(
                    {k: d[k] for k in config} == config for d, config in zip(lines, drawn)):
                print(f"[replay] the first {configs} configurations of {longer.name}, and its grid")
                return [d["curve"] for d in lines[:configs]], [d["curve"] for d in lines[-len(grid):]]
    data = None
    for n, config in enumerate(drawn + grid):
        if n < len(done):
            continue
        data = data or regression_tensors(30000, out, life_noise_h, task)
        t0 = time.time()
        curve = train(data, config["lr"], config["batch_size"], epochs, 0, ema_epochs or 1.0,
                      hidden=config.get("hidden", [64, 32]), dropout=config.get("dropout", 0.0),
                      weight_decay=config.get("weight_decay", 0.0))[kind]
        done.append({**config, "curve": curve})
        with cache.open("a") as f:
            f.write(json.dumps(done[-1]) + "\n")
        print(f"[replay] {n + 1}/{len(drawn) + len(grid)} {config}: best val_loss {min(curve):.5f} "
              f"({time.time() - t0:.1f}s)", flush=True)
    return [d["curve"] for d in done[:configs]], [d["curve"] for d in done[configs:]]


def projected(curve: list[float]) -> list[float]:
    """Per epoch t: best-so-far × (E / t)^slope, slope (≤ 0) of log best-so-far on log epoch over epochs t/2…t."""
    best = np.minimum.accumulate(curve)
    last = len(curve)
    out = [float(best[0])]
    for t in range(2, last + 1):
        lo = min(max(1, math.ceil(t / 2)), t - 1)
        slope = min(0.0, float(np.polyfit(np.log(np.arange(lo, t + 1)), np.log(best[lo - 1:t]), 1)[0]))
        out.append(float(best[t - 1] * (last / t) ** slope))
    return out


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
    ap.add_argument("searches", nargs="*", type=Path, help="output folders of finished no-stopping searches")
    ap.add_argument("--plain", choices=sorted(SPACES), default=None,
                    help="record the curves in plain PyTorch for this space of tune_efficiency.py instead")
    ap.add_argument("--configs", type=int, default=200, help="--plain: configurations to draw and train")
    ap.add_argument("--epochs", type=int, default=27, help="--plain: epochs per curve")
    ap.add_argument("--first", type=int, default=None, metavar="E",
                    help="--plain: replay only the first E of the --epochs epochs of each curve, as trials of E "
                         "epochs (valid at the constant rate --plain trains; reads the --epochs cache)")
    ap.add_argument("--ema-epochs", type=float, default=None, help="--plain: train.ema_epochs (default off)")
    ap.add_argument("--seed", type=int, default=0, help="--plain: seed of the draw")
    ap.add_argument("--task", choices=["regression", "yield"], default="regression",
                    help="--plain: tune_efficiency.py's data set (remaining useful life, or process yield)")
    ap.add_argument("--label-noise", type=float, default=10.0, metavar="H",
                    help="--plain: tune_efficiency.py's --label-noise (hours of noise on the regression labels)")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-tune-replay"), help="--plain: curve cache")
    ap.add_argument("--samples", type=int, nargs="+", default=[16, 32])
    ap.add_argument("--settings", nargs="+", default=["1:3", "1:4", "2:3", "3:3"], help="grace:reduction_factor")
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--orders", type=int, default=300)
    judge = ap.add_mutually_exclusive_group()
    judge.add_argument("--oracle", action="store_true", help="judge every trial by its final best from epoch 1")
    judge.add_argument("--projected", action="store_true",
                       help="judge every trial by its curve extrapolated to the last epoch (not trainyard's rule)")
    args = ap.parse_args()
    if bool(args.searches) == bool(args.plain):
        ap.error("give either the output folders of no-stopping searches or --plain SPACE")
    if not args.plain and (args.first is not None or args.label_noise != 10.0 or args.task != "regression"):
        ap.error("--first, --label-noise and --task shape --plain's curves; the folders' curves are as their "
                 "searches ran")
    if args.task == "yield" and args.label_noise != 10.0:
        ap.error("--label-noise is the noise on the remaining-life labels: give it with --task regression")
    if args.first is not None and not 1 <= args.first <= args.epochs:
        ap.error(f"--first {args.first}: give 1 … --epochs ({args.epochs}) epochs of the recorded curves")

    floor = math.inf          # the grid's best: only --plain trains the grid beside the drawn configurations
    if args.plain:
        args.out.mkdir(parents=True, exist_ok=True)
        raw, grid = plain_curves(args.plain, args.configs, args.epochs, args.ema_epochs, args.seed,
                                 args.out.resolve(), args.label_noise, args.task)
        if args.first:
            # At a constant rate (what --plain trains), the first E epochs of a longer run are a run of E epochs.
            raw, grid = [c[:args.first] for c in raw], [c[:args.first] for c in grid]
        floor = min(min(c) for c in grid)
        within = sorted(min(c) for c in raw)
        print(f"{args.plain}: best of {len(raw)} drawn {within[0]:.5f}, grid's best {floor:.5f}; drawn within 1% "
              f"of the better of the two: {sum(b <= min(floor, within[0]) * (1 + WITHIN) for b in within)}")
    else:
        raw = [c for s in args.searches for c in curves(s)]
    if len({len(c) for c in raw}) != 1:
        sys.exit("the searches trained different numbers of epochs; replay them separately")
    if args.oracle:
        judged, rule = [[min(c)] * len(c) for c in raw], "oracle ranking"
    elif args.projected:
        judged, rule = [projected(c) for c in raw], "judged by the curve extrapolated to the last epoch"
    else:
        judged, rule = [list(np.minimum.accumulate(c)) for c in raw], "judged by best_val_loss so far"
    print(f"{len(raw)} recorded curves of {len(raw[0])} epochs; {args.orders} random orders per line; {rule}")
    print("| samples | grace | reduction factor | trained (ASHA / none) | to target (ASHA / none) | "
          "missed: ASHA / none |")
    print("|---|---|---|---|---|---|")
    for n in args.samples:
        if n > len(raw):
            print(f"| {n} | - | - | only {len(raw)} curves recorded | - | - |")
            continue
        for setting in args.settings:
            grace, rf = int(setting.split(":")[0]), float(setting.split(":")[1])
            spent, baseline, to_a, to_n, missed, missed_n = 0, 0, 0, 0, 0, 0
            for seed in range(args.orders):
                order = random.Random(seed).sample(range(len(raw)), n)
                target = min(floor, min(min(raw[i]) for i in order)) * (1 + WITHIN)
                a = simulate(order, raw, judged, target, grace, rf, args.concurrency)
                b = simulate(order, raw, judged, target, 10 ** 6, rf, args.concurrency)
                spent, baseline = spent + a[0], baseline + b[0]
                missed += a[1] is None
                missed_n += b[1] is None
                if a[1] is not None and b[1] is not None:       # the ratio counts orders where both got there
                    to_a, to_n = to_a + a[1], to_n + b[1]
            to = f"{to_a / to_n:.2f}" if to_n else "-"
            print(f"| {n} | {grace} | {rf:g} | {spent / baseline:.2f} | {to} | "
                  f"{missed / args.orders:.0%} / {missed_n / args.orders:.0%} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
