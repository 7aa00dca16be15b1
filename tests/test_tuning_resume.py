"""`trainyard tune --resume` after a real driver is interrupted (SIGINT) and then killed (SIGKILL): trials that
ended are never run again, the trial that was cut off continues its Train run from its checkpoint."""
import signal

import pytest

from jobs import bundle as B
from jobs.contracts import TrainState
from trainyard.cli import main
from tests.conftest import write_spec
from tests.tuning_fixtures import (checkpoints, ended_trials, experiment_dir, ray_address, read_results, start_driver,
                                   stop, tuning_spec, wait_for)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def slower_data(tmp_path_factory):
    """Enough rows that an epoch takes a moment: a driver can be stopped while a trial is mid-run."""
    from telemetry import generate, write_shards
    out = tmp_path_factory.mktemp("telemetry-6k")
    write_shards(generate(6000, seed=3), out, 2)
    return out


def _state(train_run) -> TrainState:
    return TrainState.load(train_run / checkpoints(train_run)[-1])


def test_resume_after_sigint_and_sigkill_does_not_repeat_finished_trials(tmp_path, slower_data, ray_session):
    out = tmp_path / "out"
    # One trial at a time and no early stopping: the trials finish in order, each with several epochs. Tiny
    # batches make an epoch take a second or more, so a driver stopped mid-trial really stops mid-run.
    spec = write_spec(tmp_path / "spec.yaml", tuning_spec(
        "resume", slower_data, out, epochs=6, batch_size=2,
        tune={"lr": {"choice": [0.03, 0.01, 0.003]}, "scheduler": "none", "max_concurrent": 1}))

    def train_runs():
        return {p.name.removeprefix("trial-"): p for p in (experiment_dir(out) / "train").glob("trial-*")}

    def one_ended_and_next_running():
        ended = ended_trials(out)
        if not ended:
            return False
        return any(tid not in ended and checkpoints(p) for tid, p in train_runs().items())

    # 1) Ctrl-C once a trial has ended and the next one has checkpointed: the driver saves and exits 130.
    log1 = tmp_path / "driver1.log"
    driver = start_driver(spec, log1)
    wait_for(one_ended_and_next_running, driver, log1, 400, "one trial ended and the next checkpointed")
    assert stop(driver, signal.SIGINT) == 130, log1.read_text()[-3000:]
    # The message gives the command that continues it: the same spec and cluster, and --resume.
    assert f"Continue it with: trainyard tune {spec} --address {ray_address()} --resume" in log1.read_text()
    # the trials not started yet count as unfinished too ("1 trial(s) unfinished" of a 6-sample search, 5 left)
    assert "[tune] interrupted with 2 of 3 trial(s) unfinished (1 of them started)" in log1.read_text()
    ended_1 = ended_trials(out)
    cut_off = [tid for tid, p in train_runs().items() if tid not in ended_1 and checkpoints(p)]
    assert len(ended_1) == 1 and len(cut_off) == 1
    frozen_1 = {tid: checkpoints(train_runs()[tid]) for tid in ended_1}
    epochs_before = [r["epoch"] for r in _state(train_runs()[cut_off[0]]).history]
    assert epochs_before[-1] < 6

    # 2) Resume, then SIGKILL the driver (no chance to save anything) once one more trial has ended.
    log2 = tmp_path / "driver2.log"
    driver = start_driver(spec, log2, "--resume")
    wait_for(lambda: len(ended_trials(out)) >= 2, driver, log2, 400, "a second trial ended")
    stop(driver, signal.SIGKILL)
    # The trial cut off says it resumed, by its id (several trials can run at once).
    assert f"[tune] {cut_off[0]} resumed from the checkpoint of epoch {epochs_before[-1]}" in log2.read_text(), \
        log2.read_text()[-3000:]
    ended_2 = ended_trials(out)
    frozen_2 = {tid: checkpoints(train_runs()[tid]) for tid in ended_2}

    # 3) Resume in this process to the end.
    assert main(["tune", str(spec), "--resume"]) == 0
    rows = read_results(out)
    assert len(rows) == 3 and all(r["status"] == "completed" for r in rows), rows
    assert len(list((out / "ray").glob("tune-*"))) == 1            # one experiment, continued twice
    # Trials that had ended were not trained again: not one new checkpoint in their Train runs.
    for tid, names in {**frozen_1, **frozen_2}.items():
        assert checkpoints(train_runs()[tid]) == names, tid
    # The trial cut off by Ctrl-C continued from its checkpoint: every epoch once, the later ones resumed.
    history = _state(train_runs()[cut_off[0]]).history
    assert [r["epoch"] for r in history] == [1, 2, 3, 4, 5, 6]
    assert history[0]["resumes"] == 0 and history[-1]["resumes"] >= 1
    # The search ended with the bundle of its best trial (results.csv lists the best first): complete, and
    # scored on the test split.
    bundle = B.load(out / "bundle")
    assert bundle.lineage["trial_id"] == rows[0]["trial_id"]
    assert set(bundle.metrics) == {"val", "test"} and bundle.metrics["test"]["accuracy"] > 0.5
