"""Serving over real HTTP on 127.0.0.1: a bundle trained in this session behind real Ray Serve.

The contract: predictions equal `Bundle.predict`; every bad request is a precise 4xx naming record and field,
and the replica keeps serving; the bearer token; the OpenAPI spec lists every feature; `serving.Client`;
`trainyard predict`, and `trainyard serve` from another process: an update, a second app stopped by SIGTERM.
"""
import io
import json
import os
import signal
import subprocess
import sys
import threading

import pytest

from jobs.bundle import load
from tests.serving_fixtures import (bundle_variant, call, deploy_app, records_from, release_app,  # noqa: F401
                                    serve_in_background, served_bundle, serve_instance)

pytestmark = pytest.mark.usefixtures("ray_session")
TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def main_app(served_bundle, serve_instance):
    """The bundle as trained (unknown categories → 'unknown' slot), no token."""
    served = deploy_app(served_bundle, "main", serve_instance)
    yield served
    release_app("main")


@pytest.fixture(scope="module")
def strict_app(served_bundle, serve_instance, tmp_path_factory):
    """The same model with every limit tight: unseen categories rejected, rpm required, 5 records and
    4 KiB per request, and a bearer token."""
    bundle = bundle_variant(served_bundle, tmp_path_factory.mktemp("strict") / "bundle", version="strict-1",
                            unknown_category="error")
    served = deploy_app(bundle, "strict", serve_instance, token=TOKEN, max_records=5, max_body_mb=4 / 1024,
                        required_features=["rpm"])
    yield served
    release_app("strict")


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def post(url, payload, headers=None, **kw):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return call(url, "POST", "/predict", body, {"Content-Type": "application/json", **(headers or {})}, **kw)


# ---------------------------------------------------------------------------------------------- predictions

def test_predictions_equal_bundle_predict(main_app, served_bundle, telemetry_dir):
    bundle = load(served_bundle)
    records = records_from(telemetry_dir, 40)
    assert any(v is None for r in records for v in r.values())          # missing readings are in there
    expected = bundle.predict(records)
    status, _, out = post(main_app.url, {"records": records})
    assert status == 200, out
    assert out["predictions"] == expected["predictions"]
    assert out["probabilities"] == expected["probabilities"]             # exact: JSON floats round-trip
    assert out["model"] == {"name": "main", "version": bundle.version}
    assert len(out["request_id"]) == 32 and int(out["request_id"], 16) >= 0     # logging off: an id all the same
    assert "out_of_range" not in out                                     # rows of the data the model was fitted on
    assert out["imputed"] == expected["imputed"] and out["imputed"]      # the missing readings, said
    assert out.get("imputed_in_every_record") == expected.get("imputed_in_every_record")
    # Unseen category, missing fields and an all-missing record: imputed exactly as Bundle.predict does.
    odd = [{"machine_type": "Z", "rpm": 1500}, {"shift": 3}, {}]
    status, _, out = post(main_app.url, {"records": odd})
    assert status == 200 and out["predictions"] == bundle.predict(odd)["predictions"]
    # Answered as the unknown category, and said: a spelling of a known value ('1,000' for '1000') changed answers.
    assert out["unseen_categories"] == [{"record": 0, "field": "machine_type", "value": "Z"}]
    # The fields a record leaves out are imputed, and said, as bundle.predict says them.
    features = [f["name"] for f in call(main_app.url, "GET", "/schema")[2]["features"]]
    said = bundle.predict(odd)
    assert out["imputed"] == said["imputed"] and out["imputed_in_every_record"] == said["imputed_in_every_record"]
    assert set(out["imputed_in_every_record"]) == set(features) - {"machine_type", "rpm", "shift"}
    assert {n["field"] for n in out["imputed"] if n["record"] == 2} == {"machine_type", "rpm", "shift"}
    status, _, out = post(main_app.url, {"records": [{"machine_type": "L", "rpm": 1500}, {"machine_type": None}]})
    assert status == 200 and "unseen_categories" not in out
    # A reading far outside what the train split held is answered, as before, and said: the answer extrapolates.
    rpm = bundle.preprocessor.stats["numeric"]["rpm"]
    far = [{"rpm": 1500}, {"rpm": 1e6, "torque_nm": 40}]
    status, _, out = post(main_app.url, {"records": far})
    assert status == 200 and out["predictions"] == bundle.predict(far)["predictions"]
    assert out["out_of_range"] == [{"record": 1, "field": "rpm", "value": 1e6, "trained_on": [rpm["min"], rpm["max"]]}]
    schema = {f["name"]: f for f in call(main_app.url, "GET", "/schema")[2]["features"]}
    assert schema["rpm"]["trained_on"] == [rpm["min"], rpm["max"]]


def test_concurrent_requests_are_batched_and_answered_in_order(main_app, served_bundle, telemetry_dir):
    """@serve.batch merges records from concurrent requests into one Bundle.predict; each request must still
    get exactly its own predictions back."""
    bundle = load(served_bundle)
    records = records_from(telemetry_dir, 48)
    expected = bundle.predict(records)["probabilities"]
    results, errors = {}, []

    def one(i):
        try:
            status, _, out = post(main_app.url, {"records": records[i:i + 3]})
            results[i] = (status, out)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(0, 48, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    labels = bundle.predict(records)["predictions"]
    for i, (status, out) in results.items():
        assert status == 200 and out["predictions"] == labels[i:i + 3], i
        # float32 matmuls over a batch of another size round differently in the last digits
        assert out["probabilities"] == [pytest.approx(p, rel=1e-5) for p in expected[i:i + 3]], i
    _, _, ready = call(main_app.url, "GET", "/readyz")
    assert ready["batching"]["largest_batch_requests"] > 1, ready    # requests really were merged


def test_health_ready_schema_and_index(main_app, served_bundle):
    assert call(main_app.url, "GET", "/healthz")[:3:2] == (200, {"status": "ok"})
    status, _, ready = call(main_app.url, "GET", "/readyz")
    assert status == 200 and ready["ready"] is True and ready["model"]["name"] == "main"
    # Requests that went to the model alone are counted beside the merged ones (a walkthrough's sequential client
    # saw every batching counter at 0 after 1,018 records and took it for broken).
    assert {"batches", "records", "direct_requests"} <= set(ready["batching"]), ready
    status, _, schema = call(main_app.url, "GET", "/schema")
    bundle_schema = json.loads((served_bundle / "schema.json").read_text())
    assert status == 200 and schema["features"] == bundle_schema["features"]
    assert schema["limits"]["max_records"] == 1000 and schema["label"]["classes"] == ["failure", "ok"]
    assert call(main_app.url, "GET", "/")[0] == 200


def test_openapi_lists_every_feature_type_and_category(main_app, served_bundle):
    status, _, spec = call(main_app.url, "GET", "/openapi.json")
    assert status == 200
    schemas = spec["components"]["schemas"]
    features = json.loads((served_bundle / "schema.json").read_text())["features"]
    props = schemas["Record"]["properties"]
    assert list(props) == [f["name"] for f in features]
    for f in features:
        assert props[f["name"]]["x-feature-type"] == f["type"]
        if f["type"] == "category":
            assert props[f["name"]]["x-categories"] == f["categories"]
        else:
            assert "number" in props[f["name"]]["type"]
    assert set(props["machine_type"]["x-categories"]) == {"L", "M", "H"}
    assert schemas["Record"]["additionalProperties"] is False
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/PredictRequest"}
    assert schemas["PredictResponse"]["properties"]["predictions"]["items"] == {"enum": ["failure", "ok"]}
    assert "out_of_range" in schemas["PredictResponse"]["properties"]          # only when said: not required
    assert "out_of_range" not in schemas["PredictResponse"]["required"]
    status, _, html = call(main_app.url, "GET", "/docs")
    assert status == 200 and "swagger" in html.lower()


# ---------------------------------------------------------------------------------------------- bad input

BAD = [
    # (name, body, status, substrings of the message, record index, field)
    ("malformed JSON", b'{"records": [{"rpm": 1}', 400, ["not valid JSON", "line 1"], None, None),
    ("empty body", b"", 400, ["empty"], None, None),
    ("not an object", [1, 2], 422, ["JSON object"], None, None),
    ("missing records", {"rows": []}, 422, ["unknown top-level key 'rows'"], None, None),
    ("records not a list", {"records": {"rpm": 1}}, 422, ["array"], None, "records"),
    ("empty list", {"records": []}, 422, ["empty"], None, "records"),
    ("record not an object", {"records": [{"rpm": 1}, [1]]}, 422, ["expected an object"], 1, None),
    ("unknown field", {"records": [{"rmp": 1500}]}, 422, ["unknown field", "did you mean 'rpm'"], 0, "rmp"),
    ("string for a number", {"records": [{}, {"rpm": "1500"}]}, 422, ["expected a number", "not a string"], 1, "rpm"),
    ("bool for a number", {"records": [{"torque_nm": True}]}, 422, ["expected a number"], 0, "torque_nm"),
    ("NaN", b'{"records": [{"rpm": NaN}]}', 422, ["not a finite number", "null"], 0, "rpm"),
    ("Infinity", b'{"records": [{}, {}, {"rpm": -Infinity}]}', 422, ["not a finite number"], 2, "rpm"),
    ("object for a category", {"records": [{"machine_type": {"a": 1}}]}, 422, ["expected a category", "L"], 0,
     "machine_type"),
]


@pytest.mark.parametrize("name,body,status,words,record,field", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_a_precise_4xx(main_app, name, body, status, words, record, field):
    got, _, out = post(main_app.url, body if isinstance(body, bytes) else body)
    assert got == status, out
    assert all(w in out["detail"] for w in words), out["detail"]
    first = out["errors"][0]
    assert first.get("record") == record and first.get("field") == field, out


def test_every_problem_is_listed_at_once(main_app):
    records = [{"rpm": "x"}, {"shift": [1]}, {"rmp": 1}, 7]
    status, _, out = post(main_app.url, {"records": records})
    assert status == 422
    assert [(e.get("record"), e.get("field")) for e in out["errors"]] == [(0, "rpm"), (1, "shift"), (2, "rmp"),
                                                                         (3, None)]


def test_strict_limits_and_policies(strict_app):
    url = strict_app.url
    # unseen category, under the bundle's unknown_category: error
    status, _, out = post(url, {"records": [{"rpm": 1, "machine_type": "L"}, {"rpm": 1, "machine_type": "Z"}]},
                          AUTH)
    assert status == 422 and [(e["record"], e["field"]) for e in out["errors"]] == [(1, "machine_type")]
    assert "'Z' is not a known category; known: " in out["detail"]
    assert all(c in out["detail"] for c in ("L", "M", "H")) and "unknown_category: error" in out["detail"]
    # a known category written as an integer still matches ("shift" categories are "1", "2", "3")
    assert post(url, {"records": [{"rpm": 1, "shift": 2}]}, AUTH)[0] == 200
    # required field missing, or null
    status, _, out = post(url, {"records": [{"rpm": 1}, {"torque_nm": 3}, {"rpm": None}]}, AUTH)
    assert status == 422 and [(e["record"], e["field"]) for e in out["errors"]] == [(1, "rpm"), (2, "rpm")]
    assert "missing required field" in out["detail"] and "serve.required_features" in out["detail"]
    # ... which /schema and the OpenAPI spec say where clients read the features (both said it was optional)
    features = {f["name"]: f for f in call(url, "GET", "/schema", headers=AUTH)[2]["features"]}
    assert features["rpm"]["required"] is True and "serve.required_features" in features["rpm"]["missing"]
    assert features["torque_nm"]["required"] is False
    record = call(url, "GET", "/openapi.json", headers=AUTH)[2]["components"]["schemas"]["Record"]
    assert record["required"] == ["rpm"] and record["properties"]["rpm"]["type"] == ["number"]
    assert "required by this server" in record["properties"]["rpm"]["description"]
    assert record["properties"]["torque_nm"]["type"] == ["number", "null"]
    # more than max_records
    status, _, out = post(url, {"records": [{"rpm": 1}] * 6}, AUTH)
    assert status == 413 and "limit is 5" in out["detail"] and "serve.max_records" in out["detail"]
    # a body over max_body_mb: declared up front, and streamed (chunked, no Content-Length)
    big = {"records": [{"rpm": 1, "machine_type": "L" * 5000}]}
    status, _, out = post(url, big, AUTH)
    assert status == 413 and "serve.max_body_mb" in out["detail"]
    status, _, out = post(url, big, AUTH, chunked=True)
    assert status == 413 and "serve.max_body_mb" in out["detail"]
    # after all that, the replica still serves
    assert post(url, {"records": [{"rpm": 1500, "machine_type": "M"}]}, AUTH)[0] == 200


def test_wrong_method_and_path_are_4xx_and_the_replica_keeps_serving(main_app):
    assert call(main_app.url, "GET", "/predict")[0] == 405
    assert call(main_app.url, "GET", "/nope")[0] == 404
    assert post(main_app.url, {"records": [{"rpm": 1500}]})[0] == 200


# ---------------------------------------------------------------------------------------------- token

def test_bearer_token(strict_app):
    url = strict_app.url
    ok = {"records": [{"rpm": 1500}]}
    status, headers, out = post(url, ok)
    assert status == 401 and headers.get("www-authenticate") == "Bearer" and "Authorization: Bearer" in out["detail"]
    assert post(url, ok, {"Authorization": "Bearer wrong"})[0] == 401
    assert post(url, ok, {"Authorization": f"Basic {TOKEN}"})[0] == 401
    assert post(url, ok, AUTH)[0] == 200
    assert call(url, "GET", "/schema")[0] == 401 and call(url, "GET", "/openapi.json")[0] == 401
    assert call(url, "GET", "/healthz")[0] == 200 and call(url, "GET", "/readyz")[0] == 200   # probes stay open


# ---------------------------------------------------------------------------------------------- client

def test_client_chunks_cleans_and_reports_global_indices(strict_app, served_bundle, telemetry_dir):
    import pandas as pd

    from serving import Client, ClientError

    records = [dict(r, rpm=r["rpm"] if r["rpm"] is not None else 1500.0) for r in records_from(telemetry_dir, 12)]
    client = Client(strict_app.url, token=TOKEN)
    assert client.batch_size == 5                                   # the server's max_records
    out = client.predict(records)                                   # 3 requests: 5 + 5 + 2
    assert out["predictions"] == load(served_bundle).predict(records)["predictions"]
    assert out["model"]["version"] == "strict-1"
    df = pd.DataFrame(records).assign(machine_id="M-1", failure="ok")   # non-features are not sent
    df.loc[3, "torque_nm"] = float("nan")                               # NaN goes out as null
    frame = client.predict_frame(df)
    assert list(frame.columns) == ["prediction", "probability_failure", "probability_ok", "request_id",
                                   "record", "out_of_range", "unseen_categories", "imputed"] and len(frame) == 12
    assert frame["imputed"][3] == "torque_nm" and frame["imputed"][2] == ""     # the NaN sent as null: imputed
    assert set(frame["out_of_range"]) == {""} and frame.attrs["out_of_range"] == []
    assert set(frame["unseen_categories"]) == {""} and frame.attrs["unseen_categories"] == []
    # A value far out in the second request: its row, counted over the whole frame, and the line for it.
    far = df.assign(rpm=df["rpm"].where(df.index != 7, 1e6))
    frame = client.predict_frame(far)
    rpm = load(served_bundle).preprocessor.stats["numeric"]["rpm"]
    assert frame["out_of_range"].tolist() == [""] * 7 + [f"rpm=1e+06 (trained on {rpm['min']:g} to {rpm['max']:g})"] \
        + [""] * 4
    assert [(n["record"], n["field"]) for n in frame.attrs["out_of_range"]] == [(7, "rpm")]
    # Each row's key in the prediction log (what `monitor --labels` joins on): 3 requests, positions within each.
    assert frame["record"].tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]
    ids = frame["request_id"].tolist()
    assert len(set(ids)) == 3 and ids == sorted(ids, key=ids.index) and all(len(i) == 32 for i in ids)
    bad = records[:7] + [dict(records[7], machine_type="Z")] + records[8:]
    with pytest.raises(ClientError, match="record 7, field 'machine_type'") as err:
        client.predict(bad)
    assert err.value.status == 422 and err.value.errors[0]["record"] == 7
    with pytest.raises(ClientError) as err:
        Client(strict_app.url).predict(records[:1])
    assert err.value.status == 401
    # A --batch-size over the server's max_records got a 413 advising to let trainyard predict chunk (it was);
    # an endpoint's URL given for the server's got a bare 404.
    from cluster.errors import BadInput
    with pytest.raises(BadInput, match=r"--batch-size 6 is above this server's max_records, 5 records a request"):
        Client(strict_app.url, token=TOKEN, batch_size=6).predict(records)
    assert Client(strict_app.url, token=TOKEN, batch_size=4).predict(records)["predictions"] == out["predictions"]
    with pytest.raises(ClientError, match=rf"give the server's URL without /predict: {strict_app.url}$"):
        Client(strict_app.url + "/predict", token=TOKEN).schema()


def test_a_route_prefix_another_app_answers_at_is_refused_naming_it(strict_app, served_bundle, serve_instance):
    """A second app at the prefix of a running one got Serve's RayServeException and its traceback, exit 1."""
    from serving import Client, ServeError, app_status

    with pytest.raises(ServeError, match=r"route prefix /strict is taken by app 'strict' on this server "
                                         r"\(http://\S+/strict\); serve 'clash' beside it under another: --set "
                                         r"route_prefix=/clash, or update 'strict' itself with --name strict") as err:
        deploy_app(served_bundle, "clash", serve_instance, route_prefix="/strict")
    assert err.value.exit_code == 2 and app_status("clash") is None
    assert Client(strict_app.url, token=TOKEN).predict([{"rpm": 1500.0}])["model"]["version"] == "strict-1"


@pytest.mark.slow
def test_trainyard_predict_and_a_serve_update_from_another_process(served_bundle, serve_instance, telemetry_dir,
                                                                    tmp_path, monkeypatch):
    """The user flow across processes: a server owns app `cli`; `trainyard serve NEW --name cli` in another
    process joins its Ray, updates the app in place and exits; `trainyard predict` writes a file; `trainyard
    serve NEW --name guest` on the same port serves a second app, updated in place from a third process, until
    SIGTERM stops it."""
    import pandas as pd

    from serving import Client, app_status
    from serving.forever import _write_server_state

    monkeypatch.setenv("TRAINYARD_STATE_DIR", str(tmp_path / "state"))
    served = deploy_app(served_bundle, "cli", serve_instance)
    _write_server_state(served, ["cli"])         # this test process plays the owning `trainyard serve`
    # The new version answers 'failure' from a probability of 0.2 (`decision: {threshold: 0.2}`).
    new = bundle_variant(served_bundle, tmp_path / "b2", version="cli-v2", cut_off=("failure", 0.2))
    env = {**os.environ, "TRAINYARD_STATE_DIR": str(tmp_path / "state")}
    try:
        run = subprocess.run([sys.executable, "-m", "trainyard", "serve", str(new), "--name", "cli",
                              "--port", str(served.port), "--set", "route_prefix=/cli",
                              "--set", "ray_actor_options.num_cpus=0.25"],
                             capture_output=True, text=True, env=env, timeout=240)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        assert "joining the Ray cluster of trainyard process" in run.stdout
        assert f"stays served by trainyard process {os.getpid()}" in run.stdout
        # Its answers change with more than its version: said, from the running replicas' own schema.json.
        assert ("[serve] note: cli answers by the cut-off P('failure') >= 0.2 (threshold 0.2) from now on (it "
                "answered by the likelier class)") in run.stdout
        assert Client(served.url).predict([{}])["model"]["version"] == "cli-v2"

        rows = pd.read_parquet(sorted(telemetry_dir.glob("*.parquet"))[0]).head(30)
        rows.to_csv(tmp_path / "rows.csv", index=False)
        run = subprocess.run([sys.executable, "-m", "trainyard", "predict", "--url", served.url,
                              str(tmp_path / "rows.csv"), "--out", str(tmp_path / "pred.jsonl")],
                             capture_output=True, text=True, env=env, timeout=120)
        assert run.returncode == 0, run.stderr[-2000:]
        # Every feature had its column: the notes are a reading one row left empty (imputed, and said), and the
        # bundle's cut-off, which /schema states too.
        assert [line for line in run.stderr.splitlines() if line.startswith("note:")] == [
            f"note: 1 of 30 row(s) of {tmp_path / 'rows.csv'} leave features empty, which the model imputes (the "
            "imputed column names them): rpm in 1 row(s)",
            f"note: 1 column(s) of {tmp_path / 'rows.csv'} are not features of the model and were not sent: "
            f"'machine_id' (they stay beside the predictions in {tmp_path / 'pred.jsonl'})",
            "note: 'failure' is predicted where P('failure') >= 0.2 (threshold 0.2), the bundle's cut-off"]
        assert Client(served.url).schema()["label"]["decision"] == {"positive": "failure", "threshold": 0.2,
                                                                    "rule": "threshold 0.2"}
        out = pd.read_json(tmp_path / "pred.jsonl", lines=True)
        assert len(out) == 30 and {"machine_id", "prediction", "probability_ok"} <= set(out.columns)
        sent = [{k: (None if v != v else v) for k, v in r.items() if k not in ("machine_id", "failure")}
                for r in rows.to_dict("records")]
        expected = load(new).predict(sent)
        assert out["prediction"].tolist() == expected["predictions"]
        assert out["prediction"].tolist() == ["failure" if p >= 0.2 else "ok" for p in out["probability_failure"]]
        assert set(out["out_of_range"].fillna("")) == {""}
        assert [(i, f) for i, f in enumerate(out["imputed"].fillna("")) if f] == [
            (n["record"], n["field"]) for n in expected["imputed"]]
        # A feature without a column is imputed for every row, and said so; so is a reading far outside what the
        # model was trained on (row 4's torque), which the output's out_of_range column names.
        rows.drop(columns=["rpm"]).assign(torque_nm=rows["torque_nm"].where(rows.index != 4, 9999.0),
                                          machine_type=rows["machine_type"].where(rows.index != 6, " m")).to_csv(
            tmp_path / "no-rpm.csv", index=False)
        run = subprocess.run([sys.executable, "-m", "trainyard", "predict", "--url", served.url,
                              str(tmp_path / "no-rpm.csv")], capture_output=True, text=True, env=env, timeout=120)
        assert run.returncode == 0, run.stderr[-2000:]
        assert f"note: {tmp_path / 'no-rpm.csv'} has no column for 'rpm': the model imputed it" in run.stderr
        assert "a missing value; the file's columns it does not take: 'machine_id'\n" in run.stderr
        assert f"note: 1 of 30 row(s) of {tmp_path / 'no-rpm.csv'} hold numbers well outside the range" in run.stderr
        assert "torque_nm in 1 row(s) (e.g. 9999; trained on" in run.stderr
        printed = pd.read_csv(io.StringIO(run.stdout))
        assert printed.index[printed["out_of_range"].fillna("") != ""].tolist() == [4]
        assert printed["out_of_range"][4].startswith("torque_nm=9999 (trained on ")
        # A category the model never saw (' m' for 'M'): answered as its unknown category, named by row and note.
        assert (f"note: 1 of 30 row(s) of {tmp_path / 'no-rpm.csv'} hold categories the model did not see in "
                "training, which it answers as its unknown category") in run.stderr
        assert "machine_type in 1 row(s) (e.g. ' m'; it knows " in run.stderr
        assert printed.index[printed["unseen_categories"].fillna("") != ""].tolist() == [6]
        assert printed["unseen_categories"][6] == "machine_type=' m'"
        bad = subprocess.run([sys.executable, "-m", "trainyard", "predict", "--url", served.url,
                              str(tmp_path / "rows.txt")], capture_output=True, text=True, env=env, timeout=60)
        assert bad.returncode == 2 and "unsupported file type '.txt'" in bad.stderr

        # A second app on the same port: `trainyard serve` joins the owner's Ray and serves it until stopped
        # (SIGTERM, as `kill` or a container stop sends), leaving the owner's record as it was.
        record = (tmp_path / "state" / f"serve-{served.port}.json").read_text()
        guest = serve_in_background(new, env, "--name", "guest", "--port", str(served.port),
                                    "--set", "route_prefix=/guest", "--set", "ray_actor_options.num_cpus=0.25")
        try:
            url = guest.wait_for(r"\[serve\] guest \S+ at (\S+)")
            assert Client(url).predict(sent[:2])["predictions"] == expected["predictions"][:2]
            assert f"runs on the Ray of trainyard process {os.getpid()}" in guest.wait_for(r"(.*runs on the Ray.*)")
            assert (tmp_path / "state" / f"serve-{served.port}.json").read_text() == record
            # The guest's app updated from a third shell: the update finds the guest (its own record) and exits;
            # the guest keeps serving the new version.
            guest_record = tmp_path / "state" / f"serve-{served.port}-guests" / "guest.json"
            assert json.loads(guest_record.read_text())["pid"] == guest.process.pid
            newer = bundle_variant(served_bundle, tmp_path / "b3", version="guest-v3")
            run = subprocess.run([sys.executable, "-m", "trainyard", "serve", str(newer), "--name", "guest",
                                  "--port", str(served.port), "--set", "route_prefix=/guest",
                                  "--set", "ray_actor_options.num_cpus=0.25"],
                                 capture_output=True, text=True, env=env, timeout=240)
            assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
            assert f"stays served by trainyard process {guest.process.pid}" in run.stdout, run.stdout
            assert Client(url).predict([{}])["model"]["version"] == "guest-v3"
            # ... and the guest, which printed nothing after its start, says so.
            assert guest.wait_for(r"\[serve\] guest now serves (\S+) \(was cli-v2\): updated from another process",
                                  timeout_s=60) == "guest-v3"
        finally:
            guest.process.send_signal(signal.SIGTERM)
            code = guest.process.wait(timeout=120)
        out = guest.output()
        assert code == 0 and out.splitlines()[-2:] == ["[serve] stopping guest ...", "[serve] stopped"], out
        assert not guest_record.exists()
        # Nothing from Ray but trainyard's own "[ray] 1 node(s), ..." line.
        assert [line for line in out.splitlines() if line.startswith("[ray") or "Traceback" in line] == [
            next(line for line in out.splitlines() if line.startswith("[ray] 1 node(s)"))], out
        assert app_status("guest") is None
        assert (tmp_path / "state" / f"serve-{served.port}.json").read_text() == record    # still the owner's
        assert Client(served.url).predict([{}])["model"]["version"] == "cli-v2"

        # A guest whose owner stops (it deletes its apps, then its Ray goes) stops with it, saying why.
        guest = serve_in_background(new, env, "--name", "guest2", "--port", str(served.port),
                                    "--set", "route_prefix=/guest2", "--set", "ray_actor_options.num_cpus=0.25")
        try:
            guest.wait_for(r"(.*runs on the Ray.*)")
            release_app("cli")
            code = guest.process.wait(timeout=60)
        finally:
            guest.process.kill()
        out = guest.output()
        assert code == 1 and (f"trainyard process {os.getpid()}, whose Ray guest2 runs on, is stopping its server on "
                              f"port {served.port}; guest2 stops with it") in out, out
        assert (app_status("guest2") or {}).get("status") in (None, "DELETING")    # the Ray lives on here: asked to go
    finally:
        release_app("cli")
        release_app("guest2")     # its owner here (this test) stays up, and so does its Ray


def test_serve_settings_come_from_the_bundle_then_set(served_bundle):
    from jobs.spec import SpecError
    from serving.commands import serve_settings

    spec = serve_settings(served_bundle, None, ["autoscaling.max_replicas=2", "serve.batch.wait_ms=1"])
    assert spec.autoscaling.max_replicas == 2 and spec.batch.wait_ms == 1.0 and spec.port == 8000
    with pytest.raises(SpecError) as err:
        serve_settings(served_bundle, None, ["autoscaling.min_replicas=9", "batch.size=3"])
    text = str(err.value)
    assert "serve.autoscaling: min_replicas (9) is above max_replicas (4)" in text
    assert ("serve.batch.size: unknown setting. Fix: remove it or fix the spelling; allowed keys here: max_size, "
            "wait_ms") in text
    # A section that is optional (serve.log) lists its keys too, and a near miss is named, as `validate` does.
    with pytest.raises(SpecError) as err:
        serve_settings(served_bundle, None, ["log.path=x", "log.smaple=0.5"])
    assert ("serve.log.smaple: unknown setting. Fix: did you mean 'sample'? remove it or fix the spelling; "
            "allowed keys here: path, ") in str(err.value), str(err.value)


def test_bad_settings_and_bundles_fail_before_serve_is_touched(served_bundle, serve_instance, tmp_path):
    from jobs.bundle import BundleError
    from serving import ServeError, app_status

    with pytest.raises(ServeError, match=r"required_features names \['rmp'\]"):
        deploy_app(served_bundle, "nope", serve_instance, required_features=["rmp"])
    broken = bundle_variant(served_bundle, tmp_path / "broken", version="x")
    (broken / "model.safetensors").write_bytes(b"not weights")
    with pytest.raises(ServeError, match=r"not as it was written \(model.safetensors has 11 bytes"):
        deploy_app(broken, "nope", serve_instance)
    (broken / "schema.json").unlink()
    with pytest.raises(ServeError, match="schema.json is missing"):
        deploy_app(broken, "nope", serve_instance)
    (broken / "manifest.json").unlink()
    with pytest.raises(ServeError, match="manifest.json is missing, and this bundle was written with one"):
        deploy_app(broken, "nope", serve_instance)
    lineage = json.loads((broken / "lineage.json").read_text())     # as a bundle before manifests, or a hand's
    (broken / "lineage.json").write_text(json.dumps({k: v for k, v in lineage.items() if k != "manifest"}))
    with pytest.raises(BundleError, match="not a trainyard bundle: missing schema.json"):
        deploy_app(broken, "nope", serve_instance)
    with pytest.raises(ServeError, match="already running in this Ray cluster"):
        deploy_app(served_bundle, "nope", (serve_instance[0], serve_instance[1] + 1))
    # Part of serve.log by --set, with no running app to complete it from: refused before deploying.
    from jobs.spec import SpecError
    from serving import deploy
    from serving.commands import serve_settings
    host, port = serve_instance
    part = serve_settings(served_bundle, None, [f"host={host}", f"port={port}", "route_prefix=/nope",
                                                "log.keep=[site]"], progress=lambda *_: None)
    with pytest.raises(SpecError, match=r"--set: serve.log.path: Field required \(--set gave part of serve.log, and "
                                        r"no running app has a log section to complete it"):
        deploy(served_bundle, spec=part, name="nope", progress=lambda *_: None)
    assert app_status("nope") is None
