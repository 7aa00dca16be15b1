"""`trainyard monitor` over real Parquet prediction logs with the session's real Ray (Ray Data).

The logs are written here with pyarrow in the format `serve.log` writes (request_id, record, time, model_version,
prediction, feature.<name>): deterministic and fast, no server needed; the tests of the logger itself check
that a served app writes that format. Traffic comes from the telemetry generator with other seeds than the
training data: rows the model never saw, from the same distribution (in-distribution), or shifted on purpose.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.fitted import canonical
from tests.serving_fixtures import served_bundle  # noqa: F401  (a fixture)
from trainyard import cli

DAY0 = datetime(2026, 11, 2, tzinfo=timezone.utc)
SHIFTED = {"air_temp_k", "machine_type", "torque_nm"}


def traffic(rows: int, seed: int) -> pd.DataFrame:
    """Telemetry rows a client would send (id and label dropped), and the true label beside them."""
    from telemetry import generate
    return generate(rows, seed=seed).drop(columns=["machine_id"])


def write_log(folder: Path, bundle_dir: Path, rows: pd.DataFrame, day: int, name: str,
              records_per_request: int = 1) -> Path:
    """One log file as serve.log writes it: the bundle's predictions for `rows`, spread over day `day`."""
    from jobs.bundle import load

    bundle = load(bundle_dir)
    pre = bundle.preprocessor
    features = rows.drop(columns=["failure"])
    n = len(rows)
    times = [DAY0 + timedelta(days=day, seconds=int(s)) for s in np.linspace(0, 86000, n)]
    columns = {
        "request_id": pa.array([f"{name}-{i // records_per_request}" for i in range(n)], pa.string()),
        "record": pa.array([i % records_per_request for i in range(n)], pa.int32()),
        "time": pa.array(times, pa.timestamp("ms", tz="UTC")),
        "model_version": pa.array([bundle.version] * n, pa.string()),
        "prediction": pa.array(bundle.predict_frame(features)["predictions"], pa.string()),
    }
    for s in pre.numeric:
        columns[f"feature.{s.name}"] = pa.array(features[s.name].astype("float64"), pa.float64(), from_pandas=True)
    for s in pre.categorical:
        columns[f"feature.{s.name}"] = pa.array([canonical(v) for v in features[s.name]], pa.string())
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"part-{(DAY0 + timedelta(days=day)):%Y%m%dT%H%M%S}-r1-{name}.parquet"
    pq.write_table(pa.table(columns), path)
    return path


def monitor(capsys, bundle_dir, logs, out, *extra) -> tuple[int, str, str, dict]:
    code = cli.main(["monitor", str(bundle_dir), "--logs", str(logs), "--out", str(out), *extra])
    captured = capsys.readouterr()
    report = json.loads((Path(out) / "drift.json").read_text()) if (Path(out) / "drift.json").is_file() else {}
    return code, captured.out, captured.err, report


def test_in_distribution_flags_nothing_and_a_truncated_file_is_skipped(served_bundle, tmp_path, capsys):  # noqa: F811
    logs = tmp_path / "logs" / "app"
    write_log(logs, served_bundle, traffic(400, seed=11), day=0, name="a")
    good = write_log(logs, served_bundle, traffic(400, seed=12), day=1, name="b")
    cut = logs / "part-20261103T120000-r2-cut.parquet"       # a file cut short (a copy, a full disk)
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])

    code, out, err, report = monitor(capsys, served_bundle, tmp_path / "logs", tmp_path / "mon")

    assert code == 0, out + err
    assert out.strip().splitlines()[-1].startswith("ok: 800 rows in 2 window(s)")
    assert f"{cut}: not a complete Parquet file" in out + err
    assert report["verdict"] == "ok" and report["rows"] == 800 and len(report["skipped"]) == 1
    assert [w["flagged"] for w in report["windows"]] == [[], []]
    assert all(w["judged"] and not w["prediction"]["flags"] for w in report["windows"])
    assert (tmp_path / "mon" / "report.html").read_text().count("data:image/png;base64,") >= 1


def test_shifted_traffic_flags_exactly_the_shifted_features(served_bundle, tmp_path, capsys):  # noqa: F811
    logs = tmp_path / "logs"
    write_log(logs, served_bundle, traffic(300, seed=21), day=0, name="before")
    shifted = traffic(300, seed=22)
    reference = traffic(2000, seed=1)
    shifted["air_temp_k"] += 3 * reference["air_temp_k"].std()           # a sensor recalibrated
    shifted.loc[shifted.index[::3], "machine_type"] = "X"                 # a new machine type
    shifted.loc[shifted.index[::2], "torque_nm"] = np.nan                 # a sensor dropping out half the time
    write_log(logs, served_bundle, shifted, day=1, name="after")

    code, out, err, report = monitor(capsys, served_bundle, logs, tmp_path / "mon")

    assert code == 3, out + err
    last = out.strip().splitlines()[-1]
    assert last.startswith("retrain: 1 window(s)") and all(name in last for name in SHIFTED), last
    before, after = report["windows"]
    assert before["flagged"] == [] and set(after["flagged"]) == SHIFTED
    assert after["features"]["machine_type"]["unknown_values"] == {"X": 100}
    assert after["features"]["torque_nm"]["missing_rate"] == pytest.approx(0.5, abs=0.02)
    assert after["features"]["air_temp_k"]["ks_p"] < 1e-6
    html = (tmp_path / "mon" / "report.html").read_text()
    assert all(f"<h3>{name}: reference vs {after['start']}" in html for name in SHIFTED)


def test_labels_reveal_the_mislabelled_window(served_bundle, tmp_path, capsys):  # noqa: F811
    logs, labels = tmp_path / "logs", []
    for day in range(3):
        rows = traffic(300, seed=31 + day)
        path = write_log(logs, served_bundle, rows, day=day, name=f"d{day}", records_per_request=2)
        truth = rows["failure"].to_numpy()
        if day == 1:                                  # the labels of one day are wrong: accuracy falls
            truth = np.where(truth == "ok", "failure", "ok")
        logged = pq.read_table(path, columns=["request_id", "record"]).to_pandas()
        labels.append(logged.assign(label=truth))
    labels.append(pd.DataFrame({"request_id": ["never-logged"], "record": [0], "label": ["ok"]}))
    pd.concat(labels).sample(frac=1.0, random_state=0).to_parquet(tmp_path / "labels.parquet", index=False)

    code, out, err, report = monitor(capsys, served_bundle, logs, tmp_path / "mon",
                                     "--labels", str(tmp_path / "labels.parquet"))

    assert code == 3, out + err
    assert [bool(w["metrics"]["flags"]) for w in report["windows"]] == [False, True, False], report["windows"]
    assert [w["metrics"]["n"] for w in report["windows"]] == [300, 300, 300]
    assert all(w["flagged"] == [] for w in report["windows"])
    assert "warning: 1 of 901 labels" in out + err
    assert "accuracy" in out.strip().splitlines()[-1] and report["windows"][1]["start"] in out.strip().splitlines()[-1]


def test_bad_input_is_named(served_bundle, tmp_path, capsys):  # noqa: F811
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err, _ = monitor(capsys, served_bundle, empty, tmp_path / "mon")
    assert code == 2 and "no readable prediction logs" in err and str(empty) in err

    logs = tmp_path / "logs"
    path = write_log(logs, served_bundle, traffic(60, seed=41), day=0, name="x")
    odd = logs / "part-odd.parquet"
    pq.write_table(pq.read_table(path).drop_columns(["prediction"]), odd)
    code, _, err, _ = monitor(capsys, served_bundle, logs, tmp_path / "mon")
    assert code == 2 and f"{odd}" in err and "'prediction' is missing" in err, err

    odd.unlink()
    labels = tmp_path / "labels.csv"
    labels.write_text("request_id,truth\nx-0,ok\n")
    code, _, err, _ = monitor(capsys, served_bundle, logs, tmp_path / "mon", "--labels", str(labels))
    assert code == 2 and f"--labels {labels}: column 'label' is missing" in err, err

    code, _, err, _ = monitor(capsys, served_bundle, logs, tmp_path / "mon", "--window", "1fortnight")
    assert code == 2 and "--window" in err, err


def test_regression_windows_without_ray(tmp_path):
    """The summaries, their merge and the statistics of a regression model's logs, run in-process (no Ray):
    several files per window merge into exact counts and one uniform sample; the realised R² comes from the
    joined labels, and predictions shifted by 3 standard deviations are flagged while the inputs are not."""
    import pyarrow.fs as pafs

    from jobs import drift
    from jobs.monitor import reference_metric, window_stats
    from jobs.monitor_summary import SAMPLE_K, Plan, merge, sample_rows, summarise_files
    from jobs.profile import summarise as reference_of

    rng = np.random.default_rng(0)
    train_x, train_y = rng.normal(0, 1, 5000), rng.normal(10, 2, 5000)
    ref_x, ref_y = reference_of(train_x), reference_of(train_y)
    profile = {"numeric": {"x": {**ref_x, "missing_rate": 0.0}}, "categorical": {},
               "prediction": {"task": "regression", **{k: ref_y[k] for k in ("edges", "shares", "quantiles")}}}
    paths, labels = [], []
    for i, (day, shift) in enumerate([(0, 0.0), (0, 0.0), (1, 6.0)]):
        n = 4000
        truth = rng.normal(10, 2, n)
        predicted = truth + rng.normal(0, 0.5, n) + shift
        ids = [f"f{i}-{j}" for j in range(n)]
        path = tmp_path / f"part-{i}.parquet"
        pq.write_table(pa.table({
            "request_id": pa.array(ids, pa.string()), "record": pa.array(np.zeros(n, np.int32)),
            "time": pa.array([DAY0 + timedelta(days=day, seconds=j) for j in range(n)], pa.timestamp("ms", tz="UTC")),
            "model_version": pa.array(["v1"] * n), "prediction": pa.array(predicted),
            "feature.x": pa.array(rng.normal(0, 1, n))}), path)
        paths.append(str(path))
        labels.append(pa.table({"request_id": pa.array(ids), "record": pa.array(np.zeros(n, np.int32)),
                                "label": pa.array(truth)}))
    plan = Plan(86_400_000, {"x": ref_x["edges"]}, {}, "regression", None, ref_y["edges"])
    columns = ["request_id", "record", "time", "prediction", "feature.x"]
    parts = summarise_files(pa.table({"path": paths}), plan, columns, pafs.LocalFileSystem(), pa.concat_tables(labels))
    windows = [json.loads(merge(group)["summary"][0]) for _, group in parts.to_pandas().groupby("window")]

    first, second = windows
    assert first["n"] == 8000 and sum(first["numeric"]["x"]["counts"]) == 8000
    assert len(sample_rows(first["numeric"]["x"]["sample"])) == SAMPLE_K
    reference = reference_metric("regression", {"test": {"r2": 0.93}})
    stats = [window_stats(w, profile, drift.Thresholds(), 1, reference) for w in windows]
    assert [s["flagged"] for s in stats] == [[], []]
    assert [bool(s["prediction"]["flags"]) for s in stats] == [False, True]
    assert stats[0]["metrics"]["n"] == 8000 and stats[0]["metrics"]["r2"] == pytest.approx(0.94, abs=0.02)
    assert stats[0]["metrics"]["flags"] == [] and stats[1]["metrics"]["flags"]     # +6 on every prediction: R² < 0


def test_labels_without_a_record_column_join_on_record_0(tmp_path):
    """Ray-free: `record` is optional in a labels file (0 when absent); the table read_labels returns has the
    column order the summaries cast to (request_id, record, label), so the cast no longer fails on it."""
    import pyarrow as pa

    from jobs.monitor import read_labels

    (tmp_path / "labels.csv").write_text("request_id,label\nr1,ok\nr2,failure\n")
    labels = read_labels(str(tmp_path / "labels.csv"), ["failure", "ok"])
    assert labels.column_names == ["request_id", "record", "label"]
    logged = pa.table({"request_id": ["r1", "r2"], "record": pa.array([0, 0], pa.int32())})
    cast = labels.cast(pa.schema([logged.schema.field("request_id"), logged.schema.field("record"),
                                  labels.schema.field("label")]))
    joined = logged.join(cast, keys=["request_id", "record"]).sort_by("request_id")
    assert joined.column("label").to_pylist() == ["ok", "failure"]
