"""End to end on the real local Ray: `trainyard train` → bundle; predict reproduces metrics.json; a killed
worker is replaced and training resumes from its checkpoint."""
import contextlib
import json
import os
from pathlib import Path

import pandas as pd
import pytest

from jobs import bundle as B
from trainyard.cli import main
from jobs.evaluate import score_records
from jobs.ingest import TEST
from jobs.contracts import TrainState
from jobs.model import build_model
from jobs.pipeline import export_bundle, prepare, storage_root
from jobs.preprocess import FEATURES_COLUMN, LABEL_COLUMN
from jobs.spec import load_spec
from jobs.train import fit, last_state
from jobs.worker import scheduled_lr
from tests.conftest import small_spec, write_spec
from tests.train_helpers import actors_by_class, dies_once_after, recorded, report_recorder

pytestmark = pytest.mark.usefixtures("ray_session")


@pytest.fixture(scope="module")
def classification_run(tmp_path_factory, telemetry_dir):
    tmp = tmp_path_factory.mktemp("cls")
    spec = write_spec(tmp / "spec.yaml", small_spec("cls", telemetry_dir, tmp / "out", workers=2,
                                                    class_weight="balanced",
                                                    early_stop={"metric": "val_f1", "patience": 2}))
    assert main(["train", str(spec), "--set", "train.epochs=4"]) == 0
    return spec, tmp / "out"


def test_train_writes_a_complete_bundle(classification_run):
    _, out = classification_run
    bundle_dir = out / "bundle"
    for name in B.FILES:
        assert (bundle_dir / name).is_file(), name
    assert not any(p.suffix in (".pkl", ".pickle", ".pt") for p in bundle_dir.iterdir())   # no pickle
    metrics = json.loads((bundle_dir / "metrics.json").read_text())
    assert set(metrics) == {"val", "test"}
    for k in ("accuracy", "precision", "recall", "f1", "auc", "confusion_matrix"):
        assert k in metrics["test"], k
    assert metrics["test"]["accuracy"] > 0.5
    schema = json.loads((bundle_dir / "schema.json").read_text())
    names = {f["name"]: f for f in schema["features"]}
    assert names["machine_type"]["type"] == "category" and set(names["machine_type"]["categories"]) == {"L", "M", "H"}
    assert "machine_id" not in names and schema["label"]["classes"] == ["failure", "ok"]
    lineage = json.loads((bundle_dir / "lineage.json").read_text())
    assert lineage["ray"].startswith("2.60") and lineage["data"]["fingerprint"]
    assert lineage["train"]["epochs_run"] >= 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["categorical"] == ["machine_type", "shift"]


def test_a_run_stopped_after_its_ingest_leaves_summary_json_as_the_bundles(classification_run):
    """summary.json was written as soon as the data was read: a run of other data interrupted (or failed) after
    that left it describing rows and columns the served bundle never saw. It is written with the bundle now."""
    from jobs.pipeline import run_train

    spec_path, out = classification_run
    before = (out / "summary.json").read_text()
    spec = load_spec(spec_path, ["train.epochs=2", "data.features.exclude=[shift]"])

    def stop_after_ingest(line: str) -> None:
        if line.startswith("[data]"):
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        run_train(spec, progress=stop_after_ingest)
    assert (out / "summary.json").read_text() == before


def test_bundle_predict_reproduces_test_metrics(classification_run, telemetry_dir):
    spec_path, out = classification_run
    bundle = B.load(out)   # the run's output folder works as well as the bundle folder
    spec = load_spec(spec_path)
    # Rebuild the test split exactly as the job did (seeded, content-hashed) and feed its rows as records.
    from jobs.ingest import ingest
    test_rows = ingest(spec.data, progress=lambda *_: None).split(TEST).to_pandas()
    records = test_rows.to_dict("records")
    recomputed = score_records(bundle, records, "failure")
    written = json.loads((out / "bundle" / "metrics.json").read_text())["test"]
    assert recomputed["confusion_matrix"] == written["confusion_matrix"]
    for k in ("accuracy", "precision", "recall", "f1", "auc"):
        assert recomputed[k] == pytest.approx(written[k], abs=1e-12), k
    pred = bundle.predict(records[:3])
    assert len(pred["predictions"]) == 3 and len(pred["probabilities"][0]) == 2
    assert set(pred["predictions"]) <= {"failure", "ok"}


def test_bundle_predict_handles_missing_and_unknown(classification_run):
    bundle = B.load(classification_run[1] / "bundle")
    out = bundle.predict([{"machine_type": "Z", "rpm": 1500}, {}])
    assert len(out["predictions"]) == 2
    with pytest.raises(B.BundleError, match="list of objects"):
        bundle.predict({"rpm": 1})


def test_regression_end_to_end_on_csv_streaming_from_ray_data(tmp_path, regression_dir):
    spec = write_spec(tmp_path / "reg.yaml", small_spec("reg", regression_dir, tmp_path / "out",
                                                        label="remaining_life_h", epochs=3, cache="stream",
                                                        lr_schedule="cosine", ema_epochs=1,
                                                        early_stop={"metric": "val_rmse", "patience": 3}))
    assert main(["train", str(spec)]) == 0
    bundle = B.load(tmp_path / "out")
    # The cosine schedule ran in the workers: every epoch's learning rate, as the Train checkpoint recorded it.
    state = last_state(Path(bundle.lineage["train"]["run_path"]))
    history = state.history
    assert state.compute_dtype == "float32"      # no autocast on CPU (tests/test_gpu.py checks bf16 on a GPU)
    assert [h["lr"] for h in history] == pytest.approx([scheduled_lr(0.01, "cosine", e, 3) for e in range(3)])
    assert history[0]["lr"] == 0.01 and history[0]["lr"] > history[1]["lr"] > history[2]["lr"] > 0
    # train.ema_epochs: streamed data, so the steps of an epoch were counted in the first one; the average took
    # every step; the last epoch's val_loss is that of the averaged weights, not of the raw ones.
    average = state.average
    assert average["steps_per_epoch"] > 0 and average["steps"] == 3 * average["steps_per_epoch"]
    x_val, y_val = _val_tensors(load_spec(spec))
    model = build_model(bundle.model_config)
    model.load_state_dict(average["state"])
    assert _mse(model, x_val, y_val) == pytest.approx(history[-1]["val_loss"], rel=1e-4)
    model.load_state_dict(state.model)
    assert _mse(model, x_val, y_val) != pytest.approx(history[-1]["val_loss"], rel=1e-4)
    assert bundle.task == "regression"
    metrics = bundle.metrics["test"]
    assert {"mae", "rmse", "r2"} <= set(metrics) and metrics["rmse"] > 0
    rows = pd.read_csv(next(regression_dir.glob("*.csv"))).head(5).to_dict("records")
    preds = bundle.predict(rows)["predictions"]
    assert len(preds) == 5 and all(isinstance(p, float) for p in preds)


def _val_tensors(spec):
    """The validation split as the workers saw it: prepared again from the same files (seeded split)."""
    import numpy as np
    import torch

    val = prepare(spec, progress=lambda *_: None).val_ds.to_pandas()
    return (torch.from_numpy(np.stack(val[FEATURES_COLUMN].to_numpy()).astype(np.float32)),
            torch.from_numpy(val[LABEL_COLUMN].to_numpy().astype(np.float32)))


def _mse(model, x, y) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        return float(torch.nn.functional.mse_loss(model(x).squeeze(1), y))


def test_bad_data_is_a_clear_cli_error(tmp_path, telemetry_dir, capsys):
    spec = write_spec(tmp_path / "s.yaml", small_spec("bad", telemetry_dir, tmp_path / "out", label="failur"))
    assert main(["train", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "label column 'failur'" in err and "did you mean 'failure'?" in err and "Fix data.label" in err
    assert "[ray]" not in err           # said from the file's header, before the 8-9 s of a Ray start
    # A run the cluster cannot hold is bad input (exit 2), said before any data is read (no [ingest] line).
    spec = write_spec(tmp_path / "s2.yaml", small_spec("bad2", telemetry_dir, tmp_path / "out", workers=64))
    assert main(["train", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "needs 64 CPUs" in err and "[ingest]" not in err


def test_every_epoch_reports_checkpoints_keep_the_cadence_and_the_last_one(tmp_path, telemetry_dir, monkeypatch):
    """train.checkpoint_every=4 with an early stop: every epoch reaches the controller (Tune's schedulers need
    them), every fourth carries a checkpoint and so does the last; the final checkpoint holds the best epoch's
    weights even when that epoch had none of its own. The controller ran with the environment `fit` chose,
    and the driver's is as it was. On embedded Ray one worker trains without a SplitCoordinator, a
    preemption watcher or a placement-group cleaner, on the whole train split every epoch. The poll is the one
    for the floor under its epoch (`epoch_floor_s`, raised here so that it is not the fast poll's 0.02 s)."""
    from jobs import train
    from jobs.train import POLL_ENV, PREEMPTION_ENV, configure, controller_poll_s, epoch_floor_s
    from jobs.worker import _loss_fn, validate

    monkeypatch.delenv(POLL_ENV, raising=False)
    monkeypatch.delenv(PREEMPTION_ENV, raising=False)
    monkeypatch.setattr(train, "BATCH_FLOOR_S", 3e-3)
    spec = load_spec(write_spec(tmp_path / "s.yaml", small_spec(
        "cadence", telemetry_dir, tmp_path / "out", epochs=12, checkpoint_every=4,
        early_stop={"metric": "val_loss", "patience": 1})))
    quiet = lambda *_: None
    prepared = prepare(spec, progress=quiet)
    log = str(tmp_path / "reports.jsonl")
    actors_before = actors_by_class()
    outcome = fit(spec, prepared, storage_path=str(tmp_path / "runs"), run_name="cadence", progress=quiet,
                  callbacks=[report_recorder(log)])
    started = actors_by_class() - actors_before
    assert started["TrainController"] == 1 and started["RayTrainWorker"] == 1, started
    for unneeded in ("SplitCoordinator", "PreemptionWatcher", "PlacementGroupCleaner"):
        assert started[unneeded] == 0, started
    assert POLL_ENV not in os.environ and PREEMPTION_ENV not in os.environ
    reports = recorded(log)
    stopped = len(outcome.history)
    assert stopped < 12, "the seeded run is expected to stop early (patience 1)"
    assert [r["epoch"] for r in reports] == list(range(1, stopped + 1))
    assert [r["checkpoint"] for r in reports] == [e % 4 == 0 or e == stopped for e in range(1, stopped + 1)]
    assert all(r["ranks"] == 1 for r in reports)
    config = configure(spec, prepared)
    poll = controller_poll_s(1, epoch_floor=epoch_floor_s(prepared.ingest.split_rows["train"], config.batch_size,
                                                           config.model, spec.train.cpus_per_worker, False))
    assert {(r["poll"], r["preemption"]) for r in reports} == {(f"{poll:g}", "0")} and 0.02 < poll < 0.06
    # Train V2 takes the run's result from its latest checkpointed report: the last epoch's.
    state = last_state(Path(outcome.run_path))
    assert [h["epoch"] for h in state.history] == list(range(1, stopped + 1))
    # The one worker saw every train row once an epoch, and scored every validation row.
    rows = prepared.ingest.split_rows
    assert {round(h["train_samples_per_s"] * h["epoch_time_s"]) for h in outcome.history} == {rows["train"]}
    assert sum(map(sum, outcome.val_metrics["val_confusion_matrix"])) == rows["val"]
    best = outcome.best_epoch
    assert best == min(outcome.history, key=lambda h: h["val_loss"])["epoch"] == state.best_epoch
    assert best % 4 and best != stopped, "the seeded run's best epoch is expected to have no checkpoint of its own"
    # The best weights, scored again on the validation split, give the best epoch's val_loss.
    import numpy as np
    import torch

    val = prepared.val_ds.to_pandas()
    x = torch.from_numpy(np.stack(val[FEATURES_COLUMN].to_numpy()).astype(np.float32))
    y = torch.from_numpy(val[LABEL_COLUMN].to_numpy().astype(np.int64))
    model = build_model(outcome.model_config)
    model.load_state_dict(outcome.best_state)
    cpu = torch.device("cpu")
    again = validate(model, x, y, outcome.config, _loss_fn(outcome.config, cpu), cpu, contextlib.nullcontext)
    assert again["val_loss"] == pytest.approx(outcome.history[best - 1]["val_loss"], rel=1e-5)


def test_a_seeded_spec_prepares_the_same_rows_in_the_same_order_every_time(tmp_path, telemetry_dir, ray_session):
    """Three shards read in parallel: the packed train and validation splits come out row for row the same on
    every preparation, so a seeded run trains the same model (Ray Data's default hands on blocks in the order
    they finish)."""
    spec = load_spec(write_spec(tmp_path / "s.yaml", small_spec("order", telemetry_dir, tmp_path / "out")))
    quiet = lambda *_: None
    first, second = prepare(spec, progress=quiet), prepare(spec, progress=quiet)
    for split in ("train_ds", "val_ds"):
        a, b = getattr(first, split).to_pandas(), getattr(second, split).to_pandas()
        assert len(a) > 50
        pd.testing.assert_frame_equal(a, b)


def test_killed_worker_resumes_from_checkpoint(tmp_path, telemetry_dir):
    from ray.train.torch import TorchTrainer

    # Checkpoints at epochs 2, 4 and 5 (the last); the worker dies after epoch 3's report, between two of them.
    spec_path = write_spec(tmp_path / "s.yaml", small_spec("kill", telemetry_dir, tmp_path / "out", epochs=5,
                                                           workers=2, max_failures=2, early_stop=None,
                                                           ema_epochs=0.5, checkpoint_every=2))
    spec = load_spec(spec_path)
    quiet = lambda *_: None
    prepared = prepare(spec, progress=quiet)
    storage = storage_root(spec)
    os.makedirs(storage, exist_ok=True)
    marker = os.path.join(storage, "kill.fault-injected")
    log = str(tmp_path / "reports.jsonl")
    outcome = fit(spec, prepared, storage_path=storage, run_name="kill", progress=quiet,
                  callbacks=[report_recorder(log)],
                  trainer=lambda loop, **kw: TorchTrainer(dies_once_after(loop, 3, marker), **kw))
    path, metrics = export_bundle(spec, prepared, outcome, progress=quiet)
    lineage = json.loads((path / "lineage.json").read_text())
    run_dir = lineage["train"]["run_path"]
    # The worker really died once (SIGKILL after epoch 3's report) ...
    assert os.path.exists(run_dir + ".fault-injected")
    # ... and the restarted group continued from the checkpoint of epoch 2 instead of starting over: the loss is
    # bounded by the cadence. Epoch 3 (after that checkpoint) ran again; no epoch before it did.
    reports = recorded(log)
    assert [r["epoch"] for r in reports] == [1, 2, 3, 3, 4, 5]
    assert [r["checkpoint"] for r in reports] == [False, True, False, False, True, True]
    import torch
    ckpts = sorted(d for d in os.listdir(run_dir) if d.startswith("checkpoint_")
                   and os.path.isdir(os.path.join(run_dir, d)))
    # The checkpoint file is plain data: it loads without unpickling any class of ours.
    state = TrainState.from_dict(torch.load(os.path.join(run_dir, ckpts[-1], "state.pt"), weights_only=True))
    epochs = [r["epoch"] for r in state.history]
    assert epochs == [1, 2, 3, 4, 5]
    resumes = [r["resumes"] for r in state.history]
    assert resumes == [0, 0, 1, 1, 1]
    # The weight average came back with the checkpoint: it holds every step of the five epochs, not only the
    # steps after the restart.
    assert state.average["steps"] == 5 * state.average["steps_per_epoch"]
    # The bundle holds the resumed run's best epoch, and its test metrics score the whole test split.
    bundle = B.load(path)
    assert outcome.best_epoch == state.best_epoch and 1 <= state.best_epoch <= 5
    assert all(torch.equal(v, state.best_state[k]) for k, v in bundle.model.state_dict().items())
    assert metrics["val"]["val_loss"] == pytest.approx(state.history[state.best_epoch - 1]["val_loss"])
    assert sum(map(sum, metrics["test"]["confusion_matrix"])) == prepared.ingest.split_rows["test"]
    assert metrics["test"]["accuracy"] > 0.5


def _before_manifests(folder) -> None:
    """`folder` as a bundle an earlier trainyard wrote: no manifest.json, nor lineage.json's mark of one (with
    the mark, a bundle without its manifest is refused as one cut short)."""
    (folder / B.MANIFEST).unlink()
    try:
        lineage = json.loads((folder / "lineage.json").read_text())
    except ValueError:
        return                          # a lineage.json damaged on purpose: left as it is
    (folder / "lineage.json").write_text(json.dumps({k: v for k, v in lineage.items() if k != B.WITH_MANIFEST}))


def test_empty_records_and_corrupt_weights(classification_run, tmp_path):
    import shutil
    out = B.load(classification_run[1]).predict([{}, {}])
    assert len(out["predictions"]) == 2          # every field imputed, one prediction per record
    broken = tmp_path / "bundle"
    shutil.copytree(classification_run[1] / "bundle", broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    # The manifest names the file that changed after the bundle was written, before anything reads it.
    with pytest.raises(B.BundleError, match=r"bundle: the bundle is not as it was written \(model.safetensors "
                                            r"has 15 bytes, the manifest [\d,]+\)\. .*copy it again"):
        B.load(broken)
    _before_manifests(broken)           # as a bundle written before manifests: what is read is checked
    with pytest.raises(B.BundleError, match=r"bundle.*cannot load the bundle"):
        B.load(broken)
    (broken / "schema.json").unlink()
    with pytest.raises(B.BundleError, match="missing schema.json"):
        B.load(broken)
    # A damaged JSON file is named (it was a JSONDecodeError traceback, or a message naming no file).
    for name in ("schema.json", "preprocessor.json", "metrics.json", "lineage.json"):
        shutil.copytree(classification_run[1] / "bundle", tmp_path / name)
        (tmp_path / name / name).write_text('{"truncated": ')
        with pytest.raises(B.BundleError, match=rf"not as it was written \({name} has 14 bytes"):
            B.load(tmp_path / name)
        _before_manifests(tmp_path / name)
        with pytest.raises(B.BundleError, match=rf"{name}/{name}: cannot read it \(JSONDecodeError.*damaged"):
            B.load(tmp_path / name)
    with pytest.raises(B.BundleError, match=r"nowhere: no such folder"):
        B.load(tmp_path / "nowhere")


def test_a_pretrained_encoder_is_polled_less_often_than_a_small_network(tmp_path):
    """Ray-free: a table's MLP (and a transformer from scratch) gets the fast poll that keeps short epochs short;
    a pretrained text or image encoder, whose epochs take seconds or more, the slower one that leaves its
    CPUs to training (benchmarks/text_speed.py: 0.91x the plain loop at 0.02 s, 1.03x at 0.25 s)."""
    from jobs.spec import JobSpec
    from jobs.train import PRETRAINED_POLL_S, controller_poll_s, pretrained_encoder

    def spec(model: dict) -> JobSpec:
        data = {"path": str(tmp_path), "label": "y", **({"format": "images"} if model["kind"] == "image" else {})}
        return JobSpec.model_validate({"name": "p", "output": str(tmp_path), "model": model, "data": data})

    assert not pretrained_encoder(spec({"kind": "mlp"}))
    assert not pretrained_encoder(spec({"kind": "text", "encoder": "scratch"}))
    assert pretrained_encoder(spec({"kind": "text", "encoder": "some/model"}))
    assert pretrained_encoder(spec({"kind": "image", "encoder": "some/vit"}))
    assert controller_poll_s(1) == 0.02 and controller_poll_s(3) == pytest.approx(0.06)
    assert controller_poll_s(1, pretrained=True) == PRETRAINED_POLL_S == 0.25
    assert controller_poll_s(20, pretrained=True) == pytest.approx(0.4) and controller_poll_s(99, True) == 1.0


def test_ray_trains_processes_start_without_a_runtime_env_and_with_its_variables(tmp_path, monkeypatch):
    """The controller and the workers of a run start with no runtime_env (so Ray may give them a process it
    started beforehand; cluster.ray_compat.run_controller) and still have every variable Ray Train would have
    handed them in one: the driver's poll interval in the controller; the worker_runtime_env's variables and
    the propagated ones in each worker, of a one-worker and of a two-worker (TorchTrainer) run."""
    import ray.train
    from ray.train import RunConfig, ScalingConfig

    from cluster import ray_compat
    from jobs.train import POLL_ENV

    names = (POLL_ENV, "PYTHONUNBUFFERED", "TRAINYARD_TEST_VAR")
    monkeypatch.setenv(POLL_ENV, "0.03")
    monkeypatch.delenv("TRAINYARD_TEST_VAR", raising=False)
    log = tmp_path / "controller.jsonl"

    def loop(config):
        import os as worker_os

        ray.train.report({name: worker_os.environ.get(name) for name in config["names"]})

    for workers, torch_backend in ((1, False), (2, True)):
        before = {a.actor_id for a in ray_compat.actor_table()}
        trainer = ray_compat.trainer_class(torch_backend=torch_backend, placement_cleaner=False)(
            loop, train_loop_config={"names": names}, scaling_config=ScalingConfig(num_workers=workers),
            run_config=RunConfig(name=f"env{workers}", storage_path=str(tmp_path),
                                 callbacks=[report_recorder(str(log))],
                                 worker_runtime_env={"env_vars": {"PYTHONUNBUFFERED": "1",
                                                                  "TRAINYARD_TEST_VAR": "yes"}}))
        trainer.fit()
        started = [a for a in ray_compat.actor_table() if a.actor_id not in before]
        assert sorted(a.class_name for a in started if a.class_name in ("TrainController", "RayTrainWorker")) \
            == ["RayTrainWorker"] * workers + ["TrainController"]
        assert {a.serialized_runtime_env for a in started} <= {"", "{}"}, \
            [(a.class_name, a.serialized_runtime_env) for a in started]
        (row,) = recorded(str(log))
        log.unlink()
        assert row["poll"] == "0.03"
        assert row["metrics"] == [{POLL_ENV: "0.03", "PYTHONUNBUFFERED": "1", "TRAINYARD_TEST_VAR": "yes"}] * workers
    assert "TRAINYARD_TEST_VAR" not in os.environ
