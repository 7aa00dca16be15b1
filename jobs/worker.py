"""The training loop every Ray Train worker runs (`train_loop_per_worker`), and what it needs on its own.

It receives a `jobs.contracts.WorkerConfig` (as a dict: Ray's `train_loop_config`), reports one row per epoch,
with a `jobs.contracts.TrainState` checkpoint at the cadence of train.checkpoint_every and at the last epoch,
and resumes from the latest checkpoint when Ray Train restarts its workers. By default the shard is pulled out
of Ray Data once and held as tensors (the data is already preprocessed and packed, so each epoch is a plain
tensor loop); a shard the driver found too large for `train.cache_limit_mb` streams from Ray Data every epoch
instead.
"""
from __future__ import annotations

import contextlib
import copy
import math
import tempfile
import time
from typing import Optional

import numpy as np
import torch
from torch import nn

from cluster import ray_compat
from jobs import metrics as M
from jobs.contracts import TrainState, WorkerConfig
from jobs.handoff import unwrap
from jobs.model import build_model
from jobs.preprocess import FEATURES_COLUMN, LABEL_COLUMN
from jobs.spec import best_key


def scheduled_lr(base: float, schedule: str, epoch: int, epochs: int) -> float:
    """The learning rate of `epoch` (0-based) of `epochs`. It depends on the epoch alone, so a run resumed from a
    checkpoint, and every trial of a search (all planned for train.epochs), follow the same curve."""
    if schedule == "cosine":
        return base * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
    return base


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


def _loss_fn(cfg: WorkerConfig, device) -> nn.Module:
    if cfg.task == "classification":
        weight = (torch.tensor(cfg.class_weights, dtype=torch.float32, device=device)
                  if cfg.class_weights else None)
        return nn.CrossEntropyLoss(weight=weight)
    return nn.HuberLoss() if cfg.loss == "huber" else nn.MSELoss()


def param_groups(model: nn.Module, cfg: WorkerConfig) -> list[dict]:
    """The optimizer's parameter groups, each with its base learning rate ("base_lr", kept in the optimizer's
    state_dict and so in checkpoints): with train.head_lr, the head's parameters in a group of their own.
    Frozen parameters (model.freeze_layers) are left out."""
    core = model.module if hasattr(model, "module") else model
    head = getattr(core, "head", None) if cfg.head_lr is not None else None
    head_ids = {id(p) for p in head.parameters()} if head is not None else set()
    trainable = [(p, id(p) in head_ids) for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p, h in trainable if not h], "base_lr": cfg.lr}]
    if head_ids:
        groups.append({"params": [p for p, h in trainable if h], "base_lr": cfg.head_lr})
    return [g for g in groups if g["params"]]


def step_lr(base: float, cfg: WorkerConfig, epoch: int, step: int) -> float:
    """The learning rate of optimizer step `step` of the run (0-based) in `epoch`: the epoch's
    (`scheduled_lr`), ramped up linearly over the first `warmup_steps` steps (train.warmup)."""
    lr = scheduled_lr(base, cfg.lr_schedule, epoch, cfg.epochs)
    return lr * min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else lr


def _optimizer(cfg: WorkerConfig, params) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


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


def validate(model, x: torch.Tensor, y: torch.Tensor, cfg: WorkerConfig, loss_fn, device, amp) -> dict:
    """The validation metrics (`val_*`) of `model` on the whole split (x, y); pure PyTorch, no Ray."""
    model.eval()
    outs = []
    step = getattr(model, "chunk_rows", 8192)     # a transformer's activations: fewer rows at a time
    with torch.no_grad(), amp():
        for i in range(0, len(x), step):
            outs.append(model(x[i:i + step].to(device, non_blocking=True)).float())
    model.train()
    out = torch.cat(outs) if outs else torch.zeros((0, cfg.output_dim), device=device)
    yd = y.to(device)
    if cfg.task == "classification":
        loss = float(loss_fn(out, yd)) if len(out) else float("nan")
        proba = torch.softmax(out, dim=1).cpu().numpy()
        return M.classification_metrics(y.numpy(), proba, loss, prefix="val_")
    pred = out.squeeze(1)
    loss = float(loss_fn(pred, yd)) if len(out) else float("nan")
    scale, center = cfg.label_scale, cfg.label_center
    return M.regression_metrics(y.numpy() * scale + center, pred.cpu().numpy() * scale + center, loss,
                                prefix="val_")


def checkpoint_due(cfg: WorkerConfig, epoch: int, since_s: float, *, last: bool) -> bool:
    """Whether the report that ends `epoch` (0-based) carries a checkpoint: always for the last epoch the run
    will train (`last`: the planned last or an early stop), since Train V2 takes a run's result (its metrics and
    checkpoint) from its latest checkpointed report; otherwise every `checkpoint_epochs` epochs, or once
    `checkpoint_seconds` have passed since the last checkpoint (`since_s`). Rank 0 decides for every rank."""
    if last:
        return True
    if cfg.checkpoint_seconds is not None:
        return since_s >= cfg.checkpoint_seconds
    return (epoch + 1) % (cfg.checkpoint_epochs or 1) == 0


def _improved(value: float, best: Optional[float], mode: str) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return best is None or (value < best if mode == "min" else value > best)


def _quiet_worker_logs() -> None:
    """What a worker forwards to the driver's terminal, less Ray's chatter (`cluster.quiet.quiet_ray_logs` does
    the driver's): Ray Train logs every `report` at INFO (`ray_compat.train_report_logger`); Ray Data announces
    each dataset execution, and warns that progress bars are off. Our own [train] line says what an epoch did.
    Warnings and errors still show, but for the traceback of a run torn down by its owner (a trial ASHA
    stopped: `cluster.quiet.TRAIN_TORN_DOWN`)."""
    import logging

    from cluster.quiet import hide_torn_down_train_errors, quiet_ray_logs
    quiet_ray_logs()
    hide_torn_down_train_errors()
    try:
        ray_compat.train_report_logger().setLevel(logging.WARNING)
    except Exception:  # another Ray: at worst the lines are back
        pass


def _progress_line(row: dict, cfg: WorkerConfig, metric: str) -> str:
    shown = [f"epoch {row['epoch']}/{cfg.epochs}"]
    if cfg.lr_schedule != "constant":
        shown.append(f"lr {row['lr']:.3g}")
    shown += [f"train_loss {row['train_loss']:.4f}", f"val_loss {row.get('val_loss', float('nan')):.4f}"]
    if metric != "val_loss" and row.get(metric) is not None:
        shown.append(f"{metric} {row[metric]:.4f}")
    for k in ("val_accuracy", "val_f1", "val_mae", "val_rmse", "val_r2"):     # MAE and RMSE: the label's units
        if k != metric and k in row:
            shown.append(f"{k} {row[k]:.4f}")
    shown.append(f"{row['epoch_time_s']:.2f}s {row['train_samples_per_s']:,.0f} samples/s")
    if "gpu_peak_mib" in row:
        shown.append(f"GPU peak {row['gpu_peak_mib']:,.0f} MiB")
    return "[train] " + "  ".join(shown)


def _early_stop_line(metric: str, bad_epochs: int, best_epoch: int) -> str:
    return f"[train] early stop: {metric} has not improved for {bad_epochs} epoch(s); best epoch {best_epoch}"


def _batches(cfg: WorkerConfig, cached, train_shard, label_dtype, device, gen, epoch, average):
    """This epoch's training batches: a seeded permutation of the cached shard, or streamed from Ray Data.
    Returns (batches, cached) — the cache moves to the GPU on first use."""
    bs = cfg.batch_size
    if cached is not None:
        x_all, y_all = cached
        if device.type == "cuda" and x_all.device != device:
            x_all, y_all = x_all.to(device), y_all.to(device)
            cached = (x_all, y_all)
        if average is not None:
            average.steps_per_epoch = math.ceil(len(x_all) / bs)
        perm = torch.randperm(len(x_all), generator=gen).to(x_all.device)
        return ((x_all[perm[i:i + bs]], y_all[perm[i:i + bs]]) for i in range(0, len(x_all), bs)), cached
    return ((b[FEATURES_COLUMN], b[LABEL_COLUMN]) for b in train_shard.iter_torch_batches(
        batch_size=bs, dtypes={FEATURES_COLUMN: torch.float32, LABEL_COLUMN: label_dtype},
        device=device, local_shuffle_buffer_size=max(bs * 8, 1024), local_shuffle_seed=epoch)), cached


def best_to_save(best_state: Optional[dict], best_epoch: int, epoch: int, scored: torch.nn.Module) -> dict:
    """The best epoch's weights as a checkpoint stores them: when the epoch just run is the best (or none is yet),
    the scored model's own tensors rather than the copy kept of them. `torch.save` writes a storage once however
    often it is referenced, so a checkpoint at a new best (every one of a steadily improving run, and of a
    1-epoch fine-tune) holds the weights once rather than twice (MiniLM: 91 MB less each)."""
    if best_state is None or best_epoch == epoch + 1:
        return scored.state_dict()
    return best_state


def train_epoch(model, batches, optimizer, loss_fn, cfg: WorkerConfig, device, amp, *,
                average: Optional[WeightAverage] = None, gen: Optional[torch.Generator] = None,
                epoch: int = 0) -> dict:
    """One pass over `batches` of (x, y): forward, loss, backward, an optimizer step every `cfg.grad_accum`
    batches (and after the last) at the step's learning rate (`step_lr`), and the weight average. Pure PyTorch:
    the Ray Train loop below calls it once an epoch, and tests run it on tensors without Ray.

    Returns {"train_loss": mean loss per sample, "seen", "steps", "seconds", "compute_dtype": what autocast (on
    GPU) made of the forward pass, None when there was no batch}."""
    if cfg.augment is not None:
        from jobs.images import augment_batch
    t0 = time.perf_counter()
    total_loss, seen, steps, out = torch.zeros((), device=device), 0, 0, None
    accum = cfg.grad_accum
    # DDP reduces gradients in every backward pass; within an accumulation only the last one needs to.
    no_sync = getattr(model, "no_sync", contextlib.nullcontext)
    optimizer.zero_grad(set_to_none=True)
    batches = iter(batches)
    pending = next(batches, None)
    micro = 0
    while pending is not None:
        xb, yb = pending
        pending = next(batches, None)
        micro += 1
        stepping = micro == accum or pending is None
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        if cfg.augment is not None:  # train split only: validation never augments
            a = cfg.augment
            xb = augment_batch(xb, a.shape, a.hflip, a.random_crop, gen)
        with (contextlib.nullcontext() if stepping else no_sync()):
            with amp():
                out = model(xb)
                loss = loss_fn(out if cfg.task == "classification" else out.squeeze(1), yb)
            (loss / accum).backward()
        if stepping:
            for group in optimizer.param_groups:
                group["lr"] = step_lr(group.get("base_lr", cfg.lr), cfg, epoch,
                                      epoch * cfg.steps_per_epoch + steps)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if average is not None:
                average.update()
            steps += 1
            micro = 0
        total_loss += loss.detach() * len(xb)
        seen += len(xb)
    train_loss = float(total_loss) / max(seen, 1)   # waits for the GPU's queued work: the epoch's time includes it
    return {"train_loss": train_loss, "seen": seen, "steps": steps, "seconds": time.perf_counter() - t0,
            "compute_dtype": str(out.dtype).removeprefix("torch.") if out is not None else None}


# Where a one-worker run's train_loop_config carries its splits, read without Ray Train's DatasetManager.
DATASETS_KEY = "_datasets"
# Where the train_loop_config of a run started before its data was ready (`jobs.early`) carries the handle of the
# actor that hands the worker its real config once the driver has prepared the data.
HANDOFF_KEY = "_handoff"


def handed_config(config: dict) -> Optional[dict]:
    """The loop's config as given, or for a run started early (`jobs.early`) the one the driver hands over once
    its data is prepared; None when the driver gave the run up (its data could not be prepared).

    While it waits the worker builds one throwaway optimizer: the first optimizer of a process imports
    `torch._dynamo` (torch 2.13 wraps `Optimizer` methods in `torch._disable_dynamo`), 0.7-1 s on 2 cores that
    the real optimizer's construction would otherwise spend after the data arrives."""
    handoff = config.get(HANDOFF_KEY)
    if handoff is None:
        return config
    import ray

    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    return unwrap(ray.get(handoff.take.remote()))


def dataset_iterators(own: Optional[dict]) -> dict:
    """This worker's iterator of each split ("train", "val"): Ray Train's (`get_dataset_shard`), or in a
    one-worker run, which passes its splits and ingest options in `train_loop_config[DATASETS_KEY]`
    (`jobs.train.build_trainer`), the ones Ray Train's DatasetManager would have made, by the same public
    `DataConfig.configure`."""
    import ray.train

    if own is None:
        return {name: ray.train.get_dataset_shard(name) for name in ("train", "val")}
    return own["ingest"].configure(own["datasets"], world_size=1, worker_handles=None, worker_node_ids=None)[0]


def train_loop_per_worker(config: dict) -> None:
    """Runs in every Ray Train worker. All workers call `report` the same number of times (it is a barrier)."""
    import ray.train
    import ray.train.torch as rtt

    config = handed_config(config)
    if config is None:
        return                  # the driver gave up before the data was ready: there is nothing to train
    config = dict(config)
    own_data = config.pop(DATASETS_KEY, None)
    cfg = WorkerConfig.from_dict(config)
    _quiet_worker_logs()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = rtt.get_device()
    torch.manual_seed(cfg.seed)
    use_amp = device.type == "cuda"
    amp = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_amp else contextlib.nullcontext

    model = rtt.prepare_model(build_model(cfg.model))
    core = model.module if hasattr(model, "module") else model
    optimizer = _optimizer(cfg, param_groups(model, cfg))
    loss_fn = _loss_fn(cfg, device)
    mode, metric = cfg.early_stop_mode, cfg.early_stop_metric

    # With train.ema_epochs, validation (and so the best epoch and the bundle) sees the weight average.
    average = WeightAverage(core, cfg.ema_epochs) if cfg.ema_epochs else None
    scored = copy.deepcopy(core) if average is not None else core
    if average is not None and rank == 0:
        print(f"[train] validating the average of the weights over ~{cfg.ema_epochs:g} epoch(s) "
              "(train.ema_epochs)", flush=True)

    start_epoch, history, best, best_epoch, bad_epochs, best_state, best_val = 0, [], None, -1, 0, None, None
    resumes, compute_dtype = 0, None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        state, source, skipped = TrainState.load_newest(checkpoint.path, checkpoint.filesystem)
        core.load_state_dict(state.model)
        optimizer.load_state_dict(state.optimizer)
        if average is not None and state.average:
            average.restore(state.average)
        start_epoch, history = state.epoch + 1, state.history
        best, best_epoch, bad_epochs = state.best, state.best_epoch, state.bad_epochs
        best_state, best_val = state.best_state, state.best_val
        resumes = state.resumes + 1
        compute_dtype = state.compute_dtype
        if rank == 0:
            # A search runs several trials at once: which one resumed (after a --resume or a lost worker).
            who = f"[tune] {cfg.trial}" if cfg.trial else "[train]"
            print(f"{who} resumed from the checkpoint of epoch {state.epoch + 1}" + (
                f" ({source}): the newer one cannot be read ({'; '.join(skipped)})" if skipped else ""), flush=True)

    label_dtype = torch.long if cfg.task == "classification" else torch.float32
    shards = dataset_iterators(own_data)
    train_shard = shards["train"]
    x_val, y_val = _pull(shards["val"], label_dtype)
    cached = _pull(train_shard, label_dtype) if cfg.cache == "memory" else None
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + rank)

    saved_at = time.monotonic()      # train.checkpoint_every in seconds counts from here, then from each checkpoint
    for epoch in range(start_epoch, cfg.epochs):
        gen.manual_seed(cfg.seed * 7919 + rank * 104729 + epoch)
        lr_now = scheduled_lr(cfg.lr, cfg.lr_schedule, epoch, cfg.epochs)   # train_epoch sets each step's
        batches, cached = _batches(cfg, cached, train_shard, label_dtype, device, gen, epoch, average)
        done = train_epoch(model, batches, optimizer, loss_fn, cfg, device, amp, average=average, gen=gen,
                           epoch=epoch)
        train_time = done["seconds"]
        compute_dtype = done["compute_dtype"] or compute_dtype
        if average is not None:
            average.steps_per_epoch = average.steps_per_epoch or done["steps"]  # streamed: known after one epoch
            scored.load_state_dict(average.state)
        val = validate(scored, x_val, y_val, cfg, loss_fn, device, amp)
        value = val.get(metric)
        row = {"epoch": epoch + 1, "lr": lr_now, "train_loss": done["train_loss"],
               **M.scalar_metrics(val), "epoch_time_s": train_time,
               "train_samples_per_s": done["seen"] * world / train_time if train_time > 0 else 0.0}
        if device.type == "cuda":   # the most GPU memory this worker's tensors have held so far in the run
            row["gpu_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        stop = False
        if _improved(value, best, mode):
            best, best_epoch, bad_epochs = value, epoch + 1, 0
            best_state = {k: v.detach().cpu().clone() for k, v in scored.state_dict().items()}
            best_val = val
        else:
            bad_epochs += 1
            stop = cfg.patience is not None and bad_epochs >= cfg.patience
        save = checkpoint_due(cfg, epoch, time.monotonic() - saved_at, last=stop or epoch == cfg.epochs - 1)
        if world > 1:
            # Rank 0 decides both: float noise between workers (or their clocks) must never split the group,
            # which would be a DDP hang, or leave the ranks disagreeing about a checkpoint.
            flags = torch.tensor([int(stop), int(save)], device=device)
            torch.distributed.broadcast(flags, src=0)
            stop, save = bool(flags[0]), bool(flags[1])
        # best_<metric> is what the run would leave if it ended now (its best epoch); Tune ranks trials by it.
        # Until one epoch gives a number it carries this epoch's value (NaN), never nothing.
        row.update({"best_epoch": best_epoch, best_key(metric): best if best is not None else value,
                    "resumes": resumes})
        history.append(row)
        if rank == 0 and cfg.epoch_lines:
            print(_progress_line(row, cfg, metric), flush=True)
        metrics = {k: v for k, v in row.items() if v is not None}
        if save:
            with tempfile.TemporaryDirectory() as tmp:
                ckpt = None
                if rank == 0:
                    TrainState(model=core.state_dict(), optimizer=optimizer.state_dict(), epoch=epoch,
                               history=history, best=best, best_epoch=best_epoch, bad_epochs=bad_epochs,
                               best_state=best_to_save(best_state, best_epoch, epoch, scored),
                               best_val=best_val if best_state is not None else val,
                               average=average.snapshot() if average is not None else None, resumes=resumes,
                               compute_dtype=compute_dtype).save(tmp)
                    ckpt = ray.train.Checkpoint.from_directory(tmp)
                ray.train.report(metrics, checkpoint=ckpt)
            saved_at = time.monotonic()
        else:
            # Metrics only (every rank calls report either way: it is a barrier): Tune's schedulers and the
            # controller still see every epoch, and nothing is written.
            ray.train.report(metrics)
        if stop:
            # At the last epoch nothing was cut short: no line. Nor in a search (no epoch lines): its own line names
            # the trial ("[train] early stop" with two trials running said not whose).
            if rank == 0 and epoch < cfg.epochs - 1 and cfg.epoch_lines:
                print(_early_stop_line(metric, bad_epochs, best_epoch), flush=True)
            break
