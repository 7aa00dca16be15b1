"""A text bundle served over real HTTP on 127.0.0.1 (real Ray Serve): a tiny BERT fine-tuned in this session on
generated work orders (text + table columns), shipped to the replica with its tokenizer/ and encoder/ folders.

Records carry raw text; predictions equal `Bundle.predict`, for concurrent requests batched together too; text
past max_length is truncated (two texts that share their first max_length tokens get the same answer); a
non-string, an empty text and a missing text are 422s naming record and field, an oversized body a 413; the
OpenAPI shows the text field; `serve.quantize: int8` serves the same bundle with int8 linear layers.
"""
import json
import threading

import numpy as np
import pytest

from tests.serving_fixtures import call, deploy_app, release_app, serve_instance  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.usefixtures("ray_session"), pytest.mark.ray, pytest.mark.slow]
_CACHE: dict = {}


@pytest.fixture(scope="module")
def text_bundle(ray_session, tmp_path_factory):
    """A 2-epoch fine-tune of a tiny BERT (hidden 32, 2 layers) on 140 work orders; max_length 48."""
    if "bundle" not in _CACHE:
        from telemetry import write_shards

        from jobs.pipeline import run_train
        from jobs.spec import load_spec
        from tests.conftest import write_spec
        from tests.test_text import make_tiny_encoder, work_orders
        from tests.test_text_e2e import text_spec

        tmp = tmp_path_factory.mktemp("text-serve")
        write_shards(work_orders(140, seed=3), tmp / "data", 2)
        encoder = make_tiny_encoder(tmp / "tiny-bert", work_orders(300)["description"].tolist())
        spec = write_spec(tmp / "spec.yaml", text_spec("orders", tmp / "data", tmp / "out", encoder))
        _CACHE["bundle"], _ = run_train(load_spec(spec), progress=lambda *_: None)
        _CACHE["records"] = work_orders(40, seed=11).drop(columns=["work_order_id", "failure_mode"]).to_dict("records")
    return _CACHE["bundle"]


@pytest.fixture(scope="module")
def text_app(text_bundle, serve_instance):
    served = deploy_app(text_bundle, "text", serve_instance, max_body_mb=16 / 1024)
    yield served
    release_app("text")


def post(url, payload):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return call(url, "POST", "/predict", body, {"Content-Type": "application/json"})


def test_raw_text_predictions_equal_bundle_predict(text_app, text_bundle):
    from jobs.bundle import load

    bundle = load(text_bundle)
    records = _CACHE["records"]
    assert isinstance(records[0]["description"], str) and "machine_hours" in records[0]
    expected = bundle.predict(records)
    status, _, out = post(text_app.url, {"records": records})
    assert status == 200, out
    assert out["predictions"] == expected["predictions"]
    # Within float32 rounding: a batch is padded to its own longest text, so a row's sums may run differently.
    assert np.allclose(out["probabilities"], expected["probabilities"], atol=1e-6)

    # Concurrent single-record requests: merged into batches on the replica, each answered with its own.
    results, threads = {}, []
    for i, record in enumerate(records[:12]):
        threads.append(threading.Thread(target=lambda i=i, r=record: results.__setitem__(i, post(text_app.url,
                                                                                                 {"records": [r]}))))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(12):
        status, _, out = results[i]
        assert status == 200 and np.allclose(out["probabilities"][0], expected["probabilities"][i], atol=1e-6)


def test_text_past_max_length_is_truncated(text_app, tmp_path, capsys):
    """max_length is 48 tokens: two texts that agree on far more than 48 words differ only where the model
    never reads, so they get the same probabilities; two that differ at the start do not."""
    head = " ".join(["bearing noise and vibration on the main drive shaft"] * 10)
    records = [{"description": head + " leak"}, {"description": head + " overheating motor smoke"},
               {"description": "leaking seal near pump outlet " + head}]
    status, _, out = post(text_app.url, {"records": records})
    assert status == 200, out
    p = out["probabilities"]
    assert p[0] == p[1] and p[0] != p[2]
    # ... and said, record by record: the end of these texts made no difference to the answers
    assert [(c["record"], c["read"]) for c in out["truncated"]] == [(0, 48), (1, 48), (2, 48)], out["truncated"]
    assert all(c["tokens"] > 80 for c in out["truncated"])
    status, _, out = post(text_app.url, {"records": [{"description": "leaking seal"}]})
    assert status == 200 and "truncated" not in out, out
    # trainyard predict: a column, and a note on the rows
    import pandas as pd

    from trainyard.cli import main
    pd.DataFrame({"description": [r["description"] for r in records] + ["leaking seal"],
                  "machine_hours": 100.0, "machine_type": "pump"}).to_csv(tmp_path / "long.csv", index=False)
    assert main(["predict", str(tmp_path / "long.csv"), "--url", text_app.url,
                 "--out", str(tmp_path / "out.csv")]) == 0
    err = capsys.readouterr().err
    assert "note: 3 of 4 row(s) of " in err and "hold text longer than the 48 tokens the model reads" in err, err
    table = pd.read_csv(tmp_path / "out.csv", keep_default_na=False)
    assert [t.endswith("tokens, the first 48 read") for t in table["truncated"]] == [True, True, True, False]


@pytest.mark.parametrize("record, words", [
    ({"description": 1210}, ["record 1", "field 'description'", "expected text (a string)"]),
    ({"description": ""}, ["record 1", "field 'description'", "the text is empty"]),
    ({"machine_hours": 3}, ["record 1", "field 'description'", "missing required field"]),
])
def test_bad_text_is_422_naming_record_and_field(text_app, record, words):
    status, _, out = post(text_app.url, {"records": [{"description": "oil leak"}, record]})
    assert status == 422, out
    assert [(e.get("record"), e.get("field")) for e in out["errors"]] == [(1, "description")]
    assert all(w in out["detail"] for w in words), out["detail"]
    assert post(text_app.url, {"records": [{"description": "oil leak"}]})[0] == 200      # unharmed


def test_oversized_body_is_413(text_app):
    status, _, out = post(text_app.url, {"records": [{"description": "noise " * 4000}]})
    assert status == 413 and "serve.max_body_mb" in out["detail"], out


def test_openapi_shows_the_text_field(text_app):
    status, _, spec = call(text_app.url, "GET", "/openapi.json")
    assert status == 200
    record = spec["components"]["schemas"]["Record"]
    prop = record["properties"]["description"]
    assert prop["type"] == "string" and prop["x-feature-type"] == "text" and "48 tokens" in prop["description"]
    assert "description" in record["required"]
    assert call(text_app.url, "GET", "/schema")[2]["features"][0]["type"] == "text"


def test_quantized_text_bundle_answers_close_to_float(text_bundle, serve_instance):
    from jobs.bundle import load

    records = _CACHE["records"]
    expected = load(text_bundle).predict(records)
    served = deploy_app(text_bundle, "text-int8", serve_instance, quantize="int8")
    try:
        assert call(served.url, "GET", "/readyz")[2]["quantize"] == "int8"
        status, _, out = post(served.url, {"records": records})
        assert status == 200, out
        diffs = [abs(a - b) for pa, pb in zip(out["probabilities"], expected["probabilities"]) for a, b in zip(pa, pb)]
        assert 0 < max(diffs) < 0.05, max(diffs)
        agree = sum(a == b for a, b in zip(out["predictions"], expected["predictions"])) / len(records)
        assert agree >= 0.9, agree
    finally:
        release_app("text-int8")
