"""The `model` and `train` sections: the network, and how it is trained (early stopping included)."""
from __future__ import annotations

import re
from typing import Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from jobs.spec.base import StrictModel
from jobs.spec.metric_registry import METRICS, metric_mode, mode_problem, unknown_metric_problem


class ScratchSpec(StrictModel):
    """The transformer `model.encoder: scratch` trains from nothing (a BERT of this size), with a WordPiece
    tokenizer fitted on the train split only."""

    layers: int = Field(4, ge=1, le=48, description="Transformer layers.")
    hidden: int = Field(256, ge=8, description="Hidden size (a multiple of heads).")
    heads: int = Field(4, ge=1, description="Attention heads.")
    vocab_size: int = Field(8000, ge=100, description="Most tokens the fitted WordPiece vocabulary holds.")

    @model_validator(mode="after")
    def _heads_divide(self):
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads})")
        return self


class ModelSpec(StrictModel):
    kind: Literal["mlp", "cnn", "text", "image"] = Field(
        "mlp", description="mlp: tabular MLP; cnn: conv blocks + MLP head (images); text: a transformer encoder "
                           "over data.features.text (beside any table columns) + an MLP head; image: a pretrained "
                           "vision backbone (model.encoder: ViT, ConvNeXt, ResNet...) + an MLP head.")
    encoder: Optional[str] = Field(
        None, description="text: a Hugging Face model id in the local cache, a local model folder (config.json, "
                          "weights, tokenizer files), or 'scratch' (a small transformer trained from nothing, "
                          "sized by model.scratch). image: a vision model's id or folder (ViT, ConvNeXt, ResNet..., "
                          "with its preprocessor_config.json). Never downloaded.")
    pooling: Literal["mean", "cls"] = Field(
        "mean", description="text (and image transformers such as ViT): the sequence vector the head sees: the "
                            "mean over the tokens, or the first ([CLS]) token's.")
    freeze_layers: int = Field(0, ge=0, description="text, image: freeze the embeddings and the first N encoder "
                                                    "layers (stages of a convolutional backbone; 0: fine-tune "
                                                    "everything).")
    scratch: ScratchSpec = Field(default_factory=ScratchSpec, description="text: the size of a scratch encoder.")
    channels: list[int] = Field(default_factory=lambda: [32, 64], description="cnn: output channels per conv block.")
    pool: int = Field(4, ge=1, le=16, description="cnn: the last feature map is average-pooled to pool x pool cells "
                                                  "for the head, which so sees where things are (1: global average "
                                                  "pooling, which loses it).")
    hidden: list[int] = Field(default_factory=lambda: [128, 64], description="Hidden layer widths.")
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    activation: Literal["relu", "gelu", "silu", "tanh"] = "relu"

    @model_validator(mode="before")
    @classmethod
    def _head(cls, data):
        """`head: {hidden, dropout}` (the issue's spelling for a text model's head) is `hidden` and `dropout`:
        one place for them, so tuning's dropout/hidden axes change the head of any kind of model."""
        if isinstance(data, dict) and "head" in data:
            data = dict(data)
            head = data.pop("head")
            if not isinstance(head, dict) or set(head) - {"hidden", "dropout"}:
                raise ValueError("head takes {hidden: [widths], dropout: fraction}")
            both = sorted(k for k in head if k in data)
            if both:
                raise ValueError(f"give {', '.join(both)} once: in model.head or in model, not both")
            data.update(head)
        return data

    @model_validator(mode="after")
    def _encoder_for_text(self):
        if self.kind == "text" and not self.encoder:
            raise ValueError("kind text needs an encoder: a Hugging Face id in the local cache, a model folder, "
                             "or scratch")
        if self.kind == "mlp" and self.encoder:
            raise ValueError("encoder is for kind: text; remove it or set kind: text")
        return self

    @model_validator(mode="after")
    def _encoder_for_image(self):
        if self.kind == "image" and not self.encoder:
            raise ValueError("kind image fine-tunes a pretrained vision backbone: set model.encoder to a Hugging "
                             "Face id in the local cache or a model folder (or use kind: cnn to train from scratch)")
        if self.kind == "cnn" and self.encoder:
            raise ValueError("kind cnn trains from scratch; for a pretrained backbone in model.encoder use kind: image")
        if self.kind == "image" and self.encoder == "scratch":
            raise ValueError("encoder: scratch trains a text encoder (kind: text); to train an image model from "
                             "nothing use kind: cnn, or give kind image a pretrained backbone's folder or id")
        return self

    @field_validator("hidden", "channels")
    @classmethod
    def _positive(cls, v):
        if any(h <= 0 for h in v):
            raise ValueError(f"sizes must be positive integers, got {v}")
        return v


class EarlyStopSpec(StrictModel):
    metric: str = Field("val_loss", description=f"A validation metric: {', '.join(METRICS)} (val_auc: binary "
                                                  "labels only). The run keeps its best epoch by it.")
    patience: int = Field(5, ge=1, description="Epochs without improvement before stopping.")
    mode: Optional[Literal["min", "max"]] = Field(None, description="Inferred from the metric when omitted.")

    @field_validator("metric")
    @classmethod
    def _known(cls, v):
        problem = unknown_metric_problem(v)
        if problem:
            raise ValueError(problem)
        return v

    @property
    def resolved_mode(self) -> str:
        return self.mode or metric_mode(self.metric)

    @model_validator(mode="after")
    def _mode_agrees(self):
        problem = mode_problem(self.metric, self.mode, "train.early_stop.mode")
        if problem:
            raise ValueError(problem)
        return self


class TrainSpec(StrictModel):
    epochs: int = Field(20, gt=0)
    batch_size: int = Field(128, gt=0, description="Per-worker batch size.")
    lr: float = Field(1e-3, gt=0)
    head_lr: Optional[float] = Field(
        None, gt=0, description="text, image: the head's learning rate (the encoder's is lr); null: lr for both "
                                "(a pretrained encoder without lr in the spec: 1e-3).")
    warmup: float = Field(0.0, ge=0.0, lt=1.0, description="Fraction of the run's optimizer steps over which the "
                                                           "learning rate rises linearly from 0 (fine-tuning: ~0.1).")
    grad_accum: int = Field(1, ge=1, description="Batches whose gradients add up before one optimizer step "
                                                 "(an effective batch of batch_size x grad_accum per worker).")
    gradient_checkpointing: bool = Field(
        False, description="text: recompute the encoder's activations in the backward pass instead of keeping "
                           "them (less memory for longer sequences or bigger batches, ~30% more compute).")
    weight_decay: float = Field(0.0, ge=0)
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant", description="cosine: the learning rate of each epoch follows a half cosine from lr at the "
                                "first epoch down to near zero at the last (train.epochs).")
    ema_epochs: Optional[float] = Field(
        None, gt=0, description="Keep an exponential moving average of the weights over the last steps: at most "
                                "this many epochs of them (e.g. 1), and about a ninth of the steps so far. "
                                "Validation, the best epoch, checkpoints and the bundle use the averaged weights, "
                                "which swing far less from epoch to epoch than the raw ones at a constant learning "
                                "rate. null: the raw weights.")
    loss: Literal["auto", "cross_entropy", "mse", "huber"] = Field(
        "auto", description="auto: cross_entropy for classification, mse for regression.")
    class_weight: Literal["none", "balanced"] = Field(
        "none", description="balanced: weight classes by inverse frequency (imbalanced labels).")
    workers: int = Field(2, ge=1, description="Data-parallel Ray Train workers.")
    cpus_per_worker: float = Field(1.0, gt=0)
    use_gpu: Union[bool, Literal["auto"]] = Field("auto", description="auto: use GPUs when the cluster has them.")
    early_stop: Optional[EarlyStopSpec] = Field(default_factory=EarlyStopSpec, description="null disables it.")
    max_failures: int = Field(2, ge=0, description="Worker failures survived by resuming from the last checkpoint.")
    checkpoint_every: Union[int, str] = Field(
        "10s", description="How often rank 0 checkpoints (weights, optimizer, best epoch, history): every N "
                           "epochs (an integer, e.g. 1) or once at least this many seconds of training have "
                           "passed since the last checkpoint (a string ending in s, e.g. '30s'). Every epoch "
                           "still reports its metrics; the last epoch (planned or early-stopped) always "
                           "checkpoints; a worker failure loses at most the epochs since the last checkpoint. "
                           "Tuning trials checkpoint every epoch whatever this says.")
    seed: int = 0
    cache: Literal["auto", "memory", "stream"] = Field(
        "auto", description="memory: each worker holds its shard as tensors; stream: iterate Ray Data every epoch; "
                            "auto: memory when the shard is under cache_limit_mb.")
    cache_limit_mb: int = Field(2048, gt=0)

    @field_validator("checkpoint_every", mode="before")
    @classmethod
    def _cadence(cls, v):
        if (isinstance(v, int) and not isinstance(v, bool) and v >= 1) or (
                isinstance(v, str) and _seconds(v) is not None):
            return v
        raise ValueError("must be a number of epochs (an integer of at least 1, e.g. 5) or of "
                         "seconds (a positive number ending in s, e.g. '30s')")

    @property
    def checkpoint_cadence(self) -> tuple[Optional[int], Optional[float]]:
        """`checkpoint_every` as (epochs, None) or (None, seconds)."""
        v = self.checkpoint_every
        return (v, None) if isinstance(v, int) else (None, _seconds(v))


def _seconds(text: str) -> Optional[float]:
    """'30s' -> 30.0; None when `text` is not a positive number of seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*s\s*", text)
    return float(m.group(1)) if m and float(m.group(1)) > 0 else None
