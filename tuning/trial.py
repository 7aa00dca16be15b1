"""One trial: a Tune function that runs one full Ray Train run (`jobs.train.fit`) with the sampled config.

This is the Train V2 pattern for Tune: the trial is only the driver of its Train run. Every epoch's
`ray.train.report` (metrics + checkpoint path) reaches this trial through `tuning.rows.RowChannel`, and the trial
hands it to Tune with `tune.report`, so ASHA sees each epoch and can stop the trial; stopping the trial ends the
process that owns the Train controller, and with it the controller and its workers.

The Train run is named after the trial id and stored under the experiment, so a trial restarted by
`--resume` resumes its Train run from the last checkpoint instead of starting over.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from pathlib import Path
from typing import Optional

from jobs.pipeline import PreparedData
from jobs.spec import EarlyStopSpec, JobSpec, best_key
from jobs.train import PREEMPTION_ENV, configure, default_trainer, fit
from tuning.resume import ENDED_DIR
from tuning.rows import run_reporting
from tuning.space import decode_hidden

TRAIN_DIR = "train"        # the Train runs of an experiment, one per trial: EXPERIMENT/train/trial-<id>


def run_name(trial_id: str) -> str:
    return f"trial-{trial_id}"


def trial_overrides(spec: JobSpec, config: dict, metric: str, mode: str) -> dict:
    """The train/model fields this trial changes: the sampled axes, and the epoch-level metric.

    The Train loop keeps the state of its best epoch by `train.early_stop.metric`; a trial must keep the best
    epoch by the metric the search ranks trials by, or the bundle could hold a different epoch than the one
    that won. Patience stays as the spec sets it; without `train.early_stop` it never triggers.
    """
    es = spec.train.early_stop
    patience = es.patience if es else spec.train.epochs
    overrides = {k: v for k, v in config.items() if k in ("lr", "batch_size", "weight_decay", "dropout", "hidden")}
    if "hidden" in overrides:
        overrides["hidden"] = decode_hidden(overrides["hidden"])
    overrides["early_stop"] = EarlyStopSpec(metric=metric, mode=mode, patience=patience)
    return overrides


def ended_record(experiment_dir: str | os.PathLike, trial_id: str) -> Optional[dict]:
    path = Path(experiment_dir) / ENDED_DIR / f"{trial_id}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def run_trial(config: dict, *, spec: JobSpec, prepared: PreparedData, experiment_dir: str,
              metric: str, mode: str, embedded: bool = False) -> None:
    """The Tune trainable (wrapped with tune.with_parameters / with_resources by the experiment). `embedded`:
    the search runs on the embedded Ray its driver started."""
    from ray import tune

    trial_id = tune.get_context().get_trial_id()
    ended = ended_record(experiment_dir, trial_id)
    if ended is not None:
        # The driver was killed after Tune ended this trial but before its next state snapshot, so the
        # resumed experiment thinks it is unfinished. Hand Tune the trial's last result again; never retrain.
        tune.report(ended["last_result"])
        return
    # The search prints one line per trial epoch itself (experiment._Progress); the workers' would double it.
    # A trial checkpoints every epoch, whatever train.checkpoint_every says: ASHA can end it after any epoch,
    # and the search reads a trial's epochs and its best weights from its newest checkpoint (`last_state`), so
    # an epoch after the last checkpoint would be missing from its record and its bundle. On small models the
    # cost hides in the wait for the controller's poll (measured: ~2 ms per 200 KB checkpoint).
    # The controller polls as in any run (`jobs.train.controller_poll_s`): RowChannel loses no row at any interval.
    if embedded:
        # No node of the driver's embedded Ray is ever drained, so the Train run needs no preemption watcher (an
        # actor process per trial, whose start costs CPU the other trials need). `fit` leaves it out on embedded
        # Ray by itself, but sees a trial process as a client of someone else's cluster. A value the user
        # exported stays.
        os.environ.setdefault(PREEMPTION_ENV, "0")
    overrides = trial_overrides(spec, config, metric, mode)
    worker_config = dataclasses.replace(configure(spec, prepared, overrides=overrides), epoch_lines=False,
                                        checkpoint_epochs=1, checkpoint_seconds=None, trial=trial_id)
    run_reporting(lambda channel: fit(
        spec, prepared, storage_path=os.path.join(experiment_dir, TRAIN_DIR), run_name=run_name(trial_id),
        config=worker_config, callbacks=[channel], progress=lambda *_: None,
        # The search's driver gives back the placement group of a trial ASHA stops (tuning/_placement.py).
        trainer=default_trainer(spec, placement_cleaner=False)), lambda row: tune.report(judged(row, metric, mode)))


def judged(row: dict, metric: str, mode: str) -> dict:
    """The row Tune ranks the trial by: until an epoch gives a number, best_<metric> is NaN (the Train loop's
    row), which ASHA's `value < cutoff` never stops; an infinite one (a diverged RMSE) made the cut-off infinite.
    Sent as the worst value there is instead: a trial that diverged from its first epoch trained every epoch. The
    largest finite float, not inf: ASHA interpolates between rung values, and inf - inf is NaN again."""
    key = best_key(metric)
    value = row.get(key)
    if isinstance(value, float) and not math.isfinite(value):     # an infinite RMSE too: -inf < -inf is False
        return {**row, key: sys.float_info.max if mode == "min" else -sys.float_info.max}
    return row
