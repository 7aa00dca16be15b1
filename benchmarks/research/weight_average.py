"""What `train.ema_epochs` buys: validating an average of the weights vs the raw weights, same runs.

Trains the remaining-useful-life regression of `examples/telemetry.py` (the data tune_efficiency.py searches)
with a handful of learning rates and batch sizes, a constant rate, the spec's MLP and AdamW, in plain PyTorch
(one process, no Ray in the loop: the data are prepared once with trainyard's own `prepare`). Every run is
scored twice per epoch on the validation split: with its raw weights (the baseline, what training without
`ema_epochs` keeps) and with `jobs.worker.WeightAverage`, the class the workers use. Each configuration is
trained twice with its batches in two different orders. Printed, raw vs averaged:

- best val_loss of every configuration, and their ratio;
- how much val_loss swings from one epoch to the next (median |log ratio| over the last 20 epochs);
- how far apart the two orders land (the noise floor under tune_efficiency.py's 1% target);
- how well the first 3 / 9 epochs rank the configurations by their final best (Spearman), which is what
  ASHA relies on.

    python benchmarks/research/weight_average.py                     # 12 configurations × 2 orders × 27 epochs, ~1.5 min
    python benchmarks/research/weight_average.py --configs 6 --epochs 9
"""
from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "benchmarks"))


def _tensors(ds) -> tuple[torch.Tensor, torch.Tensor]:
    from jobs.preprocess import FEATURES_COLUMN, LABEL_COLUMN

    df = ds.to_pandas()
    return (torch.from_numpy(np.stack(df[FEATURES_COLUMN].to_numpy()).astype(np.float32)),
            torch.from_numpy(df[LABEL_COLUMN].to_numpy().astype(np.float32)))


def regression_tensors(rows: int, out: Path, life_noise_h: float = 10.0, task: str = "regression") -> tuple:
    """(train x, train y, val x, val y, feature count) of the remaining-useful-life labels (tune_efficiency.py's
    data, `--label-noise` included), or with task "yield" of the process yield, prepared once with trainyard's
    own `prepare` (on a short-lived local Ray) and held in memory."""
    import ray

    from cluster.quiet import quiet_ray_logs
    from jobs.spec import validate_spec
    from jobs.pipeline import prepare
    from tune_efficiency import base_spec, bench_data

    data_dir = bench_data(out, task, rows, life_noise_h)
    quiet_ray_logs()
    ray.init(include_dashboard=False, log_to_driver=False)
    spec = validate_spec(base_spec(data_dir, out / "prepare", 1, task))    # tune_efficiency.py's data
    prepared = prepare(spec, progress=print)
    xt, yt = _tensors(prepared.train_ds)
    xv, yv = _tensors(prepared.val_ds)
    ray.shutdown()
    return xt, yt, xv, yv, xt.shape[1]


def train(data, lr: float, bs: int, epochs: int, order: int, ema_epochs: float, hidden=(64, 32),
          dropout: float = 0.0, weight_decay: float = 0.01) -> dict[str, list[float]]:
    """One run; val_loss per epoch with the raw weights and with their average. (tune_replay.py --plain trains
    its curves here too, with the other axes of a search.)"""
    import copy

    from jobs.model import build_model
    from jobs.worker import WeightAverage

    xt, yt, xv, yv, dim = data
    torch.manual_seed(0)                                  # train.seed: the same initial weights for every run
    model = build_model({"kind": "mlp", "input_dim": dim, "output_dim": 1, "hidden": list(hidden),
                         "dropout": dropout})
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    average = WeightAverage(model, ema_epochs, steps_per_epoch=math.ceil(len(xt) / bs))
    scored = copy.deepcopy(model)
    loss_fn = torch.nn.MSELoss()
    gen = torch.Generator()
    curves = {"raw": [], "average": []}
    for epoch in range(epochs):
        gen.manual_seed(order * 1_000_003 + epoch)
        perm = torch.randperm(len(xt), generator=gen)
        model.train()
        for i in range(0, len(xt), bs):
            idx = perm[i:i + bs]
            loss = loss_fn(model(xt[idx]).squeeze(1), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            average.update()
        scored.load_state_dict(average.state)
        model.eval()
        scored.eval()
        with torch.no_grad():
            curves["raw"].append(float(loss_fn(model(xv).squeeze(1), yv)))
            curves["average"].append(float(loss_fn(scored(xv).squeeze(1), yv)))
    return curves


def _spearman(a: list[float], b: list[float]) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=30000)
    ap.add_argument("--configs", type=int, default=12)
    ap.add_argument("--epochs", type=int, default=27)
    ap.add_argument("--ema-epochs", type=float, default=1.0)
    ap.add_argument("--out", default="runs/bench-weight-average")
    args = ap.parse_args()

    data = regression_tensors(args.rows, Path(args.out).resolve())
    xt, xv = data[0], data[2]

    # The region where the rate matters and the good configurations sit (tune_efficiency.py's searches put
    # their best trials at 2e-3 ... 3e-2).
    rnd = random.Random(5)
    configs = [(10 ** rnd.uniform(-3, -1), rnd.choice([32, 64, 128, 256])) for _ in range(args.configs)]
    runs: dict[tuple, dict] = {}
    t0 = time.time()
    for n, (lr, bs) in enumerate(configs, 1):
        for order in (0, 1):
            runs[(lr, bs, order)] = train(data, lr, bs, args.epochs, order, args.ema_epochs)
        r0, r1 = runs[(lr, bs, 0)], runs[(lr, bs, 1)]
        print(f"[bench] {n}/{len(configs)} lr {lr:.4g} bs {bs}: best val_loss raw {min(r0['raw']):.5f} / "
              f"{min(r1['raw']):.5f}, averaged {min(r0['average']):.5f} / {min(r1['average']):.5f}  "
              f"({time.time() - t0:.0f}s)", flush=True)

    print(f"\n{args.configs} configurations × 2 batch orders × {args.epochs} epochs, constant lr, "
          f"ema_epochs {args.ema_epochs:g}; {len(xt)} train / {len(xv)} val rows\n")
    print("| weights | best val_loss (best config) | median best val_loss | epoch-to-epoch swing | "
          "same config, two orders: median / max apart | Spearman epochs 1-3 / 1-9 vs final |")
    print("|---|---|---|---|---|---|")
    summary = {}
    for kind in ("raw", "average"):
        best = [min(runs[(lr, bs, 0)][kind]) for lr, bs in configs]
        # Consecutive epochs among the last 21 (all of them in a shorter run).
        swing = [statistics.median(abs(math.log(b / a)) for a, b in zip(c[-21:], c[-21:][1:]))
                 for c in (runs[(lr, bs, 0)][kind] for lr, bs in configs)]
        apart = [abs(min(runs[(lr, bs, 1)][kind]) / min(runs[(lr, bs, 0)][kind]) - 1) for lr, bs in configs]
        early = [_spearman([min(runs[(lr, bs, 0)][kind][:k]) for lr, bs in configs], best) for k in (3, 9)]
        summary[kind] = {"best": min(best), "median": statistics.median(best), "swing": statistics.median(swing),
                         "apart": statistics.median(apart)}
        print(f"| {kind} | {min(best):.5f} | {statistics.median(best):.5f} | {statistics.median(swing):.1%} | "
              f"{statistics.median(apart):.1%} / {max(apart):.1%} | {early[0]:.2f} / {early[1]:.2f} |")
    raw, avg = summary["raw"], summary["average"]
    print(f"\naveraged / raw: best val_loss {avg['best'] / raw['best']:.2f}×, median {avg['median'] / raw['median']:.2f}×; "
          f"epoch-to-epoch swing {avg['swing'] / raw['swing']:.2f}×; two-order spread {avg['apart'] / raw['apart']:.2f}×")
    return 0


if __name__ == "__main__":
    sys.exit(main())
