"""`trainyard evaluate`: bundles (versions of a model) scored side by side on the same labelled rows, in this
process: the numbers are each bundle's own `jobs.evaluate.score` over that table, overall and per slice."""
from __future__ import annotations

import json
import re

import pandas as pd
import pytest
import torch

from cluster.errors import EXIT_BAD_INPUT
from jobs import bundle as B
from jobs.evaluate import score
from jobs.manifest import write as write_manifest
from tests.test_bundle_write import _write
from trainyard import cli


@pytest.fixture
def versions(tmp_path):
    """Two versions of one small model (other weights), and 60 labelled rows with a slice column."""
    paths = []
    for seed, version in ((0, "v1"), (1, "v2")):
        torch.manual_seed(seed)
        paths.append(_write(tmp_path / version / "bundle", lineage={"version": version}))
    rows = pd.DataFrame({"x": [i / 10 for i in range(60)], "c": ["a", "b", "z"] * 20,
                         "y": ["yes" if i % 3 else "no" for i in range(60)], "site": ["north"] * 40 + ["south"] * 20})
    rows.loc[5, "y"] = None                                    # not labelled yet: left out, and counted
    rows.loc[7, "y"] = "maybe"                                 # no class of the model: not scored, and said
    rows.to_csv(tmp_path / "fresh.csv", index=False)
    return paths, rows, tmp_path / "fresh.csv"


def test_versions_are_scored_on_the_same_rows_overall_and_per_slice(versions, capsys):
    paths, rows, data = versions
    assert cli.main(["evaluate", str(paths[0]), str(paths[1]), "--data", str(data), "--by", "site"]) == 0
    out = capsys.readouterr().out.splitlines()
    labelled = pd.read_csv(data).dropna(subset=["y"])
    expected = [score(B.load(p), [labelled], "y") for p in paths]
    assert out[0] == f"[evaluate] 59 row(s) of {data} (label 'y'); 1 without a label left out"
    # What `trainyard predict` would say of the rows, said per version: 'z' is no category the model knows.
    assert out[1:3] == [f"[evaluate] note: {v}: 19 of 59 row(s) hold a 'c' it did not see in training (e.g. 'z'), "
                        "answered as its unknown category" for v in ("v1", "v2")]
    assert out[3] == "[evaluate] note: 1 of 59 row(s) hold a label that is not a class of the model ('maybe': 1); " \
                     "they are not scored"                      # before the scores (it came after them)
    assert out[4].split() == ["[evaluate]", "v1", "v2"]
    f1 = next(line for line in out if line.startswith("[evaluate] f1 (macro)"))
    assert f1.split()[-2:] == [f"{m['f1']:.4f}" for m in expected]
    assert next(line for line in out if line.startswith("[evaluate] recall 'yes'")).endswith("(38 rows)")

    north = labelled[labelled["site"] == "north"]
    by = out[out.index(next(line for line in out if line.startswith("[evaluate] by site: f1"))) + 1:]
    assert by[0].split()[:3] == ["[evaluate]", "north", "(39)"]            # rows of the slice, as labelled
    assert by[0].split()[-2:] == [f"{score(B.load(p), [north], 'y')['f1']:.4f}" for p in paths]
    assert by[1].split()[:3] == ["[evaluate]", "south", "(20)"]
    assert not any("suits a column of a few values" in line for line in out)
    # By a column of a value per row: 20 one-row slices shown, and said to say little.
    assert cli.main(["evaluate", str(paths[0]), "--data", str(data), "--by", "x"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-2] == "[evaluate]   ... 39 more value(s) of x, 39 row(s), not shown"
    assert out[-1].startswith("[evaluate] note: x has 59 distinct values in 59 rows, most slices under 20 rows")
    assert out[-1].endswith("--by suits a column of a few values (a type, a region); for a number, bin it into a "
                            "column of its own first")
    # A column of a few values over few rows: the rows are what is short, not the column.
    pd.read_csv(data).head(12).to_csv(data.parent / "few.csv", index=False)
    assert cli.main(["evaluate", str(paths[0]), "--data", str(data.parent / "few.csv"), "--by", "site"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith(
        "most slices under 20 rows, where a score says little: score more rows (a longer period, or without "
        "--held-out)")
    # By a column a warehouse's Parquet stores dictionary-encoded (read as a pandas Categorical): the same slices
    # (was a TypeError, "Cannot setitem on a Categorical with a new category", exit 1).
    import pyarrow as pa
    import pyarrow.parquet as pq
    table = pa.Table.from_pandas(rows.assign(site=rows["site"].where(rows.index != 3)), preserve_index=False)
    pq.write_table(table.set_column(table.schema.get_field_index("site"), "site",
                                    table["site"].dictionary_encode()), data.with_suffix(".parquet"))
    assert cli.main(["evaluate", str(paths[0]), "--data", str(data.with_suffix(".parquet")), "--by", "site"]) == 0
    sliced = [line.split()[1:3] for line in capsys.readouterr().out.splitlines() if line.startswith("[evaluate]   ")]
    assert sliced[-3:] == [["north", "(38)"], ["south", "(20)"], ["(missing)", "(1)"]], sliced


def test_what_cannot_be_scored_is_named(versions, tmp_path, capsys):
    paths, rows, data = versions
    rows.drop(columns=["y"]).to_csv(tmp_path / "unlabelled.csv", index=False)
    cases = [
        (["--data", str(tmp_path / "unlabelled.csv")], r"unlabelled.csv: no column 'y' \(the bundle's label\). Its "
                                                       r"columns: 'x', 'c', 'site'"),
        (["--data", str(data), "--by", "Site"], r"fresh.csv: no column 'Site' \(the --by column\). Did you mean "
                                                r"'site'\? Its columns"),
        (["--data", str(tmp_path / "none.csv")], r"none.csv: no such file"),
    ]
    for extra, says in cases:
        assert cli.main(["evaluate", str(paths[0]), *extra]) == EXIT_BAD_INPUT
        assert re.search(says, capsys.readouterr().err)
    # Labels written otherwise than the model's classes: nothing scored is no score of 0 (exit 2, said why).
    rows.assign(y=rows["y"].str.upper()).to_csv(tmp_path / "upper.csv", index=False)
    assert cli.main(["evaluate", str(paths[0]), "--data", str(tmp_path / "upper.csv")]) == EXIT_BAD_INPUT
    assert re.search(r"upper.csv: no row's label is a class of the model: column 'y' holds 'MAYBE', 'NO', 'YES', "
                     r"the model's classes are 'no', 'yes' \('no' and 'NO' differ only in case or in spaces around them", capsys.readouterr().err)
    # Codes for the classes (0/1 for 'no'/'yes'): the fix given, in the classes' order (it stopped at the refusal).
    labelled = rows[rows["y"].isin(["no", "yes"])]
    labelled.assign(y=(labelled["y"] == "yes").astype(int)).to_csv(tmp_path / "codes.csv", index=False)
    assert cli.main(["evaluate", str(paths[0]), "--data", str(tmp_path / "codes.csv")]) == EXIT_BAD_INPUT
    assert ("codes.csv: no row's label is a class of the model: column 'y' holds '0', '1', the model's classes are "
            "'no', 'yes'; if '0', '1' stand for 'no', 'yes' in that order, write them so (pandas: df['y'] = "
            "df['y'].astype(str).map({'0': 'no', '1': 'yes'}))") in capsys.readouterr().err
    # Some of them written otherwise ('yes ' for 'yes', as a bank's export had half its defaults): the rest's
    # scores described the rest alone (recall 1.0 on half the positives, said in a line after them), exit 0.
    rows.assign(y=[f"{v} " if v == "yes" and i % 2 else v for i, v in enumerate(rows["y"])]).to_csv(
        tmp_path / "spaced.csv", index=False)
    assert cli.main(["evaluate", str(paths[0]), "--data", str(tmp_path / "spaced.csv")]) == EXIT_BAD_INPUT
    assert re.search(r"spaced.csv: 19 of 59 row\(s\) hold a label that is no class of the model \('yes ': 18, "
                     r"'maybe': 1\), and 'yes' and 'yes ' differ only in case or in spaces around them: write the labels as the model's "
                     r"classes", capsys.readouterr().err)
    # A label stored dictionary-encoded (a pandas Categorical when read): its categories of no row are no labels
    # (the model's own classes were refused as "0 row(s) ... 'no' and 'no' differ").
    rows.assign(y=rows["y"].astype("category")).to_parquet(tmp_path / "categorical.parquet")
    assert cli.main(["evaluate", str(paths[0]), "--data", str(tmp_path / "categorical.parquet")]) == 0
    assert "[evaluate] note: 1 of 59 row(s) hold a label that is not a class of the model ('maybe': 1); they are " \
           "not scored" in capsys.readouterr().out
    # Cells left empty: imputed, and said as `trainyard predict` says them.
    rows.assign(x=rows["x"].where(rows.index % 10 != 0)).to_csv(tmp_path / "gaps.csv", index=False)
    assert cli.main(["evaluate", str(paths[0]), "--data", str(tmp_path / "gaps.csv")]) == 0
    assert "[evaluate] note: v1: 6 of 59 row(s) leave features empty, which it imputes: x in 6 row(s)" in \
        capsys.readouterr().out
    # Numbers written with a thousands comma, or a '?' among them: the column read as text was imputed whole and
    # scored without a word, where `trainyard predict` refuses the file; refused the same way, naming the lines.
    rows.assign(x=[f"{v:,.1f}" if i != 9 else "?" for i, v in enumerate(rows["x"] * 1000)]).to_csv(
        tmp_path / "commas.csv", index=False)
    assert cli.main(["evaluate", str(paths[0]), "--data", str(tmp_path / "commas.csv")]) == EXIT_BAD_INPUT
    assert re.search(r"commas.csv: column 'x' must hold numbers; 51 cell\(s\) do not \(line 11: '\?', line 12: "
                     r"'1,000.0', line 13: '1,100.0'\) \(a thousands separator: save the file anew, e.g. with pandas: "
                     r"pd.read_csv\(path, thousands=','\)\)\. Fix them, or leave them empty", capsys.readouterr().err)
    # A renamed column: imputed for every row, said (a version ranked below its worth otherwise).
    rows.rename(columns={"x": "x_renamed"}).to_csv(tmp_path / "renamed.csv", index=False)
    assert cli.main(["evaluate", str(paths[0]), "--data", str(tmp_path / "renamed.csv")]) == 0
    assert ("[evaluate] note: v1: the rows have no column for 'x': the model imputed it for every row, as it does a "
            "missing value; the file's columns it does not take: 'x_renamed', 'site'") in capsys.readouterr().out
    # A column spelt nearly as the feature ('X' for 'x'): imputed for every row, with exit 0, where `predict`
    # refuses the same rows by name; refused here too.
    rows.rename(columns={"x": "X"}).to_csv(tmp_path / "cased.csv", index=False)
    assert cli.main(["evaluate", str(paths[0]), "--data", str(tmp_path / "cased.csv")]) == EXIT_BAD_INPUT
    assert f"cased.csv: no column 'x', a feature of {paths[0]}; the rows have 'X': did you mean it?" in \
        capsys.readouterr().err
    # The same bundle given twice (a run folder resolves to its newest version): said, not two columns unmarked.
    assert cli.main(["evaluate", str(paths[0]), str(paths[0]), "--data", str(tmp_path / "gaps.csv")]) == 0
    assert f"[evaluate] warning: {paths[0]} and {paths[0]} are the same bundle" in capsys.readouterr().out
    # A folder of a month a shard: shards may differ in a column evaluate does not read (an operator's note in
    # one month's file was refused, CSV or Parquet), and Parquet shards that differ in a feature are refused as
    # CSV ones are (a shard lacking one was imputed whole, said only as empty cells).
    for kind in ("csv", "parquet"):
        months = tmp_path / f"months-{kind}"
        months.mkdir()
        parts = [rows.iloc[:30], rows.iloc[30:].assign(operator_note="oil changed")]
        for i, part in enumerate(parts):
            getattr(part, f"to_{kind}")(months / f"2025-0{i + 1}.{kind}", index=False)
        assert cli.main(["evaluate", str(paths[0]), "--data", str(months), "--by", "site"]) == 0, kind
        assert capsys.readouterr().out.splitlines()[0] == f"[evaluate] 59 row(s) of {months} (label 'y'); 1 without " \
                                                         "a label left out"
        getattr(parts[1].drop(columns=["c"]), f"to_{kind}")(months / f"2025-02.{kind}", index=False)
        assert cli.main(["evaluate", str(paths[0]), "--data", str(months)]) == EXIT_BAD_INPUT, kind
        assert re.search(rf"2025-02.{kind}: its columns differ from 2025-01.{kind}'s \(lacks 'c'(; adds 'operator_note')?\) in "
                         r"folder",
                         capsys.readouterr().err), kind
        # The --by column is read too: a shard without it is refused by it, not by the features alone.
        getattr(parts[1].drop(columns=["site"]), f"to_{kind}")(months / f"2025-02.{kind}", index=False)
        assert cli.main(["evaluate", str(paths[0]), "--data", str(months)]) == 0, kind
        capsys.readouterr()
        assert cli.main(["evaluate", str(paths[0]), "--data", str(months), "--by", "site"]) == EXIT_BAD_INPUT
        assert "(lacks 'site'" in capsys.readouterr().err, kind
    # A model of another label is not a version of this one.
    other = _write(tmp_path / "other" / "bundle", lineage={"version": "o1"})
    pre = json.loads((other / "preprocessor.json").read_text())
    pre["label"] = "churned"
    (other / "preprocessor.json").write_text(json.dumps(pre))
    write_manifest(other, "o1")                 # as if written so: the bundle loads
    assert cli.main(["evaluate", str(paths[0]), str(other), "--data", str(data)]) == EXIT_BAD_INPUT
    assert re.search(r"the bundles predict different things: .* classification of 'y', .*other/bundles/o1 "
                     r"classification of 'churned'; compare versions of one model", capsys.readouterr().err)


def test_each_versions_recall_of_a_class_is_read_in_its_own_class_order(versions, tmp_path, capsys):
    """A retrain that knows a third class ('maybe', before 'no' and 'yes') has its confusion matrix in its own
    order: its recall of 'yes' was read from the row of 'no' (or an IndexError, the other way round)."""
    from jobs.model import build_model
    from jobs.tabular import CategoricalState, NumericState, Preprocessor
    from tests.test_bundle_write import CONFIG

    paths, rows, data = versions
    config = {**CONFIG, "output_dim": 3}
    pre = Preprocessor(task="classification", label="y", classes=["maybe", "no", "yes"],
                       numeric=[NumericState("x", fill=0.0, center=0.0, scale=1.0)],
                       categorical=[CategoricalState("c", ["a", "b"])])
    three = B.write(tmp_path / "v3" / "bundle", state_dict=build_model(config).state_dict(), model_config=config,
                    preprocessor=pre, metrics={"val": {"val_accuracy": 0.5}}, spec_yaml="name: t\n",
                    lineage={"version": "v3"})
    labelled = pd.read_csv(data).dropna(subset=["y"])
    for order in ([paths[0], three], [three, paths[0]]):
        assert cli.main(["evaluate", *map(str, order), "--data", str(data)]) == 0
        out = capsys.readouterr().out.splitlines()
        cm = score(B.load(three), [labelled], "y")["confusion_matrix"]
        want = cm[2][2] / sum(cm[2])
        line = next(line for line in out if line.startswith("[evaluate] recall 'yes'"))
        assert line.split()[3 + order.index(three)] == f"{want:.4f}", (line, want)


def test_a_regression_by_a_column_shows_mae_and_rmse_and_bundles_of_two_jobs_are_named_by_job(tmp_path, capsys):
    """Days to failure: `--by` showed RMSE alone (MAE, in days, is what its users track); `evaluate runs/rul
    runs/rul_huber` headed two timestamps; a slice value cut to 14 characters ("2025-05-14 21:") read as a value."""
    from jobs.model import build_model
    from jobs.tabular import NumericState, Preprocessor

    config = {"kind": "mlp", "input_dim": 1, "output_dim": 1, "hidden": [3], "dropout": 0.0, "activation": "relu"}
    paths = []
    for seed, job in ((0, "rul"), (1, "rul_huber")):
        torch.manual_seed(seed)
        pre = Preprocessor(task="regression", label="days", categorical=[], numeric=[NumericState("x", fill=0.0, center=0.0,
                                                                                   scale=1.0)])
        pre.label_center, pre.label_scale = 40.0, 30.0
        paths.append(B.write(tmp_path / job / "bundle", state_dict=build_model(config).state_dict(),
                             model_config=config, preprocessor=pre, metrics={"val": {"val_mae": 1.0}},
                             spec_yaml=f"name: {job}\n", lineage={"name": job, "version": "20261206-120000"},
                             progress=lambda _line: None))
    rows = pd.DataFrame({"x": [i / 10 for i in range(60)], "days": [float(i % 17) for i in range(60)],
                         "when": ["2025-05-14 21:00:00+00:00"] * 40 + ["2025-05-15 08:00:00+00:00"] * 20})
    rows.to_csv(tmp_path / "rows.csv", index=False)
    assert cli.main(["evaluate", str(paths[0]), str(paths[1]), "--data", str(tmp_path / "rows.csv"),
                     "--by", "when"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split() == ["[evaluate]", "rul/20261206-120000", "rul_huber/20261206-120000"], out[1]
    head = next(line for line in out if line.startswith("[evaluate] by when: mae/rmse"))
    assert head.split()[4:] == ["mae", "rul/20261206-120000", "rmse", "rul/20261206-120000", "mae",
                                "rul_huber/20261206-120000", "rmse", "rul_huber/20261206-120000"], head
    first = out[out.index(head) + 1]
    assert first.split()[1:4] == ["2025-05-14", "21:00:0…", "(40)"], first
    part = pd.read_csv(tmp_path / "rows.csv").head(40)
    want = [score(B.load(p), [part], "days")[k] for p in paths for k in ("mae", "rmse")]
    assert first.split()[-4:] == [f"{v:.4f}" for v in want], first


def test_versions_of_other_cut_offs_are_said_with_what_each_flags(versions, tmp_path, capsys):
    """A retrain with a cut-off beside one without: each version's answer rule, what its cut-off flags (rows, the
    positives among them, against their base rate) and a version that answers one class for every row, said under
    the scores (accuracy and macro F1 alone ranked the model that never flags the rare class first)."""
    from tests.serving_fixtures import bundle_variant

    paths, rows, data = versions
    cut = bundle_variant(paths[1], tmp_path / "v3", version="v3", cut_off=("yes", 0.0))     # flags every row
    assert cli.main(["evaluate", str(paths[0]), str(cut), "--data", str(data)]) == 0
    out = capsys.readouterr().out.splitlines()
    labelled = rows[rows["y"].isin(["no", "yes"])]
    yes = int((labelled["y"] == "yes").sum())
    assert "[evaluate] v1 answers by the likelier class" in out
    assert "[evaluate] v3 answers 'yes' when P('yes') >= 0 (threshold 0)" in out
    assert (f"[evaluate] v3 at the cut-off: 'yes' for {len(labelled)} of {len(labelled)} rows (100%); they hold "
            f"{yes} of the {yes} 'yes' rows (recall 1.000), precision {yes / len(labelled):.3f}, 1.0x the base rate "
            f"{yes / len(labelled):.1%}") in out
    assert any(line.startswith("[evaluate] warning: v3 predicts 'yes' for every row; it never predicts 'no'")
               for line in out), out
    # A cut-off chosen for a recall that falls short of it on these rows: said, as `train` says it of its test
    # split (a validator read "recall 0.6957" under "min_recall 0.8" with no word).
    strict = bundle_variant(paths[1], tmp_path / "v4", version="v4", cut_off=("yes", 0.999), target=("recall", 0.8))
    assert cli.main(["evaluate", str(strict), "--data", str(data)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"\[evaluate\] note: v4: the cut-off's recall of 'yes' on these rows is 0\.\d{3} \(\d+ of "
                     rf"{yes}\), below the min_recall 0\.8 it was chosen for \((one that meets it reads this low in "
                     rf"\d+% of samples of {yes}|lower than chance explains, p [0-9.e-]+)\)", out), out
    # By a slice: the recall and precision of the class the cut-off is for (macro F1 hid the defaults caught).
    assert cli.main(["evaluate", str(cut), str(paths[0]), "--data", str(data), "--by", "site"]) == 0
    out = capsys.readouterr().out.splitlines()
    head = next(line for line in out if line.startswith("[evaluate] by site: "))
    assert head.startswith("[evaluate] by site: recall/precision of 'yes'") and head.split()[-8:] == [
        "recall", "v3", "precision", "v3", "recall", "v1", "precision", "v1"], head
    north = labelled[labelled["site"] == "north"]                  # the rows scored: a label of the model's classes
    row = out[out.index(head) + 1].split()
    # Each slice says how many rows of the positive class its recall rests on.
    assert row[:5] == ["[evaluate]", "north", f"({int((rows.dropna(subset=['y'])['site'] == 'north').sum())},",
                       str(int((north["y"] == "yes").sum())), "'yes')"], row
    assert row[5:7] == ["1.0000", f"{(north['y'] == 'yes').mean():.4f}"]        # v3 flags every row
    # The cells stay under their heads however long a slice's label grows with its count of positives.
    block = out[out.index(head):out.index(head) + 1 + rows["site"].nunique()]
    assert len({len(line) for line in block}) == 1, block
    # The version without a cut-off named first: the same class's recall and precision (F1 for both, before).
    assert cli.main(["evaluate", str(paths[0]), str(cut), "--data", str(data), "--by", "site"]) == 0
    out = capsys.readouterr().out.splitlines()
    head = next(line for line in out if line.startswith("[evaluate] by site: "))
    assert head.startswith("[evaluate] by site: recall/precision of 'yes'"), head
    assert out[out.index(head) + 1].split()[5:9] == row[7:9] + row[5:7]


def test_test_rows_of_categories_the_model_lacks_are_counted_for_the_runs_note(versions):
    """Split by time, a region opened late is in the test split alone: the run scored it without a word."""
    from jobs.evaluate import unseen_test_note

    paths, rows, _ = versions
    bundle = B.load(paths[0])
    unseen: dict = {}
    labelled = rows[rows["y"].isin(["yes", "no"])]
    score(bundle, [labelled.head(30), labelled.tail(28)], "y", unseen=unseen)
    assert unseen == {"c": [int((labelled["c"] == "z").sum()), "z", None]}     # the model knows 'a' and 'b'
    assert unseen_test_note(unseen, 58, {"order": "seen"}) == (
        "[evaluate] note: test rows hold category values the model has no category for, answered as its unknown "
        "category (later periods bring values the earlier ones lacked: the test split measures the model on them): "
        "'c' in 19 (e.g. 'z') of 58 row(s)")
    assert "groups the model never saw" in unseen_test_note(unseen, 58, {"by": "shop"})
    assert unseen_test_note({}, 58, {}) is None
    # Values training saw but did not keep (max_categories) count too: said, and no cause guessed.
    kept = unseen_test_note({"c": [19, "z", (2, 40)]}, 58, {"order": "seen"})
    assert kept.endswith("unknown category: 'c' in 19 (e.g. 'z'; it keeps the 2 most frequent of the 40 values "
                         "training saw (data.preprocess.max_categories), the rest count here too) of 58 row(s)")


def test_rows_a_bundle_trained_on_are_said_and_held_out_scores_the_rest(tmp_path, capsys):
    """A model split by patient, scored on later visits of its own patients, read better than one split by time
    (a walkthrough's comparison, in the leaky model's favour, without a word). Each bundle's split places the
    rows: those it trained or validated on are counted per bundle, and --held-out scores the rows every bundle
    held out. A bundle split by row cannot place new rows: --held-out says so."""
    import numpy as np

    from jobs.placed import TEST, splits_of

    by_time = {"val": 0.15, "test": 0.15, "seed": 0, "order": "day", "from": {"val": 30, "test": 40, "train_until": 29}}
    by_site = {"val": 0.15, "test": 0.15, "seed": 3, "by": "site", "stratified": False, "groups": {},
               "cuts": [[None, 0.5, 0.75]]}
    paths = [_write(tmp_path / v / "bundle", lineage={"version": v, "data": {"split": split}})
             for v, split in (("t1", by_time), ("g1", by_site))]
    rows = pd.DataFrame({"x": [i / 10 for i in range(60)], "c": ["a", "b"] * 30,
                         "y": ["yes" if i % 3 else "no" for i in range(60)], "day": range(60),
                         "site": [f"s{i % 12}" for i in range(60)]})
    rows.to_csv(tmp_path / "rows.csv", index=False)
    in_site_test = splits_of(by_site, rows, "y") == TEST
    assert 0 < in_site_test.sum() < 60                      # some sites in its test split, some not

    assert cli.main(["evaluate", *map(str, paths), "--data", str(tmp_path / "rows.csv")]) == 0
    out = capsys.readouterr().out
    assert ("[evaluate] note: t1: 40 of the 60 row(s) it can place are of its train or validation split, before "
            "its test split ('day' from 40) (30 train, 10 validation): its scores there flatter it; --held-out scores the bundles on the rows none "
            "of them trained or validated on") in out
    assert f"[evaluate] note: g1: {60 - in_site_test.sum()} of the 60 row(s) it can place are of 'site' groups it " \
           "trained or validated on" in out
    both = int((in_site_test & (rows["day"] >= 40)).sum())
    assert cli.main(["evaluate", *map(str, paths), "--data", str(tmp_path / "rows.csv"), "--held-out"]) == 0
    out = capsys.readouterr().out
    assert (f"[evaluate] --held-out: {both} of 60 row(s) are in every bundle's test split or of groups it never saw: "
            "scored on those") in out
    kept = rows[in_site_test & (rows["day"] >= 40).to_numpy()]
    f1 = next(line for line in out.splitlines() if line.startswith("[evaluate] f1 (macro)"))
    assert f1.split()[-2:] == [f"{score(B.load(p), [kept], 'y')['f1']:.4f}" for p in paths]

    # Rows a bundle cannot place are said, not passed over (no note read as "none of them trained on"), and times
    # it cannot read are counted (a column of numbers with stray text is read as text: none of it is placed).
    rows.drop(columns=["site"]).to_csv(tmp_path / "nosite.csv", index=False)
    assert cli.main(["evaluate", *map(str, paths), "--data", str(tmp_path / "nosite.csv")]) == 0
    assert ("[evaluate] note: g1: which of these rows it trained or validated on cannot be told: it was split by "
            "'site', a column the rows lack") in capsys.readouterr().out
    rows.assign(day=[str(d) if d % 2 else f"day {d}" for d in rows["day"]]).to_csv(tmp_path / "odd.csv", index=False)
    assert cli.main(["evaluate", str(paths[0]), "--data", str(tmp_path / "odd.csv")]) == 0
    assert ("[evaluate] note: t1: 60 row(s) hold a 'day' that is not a time or number it can place (dates are read "
            "in ISO form, 2024-07-15)") in capsys.readouterr().out
    by_row = _write(tmp_path / "r1" / "bundle", lineage={"version": "r1", "data": {"split": {"seed": 0}}})
    assert cli.main(["evaluate", str(by_row), "--data", str(tmp_path / "rows.csv"), "--held-out"]) == EXIT_BAD_INPUT
    assert "--held-out: r1 was split by row: which rows it held out cannot be told from other data" in \
        capsys.readouterr().err
    rows.drop(columns=["site"]).to_csv(tmp_path / "nosite.csv", index=False)
    assert cli.main(["evaluate", str(paths[1]), "--data", str(tmp_path / "nosite.csv"), "--held-out"]) == 2
    assert "--held-out: g1 was split by 'site', a column the rows lack" in capsys.readouterr().err
    assert np.isin(splits_of(by_time, rows, "y"), (0, 1, 2)).all()

    # Split by time with a gap of 5 days: the rows within it before validation's and test's starts were in no
    # split, not trained on.
    gapped = _write(tmp_path / "t2" / "bundle", lineage={"version": "t2", "data": {"split": {**by_time, "gap": 5.0}}})
    assert cli.main(["evaluate", str(gapped), "--data", str(tmp_path / "rows.csv")]) == 0
    assert ("[evaluate] note: t2: 32 of the 60 row(s) it can place are of its train or validation split, before "
            "its test split ('day' from 40) (26 train, 6 validation; 8 more in its data.split.gap 5, in no split): its scores there flatter it"
            ) in capsys.readouterr().out


def test_a_near_name_is_refused_only_where_it_is_a_misspelling():
    """The refusal of a feature missing beside a column spelt nearly so (review): not another version's feature
    ('score_v2' for v1's 'score_v1'), not a split's column ('patient_id' for 'patient_age'), not a name that
    differs in its digits alone ('sensor_7' for 'sensor_3'); a case or a letter is one."""
    from types import SimpleNamespace

    from jobs.bundle import BundleError
    from trainyard.evaluate import _renamed

    def bundle(*features, split=None):
        return SimpleNamespace(path=f"b-{features[0]}", schema={"features": [{"name": f} for f in features]},
                               lineage={"data": {"split": split or {}}})

    def refused(bundles, columns, by=None):
        try:
            _renamed(bundles, pd.DataFrame(columns=columns), "rows.csv", "y", by)
        except BundleError as exc:
            return str(exc)
        return None

    assert refused([bundle("score_v1"), bundle("score_v2")], ["score_v2", "y"]) is None
    assert refused([bundle("patient_age", split={"by": "patient_id"})], ["patient_id", "y"]) is None
    assert refused([bundle("sensor_3", "sensor_7")], ["sensor_7", "y"]) is None
    assert refused([bundle("sensor_3")], ["Sensor_3", "y"]).startswith("rows.csv: no column 'sensor_3', a feature of "
                                                                      "b-sensor_3; the rows have 'Sensor_3'")
    assert "the rows have 'incme'" in refused([bundle("income")], ["incme", "y"])
    assert refused([bundle("income")], ["income_band", "y"], by="income_band") is None
