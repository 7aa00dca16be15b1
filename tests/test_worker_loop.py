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
