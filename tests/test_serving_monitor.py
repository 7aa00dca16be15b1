"""Live drift monitoring in serving replicas (serving/monitor.py).

Over real HTTP on real Ray Serve, a bundle trained in this session: the held-out (test) split flags nothing;
traffic with one sensor offset by 3 standard deviations, one new category and one feature missing in half the
requests flags exactly those three features, in GET /monitor and on the Prometheus endpoint of Ray's metrics
agent. Without Ray: the replica's counters give the same statistics as `jobs.drift` over the raw values, the
window forgets what is older than it, and monitoring that is off says why.
"""
from __future__ import annotations

import json
import time
import urllib.request
from types import SimpleNamespace

import numpy as np
import pytest

from jobs import drift
from serving.monitor import STEPS, LiveMonitor, _Window, for_replica
from tests.serving_fixtures import call, deploy_app, release_app, served_bundle, serve_instance  # noqa: F401

SHIFTED = {"air_temp_k", "machine_type", "rpm"}
PER_REQUEST = 6
TOKEN = "monitor-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _profile(rng) -> dict:
    from jobs.profile import summarise
    numeric = {name: {**{k: v for k, v in summarise(rng.normal(loc, 2.0, 400)).items() if k != "count"},
                      "missing_rate": 0.02} for name, loc in (("t", 300.0), ("u", 10.0))}
    return {"numeric": numeric,
            "categorical": {"m": {"shares": {"L": 0.5, "M": 0.3, "H": 0.2}, "unknown_share": 0.0,
                                  "missing_rate": 0.0},
                            "shift": {"shares": {"1": 0.4, "2": 0.3, "3": 0.3}, "unknown_share": 0.0,
                                      "missing_rate": 0.0}},
            "prediction": {"task": "classification", "classes": ["failure", "ok"], "shares": [0.1, 0.9]}}


# ---------------------------------------------------------------------------------------------- without Ray

def test_a_replica_counts_values_past_the_training_range_as_the_monitor_job_does():
    """GET /monitor had no out-of-range rate, so a unit changed at one source showed only in `trainyard monitor`:
    a replica counts each number past its training range (`range_bounds`, as /predict's out_of_range) too."""
    from jobs.tabular import range_bounds

    rng = np.random.default_rng(4)
    profile = _profile(rng)
    n = 400
    u = [float(v) * (50 if i % 10 == 0 else 1) for i, v in enumerate(rng.normal(10.0, 2.0, n))]   # 1 in 10 x50
    records = [{"t": float(v), "u": u[i], "m": "L", "shift": 1} for i, v in enumerate(rng.normal(300.0, 2.0, n))]
    monitor = LiveMonitor(profile, app="a", version="v1", replica="r1", window_s=600, export=False,
                          ranges={"u": range_bounds(4.0, 16.0), "t": range_bounds(290.0, 310.0)})
    try:
        for i in range(0, n, 8):
            monitor.observe(records[i:i + 8], ["ok"] * 8)
        got = monitor.snapshot()
    finally:
        monitor.close()
    low, high = range_bounds(4.0, 16.0)
    outside = sum(not low <= v <= high for v in u)
    assert got["features"]["u"]["outside"] == outside >= 35 and got["features"]["t"]["outside"] == 0
    assert got["features"]["u"]["outside_rate"] == pytest.approx(outside / n)
    assert f"outside the training range {outside / n:.2f} ({outside:,} of {n:,})" in got["features"]["u"]["flags"]
    assert "outside" not in got["features"]["m"]


def test_a_replica_says_which_way_a_flagged_number_went():
    """`trainyard monitor` gives a drifted number's median against training's; a replica keeps counts, not values,
    so its psi flag said "psi 5.2" and not whether the sensor read high or low. It gives the share at or above the
    training median now (the median is one of the bins' edges), against training's."""
    rng = np.random.default_rng(5)
    profile = _profile(rng)
    monitor = LiveMonitor(profile, app="a", version="v1", replica="r1", window_s=600, export=False)
    try:
        for i in range(0, 400, 8):
            monitor.observe([{"t": float(v), "u": float(w), "m": "L", "shift": 1}
                             for v, w in zip(rng.normal(303.0, 2.0, 8), rng.normal(10.0, 2.0, 8))], ["ok"] * 8)
        got = monitor.snapshot()
    finally:
        monitor.close()
    ref = profile["numeric"]["t"]
    [flag] = [f for f in got["features"]["t"]["flags"] if f.startswith("psi ")]
    above = float(flag.split("; ")[1].split("%")[0]) / 100
    assert above > 0.85 and flag.endswith(f"at or above the training median {ref['quantiles'][50]:.4g} (50% in "
                                          "training)"), flag
    assert not any(f.startswith("psi ") for f in got["features"]["u"]["flags"])
    assert drift.median_side({"edges": [], "shares": [1.0], "quantiles": []}, [3]) is None       # no values seen
    assert drift.median_side(ref, np.zeros(len(ref["edges"]) + 1)) is None


def test_a_replica_judges_its_answers_probabilities_as_the_monitor_job_does():
    """GET /monitor judged the answered classes only: every risk up with few answers changed went unseen live,
    where `trainyard monitor` flags it from the logs. A replica counts the probability of the profiled class too."""
    from jobs.profile import score_reference

    rng = np.random.default_rng(6)
    profile = _profile(rng)
    validation = 1 / (1 + np.exp(-(rng.normal(0, 1, 2000) - 3)))               # P('ok'), 'ok' the second class
    profile["prediction"]["score"] = score_reference(np.column_stack([1 - validation, validation]), index=0)
    records = [{"t": 300.0, "u": 10.0, "m": "L", "shift": 1}] * 8
    said = {}
    for day, shift in (("same", 0.0), ("riskier", 1.0)):
        monitor = LiveMonitor(profile, app="a", version="v1", replica="r1", window_s=600, export=False)
        try:
            for i in range(0, 800, 8):
                p_ok = 1 / (1 + np.exp(-(rng.normal(0, 1, 8) - 3 + shift)))
                monitor.observe(records, ["ok"] * 8, [[1 - p, p] for p in p_ok])
            said[day] = monitor.snapshot()["prediction"]
        finally:
            monitor.close()
    # (The answered classes, all 'ok' against the profile's 10/90 shares, are flagged either way: not the point.)
    assert said["same"]["score"]["n"] == 800 and said["same"]["score"]["flags"] == []
    assert not any(f.startswith("probability of") for f in said["same"]["flags"])
    # P('failure') = 1 - P('ok') is the profiled class (a cut-off's positive, index 0): its drift is flagged.
    assert said["riskier"]["score"]["psi"] > 0.2
    assert [f.split(" psi ")[0] for f in said["riskier"]["flags"] if f.startswith("probability")] == [
        "probability of 'failure'"], said["riskier"]


def test_counters_give_the_statistics_of_the_raw_values():
    """What a replica counts per request equals what jobs.drift computes over all the values at once (the
    monitor job's way): bins, missing, categories as the preprocessor matches them (3, 3.0 and "3" are one),
    unknown categories and prediction classes."""
    rng = np.random.default_rng(3)
    profile = _profile(rng)
    n = 500
    t = [None if i % 7 == 0 else float(v) for i, v in enumerate(rng.normal(303.0, 2.0, n))]
    u = [int(round(v)) if i % 4 == 0 else float(v) for i, v in enumerate(rng.normal(10.0, 2.0, n))]  # ints too
    m = [["L", "M", "H", "XL", None][i % 5] for i in range(n)]
    shift = [[1, 2.0, "3", 4, True][i % 5] for i in range(n)]    # 4 and true are categories training never saw
    records = [{"t": t[i], "u": u[i], "m": m[i], "shift": shift[i]} for i in range(n)]
    predictions = list(rng.choice(["failure", "ok"], n, p=[0.3, 0.7]))
    monitor = LiveMonitor(profile, app="a", version="v1", replica="r1", window_s=600, export=False)
    try:
        for i in range(0, n, 7):
            monitor.observe(records[i:i + 7], predictions[i:i + 7])
        got = monitor.snapshot()
    finally:
        monitor.close()
    assert got["enabled"] and got["n"] == n and got["skipped"] == 0
    for name, values in (("t", t), ("u", u)):
        want = drift.numeric_drift(profile["numeric"][name], values)
        for key in ("n", "counts", "psi", "chi2_p", "missing_rate"):
            assert got["features"][name][key] == pytest.approx(want[key]), (name, key)
    for name, values in (("m", m), ("shift", shift)):
        counts, missing = drift.count_categories(values)
        want = drift.categorical_drift(profile["categorical"][name], counts, 0, missing)
        for key in ("n", "psi", "chi2_p", "unknown_rate", "missing_rate"):
            assert got["features"][name][key] == pytest.approx(want[key]), (name, key)
    assert got["features"]["shift"]["unknown"] == 2 * n // 5
    want = drift.prediction_drift(profile["prediction"], predictions)
    assert {k: got["prediction"][k] for k in ("n", "psi", "p")} == pytest.approx(want)
    # t moved by 1.5 sd and one value in 7 is missing; m and shift have unseen categories; u did not move.
    assert set(got["flagged"]) == {"t", "m", "shift"}
    assert any("missing" in reason for reason in got["features"]["t"]["flags"])


def test_regression_predictions_are_counted_in_the_reference_bins():
    from jobs.profile import summarise
    rng = np.random.default_rng(5)
    ref = {k: v for k, v in summarise(rng.normal(100.0, 10.0, 400)).items() if k != "count"}
    profile = {"numeric": {}, "categorical": {}, "prediction": {"task": "regression", **ref}}
    predictions = rng.normal(130.0, 10.0, 200).tolist()
    monitor = LiveMonitor(profile, app="a", version="v1", replica="r1", window_s=600, export=False)
    try:
        for i in range(0, 200, 8):
            monitor.observe([{}] * len(predictions[i:i + 8]), predictions[i:i + 8])
        got = monitor.snapshot()["prediction"]
    finally:
        monitor.close()
    want = drift.numeric_drift(ref, predictions)
    assert list(got["counts"].values()) == want["counts"] and got["psi"] == pytest.approx(want["psi"])
    assert got["flags"] and got["flags"][0].startswith("psi")


def test_the_window_forgets_steps_older_than_it():
    window = _Window(size=3, window_s=100.0)
    window.add(1000.0, np.array([1, 0, 0]), rows=1)
    window.add(1055.0, np.array([0, 2, 0]), rows=2)
    counts, rows, start = window.total(1099.0)
    assert counts.tolist() == [1, 2, 0] and rows == 3 and start == 1000.0
    counts, rows, start = window.total(1000.0 + 100.0 + 100.0 / STEPS)      # the first step has left
    assert counts.tolist() == [0, 2, 0] and rows == 2 and start == 1050.0
    window.add(1105.0, np.array([0, 0, 5]), rows=5)                         # reuses the first step's row
    counts, rows, _ = window.total(1105.0)
    assert counts.tolist() == [0, 2, 5] and rows == 7
    assert window.total(1300.0)[1] == 0


def test_monitoring_that_is_off_says_why():
    settings = {"name": "a", "serve": {"monitor": {"enabled": True, "window_s": 60.0}}}
    old = SimpleNamespace(version="v0", profile=None)
    off = for_replica(old, settings, {"files": {}}, "r1")
    off.observe([{"t": 1.0}], ["ok"])
    body = off.snapshot()
    assert body["enabled"] is False and "profile.json" in body["reason"] and "retrain" in body["reason"]
    new = SimpleNamespace(version="v1", profile=_profile(np.random.default_rng(0)))
    settings["serve"]["monitor"]["enabled"] = False
    body = for_replica(new, settings, {"files": {}}, "r1").snapshot()
    assert body["enabled"] is False and "serve.monitor.enabled: false" in body["reason"]
    # Replica settings written before serve.monitor existed (a rollback to such a version): the defaults.
    on = for_replica(new, {"name": "a", "serve": {}}, {"files": {}}, "r1")
    try:
        assert on.enabled and on.window_s == 900.0
    finally:
        on.close()


# ---------------------------------------------------------------------------------------------- real Serve

@pytest.fixture(scope="module")
def held_out_records(served_bundle, ray_session) -> list[dict]:
    """The bundle's own test split (the rows training never saw), as a client sends them."""
    from jobs.ingest import TEST, ingest
    from jobs.spec import load_spec

    spec = load_spec(served_bundle / "spec.yaml")
    df = ingest(spec.data, progress=lambda *_: None).split(TEST).to_pandas()
    return [{k: (None if v != v else (v.item() if hasattr(v, "item") else v)) for k, v in r.items()}
            for r in df[_features(served_bundle)].to_dict("records")]


def _features(bundle) -> list[str]:
    return [f["name"] for f in json.loads((bundle / "schema.json").read_text())["features"]]


def shifted(records: list[dict]) -> list[list[dict]]:
    """The held-out rows, shifted: air_temp_k offset by 3 standard deviations, a machine type training never
    saw in every third record, rpm left out of every other request. Returned as the requests to send."""
    temps = np.array([r["air_temp_k"] for r in records if r["air_temp_k"] is not None])
    offset = 3 * float(temps.std())
    out = []
    for i, r in enumerate(records):
        r = dict(r)
        if r["air_temp_k"] is not None:
            r["air_temp_k"] += offset
        if i % 3 == 0:
            r["machine_type"] = "XL"
        out.append(r)
    requests = [out[i:i + PER_REQUEST] for i in range(0, len(out), PER_REQUEST)]
    for k in range(0, len(requests), 2):
        requests[k] = [{f: v for f, v in r.items() if f != "rpm"} for r in requests[k]]
    return requests


@pytest.fixture(scope="module")
def monitored(served_bundle, serve_instance, held_out_records):
    """Two apps of the same bundle, one replica each (a replica counts its own traffic): one sent the held-out
    split, one the same rows shifted (behind a token). Returns {kind: (Served, rows sent)}."""
    plain = [held_out_records[i:i + PER_REQUEST] for i in range(0, len(held_out_records), PER_REQUEST)]
    traffic = {"held-out": plain, "shifted": shifted(held_out_records)}
    apps = {}
    try:
        for kind, requests in traffic.items():
            served = deploy_app(served_bundle, f"monitor-{kind}", serve_instance,
                                token=TOKEN if kind == "shifted" else None,
                                autoscaling={"min_replicas": 1, "max_replicas": 1})
            apps[kind] = (served, sum(len(r) for r in requests))
            for records in requests:
                status, _, out = call(served.url, "POST", "/predict",
                                      json.dumps({"records": records}).encode(),
                                      {"Content-Type": "application/json", **AUTH})
                assert status == 200, out
        yield apps
    finally:
        for served, _ in apps.values():
            release_app(served.name)


@pytest.mark.slow
def test_get_monitor_flags_exactly_the_shifted_features(monitored, served_bundle):
    assert (served_bundle / "profile.json").is_file()
    bodies = {}
    assert call(monitored["shifted"][0].url, "GET", "/monitor")[0] == 401      # the token guards it too
    for kind, (served, sent) in monitored.items():
        status, _, body = call(served.url, "GET", "/monitor", headers=AUTH)
        assert status == 200, body
        assert body["enabled"] and body["n"] == sent and body["judged"], body
        assert body["model"]["version"] == served.version
        bodies[kind] = body
    assert bodies["held-out"]["flagged"] == [], {n: s["flags"] for n, s in bodies["held-out"]["features"].items()}
    features = bodies["shifted"]["features"]
    assert set(bodies["shifted"]["flagged"]) == SHIFTED, {n: s["flags"] for n, s in features.items()}
    assert any(reason.startswith("psi") for reason in features["air_temp_k"]["flags"])
    assert any(reason.startswith("unknown categories") for reason in features["machine_type"]["flags"])
    assert any(reason.startswith("missing") for reason in features["rpm"]["flags"])
    assert features["rpm"]["missing_rate"] == pytest.approx(0.5, abs=0.1)


def _scrape(ray_session) -> dict[tuple[str, str], dict]:
    """Every node's Ray metrics agent (ray.nodes(): MetricsExportPort), parsed: {(metric, app): {labels: value}}
    for trainyard's gauges, keyed within an app by feature (or stat)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[tuple[str, str], dict] = {}
    for node in ray_session.nodes():
        if not node["Alive"] or node.get("MetricsExportPort", -1) <= 0:
            continue
        url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name.startswith("ray_trainyard_") and "app" in s.labels:
                    key = s.labels.get("feature", "") + ("/" + s.labels["stat"] if "stat" in s.labels else "")
                    out.setdefault((s.name, s.labels["app"]), {})[key] = s.value
    return out


@pytest.mark.slow
def test_prometheus_gauges_flag_exactly_the_shifted_features(monitored, ray_session, served_bundle):
    """The gauges reach Prometheus through Ray's metrics agent (which the embedded Ray runs, dashboard or not),
    every ~10 s: wait until each app's window gauge counts every row sent."""
    names = _features(served_bundle)
    apps = {kind: served.name for kind, (served, _) in monitored.items()}
    deadline = time.monotonic() + 90
    while True:
        metrics = _scrape(ray_session)
        done = all(metrics.get(("ray_trainyard_monitor_window_records", app), {}).get("") == sent
                   and len(metrics.get(("ray_trainyard_feature_flagged", app), {})) == len(names)
                   for app, (_, sent) in zip(apps.values(), monitored.values()))
        if done or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert done, {k: v for k, v in metrics.items() if k[1] in apps.values()}
    flags = {kind: {f for f, v in metrics[("ray_trainyard_feature_flagged", app)].items() if v == 1}
             for kind, app in apps.items()}
    assert flags == {"held-out": set(), "shifted": SHIFTED}
    shifted_app = apps["shifted"]
    drift_ = metrics[("ray_trainyard_feature_drift", shifted_app)]
    assert set(drift_) == {f"{n}/{stat}" for n in names for stat in ("psi", "p")}
    assert drift_["air_temp_k/psi"] >= 0.2 and drift_["air_temp_k/p"] < 1e-3
    assert metrics[("ray_trainyard_feature_missing_rate", shifted_app)]["rpm"] == pytest.approx(0.5, abs=0.1)
    unknown = metrics[("ray_trainyard_unknown_category_rate", shifted_app)]
    assert unknown["machine_type"] == pytest.approx(1 / 3, abs=0.05) and unknown["shift"] == 0
    assert set(metrics[("ray_trainyard_prediction_drift", shifted_app)]) == {"/psi", "/p", "/flagged"}
    # Numbers past their training range: a rate per numeric feature, the air temperature (+3 sd) past it in part.
    outside = metrics[("ray_trainyard_outside_range_rate", shifted_app)]
    assert outside["air_temp_k"] > 0.01 and set(outside) < set(names) and "machine_type" not in outside


def test_a_profile_without_features_holds_no_record_while_counting_predictions():
    """An image bundle's profile has predictions only: the records (decoded pixel arrays) are not kept until the
    monitor's thread folds them, yet every prediction is counted."""
    import weakref

    import numpy as np

    from serving.monitor import LiveMonitor

    profile = {"numeric": {}, "categorical": {},
               "prediction": {"task": "classification", "classes": ["bad", "good"], "shares": [0.5, 0.5]}}
    monitor = LiveMonitor(profile, app="a", version="v1", replica="r1", window_s=600, export=False)
    try:
        class Pixels(np.ndarray):       # ndarray itself takes no weak reference
            pass

        image = np.zeros((64, 64), np.uint8).view(Pixels)
        alive = weakref.ref(image)
        monitor.observe([{"image": image}], ["good"])
        del image
        assert alive() is None, "the monitor kept the request's image"
        monitor.observe([{}] * 3, ["bad", "good", "good"])
        assert monitor.snapshot()["prediction"]["counts"] == {"bad": 1, "good": 3}
    finally:
        monitor.close()


def test_requests_waiting_to_be_counted_leave_nothing_for_the_garbage_collector_to_track():
    """What observe() keeps until the monitor's thread folds it (up to a second) is untracked by the GC within two
    collections. Kept as the request's own dicts and lists (as before), ~1,200 requests a second survived into
    the oldest generation, whose growth sets off full collections of the replica's whole heap (150-210 ms
    pauses measured for the same pattern in the prediction logger)."""
    import gc

    profile = _profile(np.random.default_rng(1))
    monitor = LiveMonitor(profile, app="a", version="v1", replica="r1", window_s=600, export=False)
    body = json.dumps({"records": [{"t": 301.5, "u": 9, "m": "L", "shift": "2"}, {"t": None, "m": "XL"}]})
    try:
        with monitor._lock:          # the thread folds nothing meanwhile: all 1,000 requests stay queued
            gc.collect()
            tracked = len(gc.get_objects())
            for _ in range(1000):
                monitor.observe(json.loads(body)["records"], ["ok", "failure"])
            gc.collect()
            gc.collect()
            assert len(gc.get_objects()) - tracked < 100      # the request's dicts and lists kept: ~3,000
        got = monitor.snapshot()
    finally:
        monitor.close()
    assert got["n"] == 2000 and got["features"]["m"]["unknown"] == 1000
    assert got["features"]["t"]["missing_rate"] == 0.5 and got["prediction"]["counts"] == {"failure": 1000, "ok": 1000}


def test_a_failing_monitor_says_so_in_the_log_and_blanks_its_gauges():
    """An error on the monitor's thread stops monitoring, never the replica: it is logged with its traceback,
    /monitor says why, and every gauge set so far reads NaN (it went on exporting the last window's values as
    if current, and the error was swallowed)."""
    import logging
    import math

    class Kept(logging.Handler):
        def __init__(self):
            super().__init__(logging.ERROR)
            self.records = []

        def emit(self, record):
            self.records.append(record)

    kept = Kept()
    logging.getLogger("ray.serve").addHandler(kept)      # where a replica's log goes (Serve captures it)
    profile = _profile(np.random.default_rng(2))
    monitor = LiveMonitor(profile, app="a", version="v1", replica="r1", window_s=600, export=True)
    try:
        monitor.observe([{"t": 300.0, "u": 10.0, "m": "L", "shift": "1"}] * 60, ["ok"] * 60)
        monitor._fold()
        monitor.stats(export=True)
        assert monitor.gauges.series[("trainyard_monitor_window_records", ())][1] == 60
        monitor.observe([{"t": "not a number"}], ["ok"])       # what the request checks never let through
        # The thread ends once its stop is complete (logged, noted, gauges blanked). `enabled` turns False before
        # the gauges are blanked, so waiting on it raced with blank() on a loaded machine (pytest-xdist, issue 17).
        monitor._thread.join(timeout=10)
        body = monitor.snapshot()
    finally:
        monitor.close()
        logging.getLogger("ray.serve").removeHandler(kept)
    assert body["enabled"] is False and body["reason"].startswith("monitoring stopped: ValueError")
    assert any("live monitoring of a (version v1) stopped" in r.getMessage() and r.exc_info for r in kept.records)
    assert monitor.gauges.series and all(math.isnan(value) for _, value in monitor.gauges.series.values())
