"""The `tune` section as Ray Tune objects: the search space, the search algorithm, the scheduler, the metric.

Spec problems that need more than the `tune` section to see (the metric against the task and the label, the
ASHA grace period against `train.epochs`) are raised here as `SpecError`s naming the field and the fix.
"""
from __future__ import annotations

import importlib.util
import math
from typing import Any, Optional, Sequence

import numpy as np

from jobs import precheck
from jobs.spec import SEARCH_AXES, Distribution, JobSpec, SpecError, metric_mode, mode_problem, task_problem

# ASHA counts epochs, not Tune's training_iteration: a trial resumed from its Train checkpoint after an
# interruption reports epoch 4 as its first result, and must be judged at rung 4, not rung 1.
TIME_ATTR = "epoch"


def metric_and_mode(spec: JobSpec, task: Optional[str],
                    classes: Optional[Sequence] = None) -> tuple[str, str]:
    """The metric trials are ranked by, and whether bigger is better. Checked against the task and the label's
    classes when known (after ingest: before any trial starts, instead of failing in every one)."""
    tune = spec.tune
    metric = tune.metric or (spec.train.early_stop.metric if spec.train.early_stop else "val_loss")
    origin = "tune.metric" if tune.metric else ("train.early_stop.metric (tune.metric is not set)"
                                                if spec.train.early_stop else "the default val_loss")
    problem = task_problem(metric, "tune.metric", task, classes, label=spec.data.label, said=origin)
    if problem:
        raise SpecError([problem])
    problem = mode_problem(metric, tune.mode, "tune.mode", f"the trials are ranked by {metric} ({origin}), which")
    if problem:
        raise SpecError([problem])
    return metric, metric_mode(metric)


def metric_note(spec: JobSpec) -> Optional[str]:
    """For `trainyard validate`: trials ranked by one metric (tune.metric) and each trial's early stop and best
    epoch (its weights in the bundle) chosen by another (train.early_stop.metric). Allowed; said."""
    es = spec.train.early_stop
    if spec.tune is None or spec.tune.metric is None or es is None or es.metric == spec.tune.metric:
        return None
    return (f"trials are ranked by tune.metric {spec.tune.metric}, but each stops, and keeps the weights of its best "
            f"epoch, by train.early_stop.metric {es.metric}; give both the same metric unless that is meant")


def check(spec: JobSpec) -> None:
    """What can be checked before Ray reads any data: every problem at once. That includes what the metrics
    need of the label (val_auc: two classes), read from the label column when the data is on this machine."""
    tune, problems = spec.tune, []
    asha = tune.scheduler.asha if tune.scheduler != "none" else None
    if asha is not None and asha.grace_period >= spec.train.epochs:
        # Its first rung would be the last epoch, where every trial ends anyway.
        problems.append(f"tune.scheduler.asha.grace_period={asha.grace_period} is "
                        f"{'more than' if asha.grace_period > spec.train.epochs else 'equal to'} train.epochs="
                        f"{spec.train.epochs}, so ASHA could never stop a trial before its last epoch; lower the "
                        "grace period, raise train.epochs, or set tune.scheduler: none")
    if tune.search == "optuna" and importlib.util.find_spec("optuna") is None:
        problems.append("tune.search is optuna but the optuna package is not installed; "
                        "`pip install optuna`, or use search: random")
    if tune.search == "grid":
        grid = grid_size(spec)
        if grid > 1000:
            problems.append(f"tune.search: grid makes {grid} trials; lower tune.grid_points or shorten the choices")
    if problem := output_problem(spec):
        problems.append(problem)
    try:
        metric_and_mode(spec, spec.data.task)
    except SpecError as exc:
        problems.extend(exc.problems)
    problems.extend(precheck.metric_problems(spec) + precheck.setting_problems(spec))
    if problems:
        raise SpecError(problems)


def output_problem(spec: JobSpec) -> Optional[str]:
    """A URI output, which a search cannot write to yet: found by run_tune before, after a Ray start (and on a
    cluster, after the job's submission and set-up). Nothing of this machine is looked at: `submit` asks it of a
    search for any cluster."""
    if "://" not in spec.output_dir:
        return None
    return (f"output {spec.output_dir!r}: a search writes its experiment, report and bundle to a local folder (or a "
            "shared one mounted on every node), not yet to a URI; give output a path. `trainyard train` writes its "
            "bundle to a URI")


def batch_note(spec: JobSpec, train_rows: int) -> Optional[str]:
    """The batch sizes of the search above the train rows a worker holds: such a trial takes one full-batch step an
    epoch, and its early validation score can win the search (4096 on 2,360 rows won by val_auc at epoch 1, then
    scored a test AUC of 0.58). `train` says it of its own batch."""
    rows = -(-train_rows // max(spec.train.workers, 1))
    big = [b for b in (spec.tune.batch_size.choice if spec.tune and spec.tune.batch_size else []) if b > rows]
    if not big:
        return None
    return (f"[tune] note: tune.batch_size {', '.join(map(str, big))} is more than the {rows:,} train row(s) per "
            f"worker: such a trial takes one step of {rows:,} an epoch, whose early validation score may win the "
            "search; leave it out, or train on more rows")


def _grid_values(dist: Distribution, points: int) -> list[Any]:
    if dist.choice is not None:
        return list(dist.choice)
    if dist.loguniform is not None:
        return [float(f"{v:.6g}") for v in np.geomspace(*dist.loguniform, points)]
    return [float(f"{v:.6g}") for v in np.linspace(*dist.uniform, points)]


def grid_size(spec: JobSpec) -> int:
    size = 1
    for axis in SEARCH_AXES:
        dist = getattr(spec.tune, axis)
        if dist is not None:
            size *= len(_grid_values(dist, spec.tune.grid_points))
    return size


def param_space(spec: JobSpec) -> dict:
    """{axis: Tune domain} for every axis the spec searches; grid search turns each into grid_search([...])."""
    from ray import tune as T

    space = {}
    for axis in SEARCH_AXES:
        dist = getattr(spec.tune, axis)
        if dist is None:
            continue
        if spec.tune.search == "grid":
            space[axis] = T.grid_search(_grid_values(dist, spec.tune.grid_points))
        elif dist.choice is not None:
            values = list(dist.choice)
            if axis == "hidden" and spec.tune.search == "optuna":
                # Optuna's categorical values must be scalars: [128, 64] travels as "128x64" (trial_overrides
                # turns it back into a list).
                values = [encode_hidden(v) for v in values]
            space[axis] = T.choice(values)
        elif dist.loguniform is not None:
            space[axis] = T.loguniform(*dist.loguniform)
        else:
            space[axis] = T.uniform(*dist.uniform)
    return space


def encode_hidden(widths: list[int]) -> str:
    return "x".join(str(w) for w in widths)


def decode_hidden(value) -> list[int]:
    if isinstance(value, str):
        return [int(w) for w in value.split("x") if w]
    return list(value)


def trial_count(spec: JobSpec) -> int:
    """How many trials the search runs: every combination of a grid, else tune.samples."""
    return grid_size(spec) if spec.tune.search == "grid" else spec.tune.samples


def num_samples(spec: JobSpec) -> int:
    # Tune repeats a grid num_samples times; with seeded training every repeat would train the same model.
    return 1 if spec.tune.search == "grid" else spec.tune.samples


def search_alg(spec: JobSpec, max_concurrent: int):
    from tuning.searchers import PlannedLimiter, PlannedVariants

    seed = spec.tune.seed if spec.tune.seed is not None else spec.train.seed
    if spec.tune.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch
        # metric and mode come from TuneConfig; Tune refuses them given twice.
        return PlannedLimiter(OptunaSearch(seed=seed), max_concurrent=max_concurrent)
    # Seeded, so the same spec samples the same configurations. The concurrency limit must be given here:
    # Tune ignores TuneConfig.max_concurrent_trials when handed a search generator, and every trial would start.
    return PlannedVariants(random_state=seed, max_concurrent=max_concurrent)


def _asha(spec: JobSpec):
    """The spec's ASHA settings, or None when the search stops no trial by their results."""
    return None if spec.tune.scheduler == "none" else spec.tune.scheduler.asha


def stops_trials_early(spec: JobSpec) -> bool:
    """Whether the search may end a trial before its Train run ends by itself: ASHA, or tune.time_budget_s."""
    return _asha(spec) is not None or spec.tune.time_budget_s is not None


def scheduler(spec: JobSpec):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    asha = _asha(spec)
    if asha is None:
        return FIFOScheduler()
    return ASHAScheduler(time_attr=TIME_ATTR, max_t=spec.train.epochs, grace_period=asha.grace_period,
                         reduction_factor=asha.reduction_factor)


def rungs(spec: JobSpec) -> list[int]:
    """The epochs ASHA judges trials at, drawn on the report's curves: the first epoch at or past each of its
    milestones (grace_period × reduction_factor^k; 12.5 is judged at 13, which round() drew at 12), below the
    last epoch (where every trial ends anyway)."""
    if _asha(spec) is None:
        return []
    asha, found, t = spec.tune.scheduler.asha, [], spec.tune.scheduler.asha.grace_period
    while math.ceil(t - 1e-9) < spec.train.epochs:
        found.append(math.ceil(t - 1e-9))
        t *= asha.reduction_factor
    return found
