"""Exporting bundles from a real training run, as `trainyard train`/`tune` do (`jobs.pipeline.export_bundle`):
a second export keeps the first, locally and on object storage (S3 through moto's server), and the latest is
what a run's output folder loads as; a binary cut-off (`decision:`) is chosen on the run's validation split."""
import os

import pytest

from jobs import bundle as B
from tests.s3_fixtures import s3_bucket  # noqa: F401  (moto's S3 server and a bucket)


@pytest.fixture(scope="module")
def trained(ray_session, tmp_path_factory, telemetry_dir):
    """One short training run of the telemetry table, prepared and fitted once for this module's exports."""
    from jobs.pipeline import prepare, storage_root
    from jobs.spec import load_spec
    from jobs.train import fit
    from tests.conftest import small_spec, write_spec

    tmp = tmp_path_factory.mktemp("export")
    spec = load_spec(write_spec(tmp / "s.yaml", small_spec("export", telemetry_dir, tmp / "out", epochs=2,
                                                           early_stop=None)))
    prepared = prepare(spec, progress=lambda *_: None)
    return spec, prepared, fit(spec, prepared, storage_path=storage_root(spec), run_name="run",
                               progress=lambda *_: None)


@pytest.mark.slow
def test_a_second_export_keeps_the_first_locally_and_on_s3(trained, tmp_path, s3_bucket):  # noqa: F811
    from jobs.pipeline import export_bundle

    quiet = lambda *_: None
    spec, prepared, outcome = trained
    spec = spec.model_copy(update={"output": str(tmp_path / "out")})
    lines = []
    first, _ = export_bundle(spec, prepared, outcome, progress=quiet)
    second, metrics = export_bundle(spec, prepared, outcome, progress=lines.append)
    out = tmp_path / "out"
    assert first != second and first.parent == second.parent == out / "bundles"
    assert os.readlink(out / "bundle") == f"bundles/{second.name}"
    assert B.load(out).version == second.name and B.load(first).version == first.name
    assert B.load(out).metrics == metrics
    assert f"[bundle] version {second.name} in {second}; {out / 'bundle'} points to it (1 earlier version(s) " \
           f"kept in {out / 'bundles'})" in lines

    remote = spec.model_copy(update={"output": f"{s3_bucket}/runs/export"})
    uris = [export_bundle(remote, prepared, outcome, progress=quiet)[0] for _ in range(2)]
    assert uris[0] != uris[1] and all(u.startswith(f"{s3_bucket}/runs/export/bundles/") for u in uris)
    assert B.load(remote.output_dir).version == uris[1].rsplit("/", 1)[-1]
    assert B.load(uris[0]).version == uris[0].rsplit("/", 1)[-1]
    assert B.load(f"{remote.output_dir}/bundle").metrics == metrics


@pytest.mark.slow
def test_a_cut_off_is_chosen_on_validation_and_the_bundle_answers_scores_and_profiles_by_it(trained, tmp_path):
    import numpy as np

    from jobs.evaluate import score
    from jobs.infer import DataError
    from jobs.pipeline import export_bundle, prepare
    from jobs.profile import validation_predictions
    from jobs.spec import DecisionSpec

    spec, prepared, outcome = trained
    # A positive class the label lacks stops before any training, naming the classes.
    with pytest.raises(DataError, match="decision.positive: 'broken' is not a class of label 'failure', which has 2 classes"):
        prepare(spec.model_copy(update={"decision": DecisionSpec(threshold=0.5, positive="broken")}),
                progress=lambda *_: None)
    # The same training run, exported with a cut-off chosen on its validation split.
    spec = spec.model_copy(update={"decision": DecisionSpec(min_recall=0.8), "output": str(tmp_path / "out")})
    lines = []
    version, metrics = export_bundle(spec, prepared, outcome, progress=lines.append)

    bundle = B.load(version)
    d = bundle.preprocessor.decision
    assert d["positive"] == "failure" and d["rule"] == "min_recall 0.8" and d["val"]["recall"] >= 0.8
    assert any(line.startswith("[decision] 'failure' when P('failure') >= ") for line in lines)
    assert bundle.schema["label"]["decision"] == {k: d[k] for k in ("positive", "threshold", "rule")}
    # The bundle answers by the cut-off; its test metrics are those answers'; its profile's reference shares of
    # predictions are the validation split's answers at the cut-off (what the monitor compares served ones to).
    rows = prepared.test_raw.to_pandas()
    out = bundle.predict_frame(rows)
    p = np.asarray(out["probabilities"])[:, d["positive_index"]]
    assert [x == "failure" for x in out["predictions"]] == (p >= d["threshold"]).tolist()
    assert metrics["test"] == score(bundle, [rows], "failure") == bundle.metrics["test"]
    val = validation_predictions(bundle, prepared.val_ds)
    shares = dict(zip(bundle.profile["prediction"]["classes"], bundle.profile["prediction"]["shares"]))
    assert shares["failure"] == pytest.approx(sum(v == "failure" for v in val) / len(val))
    # metrics.json's val metrics are the validation split's answers at the cut-off, as the bundle gives them.
    from jobs.metrics import classification_metrics
    from jobs.profile import validation_scores
    y, proba = validation_scores(bundle, prepared.val_ds)
    answered = [bundle.preprocessor.classes.index(v) for v in val]
    again = classification_metrics(y, proba, prefix="val_", y_pred=np.asarray(answered))
    assert {k: bundle.metrics["val"][k] for k in again if k != "val_auc"} == {k: v for k, v in again.items()
                                                                              if k != "val_auc"}
    cm, i = np.asarray(again["val_confusion_matrix"]), d["positive_index"]
    assert d["val"]["recall"] == cm[i, i] / cm[i].sum() and metrics["decision"] == d
