"""Image training throughput: trainyard's path (image folder → Ray Data decode/normalise → Ray Train worker →
CNN with augmentation) against a plain PyTorch loop over the same in-memory tensors, same CNN, same
augmentation, same epochs, in one invocation.

    .venv/bin/python benchmarks/image_throughput.py [--per-class 2000] [--size 32] [--epochs 5]
    .venv/bin/python benchmarks/image_throughput.py --pool-ab     # the CNN's own step, before against now

--pool-ab times the training step of this benchmark's CNN as it was before issue 18 (global average pooling,
weights in PyTorch's default NCHW order) and as it is by default now (the 4x4 grid, channels-last weights), in
alternating rounds in one process (no Ray), so that a busy machine slows both alike.
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
    ap.add_argument("--pool-ab", action="store_true")
    args = ap.parse_args()
    if args.pool_ab:
        return pool_ab(args.size, args.batch_size)

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


def pool_ab(size: int, batch: int, rounds: int = 6, steps: int = 40) -> None:
    import time

    import torch

    from jobs.model import build_model

    torch.manual_seed(0)
    x, y = torch.randn(batch, size * size), torch.randint(0, 2, (batch,))
    models = {}
    for name, pool in (("before (pool 1, NCHW)", 1), ("default (pool 4, NHWC)", 4)):
        model = build_model({"kind": "cnn", "input_dim": size * size, "output_dim": 2, "hidden": [64], "dropout": 0.0,
                             "activation": "relu", "input_shape": [1, size, size], "channels": [16, 32], "pool": pool})
        if pool == 1:      # the model as it was: global average pooling, weights in PyTorch's default order
            model = model.to(memory_format=torch.contiguous_format)
        models[name] = (model, torch.optim.AdamW(model.parameters(), lr=3e-3), [])
    for _ in range(rounds):
        for model, opt, rates in models.values():
            t0 = time.perf_counter()
            for _ in range(steps):
                loss = torch.nn.functional.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
            rates.append(steps * batch / (time.perf_counter() - t0))
    medians = {name: sorted(rates)[len(rates) // 2] for name, (_, _, rates) in models.items()}
    for name, (_, _, rates) in models.items():
        print(f"{name}: median {medians[name]:,.0f} images/s per round {[round(r) for r in rates]}")
    before, now = medians.values()
    print(f"default / before: {now / before:.2f}x")


if __name__ == "__main__":
    main()
