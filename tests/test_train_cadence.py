"""When a worker checkpoints (train.checkpoint_every) and how `fit` and an early run set the controller's poll
interval; no Ray."""
from __future__ import annotations

import os

import pytest

from jobs.spec import SpecError, validate_spec
from jobs.train import POLL_ENV, PREEMPTION_ENV, controller_env, controller_poll_s, epoch_floor_s, worker_config
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


def test_a_run_whose_epochs_outlast_a_floor_is_polled_less_often_up_to_a_limit():
    """The poll grows with a floor under the epoch (`epoch_floor_s`), never past LONG_POLL_S, never under the
    per-worker interval; a pretrained encoder keeps its own. Small tables keep the fast poll: their epochs are
    shorter than any interval that would save CPU."""
    from jobs.model import model_config
    from jobs.spec import ModelSpec
    from jobs.train import LONG_POLL_S, PRETRAINED_POLL_S, STEP_FLOOR_S

    assert controller_poll_s(1, epoch_floor=0.01) == 0.02 and controller_poll_s(1, epoch_floor=0.09) == 0.09
    assert controller_poll_s(1, epoch_floor=30.0) == LONG_POLL_S == 0.25
    assert controller_poll_s(3, epoch_floor=0.05) == pytest.approx(0.06)          # the group's interval wins
    assert controller_poll_s(20, epoch_floor=30.0) == pytest.approx(0.4)         # ... above LONG_POLL_S too
    assert controller_poll_s(1, pretrained=True, epoch_floor=0.1) == PRETRAINED_POLL_S
    mlp = lambda width, hidden: model_config(ModelSpec(hidden=hidden), width, 2)  # noqa: E731
    # train_throughput.py's table (140,002 train rows, 10 features, [128, 64], batch 256, 2 CPUs): epochs of 0.5-1 s
    # on this host; a floor of ~0.1 s, and so the poll.
    bench = epoch_floor_s(140_002, 256, mlp(10, [128, 64]), 2, use_gpu=False)
    assert 0.05 < bench < 0.15 and controller_poll_s(1, epoch_floor=bench) == bench
    # 20,000 rows (14,000 to train, ~94 ms epochs here) and less: the fast poll, as before.
    assert controller_poll_s(1, epoch_floor=epoch_floor_s(14_000, 256, mlp(30, [128, 64]), 1, False)) == 0.02
    assert epoch_floor_s(140_002, 256, mlp(10, [128, 64]), 2, use_gpu=True) == 0.0     # a GPU's steps: no floor
    assert epoch_floor_s(0, 256, mlp(10, [128, 64]), 2, use_gpu=False) == 0.0
    # Other kinds count their batches alone; more CPUs make the flops part smaller, not the batches'.
    assert epoch_floor_s(1000, 10, {"kind": "cnn", "hidden": [64]}, 1, False) == pytest.approx(100 * STEP_FLOOR_S)
    assert (100 * STEP_FLOOR_S < epoch_floor_s(1000, 10, mlp(10, [128]), 8, False)
            < epoch_floor_s(1000, 10, mlp(10, [128]), 1, False))


def test_the_floors_weights_are_the_networks_and_its_figures_are_under_this_machines():
    """`mlp_weights` counts what `build_model` builds; a step, and a row's flops, take longer here than the floor
    assumes (its constants are meant to stay under a faster CPU's figures too: ~4x under this 2-core host's)."""
    import time

    import torch

    from jobs.model import build_model, model_config
    from jobs.spec import ModelSpec
    from jobs.train import CPU_FLOPS, STEP_FLOOR_S, mlp_weights

    for width, hidden in ((1, [16]), (30, [128, 64]), (7, [])):
        cfg = model_config(ModelSpec(hidden=hidden, dropout=0.1), width, 3)
        assert mlp_weights(cfg) == sum(p.numel() for p in build_model(cfg).parameters())
    assert mlp_weights({"kind": "text", "hidden": [64]}) == 0 and mlp_weights(None) == 0
    threads = torch.get_num_threads()
    for width, hidden, batch in ((4, [16], 16), (4, [16], 4096), (30, [128, 64], 4096)):
        model = build_model(model_config(ModelSpec(hidden=hidden), width, 2))
        opt = torch.optim.AdamW(model.parameters(), 1e-3)
        x, y = torch.randn(batch, width), torch.randint(0, 2, (batch,))
        times = []
        for _ in range(25):
            start = time.perf_counter()
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            times.append(time.perf_counter() - start)
        step = min(times[5:])                        # the fastest step: the floor must be under even that
        assert step > STEP_FLOOR_S, (width, hidden, batch, step)
        flops = batch * 6 * mlp_weights(model_config(ModelSpec(hidden=hidden), width, 2))
        assert flops / step < CPU_FLOPS * threads, (width, hidden, batch, flops / step)


def test_an_early_run_counts_its_parquet_footers_and_keeps_the_fast_poll_where_it_cannot(tmp_path, monkeypatch):
    """Before the data is read: the train share of the rows the Parquet footers hold (at most FOOTERS_READ files),
    the spec's batch and hidden layers; 0 (the fast poll) for CSV, a GPU, images and a path that is not there."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs import early
    from jobs.early import early_epoch_floor_s

    table = pa.table({"x": list(range(10_000)), "y": [i % 2 for i in range(10_000)]})
    (tmp_path / "pq").mkdir()
    for i in range(3):
        pq.write_table(table, tmp_path / "pq" / f"part-{i}.parquet")
    (tmp_path / "csv").mkdir()
    table.to_pandas().to_csv(tmp_path / "csv" / "t.csv", index=False)
    spec = lambda path, **data: validate_spec({"name": "x", "data": {"path": str(path), "label": "y", **data},  # noqa: E731
                                               "model": {"hidden": [16]}, "train": {"batch_size": 32}})
    want = epoch_floor_s(21_000, 32, {"kind": "mlp", "input_dim": 1, "hidden": [16], "output_dim": 1}, 1, False)
    assert early_epoch_floor_s(spec(tmp_path / "pq"), use_gpu=False) == pytest.approx(want) and want > 0.02
    split = {"val": 0.1, "test": 0.0}
    assert early_epoch_floor_s(spec(tmp_path / "pq", split=split), use_gpu=False) == pytest.approx(
        epoch_floor_s(27_000, 32, {"kind": "mlp", "input_dim": 1, "hidden": [16], "output_dim": 1}, 1, False))
    assert early_epoch_floor_s(spec(tmp_path / "pq"), use_gpu=True) == 0.0
    assert early_epoch_floor_s(spec(tmp_path / "csv"), use_gpu=False) == 0.0
    assert early_epoch_floor_s(spec(tmp_path / "missing"), use_gpu=False) == 0.0
    monkeypatch.setattr(early, "FOOTERS_READ", 2)
    assert early_epoch_floor_s(spec(tmp_path / "pq"), use_gpu=False) == pytest.approx(
        epoch_floor_s(14_000, 32, {"kind": "mlp", "input_dim": 1, "hidden": [16], "output_dim": 1}, 1, False))
    (tmp_path / "pq" / "part-0-bad.parquet").write_bytes(b"not parquet")      # the ingest names it; the run polls fast
    assert early_epoch_floor_s(spec(tmp_path / "pq"), use_gpu=False) == 0.0
