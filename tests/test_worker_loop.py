"""The training loop's core on plain tensors, without Ray Train: one epoch's step, validation, the weight
average inside it, and what a regression's metrics are reported in (the label's own units)."""
from __future__ import annotations

import contextlib

import pytest
import torch

from jobs.contracts import WorkerConfig
from jobs.model import build_model
from jobs.worker import WeightAverage, _loss_fn, _optimizer, train_epoch, validate

NO_AMP = contextlib.nullcontext
CPU = torch.device("cpu")


def config(task: str = "classification", **over) -> WorkerConfig:
    out = 2 if task == "classification" else 1
    base = dict(task=task, model={"kind": "mlp", "input_dim": 4, "output_dim": out, "hidden": [16],
                                  "dropout": 0.0, "activation": "relu"},
                epochs=8, batch_size=32, lr=0.05, weight_decay=0.0, optimizer="adamw", lr_schedule="constant",
                loss="mse", seed=0, cache="memory", output_dim=out, label_center=0.0, label_scale=1.0,
                early_stop_metric="val_loss", early_stop_mode="min", use_gpu=False)
    return WorkerConfig(**{**base, **over})


def data(task: str, n: int = 256, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    signal = x[:, 0] - 2 * x[:, 1]
    return x, ((signal > 0).long() if task == "classification" else signal)


def batches(x, y, bs):
    return ((x[i:i + bs], y[i:i + bs]) for i in range(0, len(x), bs))


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_epochs_on_tensors_learn_a_separable_signal(task):
    cfg = config(task)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model)
    optimizer, loss_fn = _optimizer(cfg, model.parameters()), _loss_fn(cfg, CPU)
    x, y = data(task)
    xv, yv = data(task, 128, seed=1)
    first = validate(model, xv, yv, cfg, loss_fn, CPU, NO_AMP)
    epochs = [train_epoch(model, batches(x, y, cfg.batch_size), optimizer, loss_fn, cfg, CPU, NO_AMP)
              for _ in range(cfg.epochs)]
    last = validate(model, xv, yv, cfg, loss_fn, CPU, NO_AMP)
    assert [e["seen"] for e in epochs] == [256] * cfg.epochs and [e["steps"] for e in epochs] == [8] * cfg.epochs
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"] / 2
    assert epochs[-1]["compute_dtype"] == "float32"
    assert last["val_loss"] < first["val_loss"] / 2
    if task == "classification":
        assert last["val_accuracy"] > 0.9 and set(last) >= {"val_f1", "val_auc", "val_precision", "val_recall"}
    else:
        assert last["val_r2"] > 0.9 and set(last) >= {"val_mae", "val_rmse"}


def test_no_batches_is_an_empty_epoch_not_an_error():
    cfg = config()
    model = build_model(cfg.model)
    done = train_epoch(model, iter(()), _optimizer(cfg, model.parameters()), _loss_fn(cfg, CPU), cfg, CPU, NO_AMP)
    assert (done["seen"], done["steps"], done["train_loss"], done["compute_dtype"]) == (0, 0, 0.0, None)


def test_regression_metrics_are_in_the_labels_units():
    cfg = config("regression", label_center=100.0, label_scale=10.0)
    model = build_model(cfg.model)
    x, y = data("regression", 64)
    scaled = validate(model, x, y, cfg, _loss_fn(cfg, CPU), CPU, NO_AMP)
    plain = validate(model, x, y, config("regression"), _loss_fn(cfg, CPU), CPU, NO_AMP)
    assert scaled["val_mae"] == pytest.approx(10 * plain["val_mae"], rel=1e-5)
    assert scaled["val_loss"] == pytest.approx(plain["val_loss"])     # the loss stays on the standardised scale


def test_the_weight_average_follows_every_step():
    cfg = config(ema_epochs=1.0)
    model = build_model(cfg.model)
    average = WeightAverage(model, cfg.ema_epochs)
    x, y = data("classification")
    train_epoch(model, batches(x, y, cfg.batch_size), _optimizer(cfg, model.parameters()), _loss_fn(cfg, CPU),
                cfg, CPU, NO_AMP, average=average)
    assert average.steps == 8
    live = model.state_dict()
    assert any(not torch.equal(average.state[k], live[k]) for k in live)   # an average, not a copy


def test_a_checkpoint_at_a_new_best_holds_the_weights_once(tmp_path):
    """A checkpoint stores the live weights and the best epoch's: at a new best they are the same tensors, which
    torch.save writes once (a 1-epoch MiniLM fine-tune's checkpoint held 2 x 91 MB of weights)."""
    from jobs.contracts import TrainState
    from jobs.worker import best_to_save

    model = build_model({"kind": "mlp", "input_dim": 64, "output_dim": 2, "hidden": [256, 256], "dropout": 0.0,
                         "activation": "relu"})
    kept = {k: v.detach().clone() for k, v in model.state_dict().items()}      # the copy the loop keeps
    sizes = {}
    for name, best_epoch in (("new best", 3), ("earlier best", 2)):
        state = TrainState(model=model.state_dict(), optimizer={}, epoch=2, history=[], best=0.1,
                           best_epoch=best_epoch, bad_epochs=0, best_state=best_to_save(kept, best_epoch, 2, model),
                           best_val={})
        folder = tmp_path / name.replace(" ", "-")
        folder.mkdir()
        sizes[name] = state.save(folder).stat().st_size
        loaded = TrainState.load(folder)
        assert all(torch.equal(loaded.best_state[k], kept[k]) and torch.equal(loaded.model[k], kept[k]) for k in kept)
    assert sizes["new best"] < 0.55 * sizes["earlier best"], sizes
    assert best_to_save(None, -1, 0, model).keys() == kept.keys()     # no best yet: the scored weights


def test_a_finished_runs_large_checkpoints_are_said_with_how_to_delete_them(tmp_path, monkeypatch):
    from jobs import pipeline

    run = tmp_path / "ray" / "train-1"
    for name in ("checkpoint_000000", "checkpoint_000001"):
        (run / name).mkdir(parents=True)
        (run / name / "state.pt").write_bytes(b"x" * 300_000)
    (run / "result.json").write_bytes(b"x" * 900_000)         # not a checkpoint: not counted
    monkeypatch.setattr(pipeline, "LARGE_CHECKPOINTS_MB", 0.5)
    assert pipeline.checkpoint_note(str(run)) == (
        f"[bundle] note: 2 Ray checkpoint(s), 1 MB, are kept under {run}: they let a run that a worker's failure "
        "cut short go on; this one finished and its bundle holds the best weights, so they may be deleted: find "
        f"{run} -name 'checkpoint_*' -type d -prune -exec rm -r {{}} +")
    # A `trainyard train` stopped by Ctrl-C: nothing takes its run up again (226 MB were left without a word).
    assert pipeline.checkpoint_note(str(run), finished=False) == (
        f"[train] note: the interrupted run left 2 Ray checkpoint(s), 1 MB, under {run}; `trainyard train` starts "
        f"every run afresh, so nothing uses them: rm -r {run}")
    monkeypatch.setattr(pipeline, "LARGE_CHECKPOINTS_MB", 1)
    assert pipeline.checkpoint_note(str(run)) is None
    assert pipeline.checkpoint_note("s3://bucket/run") is None and pipeline.checkpoint_note("") is None
