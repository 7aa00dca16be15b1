"""The job spec: one YAML file describes a job. Pydantic v2 models, unknown keys are errors.

`load_spec(path, overrides)` reads, applies `--set a.b=value` overrides and validates, collecting every
problem before raising one `SpecError` whose lines each name the file, the field, the value and the fix.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

CLASSIFICATION_METRICS = ("val_loss", "val_accuracy", "val_precision", "val_recall", "val_f1", "val_auc")
REGRESSION_METRICS = ("val_loss", "val_mae", "val_rmse", "val_r2")
# Metrics where bigger is better; everything else is minimised.
MAXIMISED_METRICS = {"val_accuracy", "val_precision", "val_recall", "val_f1", "val_auc", "val_r2"}


class _SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader, with two fixes for specs:

    - `1e-3` is a number, as in YAML 1.2 (PyYAML follows YAML 1.1, which wants `1.0e-3` and reads `1e-3` as
      the text "1e-3": fine where the field is a number, baffling inside `choice: [1e-3, 1e-2]`);
    - a key given twice in one mapping is an error, not the last one silently winning (a second `tune:`
      block would drop the first one's settings without a word).
    """

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":     # `<<: *anchor`: merged after this check,
                    continue                                       # so a key given beside it overrides it
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, str) and key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"the key {key!r} is given twice in one mapping (lines {seen[key] + 1} and "
                        f"{key_node.start_mark.line + 1}); keep one, merging what each says", key_node.start_mark)
                if isinstance(key, str):
                    seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


class _SpecDumper(yaml.SafeDumper):
    """Writes YAML that _SpecLoader reads back as it was: text such as '1e5' (a name, a column, an env value)
    keeps its quotes, which a YAML 1.1 writer would drop."""


_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")
for _cls in (_SpecLoader, _SpecDumper):
    _cls.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789"))


def read_yaml(text: str):
    """YAML as a spec reads it (`--set` values too): see _SpecLoader."""
    return yaml.load(text, Loader=_SpecLoader)  # noqa: S506 - a SafeLoader subclass


def write_yaml(data) -> str:
    """YAML that read_yaml reads back unchanged (a staged job spec, a bundle's spec.yaml)."""
    return yaml.dump(data, Dumper=_SpecDumper, sort_keys=False)


class SpecError(ValueError):
    """A spec that cannot run. `problems` holds one line per problem; str() lists them all."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(f"  - {p}" for p in problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class FeatureSpec(_Strict):
    """Which columns are features. Omitted lists are inferred from the data (see the run summary)."""

    numeric: Optional[list[str]] = Field(None, description="Columns treated as numbers (imputed, scaled).")
    categorical: Optional[list[str]] = Field(None, description="Columns one-hot encoded, with an 'unknown' slot.")
    exclude: list[str] = Field(default_factory=list, description="Columns never used (ids, timestamps, leaks).")

    @model_validator(mode="after")
    def _no_overlap(self):
        both = set(self.numeric or []) & set(self.categorical or [])
        if both:
            raise ValueError(f"columns {sorted(both)} are listed as both numeric and categorical; keep each in one list")
        return self


class SplitSpec(_Strict):
    """Deterministic train/val/test split, stratified by label for classification."""

    val: float = Field(0.15, ge=0.0, lt=1.0, description="Fraction of rows for validation.")
    test: float = Field(0.15, ge=0.0, lt=1.0, description="Fraction of rows for the test metrics.")
    seed: int = Field(0, description="Seed of the split; the same seed gives the same split.")

    @model_validator(mode="after")
    def _leaves_train(self):
        if self.val + self.test >= 0.95:
            raise ValueError(f"val + test = {self.val + self.test:g} leaves (almost) nothing to train on; keep it below 0.95")
        return self


class PreprocessSpec(_Strict):
    """Preprocessing fitted on the train split only; its state is plain JSON in the bundle."""

    impute: Literal["mean", "median", "most_frequent", "constant"] = Field(
        "median", description="How missing numeric values are filled.")
    fill_value: float = Field(0.0, description="The value used when impute is 'constant'.")
    scale: Literal["standard", "minmax", "none"] = Field("standard", description="Numeric scaling.")
    max_categories: int = Field(50, gt=0, description="Most frequent categories kept per column; rarer ones map to 'unknown'.")
    unknown_category: Literal["ignore", "error"] = Field(
        "ignore", description="At prediction time: map an unseen category to the 'unknown' slot, or reject the record.")
    categorical_max_ints: int = Field(
        10, ge=0, description="Integer columns with at most this many distinct values are inferred categorical.")


class ImageSpec(_Strict):
    """Image input: every image is decoded, converted and resized to one shape."""

    size: list[int] = Field(default_factory=lambda: [64, 64], description="[height, width] after resizing.")
    channels: Literal[1, 3] = Field(1, description="1 = greyscale, 3 = RGB.")
    column: str = Field("image", description="Parquet: the column of encoded image bytes. Serving: the record field.")

    @field_validator("size")
    @classmethod
    def _hw(cls, v):
        if len(v) != 2 or any(d < 4 or d > 4096 for d in v):
            raise ValueError(f"size must be [height, width] between 4 and 4096, got {v}")
        return v


class AugmentSpec(_Strict):
    """Augmentation of the train split only (applied in the training step, never to val/test/serving)."""

    hflip: bool = Field(False, description="Random horizontal flips.")
    random_crop: int = Field(0, ge=0, description="Pad by this many pixels, then crop back at a random offset.")


class DataSpec(_Strict):
    path: Union[str, list[str]] = Field(description="A directory, a glob, a file, or a list of them; local or a pyarrow URI.")
    format: Optional[Literal["parquet", "csv", "images"]] = Field(
        None, description="Inferred from file extensions when omitted; images: a folder per class.")
    label: str = Field(description="The column to predict.")
    task: Optional[Literal["classification", "regression"]] = Field(
        None, description="Inferred from the label when omitted: strings, booleans and few distinct ints classify.")
    features: FeatureSpec = Field(default_factory=FeatureSpec)
    split: SplitSpec = Field(default_factory=SplitSpec)
    preprocess: PreprocessSpec = Field(default_factory=PreprocessSpec)
    image: Optional[ImageSpec] = Field(None, description="Image input (format: images, or parquet with image bytes).")
    augment: Optional[AugmentSpec] = Field(None, description="Train-split augmentation for images.")
    max_corrupt_fraction: float = Field(
        0.05, ge=0, le=1, description="Images: undecodable files are listed and skipped up to this fraction.")

    @property
    def is_image(self) -> bool:
        return self.format == "images" or self.image is not None

    @model_validator(mode="after")
    def _image_defaults(self):
        if self.format == "images" and self.image is None:
            self.image = ImageSpec()
        if self.format == "csv" and self.image is not None:
            raise ValueError("data.image needs format: images (class folders) or parquet (an image bytes column)")
        if self.augment is not None and not self.is_image:
            raise ValueError("data.augment applies to images only; remove it or set data.format: images")
        if self.is_image and self.task == "regression":
            raise ValueError("image jobs are classification only; remove data.task: regression")
        return self

    @field_validator("path")
    @classmethod
    def _non_empty(cls, v):
        if (isinstance(v, str) and not v.strip()) or (isinstance(v, list) and not v):
            raise ValueError("data.path is empty; give a directory, a glob or a list of files")
        return v

    @model_validator(mode="after")
    def _label_not_a_feature(self):
        listed = set((self.features.numeric or []) + (self.features.categorical or []))
        if self.label in listed:
            raise ValueError(f"the label {self.label!r} is also listed as a feature; remove it from data.features")
        return self


class ModelSpec(_Strict):
    kind: Literal["mlp", "cnn"] = Field("mlp", description="mlp: tabular MLP; cnn: conv blocks + MLP head (images).")
    channels: list[int] = Field(default_factory=lambda: [32, 64], description="cnn: output channels per conv block.")
    hidden: list[int] = Field(default_factory=lambda: [128, 64], description="Hidden layer widths.")
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    activation: Literal["relu", "gelu", "silu", "tanh"] = "relu"

    @field_validator("hidden", "channels")
    @classmethod
    def _positive(cls, v):
        if any(h <= 0 for h in v):
            raise ValueError(f"sizes must be positive integers, got {v}")
        return v


class EarlyStopSpec(_Strict):
    metric: str = Field("val_loss", description="A validation metric, e.g. val_loss, val_f1, val_rmse.")
    patience: int = Field(5, ge=1, description="Epochs without improvement before stopping.")
    mode: Optional[Literal["min", "max"]] = Field(None, description="Inferred from the metric when omitted.")

    @field_validator("metric")
    @classmethod
    def _known(cls, v):
        known = sorted(set(CLASSIFICATION_METRICS) | set(REGRESSION_METRICS))
        if v not in known:
            raise ValueError(f"unknown metric {v!r}; use one of {', '.join(known)}")
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


def mode_problem(metric: str, mode: Optional[str], field: str, metric_said: Optional[str] = None) -> Optional[str]:
    """Every metric trainyard reports has a direction; a `mode` against it would keep the worst model. What is
    wrong, if anything; `metric_said`: how to name the metric (default: its name)."""
    if mode is None or mode == metric_mode(metric):
        return None
    better = "bigger" if metric_mode(metric) == "max" else "smaller"
    return (f"{field} is {mode} but {metric_said or metric} is better when {better} ({metric_mode(metric)}), so "
            f"the worst epochs and trials would win; remove {field} (it follows the metric) or set it to "
            f"{metric_mode(metric)}")


class TrainSpec(_Strict):
    epochs: int = Field(20, gt=0)
    batch_size: int = Field(128, gt=0, description="Per-worker batch size.")
    lr: float = Field(1e-3, gt=0)
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
    seed: int = 0
    cache: Literal["auto", "memory", "stream"] = Field(
        "auto", description="memory: each worker holds its shard as tensors; stream: iterate Ray Data every epoch; "
                            "auto: memory when the shard is under cache_limit_mb.")
    cache_limit_mb: int = Field(2048, gt=0)


class Distribution(_Strict):
    """One search axis: exactly one of loguniform: [lo, hi], uniform: [lo, hi], choice: [values...]."""

    loguniform: Optional[list[float]] = None
    uniform: Optional[list[float]] = None
    choice: Optional[list[Any]] = None

    @model_validator(mode="after")
    def _exactly_one(self):
        given = [k for k in ("loguniform", "uniform", "choice") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of loguniform: [lo, hi], uniform: [lo, hi] or choice: [...]")
        if given[0] in ("loguniform", "uniform"):
            lo_hi = getattr(self, given[0])
            if len(lo_hi) != 2 or not lo_hi[0] < lo_hi[1]:
                raise ValueError(f"{given[0]} needs [low, high] with low < high, got {lo_hi}")
            if given[0] == "loguniform" and lo_hi[0] <= 0:
                raise ValueError(f"loguniform needs a positive low bound, got {lo_hi[0]}")
        elif not self.choice:
            raise ValueError("choice needs at least one value")
        return self


class AshaSpec(_Strict):
    grace_period: int = Field(2, ge=1, description="Epochs every trial runs before it can be stopped.")
    reduction_factor: float = Field(3, gt=1, description="At each rung only the best 1/reduction_factor go on.")


class SchedulerSpec(_Strict):
    asha: AshaSpec = Field(default_factory=AshaSpec)

    @field_validator("asha", mode="before")
    @classmethod
    def _empty_is_default(cls, v):
        # `asha:` with nothing under it (YAML null) asks for ASHA with its defaults, not for no early stopping.
        return {} if v is None else v


def _choice_of(dist: Distribution, axis: str, check, what: str) -> None:
    if dist.choice is None:
        raise ValueError(f"{axis} needs choice: [...] of {what}, e.g. {{choice: "
                         f"{'[32, 64, 128]' if axis == 'batch_size' else '[[64], [128, 64]]'}}}")
    bad = [v for v in dist.choice if not check(v)]
    if bad:
        raise ValueError(f"{axis}: values must be {what}; these are not: {bad}")


def _range_within(dist: Distribution, axis: str, lo: float, hi: float, what: str) -> None:
    values = dist.choice if dist.choice is not None else (dist.loguniform or dist.uniform)
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v < hi]
    if bad:
        raise ValueError(f"{axis}: values must be {what}; these are not: {bad}")


class TuneSpec(_Strict):
    """Ray Tune search over the train section; each trial is one Ray Train run."""

    samples: int = Field(16, ge=1, description="Number of trials for random/optuna search. grid runs every "
                                               "combination once and ignores it.")
    lr: Optional[Distribution] = Field(default_factory=lambda: Distribution(loguniform=[1e-4, 1e-1]))
    batch_size: Optional[Distribution] = Field(default_factory=lambda: Distribution(choice=[32, 64, 128, 256]))
    weight_decay: Optional[Distribution] = None
    dropout: Optional[Distribution] = None
    hidden: Optional[Distribution] = Field(None, description="choice of lists, e.g. {choice: [[64], [128, 64]]}")
    search: Literal["random", "grid", "optuna"] = "random"
    grid_points: int = Field(3, ge=2, description="grid search: points taken from each loguniform (log-spaced) "
                                                  "or uniform (evenly spaced) axis.")
    scheduler: Union[SchedulerSpec, Literal["none"]] = Field(default_factory=SchedulerSpec)
    metric: Optional[str] = Field(None, description="Default: train.early_stop.metric, else val_loss.")
    mode: Optional[Literal["min", "max"]] = Field(None, description="Inferred from the metric when omitted.")
    max_concurrent: Union[int, Literal["auto"]] = Field("auto", description="auto: what the cluster can hold.")
    time_budget_s: Optional[float] = Field(None, gt=0)
    seed: Optional[int] = Field(None, description="Seed of the random/optuna sampler; default train.seed.")
    trial_driver_cpus: float = Field(
        0.25, gt=0, description="CPU held by each trial's driver, which only launches and watches its Ray Train "
                                "run (the workers hold their own CPUs).")
    data_cpus: float = Field(
        1.0, ge=0, description="CPUs never given to trials, so Ray Data tasks can always be scheduled "
                               "(trials holding every CPU is how Tune + Train + Data deadlocks).")

    @field_validator("lr", "batch_size", "weight_decay", "dropout", "hidden", mode="before")
    @classmethod
    def _axis_form(cls, v, info):
        if v is None or isinstance(v, (dict, BaseModel)):
            return v
        axis = info.field_name
        home = {"dropout": "model.dropout", "hidden": "model.hidden"}.get(axis, f"train.{axis}")
        one_value = isinstance(v, list) and axis == "hidden" and not all(isinstance(h, list) for h in v)
        if isinstance(v, list) and not one_value:       # [32, 64], or widths [[64], [128, 64]]
            fix = f"to try each of these values write {{choice: {v}}}"
        else:
            fix = f"to train every trial with one value, set {home} and tune.{axis}: null"
            if one_value:
                fix += f" (or {{choice: [{v}]}} among other widths)"
        raise ValueError(f"a search axis is {{loguniform: [low, high]}}, {{uniform: [low, high]}} or {{choice: "
                         f"[...]}}, got {v!r}; {fix}")

    @field_validator("scheduler", mode="before")
    @classmethod
    def _scheduler_form(cls, v):
        if isinstance(v, (dict, BaseModel)) or v == "none":
            return v
        raise ValueError(f"the scheduler is {{asha: {{grace_period: 2, reduction_factor: 3}}}} (early stopping; "
                         f"{{asha: {{}}}} for the defaults) or none (every trial runs all its epochs), got {v!r}")

    @field_validator("max_concurrent", mode="before")
    @classmethod
    def _count_or_auto(cls, v):
        if v == "auto" or (isinstance(v, int) and not isinstance(v, bool)):
            return v
        raise ValueError(f"max_concurrent is auto (what the cluster can hold) or a whole number of trials, got {v!r}")

    @field_validator("max_concurrent")
    @classmethod
    def _positive(cls, v):
        if isinstance(v, int) and v < 1:
            raise ValueError(f"max_concurrent must be auto or at least 1, got {v}")
        return v

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, v):
        known = sorted(set(CLASSIFICATION_METRICS) | set(REGRESSION_METRICS))
        if v is not None and v not in known:
            raise ValueError(f"unknown metric {v!r}; use one of {', '.join(known)}")
        return v

    @model_validator(mode="after")
    def _axes_make_sense(self):
        if self.batch_size is not None:
            _choice_of(self.batch_size, "batch_size",
                       lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0, "positive integers")
        if self.hidden is not None:
            _choice_of(self.hidden, "hidden", lambda v: isinstance(v, list) and all(
                isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in v),
                "lists of positive layer widths")
        if self.lr is not None:
            _range_within(self.lr, "lr", 1e-12, float("inf"), "positive learning rates")
        if self.weight_decay is not None:
            _range_within(self.weight_decay, "weight_decay", 0.0, float("inf"), "non-negative weight decays")
        if self.dropout is not None:
            _range_within(self.dropout, "dropout", 0.0, 1.0, "dropout rates in [0, 1)")
        if not any(getattr(self, a) is not None for a in SEARCH_AXES):
            raise ValueError(f"nothing to search: give at least one of {', '.join(SEARCH_AXES)}")
        problem = mode_problem(self.metric, self.mode, "tune.mode") if self.metric is not None else None
        if problem:
            raise ValueError(problem)
        return self


SEARCH_AXES = ("lr", "batch_size", "weight_decay", "dropout", "hidden")


class AutoscalingSpec(_Strict):
    """Ray Serve's request-based autoscaler: replicas follow the number of requests in flight."""

    min_replicas: int = Field(1, ge=0, description="Replicas kept running with no traffic (0 allows scale to zero).")
    max_replicas: int = Field(4, ge=1, description="Most replicas; each holds ray_actor_options' CPUs.")
    target_ongoing_requests: float = Field(
        4, gt=0, description="Requests in flight per replica the autoscaler aims for; more per replica "
                             "scales up, fewer scales down.")
    upscale_delay_s: float = Field(30.0, ge=0, description="Load must stay above target this long before adding "
                                                           "replicas.")
    downscale_delay_s: float = Field(600.0, ge=0, description="Load must stay below target this long before "
                                                              "removing replicas.")
    look_back_period_s: float = Field(30.0, gt=0, description="Window the request counts are averaged over.")
    metrics_interval_s: float = Field(
        10.0, gt=0, description="How often each replica reports its request count to the autoscaler; keep it "
                                "below look_back_period_s.")

    @model_validator(mode="after")
    def _bounds(self):
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas})")
        if self.metrics_interval_s >= self.look_back_period_s:
            raise ValueError(f"metrics_interval_s ({self.metrics_interval_s:g}) must be below look_back_period_s "
                             f"({self.look_back_period_s:g}), or the window averages a single report")
        return self


class BatchSpec(_Strict):
    max_size: int = Field(64, ge=1, description="Most records batched into one model call, across concurrent "
                                                "requests; a request with more records runs as its own batch.")
    wait_ms: float = Field(5.0, ge=0, description="How long a batch waits to fill.")


class ServeSpec(_Strict):
    """Ray Serve deployment of the bundle (`trainyard serve`, and `trainyard run` after training)."""

    autoscaling: AutoscalingSpec = Field(default_factory=AutoscalingSpec)
    batch: BatchSpec = Field(default_factory=BatchSpec)
    max_records: int = Field(1000, ge=1, description="Most records in one request; more get 413.")
    max_body_mb: float = Field(8.0, gt=0, description="Larger request bodies get 413.")
    ray_actor_options: dict[str, Any] = Field(default_factory=lambda: {"num_cpus": 0.5},
                                              description="Resources of each replica (num_cpus, num_gpus, ...).")
    host: str = Field("127.0.0.1", description="Interface Serve listens on; 0.0.0.0 exposes it to the network.")
    port: int = Field(8000, ge=0, le=65535, description="HTTP port; 0 picks a free one.")
    route_prefix: str = Field("/", description="URL prefix of the app: /predict lives at <route_prefix>/predict.")
    max_ongoing_requests: int = Field(
        128, ge=1, description="Requests one replica holds at once. Batching can only merge requests that are "
                               "in the replica together, so keep it well above batch.max_size / records per "
                               "request.")
    required_features: Union[Literal["all"], list[str]] = Field(
        default_factory=list, description="Features a record must carry (422 otherwise). Default none: a "
                                          "missing value is imputed exactly as in training.")
    unknown_fields: Literal["reject", "ignore"] = Field(
        "reject", description="A record field that is not a feature: reject it (422, catches typos) or ignore it.")
    ingress: Literal["auto", "haproxy", "proxy"] = Field(
        "auto", description="HTTP ingress: haproxy (Ray 2.60's HAProxy in front of the replicas), proxy (Serve's "
                            "Python proxy), auto (see the serving section of the README).")
    access_log: bool = Field(False, description="Log every request in the replica logs (costs throughput).")
    health_check_period_s: float = Field(10.0, gt=0, description="How often each replica runs a canary "
                                                                 "prediction; a failure restarts the replica.")
    health_check_timeout_s: float = Field(30.0, gt=0, description="A health check slower than this fails.")
    max_surge_percent: int = Field(
        100, ge=0, le=100, description="Updates start this many extra replicas (percent of the count) and stop "
                                       "old ones only once the new ones serve; 0 stops old replicas first.")
    drain_period_s: float = Field(
        5.0, ge=0, description="HAProxy ingress: how long a stopping replica (update, scale-down, Ctrl-C) stays "
                               "reachable while HAProxy reloads without it. Ray's default, 30, suits cloud load "
                               "balancers in front of many nodes.")

    @field_validator("route_prefix")
    @classmethod
    def _prefix_ok(cls, v):
        if not v.startswith("/") or (len(v) > 1 and v.endswith("/")):
            raise ValueError(f"route_prefix must start with '/' and not end with one (e.g. / or /models/a), got {v!r}")
        return v

    @field_validator("ray_actor_options")
    @classmethod
    def _actor_options_ok(cls, v):
        allowed = {"num_cpus", "num_gpus", "memory", "resources", "accelerator_type", "runtime_env",
                   "label_selector"}
        unknown = sorted(set(v) - allowed)
        if unknown:
            raise ValueError(f"unknown ray_actor_options {unknown}; allowed: {sorted(allowed)}")
        return v


class JobSpec(_Strict):
    name: str = Field(description="Job name: letters, digits, '.', '_' and '-'.")
    data: DataSpec
    model: ModelSpec = Field(default_factory=ModelSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    output: Optional[str] = Field(None, description="Where runs, checkpoints and the bundle go; default runs/<name>.")
    tune: Optional[TuneSpec] = Field(None, description="Present: `trainyard run` tunes instead of training once.")
    serve: ServeSpec = Field(default_factory=ServeSpec)

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v):
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v):
            raise ValueError(f"name {v!r} must use letters, digits, '.', '_' and '-' and start with a letter or digit")
        return v

    @model_validator(mode="after")
    def _cnn_needs_images(self):
        if self.model.kind == "cnn" and not self.data.is_image:
            raise ValueError("model.kind cnn needs image data (data.format: images or data.image); "
                             "use model.kind: mlp for tables")
        return self

    @property
    def output_dir(self) -> str:
        return self.output or f"runs/{self.name}"


def metric_mode(metric: str) -> str:
    return "max" if metric in MAXIMISED_METRICS else "min"


def apply_overrides(raw: dict, overrides: list[str], source: str = "--set") -> dict:
    """`train.epochs=3` style overrides; values are parsed as YAML (3 → int, [1, 2] → list, null → None)."""
    problems = []
    for item in overrides or []:
        if "=" not in item:
            problems.append(f"{source} {item!r}: expected FIELD=VALUE, e.g. --set train.epochs=3")
            continue
        key, value = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            problems.append(f"{source} {item!r}: the field name is empty")
            continue
        node = raw
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        try:
            node[parts[-1]] = read_yaml(value) if value.strip() else None
        except yaml.YAMLError as exc:
            problems.append(f"{source} {item!r}: the value is not valid YAML ({exc.problem})")
    if problems:
        raise SpecError(problems)
    return raw


def _union_tag(part) -> bool:
    """Pydantic names the member of a Union a value failed against in the error's location: a model's class
    name (SchedulerSpec), a literal (literal['none']), a type (int, list[str]). Not a field a user could write."""
    part = str(part)
    return part.startswith(("literal[", "list[", "dict[")) or part in ("int", "float", "str", "bool") or (
        part[:1].isupper() and isinstance(globals().get(part), type) and issubclass(globals()[part], BaseModel))


def _tag_at(e: dict) -> Optional[int]:
    """Where in the error's location a Union member is named, if anywhere. The last part of an unknown-key
    error is the key the user wrote (even one called `str`), never a member."""
    loc = e["loc"] if e["type"] != "extra_forbidden" else e["loc"][:-1]
    return next((i for i, p in enumerate(loc) if _union_tag(p)), None)


def _field_errors(err: ValidationError) -> list[dict]:
    """Pydantic's errors, with a Union's members merged: when a mapping fails `Union[Model, Literal['none']]`,
    the user needs what is wrong inside the mapping they wrote, not also "should be 'none'". Other unions
    keep every member's line (they say which forms are allowed), under the field's own name."""
    errors = err.errors()
    groups: dict = {}
    for e in errors:
        cut = _tag_at(e)
        groups.setdefault(tuple(e["loc"][:cut]) if cut is not None else ("", id(e)), []).append((cut, e))
    kept = []
    for group in groups.values():
        tagged = [(cut, e) for cut, e in group if cut is not None]
        if any(str(e["loc"][cut])[:1].isupper() for cut, e in tagged):
            group = [(cut, e) for cut, e in group if cut is None or not str(e["loc"][cut]).startswith("literal[")]
        for cut, e in group:
            kept.append({**e, "loc": e["loc"] if cut is None else e["loc"][:cut] + e["loc"][cut + 1:]})
    return kept


def _format_errors(err: ValidationError, source: str, raw: dict) -> list[str]:
    lines = []
    for e in _field_errors(err):
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        kind = e["type"]
        value = e.get("input")
        if kind == "extra_forbidden":
            parent = _allowed_keys(e["loc"][:-1])
            hint = f"remove it or fix the spelling; allowed keys here: {', '.join(parent)}" if parent else "remove it"
            lines.append(f"{source}: {loc}: unknown key. Fix: {hint}")
        elif kind == "missing":
            lines.append(f"{source}: {loc}: required but missing. Fix: add {loc}: <value>")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"{source}: {loc}: {msg} (got {value!r})" if not isinstance(value, dict) and "got " not in msg
                         else f"{source}: {loc}: {msg}")
    return lines


def _allowed_keys(loc: tuple) -> list[str]:
    model: Any = JobSpec
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        # Unwrap Optional[Model]
        for cand in getattr(ann, "__args__", (ann,)):
            if isinstance(cand, type) and issubclass(cand, BaseModel):
                ann = cand
                break
        model = ann
    return list(getattr(model, "model_fields", {}).keys())


def validate_spec(raw: Any, source: str = "<spec>") -> JobSpec:
    if not isinstance(raw, dict):
        raise SpecError([f"{source}: the spec must be a YAML mapping (name:, data:, model:, train:), "
                         f"got {type(raw).__name__}"])
    try:
        return JobSpec.model_validate(raw)
    except ValidationError as err:
        raise SpecError(_format_errors(err, source, raw)) from None


def load_raw(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise SpecError([f"{path}: no such spec file (give the path of a YAML job spec)"])
    try:
        raw = read_yaml(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError([f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}"]) from None
    return raw if raw is not None else {}


def load_spec(path: str | Path, overrides: Optional[list[str]] = None) -> JobSpec:
    """Read, override and validate a spec file; every problem is reported at once."""
    raw = load_raw(path)
    if isinstance(raw, dict):
        raw = apply_overrides(raw, overrides or [])
    return validate_spec(raw, str(path))


def dump_spec(spec: JobSpec) -> str:
    """The resolved spec (defaults filled in) as YAML, for the bundle and the run directory."""
    return write_yaml(spec.model_dump(mode="json"))
