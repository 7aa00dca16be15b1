"""The HTTP contract of a text bundle (and an image bundle's required image), from its schema.json alone (no Ray,
no model): records carry raw text; a non-string, an empty text, a missing text and a text that is not valid
Unicode are 422s naming the record and the field; an oversized body is a 413; the OpenAPI shows each text field
as a string with a description.
The same contract over real HTTP with a trained text bundle: tests/test_text_serving_http.py.
"""
import json

import jsonschema
import pytest

from serving.openapi import openapi_components
from serving.schema import RequestChecker, RequestError

SCHEMA = {"input": "text", "task": "classification",
          "label": {"name": "failure_mode", "classes": ["bearing", "none"]},
          "features": [{"name": "description", "type": "text", "max_length": 32},
                       {"name": "machine_hours", "type": "number", "required": False, "missing": "imputed with 0"},
                       {"name": "machine_type", "type": "category", "categories": ["L", "M"], "required": False,
                        "missing": "the 'unknown' slot"}],
          "unknown_category": "ignore"}


def checker(**kw) -> RequestChecker:
    return RequestChecker(SCHEMA, **{"max_records": 10, "max_body_bytes": 4096, **kw})


def problems(body) -> list[tuple]:
    with pytest.raises(RequestError) as caught:
        checker().parse(body if isinstance(body, bytes) else json.dumps(body).encode())
    assert caught.value.status == 422, caught.value.to_json()
    return [(p.record, p.field, p.message) for p in caught.value.problems]


def test_raw_text_records_pass():
    records = [{"description": "bearing noise, temp 92C", "machine_hours": 1210},
               {"description": "  leaking seal ", "machine_type": "Z"}, {"description": "\U0001f600 ok"}]
    assert checker().parse(json.dumps({"records": records}).encode()) == records


@pytest.mark.parametrize("value, words", [
    (1210, ["expected text (a string)", "an integer 1210", "send it as a JSON string"]),
    (["bearing", "noise"], ["expected text (a string)", "an array"]),
    ({"text": "x"}, ["expected text (a string)", "an object"]),
    (True, ["a boolean", "send the text as a JSON string"]),
    ("", ["the text is empty", "non-empty string"]),
    ("  \n\t", ["the text is empty (only whitespace)"]),
    (None, ["missing required field (null given)", "send the text as a non-empty string"]),
])
def test_bad_text_is_422_naming_record_and_field(value, words):
    found = problems({"records": [{"description": "fine"}, {"description": value, "machine_hours": 3}]})
    assert [(r, f) for r, f, _ in found] == [(1, "description")], found
    assert all(w in found[0][2] for w in words), found


def test_a_text_the_training_data_left_empty_may_be_empty_or_missing():
    """schema "required": false on a text field: the training data left it empty in some rows (jobs.text gaps)."""
    schema = {**SCHEMA, "features": [{**SCHEMA["features"][0], "required": False, "missing": "read as empty text"},
                                     *SCHEMA["features"][1:]]}
    check = RequestChecker(schema, max_records=10, max_body_bytes=4096)
    assert check.required == []
    records = [{"description": ""}, {"description": "  "}, {"description": None}, {"machine_hours": 3}]
    assert check.parse(json.dumps({"records": records}).encode()) == records
    # ... and said as the answer's `imputed`, blank as well as left out: a triage note left out was answered
    # "routine" with nothing said of it.
    from jobs.tabular import missing_fields
    every, imputed = missing_fields(check.imputable, records + [{"description": "fine", "machine_hours": 1}],
                                    blank=check.blank_text)
    assert "description" not in every and [e for e in imputed if e["field"] == "description"] == [
        {"record": i, "field": "description"} for i in range(4)], imputed
    assert "description" in missing_fields(check.imputable, records[:2], blank=check.blank_text)[0]
    assert checker().blank_text == set() and "description" not in checker().imputable     # required: refused
    with pytest.raises(RequestError) as caught:
        check.parse(json.dumps({"records": [{"description": 5}]}).encode())
    assert "expected text (a string)" in caught.value.problems[0].message
    prop = openapi_components(check, "classification", ["bearing", "none"])["Record"]["properties"]["description"]
    assert "minLength" not in prop and "may be empty (training read empty text here)" in prop["description"]
    strict = openapi_components(checker(), "classification", ["bearing", "none"])["Record"]["properties"]
    assert strict["description"]["minLength"] == 1 and "not empty" in strict["description"]["description"]


def test_missing_text_is_422_and_every_record_is_named():
    found = problems({"records": [{"machine_hours": 3}, {"description": "ok"}, {"description": 5}]})
    assert [(r, f) for r, f, _ in found] == [(0, "description"), (2, "description")]
    assert "missing required field; send the text as a non-empty string" in found[0][2]


def test_text_with_a_lone_surrogate_is_422():
    """JSON may escape half a surrogate pair: a string that is not text, which the tokenizer cannot encode.
    A whole pair is text and passes."""
    found = problems(b'{"records": [{"description": "ok \\ud83d\\ude00"}, {"description": "bad \\udc00"}]}')
    assert [(r, f) for r, f, _ in found] == [(1, "description")] and "lone surrogate" in found[0][2]


def test_oversized_body_is_413():
    with pytest.raises(RequestError) as caught:
        checker().parse(json.dumps({"records": [{"description": "word " * 1000}]}).encode())
    assert caught.value.status == 413 and "serve.max_body_mb" in caught.value.summary()


def test_openapi_shows_text_fields_as_strings():
    components = openapi_components(checker(), "classification", ["bearing", "none"])
    record = components["Record"]
    prop = record["properties"]["description"]
    assert prop["type"] == "string" and prop["x-feature-type"] == "text" and prop["x-max-tokens"] == 32
    assert "truncated to its first 32 tokens" in prop["description"]
    assert record["required"] == ["description"]
    # The generated schema accepts what the checker accepts and refuses what it refuses.
    validator = jsonschema.Draft202012Validator(record)
    assert validator.is_valid({"description": "bearing noise", "machine_hours": 1.0})
    for bad in ({"description": ""}, {"description": " "}, {"description": 3}, {"machine_hours": 1.0}):
        assert not validator.is_valid(bad), bad
    example = components["PredictRequest"]["example"]["records"][0]
    assert validator.is_valid(example) and checker().parse(json.dumps({"records": [example]}).encode())


def test_the_example_request_serve_prints_is_one_the_model_takes():
    """`trainyard serve` printed `-d '{"records": [{}]}'`: a text model's 422 ("missing required field"), and for
    a table a prediction from imputed values alone. Now the required fields first, typical values, at most 6."""
    import shlex

    from serving.forever import _announce
    from serving.openapi import example_record
    from serving.server import Served

    lines = []
    _announce(Served("triage", "v1", "127.0.0.1", 8000, "/", schema=SCHEMA), lines.append)
    curl = lines[0].splitlines()[1]
    words = shlex.split(curl)
    assert words[:4] == ["curl", "-s", "http://127.0.0.1:8000/predict", "-d"] and len(words) == 5, curl
    body = json.loads(words[4])
    assert checker().parse(words[4].encode()) == body["records"]
    assert list(body["records"][0]) == ["description", "machine_hours", "machine_type"]
    # A number's typical value is the median the bundle imputes (schema.json's `typical`; 1.0 in older bundles);
    # past `most` fields the rest are left to imputation, and said so; a quote in a category survives the shell.
    wide = {"features": [{"name": "shop", "type": "category", "categories": ["O'Neil's"]}]
            + [{"name": f"x{i}", "type": "number", "typical": 40.5} for i in range(8)]}
    assert example_record(wide, 2) == {"shop": "O'Neil's", "x0": 40.5}
    lines = []
    _announce(Served("t", "v1", "127.0.0.1", 8000, "/", schema=wide), lines.append)
    curl = lines[0].splitlines()[1]
    assert curl.endswith("  (its other 3 field(s) are imputed when left out)"), curl
    assert example_record({"features": [{"name": "a", "type": "number"}]}) == {"a": 1.0}
    # A median of whole numbers shows as one: the curl line read "age": 36.0.
    assert json.dumps(example_record({"features": [{"name": "age", "type": "number", "typical": 36.0}]})) == \
        '{"age": 36}'
    # An image model's rows are image files: the line says so (it said FILE.csv).
    lines = []
    image = {"input": "image", "image": {"field": "image"}, "features": [{"name": "image", "type": "image"}]}
    _announce(Served("parts", "v1", "127.0.0.1", 8000, "/", schema=image), lines.append)
    assert "  trainyard predict --url http://127.0.0.1:8000 FOLDER_OF_IMAGES --out predictions.csv" in \
        lines[0].splitlines(), lines
    # With serve.log.path, where its predictions go (monitor's --logs): it was said nowhere.
    lines = []
    _announce(Served("t", "v1", "127.0.0.1", 8000, "/", schema=wide, log_path="/srv/logs/"), lines.append)
    assert "  predictions logged under /srv/logs/t (trainyard monitor BUNDLE --logs /srv/logs/t)" in \
        lines[0].splitlines(), lines
    # A token given with --token is in no variable of the user's shell: the curl line alone gave a 401.
    lines = []
    _announce(Served("t", "v1", "127.0.0.1", 8000, "/", schema=wide, token_required=True), lines.append)
    assert lines[0].splitlines()[1] == ("  curl and trainyard predict read the token from $TRAINYARD_SERVE_TOKEN: "
                                        "export it in the shell you send from"), lines
    assert '-H "Authorization: Bearer $TRAINYARD_SERVE_TOKEN"' in lines[0].splitlines()[2], lines
    assert json.loads(shlex.split(curl.split("  (its other")[0])[4]) == {"records": [
        {"shop": "O'Neil's", "x0": 40.5, "x1": 40.5, "x2": 40.5, "x3": 40.5, "x4": 40.5}]}


def test_a_record_without_the_image_is_told_to_send_it_not_about_required_features():
    """An image model's image is required by the model itself: the 422 said "this server requires image
    (serve.required_features)", a setting the spec had left empty."""
    schema = {"input": "image", "task": "classification", "label": {"name": "label", "classes": ["ok", "dent"]},
              "image": {"field": "image", "size": [8, 8], "channels": 1},
              "features": [{"name": "image", "type": "image", "required": True}]}
    with pytest.raises(RequestError) as caught:
        RequestChecker(schema, max_records=4, max_body_bytes=4096).parse(b'{"records": [{}, {"image": null}]}')
    assert [str(p) for p in caught.value.problems] == [
        "record 0, field 'image': missing required field; the model predicts from the image: send it (base64 of an "
        "encoded file, or a pixel array)",
        "record 1, field 'image': missing required field (null given); the model predicts from the image: send it "
        "(base64 of an encoded file, or a pixel array)"]
