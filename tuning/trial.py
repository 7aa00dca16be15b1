"""One trial: a Tune function that runs one full Ray Train run (`jobs.train.fit`) with the sampled config.

This is the Train V2 pattern for Tune: the trial is only the driver of its Train run. Every epoch's
`ray.train.report` (metrics + checkpoint path) reaches this trial through `RowChannel`, and the trial hands it
to Tune with `tune.report`, so ASHA sees each epoch and can stop the trial; stopping the trial ends the process
that owns the Train controller, and with it the controller and its workers.

The Train run is named after the trial id and stored under the experiment, so a trial restarted by
`--resume` resumes its Train run from the last checkpoint instead of starting over.
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Optional

from ray.train import UserCallback

from jobs.pipeline import PreparedData
from jobs.spec import EarlyStopSpec, JobSpec
from jobs.train import PREEMPTION_ENV, configure, default_trainer, fit
from tuning.space import decode_hidden

ROW_WAIT_S = 0.05          # how often a trial looks for its Train run's new rows (`RowChannel`)
TRAIN_DIR = "train"        # the Train runs of an experiment, one per trial: EXPERIMENT/train/trial-<id>
ENDED_DIR = "ended"        # EXPERIMENT/ended/<id>.json: written by the driver when Tune ends a trial


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


class RowChannel(UserCallback):
    """A Ray Train callback that hands every report's row (rank 0's metrics, as Ray's `TuneReportCallback` does,
    with "checkpoint_path" when the report has a checkpoint) to the trial that runs the Train run: one JSON line
    each, appended to a file the trial reads (`forward_rows`).

    Why not Ray's `TuneReportCallback`: it sends the rows through a `ray.util.queue.Queue`, an actor, so a Python
    process per trial (~2 CPU-s to start on 2 cores, where a search is CPU-bound), and Tune's session fetches from
    that queue only while the trial runs: a row put within a few tens of ms of the run's end could miss the last
    fetch and the trial ended with no metrics at all (seen in CI twice at a 0.02 s controller poll, which is why
    trials polled at 0.25 s: ~2.5 s more per 10-epoch trial). Here the trial reads the file to its end after the
    run returns, so no row is lost, and trials poll at the same interval as any run.

    The file needs no shared storage: Ray Train V2 starts a run's controller, where callbacks run, on the node of
    the process that calls `trainer.fit()` (a label selector on that node's id), i.e. this trial's node."""

    def __init__(self, path: str):
        import ray

        self.path = path
        self.node_id = ray.get_runtime_context().get_node_id()

    def after_report(self, run_context, metrics: list, checkpoint) -> None:
        import ray

        if ray.get_runtime_context().get_node_id() != self.node_id:
            raise RuntimeError(f"the Ray Train controller runs on another node than its tuning trial, so it cannot "
                               f"hand the trial its rows through {self.path}: this Ray version places the "
                               "controller differently; pin Ray to the version in pyproject.toml")
        row = dict(metrics[0])
        if checkpoint is not None:
            row["checkpoint_path"] = checkpoint.path
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")


def forward_rows(path: str, offset: int, report) -> int:
    """Call `report(row)` for each whole line of `path` after byte `offset`; returns the offset after them (a line
    still being written stays for the next call)."""
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1
    for line in data[:end].splitlines():
        report(json.loads(line))
    return offset + end


def rows_folder() -> Path:
    """This node's folder of trials' row files (`RowChannel`), `<pid>-<random>.jsonl` each. A trial removes its
    own file when its run ends; Tune ends the process of a trial it stops (ASHA) without unwinding it, so each
    new trial first removes the files of trial processes no longer alive."""
    folder = Path(tempfile.gettempdir()) / "trainyard-trial-rows"
    folder.mkdir(exist_ok=True)
    for leftover in folder.glob("*.jsonl"):
        try:
            os.kill(int(leftover.name.split("-", 1)[0]), 0)
        except ProcessLookupError:
            leftover.unlink(missing_ok=True)
        except (ValueError, OSError):     # not ours to judge (another user's process, a foreign name)
            pass
    return folder


def run_reporting(train, report, wait_s: float = ROW_WAIT_S) -> Any:
    """Run `train(channel)` in a thread, with `channel` a `RowChannel`, and `report` each row it hands over, in
    order, from this thread (the trial's: Tune's `tune.report` belongs there). Returns what `train` returned, or
    raises what it raised, once every row it reported has been passed on."""
    fd, path = tempfile.mkstemp(prefix=f"{os.getpid()}-", suffix=".jsonl", dir=rows_folder())
    os.close(fd)
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = train(RowChannel(path))
        except BaseException as exc:     # handed to the trial's thread below
            outcome["error"] = exc

    worker = threading.Thread(target=run, name="trainyard-trial-run", daemon=True)
    worker.start()
    offset = 0
    try:
        while worker.is_alive():
            worker.join(wait_s)
            offset = forward_rows(path, offset, report)
        forward_rows(path, offset, report)
    finally:
        Path(path).unlink(missing_ok=True)
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


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
                                        checkpoint_epochs=1, checkpoint_seconds=None)
    run_reporting(lambda channel: fit(
        spec, prepared, storage_path=os.path.join(experiment_dir, TRAIN_DIR), run_name=run_name(trial_id),
        config=worker_config, callbacks=[channel], progress=lambda *_: None,
        # The search's driver gives back the placement group of a trial ASHA stops (tuning/_placement.py).
        trainer=default_trainer(spec, placement_cleaner=False)), tune.report)
