"""A bundle is written once, complete and atomically (no Ray): scored while hidden, published with every metric,
never left half-written, and an earlier bundle is replaced only by a complete one."""
import json

import pytest

from jobs import bundle as B
from jobs.model import build_model
from jobs.tabular import CategoricalState, NumericState, Preprocessor

CONFIG = {"kind": "mlp", "input_dim": 4, "output_dim": 2, "hidden": [3], "dropout": 0.0, "activation": "relu"}


def _write(path, *, score=None, lineage=None):
    pre = Preprocessor(task="classification", label="y", classes=["no", "yes"],
                       numeric=[NumericState("x", fill=0.0, center=0.0, scale=1.0)],
                       categorical=[CategoricalState("c", ["a", "b"])])
    return B.write(path, state_dict=build_model(CONFIG).state_dict(), model_config=CONFIG, preprocessor=pre,
                   metrics={"val": {"val_accuracy": 0.5}}, spec_yaml="name: t\n",
                   lineage=lineage or {"version": "1"}, score=score)


def _leftovers(parent):
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_scored_while_hidden_then_published_with_every_metric(tmp_path):
    target = tmp_path / "out" / "bundle"
    seen = {}

    def score(bundle: B.Bundle) -> dict:
        # Scoring goes through the bundle's own load/predict path, in a hidden sibling folder; nothing is at
        # the target yet, so nobody can load a bundle whose test metrics are still empty.
        seen["folder"] = bundle.path.name
        seen["target_exists"] = target.exists()
        seen["predictions"] = bundle.predict([{"x": 1.0, "c": "a"}, {}])["predictions"]
        return {"test": {"accuracy": 0.75}}

    assert _write(target, score=score) == target
    assert seen["folder"].startswith(".bundle.partial-") and seen["target_exists"] is False
    assert len(seen["predictions"]) == 2
    assert json.loads((target / "metrics.json").read_text()) == {"val": {"val_accuracy": 0.5},
                                                                 "test": {"accuracy": 0.75}}
    assert B.load(target).metrics["test"] == {"accuracy": 0.75}
    assert sorted(p.name for p in target.iterdir()) == sorted(B.FILES)
    assert _leftovers(target.parent) == []


def test_a_failure_while_scoring_leaves_no_bundle(tmp_path):
    target = tmp_path / "bundle"

    def broken(bundle):
        raise RuntimeError("the test split could not be read")

    with pytest.raises(RuntimeError, match="could not be read"):
        _write(target, score=broken)
    assert not target.exists() and _leftovers(tmp_path) == []


def test_an_earlier_bundle_stays_until_a_complete_one_replaces_it(tmp_path):
    target = tmp_path / "bundle"
    _write(target, score=lambda b: {"test": {"accuracy": 0.6}}, lineage={"version": "first"})

    def broken(bundle):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _write(target, score=broken, lineage={"version": "second"})
    kept = B.load(target)
    assert kept.lineage["version"] == "first" and kept.metrics["test"] == {"accuracy": 0.6}
    assert _leftovers(tmp_path) == []

    _write(target, score=lambda b: {"test": {"accuracy": 0.9}}, lineage={"version": "third"})
    now = B.load(target)
    assert now.lineage["version"] == "third" and now.metrics["test"] == {"accuracy": 0.9}
    assert _leftovers(tmp_path) == []


def test_upload_sends_metrics_last(tmp_path, monkeypatch):
    import pyarrow.fs as pafs

    local = _write(tmp_path / "bundle", score=lambda b: {"test": {}})
    copied = []
    real = pafs.copy_files
    monkeypatch.setattr(pafs, "copy_files", lambda src, dst, **kw: (copied.append(dst.rsplit("/", 1)[-1]),
                                                                   real(src, dst, **kw)))
    B.upload(local, f"file://{tmp_path}/remote/bundle")
    assert copied[-1] == "metrics.json" and sorted(copied) == sorted(B.FILES)
    assert B.load(tmp_path / "remote" / "bundle").metrics == {"val": {"val_accuracy": 0.5}, "test": {}}


def test_a_bundle_has_the_umasks_permissions_not_mkdtemps(tmp_path):
    import os
    old = os.umask(0o022)
    try:
        target = _write(tmp_path / "bundle")
    finally:
        os.umask(old)
    assert target.stat().st_mode & 0o777 == 0o755


def test_a_killed_writers_old_staging_folder_is_cleared_a_fresh_one_kept(tmp_path):
    import os
    import time
    old, fresh = tmp_path / ".bundle.partial-old", tmp_path / ".bundle.partial-fresh"
    for folder in (old, fresh):
        folder.mkdir()
        (folder / "model.json").write_text("{}")
    hour_ago = time.time() - B.STALE_PARTIAL_S - 60
    os.utime(old, (hour_ago, hour_ago))
    _write(tmp_path / "bundle")
    assert _leftovers(tmp_path) == [".bundle.partial-fresh"]
