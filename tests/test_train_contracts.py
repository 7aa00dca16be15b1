"""What crosses a process boundary in training, without Ray: the worker config and the checkpoint state."""
import dataclasses
import re
from types import SimpleNamespace

import pytest
import torch

from jobs.contracts import Augment, PreparedData, TrainState, WorkerConfig
from jobs.spec import SpecError, validate_spec
from jobs.train import worker_config


def _prepared(task="classification", classes=("a", "b"), shape=None) -> PreparedData:
    pre = SimpleNamespace(task=task, classes=list(classes) if classes else None, label="y", feature_dim=6,
                          output_dim=len(classes) if classes else 1, label_center=3.0, label_scale=2.0,
                          stats={"class_counts": {c: 10 * (i + 1) for i, c in enumerate(classes or ())}})
    if shape is not None:
        pre.shape = shape
    counts = {"train": {c: 10 * (i + 1) for i, c in enumerate(classes or ())}}
    return PreparedData(ingest=SimpleNamespace(split_rows={"train": 60}, class_counts=counts), preprocessor=pre,
                        train_ds=None, val_ds=None, test_raw=None)


def _spec(**train):
    return validate_spec({"name": "x", "train": {"class_weight": "balanced", **train},
                          "data": {"path": "d", "label": "y", "format": "images", "augment": {"hflip": True}}})


def test_worker_config_travels_as_plain_data_and_comes_back_equal():
    config = worker_config(_spec(), _prepared(shape=[1, 2, 3]), use_gpu=False,
                           overrides={"lr": 0.5, "hidden": [7], "batch_size": 16})
    assert config.lr == 0.5 and config.batch_size == 16 and config.model["hidden"] == [7]
    assert config.augment == Augment(shape=[1, 2, 3], hflip=True, random_crop=0)
    assert config.class_weights == pytest.approx([1.5, 0.75])
    assert config.epoch_lines is True and config.use_gpu is False
    raw = config.to_dict()
    assert raw["augment"] == {"shape": [1, 2, 3], "hflip": True, "random_crop": 0}
    assert all(isinstance(v, (str, int, float, bool, list, dict, type(None))) for v in raw.values())
    assert WorkerConfig.from_dict(raw) == config
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lr = 1.0
    with pytest.raises(TypeError, match="fault_kill_epoch"):
        WorkerConfig.from_dict({**raw, "fault_kill_epoch": 2})      # no keys beyond the declared fields


def test_worker_config_refuses_an_early_stop_metric_the_label_cannot_give():
    with pytest.raises(SpecError, match=r"train.early_stop.metric is 'val_auc', which needs a binary label"):
        worker_config(_spec(early_stop={"metric": "val_auc"}), _prepared(classes=("a", "b", "c")), use_gpu=False)
    with pytest.raises(SpecError, match=r"train.early_stop.metric is 'val_rmse', a regression metric"):
        worker_config(_spec(early_stop={"metric": "val_rmse"}), _prepared(), use_gpu=False)


def test_train_state_checkpoint_loads_without_pickle(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(4, 3)).sum().backward()
    optimizer.step()
    row = {"epoch": 1, "val_loss": 0.5, "best_val_loss": 0.5, "resumes": 0}
    state = TrainState(model=model.state_dict(), optimizer=optimizer.state_dict(), epoch=0, history=[row],
                       best=0.5, best_epoch=1, bad_epochs=0, best_state=model.state_dict(),
                       best_val={"val_loss": 0.5, "val_confusion_matrix": [[1, 0], [0, 1]]},
                       average={"state": model.state_dict(), "steps": 3, "steps_per_epoch": 3},
                       compute_dtype="float32")
    path = state.save(tmp_path)
    raw = torch.load(path, weights_only=True)          # plain dicts, lists, numbers and tensors only
    assert set(raw) == {f.name for f in dataclasses.fields(TrainState)}
    back = TrainState.load(tmp_path)
    assert back.history == [row] and back.best_epoch == 1 and back.compute_dtype == "float32"
    assert all(torch.equal(back.best_state[k], v) for k, v in model.state_dict().items())
    assert back.optimizer["state"][0]["step"] == optimizer.state_dict()["state"][0]["step"]


def test_train_state_reads_checkpoints_written_before_resumes_and_compute_dtype(tmp_path):
    old = {"model": {}, "optimizer": {}, "epoch": 2, "history": [], "best": None, "best_epoch": -1,
           "bad_epochs": 3, "best_state": {}, "best_val": {}, "average": None}
    torch.save(old, tmp_path / "state.pt")
    state = TrainState.load(tmp_path / "state.pt")
    assert state.resumes == 0 and state.compute_dtype is None and state.bad_epochs == 3


def test_one_worker_ingest_options_are_rays_defaults_without_rays_deprecation_warning():
    """A one-worker run hands its worker Ray Train's default ingest options (`jobs.train.ingest_options`). Ray
    2.60's own `DataConfig.default_ingest_options()` warns that `exclude_resources` is deprecated on every call,
    and that warning reached every `trainyard train` user's terminal."""
    import warnings

    from ray.data import DataContext
    from ray.train import DataConfig

    from jobs.train import EXCLUDE_RESOURCES_WARNING, ingest_options

    ctx = DataContext.get_current().execution_options     # its own first-use warnings are not what this checks
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours = ingest_options()
    assert [str(w.message) for w in caught] == []
    # When this fails, Ray has stopped warning from its own method: drop the filter in `ingest_options`.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rays = DataConfig.default_ingest_options()
    assert [w for w in caught if re.match(EXCLUDE_RESOURCES_WARNING, str(w.message))], [str(w.message) for w in caught]
    for options in (ours, rays):
        assert (options.preserve_order, options.verbose_progress) == (ctx.preserve_order, ctx.verbose_progress)
        assert options.resource_limits == ctx.resource_limits
