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
    assert bundle.profile == profile
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

    predicted = pd.Series(bundle.predict(val.drop(columns=[pre.label]).to_dict("records"))["predictions"])
    shares = predicted.value_counts(normalize=True).reindex(pre.classes, fill_value=0.0)
    assert profile["prediction"] == {"task": "classification", "classes": pre.classes,
                                     "shares": pytest.approx(shares.tolist())}


def test_a_bundle_without_a_profile_still_loads_and_predicts(served_bundle, tmp_path):  # noqa: F811
    older = tmp_path / "older"
    shutil.copytree(served_bundle, older)
    (older / B.PROFILE).unlink()
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
