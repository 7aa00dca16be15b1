"""Spec validation: every problem at once, each naming the file, field, value and fix. No Ray needed."""
from pathlib import Path

import pytest

from trainyard.cli import main
from jobs.spec import SpecError, load_spec, validate_spec
from tests.conftest import ROOT, write_spec

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_spec_validates(path, capsys):
    spec = load_spec(path)
    assert spec.name and spec.data.label
    # and `trainyard validate`'s further checks (a tune section's grace period, metric and mode) pass too
    assert main(["validate", str(path)]) == 0, capsys.readouterr().err


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


def test_yaml_reads_1e_3_as_a_number_and_refuses_a_key_given_twice(tmp_path):
    # PyYAML follows YAML 1.1, where 1e-3 (no dot) is text: a learning-rate choice written so was refused as
    # "not positive learning rates: ['1e-3', ...]".
    path = tmp_path / "s.yaml"
    path.write_text("name: x\ndata: {path: d, label: y}\ntune:\n  lr: {choice: [1e-3, 1E-2, 3.0e-4]}\n"
                    "  weight_decay: {choice: [0, 1e-4]}\n")
    spec = load_spec(path, ["train.lr=2e-3"])
    assert spec.tune.lr.choice == [0.001, 0.01, 0.0003] and spec.tune.weight_decay.choice == [0, 0.0001]
    assert spec.train.lr == 0.002
    # A second `tune:` block used to replace the first without a word.
    path.write_text("name: x\ndata: {path: d, label: y}\ntune:\n  samples: 4\ntrain: {epochs: 3}\n"
                    "tune:\n  lr: {loguniform: [1.0e-4, 1.0e-1]}\n")
    with pytest.raises(SpecError, match=r"s.yaml: not valid YAML at line 6.*'tune' is given twice .*lines 3 and 6"):
        load_spec(path)


def test_a_union_field_gets_one_line_naming_its_forms():
    base = {"name": "x", "data": {"path": "d", "label": "y"}}

    def problems(tune):
        with pytest.raises(SpecError) as err:
            validate_spec({**base, "tune": tune}, "s.yaml")
        return err.value.problems

    for value in ("hyperband", None, False):
        lines = problems({"scheduler": value})
        assert len(lines) == 1 and lines[0].startswith("s.yaml: tune.scheduler: the scheduler is {asha:"), lines
        assert "or none" in lines[0]
    # A mapping that fails inside: its own problem, not also "should be 'none'", and no pydantic class names.
    assert problems({"scheduler": {"asha": {"reduction_factor": 1}}}) == [
        "s.yaml: tune.scheduler.asha.reduction_factor: Input should be greater than 1 (got 1)"]
    (line,) = problems({"scheduler": {"asha": {"grace": 1}}})
    assert "tune.scheduler.asha.grace: unknown key" in line and "grace_period, reduction_factor" in line
    for value in ("two", 2.5):
        (line,) = problems({"max_concurrent": value})
        assert line.startswith("s.yaml: tune.max_concurrent: max_concurrent is auto") and repr(value) in line
    (line,) = problems({"max_concurrent": 0})
    assert line.endswith("got 0"), line                           # said once, not "got 0 (got 0)"
    # A bare value where a search axis goes: the forms, and how to say what was probably meant.
    (line,) = problems({"lr": 0.01})
    assert "tune.lr: a search axis is {loguniform:" in line and "set train.lr and tune.lr: null" in line
    (line,) = problems({"batch_size": [32, 64]})
    assert line.endswith("write {choice: [32, 64]}"), line
    # `asha:` left empty means ASHA with its defaults, not (silently) no early stopping.
    spec = validate_spec({**base, "tune": {"scheduler": {"asha": None}}})
    assert spec.tune.scheduler.asha.grace_period == 2


def test_a_mode_against_the_metric_is_refused():
    base = {"name": "x", "data": {"path": "d", "label": "y"}}
    with pytest.raises(SpecError, match=r"tune.mode is max but val_loss is better when smaller .* set it to min"):
        validate_spec({**base, "tune": {"metric": "val_loss", "mode": "max"}})
    with pytest.raises(SpecError, match=r"train.early_stop.mode is min but val_auc is better when bigger"):
        validate_spec({**base, "train": {"early_stop": {"metric": "val_auc", "mode": "min"}}})
    assert validate_spec({**base, "tune": {"metric": "val_f1", "mode": "max"}}).tune.mode == "max"


def test_anchors_and_merge_keys_still_work(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: x\ndata: {path: d, label: y}\ntrain: &base {epochs: 3, lr: 1e-3}\n"
                    "tune:\n  lr: {choice: [1e-3, 1e-2]}\nserve:\n  autoscaling:\n    <<: &scale {min_replicas: 1, "
                    "max_replicas: 3}\n    max_replicas: 2\n")
    spec = load_spec(path)
    assert spec.serve.autoscaling.max_replicas == 2 and spec.serve.autoscaling.min_replicas == 1
