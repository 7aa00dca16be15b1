"""The reference profile a bundle carries (`profile.json`, `jobs.profile`): fitted on the train split in the
preprocessing fit's Ray Data pass, with the model's prediction shares over the validation split; checked here
against the same splits computed with pandas. A bundle written before profiles loads with `profile` None."""
import json
import shutil
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from jobs import bundle as B
from jobs.drift import LEVELS, bin_index
from jobs.manifest import write as write_manifest
from jobs.fitted import canonical
from jobs.profile import prediction_reference
from tests.serving_fixtures import served_bundle  # noqa: F401  (the session's tiny classification bundle)


def splits_of(bundle: B.Bundle) -> dict[str, pd.DataFrame]:
    """The bundle's train and val splits as pandas, read again with its own resolved spec."""
    from jobs import ingest as ING
    from jobs.spec import load_spec

    result = ING.ingest(load_spec(bundle.path / "spec.yaml").data, progress=lambda *_: None)
    return {"train": result.split(ING.TRAIN).to_pandas(), "val": result.split(ING.VAL).to_pandas()}


def test_the_profile_describes_the_train_split_and_the_validation_predictions(served_bundle):  # noqa: F811
    bundle = B.load(served_bundle)
    profile = json.loads((served_bundle / B.PROFILE).read_text())
    # Loaded, each reference says how many values it was counted over (its tests are of two samples).
    loaded = bundle.profile
    assert loaded["prediction"]["n"] == loaded["prediction"]["score"]["n"] == profile["rows"]["val"]
    assert all(ref["n"] == round(profile["rows"]["train"] * (1 - ref["missing_rate"]))
               for kind in ("numeric", "categorical") for ref in loaded[kind].values())
    assert "n" not in profile["prediction"] and json.loads(json.dumps(loaded)) == {
        **profile, "prediction": {**profile["prediction"], "n": profile["rows"]["val"],
                                  "score": {**profile["prediction"]["score"], "n": profile["rows"]["val"]}},
        **{kind: {name: {**ref, "n": loaded[kind][name]["n"]} for name, ref in profile[kind].items()}
           for kind in ("numeric", "categorical")}}
    assert B.PROFILE in json.loads((served_bundle / B.MANIFEST).read_text())["files"]
    data = splits_of(bundle)
    train, val = data["train"], data["val"]
    assert profile["format"] == 1 and profile["kind"] == "tabular"
    assert profile["rows"] == {"train": len(train), "val": len(val)}

    pre = bundle.preprocessor
    assert set(profile["numeric"]) == {s.name for s in pre.numeric}
    for name, ref in profile["numeric"].items():
        column = pd.to_numeric(train[name], errors="coerce")
        present = column.dropna().to_numpy(dtype=float)
        edges = np.asarray(ref["edges"])
        assert len(edges) == 9 and np.all(np.diff(edges) > 0), name
        assert ref["quantiles"] == pytest.approx(np.quantile(present, LEVELS).tolist()), name
        counts = np.bincount(bin_index(present, edges), minlength=len(edges) + 1)
        assert ref["shares"] == pytest.approx((counts / len(present)).tolist()) and sum(ref["shares"]) == \
            pytest.approx(1.0), name
        assert ref["missing_rate"] == pytest.approx(column.isna().mean()), name
    assert any(ref["missing_rate"] > 0 for ref in profile["numeric"].values())   # telemetry drops readings

    assert set(profile["categorical"]) == {"machine_type", "shift"}
    for s in pre.categorical:
        ref = profile["categorical"][s.name]
        shares = train[s.name].map(canonical).value_counts(normalize=True)
        assert list(ref["shares"]) == s.categories
        assert ref["shares"] == pytest.approx(shares.to_dict()), s.name
        assert ref["unknown_share"] == 0.0 and ref["missing_rate"] == pytest.approx(train[s.name].isna().mean())

    answers = bundle.predict(val.drop(columns=[pre.label]).to_dict("records"))
    shares = pd.Series(answers["predictions"]).value_counts(normalize=True).reindex(pre.classes, fill_value=0.0)
    # A binary model's probabilities of its second class too (what the monitor judges the logged ones against),
    # as float32, the form the logs hold.
    second = np.float32(np.asarray(answers["probabilities"])[:, 1]).astype(np.float64)
    edges = np.unique(np.quantile(second, LEVELS)[10:100:10])
    assert profile["prediction"] == {"task": "classification", "classes": pre.classes,
                                     "shares": pytest.approx(shares.tolist()), "score": {
                                         "edges": pytest.approx(edges.tolist()),
                                         "shares": pytest.approx(np.bincount(bin_index(second, edges)) / len(second)),
                                         "quantiles": pytest.approx(np.quantile(second, LEVELS).tolist()),
                                         "index": 1, "mean": pytest.approx(second.mean())}}


def test_a_bundle_without_a_profile_still_loads_and_predicts(served_bundle, tmp_path):  # noqa: F811
    older = tmp_path / "older"
    shutil.copytree(served_bundle, older)
    (older / B.PROFILE).unlink()
    with pytest.raises(B.BundleError, match="profile.json is missing"):    # the manifest lists it
        B.load(older)
    write_manifest(older, "older")          # as a bundle written before profiles had it
    bundle = B.load(older)
    assert bundle.profile is None
    assert len(bundle.predict([{"rpm": 1500.0, "machine_type": "L"}])["predictions"]) == 1


def test_prediction_reference_of_classes_and_of_values():
    pre = SimpleNamespace(task="classification", classes=[1, 2, 3])
    # Labels are matched canonically: 2.0 and "2" are class 2; a class never predicted keeps share 0.
    assert prediction_reference(pre, [1, 2.0, "2", 1]) == {"task": "classification", "classes": [1, 2, 3],
                                                           "shares": [0.5, 0.5, 0.0]}
    values = np.random.default_rng(0).normal(50.0, 5.0, 1000)
    reg = prediction_reference(SimpleNamespace(task="regression"), values)
    assert reg["task"] == "regression" and len(reg["edges"]) == 9 and len(reg["shares"]) == 10
    assert reg["quantiles"][50] == pytest.approx(np.median(values)) and sum(reg["shares"]) == pytest.approx(1.0)


def test_a_numeric_summary_keeps_a_bounded_uniform_sample_and_the_exact_count():
    """NumericSummary's partial results (Ray Data's block aggregation and merge, run here in-process) hold at
    most k values whatever the column's length: exact at or under k rows, a uniform sample above (Ray's
    Quantile, which it replaces, gathered every value into one task); the count stays exact, and merging in
    either order gives the same summary."""
    import pyarrow as pa

    from jobs.drift import summarise
    from jobs.profile import NumericSummary

    rng = np.random.default_rng(7)
    blocks = [pa.table({"x": pa.array(np.where(rng.random(n) < 0.1, np.nan, rng.normal(0, 1, n)),
                                      from_pandas=True)}) for n in (3000, 5000, 4000)]
    agg = NumericSummary("x", k=2000)
    parts = [agg.aggregate_block(b) for b in blocks]
    assert all(len(p) <= (1 + 2 * 2000) * 8 for p in parts)                 # k keys and values, and the count
    merged = agg.finalize(agg.combine(agg.combine(parts[0], parts[1]), parts[2]))
    assert merged == agg.finalize(agg.combine(parts[2], agg.combine(parts[1], parts[0])))
    present = np.concatenate([b.column("x").to_numpy(zero_copy_only=False) for b in blocks])
    present = present[~np.isnan(present)]
    assert merged["count"] == len(present)
    assert np.abs(np.array(merged["quantiles"][10:91]) - np.quantile(present, np.linspace(0.1, 0.9, 81))).max() < 0.1
    small = NumericSummary("x", k=100_000)
    exact = small.finalize(small.combine(small.aggregate_block(blocks[0]), small.aggregate_block(blocks[1])))
    assert exact == {**summarise(np.concatenate([b.column("x").to_numpy(zero_copy_only=False)
                                                 for b in blocks[:2]])), "count": exact["count"]}
    assert agg.aggregate_block(pa.table({"x": pa.array([None, None], pa.float64())})) is None


def _png(width: int, height: int, shade: int) -> bytes:
    import io

    from PIL import Image
    out = io.BytesIO()
    Image.new("L", (width, height), shade).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.ray
def test_image_sizes_are_profiled_in_the_fit_and_watched_as_sent(ray_session, tmp_path):
    """An image bundle's profile holds its images' width and height as stored (fitted in the preprocessor's own
    Ray Data pass); serving's request checks keep each image's size as sent, which decoding resizes away; the
    live monitor flags images twice as large, and the prediction logs carry the sizes for `trainyard monitor`."""
    import base64

    import pyarrow.parquet as pq

    from jobs.images import fit_with_stats
    from jobs.profile import image_reference
    from serving.monitor import LiveMonitor
    from serving.predlog import PredictionLogger
    from serving.schema import RequestChecker

    sizes = [(32 + 4 * (i % 5), 24 + 2 * (i % 3)) for i in range(40)]
    train = ray_session.data.from_pandas(pd.DataFrame({
        "image": [_png(w, h, 10 * (i % 20)) for i, (w, h) in enumerate(sizes)], "label": ["a", "b"] * 20}))
    spec = SimpleNamespace(label="label", image=SimpleNamespace(size=[16, 16], channels=1, column="image"))
    pre, stats = fit_with_stats(train, spec, classes=["a", "b"])
    ref = image_reference(pre, stats)
    width = ref["numeric"]["image.width"]
    assert ref["rows"] == {"train": 40} and width["of"] == {"feature": "image", "quantity": "width"}
    assert width["quantiles"][0] == 32 and width["quantiles"][-1] == 48 and width["missing_rate"] == 0.0
    assert ref["numeric"]["image.height"]["quantiles"][-1] == 28

    schema = {"input": "image", "task": "classification", "label": {"name": "label", "classes": ["a", "b"]},
              "image": {"field": "image", "size": [16, 16], "channels": 1},
              "features": [{"name": "image", "type": "image", "required": True}]}
    checker = RequestChecker(schema, max_records=64, max_body_bytes=2**22)
    body = json.dumps({"records": [{"image": base64.b64encode(_png(96, 64, 100)).decode()}] * 4}).encode()
    records = checker.parse(body)
    assert records[0]["image"].shape == (16, 16, 1)
    assert (records[0]["image.width"], records[0]["image.height"]) == (96, 64)

    profile = {**ref, "prediction": {"task": "classification", "classes": ["a", "b"], "shares": [0.5, 0.5]}}
    live = LiveMonitor(profile, app="a", version="v1", replica="r1", window_s=600, export=False)
    logger = PredictionLogger({"path": str(tmp_path)}, app="a", replica="r1", schema=schema, version="v1")
    try:
        for i in range(15):
            live.observe(records, ["a", "b", "a", "b"])
            logger.log(f"q{i}", records, ["a", "b", "a", "b"])
        seen = live.snapshot()
    finally:
        live.close()
        logger.close()
    assert seen["flagged"] == ["image.height", "image.width"] and seen["n"] == 60
    logged = pq.read_table(next((tmp_path / "a").glob("*.parquet")))
    assert [c for c in logged.column_names if c.startswith("feature.")] == ["feature.image.width",
                                                                           "feature.image.height"]
    assert set(logged.column("feature.image.width").to_pylist()) == {96.0}


@pytest.mark.ray
def test_text_reference_over_a_ray_dataset_is_the_in_process_one(ray_session):
    """A text feature's profile entries from one Ray Data pass equal those computed in-process with pandas."""
    from jobs.profile import text_reference, text_reference_of_frame

    frame = pd.DataFrame({"note": ["bearing noise", "", None, "  ", "spindle temperature 92C, stopped"] * 40,
                          "rpm": np.arange(200.0)})
    ref = text_reference(ray_session.data.from_pandas(frame).repartition(3), ["note"])
    assert ref == text_reference_of_frame(frame, ["note"])
    assert ref["categorical"]["note.empty"]["shares"] == {"false": 0.5, "true": 0.5}
    assert ref["numeric"]["note.length"]["missing_rate"] == pytest.approx(0.2)


@pytest.mark.ray
@pytest.mark.slow
def test_a_text_bundle_profiles_its_text_by_length_and_emptiness(ray_session, tmp_path):
    """prepare() of a text spec (text and table columns, a scratch encoder) gives the profile's train part both
    the table columns and each text column's length and emptiness, equal to the same computed with pandas
    over the train split."""
    from jobs.ingest import TRAIN
    from jobs.pipeline import prepare
    from jobs.profile import text_reference_of_frame
    from jobs.spec import load_spec
    from telemetry import write_shards
    from tests.conftest import write_spec
    from tests.test_text import work_orders
    from tests.test_text_e2e import text_spec

    write_shards(work_orders(80, seed=5), tmp_path / "orders", 1)
    spec = load_spec(write_spec(tmp_path / "s.yaml", text_spec("t", tmp_path / "orders", tmp_path / "out", "scratch")))
    prepared = prepare(spec, progress=lambda *_: None)
    ref = prepared.reference
    assert "machine_hours" in ref["numeric"] and "machine_type" in ref["categorical"]
    train = prepared.ingest.split(TRAIN).to_pandas()
    text = text_reference_of_frame(train, ["description"])
    assert ref["numeric"]["description.length"] == text["numeric"]["description.length"]
    assert ref["categorical"]["description.empty"] == text["categorical"]["description.empty"]
    assert ref["numeric"]["description.length"]["quantiles"][-1] == train["description"].str.len().max()


def test_a_column_of_two_populations_is_told_and_ordinary_spreads_are_not():
    """A lab's glucose in mmol/L and mg/dL in one column (2.7-11 and 70-199) trained as one spread with no word,
    and widened the range /predict's out_of_range and the monitor judge by. Ray-free: of the profile's percentiles."""
    from jobs.drift import summarise
    from jobs.profile import two_populations

    rng = np.random.default_rng(0)
    glucose = np.r_[rng.normal(6, 1.5, 800).clip(2.7, 11), rng.normal(120, 30, 200).clip(70, 199)]
    note = two_populations("glucose", summarise(glucose))
    assert note.startswith("column 'glucose' holds two groups of values far apart: its percentiles jump 7.9x from "
                           "the 79th (9.176) to the 81st (72.72), about 80% of its values below the jump (from 2.7) "
                           "and 20% above it (up to 194.6). Two units in one column"), note
    # Zeros (a placeholder) below the scan do not hide it; nor does a small lower group (a tenth in mmol/L).
    assert "about 82% of its values below" in two_populations("g", summarise(np.r_[glucose, np.zeros(110)]))
    few = np.r_[rng.normal(6, 1.5, 100).clip(2.7, 11), rng.normal(120, 30, 900).clip(70, 199)]
    assert "about 9% of its values below" in two_populations("g", summarise(few))
    ordinary = {"income": rng.lognormal(10, 1, 5000), "long tail": rng.lognormal(0, 3, 5000),
                "longer tail": rng.lognormal(0, 6, 5000), "pareto": rng.pareto(0.3, 5000) + 1,
                "powers": rng.random(5000) ** 5, "age": rng.normal(50, 15, 5000),
                "counts": rng.poisson(8, 5000) + 1.0, "waits": rng.exponential(1, 5000), "share": rng.random(5000),
                "1, 2 and 10": np.r_[np.ones(400), np.full(400, 2.0), np.full(200, 10.0)],
                "packs": rng.choice([1.0, 6.0, 12.0], 5000), "signed": rng.normal(0, 1, 5000),
                "2 % in °F": np.r_[rng.normal(37, 0.5, 980), rng.normal(99, 1, 20)]}      # under 3 %: not said
    assert {name: two_populations(name, summarise(x)) for name, x in ordinary.items()} == dict.fromkeys(ordinary)
