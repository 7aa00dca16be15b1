"""An upgraded trainyard beside what an earlier one wrote or runs: a server not yet upgraded."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from tests.stand_in_server import stand_in
from trainyard.cli import main

# GET /schema of a trainyard server of 2026-12-04 (its bundle's schema.json, the model and the limits of then):
# no number feature has a `trained_on` range, and its /predict answers name no out_of_range, unseen_categories
# or imputed records.
OLD_SCHEMA = {
    "model": {"name": "pm-clf", "version": "20261208-005048"}, "input": "tabular", "task": "classification",
    "label": {"name": "failure", "classes": ["failure", "ok"]},
    "features": [
        {"name": "rpm", "type": "number", "dtype": "double", "required": False, "missing": "imputed with 1494.4"},
        {"name": "vibration_mm_s", "type": "number", "dtype": "double", "required": False,
         "missing": "imputed with 2.52564"},
        {"name": "machine_type", "type": "category", "dtype": "string", "required": False,
         "categories": ["L", "H", "M"], "missing": "the 'unknown' slot", "unknown": "the 'unknown' slot"}],
    "unknown_category": "ignore",
    "limits": {"max_records": 1000, "max_body_mb": 8.0, "required_features": [], "unknown_fields": "reject",
               "quantize": None},
    "metrics": {"accuracy": 0.71}}


def _old_answer(body: bytes) -> dict:
    records = json.loads(body)["records"]
    return {"predictions": ["ok"] * len(records), "probabilities": [[0.3, 0.7]] * len(records),
            "model": OLD_SCHEMA["model"], "request_id": "290f1e0c61d31aa70000000000000001"}


def test_predict_against_a_server_of_an_earlier_trainyard_does_not_write_its_unsaid_notes_as_none(tmp_path, capsys):
    """`trainyard predict` of this trainyard against a server of 2026-12-04 wrote out_of_range, unseen_categories
    and imputed columns empty on every row (the README's "empty for none") and said nothing, for rows with an empty
    vibration reading, an rpm ten times the training range and a machine type never seen: that server does not
    say them. The columns are left out now, and a note says why."""
    rows = tmp_path / "rows.csv"
    pd.DataFrame({"rpm": [1500.0, 15000.0], "vibration_mm_s": [None, 2.0], "machine_type": ["L", "Z"]}).to_csv(
        rows, index=False)
    out = tmp_path / "predictions.csv"
    with stand_in(OLD_SCHEMA, _old_answer) as url:
        assert main(["predict", "--url", url, str(rows), "--out", str(out)]) == 0
    written = pd.read_csv(out)
    assert list(written["prediction"]) == ["ok", "ok"] and list(written["record"]) == [0, 1]
    assert not {"out_of_range", "unseen_categories", "imputed"} & set(written.columns), list(written.columns)
    err = capsys.readouterr().err
    assert (f"note: the server at {url} (a trainyard from before 2026-12-06) does not say which rows of {rows} hold "
            "numbers outside the training range") in err, err
    assert "the out_of_range, unseen_categories and imputed columns are left out" in err


def _git(cwd, *args) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, check=True).stdout.strip()


def test_version_names_the_commit_and_changes_of_a_checkout_and_the_number_alone_without_git(tmp_path):
    """The package's version said 0.1.0 before and after every change an upgrade brought (a bundle's lineage named
    Ray, torch and Python, not trainyard): a checkout's commit tells two trainyards apart."""
    from importlib.metadata import version

    number = version("trainyard")
    source = tmp_path / "src"
    (source / "jobs").mkdir(parents=True)
    shutil.copy(Path(__file__).resolve().parents[1] / "jobs" / "version.py", source / "jobs" / "version.py")

    def said() -> str:
        return subprocess.run([sys.executable, "-c", "from jobs.version import trainyard_version as v; print(v())"],
                              cwd=source, env={**os.environ, "PYTHONPATH": str(source)}, capture_output=True,
                              text=True, check=True).stdout.strip()

    assert said() == number                                  # no git: a wheel, a job's shipped folder
    _git(tmp_path, "init", "-q", str(source))
    _git(source, "add", ".")
    _git(source, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "v")
    commit = _git(source, "rev-parse", "--short", "HEAD")
    assert said() == f"{number} (git {commit})"
    (source / "jobs" / "version.py").write_text((source / "jobs" / "version.py").read_text() + "\n# edited\n")
    assert said() == f"{number} (git {commit}+changes)"


def test_trainyard_version_and_a_bundles_lineage_say_which_trainyard(capsys, tmp_path):
    from jobs.pipeline import lineage
    from jobs.spec import validate_spec
    from jobs.version import trainyard_version

    with pytest.raises(SystemExit) as ended:
        main(["--version"])
    assert ended.value.code == 0
    assert capsys.readouterr().out == f"trainyard {trainyard_version()}\n"
    assert trainyard_version().startswith("0.")
    spec = validate_spec({"name": "t", "data": {"path": str(tmp_path / "t.csv"), "label": "y"}})
    ingest = SimpleNamespace(files=["t.csv"], fingerprint="f", rows_read=1, rows_dropped_missing_label=0,
                             split_rows={}, split_how={})
    kept = lineage(spec, SimpleNamespace(ingest=ingest), SimpleNamespace(best_epoch=0, history=[], use_gpu=False,
                                                                         run_path=""))
    assert kept["trainyard"] == trainyard_version() and {"ray", "torch", "python"} <= set(kept)
