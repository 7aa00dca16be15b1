"""Image training throughput: trainyard's path (image folder → Ray Data decode/normalise → Ray Train worker →
CNN with augmentation) against a plain PyTorch loop over the same in-memory tensors, same CNN, same
augmentation, same epochs, in one invocation.

    .venv/bin/python benchmarks/image_throughput.py [--per-class 2000] [--size 32] [--epochs 5]
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from _harness import run_side_by_side


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=2000)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--use-gpu", action="store_true")
    args = ap.parse_args()

    from cluster import connect
    from defects import generate
    from cluster.quiet import quiet_ray_logs
    from jobs.spec import validate_spec

    cores = os.cpu_count() or 1
    cpw = max(1.0, cores / args.workers)
    tmp = Path(tempfile.mkdtemp(prefix="trainyard-imgbench-"))
    generate(tmp / "parts", args.per_class, args.size, seed=0)
    spec = validate_spec({
        "name": "imgbench", "output": str(tmp / "out"),
        "data": {"path": str(tmp / "parts"), "format": "images", "label": "label",
                 "image": {"size": [args.size, args.size], "channels": 1},
                 "augment": {"hflip": True, "random_crop": 2}},
        "model": {"kind": "cnn", "channels": [16, 32], "hidden": [64], "dropout": 0.0},
        "train": {"epochs": args.epochs, "batch_size": args.batch_size, "lr": 3e-3, "workers": args.workers,
                  "cpus_per_worker": cpw, "early_stop": None, "use_gpu": bool(args.use_gpu)}})
    quiet_ray_logs()
    connect(num_cpus=max(cores, int(args.workers * cpw) + 2))
    run_side_by_side(spec, unit="images", use_gpu=args.use_gpu)


if __name__ == "__main__":
    main()
