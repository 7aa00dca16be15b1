"""Shared by the training benchmarks: the plain PyTorch baseline and the side-by-side report."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples"))

from _machine import busy_cpu_seconds  # noqa: E402


def plain_loop(x: torch.Tensor, y: torch.Tensor, cfg: dict, epochs: int, device: str = "cpu") -> tuple[float, list[float]]:
    """The baseline a PyTorch user would write: tensors in memory, a shuffled index per epoch, same model,
    optimizer, loss and (for images) the same augmentation."""
    from jobs.model import build_model

    torch.manual_seed(cfg["seed"])
    model = build_model(cfg["model"]).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"])
    weight = torch.tensor(cfg["class_weights"], dtype=torch.float32, device=device) if cfg["class_weights"] else None
    loss_fn = torch.nn.CrossEntropyLoss(weight=weight)
    aug = cfg.get("augment")
    if aug:
        from jobs.images import augment_batch
    x, y = x.to(device), y.to(device)
    bs = cfg["batch_size"]
    per_epoch = []
    t_all = time.perf_counter()
    for _ in range(epochs):
        t0 = time.perf_counter()
        perm = torch.randperm(len(x), device=device)
        for i in range(0, len(x), bs):
            idx = perm[i:i + bs]
            xb = x[idx]
            if aug:
                xb = augment_batch(xb, aug["shape"], aug["hflip"], aug["random_crop"])
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
                loss = loss_fn(model(xb).float(), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        per_epoch.append(len(x) / (time.perf_counter() - t0))
    return time.perf_counter() - t_all, per_epoch


def ray_by_hand(data_path, x: torch.Tensor, y: torch.Tensor, cfg: dict, epochs: int, *, cpus: float,
                use_gpu: bool = False, storage: str) -> dict:
    """A reference for trainyard's end-to-end time: the same training done with Ray's public API alone, one step
    after the other. Ray Data reads the Parquet shards once (`read_parquet(...).materialize()`), then a one-worker
    `DataParallelTrainer` (Ray's leanest public trainer: no torch process group) runs `plain_loop` on the plain
    loop's own tensors, handed by `ray.put`, with one report at the end.

    Faster than a real pipeline: no cast, preprocessing fit or transform, no split, the read's result unused (the
    worker never pulls from Ray Data), no validation or checkpoint, and Ray already warm from trainyard's run (Ray
    Data's actors and worker processes up). Slower than trainyard can be: the read and the run do not overlap
    (`jobs.early` overlaps them), and Ray Train's per-run defaults that only private overrides remove stay (the
    controller's and worker's runtime_env, which costs them prestarted processes; the placement-group cleaner
    actor: `cluster.ray_compat.trainer_class`). The two public settings trainyard gives a one-worker run on the
    embedded Ray are set the same (`jobs.train.controller_env`: the 0.02 s poll, no preemption watcher).
    On this machine only (the worker writes its per-epoch rates to a file the driver reads)."""
    import ray
    import ray.cloudpickle
    from ray.train import RunConfig, ScalingConfig
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    from cluster import is_embedded
    from jobs.train import controller_env

    if not is_embedded():
        raise SystemExit("ray_by_hand runs on the embedded Ray only (its worker's file is read here)")
    t0 = time.perf_counter()
    ray.data.read_parquet(data_path).materialize()
    t_read = time.perf_counter() - t0
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])    # the worker cannot import benchmarks/
    device = "cuda" if use_gpu else "cpu"

    def loop(config: dict) -> None:
        bx, by = ray.get(config["refs"])
        seconds, per_epoch = plain_loop(bx, by, config["cfg"], config["epochs"], config["device"])
        ray.train.report({"seconds": seconds})
        Path(config["out"]).write_text(json.dumps(per_epoch))   # a Result keeps only metrics with a checkpoint

    out = Path(storage) / f"by-hand-{os.getpid()}.json"
    t1 = time.perf_counter()
    refs = [ray.put(x), ray.put(y)]
    with controller_env(1, embedded=True):
        DataParallelTrainer(
            loop, train_loop_config={"refs": refs, "cfg": cfg, "epochs": epochs, "device": device, "out": str(out)},
            scaling_config=ScalingConfig(num_workers=1, use_gpu=use_gpu, resources_per_worker={"CPU": cpus}),
            run_config=RunConfig(name=f"by-hand-{int(t1)}", storage_path=storage)).fit()
    t_fit = time.perf_counter() - t1
    return {"t_read": t_read, "t_fit": t_fit, "t_e2e": t_read + t_fit, "per_epoch": json.loads(out.read_text())}


def steady(per_epoch: list[float], warmup: int = 1) -> float:
    """The steady-state rate: the median of the epochs after the first `warmup` (the last epoch's when there are
    no more)."""
    return float(np.median(per_epoch[warmup:] if len(per_epoch) > warmup else per_epoch[-1:]))


def packed_tensors(prepared) -> tuple[torch.Tensor, torch.Tensor]:
    """The very tensors trainyard trains on (preprocessing is not what these benchmarks measure)."""
    df = prepared.train_ds.to_pandas()
    x = torch.from_numpy(np.stack(df["features"].to_numpy()).astype(np.float32))
    y = torch.from_numpy(df["label"].to_numpy().copy()).long()
    return x, y


def run_side_by_side(spec, *, unit: str = "samples", use_gpu: bool = False, early: bool = True,
                     by_hand: bool = False) -> dict:
    """Train with trainyard (Ray Data → Ray Train) and with the plain loop; print the comparison. `early`: start
    the Ray Train run while the data is prepared where `trainyard train` does (`jobs.early`); else one after the
    other, as before that existed. `by_hand`: then `ray_by_hand` too, a third column (a reference: the same
    training through Ray's public API alone, one step after the other; one worker)."""
    from jobs.early import start_early
    from jobs.pipeline import prepare, storage_root
    from cluster import is_embedded
    from jobs.train import POLL_ENV, controller_env, fit, pretrained_encoder, run_epoch_floor_s, worker_config

    if by_hand and spec.train.workers != 1:
        raise SystemExit("ray_by_hand compares one-worker runs: train.workers must be 1")
    quiet = lambda *_: None
    cpu0 = busy_cpu_seconds()
    t0 = time.perf_counter()
    run_name = f"bench-{int(t0)}"
    started = start_early(spec, use_gpu=use_gpu, storage_path=storage_root(spec), run_name=run_name) if early else None
    try:
        prepared = prepare(spec, quiet)
    except BaseException:
        if started is not None:
            started.abort()             # the waiting run ends without training, as `trainyard train`'s does
        raise
    t_prep = time.perf_counter() - t0
    t1 = time.perf_counter()
    outcome = (started.finish(prepared, quiet) if started is not None else
               fit(spec, prepared, storage_path=storage_root(spec), run_name=run_name, progress=quiet))
    t_fit = time.perf_counter() - t1
    t_e2e = time.perf_counter() - t0
    cpu_e2e = busy_cpu_seconds() - cpu0
    ours = [r["train_samples_per_s"] for r in outcome.history]
    x, y = packed_tensors(prepared)
    config = worker_config(spec, prepared, use_gpu=use_gpu)
    cfg = config.to_dict()                                             # what the workers receive, as plain data
    cpu1 = busy_cpu_seconds()
    t_plain, plain = plain_loop(x, y, cfg, spec.train.epochs, "cuda" if use_gpu else "cpu")
    cpu_plain = busy_cpu_seconds() - cpu1
    steady_ours, steady_plain = steady(ours), steady(plain)
    cpu2 = busy_cpu_seconds()
    hand = (ray_by_hand(spec.data.path, x, y, cfg, spec.train.epochs, cpus=spec.train.cpus_per_worker,
                        use_gpu=use_gpu, storage=storage_root(spec)) if by_hand else None)
    if hand is not None:
        hand["cpu_e2e"] = busy_cpu_seconds() - cpu2
    t = spec.train
    print(f"\ntrain rows {len(x)}, {t.epochs} epochs, batch {t.batch_size}, model {cfg['model']['kind']} "
          f"{cfg['model'].get('channels', '')}{cfg['model']['hidden']}, {t.workers} worker(s) × {t.cpus_per_worker:g} CPU"
          f"{' + GPU' if use_gpu else ''}, machine: {os.cpu_count()} cores, driver torch threads {torch.get_num_threads()}")
    print(f"{'':<28}{'trainyard':>14}{'plain torch':>14}{'ratio':>8}")
    print(f"{'steady ' + unit + '/s':<28}{steady_ours:>14,.0f}{steady_plain:>14,.0f}{steady_ours / steady_plain:>8.2f}")
    print(f"{'training wall s':<28}{t_fit:>14.1f}{t_plain:>14.1f}{t_plain / t_fit:>8.2f}")
    print(f"{'end-to-end wall s':<28}{t_e2e:>14.1f}{t_plain:>14.1f}{t_plain / t_e2e:>8.2f}")
    print(f"  (end-to-end = ingest + preprocessing {t_prep:.1f}s" + (", Ray Train's run starting meanwhile" if started else "")
          + f", then Ray Train start, epochs, checkpoints {t_fit:.1f}s)")
    # The machine's busy CPU-s (every process, Ray's daemons included) bound the wall time from below: no schedule
    # on `cores` cores does X CPU-s of work in less than X / cores seconds.
    cores = os.cpu_count() or 1
    print(f"  (machine busy CPU-s: trainyard end to end {cpu_e2e:.1f} ({cpu_e2e / (cores * t_e2e):.0%} of {cores} "
          f"cores over its wall), plain loop's call (its model and first optimizer included) {cpu_plain:.1f}; at full use of every core trainyard's work takes at "
          f"least {cpu_e2e / cores:.1f}s: end-to-end ratio at most {t_plain / (cpu_e2e / cores):.2f})")
    # The environment the run's controller got, as `jobs.train.controller_env` makes it (an exported value wins).
    floor = started.epoch_floor if started is not None else run_epoch_floor_s(spec, prepared, config)
    with controller_env(t.workers, is_embedded(), pretrained_encoder(spec), floor) as env:
        poll = env[POLL_ENV]
    print(f"  (Ray Train's controller polled every {poll} s; trainyard's floor under an epoch: {floor:.3g} s)")
    print(f"per-epoch {unit}/s trainyard: {[round(v) for v in ours]}")
    print(f"per-epoch {unit}/s plain:     {[round(v) for v in plain]}")
    if hand is not None:
        steady_hand = steady(hand["per_epoch"])
        print(f"Ray by hand (ray_by_hand, Ray's public API, one step after the other: read_parquet().materialize() "
              f"{hand['t_read']:.1f}s, then a 1-worker DataParallelTrainer running the plain loop on the plain loop's "
              f"tensors {hand['t_fit']:.1f}s; warm Ray):\n"
              f"  end-to-end {hand['t_e2e']:.1f}s: plain / by hand {t_plain / hand['t_e2e']:.2f}, by hand / trainyard "
              f"{hand['t_e2e'] / t_e2e:.2f} (its time over trainyard's), {hand['cpu_e2e']:.1f} busy CPU-s; steady {steady_hand:,.0f} {unit}/s "
              f"({steady_hand / steady_plain:.2f} of plain); per epoch {[round(v) for v in hand['per_epoch']]}")
    return {"steady_ratio": steady_ours / steady_plain, "steady_ours": steady_ours, "steady_plain": steady_plain,
            "t_fit": t_fit, "t_plain": t_plain, "t_e2e": t_e2e, "cpu_e2e": cpu_e2e, "cpu_plain": cpu_plain,
            "by_hand": hand}
