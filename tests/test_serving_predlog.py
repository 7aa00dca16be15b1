"""Prediction logging (`serve.log`), on real Serve over real HTTP and real Parquet: what is logged (request id,
features, prediction), what never is (excluded fields), sampling, the flush at shutdown, a SIGKILLed replica, and
the writer on its own (rotation by size, a full buffer, object storage through moto's S3)."""
import json
import os
import random
import signal
import tempfile
import time

import pytest

from tests.s3_fixtures import s3_bucket  # noqa: F401
from tests.serving_fixtures import (call, deploy_app, records_from, release_app, served_bundle,  # noqa: F401
                                    serve_instance)
from tests.test_serving_faults import replica_pids
from tests.test_serving_ops import _wait_for

SECRET = "PERSONAL-7f3a"      # a value of the excluded field: it must appear nowhere in the logs
SCHEMA = {"task": "regression", "features": [{"name": "rpm", "type": "number"},
                                             {"name": "email", "type": "category"}]}


def post(url: str, records: list[dict]) -> dict:
    status, _, out = call(url, "POST", "/predict", json.dumps({"records": records}).encode(),
                          {"Content-Type": "application/json"})
    assert status == 200, out
    return out


def read_logs(folder):
    """Every visible log file under `folder`, read the way the monitor does: as one pyarrow dataset."""
    import pyarrow.dataset as ds
    return ds.dataset(str(folder), format="parquet").to_table()


@pytest.mark.slow
def test_logged_rows_carry_request_id_features_and_prediction_and_never_an_excluded_field(
        served_bundle, serve_instance, telemetry_dir, tmp_path):
    import pyarrow.compute as pc

    from jobs.fitted import canonical
    from serving import ServeError, shutdown

    log = {"path": str(tmp_path / "logs"), "exclude": ["shift"], "keep": ["machine_id"], "rotate_s": 300}
    with pytest.raises(ServeError, match=r"serve.log.exclude names \['shfit'\]"):
        deploy_app(served_bundle, "plog", serve_instance, log={**log, "exclude": ["shfit"]})
    with pytest.raises(ServeError, match=r"serve.log.keep names \['rpm'\], input feature\(s\) of the bundle"):
        deploy_app(served_bundle, "plog", serve_instance, log={**log, "keep": ["rpm"]})
    served = deploy_app(served_bundle, "plog", serve_instance, log=log)
    features = {f["name"]: f["type"] for f in json.loads((served_bundle / "schema.json").read_text())["features"]}
    rows = records_from(telemetry_dir, 30)
    sent = {}
    try:
        for i in range(0, 30, 3):
            # A field kept for the log (serve.log.keep), not a feature: text, a number, null, or left out.
            records = [dict(r, shift=SECRET, **({} if i == 3 else {"machine_id": [f"M-{i}", i, None][i // 3 % 3]}))
                       for r in rows[i:i + 3]]
            out = post(served.url, records)
            rid = out["request_id"]
            assert len(rid) == 32 and int(rid, 16) >= 0 and rid not in sent
            sent[rid] = (records, out["predictions"], out["probabilities"])
        # `trainyard predict`'s table keys each row as the log does, so labels gathered on it join the logs.
        import pandas as pd

        from serving import Client
        framed = Client(served.url, batch_size=4).predict_frame(pd.DataFrame(rows[:7]).assign(shift=SECRET,
                                                                                             machine_id="F-1"))
        status, _, refused = call(served.url, "POST", "/predict", json.dumps(
            {"records": [dict(rows[0], machine_id={"site": 1})]}).encode(), {"Content-Type": "application/json"})
        assert status == 422 and "serve.log.keep" in json.dumps(refused) and "machine_id" in json.dumps(refused)
        # rotate_s: 300, so the open file is not visible yet ...
        assert not any(p.suffix == ".parquet" for p in (tmp_path / "logs" / "plog").iterdir())
    finally:
        shutdown("plog")
    # ... until the replica's graceful shutdown published it.
    table = read_logs(tmp_path / "logs" / "plog")
    assert table.column_names == (["request_id", "record", "time", "model_version", "prediction", "probabilities"]
                                  + [f"feature.{f}" for f in features if f != "shift"] + ["keep.machine_id"])
    assert str(table.schema.field("time").type) == "timestamp[ms, tz=UTC]"
    assert all(SECRET not in str(v) for column in table.columns for v in column.to_pylist())
    logged = {(r["request_id"], r["record"]): r for r in table.to_pylist()}
    assert len(logged) == 37 == table.num_rows
    for row in framed.to_dict("records"):
        assert logged.pop((row["request_id"], row["record"]))["prediction"] == row["prediction"]
        assert table.filter(pc.equal(table["request_id"], row["request_id"]))["keep.machine_id"].to_pylist()[0] \
            == "F-1"    # the client sends the kept column too (GET /schema's limits.log_keep)
    version = json.loads((served_bundle / "lineage.json").read_text())["version"]
    for rid, (records, predictions, probabilities) in sent.items():
        for i, (record, prediction) in enumerate(zip(records, predictions)):
            row = logged[(rid, i)]
            assert row["prediction"] == prediction and row["model_version"] == version
            assert row["keep.machine_id"] == canonical(record.get("machine_id"))
            assert row["probabilities"] == pytest.approx(probabilities[i], abs=1e-7)     # float32
            for name, kind in features.items():
                value = record.get(name)
                if name != "shift":
                    assert row[f"feature.{name}"] == (canonical(value) if kind == "category"
                                                      else None if value is None else float(value)), name


@pytest.mark.slow
def test_sampling_and_a_sigkilled_replica_leave_earlier_files_intact(served_bundle, serve_instance, tmp_path):
    """sample 0.5 logs about half the requests; a replica SIGKILLed with a file open loses at most that file,
    never one published before it, and the folder still reads as one dataset."""
    folder = tmp_path / "logs" / "phalf"
    served = deploy_app(served_bundle, "phalf", serve_instance, autoscaling={"min_replicas": 1, "max_replicas": 1},
                        log={"path": str(tmp_path / "logs"), "sample": 0.5, "rotate_s": 1})
    try:
        first = {post(served.url, [{"rpm": 1500.0 + i}])["request_id"] for i in range(200)}
        stats = lambda: call(served.url, "GET", "/readyz")[2]["logging"]  # noqa: E731
        assert _wait_for(lambda: stats()["published_records"] == stats()["logged_records"], 15)
        before = set(read_logs(folder).column("request_id").to_pylist())
        assert len(before) == stats()["logged_requests"] and stats()["files"] >= 1
        assert before <= first and 60 <= len(before) <= 140, len(before)        # ~100 (binomial sd 7)
        published = {p.name: p.read_bytes() for p in folder.glob("*.parquet")}

        second = {post(served.url, [{"rpm": 900.0}])["request_id"] for _ in range(20)}
        [pid] = replica_pids("phalf")
        os.kill(pid, signal.SIGKILL)
        assert _wait_for(lambda: pid not in replica_pids("phalf"), 30)
        for name, data in published.items():
            assert (folder / name).read_bytes() == data           # earlier files untouched ...
        after = set(read_logs(folder).column("request_id").to_pylist())   # ... and the folder still reads
        assert before <= after <= first | second
        # An update not given serve.log (a bundle's spec.yaml never gives it) keeps logging where it did, and
        # says so; only one given `log: null` ends it, said, naming the folder and how to go on.
        said = []
        deploy_app(served_bundle, "phalf", serve_instance, autoscaling={"min_replicas": 1, "max_replicas": 1},
                   progress=said.append)
        assert any(line.startswith("[serve] phalf keeps its running log (what this update did not give")
                   for line in said), said
        assert "logging" in call(served.url, "GET", "/readyz")[2]
        said = []
        deploy_app(served_bundle, "phalf", serve_instance, log=None, progress=said.append)
        assert any(line.startswith("[serve] note: phalf logged its predictions to ") and str(tmp_path / "logs")
                   in line and "this update logs none (serve.log given as null)" in line for line in said), said
        assert "logging" not in call(served.url, "GET", "/readyz")[2]
    finally:
        release_app("phalf")         # nothing checked after its drain, unlike "plog" above


def test_the_writer_rotates_by_size_drops_when_full_and_hides_open_files(tmp_path):
    """Ray-free: tiny rotate_mb gives several complete files; a full buffer drops (and counts) instead of
    waiting; an excluded field is neither a column nor a value; no temp file is left visible."""
    from serving.predlog import PredictionLogger, check_log_settings

    with pytest.raises(ValueError, match=r"exclude names \['mail'\].*features are \['rpm', 'email'\]"):
        check_log_settings(SCHEMA, {"exclude": ["mail"]})
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError, match=r"serve.log.path '.*file/x': cannot create .*give a folder this node can write"):
        PredictionLogger({"path": str(tmp_path / "file" / "x")}, app="a", replica="r1", schema=SCHEMA, version="v1")
    logger = PredictionLogger({"path": str(tmp_path), "exclude": ["email"], "rotate_mb": 0.001, "rotate_s": 60,
                               "buffer_records": 400}, app="a", replica="r1", schema=SCHEMA, version="v1")
    assert not logger.log("big", [{"rpm": 1.0}] * 401, [0.5] * 401)       # more than the buffer holds: dropped
    assert logger.stats["dropped_records"] == 401
    for round_ in range(2):
        for i in range(4):
            records = [{"rpm": random.random(), "email": SECRET} for _ in range(100)]     # 800 B of doubles
            assert logger.log(f"id{round_}-{i}", records, [0.5] * 100)
        time.sleep(1.2)                              # the writer drains the buffer at least every second
    logger.close()
    assert logger.stats["published_records"] == logger.stats["logged_records"] == 800
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert len(files) >= 2 and all(f.startswith("part-") and f.endswith(".parquet") and "-r1-" in f for f in files)
    table = read_logs(tmp_path / "a")
    assert table.num_rows == 800 and "feature.email" not in table.column_names
    assert all(SECRET not in str(v) for column in table.columns for v in column.to_pylist())


def test_the_writer_puts_complete_files_on_object_storage(s3_bucket):  # noqa: F811
    import tempfile

    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from serving.predlog import PredictionLogger

    uri = f"{s3_bucket}/predlog"
    logger = PredictionLogger({"path": uri, "rotate_s": 60}, app="a", replica="r1", schema=SCHEMA, version="v1")
    logger.log("one", [{"rpm": 1.0, "email": "x@y"}, {}], [0.5, 0.25])
    time.sleep(1.5)
    fs, base = pafs.FileSystem.from_uri(uri)
    listed = lambda: fs.get_file_info(pafs.FileSelector(f"{base}/a", allow_not_found=True))  # noqa: E731
    assert listed() == []                       # converted and written to a local temp file, not put yet
    logger.close()
    [info] = listed()
    assert info.base_name.startswith("part-") and info.base_name.endswith("-r1-000000.parquet")
    table = pq.read_table(info.path, filesystem=fs)
    assert table.to_pydict()["feature.email"] == ["x@y", None] and table.column("prediction").to_pylist() == [0.5, 0.25]
    assert not [p for p in os.listdir(tempfile.gettempdir()) if p.startswith("trainyard-predlog-")]  # cleaned up


def test_class_labels_are_logged_as_the_canonical_strings_the_monitor_matches(tmp_path):
    """Ray-free: boolean and integer classes are written as `jobs.fitted.canonical` writes them ("true", "3"),
    the form the monitor job matches against the bundle's classes (str() gave "True")."""
    from serving.predlog import PredictionLogger

    schema = {**SCHEMA, "task": "classification", "label": {"name": "y", "classes": [False, True]}}
    logger = PredictionLogger({"path": str(tmp_path)}, app="a", replica="r1", schema=schema, version="v1")
    assert logger.log("id", [{"rpm": 1.0}] * 3, [True, False, 3])
    logger.close()
    assert read_logs(tmp_path / "a").column("prediction").to_pylist() == ["true", "false", "3"]
    # All ints or all bools (the usual case) take Arrow's cast rather than canonical() per value: the same strings.
    from jobs.fitted import canonical
    from serving.predlog import _strings
    for values in ([0, 1, None, -3, 2**40], [True, False, None], [1.0, 2.5, None], ["a", None]):
        assert _strings(values).to_pylist() == [canonical(v) for v in values], values


def test_an_exclude_that_names_no_feature_says_what_it_means_for_the_logs():
    """A hospital analyst excluding 'patient_id' (not a feature) read "so they would not be left out of the logs"
    as a leak: a field that is not a feature is never logged; a misspelt feature is what would be."""
    from serving.predlog import check_log_settings

    with pytest.raises(ValueError) as err:
        check_log_settings(SCHEMA, {"exclude": ["patient_id", "emial"]})
    assert str(err.value) == (
        "serve.log.exclude names ['patient_id', 'emial'], which the bundle does not have as input features: only "
        "features are logged, so a field that is not one never reaches a log file, while a misspelt feature would "
        "stay in every one. Did you mean 'email' for 'emial'? Remove it, or fix the spelling; its features are "
        "['rpm', 'email']")
    check_log_settings(SCHEMA, {"exclude": ["email"]})


def test_a_classifiers_probabilities_are_logged_in_the_order_of_its_classes(tmp_path):
    """Ray-free: each record's probabilities (what the monitor's realised AUC is computed from) in a list<float32>
    column beside its class; a request logged without them gets nulls; a regression log has no such column."""
    import pyarrow as pa

    from serving.predlog import PredictionLogger

    schema = {**SCHEMA, "task": "classification", "label": {"name": "y", "classes": ["no", "yes"]}}
    logger = PredictionLogger({"path": str(tmp_path)}, app="a", replica="r1", schema=schema, version="v1")
    assert logger.log("r1", [{"rpm": 1.0}] * 2, ["yes", "no"], [[0.25, 0.75], [0.875, 0.125]])
    assert logger.log("r2", [{"rpm": 2.0}], ["no"])
    logger.close()
    table = read_logs(tmp_path / "a")
    assert table.schema.field("probabilities").type == pa.list_(pa.float32())
    assert table.column_names.index("probabilities") == table.column_names.index("prediction") + 1
    rows = sorted(zip(table["request_id"].to_pylist(), table["record"].to_pylist(),
                      table["probabilities"].to_pylist()))
    assert rows == [("r1", 0, [0.25, 0.75]), ("r1", 1, [0.875, 0.125]), ("r2", 0, None)]
    regression = PredictionLogger({"path": str(tmp_path / "reg")}, app="a", replica="r1", schema=SCHEMA,
                                  version="v1")
    assert regression.log("r3", [{"rpm": 1.0}], [3.5])
    regression.close()
    assert "probabilities" not in read_logs(tmp_path / "reg" / "a").column_names


def test_buffered_requests_leave_nothing_for_the_garbage_collector_to_track(tmp_path):
    """Ray-free: what log() keeps until the writer's next pass is untracked by the GC within two collections.
    Kept as the request's own lists (as before), ~1,200 requests a second survived into the oldest generation,
    whose growth set off full collections of the replica's whole heap: ~150 ms pauses, the p99 cost of logging."""
    import gc

    from serving.predlog import PredictionLogger

    body = json.dumps({"records": [{"rpm": 1500.0, "email": "x@y"}, {"rpm": None}],
                       "probabilities": [[0.75, 0.25], [0.5, 0.5]]})
    classifier = {**SCHEMA, "task": "classification", "label": {"name": "y", "classes": ["a", "b"]}}
    # A classifier's entries hold its probabilities too (tuples of tuples of floats): untracked as well.
    for schema, probabilities in ((SCHEMA, False), (classifier, True)):
        logger = PredictionLogger({"path": str(tmp_path / schema["task"])}, app="a", replica="r1", schema=schema,
                                  version="v1")
        gc.collect()
        tracked = len(gc.get_objects())
        for i in range(1000):      # well inside the writer's first FLUSH_S: all 1,000 stay buffered
            request = json.loads(body)
            assert logger.log(f"id{i}", request["records"], [0.5, 0.25],
                              request["probabilities"] if probabilities else None)
        gc.collect()
        gc.collect()       # the second pass (a replica's next gen-1 pass) untracks the tuples of the first's tuples
        assert len(gc.get_objects()) - tracked < 100, schema["task"]     # the request's lists and entries: 3,000+
        logger.close()
        assert logger.stats["published_records"] == 2000
        assert read_logs(tmp_path / schema["task"] / "a").column("feature.email").to_pylist()[:2] == ["x@y", None]


def test_request_ids_are_unique_across_replicas():
    """Each replica draws 64 random bits once, then counts: ids unique within and across replicas, 32 hex digits
    like the uuid4 hex they replace (which cost ~4% of a replica's event loop)."""
    from serving.predlog import RequestIds

    replicas = [RequestIds() for _ in range(3)]
    ids = [ids_of() for ids_of in replicas for _ in range(1000)]
    assert len(set(ids)) == 3000 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert len({i[:16] for i in ids}) == 3          # one random prefix per replica, then its counter


KILLED_WRITER = """
import sys, time
sys.path.insert(0, {root!r})
from serving.predlog import PredictionLogger
logger = PredictionLogger({{"path": {path!r}, "rotate_s": 600}}, app="a", replica="r-killed", schema={schema!r},
                          version="v1")
logger.log("killed", [{{"rpm": 1.0}}], [0.5])
while not (logger._file and logger._file["rows"]):     # appended to its journal (within FLUSH_S)
    time.sleep(0.05)
open({marker!r}, "w").close()
time.sleep(600)
"""


def test_a_starting_logger_removes_what_a_killed_writer_left_and_nothing_a_live_one_writes(tmp_path):
    """Ray-free: a writer SIGKILLed with its file open leaves a hidden .part-*.tmp, its journal; the next logger to
    start in that folder publishes the records it holds under the name the killed writer would have used, and
    removes it (no process holds its lock any more). Before, that file was removed and up to rotate_s (300 s) of
    a replica's logs with it. The open journal of a live writer (locked) stays and is published in full."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from serving.predlog import PredictionLogger

    folder = tmp_path / "a"
    temps = lambda: sorted(p.name for p in folder.glob(".part-*.parquet.tmp"))  # noqa: E731
    root = str(Path(__file__).resolve().parents[1])
    child = subprocess.Popen([sys.executable, "-c", KILLED_WRITER.format(
        root=root, path=str(tmp_path), schema=SCHEMA, marker=str(tmp_path / "appended"))])
    live = None
    try:
        assert _wait_for(lambda: (tmp_path / "appended").exists(), 60)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        killed = temps()
        shutil.copy(folder / killed[0], tmp_path / "journal-copy")
        # The name a writer creates its file under before locking it: one a writer killed in that instant left
        # (old) goes; a fresh one may be a writer about to lock it, and stays.
        old_new = folder / ".part-x-r-old-000000.parquet.tmp.new"
        fresh_new = folder / ".part-x-r-y-000000.parquet.tmp.new"
        old_new.write_bytes(b"")
        fresh_new.write_bytes(b"")
        os.utime(old_new, (time.time() - 600, time.time() - 600))
        live = PredictionLogger({"path": str(tmp_path), "rotate_s": 600}, app="a", replica="r-live", schema=SCHEMA,
                                version="v1")        # the next logger to start there: it takes the killed one's
        assert live.stats["stale_temps_removed"] == 2 and live.stats["recovered_records"] == 1 and temps() == []
        assert [p.name for p in folder.glob("*.parquet")] == [t[1:-len(".tmp")] for t in killed]
        # A journal whose file was published already (its writer killed between the two steps) is only removed.
        shutil.copy(tmp_path / "journal-copy", folder / killed[0])
        again = PredictionLogger({"path": str(tmp_path)}, app="a", replica="r-again", schema=SCHEMA, version="v1")
        again.close()
        assert again.stats["stale_temps_removed"] == 1 and again.stats["recovered_records"] == 0 and temps() == []
        assert not old_new.exists() and fresh_new.exists()
        fresh_new.unlink()
        live.log("live", [{"rpm": 2.0}, {"rpm": 3.0}], [0.5, 0.25])
        assert _wait_for(lambda: any("-r-live-" in t for t in temps()), 10)
        starting = PredictionLogger({"path": str(tmp_path)}, app="a", replica="r-new", schema=SCHEMA, version="v1")
        assert starting.stats["stale_temps_removed"] == 0 and [t for t in temps() if "-r-live-" in t]
        starting.close()
        live.close()
    finally:
        if child.poll() is None:
            child.kill()
        if live is not None:
            live.close()
    assert temps() == [] and sorted(read_logs(folder).column("request_id").to_pylist()) == ["killed", "live", "live"]


def test_a_kept_field_is_accepted_logged_as_text_and_never_reaches_the_model(tmp_path):
    """`serve.log.keep`: a machine's id sent beside the features was refused (unknown_fields: reject) or dropped
    (ignore), so no log could say which machine's traffic drifted. Kept, it is accepted under either, written as
    text, and left out of the model's records; anything else is refused by name; an update that stops keeping it
    is one its clients' requests would break on."""
    from serving.contract import lost_requests
    from serving.predlog import PredictionLogger, check_log_settings
    from serving.schema import RequestChecker, RequestError

    schema = {**SCHEMA, "features": [{"name": "rpm", "type": "number"},
                                     {"name": "machine_type", "type": "category", "categories": ["L", "M"]}],
              "label": {"name": "failure"}}
    for unknown in ("reject", "ignore"):
        checker = RequestChecker(schema, max_records=10, max_body_bytes=4096, unknown_fields=unknown,
                                 keep=["machine_id"])
        records = checker.parse(b'{"records": [{"rpm": 1, "machine_id": "M-7"}, {"rpm": 2, "machine_id": 7}, '
                                b'{"rpm": 3, "machine_id": null}, {"rpm": 4, "machine_id": 2.5}, {"rpm": 5}]}')
        assert [r.get("machine_id") for r in records] == ["M-7", 7, None, 2.5, None]
        # The model's records: a kept 'machine_id' beside no 'machine_type' read as its misspelling to the model.
        assert checker.without_kept(records) == [{"rpm": v} for v in (1, 2, 3, 4, 5)]
        with pytest.raises(RequestError) as err:
            checker.parse(b'{"records": [{"rpm": 1, "machine_id": {"site": 3}}, {"rpm": 1, "machine_id": [1]}]}')
        assert "a field kept for the prediction log (serve.log.keep) is logged as text: send text, a number, " \
               "true/false or null, not an object" in json.dumps(err.value.to_json()), err.value.to_json()
    # A lone surrogate in a kept field: refused (Arrow cannot write it: the log's whole open file was lost).
    with pytest.raises(RequestError, match=r"field 'machine_id': 'M-\\ud800' holds a lone surrogate"):
        checker.parse(b'{"records": [{"rpm": 1, "machine_id": "M-\\ud800"}]}')
    from serving.predlog import _strings
    assert _strings(["a", "M-\ud800", None]).to_pylist() == ["a", "M-?", None]      # the writer's backstop
    plain = RequestChecker(schema, max_records=10, max_body_bytes=4096)
    with pytest.raises(RequestError, match="unknown field"):
        plain.parse(b'{"records": [{"rpm": 1, "machine_id": "M-7"}]}')
    assert plain.without_kept(records) is records

    logger = PredictionLogger({"path": str(tmp_path), "keep": ["machine_id", "site"]}, app="a", replica="r1",
                              schema={**schema, "task": "regression"}, version="v1")
    assert logger.log("id", records, [1.0] * 5)
    logger.close()
    table = read_logs(tmp_path / "a")
    assert table.column_names[-2:] == ["keep.machine_id", "keep.site"]
    assert table.column("keep.machine_id").to_pylist() == ["M-7", "7", None, "2.5", None]
    assert table.column("keep.site").to_pylist() == [None] * 5

    with pytest.raises(ValueError, match=r"serve.log.keep names \['machine_type'\], input feature\(s\) of the bundle"):
        check_log_settings(schema, {"keep": ["machine_type"]})
    with pytest.raises(ValueError, match=r"serve.log.keep names 'failure', the bundle's label"):
        check_log_settings(schema, {"keep": ["failure"]})
    kept = {"log": {"path": "x", "keep": ["machine_id"]}}
    assert lost_requests(schema, kept, schema, kept) == []
    assert lost_requests(schema, kept, schema, {}) == [
        "'machine_id' is no longer kept for the log (serve.log.keep), and a record that sends one is refused "
        "(serve.unknown_fields: reject)"]
    assert lost_requests(schema, kept, schema, {"unknown_fields": "ignore"}) == []


def test_a_journal_cut_mid_batch_gives_its_complete_batches_and_one_not_published_stays(tmp_path, monkeypatch):
    """A writer killed while appending leaves a batch cut short: the batches before it are published, in row
    groups, and the file reads as the monitor reads it. A journal that cannot be published (storage failing)
    stays whole for the next logger (it was removed, and the warning said it was left)."""
    import pyarrow as pa

    from serving.journal import JOURNAL_NAME, recover_stale_journals

    schema = pa.schema([("request_id", pa.string()), ("x", pa.float64())])
    journal = tmp_path / ".part-1-r-000000.parquet.tmp"
    sink = pa.OSFile(str(journal), "wb")
    writer = pa.ipc.new_stream(sink, schema.with_metadata({JOURNAL_NAME: "part-1-r-000000.parquet"}),
                               options=pa.ipc.IpcWriteOptions(compression="zstd"))
    sizes = []
    for i in range(3):
        writer.write_batch(pa.record_batch([[f"r{i}"] * 100, [float(i)] * 100], schema=schema))
        sizes.append(sink.tell())
    sink.close()                     # no end-of-stream marker: its writer died
    with open(journal, "r+b") as f:
        f.truncate(sizes[1] + (sizes[2] - sizes[1]) // 2)
    recover = lambda: recover_stale_journals(str(tmp_path / ".part-*.parquet.tmp"), "", "", None, True)  # noqa: E731
    real_replace = os.replace

    def failing(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing)
    assert recover() == {} and journal.exists() and not list(tmp_path.glob("*.parquet"))
    assert not list(tmp_path.glob("*.out"))
    monkeypatch.setattr(os, "replace", real_replace)
    assert recover() == {str(journal): 200} and not journal.exists()
    assert read_logs(tmp_path).column("request_id").to_pylist() == ["r0"] * 100 + ["r1"] * 100
    # A file no journal (an older trainyard's Parquet temp, unreadable without its footer) is removed.
    journal.write_bytes(b"PAR1 no footer")
    assert recover() == {str(journal): 0}
    assert not journal.exists() and read_logs(tmp_path).num_rows == 200


def test_on_object_storage_a_logger_takes_over_only_its_own_destinations_journals(s3_bucket, tmp_path):  # noqa: F811
    """Journals bound for object storage wait in the node's temporary folder, beside those of other apps and
    buckets: a logger publishes only those of its own URI and app, through its own connection; another's stays."""
    import subprocess
    import sys
    from pathlib import Path

    import pyarrow.fs as pafs

    from serving.predlog import REMOTE_TEMP_PREFIX, PredictionLogger

    uri = f"{s3_bucket}/predlog"
    temps = lambda: [p for p in os.listdir(tempfile.gettempdir())  # noqa: E731
                     if p.startswith(REMOTE_TEMP_PREFIX) and p.endswith(".tmp")]
    before = set(temps())
    root = str(Path(__file__).resolve().parents[1])
    child = subprocess.Popen([sys.executable, "-c", KILLED_WRITER.format(
        root=root, path=uri, schema=SCHEMA, marker=str(tmp_path / "appended"))])
    try:
        assert _wait_for(lambda: (tmp_path / "appended").exists(), 60)
    finally:
        child.kill()
        child.wait(10)
    [journal] = set(temps()) - before
    assert os.stat(os.path.join(tempfile.gettempdir(), journal)).st_mode & 0o077 == 0      # request records
    other = PredictionLogger({"path": uri}, app="b", replica="r2", schema=SCHEMA, version="v1")
    other.close()
    assert other.stats["recovered_records"] == 0 and journal in temps()
    own = PredictionLogger({"path": uri}, app="a", replica="r3", schema=SCHEMA, version="v1")
    own.close()
    assert own.stats["recovered_records"] == 1 and journal not in temps()
    fs, base = pafs.FileSystem.from_uri(uri)
    names = [i.base_name for i in fs.get_file_info(pafs.FileSelector(f"{base}/a"))]
    assert journal.removeprefix(REMOTE_TEMP_PREFIX).removesuffix(".tmp") in names
