"""Preprocessing: fitted on train only (asserted), JSON state, one transform for Ray Data and for records."""
import json

import numpy as np
import pandas as pd
import pytest

from cluster.errors import BadInput
from jobs import preprocess as PP
from jobs.images import ImagePreprocessor
from jobs.ingest import TEST, TRAIN, VAL, ingest
from jobs.spec import validate_spec


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, ray_session):
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
    # ... of the 3 values the train split held, which /schema says (`kept_of`) for the notes on values outside.
    from jobs.schema import input_schema
    assert pre.stats["categories_seen"] == {"kind": 3}
    assert next(f for f in input_schema(pre)["features"] if f["name"] == "kind")["kept_of"] == 3


def test_state_is_plain_json(fitted, tmp_path):
    _, pre = fitted
    pre.save(tmp_path / "p.json")
    again = PP.load(tmp_path / "p.json")
    assert json.loads((tmp_path / "p.json").read_text())["task"] == "classification"
    assert again.stats["categories_seen"] == {"kind": 3}
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


# ---------------------------------------------------------------------------------------------- no Ray
def _tabular(**fields) -> PP.Preprocessor:
    return PP.Preprocessor(task="classification", label="y", numeric=[PP.NumericState("temp", 50.0, 50.0, 5.0)],
                           categorical=[PP.CategoricalState("kind", ["a", "b"])], classes=[0, 1], **fields)


def _image() -> ImagePreprocessor:
    return ImagePreprocessor(label="label", classes=["ok", "defect"], size=[2, 3], channels=1, mean=[0.5],
                             std=[0.25], stats={"train_rows": 4})


def test_every_kind_round_trips_through_its_json_state(tmp_path):
    for pre in (_tabular(), _image()):
        state = json.loads(json.dumps(pre.to_dict()))
        assert state["kind"] == pre.kind and state["task"] == "classification"
        again = PP.load_state(state)
        assert type(again) is type(pre) and again == pre
        pre.save(tmp_path / f"{pre.kind}.json")
        assert PP.load(tmp_path / f"{pre.kind}.json") == pre


def test_image_state_holds_only_image_fields_and_old_states_still_load():
    pre = _image()
    state = pre.to_dict()
    assert not {"numeric", "categorical", "unknown_category", "label_center", "label_scale"} & set(state)
    assert (pre.feature_dim, pre.output_dim, pre.shape, pre.feature_names) == (6, 2, [1, 2, 3], ["image"])
    # preprocessor.json of bundles written before each kind had its own type: tabular fields, empty
    legacy = {**state, "numeric": [], "categorical": [], "unknown_category": "ignore", "label_center": 0.0,
              "label_scale": 1.0}
    assert PP.load_state(legacy) == pre
    tabular_before_kinds = {k: v for k, v in _tabular().to_dict().items() if k != "kind"}
    assert PP.load_state(tabular_before_kinds) == _tabular()


def test_an_unknown_kind_is_bad_input_naming_the_kinds():
    with pytest.raises(BadInput, match=r"unknown kind 'audio'.*\['image', 'tabular', 'text'\]"):
        PP.load_state({"kind": "audio"})


def test_transform_batch_and_labels_without_ray():
    pre = _tabular()
    batch = pre.transform_batch(pd.DataFrame({"temp": [55.0, None], "kind": ["b", None], "y": [1, 0]}))
    assert batch["features"].tolist() == [[1.0, 0, 1, 0], [0.0, 0, 0, 1]]
    assert batch["label"].tolist() == [1, 0]
    reg = PP.Preprocessor(task="regression", label="y", numeric=[], categorical=[], label_center=10.0,
                          label_scale=2.0)
    y = reg.encode_labels(pd.Series([12.0, 8.0]))
    assert y.tolist() == [1.0, -1.0] and reg.decode_regression(y).tolist() == [12.0, 8.0]
    with pytest.raises(ValueError, match=r"label value 7 was not seen in the train split"):
        pre.encode_labels(pd.Series([7]))


def test_record_problems_name_unseen_categories_only_under_unknown_category_error():
    records = [{"kind": "a"}, {"kind": "zzz"}, {"kind": None}, {}]
    assert _tabular().record_problems(records) == []
    assert _tabular(unknown_category="error").record_problems(records) == [
        "record 1: kind='zzz' is not a known category (known: ['a', 'b'])"]
    assert _image().record_problems([{"image": "x"}]) == []


def test_a_boolean_feature_takes_true_and_false_however_a_client_writes_them():
    """A warehouse's bool column, served: {"is_member": "True"} went to the unknown category (answer 101.08 →
    94.63) with 200 OK; 1 and '0' too. The model, the server's checker and its logs take them as booleans now;
    a category of other values is as before."""
    from serving.schema import RequestChecker

    pre = PP.Preprocessor(task="classification", label="y", numeric=[],
                          categorical=[PP.CategoricalState("member", ["true", "false"]),
                                       PP.CategoricalState("kind", ["1", "0"])], classes=[0, 1])
    rows = pd.DataFrame({"member": [True, "True", " false", 1, "0", "yes"], "kind": ["1", 1, "0", 0, "true", "1"]})
    packed = pre.transform(rows)
    assert packed[:, :3].argmax(axis=1).tolist() == [0, 0, 1, 0, 1, 2]          # 'yes': the unknown slot
    assert packed[:, 3:].argmax(axis=1).tolist() == [0, 0, 1, 1, 2, 0]          # not booleans: as before
    assert _tabular(unknown_category="error").record_problems([{"kind": "a"}]) == []
    checker = RequestChecker({"features": [{"name": "member", "type": "category", "dtype": "bool",
                                            "categories": ["true", "false"]},
                                           {"name": "kind", "type": "category", "dtype": "string",
                                            "categories": ["1", "0"]}], "unknown_category": "error"},
                             max_records=10, max_body_bytes=2**20)
    assert checker.parse(b'{"records": [{"member": "TRUE", "kind": "1"}, {"member": 0}, {"member": false}]}') == [
        {"member": True, "kind": "1"}, {"member": False}, {"member": False}]


def test_category_values_the_train_split_did_not_hold_are_found_record_by_record():
    """An insurer's '1,000' deductible (known: '1000'), ' North' and a count of 7 (known 0-4) went to the unknown
    category, flipping an answer from P(yes) 0.61 to 0.09, and `trainyard predict` said nothing."""
    from jobs.tabular import unseen_categories
    from serving.notes import unseen_note

    known = {"deductible": {"500", "1000"}, "region": {"North", "South"}, "flag": {"true", "false"}}
    records = [{"deductible": 1000, "region": "North", "flag": True}, {"deductible": "1,000"},
               {"region": " North", "deductible": 1000.0}, {"deductible": None, "region": float("nan")}, {},
               {"flag": "yes", "deductible": 7}, {"flag": "True"}, {"flag": 0}, {"flag": " FALSE"}, {"flag": 2}]
    # A boolean in training: 'True', 0 and ' FALSE' are the booleans they stand for; 'yes' and 2 are not.
    assert unseen_categories(known, records) == [
        {"record": 1, "field": "deductible", "value": "1,000"}, {"record": 2, "field": "region", "value": " North"},
        {"record": 5, "field": "deductible", "value": 7}, {"record": 5, "field": "flag", "value": "yes"},
        {"record": 9, "field": "flag", "value": 2}]
    assert unseen_categories({}, records) == [] and unseen_categories(known, [{"deductible": "500"}]) == []
    # A long one is said in part, with its length (a megabyte-long value was echoed whole in each response).
    assert unseen_categories(known, [{"region": "N" * 1_000_000}]) == [
        {"record": 0, "field": "region", "value": "N" * 100 + "… (1,000,000 characters)"}]
    features = [{"name": "deductible", "categories": ["1000", "500"]},
                {"name": "region", "categories": [f"r{i}" for i in range(10)]}]
    notes = unseen_categories(known, records)[:3]
    # A feature whose train split held more values than it kept: a value outside may be one training held.
    kept = [features[0], {**features[1], "kept_of": 300}]
    assert unseen_note(notes, 6, "rows.csv", kept).endswith(
        "region in 1 row(s) (e.g. ' North'; it knows 'r0', 'r1', 'r2', 'r3', 'r4', 'r5', 'r6', 'r7', ...; it kept the "
        "10 most frequent of the 300 values it saw in training (data.preprocess.max_categories), the rest are its "
        "unknown category too)")
    assert unseen_note([], 6, "rows.csv", features) is None
    assert unseen_note(notes, 6, "rows.csv", features) == (
        "note: 3 of 6 row(s) of rows.csv hold categories the model did not see in training, which it answers as its "
        "unknown category, as it does a missing value (the unseen_categories column names them; a spelling of a "
        "known one is better mended in the file): deductible in 2 row(s) (e.g. '1,000'; it knows '1000', '500'), "
        "region in 1 row(s) (e.g. ' North'; it knows 'r0', 'r1', 'r2', 'r3', 'r4', 'r5', 'r6', 'r7', ...)")


def test_values_well_outside_the_train_splits_range_are_found_record_by_record():
    from jobs.schema import input_schema
    from jobs.tabular import outside_range, training_ranges
    from jobs.text import TextPreprocessor
    from serving.notes import out_of_range_note

    stats = {"numeric": {"temp": {"mean": 50.0, "std": 5.0, "min": 40.0, "max": 60.0}}}
    pre = _tabular(stats=stats)
    ranges = training_ranges(pre)
    assert ranges == [("temp", 40.0, 60.0)]
    # Up to a tenth of the range past either end is fresh data of the same kind; beyond is said, in record order,
    # numbers sent as text too; missing, null, NaN, infinite, booleans and words are left to the other checks.
    records = [{"temp": 62.0}, {"temp": -500}, {}, {"temp": None}, {"temp": float("nan")}, {"temp": float("inf")},
               {"temp": True}, {"temp": "warm"}, {"temp": "1e4", "kind": "a"}, {"temp": 37.9}, {"temp": 38.1}]
    assert outside_range(ranges, records) == [
        {"record": 1, "field": "temp", "value": -500, "trained_on": [40.0, 60.0]},
        {"record": 8, "field": "temp", "value": 10000.0, "trained_on": [40.0, 60.0]},
        {"record": 9, "field": "temp", "value": 37.9, "trained_on": [40.0, 60.0]}]
    assert outside_range(ranges, [{"temp": 40.0}, {"temp": 60.0}, {"temp": 50}]) == []
    # schema.json tells clients the range; a preprocessor without the statistics (one made by hand) or a column
    # the train split held no value of has none, and nothing is said about it.
    assert input_schema(pre)["features"][0]["trained_on"] == [40.0, 60.0]
    for old in ({}, {"numeric": {"temp": {"mean": None, "std": None, "min": None, "max": None}}}):
        assert training_ranges(_tabular(stats=old)) == [] and "trained_on" not in input_schema(
            _tabular(stats=old))["features"][0]
    # A text model's table columns have their range; an image model has no numbers.
    text = TextPreprocessor.__new__(TextPreprocessor)
    text.tabular = pre
    assert training_ranges(text) == ranges and training_ranges(_image()) == []
    # `trainyard predict`'s line: rows counted once, fields with the most rows first, an example each.
    notes = [{"record": 3, "field": "temp", "value": -500, "trained_on": [40.0, 60.0]},
             {"record": 3, "field": "age", "value": 1e6, "trained_on": [18.0, 90.0]},
             {"record": 7, "field": "temp", "value": 99.5, "trained_on": [40.0, 60.0]}]
    assert out_of_range_note([], 10, "rows.csv") is None
    assert out_of_range_note(notes, 10, "rows.csv") == (
        "note: 2 of 10 row(s) of rows.csv hold numbers well outside the range the model was trained on (past it by "
        "over a tenth of its width), where it extrapolates and its prediction may be far off (the out_of_range "
        "column names them): temp in 2 row(s) (e.g. -500; trained on 40 to 60), age in 1 row(s) (e.g. 1e+06; "
        "trained on 18 to 90)")


def test_amounts_and_rates_with_currency_or_percent_signs_are_named_not_taken_for_categories_or_ids():
    """An insurer's export: '$1,234.50' amounts trained as 50 categories (162 distinct, the rest cut, every test
    row predicted 'N'); unique amounts were refused as "an ID ... List it under data.features.exclude"; '32%'
    rates became 40 categories. Named like numbers written with a comma, with the pandas line that mends them."""
    import pyarrow as pa

    from jobs.infer import DataError, infer_features, merge_probes, probe

    amounts = [f"${1000 + 7.5 * i:,.2f}" for i in range(60)]           # $1,000.00 ... each once
    table = pa.table({"amount": amounts, "rate": [f"{i % 40} %" if i % 2 else f"{i % 40}%" for i in range(60)],
                      "y": [i % 2 for i in range(60)]})
    facts = merge_probes([probe(table, table.column_names, 50)["probe"][0]], table.column_names)
    assert facts["amount"]["dressed_numbers"] == 60 and facts["rate"]["dressed_numbers"] == 60
    data = validate_spec({"name": "t", "data": {"path": "d", "label": "y"}}).data
    with pytest.raises(DataError, match=r"^column 'amount' holds numbers written with a currency or percent sign or in "
                                        r"parentheses \(60 of its 60 filled cell\(s\), such as '\$1,000.00', .*\), "
                                        r"which trainyard "
                                        r"reads as text. Save the numbers alone, e.g. with pandas: df\['amount'\] = "
                                        r"pd.to_numeric\(.*; or, to keep its values as categories, list it under "
                                        r"data.features.categorical$"):
        infer_features(table.schema, ["amount", "rate"], data, facts, {})
    with pytest.raises(DataError, match=r"^column 'rate' holds numbers written with a currency or percent sign"):
        infer_features(table.schema, ["rate"], data, facts, {})
    listed = validate_spec({"name": "t", "data": {"path": "d", "label": "y",
                                                  "features": {"numeric": ["rate"], "categorical": ["amount"]}}})
    with pytest.raises(DataError, match=r"^column 'rate' holds numbers written with a currency or percent sign"):
        infer_features(table.schema, ["amount", "rate"], listed.data, facts, {})
    # Kept as categories when listed so; a column of words with a '%' here and there is not numbers.
    assert infer_features(table.schema, ["amount"], listed.data, facts, {})[1] == ["amount"]
    # An accountant's negatives and numbers with a space between digit groups are numbers written as text too.
    more = pa.table({"balance": [f"({i},{i:03d}.50)" if i % 2 else f"{i},{i:03d}.50" for i in range(1, 61)],
                     "income": [f"{10 + i} {i:03d}" for i in range(60)]})
    said = merge_probes([probe(more, more.column_names, 50)["probe"][0]], more.column_names)
    with pytest.raises(DataError, match=r"^column 'balance' holds numbers written with a currency or percent sign or "
                                        r"in parentheses \(30 of its 60 .*\(1,234.50\) becomes -1234.5"):
        infer_features(more.schema, ["balance"], data, said, {})
    with pytest.raises(DataError, match=r"^column 'income' holds numbers written with a comma or a space between "
                                        r"digits \(60 of its 60 .*thousands=',' \(or ' '\)"):
        infer_features(more.schema, ["income"], data, said, {})
    # A bank's export with decimal commas: its '€ 2.500' is 2500, which the decimal point's line read as 2.5 (436
    # incomes 1,000 times too small); its examples were the plain '3040,13' cells; its r'-\1' was '-\x01', which
    # dropped a negative amount. The line the message gives, run on such cells, gives the numbers meant.
    import pandas as pd

    euro = pa.table({"income": [f"€ {1 + i % 9}.{i:03d}" if i % 4 == 0 else f"{3000 + i},{i % 90 + 10}"
                                for i in range(80)] + ["(€ 12,50)"]})
    with pytest.raises(DataError) as err:
        infer_features(euro.schema, ["income"], data, merge_probes([probe(euro, ["income"], 50)["probe"][0]],
                                                                    ["income"]), {})
    told = str(err.value)
    assert "(21 of its 81 filled cell(s), such as '€ 1.000', '€ 5.004', '€ 9.008')" in told, told
    assert "for a decimal comma ('€ 2.500' becomes 2500, '1.234,50' 1234.5), as cells such as '3001,11' suggest; " \
           "or pd.to_numeric" in told and "\x01" not in told
    line = told.split("df['income'] = ", 1)[1].split(" for a decimal comma")[0]
    df = pd.DataFrame({"income": ["€ 2.500", "3040,13", "(€ 12,50)", "1.234,50", "12 %"]})
    assert eval(line).tolist() == [2500.0, 3040.13, -12.5, 1234.5, 12.0]
    words = pa.table({"plan": ["gold", "silver", "100%", "basic"] * 15})
    plan = merge_probes([probe(words, ["plan"], 50)["probe"][0]], ["plan"])
    assert infer_features(words.schema, ["plan"], data, plan, {})[1] == ["plan"]


def test_a_class_the_validation_or_test_split_holds_none_of_is_warned():
    """'flood' (2 rows) and a '2.0' typo (1 row) went to the train split only: a row of zeros in the test report."""
    from jobs.ingest import unmeasured_classes

    counts = {"train": {"fire": 70, "flood": 2, "2.0": 1}, "val": {"fire": 15}, "test": {"fire": 14, "flood": 1}}
    assert unmeasured_classes(counts) == [
        "[ingest] warning: class 'flood' has 3 row(s), none in the val split: the best epoch is chosen without it. "
        "Add rows of it, or leave those rows out if it is no class to predict",
        "[ingest] warning: class '2.0' has 1 row(s), none in the val and test splits: nothing measures how the "
        "model does on it. Add rows of it, or leave those rows out if it is no class to predict"]
    assert unmeasured_classes({"train": {"a": 5}, "val": {"a": 1}, "test": {"a": 1}}) == []
    assert unmeasured_classes({}) == []


def test_a_label_of_hundreds_of_number_classes_is_said_once_not_per_class():
    """Days to failure with data.task: classification: 347 classes, 240 warning lines (one per class the val or
    test split lacked) and a classes-per-split line of 347 entries, with nothing said of why. Now five such
    warnings and a count, the ten largest classes per split and a count, and one line that names the cause."""
    from types import SimpleNamespace

    from jobs.infer import number_classes_note
    from jobs.ingest import unmeasured_classes
    from jobs.pipeline import print_ingest_summary

    train = {f"{d}.0": 3 + d % 4 for d in range(300)}
    counts = {"train": train, "val": {"0.0": 1}, "test": {"1.0": 1}}
    lines = unmeasured_classes(counts)
    assert len(lines) == 6 and lines[5] == (
        "[ingest] warning: and 295 more class(es) of a few rows that the validation or test split holds none of "
        "(every class's rows per split: summary.json's class_counts)")
    assert number_classes_note("rul_days", [float(d) for d in range(300)], 3000) == (
        "label 'rul_days' holds 300 distinct numbers, each a class of its own (10.0 rows a class on average): if "
        "it is a quantity (days, a price, a count), set data.task: regression")
    assert number_classes_note("y", list(range(20)), 100) is None
    assert number_classes_note("y", [True, False] + list(range(30)), 100) is None
    said = []
    print_ingest_summary(SimpleNamespace(ingest=SimpleNamespace(
        rows_read=1, files=["f"], format="csv", rows_dropped_missing_label=0, label="y", inferred={},
        task="classification", numeric=["x"], categorical=[], text=[], missing={}, corrupt=[], excluded_columns=[],
        unused_columns=[], class_counts=counts)), said.append)
    [line] = [t for t in said[0].splitlines() if t.startswith("[data] classes per split")]
    assert line.startswith("[data] classes per split: train {'3.0': 6, '7.0': 6, ") and len(line) < 300, line
    assert line.endswith("... 290 more (1,290 rows)}; val {'0.0': 1}; test {'1.0': 1}"), line


def test_the_summary_says_a_missing_category_is_read_as_the_unknown_one_not_imputed():
    """`missing values (imputed): police_report 295` of a category column, whose missing values go to its
    unknown category."""
    from types import SimpleNamespace

    from jobs.pipeline import print_ingest_summary

    ingest = SimpleNamespace(format="csv", rows_read=900, files=["a.csv"], rows_dropped_missing_label=0, label="y",
                             inferred={}, task="classification", numeric=["premium"], categorical=["police_report"],
                             text=[], missing={"premium": 12, "police_report": 295}, corrupt=[],
                             excluded_columns=[], unused_columns=[], class_counts={})
    lines = []
    print_ingest_summary(SimpleNamespace(ingest=ingest), lines.append)
    said = lines[0].splitlines()
    assert "[data] missing values (imputed): premium 12" in said
    assert "[data] missing values (the unknown category): police_report 295" in said
    # Counted over the rows read: the rows dropped for a missing label are said to be among them (124 were said
    # imputed, of which 3 were in rows dropped).
    ingest.rows_dropped_missing_label = 84
    lines = []
    print_ingest_summary(SimpleNamespace(ingest=ingest), lines.append)
    assert ("[data] missing values (imputed; of the 900 rows read, the 84 without a label too): premium 12"
            in lines[0].splitlines()), lines


def test_feature_columns_a_model_learns_less_from_than_it_seems_are_noted():
    """A constant column was a feature without a word; 'Y'/'N'/'true'/'False' were 4 categories; ' North' and
    'North' two (an insurer's export)."""
    import pyarrow as pa

    from jobs.infer import feature_notes, merge_probes, probe

    n = 60
    table = pa.table({"flag": ["Y", "N", "true", "False"] * 15, "region": ["North", " North", "South"] * 20,
                      "constant": [1.0] * n, "kind": ["a", "b"] * 30, "rpm": [float(i) for i in range(n)],
                      "empty": pa.nulls(n, pa.float64())})
    facts = merge_probes([probe(table, table.column_names, 50)["probe"][0]], table.column_names)
    assert feature_notes(["constant", "rpm", "empty"], ["flag", "region", "kind"], facts) == [
        "column 'constant' holds one value, 1.0, in every row that has one: a model learns nothing from it "
        "(data.features.exclude leaves it out)",
        "column 'flag' holds yes/no written 4 ways ('False', 'N', 'Y', 'true'): 4 categories where there may be 2; "
        "write them one way in the data",
        "column 'region': categories ' North' and 'North' differ only in case or in spaces around them, and are "
        "learnt as different categories; if they are one, make them the same in the data"]
    # A category of one value beside missing ones is two states to the model ('yes' or not said): no note.
    warranty = pa.table({"warranty": ["yes"] * 20 + [None] * 40})
    some = merge_probes([probe(warranty, ["warranty"], 50)["probe"][0]], ["warranty"])
    assert feature_notes([], ["warranty"], some) == []
    from jobs.infer import _integer_categories
    assert _integer_categories(set()) == "categorical (no value in any row)"     # an all-null int column
    yes_no = pa.table({"flag": ["yes", "no"] * 30})
    plain = merge_probes([probe(yes_no, ["flag"], 50)["probe"][0]], ["flag"])
    assert feature_notes([], ["flag"], plain) == []                 # written one way: nothing to say


def test_a_yes_no_label_spelt_several_ways_is_told_as_one_class_written_two_ways():
    """A 'default' label written Y/N/true/False trained 4 classes with no word; with `decision:` it was told to
    remove the decision section, where the fix is the data's."""
    from jobs.spelling import look_alike, look_alike_note

    groups = look_alike(["False", "N", "Y", "true", "maybe"])
    assert groups == [["False", "N"], ["Y", "true"]]
    assert look_alike_note("default", groups[1]) == (
        "label 'default': classes 'Y' and 'true' are one yes/no answer spelt differently, and are trained as "
        "different classes; if they are one, make them the same in the data")
    assert look_alike_note("y", ["No", "no"]).startswith("label 'y': classes 'No' and 'no' differ only in case")


def test_a_regression_labels_spread_is_said_and_a_long_tail_named_with_the_loss_that_weighs_it_less():
    """Days to failure, 0 to 1,941 with a median of 36, trained on a squared error with nothing said of the
    label at all (summary.json held no statistic of it): a test MAE worse than predicting the median."""
    from types import SimpleNamespace

    import numpy as np

    from jobs.ingest import label_stats
    from jobs.pipeline import print_ingest_summary

    days = np.concatenate([np.random.default_rng(0).exponential(40, 2990).round(), [1941.0] * 10])
    stats = label_stats(days)
    assert stats["min"] == 0 and stats["max"] == 1941 and 20 < stats["median"] < 40 and stats["skewness"] > 2

    def said(stats, loss="auto"):
        lines = []
        print_ingest_summary(SimpleNamespace(ingest=SimpleNamespace(
            rows_read=3000, files=["f"], format="parquet", rows_dropped_missing_label=0, label="rul_days",
            inferred={}, task="regression", numeric=["x"], categorical=[], text=[], missing={}, corrupt=[],
            excluded_columns=[], unused_columns=[], class_counts={}, label_stats=stats)), lines.append, loss)
        return [t for t in lines[0].splitlines() if "rul_days" in t and not t.startswith("[data] 3000 rows")]

    first, note = said(stats)
    assert first == (f"[data] label 'rul_days': 0 to 1,941, median {stats['median']:,.4g}, 99th percentile "
                     f"{stats['p99']:,.4g}, mean {stats['mean']:,.4g}")
    assert note.startswith(f"[data] note: label 'rul_days' has a long tail (skewness {stats['skewness']:.1f}): the "
                           "squared error") and note.endswith("train.loss: huber weighs large errors less")
    assert len(said(stats, "huber")) == 1                       # the loss asked for already
    assert len(said(label_stats(np.linspace(10, 20, 500)))) == 1        # no tail, no note


def test_regression_test_predictions_outside_the_labels_read_are_said():
    """Days to failure, never negative, were predicted down to -88 by the bundle with nothing said."""
    from jobs.evaluate import outside_labels_note

    stats = {"min": 0.0, "max": 1941.0}
    assert outside_labels_note([-4.4, 3.0, 12.5, -87.95, 2000.0], stats) == (
        "[evaluate] note: 3 of the 5 test predictions fall outside the labels read (0 to 1,941): 2 below 0 and 1 "
        "above 1,941; the model extrapolates there. Clip its answers where you use them if the label cannot go "
        "beyond (a count or a duration is never negative)")
    assert outside_labels_note([0.0, 1941.0, 5.0], stats) is None
    assert outside_labels_note([1.0], {}) is None and outside_labels_note([], stats) is None


def test_dates_written_as_text_are_refused_but_versions_and_codes_are_not_taken_for_dates():
    """A review: '2.1.0' firmware versions and '555-12-1234' codes have a date's shape and were refused as dates."""
    import pyarrow as pa

    from jobs.infer import DataError, infer_features, merge_probes, probe

    table = pa.table({"firmware": ["2.1.0", "2.1.3", "3.0.1", "1.10.2"] * 15,
                      "code": [f"{500 + i}-12-1234" for i in range(60)],
                      "applied": [f"{1 + i % 28:02d}.11.2024" for i in range(60)], "y": [0, 1] * 30})
    facts = merge_probes([probe(table, table.column_names, 50)["probe"][0]], table.column_names)
    data = validate_spec({"name": "t", "data": {"path": "d", "label": "y", "features": {"exclude": ["code"]}}}).data
    assert infer_features(table.schema, ["firmware"], data, facts, {})[1] == ["firmware"]
    with pytest.raises(DataError, match=r"^column 'applied' holds dates or times written as text \(values such as "
                                        r"'\d\d.11.2024', "):
        infer_features(table.schema, ["firmware", "applied"], data, facts, {})
    from jobs.spelling import is_date as _is_date
    assert [_is_date(v) for v in ("555-12-1234", "2024-11-04 10:00", "12/31/2024", "13/13/2024")] == [
        False, True, True, False]
