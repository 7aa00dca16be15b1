"""When a worker checkpoints (train.checkpoint_every) and how `fit` sets the controller's poll interval; no Ray."""
from __future__ import annotations

import os

import pytest

from jobs.spec import SpecError, validate_spec
from jobs.train import POLL_ENV, PREEMPTION_ENV, controller_env, controller_poll_s, worker_config
from jobs.worker import checkpoint_due
from tests.test_train_contracts import _prepared
from tests.test_worker_loop import config

BASE = {"name": "x", "data": {"path": "d", "label": "y"}}


def test_checkpoint_every_takes_epochs_or_seconds_and_names_itself_when_wrong():
    assert validate_spec(BASE).train.checkpoint_cadence == (None, 10.0)       # the default: 10 s
    assert validate_spec({**BASE, "train": {"checkpoint_every": 3}}).train.checkpoint_cadence == (3, None)
    assert validate_spec({**BASE, "train": {"checkpoint_every": "2.5s"}}).train.checkpoint_cadence == (None, 2.5)
    for bad in (0, -2, 2.5, True, "5", "0s", "1m", "often", None):
        with pytest.raises(SpecError) as err:
            validate_spec({**BASE, "train": {"checkpoint_every": bad}}, "s.yaml")
        (line,) = err.value.problems
        assert line.startswith("s.yaml: train.checkpoint_every: must be a number of epochs") and "'30s'" in line
        assert f"(got {bad!r})" in line


def test_the_worker_config_carries_the_cadence():
    prepared = _prepared()
    prepared.preprocessor.shape = None                     # a table
    cfg = worker_config(validate_spec({**BASE, "train": {"checkpoint_every": 4}}), prepared, use_gpu=False)
    assert (cfg.checkpoint_epochs, cfg.checkpoint_seconds) == (4, None)
    cfg = worker_config(validate_spec({**BASE, "train": {"checkpoint_every": "30s"}}), prepared, use_gpu=False)
    assert (cfg.checkpoint_epochs, cfg.checkpoint_seconds) == (None, 30.0)


def test_checkpoint_due_on_epochs_on_seconds_and_always_at_the_last_epoch():
    every3 = config(checkpoint_epochs=3)
    assert [checkpoint_due(every3, e, 0.0, last=False) for e in range(7)] == [
        False, False, True, False, False, True, False]
    assert checkpoint_due(every3, 0, 0.0, last=True)            # the planned last epoch, or an early stop
    assert all(checkpoint_due(config(), e, 0.0, last=False) for e in range(5))   # WorkerConfig's default: 1
    timed = config(checkpoint_epochs=None, checkpoint_seconds=10.0)
    assert not checkpoint_due(timed, 5, 9.99, last=False)
    assert checkpoint_due(timed, 5, 10.0, last=False) and checkpoint_due(timed, 0, 0.0, last=True)


def test_fit_sets_the_controllers_environment_for_the_run_and_restores_it(monkeypatch):
    assert [controller_poll_s(n) for n in (1, 2, 3, 10, 50, 200)] == pytest.approx([0.02, 0.04, 0.06, 0.2, 1.0, 1.0])
    monkeypatch.delenv(POLL_ENV, raising=False)
    monkeypatch.delenv(PREEMPTION_ENV, raising=False)
    with controller_env(2, embedded=False) as env:
        assert env == {POLL_ENV: "0.04"} and os.environ[POLL_ENV] == "0.04" and PREEMPTION_ENV not in os.environ
    assert POLL_ENV not in os.environ
    with controller_env(1, embedded=False, pretrained=True) as env:     # a pretrained encoder's epochs are long
        assert env == {POLL_ENV: "0.25"} and os.environ[POLL_ENV] == "0.25"
    assert POLL_ENV not in os.environ
    with pytest.raises(RuntimeError):                      # restored when the run fails, too
        with controller_env(10, embedded=True) as env:
            assert env == {POLL_ENV: "0.2", PREEMPTION_ENV: "0"} == {k: os.environ[k] for k in env}
            raise RuntimeError("training failed")
    assert POLL_ENV not in os.environ and PREEMPTION_ENV not in os.environ
    # A value the user exported is theirs: used as it is, and left in place.
    monkeypatch.setenv(POLL_ENV, "0.5")
    monkeypatch.setenv(PREEMPTION_ENV, "1")
    with controller_env(2, embedded=True) as env:
        assert env == {POLL_ENV: "0.5", PREEMPTION_ENV: "1"}
    assert os.environ[POLL_ENV] == "0.5" and os.environ[PREEMPTION_ENV] == "1"
