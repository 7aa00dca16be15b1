"""Training throughput: trainyard's path (Ray Data → Ray Train worker → the training loop) against a plain
single-process PyTorch loop over in-memory tensors, same data, same MLP, same epochs, in one invocation.

    .venv/bin/python benchmarks/train_throughput.py [--rows 200000] [--epochs 5] [--workers 1]

Prints steady-state samples/s inside the loop (epochs after the first) and end-to-end wall time for both,
and the ratios. Goal on a 2-core machine: steady state ≥ 0.9× the plain loop at 1 worker.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples"))


def plain_loop(x: torch.Tensor, y: torch.Tensor, cfg: dict, epochs: int) -> tuple[float, list[float]]:
    """The baseline a PyTorch user would write: tensors in memory, a shuffled index per epoch."""
    from jobs.model import build_model

    torch.manual_seed(cfg["seed"])
    model = build_model(cfg["model"])
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"])
    weight = torch.tensor(cfg["class_weights"], dtype=torch.float32) if cfg["class_weights"] else None
    loss_fn = torch.nn.CrossEntropyLoss(weight=weight)
    bs = cfg["batch_size"]
    per_epoch = []
    t_all = time.perf_counter()
    for epoch in range(epochs):
        t0 = time.perf_counter()
        perm = torch.randperm(len(x))
        for i in range(0, len(x), bs):
            idx = perm[i:i + bs]
            loss = loss_fn(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        per_epoch.append(len(x) / (time.perf_counter() - t0))
    return time.perf_counter() - t_all, per_epoch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--cpus-per-worker", type=float, default=None,
                    help="default: all CPUs of this machine for one worker (what the plain loop gets)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--hidden", default="128,64")
    ap.add_argument("--use-gpu", action="store_true")
    args = ap.parse_args()

    from cluster import connect
    from jobs.cli import _quiet_ray
    from jobs.pipeline import storage_root
    from jobs.spec import validate_spec
    from jobs.train import fit, prepare, worker_config
    from telemetry import generate, write_shards

    cores = os.cpu_count() or 1
    cpw = args.cpus_per_worker or max(1.0, cores / args.workers)
    tmp = Path(tempfile.mkdtemp(prefix="trainyard-bench-"))
    write_shards(generate(args.rows, seed=0), tmp / "data", 8)
    spec = validate_spec({
        "name": "bench", "output": str(tmp / "out"),
        "data": {"path": str(tmp / "data"), "label": "failure", "features": {"exclude": ["machine_id"]}},
        "model": {"hidden": [int(h) for h in args.hidden.split(",")], "dropout": 0.0},
        "train": {"epochs": args.epochs, "batch_size": args.batch_size, "lr": 1e-3, "workers": args.workers,
                  "cpus_per_worker": cpw, "early_stop": None, "class_weight": "balanced",
                  "use_gpu": True if args.use_gpu else False}})
    _quiet_ray()
    connect(num_cpus=max(cores, int(args.workers * cpw) + 2), quiet=True)

    quiet = lambda *_: None
    t0 = time.perf_counter()
    prepared = prepare(spec, quiet)
    t_prep = time.perf_counter() - t0
    t1 = time.perf_counter()
    outcome = fit(spec, prepared, storage_path=storage_root(spec), run_name="bench", progress=quiet)
    t_fit = time.perf_counter() - t1
    t_e2e = time.perf_counter() - t0
    ours = [r["train_samples_per_s"] for r in outcome.history]

    # The plain loop gets the very same packed tensors (preprocessing is not what is measured here).
    batch = prepared.train_ds.to_pandas()
    x = torch.from_numpy(np.stack(batch["features"].to_numpy()).astype(np.float32))
    y = torch.from_numpy(batch["label"].to_numpy()).long()
    cfg = worker_config(spec, prepared, use_gpu=False)
    if args.use_gpu:
        print("note: the plain baseline runs on the CPU of the driver; compare GPU figures to a GPU baseline")
    t_plain, plain = plain_loop(x, y, cfg, args.epochs)

    steady_ours = float(np.median(ours[1:] if len(ours) > 1 else ours))
    steady_plain = float(np.median(plain[1:] if len(plain) > 1 else plain))
    print(f"\nrows {args.rows} (train {len(x)}), {args.epochs} epochs, batch {args.batch_size}, "
          f"MLP {args.hidden}, {args.workers} worker(s) × {cpw:g} CPU, torch threads (driver) "
          f"{torch.get_num_threads()}, machine: {os.cpu_count()} cores")
    print(f"{'':<28}{'trainyard':>14}{'plain torch':>14}{'ratio':>8}")
    print(f"{'steady samples/s':<28}{steady_ours:>14,.0f}{steady_plain:>14,.0f}{steady_ours / steady_plain:>8.2f}")
    print(f"{'training wall s':<28}{t_fit:>14.1f}{t_plain:>14.1f}{t_plain / t_fit:>8.2f}")
    print(f"{'end-to-end wall s':<28}{t_e2e:>14.1f}{t_plain:>14.1f}{t_plain / t_e2e:>8.2f}")
    print(f"  (end-to-end = ingest {t_prep:.1f}s + Ray Train start, epochs, checkpoints {t_fit:.1f}s)")
    print(f"per-epoch samples/s trainyard: {[round(v) for v in ours]}")
    print(f"per-epoch samples/s plain:     {[round(v) for v in plain]}")


if __name__ == "__main__":
    main()
