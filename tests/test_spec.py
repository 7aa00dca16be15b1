"""Spec validation: every problem at once, each naming the file, field, value and fix. No Ray needed."""
from pathlib import Path

import pytest

from jobs.cli import main
from jobs.spec import SpecError, load_spec, validate_spec
from tests.conftest import ROOT, write_spec

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_spec_validates(path):
    spec = load_spec(path)
    assert spec.name and spec.data.label


def test_examples_exist():
    assert EXAMPLES, "examples/ must ship at least one spec"


def test_defaults_fill_in():
    spec = validate_spec({"name": "x", "data": {"path": "d", "label": "y"}})
    assert spec.train.workers == 2 and spec.train.early_stop.metric == "val_loss"
    assert spec.output_dir == "runs/x" and spec.data.split.val == 0.15


def test_all_problems_listed_at_once(tmp_path):
    path = write_spec(tmp_path / "bad.yaml", {
        "name": "bad name!", "data": {"path": "d", "lable": "y"},
        "train": {"epochs": 0, "optimiser": "adamw", "early_stop": {"metric": "val_f2"}},
        "model": {"dropout": 1.5}})
    with pytest.raises(SpecError) as err:
        load_spec(path)
    text = str(err.value)
    problems = err.value.problems
    assert len(problems) >= 6, text
    assert all(str(path) in p for p in problems)
    assert "data.lable: unknown key" in text and "label" in text  # names the allowed keys
    assert "data.label: required but missing" in text
    assert "train.epochs" in text and "(got 0)" in text
    assert "train.optimiser: unknown key" in text
    assert "val_f2" in text and "val_f1" in text                  # the fix lists known metrics
    assert "model.dropout" in text and "1.5" in text
    assert "name" in text and "bad name!" in text


def test_cross_field_checks():
    with pytest.raises(SpecError, match="leaves .*nothing to train"):
        validate_spec({"name": "x", "data": {"path": "d", "label": "y", "split": {"val": 0.5, "test": 0.5}}})
    with pytest.raises(SpecError, match="label 'y' is also listed as a feature"):
        validate_spec({"name": "x", "data": {"path": "d", "label": "y", "features": {"numeric": ["y"]}}})
    with pytest.raises(SpecError, match="both numeric and categorical"):
        validate_spec({"name": "x", "data": {"path": "d", "label": "y",
                                              "features": {"numeric": ["a"], "categorical": ["a"]}}})


def test_lr_schedule_field():
    assert validate_spec({"name": "x", "data": {"path": "d", "label": "y"}}).train.lr_schedule == "constant"
    with pytest.raises(SpecError) as err:
        validate_spec({"name": "x", "data": {"path": "d", "label": "y"}, "train": {"lr_schedule": "linear"}})
    assert "train.lr_schedule" in str(err.value) and "'cosine'" in str(err.value) and "linear" in str(err.value)


def test_cosine_schedule_curve():
    from jobs.train import scheduled_lr
    assert [scheduled_lr(0.01, "constant", e, 5) for e in range(5)] == [0.01] * 5
    cosine = [scheduled_lr(0.01, "cosine", e, 27) for e in range(27)]
    assert cosine[0] == 0.01 and all(a > b for a, b in zip(cosine, cosine[1:]))
    assert 0 < cosine[-1] < 0.01 * 0.005                          # near zero at the last epoch, never zero
    assert abs(scheduled_lr(0.01, "cosine", 2, 4) - 0.005) < 1e-12  # half way: half the rate


def test_set_overrides_any_field(tmp_path):
    path = write_spec(tmp_path / "s.yaml", {"name": "x", "data": {"path": "d", "label": "y"}})
    spec = load_spec(path, ["train.epochs=3", "model.hidden=[8, 4]", "train.early_stop=null",
                            "data.split.seed=7"])
    assert spec.train.epochs == 3 and spec.model.hidden == [8, 4]
    assert spec.train.early_stop is None and spec.data.split.seed == 7
    with pytest.raises(SpecError, match="train.epocs: unknown key"):
        load_spec(path, ["train.epocs=3"])
    with pytest.raises(SpecError, match="expected FIELD=VALUE"):
        load_spec(path, ["train.epochs"])


def test_bad_yaml_names_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\ndata: [unclosed\n")
    with pytest.raises(SpecError, match=r"broken.yaml: not valid YAML at line \d+"):
        load_spec(path)
    with pytest.raises(SpecError, match="no such spec file"):
        load_spec(tmp_path / "nope.yaml")


def test_validate_cli_exit_codes(tmp_path, capsys):
    good = write_spec(tmp_path / "good.yaml", {"name": "x", "data": {"path": "d", "label": "y"}})
    assert main(["validate", str(good)]) == 0
    assert "OK" in capsys.readouterr().out
    bad = write_spec(tmp_path / "bad.yaml", {"name": "x", "data": {"path": "d"}, "trian": {}})
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "2 problem(s)" in err and "trian" in err and "data.label" in err
    assert main(["validate", str(good), "--set", "train.workers=0"]) == 2
    assert "train.workers" in capsys.readouterr().err
