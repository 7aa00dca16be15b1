"""Training on Ray Train V2 (TorchTrainer, DDP): the driver's side. `fit(spec, prepared, ...)` trains once on
data `jobs.pipeline.prepare` prepared; every worker runs `jobs.worker.train_loop_per_worker`.

Tuning calls `fit` once per trial on the same `PreparedData`, so every trial sees the identical split and
fitted preprocessing. What a caller changes about a run goes through `configure` (the worker config, e.g. a
trial's overrides), `callbacks` (Ray Train's) and `trainer` (what builds the Ray Train trainer, e.g. one that
leaves placement groups to the caller, or wraps the loop in a test); `fit` itself has no per-caller flags.
"""
from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from cluster import ray_compat
from cluster.errors import Failure
from jobs.contracts import CHECKPOINT_PREFIX, Augment, CheckpointError, PreparedData, TrainState, WorkerConfig
from jobs.fits import check_resources, resolve_use_gpu
from jobs.fitted import FittedPreprocessor
from jobs.model import model_config
from jobs.text_model import text_model_config
from jobs.spec import JobSpec, SpecError, metric_mode, task_problem, train_task_problems
from jobs.worker import DATASETS_KEY, train_loop_per_worker

__all__ = ["TrainError", "TrainOutcome", "configure", "worker_config", "fit", "build_trainer", "default_trainer",
           "last_state", "resolve_use_gpu", "check_resources", "class_weights", "summary_table", "POLL_ENV",
           "PREEMPTION_ENV", "controller_poll_s", "mlp_flops", "epoch_floor_s", "run_epoch_floor_s",
           "ingest_options", "run_loop_config", "run_trainer", "start_line", "outcome_of", "controller_env",
           "worker_error"]

# How often Ray Train V2's controller polls its workers (its default is 2 s). Ray Train's fit() copies this
# variable from the os.environ of the process that calls it (the driver: our CLI, a job's entrypoint, a tuning
# trial) into the controller's runtime_env, which reads it once; so `fit` sets it around `trainer.fit()`.
POLL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
PREEMPTION_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
# The start of the deprecation warning Ray 2.60's own `DataConfig.default_ingest_options()` raises (`ingest_options`).
EXCLUDE_RESOURCES_WARNING = r"`ExecutionOptions\.exclude_resources` is deprecated"

# Builds the Ray Train trainer: called as TorchTrainer is, `trainer(loop, train_loop_config=..., scaling_config=...,
# datasets=..., dataset_config=..., run_config=...)`.
TrainerFactory = Callable[..., Any]


class TrainError(Failure):
    """Training could not run or did not finish; the message says why and what to change."""


@dataclass
class TrainOutcome:
    """A finished run, as the bundle needs it: the best epoch's weights and metrics, and how it ran."""
    best_state: dict             # state dict of the best epoch (CPU tensors)
    history: list[dict]
    best_epoch: int
    val_metrics: dict            # validation metrics of the best epoch
    run_path: str                # where Ray Train stored the run (checkpoints)
    config: WorkerConfig         # what the workers were given

    @property
    def model_config(self) -> dict:
        return self.config.model

    @property
    def use_gpu(self) -> bool:
        return self.config.use_gpu

    @classmethod
    def from_state(cls, state: TrainState, config: WorkerConfig, run_path: str) -> "TrainOutcome":
        """The outcome a run's last checkpoint describes (read back by `fit`, and by tuning for its best trial)."""
        return cls(best_state=state.best_state, history=state.history, best_epoch=state.best_epoch,
                   val_metrics=state.best_val, run_path=str(run_path), config=config)


def class_weights(pre: FittedPreprocessor, how: str, train_counts: Optional[dict]) -> Optional[list[float]]:
    """Per-class loss weights, inverse to each class's rows in the train split (ingest's `class_counts["train"]`,
    {str(class): rows}, every kind alike: an image preprocessor fits pixels only, and `class_weight: balanced`
    failed there with a KeyError), in `pre.classes` order."""
    if pre.task != "classification" or how != "balanced":
        return None
    counts = np.array([(train_counts or {}).get(str(c), 0) for c in pre.classes], dtype=np.float64)
    return (counts.sum() / (len(counts) * np.maximum(counts, 1))).tolist()


def worker_config(spec: JobSpec, prepared: PreparedData, *, use_gpu: bool,
                  overrides: Optional[dict] = None) -> WorkerConfig:
    """What every worker receives: the spec's train section, overridden (by Tune) where given."""
    pre = prepared.preprocessor
    overrides = overrides or {}
    t = spec.train.model_copy(update={k: v for k, v in overrides.items() if k in type(spec.train).model_fields})
    es = t.early_stop
    metric = es.metric if es else "val_loss"
    # The spec was checked against the data's label before (jobs.precheck); the fitted classes are the last word.
    problems = [task_problem(metric, "train.early_stop.metric", pre.task, pre.classes, label=pre.label),
                *train_task_problems(t.loss, t.class_weight, pre.task, f" (label {pre.label!r}, inferred)"
                                     if spec.data.task is None else "")]
    if any(problems):
        raise SpecError([p for p in problems if p])
    rows = prepared.ingest.split_rows["train"]
    shard_mb = rows / t.workers * (pre.feature_dim * 4 + 8) / 2**20
    cache = t.cache if t.cache != "auto" else ("memory" if shard_mb <= t.cache_limit_mb else "stream")
    model_spec = spec.model.model_copy(update={k: v for k, v in overrides.items() if k in ("dropout", "hidden")})
    shape = pre.shape
    aug = spec.data.augment
    augment = (Augment(shape=list(shape), hflip=aug.hflip, random_crop=aug.random_crop)
               if aug is not None and shape is not None and (aug.hflip or aug.random_crop) else None)
    if prepared.encoder is not None:      # a text job: its encoder's config and weights
        model = text_model_config(model_spec, pre, prepared.encoder, gradient_checkpointing=t.gradient_checkpointing)
    else:
        model = model_config(model_spec, pre.feature_dim, pre.output_dim, shape)
    steps_per_epoch = math.ceil(math.ceil(rows / t.workers) / t.batch_size / t.grad_accum)
    return WorkerConfig(
        task=pre.task, model=model,
        epochs=t.epochs, batch_size=t.batch_size, lr=t.lr, weight_decay=t.weight_decay, optimizer=t.optimizer,
        lr_schedule=t.lr_schedule, loss=t.loss, seed=t.seed, cache=cache, output_dim=pre.output_dim,
        label_center=pre.label_center, label_scale=pre.label_scale, early_stop_metric=metric,
        early_stop_mode=es.resolved_mode if es else metric_mode(metric), use_gpu=use_gpu,
        patience=es.patience if es else None,
        class_weights=class_weights(pre, t.class_weight, prepared.ingest.class_counts.get("train")),
        ema_epochs=t.ema_epochs, augment=augment, checkpoint_epochs=t.checkpoint_cadence[0],
        checkpoint_seconds=t.checkpoint_cadence[1], head_lr=t.head_lr,
        warmup_steps=round(t.warmup * steps_per_epoch * t.epochs), steps_per_epoch=steps_per_epoch,
        grad_accum=t.grad_accum)


def configure(spec: JobSpec, prepared: PreparedData, *, overrides: Optional[dict] = None) -> WorkerConfig:
    """Check that the connected cluster can hold the run, and build its worker config (GPU or not, as the spec
    and the cluster say). `overrides` (lr, batch_size, weight_decay, dropout, hidden, epochs, early_stop...)
    replace the spec's values for this run only: a tuning trial's sampled config."""
    return worker_config(spec, prepared, use_gpu=check_cluster(spec), overrides=overrides)


def check_cluster(spec: JobSpec) -> bool:
    """ClusterTooSmall unless the connected cluster can hold the spec's run; whether it trains on GPUs."""
    from cluster import describe_resources

    resources = describe_resources()
    check_resources(spec, resources)
    return resolve_use_gpu(spec.train.use_gpu, spec.train.workers, resources)


def default_trainer(spec: JobSpec, *, placement_cleaner: bool) -> TrainerFactory:
    """The Ray Train trainer class of the spec's runs (`cluster.ray_compat.trainer_class`): TorchTrainer for
    several workers (DDP needs its process group); for one worker Ray Train's plain DataParallelTrainer, which
    sets up no process group and whose controller never imports torch (one worker has no gradients to share:
    `prepare_model` leaves its model unwrapped either way). `placement_cleaner`: keep Ray Train's per-run cleaner
    of placement groups (`ray_compat.trainer_class` says when it is not needed)."""
    return ray_compat.trainer_class(torch_backend=spec.train.workers > 1, placement_cleaner=placement_cleaner)


def ingest_options():
    """Ray Train's default ingest options (`DataConfig.default_ingest_options()`: this driver's DataContext), less
    the warning Ray 2.60 raises from inside that method. It copies `ExecutionOptions.exclude_resources`, which
    the same release deprecated (ray-project/ray#64632), so it warns on every call, and every one-worker
    `trainyard train` printed Ray's RayDeprecationWarning to a user who can do nothing about it. Only that one
    warning, matched by its text, is silenced; tests/test_train_contracts.py fails when Ray stops raising it."""
    import warnings

    from ray.train import DataConfig

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=EXCLUDE_RESOURCES_WARNING)
        return DataConfig.default_ingest_options()


def build_trainer(spec: JobSpec, prepared: PreparedData, config: WorkerConfig, *, storage_path: str,
                  run_name: str, callbacks: Optional[list] = None, trainer: Optional[TrainerFactory] = None,
                  embedded: Optional[bool] = None):
    """The Ray Train trainer of one run (not started). `trainer` builds it (default: `default_trainer`, less its
    placement-group cleaner on embedded Ray). `embedded`: the run is on the local Ray this process started
    (default: `cluster.is_embedded()`)."""
    from ray.train import DataConfig

    loop_config = run_loop_config(spec, prepared, config)
    datasets, dataset_config = None, None
    if spec.train.workers > 1:
        # Every worker scores the whole validation split, so all ranks agree on the best epoch; the train split is
        # split between the workers (Ray Train's DatasetManager and SplitCoordinator actors).
        datasets = {"train": _train_split(spec, prepared, config), "val": prepared.val_ds}
        dataset_config = DataConfig(datasets_to_split=["train"])
    return run_trainer(spec, loop_config, use_gpu=config.use_gpu, storage_path=storage_path, run_name=run_name,
                       callbacks=callbacks, trainer=trainer, embedded=embedded, datasets=datasets,
                       dataset_config=dataset_config)


def run_loop_config(spec: JobSpec, prepared: PreparedData, config: WorkerConfig) -> dict:
    """What `train_loop_per_worker` receives: the worker config, and in a one-worker run its splits too.

    One worker reads both splits whole: nothing to coordinate, yet Ray Train would start a DatasetManager actor
    (a Python process, ~1.7 CPU-s on 2 cores) only to hand it `ds.iterator()`. The worker builds the same
    iterators with the same public `DataConfig.configure`, with this driver's ingest options
    (`jobs.worker.dataset_iterators`), and `ray_compat.trainer_class` leaves the unused callback out."""
    from ray.train import DataConfig

    loop_config = config.to_dict()
    if spec.train.workers == 1:
        loop_config[DATASETS_KEY] = {
            "datasets": {"train": _train_split(spec, prepared, config), "val": prepared.val_ds},
            "ingest": DataConfig(datasets_to_split=[], execution_options=ingest_options())}
    return loop_config


def _train_split(spec: JobSpec, prepared: PreparedData, config: WorkerConfig):
    """The train split as the workers read it: streamed, in a seeded random order of its blocks."""
    if config.cache == "stream":
        return prepared.train_ds.randomize_block_order(seed=spec.train.seed)
    return prepared.train_ds


def run_trainer(spec: JobSpec, loop_config: dict, *, use_gpu: bool, storage_path: str, run_name: str,
                callbacks: Optional[list] = None, trainer: Optional[TrainerFactory] = None,
                embedded: Optional[bool] = None, datasets: Optional[dict] = None, dataset_config=None):
    """The Ray Train trainer of `train_loop_per_worker` with `loop_config`, as the spec's train section scales,
    stores and retries it (`build_trainer`; `jobs.early` gives a loop config that waits for the data)."""
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig

    from cluster import is_embedded

    embedded = is_embedded() if embedded is None else embedded
    if trainer is None:
        # Ray Train's cleaner is a detached actor that gives back the run's placement group if the driver dies
        # while the cluster lives on; embedded Ray dies with its driver, placement groups and all. Measured on
        # 2 cores (1 worker, trivial loop, median of 6): trainer.fit() 5.84 s with it, 4.99 s without.
        trainer = default_trainer(spec, placement_cleaner=not embedded)
    return trainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=spec.train.workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": spec.train.cpus_per_worker}),
        datasets=datasets,
        dataset_config=dataset_config,
        run_config=RunConfig(name=run_name, storage_path=storage_path,
                             failure_config=FailureConfig(max_failures=spec.train.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2),
                             callbacks=callbacks or None,
                             logging_config=LoggingConfig(log_level="WARNING"),
                             worker_runtime_env={"env_vars": {"PYTHONUNBUFFERED": "1",
                                                                 # plain prints: Train would log each twice
                                                                 "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}}),
    )


PRETRAINED_POLL_S = 0.25
# The longest interval a run gets for its epochs' length alone (`controller_poll_s`), and what a floor under an
# epoch's time on a CPU worker is made of (`epoch_floor_s`). Every batch costs at least BATCH_FLOOR_S of eager
# PyTorch: the cheapest batch of `jobs.worker.train_epoch` measured on this 2-core host, one thread, is 0.146 ms (a
# linear model, SGD, a batch inside a gradient accumulation: no optimizer step; 0.23 ms with one, 0.29-0.43 ms
# with AdamW or a hidden layer). Every row costs an MLP's training flops (`mlp_flops`) at no more than CPU_FLOPS per
# thread (measured here: 25 GFLOP/s a core at batch 4096). Both are about 3x (batches) and 20x (flops) under this
# host's figures, so that a faster CPU's epochs still outlast the floor; one more than ~3x faster could wait.
LONG_POLL_S = 0.25
BATCH_FLOOR_S = 5e-5
CPU_FLOPS = 5e11


def pretrained_encoder(spec: JobSpec) -> bool:
    """Whether the spec fine-tunes a pretrained encoder (text or image), not a network trained from scratch."""
    from jobs.text import SCRATCH
    return spec.model.kind in ("text", "image") and spec.model.encoder not in (None, SCRATCH)


def mlp_flops(model: Optional[dict]) -> int:
    """The flops of one row's training pass through an MLP given by its constructor args (`jobs.model.model_config`):
    per weight and bias, 2 forward and 2 for its gradient, and 2 more for the input's gradient in every layer but
    the first; 0 for other kinds."""
    if not model or model.get("kind", "mlp") != "mlp":
        return 0
    dims = [int(model.get("input_dim") or 1), *(int(h) for h in model.get("hidden") or []),
            int(model.get("output_dim") or 1)]
    return sum((4 if i == 0 else 6) * (a * b + b) for i, (a, b) in enumerate(zip(dims, dims[1:])))


def epoch_floor_s(rows: int, batch_size: int, model: Optional[dict], cpus: float, use_gpu: bool) -> float:
    """A floor under the time one worker's epoch over `rows` train rows takes (seconds): its batches at
    BATCH_FLOOR_S each, plus an MLP's flops (`mlp_flops`) at CPU_FLOPS per thread of the worker (its `cpus`, or
    more where OMP_NUM_THREADS is exported here: Ray leaves a value it finds). Other kinds: the batches alone. 0 on
    a GPU, whose steps can be shorter than any floor kept here."""
    if use_gpu or rows <= 0:
        return 0.0
    batches = math.ceil(rows / max(int(batch_size), 1))
    omp = os.environ.get("OMP_NUM_THREADS", "")
    threads = max(float(cpus), float(omp) if omp.isdigit() else 1.0, 1.0)
    return batches * BATCH_FLOOR_S + rows * mlp_flops(model) / (CPU_FLOPS * threads)


def run_epoch_floor_s(spec: JobSpec, prepared: PreparedData, config: WorkerConfig) -> float:
    """`epoch_floor_s` of a run of `spec` on `prepared` whose workers get `config` (a trial's batch size is its own)."""
    rows = math.ceil(prepared.ingest.split_rows["train"] / max(spec.train.workers, 1))
    return epoch_floor_s(rows, config.batch_size, config.model, spec.train.cpus_per_worker, config.use_gpu)


def controller_poll_s(workers: int, pretrained: bool = False, epoch_floor: float = 0.0) -> float:
    """The controller's poll interval for a run of `workers` workers (seconds): 0.02 s per worker, at most 1 s;
    longer, up to LONG_POLL_S, where a worker's epoch takes at least `epoch_floor` s (`epoch_floor_s`);
    PRETRAINED_POLL_S at least for a pretrained encoder (`pretrained`).

    A worker's `ray.train.report` puts its row in a queue of one that only the controller's poll empties, so a
    run reports at most once an interval: at Ray's default of 2 s every short epoch cost 2 s. The same interval
    is how soon a dead worker is noticed; a late poll is only a later check (a worker is declared hung after
    RAY_TRAIN_WORKER_HEALTH_CHECK_TIMEOUT_S, 600 s). Measured on 2 cores (Ray 2.60), 100 epochs of ~6 ms on
    1 worker: 2.02 s an epoch at 2 s, 54 ms at 0.05 s, 23 ms at 0.02 s, 20 ms at 0.01 s (the rest of a
    report's path). Each poll costs about 1 ms of CPU in every worker and 0.9 ms + 0.3 ms per worker in the
    controller (idle loop; at 0.02 s: 3.5 % of a core per worker and 4-7 % for the controller of 1-3 workers;
    at 0.05 s: 2.5 % and 3-4 %; at 2 s: 0.6 %). So the knee, 0.02 s, for one worker, and an interval that
    grows with the group, so that the controller's share stays near 5 % of its core (32 workers at 0.02 s
    would take half of it), never above 1 s.

    An epoch that outlasts the interval does not wait for a poll (its report was taken before the next one is
    made); one shorter than the interval waits the difference every epoch (20,000 rows, ~94 ms epochs, 100
    epochs: 23.0 s at 0.02 s, 22.4 s at 0.1 s, 38.3 s at 0.25 s). The run's end waits for one poll, as before. Polls
    under a long epoch take CPU and the GIL from it: `train_throughput.py`'s table (140,002 train rows, epochs of
    0.5-1 s on 2 cores), ten rounds on one warm Ray, the worker's steady rate at 0.02 s was below that at 0.05, 0.1
    and 0.25 s in 8 of 10 each (medians 198k against 231k, 207k, 246k samples/s; `benchmarks/RESULTS.md`). Hence an
    interval up to a floor under the epoch (`epoch_floor_s`), which that table puts at ~0.035 s.

    A pretrained encoder's epoch takes seconds to hours (a MiniLM step of batch 32 ~0.7 s on 2 cores), so a
    report waiting up to 0.25 s costs it nothing, while 50 polls a second take CPU from the training itself:
    `benchmarks/text_speed.py`, back to back on a quiet machine, trainyard 0.91x the plain loop at 0.02 s and
    1.03x at 0.25 s."""
    fast = min(0.02 * max(workers, 1), 1.0)
    poll = max(fast, min(epoch_floor, LONG_POLL_S))
    return max(poll, PRETRAINED_POLL_S) if pretrained else poll


@contextlib.contextmanager
def controller_env(workers: int, embedded: bool, pretrained: bool = False, epoch_floor: float = 0.0):
    """The environment the Ray Train run started inside gets from this process (Ray Train's fit() copies these
    variables into its controller's runtime_env): the poll interval (`controller_poll_s`) and, on embedded Ray,
    no preemption watcher (an actor process per run that polls Ray for nodes being drained: none of ours ever
    is; measured, it costs a run's start under 0.1 s on a quiet machine, ~0.5 s on a loaded one). Ray Train's
    metrics (RAY_TRAIN_METRICS_ENABLED) stay on: turning them off saved nothing measurable. A
    variable the user exported is theirs and stays as it is; the ones set here are removed afterwards. Yields
    what the run gets."""
    wanted = {POLL_ENV: f"{controller_poll_s(workers, pretrained, epoch_floor):g}"}
    if embedded:
        wanted[PREEMPTION_ENV] = "0"
    ours = {k: v for k, v in wanted.items() if k not in os.environ}
    os.environ.update(ours)
    try:
        yield {k: os.environ[k] for k in wanted}
    finally:
        for k in ours:
            os.environ.pop(k, None)


def fit(spec: JobSpec, prepared: PreparedData, *, storage_path: str, run_name: str,
        config: Optional[WorkerConfig] = None, callbacks: Optional[list] = None,
        progress: Callable[[str], None] = print, trainer: Optional[TrainerFactory] = None) -> TrainOutcome:
    """Train once, stored under `storage_path`/`run_name` (a run already there resumes from its checkpoint).

    `config`: what the workers receive (default `configure(spec, prepared)`; tuning passes a trial's).
    `callbacks` go to Ray Train's RunConfig; `trainer` builds the Ray Train trainer (`build_trainer`).
    The controller polls its workers every `controller_poll_s` seconds for the spec's workers, encoder and the
    epoch's floor (`epoch_floor_s` of the train rows per worker and `config`), or $RAY_TRAIN_HEALTH_CHECK_INTERVAL_S
    when the environment sets it (`controller_env`)."""
    from cluster import is_embedded

    config = config or configure(spec, prepared)
    progress(start_line(spec, config, prepared))
    embedded = is_embedded()
    run = build_trainer(spec, prepared, config, storage_path=storage_path, run_name=run_name, callbacks=callbacks,
                        trainer=trainer, embedded=embedded)
    floor = run_epoch_floor_s(spec, prepared, config)
    output = folder_id(storage_path)
    try:
        with controller_env(spec.train.workers, embedded, pretrained_encoder(spec), floor):
            result = run.fit()
    except Exception as exc:
        raise train_failure(exc, storage_path, run_name, output) from exc
    return outcome_of(result, config, progress)


def folder_id(storage_path: str) -> Optional[tuple[int, int]]:
    """(device, inode) of the folder holding a run's storage (the output folder), None for a URI or none there."""
    try:
        st = os.stat(os.path.dirname(os.path.abspath(storage_path.rstrip("/"))))
    except OSError:
        return None
    return None if "://" in storage_path else (st.st_dev, st.st_ino)


def train_failure(exc: BaseException, storage_path: str, run_name: str, output: Optional[tuple]) -> TrainError:
    """The TrainError of a failed run; `output`: `folder_id` at its start. The output folder removed mid-run was
    said as Ray's "A local path on the head node is not accessible by worker nodes", after two retries."""
    if output is not None and folder_id(storage_path) != output:
        folder = os.path.dirname(os.path.abspath(storage_path.rstrip("/")))
        return TrainError(f"training failed: the output folder {folder} was removed (or replaced) while the run "
                          f"trained, its checkpoints with it (Ray said: {worker_error(exc)}). Leave the output "
                          "folder in place while a run writes to it, and run again")
    return TrainError(f"training failed: {worker_error(exc)}. The run is at {storage_path}/{run_name}")


def start_line(spec: JobSpec, config: WorkerConfig, prepared: Optional[PreparedData] = None) -> str:
    """The run's first line; with `prepared`, a batch larger than a worker's share of the train rows is said (each
    epoch is then one smaller step: the batch size the user set is not the one trained with)."""
    line = (f"[train] {spec.train.workers} worker(s) on {'GPU' if config.use_gpu else 'CPU'}, "
            f"{config.epochs} epoch(s), batch {config.batch_size}, lr {config.lr:g}"
            + (f" (head {config.head_lr:g})" if config.head_lr is not None else "")
            + (f", loss {config.loss}" if config.task == "regression" else "") + f", shard in {config.cache}")
    if spec.model.encoder == "scratch":
        line += "; a transformer trained from scratch (model.scratch)"
    elif spec.model.encoder:     # a pretrained text or image encoder: which one, and how much of it trains
        frozen = spec.model.freeze_layers
        line += (f"; encoder {spec.model.encoder}"
                 + (f", its embeddings and first {frozen} layer(s) frozen" if frozen else ", fine-tuned whole"))
    if prepared is not None:
        rows = math.ceil(prepared.ingest.split_rows["train"] / max(spec.train.workers, 1))
        if config.batch_size > rows:
            line += (f" (the batch is more than the {rows} train row(s) per worker: one step of {rows} an epoch; "
                     "lower train.batch_size for more steps)")
    return line


def outcome_of(result, config: WorkerConfig, progress: Callable[[str], None]) -> TrainOutcome:
    """The outcome of a finished Ray Train run (its `Result`); TrainError when it failed or left no checkpoint."""
    if result.error is not None:
        raise TrainError(f"training failed: {worker_error(result.error)}")
    if result.checkpoint is None:
        raise TrainError("training finished without a checkpoint (no epoch completed)")
    state, source, skipped = TrainState.load_newest(result.checkpoint.path, result.checkpoint.filesystem)
    if skipped:
        progress(f"[train] the run's last checkpoint cannot be read ({'; '.join(skipped)}): its result is the "
                 f"checkpoint of epoch {state.epoch + 1} ({source})")
    if config.epoch_lines and state.history:      # the workers' last line first, then what the caller prints
        from cluster.quiet import await_worker_line
        last = state.history[-1]["epoch"]
        stopped = config.patience is not None and state.bad_epochs >= config.patience and last < config.epochs
        await_worker_line("[train] early stop" if stopped else f"[train] epoch {last}/{config.epochs} ")
    return TrainOutcome.from_state(state, config, result.path)


def last_state(train_run: Path) -> Optional[TrainState]:
    return read_state(train_run)[0]     # the newest checkpoint's: every epoch's row, the best epoch, its weights


def read_state(train_run: Path) -> tuple[Optional[TrainState], list[str], Optional[str]]:
    """`last_state`, with what it passed over: (the state or None, a line per checkpoint skipped as unreadable,
    why none could be read or None). One cut short by a kill: the one before it is whole."""
    train_run = Path(train_run)
    newest = max((p for p in train_run.glob(CHECKPOINT_PREFIX + "*") if p.is_dir()), default=None)
    if newest is None:
        return None, [], f"{train_run} holds no checkpoint"
    try:
        state, _, skipped = TrainState.load_newest(str(newest))
        return state, skipped, None
    except CheckpointError as exc:
        return None, [], str(exc)


def worker_error(exc: BaseException) -> str:
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
