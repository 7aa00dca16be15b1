"""`jobs.bundle.load(path).predict(records)`, the Python API, on a bundle written here (no Ray): what it refuses
rather than quietly imputing, and what it still ignores so a table's own rows can be passed as they are."""
import math

import pytest

from jobs import bundle as B
from jobs.fitted import misspelt_fields
from jobs.model import build_model
from jobs.tabular import CategoricalState, NumericState, Preprocessor

CONFIG = {"kind": "mlp", "input_dim": 5, "output_dim": 2, "hidden": [3], "dropout": 0.0, "activation": "relu"}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    pre = Preprocessor(task="classification", label="churn", classes=["no", "yes"],
                       numeric=[NumericState("age", fill=40.0, center=40.0, scale=10.0),
                                NumericState("income", fill=50.0, center=50.0, scale=20.0)],
                       categorical=[CategoricalState("region", ["north", "south"])])
    folder = B.write(tmp_path_factory.mktemp("b") / "out", state_dict=build_model(CONFIG).state_dict(),
                     model_config=CONFIG, preprocessor=pre, metrics={"val": {"val_accuracy": 0.5}},
                     spec_yaml="name: t\n", lineage={"version": "1"}, progress=lambda _line: None)
    return B.load(folder)


def test_a_value_that_is_not_a_number_is_refused_naming_record_field_and_value(model):
    with pytest.raises(B.BundleError) as err:
        model.predict([{"age": 30, "income": 20.5}, {"age": "forty", "income": "12,5"}, {"age": [1]}])
    text = str(err.value)
    assert "record 1: age='forty' is not a number" in text
    assert "record 1: income='12,5' is not a number" in text
    assert "record 2: age=[1] is not a number" in text
    assert "record 0" not in text
    # Imputing it would have given the prediction of a record without the field, which is what it used to return.
    assert "null" in text and "imputed" in text


def test_missing_values_and_numbers_as_text_still_predict(model):
    out = model.predict([{"age": None, "income": math.nan}, {"age": "41", "income": 60}, {}])
    assert len(out["predictions"]) == 3
    assert model.predict([{"age": None}])["probabilities"] == model.predict([{}])["probabilities"]
    assert model.predict([{"age": "41"}])["probabilities"] == model.predict([{"age": 41}])["probabilities"]


def test_a_misspelt_feature_is_refused_with_the_name_it_nearly_is(model):
    with pytest.raises(B.BundleError, match=r"record 0: 'agee' is not a feature of this model; did you mean 'age'\?"):
        model.predict([{"agee": 30, "income": 20}])
    with pytest.raises(B.BundleError) as err:
        model.predict([{"region": "north"}, {"Age": 30, "Income": 20, "region": "south"}])
    assert "record 1: 'Age' is not a feature of this model; did you mean 'age'?" in str(err.value)
    assert "record 1: 'Income' is not a feature of this model; did you mean 'income'?" in str(err.value)
    assert "its features: age, income, region" in str(err.value)
    # Two neighbouring letters swapped ('tmep' for 'temp' scores 0.75, under difflib's 0.8): refused too.
    with pytest.raises(B.BundleError, match=r"record 0: 'icnome' is not a feature of this model; did you mean "
                                            r"'income'\?"):
        model.predict([{"age": 30, "icnome": 20}])
    assert misspelt_fields([{"tmep": 300, "rpm": 1}], ["temp", "rpm"], "y") == [
        "record 0: 'tmep' is not a feature of this model; did you mean 'temp'? (its features: temp, rpm)"]
    assert misspelt_fields([{"s21": 1.0, "temp": 3}], ["s12", "s13", "temp"], "y") == []    # digits: another sensor
    # A name far longer than every feature is no misspelling of one, and is not compared letter by letter
    # (difflib took 2.8 s of a replica over one 7 MB field name).
    assert misspelt_fields([{"x" * 5_000_000: 1, "rpm": 1}], ["temp", "rpm"], "y") == []


def test_a_rows_label_ids_and_other_columns_are_still_ignored(model):
    plain = model.predict([{"age": 30, "income": 20, "region": "north"}])
    row = {"age": 30, "income": 20, "region": "north", "churn": "yes", "customer_id": 7, "signup": "2024-01-01",
           "Age": 99}                       # a near miss of a feature the record has: not the one that counts
    assert model.predict([row]) == plain


def test_the_servers_derived_fields_are_not_taken_for_a_misspelt_feature():
    """The server's checker adds an image's size as sent ('photo.width', 'photo.height'); with a feature
    'photo_width' absent from the record, 'photo.width' is nearly its name but is not the user's misspelling."""
    records = [{"photo": "aGk=", "photo.width": 3, "photo.height": 4}]
    assert misspelt_fields(records, ["photo", "photo_width"], "y") == []
    assert misspelt_fields([{"photo": "aGk=", "photo.widht": 3}], ["photo", "photo_width"], "y") == []
    assert misspelt_fields([{"photo": "aGk=", "Photo_Width": 3}], ["photo", "photo_width"], "y") == [
        "record 0: 'Photo_Width' is not a feature of this model; did you mean 'photo_width'? "
        "(its features: photo, photo_width)"]


def test_the_strings_a_csv_reads_as_null_are_missing_values_not_refused(model):
    """Training reads a CSV's '', 'NA', 'nan', 'NULL' cells as null (Arrow's defaults); so does predict."""
    empty = model.predict([{}])["probabilities"]
    for text in ("", "NA", "N/A", "nan", "NaN", "null", "NULL", "n/a"):
        assert model.predict([{"age": text, "income": text}])["probabilities"] == empty, text
    with pytest.raises(B.BundleError, match="record 0: age='none' is not a number"):
        model.predict([{"age": "none"}])


def test_a_dataframes_rows_predict_as_records_do_and_the_bundle_prints_short(model):
    """A notebook's `model.predict(df)` was "records must be a list of objects", and `model` printed 16,379
    characters (every document of the bundle). A DataFrame's rows are checked and predicted as records are (NaN
    a missing value); a misfit says what it takes; the repr is one line."""
    import pandas as pd

    from cluster.errors import BadInput
    from serving.client import Client

    rows = [{"age": 30.0, "income": math.nan, "region": "north"}, {"age": 52.0, "income": 70.0, "region": "south"}]
    assert model.predict(pd.DataFrame(rows)) == model.predict([{**rows[0], "income": None}, rows[1]])
    with pytest.raises(B.BundleError, match=r"record 1: age='x' is not a number"):
        model.predict(pd.DataFrame({"age": [1, "x"]}))
    with pytest.raises(B.BundleError, match=r"a list of objects .* or a pandas DataFrame, not dict"):
        model.predict(rows[0])
    assert repr(model) == f"<trainyard bundle {model.path} (classification, 3 features)>"
    # The HTTP client's predict iterated a DataFrame as its column names ("'str' object has no attribute 'items'").
    with pytest.raises(BadInput, match=r"not DataFrame; for a DataFrame, predict_frame\(df\) gives one row"):
        Client("http://127.0.0.1:9").predict(pd.DataFrame(rows))


def test_bundle_predict_says_what_the_server_says_beside_its_answers(tmp_path):
    """`bundle.predict` answered an age of -500 and a region it never saw with nothing said, where /predict
    adds `out_of_range` and `unseen_categories` (and now `imputed`): the same notes, from the same functions."""
    pre = Preprocessor(task="classification", label="churn", classes=["no", "yes"],
                       numeric=[NumericState("age", fill=40.0, center=40.0, scale=10.0)],
                       categorical=[CategoricalState("region", ["north", "south"])],
                       stats={"numeric": {"age": {"min": 18.0, "max": 90.0}}})
    config = {**CONFIG, "input_dim": 4}
    bundle = B.load(B.write(tmp_path / "out", state_dict=build_model(config).state_dict(), model_config=config,
                            preprocessor=pre, metrics={"val": {}}, spec_yaml="name: t\n", lineage={"version": "1"}))
    out = bundle.predict([{"age": 30, "region": "north"}, {"age": -500, "region": "east"}, {"age": None}])
    assert len(out["predictions"]) == 3
    assert out["out_of_range"] == [{"record": 1, "field": "age", "value": -500, "trained_on": [18.0, 90.0]}]
    assert out["unseen_categories"] == [{"record": 1, "field": "region", "value": "east"}]
    # A field left out or sent null is imputed, and said (a credit answer with no word of a field never sent).
    assert out["imputed"] == [{"record": 2, "field": "age"}, {"record": 2, "field": "region"}]
    assert "imputed_in_every_record" not in out
    # What no record sends is said once, not once a record (1,000 records sending 10 of 200 features made 190,000
    # entries, 6 MB); requests answered apart are joined as one request's.
    out = bundle.predict([{"age": 30}, {"age": None}])
    assert out["imputed_in_every_record"] == ["region"] and out["imputed"] == [{"record": 1, "field": "age"}]
    from serving.client import _everywhere
    joined = _everywhere({"imputed": [{"record": 1, "field": "age"}]}, [(0, 2, ["region"]), (2, 2, ["region", "age"])])
    assert joined == {"imputed_in_every_record": ["region"], "imputed": [
        {"record": 1, "field": "age"}, {"record": 2, "field": "age"}, {"record": 3, "field": "age"}]}
    assert set(bundle.predict([{"age": 30, "region": "north"}])) == {"predictions", "probabilities"}
