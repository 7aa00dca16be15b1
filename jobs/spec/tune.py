"""The `tune` section: a Ray Tune search over the train section (axes, search, scheduler, metric)."""
from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, Field, field_validator, model_validator

from jobs.spec.base import StrictModel
from jobs.spec.metric_registry import mode_problem, unknown_metric_problem

# The train/model fields a search can vary, in the order they are shown.
SEARCH_AXES = ("lr", "batch_size", "weight_decay", "dropout", "hidden")


class Distribution(StrictModel):
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
        else:
            twice = [v for i, v in enumerate(self.choice) if v in self.choice[:i]]
            if twice:    # a grid would train the same trial twice; a random search would favour the value
                raise ValueError(f"choice lists {', '.join(map(repr, twice))} more than once; give each value "
                                 "once")
        return self


class AshaSpec(StrictModel):
    grace_period: int = Field(2, ge=1, description="Epochs every trial runs before it can be stopped.")
    reduction_factor: float = Field(3, gt=1, description="At each rung only the best 1/reduction_factor go on.")


class SchedulerSpec(StrictModel):
    asha: AshaSpec = Field(default_factory=AshaSpec)

    @field_validator("asha", mode="before")
    @classmethod
    def _empty_is_default(cls, v):
        # `asha:` with nothing under it (YAML null) asks for ASHA with its defaults, not for no early stopping.
        return {} if v is None else v


def _choice_of(dist: Distribution, axis: str, check, what: str) -> None:
    if dist.choice is None:
        raise ValueError(f"needs choice: [...] of {what}, e.g. {{choice: "
                         f"{'[32, 64, 128]' if axis == 'batch_size' else '[[64], [128, 64]]'}}}")
    bad = [v for v in dist.choice if not check(v)]
    if bad:
        raise ValueError(f"values must be {what}; these are not: {bad}")


def _range_within(dist: Distribution, axis: str, lo: float, hi: float, what: str) -> None:
    values = dist.choice if dist.choice is not None else (dist.loguniform or dist.uniform)
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v < hi]
    if bad:
        raise ValueError(f"values must be {what}; these are not: {bad}")


class TuneSpec(StrictModel):
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
        problem = unknown_metric_problem(v) if v is not None else None
        if problem:
            raise ValueError(problem)
        return v

    # One validator per axis (not one for all): pydantic then reports every axis's problem at once, also next
    # to an axis whose own form was already refused.
    @field_validator("batch_size")
    @classmethod
    def _batch_sizes(cls, v):
        if v is not None:
            _choice_of(v, "batch_size", lambda x: isinstance(x, int) and not isinstance(x, bool) and x > 0,
                       "positive integers")
        return v

    @field_validator("hidden")
    @classmethod
    def _widths(cls, v):
        if v is not None:
            _choice_of(v, "hidden", lambda x: isinstance(x, list) and all(
                isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in x), "lists of positive layer widths")
        return v

    @field_validator("lr", "weight_decay", "dropout")
    @classmethod
    def _ranges(cls, v, info):
        if v is not None:
            lo, hi, what = {"lr": (1e-12, float("inf"), "positive learning rates"),
                            "weight_decay": (0.0, float("inf"), "non-negative weight decays"),
                            "dropout": (0.0, 1.0, "dropout rates in [0, 1)")}[info.field_name]
            _range_within(v, info.field_name, lo, hi, what)
        return v

    @model_validator(mode="after")
    def _axes_make_sense(self):
        if not any(getattr(self, a) is not None for a in SEARCH_AXES):
            raise ValueError(f"nothing to search: give at least one of {', '.join(SEARCH_AXES)}")
        problem = mode_problem(self.metric, self.mode, "tune.mode") if self.metric is not None else None
        if problem:
            raise ValueError(problem)
        return self

