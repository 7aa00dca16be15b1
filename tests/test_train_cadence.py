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


def test_the_start_line_says_when_the_batch_is_larger_than_a_workers_rows():
    from jobs.train import start_line

    prepared = _prepared()                                 # 60 train rows
    prepared.preprocessor.shape = None
    small = validate_spec({**BASE, "train": {"batch_size": 30, "workers": 2}})
    assert "more than" not in start_line(small, worker_config(small, prepared, use_gpu=False), prepared)
    big = validate_spec({**BASE, "train": {"batch_size": 100_000, "workers": 2}})
    line = start_line(big, worker_config(big, prepared, use_gpu=False), prepared)
    assert line.endswith("batch 100000, lr 0.001, shard in memory (the batch is more than the 30 train row(s) per "
                         "worker: one step of 30 an epoch; lower train.batch_size for more steps)"), line


def test_the_start_line_names_the_encoder_what_of_it_trains_and_the_heads_rate():
    from jobs.train import start_line

    text = {**BASE, "model": {"kind": "text", "encoder": "models/minilm", "freeze_layers": 4}}
    assert start_line(validate_spec(text), config(lr=5e-5, head_lr=1e-3, batch_size=32)).endswith(
        "batch 32, lr 5e-05 (head 0.001), shard in memory; encoder models/minilm, its embeddings and first 4 "
        "layer(s) frozen")
    scratch = {**BASE, "model": {"kind": "text", "encoder": "scratch"}}
    assert start_line(validate_spec(scratch), config()).endswith(
        "shard in memory; a transformer trained from scratch (model.scratch)")
    assert start_line(validate_spec(BASE), config()).endswith("lr 0.05, shard in memory")
    # a regression's loss is said (a huber run and an mse run started with the same line)
    assert start_line(validate_spec(BASE), config(task="regression", loss="huber")).endswith(
        "lr 0.05, loss huber, shard in memory")


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


def test_a_run_whose_epochs_outlast_a_floor_is_polled_less_often_up_to_a_limit(monkeypatch):
    """The poll grows with a floor under the epoch (`epoch_floor_s`), never past LONG_POLL_S, never under the
    per-worker interval; a pretrained encoder keeps its own. Small tables keep the fast poll: their epochs are
    shorter than any interval that would save CPU."""
    from jobs.model import model_config
    from jobs.spec import ModelSpec
    from jobs.train import BATCH_FLOOR_S, LONG_POLL_S, PRETRAINED_POLL_S

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert controller_poll_s(1, epoch_floor=0.01) == 0.02 and controller_poll_s(1, epoch_floor=0.09) == 0.09
    assert controller_poll_s(1, epoch_floor=30.0) == LONG_POLL_S == 0.25
    assert controller_poll_s(3, epoch_floor=0.05) == pytest.approx(0.06)          # the group's interval wins
    assert controller_poll_s(20, epoch_floor=30.0) == pytest.approx(0.4)         # ... above LONG_POLL_S too
    assert controller_poll_s(1, pretrained=True, epoch_floor=0.1) == PRETRAINED_POLL_S
    mlp = lambda width, hidden: model_config(ModelSpec(hidden=hidden), width, 2)  # noqa: E731
    # train_throughput.py's table (140,002 train rows, ~12 features, [128, 64], batch 256, 2 CPUs): epochs of
    # 0.5-1 s on this host; a floor of ~0.035 s, and so the poll.
    bench = epoch_floor_s(140_002, 256, mlp(12, [128, 64]), 2, use_gpu=False)
    assert 0.03 < bench < 0.04 and controller_poll_s(1, epoch_floor=bench) == bench
    # 20,000 rows (14,000 to train, ~94 ms epochs here) and less: the fast poll, as before.
    assert controller_poll_s(1, epoch_floor=epoch_floor_s(14_000, 256, mlp(30, [128, 64]), 1, False)) == 0.02
    assert epoch_floor_s(140_002, 256, mlp(12, [128, 64]), 2, use_gpu=True) == 0.0     # a GPU's steps: no floor
    assert epoch_floor_s(0, 256, mlp(12, [128, 64]), 2, use_gpu=False) == 0.0
    # Other kinds count their batches alone; more threads make the flops part smaller, not the batches'.
    assert epoch_floor_s(1000, 10, {"kind": "cnn", "hidden": [64]}, 1, False) == pytest.approx(100 * BATCH_FLOOR_S)
    wide = epoch_floor_s(1000, 10, mlp(500, [512]), 1, False)
    assert 100 * BATCH_FLOOR_S < epoch_floor_s(1000, 10, mlp(500, [512]), 8, False) < wide
    monkeypatch.setenv("OMP_NUM_THREADS", "8")           # Ray leaves an exported value: the worker's threads
    assert epoch_floor_s(1000, 10, mlp(500, [512]), 1, False) == pytest.approx(
        epoch_floor_s(1000, 10, mlp(500, [512]), 8, False))


def test_a_runs_floor_is_per_worker_with_its_own_batch_size():
    """`fit`'s floor (`run_epoch_floor_s`): the train rows split over the workers, the batch size the workers get
    (a trial's, when it samples one), nothing on a GPU."""
    import dataclasses

    from jobs.train import run_epoch_floor_s

    prepared = _prepared()                                   # 60 train rows
    prepared.preprocessor.shape = None
    spec = validate_spec({**BASE, "train": {"workers": 2, "batch_size": 4, "cpus_per_worker": 1}})
    cfg = worker_config(spec, prepared, use_gpu=False)
    assert run_epoch_floor_s(spec, prepared, cfg) == pytest.approx(epoch_floor_s(30, 4, cfg.model, 1, False))
    trial = worker_config(spec, prepared, use_gpu=False, overrides={"batch_size": 2})
    assert run_epoch_floor_s(spec, prepared, trial) == pytest.approx(epoch_floor_s(30, 2, cfg.model, 1, False))
    assert run_epoch_floor_s(spec, prepared, trial) > run_epoch_floor_s(spec, prepared, cfg)
    assert run_epoch_floor_s(spec, prepared, dataclasses.replace(cfg, use_gpu=True)) == 0.0


def test_the_floors_flops_are_the_networks_and_its_figures_are_under_this_machines():
    """`mlp_flops` counts what `build_model` builds; the training loop's cheapest batch, and an MLP's flops, take
    longer on this machine's one thread than the floor assumes (its constants are meant to stay under a faster
    CPU's figures too: ~3x under this 2-core host's for a batch, ~20x for the flops)."""
    import time

    import torch

    from jobs.model import build_model, model_config
    from jobs.spec import ModelSpec
    from jobs.train import BATCH_FLOOR_S, CPU_FLOPS, mlp_flops
    from jobs.worker import _loss_fn, _optimizer, train_epoch
    from tests.test_worker_loop import CPU, NO_AMP, batches, data

    for width, hidden in ((1, [16]), (30, [128, 64]), (7, [])):
        cfg = model_config(ModelSpec(hidden=hidden, dropout=0.1), width, 3)
        layers = [m for m in build_model(cfg).modules() if isinstance(m, torch.nn.Linear)]
        assert mlp_flops(cfg) == sum((4 if i == 0 else 6) * sum(p.numel() for p in m.parameters())
                                     for i, m in enumerate(layers))
    assert mlp_flops({"kind": "text", "hidden": [64]}) == 0 and mlp_flops(None) == 0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # The cheapest batch: a linear model, SGD, inside a gradient accumulation (no optimizer step).
        cfg = config(model={"kind": "mlp", "input_dim": 4, "output_dim": 2, "hidden": [], "dropout": 0.0,
                            "activation": "relu"}, optimizer="sgd", grad_accum=8, batch_size=1, steps_per_epoch=64)
        model = build_model(cfg.model)
        optimizer, loss_fn = _optimizer(cfg, model.parameters()), _loss_fn(cfg, CPU)
        x, y = data("classification", 512)
        per_batch = min(train_epoch(model, batches(x, y, 1), optimizer, loss_fn, cfg, CPU, NO_AMP)["seconds"] / 512
                        for _ in range(4))
        assert per_batch > BATCH_FLOOR_S, per_batch
        # The most flops a second: a wide MLP at a large batch.
        cfg = config(model=model_config(ModelSpec(hidden=[256, 256]), 64, 2), batch_size=4096, steps_per_epoch=1)
        model = build_model(cfg.model)
        optimizer, loss_fn = _optimizer(cfg, model.parameters()), _loss_fn(cfg, CPU)
        x = torch.randn(4096, 64)
        y = (x[:, 0] > 0).long()
        seconds = min(train_epoch(model, [(x, y)], optimizer, loss_fn, cfg, CPU, NO_AMP)["seconds"] for _ in range(6))
        assert 4096 * mlp_flops(cfg.model) / seconds < CPU_FLOPS, 4096 * mlp_flops(cfg.model) / seconds
    finally:
        torch.set_num_threads(threads)


def test_an_early_run_counts_its_parquet_footers_and_keeps_the_fast_poll_where_it_cannot(tmp_path, monkeypatch):
    """Before the data is read: the train share of the labelled rows the Parquet footers hold (at most FOOTERS_READ
    files), the spec's batch and hidden layers; 0 (the fast poll) for CSV, a GPU, a path that is not there, and
    labels the footers cannot count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs import early
    from jobs.early import early_epoch_floor_s

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    table = pa.table({"x": list(range(10_000)), "y": [i % 2 for i in range(10_000)]})
    (tmp_path / "pq").mkdir()
    for i in range(3):
        pq.write_table(table, tmp_path / "pq" / f"part-{i}.parquet")
    (tmp_path / "csv").mkdir()
    table.to_pandas().to_csv(tmp_path / "csv" / "t.csv", index=False)
    spec = lambda path, **data: validate_spec({"name": "x", "data": {"path": str(path), "label": "y", **data},  # noqa: E731
                                               "model": {"hidden": [16]}, "train": {"batch_size": 32}})
    floor = lambda rows: epoch_floor_s(rows, 32, {"kind": "mlp", "input_dim": 1, "hidden": [16], "output_dim": 1},  # noqa: E731
                                       1, False)
    assert early_epoch_floor_s(spec(tmp_path / "pq"), use_gpu=False) == pytest.approx(floor(21_000))
    assert floor(21_000) > 0.02
    assert early_epoch_floor_s(spec(tmp_path / "pq", split={"val": 0.1, "test": 0.0}), use_gpu=False) == pytest.approx(
        floor(27_000))
    assert early_epoch_floor_s(spec(tmp_path / "pq"), use_gpu=True) == 0.0
    assert early_epoch_floor_s(spec(tmp_path / "csv"), use_gpu=False) == 0.0
    assert early_epoch_floor_s(spec(tmp_path / "missing"), use_gpu=False) == 0.0
    # Rows without a label are dropped by the ingest: not counted. Labels a footer cannot count: the fast poll.
    pq.write_table(pa.table({"x": list(range(10_000)), "y": [None] * 9_000 + [1] * 1_000}),
                   tmp_path / "pq" / "part-3.parquet")
    assert early_epoch_floor_s(spec(tmp_path / "pq"), use_gpu=False) == pytest.approx(floor(21_700))
    for name, odd in (("blank", pa.table({"x": [1, 2], "y": ["yes", " "]})), ("unlabelled", pa.table({"x": [1, 2]}))):
        (tmp_path / name).mkdir()
        pq.write_table(table, tmp_path / name / "a.parquet")
        pq.write_table(odd, tmp_path / name / "b.parquet")
        assert early_epoch_floor_s(spec(tmp_path / name), use_gpu=False) == 0.0, name
    monkeypatch.setattr(early, "FOOTERS_READ", 2)
    assert early_epoch_floor_s(spec(tmp_path / "pq"), use_gpu=False) == pytest.approx(floor(14_000))
    (tmp_path / "pq" / "part-0-bad.parquet").write_bytes(b"not parquet")  # the ingest names it; the run polls fast
    assert early_epoch_floor_s(spec(tmp_path / "pq"), use_gpu=False) == 0.0


def test_balanced_class_weights_for_images_come_from_the_train_splits_counts():
    """An image preprocessor fits pixels only (no class counts): `class_weight: balanced`, which trainyard's own
    one-class warning advises, failed every image job with KeyError 'class_counts'."""
    from jobs.images import ImagePreprocessor
    from jobs.train import class_weights

    pre = ImagePreprocessor(label="label", classes=["dent", "ok", "scratch"], size=[8, 8], channels=3,
                            stats={"train_rows": 160})
    weights = class_weights(pre, "balanced", {"dent": 20, "ok": 100, "scratch": 40})
    assert weights == pytest.approx([160 / (3 * 20), 160 / (3 * 100), 160 / (3 * 40)])
    assert class_weights(pre, "none", {}) is None
