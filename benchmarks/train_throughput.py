"""Tabular training throughput: trainyard's path (Ray Data → Ray Train worker → the training loop) against a
plain single-process PyTorch loop over in-memory tensors — same data, same MLP, same epochs, one invocation.

    .venv/bin/python benchmarks/train_throughput.py [--rows 200000] [--epochs 6] [--workers 1]

Prints steady-state samples/s inside the loop (epochs after the first, median) and wall times, with ratios.
Goal on a 2-core machine: steady state ≥ 0.9× the plain loop at 1 worker.

--ray-by-hand adds a third column, a reference for the end-to-end time (1 worker, the embedded Ray): the same
training with Ray's public API alone, one step after the other (`_harness.ray_by_hand`: Ray Data reads the shards
once, then a `DataParallelTrainer` runs the plain loop on the plain loop's tensors; no preprocessing, validation
or checkpoint), after the other two on the same warm Ray. Its docstring lists what makes it faster and slower
than a real pipeline.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from _harness import run_side_by_side


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--cpus-per-worker", type=float, default=None,
                    help="default: this machine's CPUs split over the workers (the plain loop gets them all)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--hidden", default="128,64")
    ap.add_argument("--use-gpu", action="store_true")
    ap.add_argument("--no-early", action="store_true",
                    help="prepare the data, then start Ray Train (without jobs.early's overlap), as before it existed")
    ap.add_argument("--ray-by-hand", action="store_true",
                    help="a third column: the same training through Ray's public API alone, one step after the "
                         "other (Ray Data's read, then a DataParallelTrainer running the plain loop); 1 worker")
    args = ap.parse_args()
    if args.ray_by_hand and args.workers != 1:
        ap.error("--ray-by-hand compares one-worker runs: leave --workers at 1")

    from cluster import connect
    from cluster.quiet import quiet_ray_logs
    from jobs.spec import validate_spec
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
                  "use_gpu": bool(args.use_gpu)}})
    quiet_ray_logs()
    connect(num_cpus=max(cores, int(args.workers * cpw) + 2))
    run_side_by_side(spec, unit="samples", use_gpu=args.use_gpu, early=not args.no_early, by_hand=args.ray_by_hand)


if __name__ == "__main__":
    main()
