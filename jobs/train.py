"""Training: data-parallel PyTorch on Ray Train V2 (TorchTrainer, DDP), one checkpoint per epoch.

`fit(spec, prepared, ...)` trains on data `jobs.pipeline.prepare` prepared once. Tuning calls `fit` once per
trial on the same `PreparedData`, so every trial sees the identical split and fitted preprocessing.

Inside a worker the shard is, by default, pulled out of Ray Data once and held as tensors (the data is
already preprocessed and packed, so each epoch is a plain tensor loop); shards larger than
`train.cache_limit_mb` stream from Ray Data every epoch instead.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import math
import os
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn

from jobs import metrics as M
from jobs.model import build_model, model_config
from jobs.contracts import PreparedData
from jobs.preprocess import FEATURES_COLUMN, LABEL_COLUMN, Preprocessor
from jobs.spec import JobSpec, metric_mode

STATE_FILE = "state.pt"


class TrainError(RuntimeError):
    """Training could not run or did not finish; the message says why and what to change."""


# ---------------------------------------------------------------------------------------------- worker
def _loss_fn(cfg: dict, device) -> nn.Module:
    loss = cfg["loss"]
    if cfg["task"] == "classification":
        weight = torch.tensor(cfg["class_weights"], dtype=torch.float32, device=device) if cfg["class_weights"] else None
        return nn.CrossEntropyLoss(weight=weight)
    return nn.HuberLoss() if loss == "huber" else nn.MSELoss()


def _optimizer(cfg: dict, params) -> torch.optim.Optimizer:
    name, lr, wd = cfg["optimizer"], cfg["lr"], cfg["weight_decay"]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    return torch.optim.AdamW(params, lr=lr, weight_decay=wd)


def best_key(metric: str) -> str:
    """The reported column holding a run's best value of `metric` so far (what Tune ranks trials by)."""
    return f"best_{metric}"


def scheduled_lr(base: float, schedule: str, epoch: int, epochs: int) -> float:
    """The learning rate of `epoch` (0-based) of `epochs`. It depends on the epoch alone, so a run resumed from a
    checkpoint, and every trial of a search (all planned for train.epochs), follow the same curve."""
    if schedule == "cosine":
        return base * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
    return base


def _pull(iterator, label_dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Materialise a Ray Data iterator of packed rows into two tensors."""
    xs, ys = [], []
    for batch in iterator.iter_batches(batch_size=65536, batch_format="numpy"):
        xs.append(batch[FEATURES_COLUMN])
        ys.append(batch[LABEL_COLUMN])
    if not xs:
        return torch.zeros((0, 0)), torch.zeros((0,), dtype=label_dtype)
    return (torch.from_numpy(np.ascontiguousarray(np.concatenate(xs), dtype=np.float32)),
            torch.from_numpy(np.concatenate(ys)).to(label_dtype))


def _evaluate(model, x: torch.Tensor, y: torch.Tensor, cfg: dict, loss_fn, device, amp) -> dict:
    model.eval()
    outs = []
    with torch.no_grad(), amp():
        for i in range(0, len(x), 8192):
            outs.append(model(x[i:i + 8192].to(device, non_blocking=True)).float())
    model.train()
    out = torch.cat(outs) if outs else torch.zeros((0, cfg["output_dim"]), device=device)
    yd = y.to(device)
    if cfg["task"] == "classification":
        loss = float(loss_fn(out, yd)) if len(out) else float("nan")
        proba = torch.softmax(out, dim=1).cpu().numpy()
        return M.classification_metrics(y.numpy(), proba, loss, prefix="val_")
    pred = out.squeeze(1)
    loss = float(loss_fn(pred, yd)) if len(out) else float("nan")
    scale, center = cfg["label_scale"], cfg["label_center"]
    return M.regression_metrics(y.numpy() * scale + center, pred.cpu().numpy() * scale + center, loss,
                                prefix="val_")


def _improved(value: float, best: Optional[float], mode: str) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return best is None or (value < best if mode == "min" else value > best)


class WeightAverage:
    """Exponential moving average of a model's weights (and float buffers) over the last optimizer steps.

    The decay per step t is min((1 + t) / (10 + t), 1 - 1/(steps per epoch × epochs)): the average spans about
    a ninth of the steps taken so far (so it is never held back by the initial weights), and at most `epochs`
    epochs. Until the steps of an epoch are known (streamed data, first epoch) only the first bound applies.
    Integer buffers (BatchNorm's step count) are copied, not averaged."""

    def __init__(self, model: nn.Module, epochs: float, steps_per_epoch: Optional[int] = None):
        self.epochs, self.steps, self.steps_per_epoch = epochs, 0, steps_per_epoch
        # state_dict tensors share storage with the live parameters: the optimizer updates them in place.
        live = model.state_dict()
        self.state = {k: v.detach().clone() for k, v in live.items()}
        self._averaged = [self.state[k] for k, v in live.items() if v.is_floating_point()]
        self._live = [v for v in live.values() if v.is_floating_point()]          # already detached
        self._other = [(self.state[k], v) for k, v in live.items() if not v.is_floating_point()]

    def decay(self) -> float:
        warm = (1 + self.steps) / (10 + self.steps)
        if not self.steps_per_epoch:
            return warm
        return min(warm, 1.0 - 1.0 / (self.steps_per_epoch * self.epochs))

    @torch.no_grad()
    def update(self) -> None:
        self.steps += 1
        weight = 1.0 - self.decay()
        if self._averaged:
            torch._foreach_lerp_(self._averaged, self._live, weight)
        for e, v in self._other:
            e.copy_(v)

    def snapshot(self) -> dict:
        return {"state": self.state, "steps": self.steps, "steps_per_epoch": self.steps_per_epoch}

    def restore(self, snap: dict) -> None:
        for k, v in snap["state"].items():
            self.state[k].copy_(v)
        self.steps, self.steps_per_epoch = snap["steps"], snap["steps_per_epoch"]


def _quiet_worker_logs() -> None:
    """What a worker forwards to the driver's terminal, less Ray's chatter (cli._quiet_ray does the driver's):
    Ray Train 2.60 logs every `report` at INFO ("Reporting training result N: TrainingReport(...)", ~800
    characters an epoch) through a logger named after its file, which RunConfig's LoggingConfig(log_level) does
    not reach (it filters loggers named ray.train*); Ray Data announces each dataset execution, and warns that
    progress bars are off. Our own [train] line says what an epoch did. Warnings and errors still show."""
    import logging
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    try:
        from ray.train.v2._internal.execution import context as train_context
        logging.getLogger(train_context.__file__).setLevel(logging.WARNING)
    except Exception:  # another Ray: at worst the lines are back
        pass


def train_loop_per_worker(cfg: dict) -> None:
    """Runs in every Ray Train worker. All workers call `report` the same number of times (it is a barrier)."""
    import ray.train
    import ray.train.torch as rtt

    _quiet_worker_logs()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = rtt.get_device()
    torch.manual_seed(cfg["seed"])
    use_amp = device.type == "cuda"
    amp = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_amp else contextlib.nullcontext

    model = rtt.prepare_model(build_model(cfg["model"]))
    core = model.module if hasattr(model, "module") else model
    optimizer = _optimizer(cfg, model.parameters())
    loss_fn = _loss_fn(cfg, device)
    mode = cfg["early_stop_mode"]
    metric = cfg["early_stop_metric"]

    # With train.ema_epochs, validation (and so the best epoch and the bundle) sees the weight average.
    average = WeightAverage(core, cfg["ema_epochs"]) if cfg.get("ema_epochs") else None
    scored = copy.deepcopy(core) if average is not None else core
    if average is not None and rank == 0:
        print(f"[train] validating the average of the weights over ~{cfg['ema_epochs']:g} epoch(s) "
              "(train.ema_epochs)", flush=True)

    start_epoch, history, best, best_epoch, bad_epochs, best_state, best_val = 0, [], None, -1, 0, None, None
    resumes = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            state = torch.load(os.path.join(d, STATE_FILE), map_location="cpu", weights_only=True)
        core.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if average is not None and state.get("average"):
            average.restore(state["average"])
        start_epoch, history = state["epoch"] + 1, state["history"]
        best, best_epoch, bad_epochs = state["best"], state["best_epoch"], state["bad_epochs"]
        best_state, best_val = state["best_state"], state["best_val"]
        resumes = state.get("resumes", 0) + 1
        if rank == 0:
            print(f"[train] resumed from the checkpoint of epoch {state['epoch'] + 1}", flush=True)

    label_dtype = torch.long if cfg["task"] == "classification" else torch.float32
    train_shard = ray.train.get_dataset_shard("train")
    x_val, y_val = _pull(ray.train.get_dataset_shard("val"), label_dtype)
    cached = None
    if cfg["cache"] == "memory":
        cached = _pull(train_shard, label_dtype)
    bs = cfg["batch_size"]
    gen = torch.Generator().manual_seed(cfg["seed"] * 7919 + rank)
    augment = cfg.get("augment")
    if augment is not None:
        from jobs.images import augment_batch

    for epoch in range(start_epoch, cfg["epochs"]):
        gen.manual_seed(cfg["seed"] * 7919 + rank * 104729 + epoch)
        lr_now = scheduled_lr(cfg["lr"], cfg["lr_schedule"], epoch, cfg["epochs"])
        for group in optimizer.param_groups:
            group["lr"] = lr_now
        t0 = time.perf_counter()
        total_loss, seen, steps = torch.zeros((), device=device), 0, 0
        if cached is not None:
            x_all, y_all = cached
            if device.type == "cuda" and x_all.device != device:
                x_all, y_all = x_all.to(device), y_all.to(device)
                cached = (x_all, y_all)
            if average is not None:
                average.steps_per_epoch = math.ceil(len(x_all) / bs)
            perm = torch.randperm(len(x_all), generator=gen).to(x_all.device)
            batches = ((x_all[perm[i:i + bs]], y_all[perm[i:i + bs]]) for i in range(0, len(x_all), bs))
        else:
            batches = ((b[FEATURES_COLUMN], b[LABEL_COLUMN]) for b in train_shard.iter_torch_batches(
                batch_size=bs, dtypes={FEATURES_COLUMN: torch.float32, LABEL_COLUMN: label_dtype},
                device=device, local_shuffle_buffer_size=max(bs * 8, 1024), local_shuffle_seed=epoch))
        for xb, yb in batches:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            if augment is not None:  # train split only: evaluation below never augments
                xb = augment_batch(xb, augment["shape"], augment["hflip"], augment["random_crop"], gen)
            with amp():
                out = model(xb)
                loss = loss_fn(out if cfg["task"] == "classification" else out.squeeze(1), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if average is not None:
                average.update()
            total_loss += loss.detach() * len(xb)
            seen += len(xb)
            steps += 1
        train_time = time.perf_counter() - t0
        if average is not None:
            average.steps_per_epoch = average.steps_per_epoch or steps   # streamed: known after one epoch
            scored.load_state_dict(average.state)
        val = _evaluate(scored, x_val, y_val, cfg, loss_fn, device, amp)
        value = val.get(metric)
        row = {"epoch": epoch + 1, "lr": lr_now, "train_loss": float(total_loss) / max(seen, 1),
               **M.scalar_metrics(val), "epoch_time_s": train_time,
               "train_samples_per_s": seen * world / train_time if train_time > 0 else 0.0}
        stop = False
        if _improved(value, best, mode):
            best, best_epoch, bad_epochs = value, epoch + 1, 0
            best_state = {k: v.detach().cpu().clone() for k, v in scored.state_dict().items()}
            best_val = val
        else:
            bad_epochs += 1
            stop = cfg["patience"] is not None and bad_epochs >= cfg["patience"]
        if world > 1:
            # Rank 0 decides: float noise between workers must never split the group (a DDP hang).
            flag = torch.tensor([1 if stop else 0], device=device)
            torch.distributed.broadcast(flag, src=0)
            stop = bool(flag.item())
        # best_<metric> is what the run would leave if it ended now (its best epoch); Tune ranks trials by it.
        # Until one epoch gives a number it carries this epoch's value (NaN), never nothing.
        row.update({"best_epoch": best_epoch, best_key(metric): best if best is not None else value,
                    "resumes": resumes})
        history.append(row)
        if rank == 0 and cfg.get("epoch_lines", True):
            print(_progress_line(row, cfg, metric), flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if rank == 0:
                torch.save({"model": core.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                            "history": history, "best": best, "resumes": resumes, "best_epoch": best_epoch, "bad_epochs": bad_epochs,
                            "best_state": best_state if best_state is not None else scored.state_dict(),
                            "average": average.snapshot() if average is not None else None,
                            "best_val": best_val if best_state is not None else val},
                           os.path.join(tmp, STATE_FILE))
                ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report({k: v for k, v in row.items() if v is not None}, checkpoint=ckpt)
        if rank == 0 and cfg.get("fault_kill_epoch") == epoch + 1 and cfg.get("fault_marker"):
            # Test hook: a real worker death (SIGKILL), once, right after this epoch's checkpoint.
            if not os.path.exists(cfg["fault_marker"]):
                open(cfg["fault_marker"], "w").close()
                os.kill(os.getpid(), signal.SIGKILL)
        if stop:
            if rank == 0:
                print(f"[train] early stop: {metric} has not improved for {bad_epochs} epoch(s); "
                      f"best epoch {best_epoch}", flush=True)
            break


def _progress_line(row: dict, cfg: dict, metric: str) -> str:
    shown = [f"epoch {row['epoch']}/{cfg['epochs']}"]
    if cfg.get("lr_schedule", "constant") != "constant":
        shown.append(f"lr {row['lr']:.3g}")
    shown += [f"train_loss {row['train_loss']:.4f}", f"val_loss {row.get('val_loss', float('nan')):.4f}"]
    if metric != "val_loss" and row.get(metric) is not None:
        shown.append(f"{metric} {row[metric]:.4f}")
    for k in ("val_accuracy", "val_f1", "val_rmse", "val_r2"):
        if k != metric and k in row:
            shown.append(f"{k} {row[k]:.4f}")
    shown.append(f"{row['epoch_time_s']:.2f}s {row['train_samples_per_s']:,.0f} samples/s")
    return "[train] " + "  ".join(shown)


# ---------------------------------------------------------------------------------------------- driver
@dataclass
class TrainOutcome:
    best_state: dict             # state dict of the best epoch (CPU tensors)
    model_config: dict
    history: list[dict]
    best_epoch: int
    val_metrics: dict            # validation metrics of the best epoch
    run_path: str                # where Ray Train stored the run (checkpoints)
    use_gpu: bool
    extra: dict = field(default_factory=dict)


def resolve_use_gpu(spec_value, workers: int, resources: dict) -> bool:
    gpus = resources.get("GPU", 0)
    if spec_value == "auto":
        return gpus >= workers and gpus > 0
    if spec_value and gpus < workers:
        raise TrainError(f"train.use_gpu is true and train.workers is {workers}, but the cluster has {gpus:g} GPU(s); "
                         "lower train.workers or set train.use_gpu: auto")
    return bool(spec_value)


def class_weights(pre: Preprocessor, how: str) -> Optional[list[float]]:
    if pre.task != "classification" or how != "balanced":
        return None
    counts = np.array([pre.stats["class_counts"][k] for k in pre.stats["class_counts"]], dtype=np.float64)
    return (counts.sum() / (len(counts) * np.maximum(counts, 1))).tolist()


def worker_config(spec: JobSpec, prepared: PreparedData, *, use_gpu: bool, overrides: Optional[dict] = None) -> dict:
    """The plain dict every worker receives: the spec's train section, overridden (by Tune) where given."""
    pre = prepared.preprocessor
    overrides = overrides or {}
    t = spec.train.model_copy(update={k: v for k, v in overrides.items() if k in type(spec.train).model_fields})
    es = t.early_stop
    metric = es.metric if es else "val_loss"
    if pre.task == "regression" and metric not in ("val_loss", "val_mae", "val_rmse", "val_r2"):
        raise TrainError(f"train.early_stop.metric {metric!r} is a classification metric but the task is "
                         "regression; use val_loss, val_mae, val_rmse or val_r2")
    if pre.task == "classification" and metric in ("val_mae", "val_rmse", "val_r2"):
        raise TrainError(f"train.early_stop.metric {metric!r} is a regression metric but the task is "
                         "classification; use val_loss, val_accuracy, val_f1, val_precision, val_recall or val_auc")
    if metric == "val_auc" and pre.output_dim != 2:
        raise TrainError("train.early_stop.metric val_auc needs a binary label; use val_f1 or val_loss")
    rows = prepared.ingest.split_rows["train"]
    shard_mb = rows / t.workers * (pre.feature_dim * 4 + 8) / 2**20
    cache = t.cache if t.cache != "auto" else ("memory" if shard_mb <= t.cache_limit_mb else "stream")
    model_spec = spec.model.model_copy(update={k: v for k, v in (overrides or {}).items() if k in ("dropout", "hidden")})
    shape = getattr(pre, "shape", None)
    aug = spec.data.augment
    augment = ({"shape": shape, "hflip": aug.hflip, "random_crop": aug.random_crop}
               if aug is not None and shape is not None and (aug.hflip or aug.random_crop) else None)
    return {"task": pre.task, "model": model_config(model_spec, pre.feature_dim, pre.output_dim, shape),
            "augment": augment,
            "epochs": t.epochs, "batch_size": t.batch_size, "lr": t.lr, "weight_decay": t.weight_decay,
            "optimizer": t.optimizer, "lr_schedule": t.lr_schedule, "ema_epochs": t.ema_epochs,
            "loss": t.loss, "seed": t.seed, "cache": cache,
            "class_weights": class_weights(pre, t.class_weight), "output_dim": pre.output_dim,
            "label_center": pre.label_center, "label_scale": pre.label_scale,
            "early_stop_metric": metric, "early_stop_mode": (es.resolved_mode if es else metric_mode(metric)),
            "patience": es.patience if es else None, "use_gpu": use_gpu}


@functools.lru_cache(maxsize=None)
def _trainer_without_placement_cleaner():
    """TorchTrainer less Ray Train's per-run `PlacementGroupCleaner`, for runs whose placement group someone
    else gives back: a tuning trial's, swept by the search's driver (tuning/_placement.py). That cleaner is a
    detached actor that watches its controller through the state API; without the dashboard (the embedded Ray)
    it never sees a stopped trial's controller die and polls every second, logging a warning, until Ray stops.
    With hundreds of them (one per stopped trial) the same searches of one long benchmark on 2 cores took ever
    longer: 598, 722, 887 s (benchmarks/RESULTS.md)."""
    from ray.train.torch import TorchTrainer

    class SweptTorchTrainer(TorchTrainer):
        def _create_default_callbacks(self):
            return [cb for cb in super()._create_default_callbacks()
                    if type(cb).__name__ != "PlacementGroupCleanerCallback"]
    return SweptTorchTrainer


def build_trainer(spec: JobSpec, prepared: PreparedData, cfg: dict, *, storage_path: str, run_name: str,
                  callbacks: Optional[list] = None, placement_cleaner: bool = True):
    import ray.train
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    datasets = {"train": prepared.train_ds, "val": prepared.val_ds}
    if cfg["cache"] == "stream":
        datasets["train"] = prepared.train_ds.randomize_block_order(seed=spec.train.seed)
    trainer_cls = TorchTrainer if placement_cleaner else _trainer_without_placement_cleaner()
    return trainer_cls(
        train_loop_per_worker,
        train_loop_config=cfg,
        scaling_config=ScalingConfig(num_workers=spec.train.workers, use_gpu=cfg["use_gpu"],
                                     resources_per_worker={"CPU": spec.train.cpus_per_worker}),
        datasets=datasets,
        # Every worker scores the whole validation split, so all ranks agree on the best epoch.
        dataset_config=DataConfig(datasets_to_split=["train"]),
        run_config=RunConfig(name=run_name, storage_path=storage_path,
                             failure_config=FailureConfig(max_failures=spec.train.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2),
                             callbacks=callbacks or None,
                             logging_config=LoggingConfig(log_level="WARNING"),
                             worker_runtime_env={"env_vars": {"PYTHONUNBUFFERED": "1",
                                                                 # plain prints: Train would log each twice
                                                                 "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}}),
    )


def check_resources(spec: JobSpec, resources: dict) -> None:
    need = spec.train.workers * spec.train.cpus_per_worker
    if need > resources.get("CPU", 0):
        raise TrainError(f"train.workers={spec.train.workers} × train.cpus_per_worker={spec.train.cpus_per_worker:g} "
                         f"needs {need:g} CPUs but the cluster has {resources.get('CPU', 0):g}; lower train.workers "
                         "or train.cpus_per_worker, or add nodes")


def fit(spec: JobSpec, prepared: PreparedData, *, storage_path: str, run_name: str,
        overrides: Optional[dict] = None, fault_kill_epoch: Optional[int] = None,
        callbacks: Optional[list] = None, progress: Callable[[str], None] = print,
        placement_cleaner: bool = True, epoch_lines: bool = True) -> TrainOutcome:
    """Train once. `overrides` (lr, batch_size, weight_decay, dropout, hidden, epochs...) replace the spec's values
    for this run only: tuning passes each trial's sampled config here. `callbacks` go to Ray Train's RunConfig.
    `placement_cleaner=False` when the caller gives back the run's placement group itself (tuning trials);
    `epoch_lines=False` when the caller prints its own line per epoch (tuning's, one per trial epoch)."""
    from cluster import describe_resources

    resources = describe_resources()
    check_resources(spec, resources)
    use_gpu = resolve_use_gpu(spec.train.use_gpu, spec.train.workers, resources)
    cfg = worker_config(spec, prepared, use_gpu=use_gpu, overrides=overrides)
    cfg["epoch_lines"] = epoch_lines
    if fault_kill_epoch:
        cfg["fault_kill_epoch"] = fault_kill_epoch
        # Once per run: the marker records that the kill happened, so the restarted worker trains on.
        cfg["fault_marker"] = os.path.join(storage_path, f"{run_name}.fault-injected")
    progress(f"[train] {spec.train.workers} worker(s) on {'GPU' if use_gpu else 'CPU'}, "
             f"{cfg['epochs']} epoch(s), batch {cfg['batch_size']}, lr {cfg['lr']:g}, shard in {cfg['cache']}")
    trainer = build_trainer(spec, prepared, cfg, storage_path=storage_path, run_name=run_name, callbacks=callbacks,
                            placement_cleaner=placement_cleaner)
    try:
        result = trainer.fit()
    except Exception as exc:
        raise TrainError(f"training failed: {_worker_error(exc)}. The run is at {storage_path}/{run_name}") from exc
    if result.error is not None:
        raise TrainError(f"training failed: {_worker_error(result.error)}")
    if result.checkpoint is None:
        raise TrainError("training finished without a checkpoint (no epoch completed)")
    with result.checkpoint.as_directory() as d:
        state = torch.load(os.path.join(d, STATE_FILE), map_location="cpu", weights_only=True)
    return TrainOutcome(best_state=state["best_state"], model_config=cfg["model"], history=state["history"],
                        best_epoch=state["best_epoch"], val_metrics=state["best_val"], run_path=result.path,
                        use_gpu=use_gpu, extra={"config": cfg})


def last_state(train_run: Path) -> Optional[dict]:
    """The newest checkpoint's state of a Train run: every epoch's row, the best epoch and its weights."""
    if not train_run.is_dir():
        return None
    # Train V2 names checkpoints checkpoint_<timestamp>, so name order is time order.
    for ckpt in sorted((p for p in train_run.glob("checkpoint_*") if (p / STATE_FILE).is_file()), reverse=True):
        try:
            return torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=True)
        except Exception:      # a checkpoint cut short by a kill: the one before it is whole
            continue
    return None


def _worker_error(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [l for l in text.splitlines() if l.strip()]
    # The user's problem is in the last line of the innermost worker traceback; keep it and the headline.
    return lines[0] if len(lines) <= 1 else f"{lines[0]} … {lines[-1]}"


def summary_table(history: list[dict], metric: str, best_epoch: int) -> str:
    scheduled = len({r.get("lr") for r in history}) > 1      # the learning rate changed: show it
    cols = ["epoch"] + (["lr"] if scheduled else []) + ["train_loss", "val_loss"] + (
        [metric] if metric != "val_loss" else [])
    extra = [k for k in ("val_accuracy", "val_f1", "val_auc", "val_mae", "val_rmse", "val_r2")
             if k not in cols and any(k in r for r in history)]
    cols += extra + ["epoch_time_s"]
    lines = ["  ".join(f"{c:>14}" for c in cols)]
    for r in history:
        cells = []
        for c in cols:
            v = r.get(c)
            cells.append(f"{v:>14}" if isinstance(v, int) else f"{v:>14.3g}" if c == "lr" and isinstance(v, float)
                         else f"{v:>14.4f}" if isinstance(v, float) else f"{'-':>14}")
        mark = "  ← best" if r.get("epoch") == best_epoch else ""
        lines.append("  ".join(cells) + mark)
    return "\n".join(lines)
