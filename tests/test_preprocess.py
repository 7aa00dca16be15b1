"""Preprocessing: fitted on train only (asserted), JSON state, one transform for Ray Data and for records."""
import json

import numpy as np
import pandas as pd
import pytest

from jobs import preprocess as PP
from jobs.ingest import TEST, TRAIN, VAL, ingest
from jobs.spec import validate_spec

pytestmark = pytest.mark.usefixtures("ray_session")


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pp")
    rng = np.random.default_rng(0)
    n = 300
    df = pd.DataFrame({"temp": rng.normal(50, 5, n), "kind": rng.choice(["a", "b", "c"], n),
                       "y": rng.integers(0, 2, n)})
    df.loc[::7, "temp"] = np.nan
    df.to_parquet(tmp / "p.parquet")
    spec = validate_spec({"name": "t", "data": {"path": str(tmp), "label": "y",
                                                 "preprocess": {"impute": "median", "max_categories": 2}}})
    r = ingest(spec.data, progress=lambda *_: None)
    pre = PP.fit(r.split(TRAIN), spec.data, numeric=r.numeric, categorical=r.categorical, task=r.task,
                 classes=r.classes)
    return r, pre


def test_statistics_see_only_the_train_split(fitted):
    r, pre = fitted
    train = r.split(TRAIN).to_pandas()
    everything = pd.concat([train, r.split(VAL).to_pandas(), r.split(TEST).to_pandas()])
    temp = pre.numeric[0]
    assert temp.center == pytest.approx(train["temp"].mean())
    assert temp.scale == pytest.approx(train["temp"].std(ddof=0))
    assert temp.fill == pytest.approx(train["temp"].median())
    assert temp.center != pytest.approx(everything["temp"].mean(), abs=1e-9)
    assert pre.stats["train_rows"] == len(train)
    kind = pre.categorical[0]
    assert kind.categories == train["kind"].value_counts().index[:2].tolist()  # max_categories=2 keeps the top 2


def test_state_is_plain_json(fitted, tmp_path):
    _, pre = fitted
    pre.save(tmp_path / "p.json")
    again = PP.Preprocessor.load(tmp_path / "p.json")
    assert json.loads((tmp_path / "p.json").read_text())["task"] == "classification"
    df = pd.DataFrame({"temp": [51.0, None], "kind": ["a", "never-seen"]})
    np.testing.assert_array_equal(pre.transform(df), again.transform(df))


def test_transform_packs_imputes_and_handles_unknown(fitted):
    _, pre = fitted
    x = pre.transform(pd.DataFrame({"temp": [None, 55.0], "kind": ["zzz", pre.categorical[0].categories[0]]}))
    assert x.dtype == np.float32 and x.shape == (2, pre.feature_dim) == (2, 1 + 3)
    s = pre.numeric[0]
    assert x[0, 0] == pytest.approx((s.fill - s.center) / s.scale)
    assert x[0].tolist()[1:] == [0, 0, 1]          # unseen category → the unknown slot
    assert x[1].tolist()[1:] == [1, 0, 0]
    missing_col = pre.transform(pd.DataFrame({"other": [1]}))
    assert missing_col[0, -1] == 1                 # a missing categorical field → unknown slot


def test_ray_data_and_records_agree(fitted):
    r, pre = fitted
    rows = r.split(VAL).to_pandas()
    packed = PP.apply(r.split(VAL), pre).to_pandas()
    ray_x = np.stack(packed["features"].to_numpy())
    np.testing.assert_array_equal(ray_x, pre.transform(pd.DataFrame.from_records(rows.to_dict("records"))))
    assert set(packed["label"]) <= {0, 1}


def test_canonical_categories():
    assert PP.canonical(3) == PP.canonical(3.0) == PP.canonical("3") == "3"
    assert PP.canonical(True) == "true" and PP.canonical(float("nan")) is None
