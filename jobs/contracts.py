"""What crosses a boundary of training: prepared data (pipeline → train), the config a Ray Train worker
receives (driver → workers) and the state a checkpoint holds (workers → driver, tuning, a resumed run).

Each is one type here; the plain dicts that travel (Ray's `train_loop_config`, the `state.pt` checkpoint file)
are made and read only through their `to_dict`/`from_dict`.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any, Optional

import torch

from cluster.errors import Failure
from jobs.fitted import FittedPreprocessor


@dataclass
class PreparedData:
    """Everything training needs, computed once (`jobs.pipeline.prepare`): the ingest result, fitted
    preprocessing, packed splits. Tuning shares one across its trials, so every trial sees the same rows."""
    ingest: Any                   # jobs.ingest.IngestResult
    preprocessor: FittedPreprocessor
    train_ds: Any                 # ray.data.Dataset of {features, label}, materialized
    val_ds: Any
    test_raw: Any                 # raw test rows (not transformed): evaluated through the bundle's code path
    reference: dict = field(default_factory=dict)   # the train split's part of the bundle's profile (`jobs.profile`)
    encoder: Optional[dict] = None  # text: the encoder's config and pretrained folder (`jobs.text.Encoder.model_source`)

    @property
    def task(self) -> str:
        return self.preprocessor.task


@dataclass(frozen=True)
class Augment:
    """Train-split image augmentation (`data.augment`), applied per batch in the worker; never to evaluation."""
    shape: list[int]              # [channels, height, width] of one packed image row
    hflip: bool                   # random horizontal flips
    random_crop: int              # pad-and-crop by up to this many pixels; 0 = off


@dataclass(frozen=True)
class WorkerConfig:
    """What every Ray Train worker receives (built by `jobs.train.worker_config`): the spec's train section
    with a tuning trial's overrides applied, plus what preprocessing learned about the data. It travels as
    Ray's `train_loop_config` in its `to_dict()` form."""
    task: str                     # "classification" | "regression"
    model: dict                   # the model's constructor args (`jobs.model.model_config`), as the bundle keeps them
    epochs: int                   # epochs planned (the learning-rate schedule spans these, even if a run stops early)
    batch_size: int               # per worker
    lr: float                     # base learning rate (epoch 0 of the schedule); a text model's encoder's
    weight_decay: float
    optimizer: str                # "adamw" | "adam" | "sgd" (momentum 0.9)
    lr_schedule: str              # "constant" | "cosine" (by epoch: `jobs.worker.scheduled_lr`)
    loss: str                     # regression loss: "mse" | "huber"; classification always uses cross-entropy
    seed: int                     # seeds the weights, the shuffling and the augmentation of every worker
    cache: str                    # "memory": the shard is pulled into tensors once; "stream": from Ray Data each epoch
    output_dim: int               # classes (classification) or 1 (regression)
    label_center: float           # regression: the label was standardized; metrics are reported in its units
    label_scale: float
    early_stop_metric: str        # the validation metric that picks the best epoch (and stops early)
    early_stop_mode: str          # "min" | "max": which way `early_stop_metric` improves
    use_gpu: bool
    patience: Optional[int] = None              # stop after this many epochs without improvement; None: never
    class_weights: Optional[list[float]] = None  # per-class loss weights (train.class_weight: balanced)
    ema_epochs: Optional[float] = None          # validate the weights' moving average over ~this many epochs
    augment: Optional[Augment] = None
    head_lr: Optional[float] = None             # the head's base learning rate (model.head); None: lr
    warmup_steps: int = 0                       # optimizer steps over which the learning rate rises from 0
    steps_per_epoch: int = 1                    # optimizer steps of one epoch per worker (for warmup's count)
    grad_accum: int = 1                         # batches whose gradients add up before one optimizer step
    epoch_lines: bool = True      # rank 0 prints one [train] line per epoch; off when the caller reports epochs
                                  # itself (a tuning trial: the search prints one line per trial epoch)
    trial: Optional[str] = None   # the tuning trial this run is: its resume line names it ("[tune] ID resumed ...")
    checkpoint_epochs: Optional[int] = 1        # train.checkpoint_every in epochs: rank 0 checkpoints every N ...
    checkpoint_seconds: Optional[float] = None  # ... or in seconds since its last checkpoint (one of the two is set);
                                                # the last epoch run always checkpoints (`jobs.worker.checkpoint_due`)

    def to_dict(self) -> dict:
        """Plain data (what Ray's `train_loop_config` carries to the workers)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "WorkerConfig":
        fields = dict(data)
        if fields.get("augment") is not None:
            fields["augment"] = Augment(**fields["augment"])
        return cls(**fields)


STATE_FILE = "state.pt"      # the checkpoint file in each of a Train run's checkpoint folders
CHECKPOINT_PREFIX = "checkpoint_"   # Train V2 names them checkpoint_<timestamp>: name order is time order


class CheckpointError(Failure):
    """No checkpoint of a run can be read; the message names each one tried, its error, and what to do."""


@dataclass
class TrainState:
    """What a checkpoint holds (written by rank 0 at the end of an epoch, as train.checkpoint_every says, and always
    after the last one): enough to resume the run where it stopped, and to export its best epoch without the
    workers (`fit`, tuning's best trial).

    Stored with `torch.save(state.to_dict())` as plain dicts, lists, numbers and tensors, so that it loads
    with `torch.load(weights_only=True)` (no pickle of our classes)."""
    model: dict                   # the live weights at the end of `epoch`
    optimizer: dict               # the optimizer's state_dict
    epoch: int                    # 0-based index of the epoch this checkpoint ends
    history: list[dict]           # one row per epoch run so far: what each epoch reported
    best: Optional[float]         # best value of the early-stop metric so far; None until an epoch gives a number
    best_epoch: int               # 1-based epoch of `best` (-1 before any)
    bad_epochs: int               # epochs since the last improvement (patience counts these)
    best_state: dict              # the weights validated at `best_epoch` (what the bundle holds)
    best_val: dict                # the validation metrics of `best_epoch`
    average: Optional[dict] = None   # `WeightAverage.snapshot()` with train.ema_epochs, else None
    resumes: int = 0              # how many times the run was resumed from a checkpoint
    compute_dtype: Optional[str] = None  # dtype of the training forward pass ("bfloat16" under autocast on GPU)

    def to_dict(self) -> dict:
        # Not dataclasses.asdict: that deep-copies every tensor of both state dicts.
        return {f.name: getattr(self, f.name) for f in dataclass_fields(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "TrainState":
        return cls(**data)

    def save(self, directory: str | os.PathLike) -> Path:
        path = Path(directory) / STATE_FILE
        torch.save(self.to_dict(), path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TrainState":
        """A `state.pt` file, or a checkpoint folder holding one."""
        path = Path(path)
        if path.is_dir():
            path = path / STATE_FILE
        return cls.from_dict(torch.load(path, map_location="cpu", weights_only=True))

    @classmethod
    def load_newest(cls, checkpoint: str, filesystem: Any = None) -> tuple["TrainState", str, list[str]]:
        """The state of checkpoint folder `checkpoint` (a path on `filesystem`, a pyarrow filesystem: local by
        default, or where Ray Train keeps the run), or, when its state file cannot be read, of the newest earlier
        checkpoint of the same run that can be. A checkpoint is cut short by a full disk, a storage error or a
        kill while it was copied; Ray Train keeps the one before it (CheckpointConfig(num_to_keep=2)), so the run
        loses the epochs since then rather than all of them.

        Returns (state, the folder it came from, one line per checkpoint skipped: its path and error). Raises
        CheckpointError naming every folder tried when none can be read."""
        import io

        import pyarrow.fs as pafs

        fs = filesystem or pafs.LocalFileSystem()
        checkpoint = checkpoint.rstrip("/")
        run, _, name = checkpoint.rpartition("/")
        listing = fs.get_file_info(pafs.FileSelector(run, allow_not_found=True)) if run else []
        earlier = sorted((i.path for i in listing if i.type == pafs.FileType.Directory
                          and i.base_name.startswith(CHECKPOINT_PREFIX) and i.base_name < name), reverse=True)
        skipped = []
        for folder in [checkpoint] + earlier:
            try:
                with fs.open_input_file(f"{folder}/{STATE_FILE}") as f:
                    data = f.read()
                state = cls.from_dict(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))
            except Exception as exc:  # truncated zip, missing file, unpickling refusal, fields of another version
                skipped.append(f"{folder}: {type(exc).__name__}: {(str(exc).strip() or '-').splitlines()[0]}")
                continue
            return state, folder, skipped
        raise CheckpointError(
            f"no checkpoint of the run at {run or checkpoint} can be read, so it cannot go on from one "
            f"({'; '.join(skipped)}): train again under another run name or output folder")
