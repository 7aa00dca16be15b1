"""`trainyard monitor` over real Parquet prediction logs with the session's real Ray (Ray Data).

The logs are written here with pyarrow in the format `serve.log` writes (request_id, record, time, model_version,
prediction, feature.<name>): deterministic and fast, no server needed; the tests of the logger itself check
that a served app writes that format. Traffic comes from the telemetry generator with other seeds than the
training data: rows the model never saw, from the same distribution (in-distribution), or shifted on purpose.
"""
from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

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
    """One log file as serve.log writes it: the bundle's predictions (and probabilities) for `rows`, spread over
    day `day`."""
    from jobs.bundle import load

    bundle = load(bundle_dir)
    pre = bundle.preprocessor
    features = rows.drop(columns=["failure"])
    n = len(rows)
    times = [DAY0 + timedelta(days=day, seconds=int(s)) for s in np.linspace(0, 86000, n)]
    answers = bundle.predict_frame(features)
    columns = {
        "request_id": pa.array([f"{name}-{i // records_per_request}" for i in range(n)], pa.string()),
        "record": pa.array([i % records_per_request for i in range(n)], pa.int32()),
        "time": pa.array(times, pa.timestamp("ms", tz="UTC")),
        "model_version": pa.array([bundle.version] * n, pa.string()),
        "prediction": pa.array(answers["predictions"], pa.string()),
        "probabilities": pa.array(answers["probabilities"], pa.list_(pa.float32())),
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
    report = (json.loads((Path(out) / "drift.json").read_text(), parse_constant=_not_json)
              if (Path(out) / "drift.json").is_file() else {})
    return code, captured.out, captured.err, report


def _not_json(constant: str):
    raise AssertionError(f"drift.json holds {constant}, which is not JSON (strict readers refuse it)")


def test_in_distribution_flags_nothing_and_a_truncated_file_is_skipped(served_bundle, tmp_path, capsys):  # noqa: F811
    logs = tmp_path / "logs" / "app"
    write_log(logs, served_bundle, traffic(400, seed=11), day=0, name="a")
    good = write_log(logs, served_bundle, traffic(400, seed=12), day=1, name="b")
    cut = logs / "part-20261103T120000-r2-cut.parquet"       # a file cut short (a copy, a full disk)
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    # What a SIGKILLed logging replica leaves: its hidden, unfinished file, which the monitor never reads.
    (logs / ".part-20261103T130000-r3-000001.parquet.tmp").write_bytes(good.read_bytes()[:100])
    few = traffic(10, seed=13).assign(rpm=np.nan)              # a third day: 10 rows, rpm never sent
    write_log(logs, served_bundle, few, day=2, name="c")
    other = write_log(logs, served_bundle, traffic(10, seed=14), day=1, name="d")
    pq.write_table(pq.read_table(other).drop_columns(["feature.rpm"]), other)   # by a version without rpm
    (tmp_path / "logs" / "backup").mkdir()      # a copy of a file (a backup): read once
    (tmp_path / "logs" / "backup" / good.name).write_bytes(good.read_bytes())
    # A copy whose footer reads and whose pages do not: left out by the task that reads it, named.
    scrambled = bytearray(good.read_bytes())
    footer = int.from_bytes(scrambled[-8:-4], "little") + 8
    scrambled[4:len(scrambled) - footer] = bytes(len(scrambled) - footer - 4)
    (logs / "part-20261103T140000-r4-scrambled.parquet").write_bytes(bytes(scrambled))

    code, out, err, report = monitor(capsys, served_bundle, tmp_path / "logs", tmp_path / "mon")

    assert code == 0, out + err
    assert out.strip().splitlines()[-1].startswith("ok: 820 rows in 3 window(s)")
    assert "; 1 window(s) under monitor.min_rows not judged" in out.strip().splitlines()[-1]
    assert "(2 unreadable file(s) skipped)" in out.strip().splitlines()[-1]
    assert f"{cut}: not a complete Parquet file" in out + err and "1 open journal(s) under" in out + err
    assert f"{logs / 'part-20261103T140000-r4-scrambled.parquet'}: its data cannot be read (" in out + err
    assert f"left out, the same name, size and footer as another: {tmp_path / 'logs' / 'backup'}" in out + err
    # (Said from the footers, before the scrambled file's pages were found unreadable.)
    assert ("[monitor] note: rpm is not in 1 of 5 log file(s) (10 of 1,220 rows, served by a version that did not "
            "take it?): it is judged on the 1,210 rows that hold it") in out
    assert report["verdict"] == "ok" and report["rows"] == 820 and len(report["skipped"]) == 2
    assert report["windows"][1]["n"] == 410 and report["windows"][1]["features"]["rpm"]["n"] == 400
    assert [w["flagged"] for w in report["windows"]] == [[], [], []]
    assert all(w["judged"] and not w["prediction"]["flags"] for w in report["windows"][:2])
    # The bundle's profile holds its validation probabilities, which the logged ones are judged against: in
    # distribution, nothing flagged.
    assert [w["prediction"]["score"]["n"] for w in report["windows"]] == [400, 410, 10]
    # Under min_rows the third is not judged; its rpm statistics have no value: null in drift.json, never NaN.
    assert not report["windows"][2]["judged"] and report["windows"][2]["features"]["rpm"]["psi"] is None
    assert (tmp_path / "mon" / "report.html").read_text().count("data:image/png;base64,") >= 1
    # Labels that match no logged record judged nothing: the last line says so ("ok" alone read as metrics that
    # held), and ids that differ in case alone are told so.
    (tmp_path / "labels.csv").write_text("request_id,record,label\nA-0,0,ok\nA-1,0,ok\n")
    code, out, err, report = monitor(capsys, served_bundle, logs, tmp_path / "mon", "--labels",
                                     str(tmp_path / "labels.csv"))
    assert code == 0 and report["labels_given"] == 2 and report["labels_joined"] == 0, out + err
    assert out.strip().splitlines()[-1].endswith("; none of the 2 labels matched a logged record, so no window was "
                                                 "judged on them"), out
    assert "they differ from the logged ids in case alone ('A-0' is logged as 'a-0')" in out + err


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
    # Which way it moved: the window's median against training's (+3 sd: about 6 K up).
    [flag] = [f for f in after["features"]["air_temp_k"]["flags"] if f.startswith("psi ")]
    now, then = (float(v) for v in flag.split("; median ")[1].removesuffix(" in training").split(" vs "))
    assert 4 < now - then < 8, flag
    html = (tmp_path / "mon" / "report.html").read_text()
    assert all(f"<h3>{name}: reference vs {after['start']}" in html for name in SHIFTED)
    # Run again into the same folder: the earlier report is replaced, and that is said with its time.
    code, out, _, _ = monitor(capsys, served_bundle, logs, tmp_path / "mon")
    assert code == 3 and f"[monitor] wrote {tmp_path / 'mon' / 'drift.json'} and " in out
    assert "(replacing the report written " in out and " there; give each run its own --out to keep both)" in out
    # The sensor fixed, a day of traffic as trained on: a daily cron job with --since judges that day alone,
    # where over the whole logs it would say "retrain" for the handled window every day from now on.
    write_log(logs, served_bundle, traffic(300, seed=23), day=2, name="fixed")
    code, out, err, report = monitor(capsys, served_bundle, logs, tmp_path / "mon", "--since", "2026-11-04")
    assert code == 0, out + err
    # The two earlier days' files are left unread (their footers say every row is earlier).
    assert ("[monitor] --since 2026-11-04: 600 earlier row(s) left out (600 in log files wholly before it, not "
            "read)") in out and "[monitor] 1 log file(s), 300 rows" in out
    assert out.strip().splitlines()[-1].startswith("ok: 300 rows since 2026-11-04T00:00:00Z in 1 window(s)")
    assert [w["start"] for w in report["windows"]] == ["2026-11-04T00:00Z"] and report["rows_before_since"] == 600
    code, out, err, _ = monitor(capsys, served_bundle, logs, tmp_path / "mon", "--since", "2026-11-09T06:00")
    # A quiet day is no bad input: exit 4 of its own, for a cron job to tell from a broken one.
    assert code == 4 and out.strip().splitlines()[-1].startswith("no traffic: --since: every one of the 900 logged "
                                                                 "rows under ") and \
        " is earlier than 2026-11-09T00:00Z (the window that holds it): no traffic to judge (a quiet period, or a " \
        "server that stopped logging); exit 4" in out and not err, out + err
    # Inside a window: the rows of that window's earlier part are judged with it (windows are whole).
    code, out, err, report = monitor(capsys, served_bundle, logs, tmp_path / "mon", "--since", "2026-11-04T12:00")
    assert code == 0 and [w["start"] for w in report["windows"]] == ["2026-11-04T00:00Z"], out + err


def test_by_a_kept_field_finds_the_one_site_whose_sensor_went_wrong(served_bundle, tmp_path, capsys):  # noqa: F811
    """`--by site` (a field serve.log.keep wrote): each site's traffic judged apart, per window, with every site's
    tests in the p-value correction. One site of eight whose air temperature sensor reads 3 sd high on the second
    day is named, with the feature and the window; the other sites and days are not."""
    logs = tmp_path / "logs"
    reference = traffic(2000, seed=1)
    sites = [f"S-{i}" for i in range(8)]
    for day in (0, 1):
        rows = traffic(800, seed=31 + day)
        site = np.array(sites * 100)
        if day == 1:
            rows.loc[site == "S-3", "air_temp_k"] += 3 * reference["air_temp_k"].std()
        path = write_log(logs, served_bundle, rows, day=day, name=f"d{day}")
        pq.write_table(pq.read_table(path).append_column("keep.site", pa.array(site)), path)

    code, out, err, report = monitor(capsys, served_bundle, logs, tmp_path / "mon", "--by", "site")
    # The exit code is the whole traffic's (a source may always differ from it); the sites are said beside.
    assert code == (3 if any(w["flagged"] for w in report["windows"]) else 0), out + err
    assert "[monitor] summarised 1,600 rows into 2 window(s) in " in out            # not 18: the sites' apart
    assert "[monitor] by site: 8 of 8 value(s) judged (the most rows: 1,600 of 1,600 rows, 100%); 1 crossed a " \
           "threshold: S-3" in out, out
    assert "[monitor] 2026-11-03T00:00Z, site S-3: 100 rows, flagged: air_temp_k (psi " in out
    by = report["by"]
    assert by["field"] == "site" and sorted(by["judged"]) == sites and by["rows_without"] == 0
    flagged = {(v, w["start"]) for v, ws in by["windows"].items() for w in ws if w["flagged"]}
    assert flagged == {("S-3", "2026-11-03T00:00Z")}, flagged
    assert all(len(ws) == 2 and all(w["n"] == 100 and w["judged"] for w in ws) for ws in by["windows"].values())
    assert "|| by site: 1 value(s) crossed a threshold (not in the exit code): 2026-11-03T00:00Z, site S-3: " \
           "air_temp_k (psi " in out.strip().splitlines()[-1]
    # The report shows the sites too: a cell per site and window, S-3's second day red with its reason, and
    # S-3's air temperature against the reference.
    page = (tmp_path / "mon" / "report.html").read_text()
    assert "<h2>By site: 1 of 8 value(s) crossed a threshold</h2>" in page
    row = re.search(r"<tr><td>S-3</td>(.*?)</tr>", page).group(1)
    assert re.fullmatch(r"<td class='' title=''>100</td><td class='bad' title='air_temp_k \(psi [^']*'>100</td>",
                        row), row
    assert page.count("<td class='bad'") - page.split("<h2>By site")[0].count("<td class='bad'") == 1
    assert "<h3>site S-3, air_temp_k: reference vs 2026-11-03T00:00Z</h3>" in page
    assert "alt='S-3: air_temp_k' src='data:image/png;base64," in page
    # By a category feature: that feature is no finding within its own values (each holds one), nor are the
    # other features of traffic as trained on.
    code, out, err, report = monitor(capsys, served_bundle, logs, tmp_path / "mon", "--by", "machine_type")
    assert all(not w["features"]["machine_type"]["flags"] for ws in report["by"]["windows"].values() for w in ws)
    assert not any(w["flagged"] for w in report["by"]["windows"][report["by"]["judged"][0]][:1]), report["by"]
    # Asked of what the logs lack, or of a number: said before Ray starts, with what there is.
    code, _, err, _ = monitor(capsys, served_bundle, logs, tmp_path / "mon", "--by", "sight")
    assert code == 2 and "--by sight: the logs hold no field 'sight' (did you mean 'site'?). Fields kept in " \
                         "them: site" in err and "category features: machine_type" in err, err
    code, _, err, _ = monitor(capsys, served_bundle, logs, tmp_path / "mon", "--by", "rpm")
    assert code == 2 and "--by rpm: rpm is a number" in err, err


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
    # An earlier version's file, from before probabilities were logged, its rows labelled too.
    older_rows = traffic(20, seed=39)
    older = write_log(logs, served_bundle, older_rows, day=2, name="older")
    table = pq.read_table(older).drop_columns(["probabilities"])
    pq.write_table(table.set_column(table.column_names.index("model_version"), "model_version",
                                    pa.array(["earlier"] * 20)), older)
    labels.append(table.select(["request_id", "record"]).to_pandas().assign(label=older_rows["failure"].to_numpy()))
    pd.concat(labels).sample(frac=1.0, random_state=0).to_parquet(tmp_path / "labels.parquet", index=False)

    code, out, err, report = monitor(capsys, served_bundle, logs, tmp_path / "mon",
                                     "--labels", str(tmp_path / "labels.parquet"))

    assert code == 3, out + err
    assert [bool(w["metrics"]["flags"]) for w in report["windows"]] == [False, True, False], report["windows"]
    assert [w["metrics"]["n"] for w in report["windows"]] == [300, 300, 300]
    # The logged probabilities give the realised ROC-AUC: near the test split's on true labels, and below it by
    # as much as flipping every label takes (1 - AUC) on the wrong day, which is flagged.
    test_auc = json.loads((served_bundle / "metrics.json").read_text())["test"]["auc"]
    realised = [w["metrics"]["auc"] for w in report["windows"]]
    assert report["reference_auc"] == pytest.approx(test_auc)
    assert realised[1] == pytest.approx(1 - realised[0], abs=0.1) and realised[1] < test_auc - 0.05, realised
    assert all(abs(realised[d] - test_auc) < 0.1 for d in (0, 2)), (realised, test_auc)
    assert any(f.startswith("auc ") for f in report["windows"][1]["metrics"]["flags"])
    # The report's red metric cell carries its reasons (a red "accuracy 0.847; auc 0.866" hid the one that flagged).
    html = (tmp_path / "mon" / "report.html").read_text()
    assert "title='accuracy " in html and html.count("class='bad' title='") >= 1
    assert all(w["flagged"] == [] for w in report["windows"])
    assert "warning: 1 of 921 labels" in out + err
    assert ("[monitor] note: 20 labelled row(s) were answered by other version(s) than "
            f"{report['version']}: they are left out of the realised metrics") in out
    assert ("[monitor] note: 1 of 4 log file(s) (20 rows) hold no probabilities (written before they were logged): "
            "the realised ROC-AUC is of the rest") in out
    assert "accuracy" in out.strip().splitlines()[-1] and report["windows"][1]["start"] in out.strip().splitlines()[-1]
    # A daily cron job whose labels come weeks late: --since judges the last day, --labels-since the days before it
    # on their labels alone (their drift was said when they were recent); the wrong day's labels still say retrain.
    code, out, err, report = monitor(capsys, served_bundle, logs, tmp_path / "mon", "--labels",
                                     str(tmp_path / "labels.parquet"), "--since", "2026-11-04", "--labels-since",
                                     "2026-11-02")
    assert code == 3, out + err
    assert [w.get("labels_only", False) for w in report["windows"]] == [True, True, False]
    assert [bool(w["metrics"]["flags"]) for w in report["windows"]] == [False, True, False]
    assert all(w["flagged"] == [] and not w["prediction"]["flags"] for w in report["windows"][:2])
    assert "[monitor] --labels-since 2026-11-02: 2 window(s) before --since's judged on their labels alone" in out
    assert f"[monitor] {report['windows'][1]['start']}: 300 rows, flagged: " in out
    assert "(before --since: judged on its labels alone)" in out and report["labels_since"] == "2026-11-02T00:00Z"
    code, _, err, _ = monitor(capsys, served_bundle, logs, tmp_path / "mon", "--labels-since", "7d")
    assert code == 2 and "--labels-since: it judges the windows before --since's" in err


def test_bad_input_is_named(served_bundle, tmp_path, capsys):  # noqa: F811
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err, _ = monitor(capsys, served_bundle, empty, tmp_path / "mon")
    assert code == 2 and "no readable prediction logs" in err and str(empty) in err
    # A server logs nothing unless asked: the README's command on a server that was not said nothing of it.
    code, _, err, _ = monitor(capsys, served_bundle, tmp_path / "never-logged", tmp_path / "mon")
    assert code == 2 and "no such folder" in err and "serve with --set log.path=FOLDER" in err, err

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
    # Both were tracebacks after the whole Ray job: a window past year 9999, an --out that is a file.
    code, _, err, _ = monitor(capsys, served_bundle, logs, tmp_path / "mon", "--window", "1000000w")
    assert code == 2 and "--window: window must be at most 520w (ten years), got '1000000w'" in err, err
    # A --since whose window starts in the future is a typo, not a quiet period (it was exit 4, "no traffic"); one
    # whose window has begun (the day of a later time today) is judged as before.
    later = (datetime.now(timezone.utc) + timedelta(days=30)).strftime("%Y-%m-%d")
    code, out, err, _ = monitor(capsys, served_bundle, logs, tmp_path / "mon", "--since", later)
    assert code == 2 and f"--since {later}: its window starts {later}T00:00Z, in the future (now " in err, out + err
    soon = (datetime.now(timezone.utc) + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M")
    code, out, err, _ = monitor(capsys, served_bundle, logs, tmp_path / "mon", "--since", soon, "--window", "1w")
    assert code == 4 and "in the future" not in out + err, out + err
    (tmp_path / "taken.csv").write_text("mine")
    code, _, err, _ = monitor(capsys, served_bundle, logs, tmp_path / "taken.csv")
    assert code == 2 and "is a file; give a folder" in err and (tmp_path / "taken.csv").read_text() == "mine", err

    # Rows without a time fall in no window: said and counted, never silently left out; none with one: refused
    # (it was Ray Data's retry advice, from a pandas error in the summary task).
    table, untimed = pq.read_table(path), tmp_path / "untimed"
    untimed.mkdir()
    at = table.schema.get_field_index("time")
    half = pa.array([None if i % 2 else t for i, t in enumerate(table["time"].to_pylist())], table["time"].type)
    pq.write_table(table.set_column(at, "time", half), untimed / "part-half.parquet")
    code, out, err, report = monitor(capsys, served_bundle, untimed, tmp_path / "mon")
    assert code == 0 and "warning: 30 of 60 rows have no time" in out + err, out + err
    assert report["untimed_rows"] == 30 and [w["n"] for w in report["windows"]] == [30]
    # The last line counts the rows judged and says the rest ("ok: 60 rows" stood on 30 of them).
    assert out.strip().splitlines()[-1].startswith("ok: 30 rows in 1 window(s), nothing crossed a threshold; 30 "
                                                   "row(s) without a time left out"), out
    pq.write_table(table.set_column(at, "time", pa.nulls(60, table["time"].type)), untimed / "part-half.parquet")
    code, out, err, _ = monitor(capsys, served_bundle, untimed, tmp_path / "mon")
    assert code == 2 and f"--logs {untimed}: none of the 60 rows has a time" in err, out + err


def test_since_reads_a_date_a_time_or_a_span_back_from_now():
    from jobs.monitor import MonitorInputError, parse_since

    now = int(datetime(2026, 12, 6, 12, tzinfo=timezone.utc).timestamp() * 1000)
    assert parse_since("7d", now) == now - 7 * 86_400_000 and parse_since("12h", now) == now - 12 * 3_600_000
    assert parse_since("2026-11-04", now) == int(datetime(2026, 11, 4, tzinfo=timezone.utc).timestamp() * 1000)
    assert parse_since("2026-11-04T08:00+02:00", now) == int(datetime(2026, 11, 4, 6, tzinfo=timezone.utc)
                                                             .timestamp() * 1000)
    for text in ("last week", "today", "11/04/2026"):
        with pytest.raises(MonitorInputError, match=r"--since '.*': give an ISO date or time \(2026-11-01, "):
            parse_since(text, now)
    assert parse_since("2026-11-04T06:00Z", now) == parse_since("2026-11-04T08:00+02:00", now)
    with pytest.raises(MonitorInputError, match=r"--since '600w': a span back from now of at most 520w"):
        parse_since("600w", now)


def test_weekly_windows_start_on_mondays_and_days_at_midnight(tmp_path):
    """Windows were aligned to 1970-01-01, a Thursday: a `--window 7d` report's weeks ran Thursday to Wednesday."""
    import pyarrow.fs as pafs

    from jobs.monitor import _iso
    from jobs.monitor_summary import WEEK_MS, Plan, summarise_files, window_start

    days = [datetime(2026, 11, 29, 23, 59, tzinfo=timezone.utc), datetime(2026, 11, 30, tzinfo=timezone.utc),
            datetime(2026, 12, 6, 23, 59, tzinfo=timezone.utc), datetime(2026, 12, 7, 0, 1, tzinfo=timezone.utc)]
    pq.write_table(pa.table({"request_id": [f"r{i}" for i in range(4)], "record": pa.array([0] * 4, pa.int32()),
                             "time": pa.array(days, pa.timestamp("ms", tz="UTC")), "model_version": ["v1"] * 4,
                             "prediction": [1.0] * 4}), tmp_path / "part-0.parquet")
    parts = summarise_files(pa.table({"path": [str(tmp_path / "part-0.parquet")]}),
                            Plan(WEEK_MS, {}, {}, "regression", None, [0.0]),
                            ["request_id", "record", "time", "model_version", "prediction"], pafs.LocalFileSystem())
    starts = sorted(_iso(int(w), WEEK_MS) for w in set(parts["window"].to_pylist()))
    assert starts == ["2026-11-23T00:00Z", "2026-11-30T00:00Z", "2026-12-07T00:00Z"]   # Mondays
    ms = int(days[3].timestamp() * 1000)
    assert _iso(window_start(ms, 86_400_000)) == "2026-12-07T00:00Z"
    assert _iso(window_start(ms, 3_600_000)) == "2026-12-07T00:00Z"
    assert _iso(window_start(ms, 2 * WEEK_MS)) in ("2026-11-30T00:00Z", "2026-12-07T00:00Z")


def test_by_a_field_written_in_another_case_is_pointed_to_its_spelling():
    """`--by SITE` for the kept `site`, `--by MACHINE_TYPE` for the feature: the hint had matched case, and named
    neither."""
    from cluster.errors import BadInput
    from jobs.monitor_slices import by_column

    columns, profile = ["keep.site", "feature.machine_type"], {"categorical": {"machine_type": {}}, "numeric": {}}
    assert by_column("site", columns, profile) == "keep.site"
    for asked, meant in (("SITE", "site"), ("sight", "site"), ("MACHINE_TYPE", "machine_type")):
        with pytest.raises(BadInput, match=rf"--by {asked}: the logs hold no field '{asked}' \(did you mean "
                                           rf"'{meant}'\?\)"):
            by_column(asked, columns, profile)


def test_by_does_not_count_values_too_small_to_judge_as_judged():
    """`--by customer_id`: 20 customers of 1-3 rows a day, each under monitor.min_rows in every window, were said
    as "20 of 545 value(s) judged; none crossed a threshold"."""
    from jobs.monitor_slices import judge

    def window(summary, tests):
        return {"n": summary["n"], "judged": summary["n"] >= 50, "features": {}, "flagged": [],
                "prediction": {"flags": []}}
    sliced = {(0, "C-1"): {"n": 3}, (86_400_000, "C-1"): {"n": 2}, (0, "C-2"): {"n": 1}, (0, "big"): {"n": 60}}
    said = []
    report, _ = judge("customer_id", sliced, window, str, 86_400_000,
                      {"values": 545, "rows": 603, "rows_judged": 66, "rows_without": 0}, said.append)
    assert said == ["[monitor] by customer_id: 1 of 545 value(s) judged (the 3 with the most rows: 66 of 603 rows, "
                    "11%; 2 of them under monitor.min_rows in every window, not judged); none crossed a threshold"]
    assert report["judged"] == ["big", "C-1", "C-2"] and report["too_few_rows"] == ["C-1", "C-2"]


def test_by_values_a_client_sent_cannot_forge_lines_of_the_output():
    """A kept field is whatever a client sent: "S1\\n[monitor] ok: ..." with a terminal's escape codes was written
    raw, forging lines of the output (its last one, which scripts read, included)."""
    from jobs.monitor_slices import judge

    hostile = "S1\n[monitor] ok: nothing crossed a threshold\x1b[2J\x1b[31mPWNED\x1b[0m"

    def window(summary, tests):
        return {"n": summary["n"], "judged": True, "features": {"x": {"flags": ["psi 3"]}}, "flagged": ["x"],
                "prediction": {"flags": []}}
    said = []
    _, reasons = judge("site", {(0, hostile): {"n": 60}, (0, "S 2"): {"n": 60}}, window, str, 86_400_000,
                       {"values": 2, "rows": 120, "rows_judged": 120, "rows_without": 0}, said.append)
    assert all("\n" not in line and "\x1b" not in line for line in said + reasons), said
    assert said[-1].endswith(f"2 crossed a threshold: S 2, {hostile!r}")
    assert f"0, site {hostile!r}: x (psi 3)" in reasons        # (the window start as `iso` gave it: str here)


def test_by_chooses_its_values_among_the_rows_judged(tmp_path):
    """`--by`'s 20 values were counted over every file read (a month, with --labels-since): a machine new yesterday,
    the most rows of the day judged, was left out for 25 with a month of rows."""
    import pyarrow.fs as pafs

    from jobs.monitor_slices import top_values

    def log(path, machines, day):
        pq.write_table(pa.table({"time": pa.array([DAY0 + timedelta(days=day)] * len(machines),
                                                  pa.timestamp("ms", tz="UTC")),
                                 "keep.machine_id": machines}), path)
    log(tmp_path / "old.parquet", [f"M-{i % 25}" for i in range(2500)], 0)
    log(tmp_path / "new.parquet", ["M-NEW"] * 50 + [f"M-{i}" for i in range(25)] + [None], 30)
    files = [str(tmp_path / "old.parquet"), str(tmp_path / "new.parquet")]
    values, counted = top_values(pafs.LocalFileSystem(), files, "keep.machine_id", k=3)
    assert "M-NEW" not in values and counted["rows"] == 2576
    since = int((DAY0 + timedelta(days=30)).timestamp() * 1000)
    values, counted = top_values(pafs.LocalFileSystem(), files, "keep.machine_id", k=3, since_ms=since)
    assert values[0] == "M-NEW" and counted == {"values": 26, "rows": 76, "rows_judged": 52, "rows_without": 1}


def test_regression_windows_without_ray(tmp_path):
    """The summaries, their merge and the statistics of a regression model's logs, run in-process (no Ray):
    several files per window merge into exact counts and one uniform sample; the realised R² comes from the
    joined labels, and predictions shifted by 3 standard deviations are flagged while the inputs are not."""
    import pyarrow.fs as pafs

    from jobs import drift
    from jobs.monitor_stats import reference_metric, window_stats
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
            "model_version": pa.array(["v0" if i == 1 else "v1"] * n), "prediction": pa.array(predicted),
            "feature.x": pa.array(rng.normal(0, 1, n))}), path)
        paths.append(str(path))
        labels.append(pa.table({"request_id": pa.array(ids), "record": pa.array(np.zeros(n, np.int32)),
                                "label": pa.array(truth)}))
    plan = Plan(86_400_000, {"x": ref_x["edges"]}, {}, "regression", None, ref_y["edges"])
    columns = ["request_id", "record", "time", "model_version", "prediction", "feature.x"]
    parts = summarise_files(pa.table({"path": paths}), plan, columns, pafs.LocalFileSystem(), pa.concat_tables(labels))
    windows = [json.loads(merge(group)["summary"][0]) for _, group in parts.to_pandas().groupby("window")]

    first, second = windows
    assert first["n"] == 8000 and sum(first["numeric"]["x"]["counts"]) == 8000
    assert len(sample_rows(first["numeric"]["x"]["sample"])) == SAMPLE_K
    reference = reference_metric("regression", {"test": {"r2": 0.93, "rmse": 0.53}}, 1000)
    stats = [window_stats(w, profile, drift.Thresholds(), 1, reference) for w in windows]
    assert [s["flagged"] for s in stats] == [[], []]
    assert [bool(s["prediction"]["flags"]) for s in stats] == [False, True]
    # The window's line says what the verdict rests on (it said "nothing flagged" above a retrain for this).
    from jobs.monitor_stats import window_line
    lines = [window_line({**s, "start": f"day {i}"}, reference, None, 50) for i, s in enumerate(stats)]
    assert lines[0] == (f"[monitor] day 0: 8,000 rows, nothing flagged; rmse {stats[0]['metrics']['rmse']:,.4g} on "
                        "8000 labels (0.53 on the test split)")
    assert lines[1].startswith("[monitor] day 1: 4,000 rows, flagged: predictions, rmse rise; rmse "), lines[1]
    assert stats[0]["metrics"]["n"] == 8000 and stats[0]["metrics"]["r2"] == pytest.approx(0.94, abs=0.02)
    assert stats[0]["metrics"]["flags"] == [] and stats[1]["metrics"]["flags"]     # +6 on every prediction: R² < 0
    # The errors in the label's units are said (days to failure: a MAE of 50 days), beside the R² on the test
    # split's spread of the label that metric_drop judges.
    [flag] = stats[1]["metrics"]["flags"]
    m = stats[1]["metrics"]
    assert flag.startswith(f"rmse {m['rmse']:,.4g} vs 0.53 on the test split (r2 "), flag
    assert flag.endswith(f" vs 0.930 on the test split's spread of the label; p 0; MAE {m['mae']:,.4g}, in the "
                         "label's units)"), flag
    # A bundle whose metrics.json lacks the RMSE is judged by its R², as before.
    assert window_stats(windows[1], profile, drift.Thresholds(), 1, ("r2", 0.93))["metrics"]["flags"][0].startswith(
        "r2 ")
    # The first day was served by two versions (an update): counted per window, and said (the helper's monitor
    # named only the bundle it was given, over 1,214 rows another version had served).
    from jobs.monitor import _other_versions
    assert [s["versions"] for s in stats] == [{"v1": 4000, "v0": 4000}, {"v1": 4000}]
    assert _other_versions(stats, "v1").startswith("4,000 of 12,000 rows were served by other version(s) than v1 "
                                                   "(v0: 4,000); their inputs and answers are compared with this bundle's "
                                                   "training data like the rest")
    assert _other_versions(stats[1:], "v1") is None
    # A window another version served alone says so on its own line (the note alone said it, for all windows).
    assert window_line({**stats[1], "start": "day 1"}, reference, None, 50, "v0").endswith(
        "(served by v1 alone, not v0)")
    assert "alone" not in window_line({**stats[0], "start": "day 0"}, reference, None, 50, "v0")
    assert window_line({**stats[1], "start": "day 1", "versions": {"": 4000}}, reference, None, 50, "v1").endswith(
        "(no row of it logged its version: its labels are not judged as v1's)")
    # The realised metrics are of the judged version's rows alone: v0 answered by its own model (a helper's monitor
    # judged an earlier version's rows by the new bundle's cut-off target, and said retrain).
    from dataclasses import replace
    parts = summarise_files(pa.table({"path": paths}), replace(plan, version="v1"), columns, pafs.LocalFileSystem(),
                            pa.concat_tables(labels))
    first = json.loads(merge(parts.to_pandas().query("window == window.min()"))["summary"][0])
    realised = window_stats(first, profile, drift.Thresholds(), 1, reference)["metrics"]
    assert (realised["n"], realised["other_versions"]) == (4000, 4000)
    # A row whose version was not logged is not one of the given bundle's either: counted, and said so.
    from jobs.monitor_summary import summarise
    rows = pa.table({"request_id": ["a", "b", "c"], "record": pa.array([0, 0, 0], pa.int32()),
                     "time": pa.array([DAY0] * 3, pa.timestamp("ms", tz="UTC")),
                     "model_version": pa.array(["v1", None, "v1"], pa.string()), "prediction": [9.0, 10.0, 11.0]})
    [summary] = [json.loads(x) for x in summarise(rows, plan)["summary"].to_pylist()]
    assert summary["versions"] == {"v1": 2, "": 1}
    assert _other_versions([summary], "v1").startswith("1 of 3 rows were served by other version(s) than v1 (no "
                                                       "version logged: 1)")


def test_a_feature_some_log_files_lack_is_judged_with_their_rows_missing_and_said(tmp_path):
    """Logs spanning a version that renamed rpm: one file of 800 rows without feature.rpm took rpm out of the
    monitor for all 21,745 rows, named only in drift.json. Now judged on the rows that hold it, and said; a window
    under a minute is printed to the second."""
    import pyarrow.fs as pafs

    from jobs.monitor import _iso, log_files
    from jobs.monitor_summary import Plan, merge, summarise_files

    def log(path, n, with_rpm):
        columns = {"request_id": pa.array([f"{path.stem}-{i}" for i in range(n)]),
                   "record": pa.array(np.zeros(n, np.int32)),
                   "time": pa.array([DAY0 + timedelta(seconds=i) for i in range(n)], pa.timestamp("ms", tz="UTC")),
                   "model_version": pa.array(["v1"] * n), "prediction": pa.array(["ok"] * n),
                   "feature.kind": pa.array(["L"] * n)}
        if with_rpm:
            columns["feature.rpm"] = pa.array(np.full(n, 1500.0))
        pq.write_table(pa.table(columns), path)
        return str(path)

    paths = [log(tmp_path / "part-a.parquet", 30, True), log(tmp_path / "part-b.parquet", 10, False)]
    fs, files, skipped, rows, held = log_files(str(tmp_path), print)
    assert files == paths and rows == 40 and held["feature.rpm"] == [1, 30] and held["feature.kind"] == [2, 40]
    plan = Plan(86_400_000, {"rpm": [1000.0, 2000.0]}, {"kind": ["L"]}, "classification", ["ok"], None)
    columns = ["request_id", "record", "time", "model_version", "prediction", "feature.rpm", "feature.kind"]
    parts = summarise_files(pa.table({"path": paths}), plan, columns, fs)
    [window] = [json.loads(merge(group)["summary"][0]) for _, group in parts.to_pandas().groupby("window")]
    # The rows of the file without rpm are not rpm's: left out of its statistics, not counted as missing.
    assert window["n"] == 40 and window["numeric"]["rpm"]["missing"] == 0
    assert sum(window["numeric"]["rpm"]["counts"]) == 30 and window["categorical"]["kind"]["counts"] == {"L": 40}
    assert window["categorical"]["kind"]["missing"] == 0
    assert _iso(0) == "1970-01-01T00:00Z" and _iso(5_000, 5_000) == "1970-01-01T00:00:05Z"
    assert _iso(3_600_000, 3_600_000) == "1970-01-01T01:00Z"


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


def test_predict_output_with_a_label_column_is_a_labels_file(tmp_path):
    """Ray-free: what `trainyard predict --out` writes (the rows' columns, prediction, probabilities, request_id,
    record), with the outcomes added as `label`, reads as labels keyed as the logs are; request ids of digits
    only stay strings."""
    from jobs.monitor import MonitorInputError, read_labels

    (tmp_path / "out.csv").write_text(
        "machine_id,rpm,prediction,probability_failure,probability_ok,request_id,record,label\n"
        "M-1,1500,ok,0.1,0.9,00112233445566778899aabbccddeeff,0,ok\n"
        "M-2,1410,ok,0.2,0.8,00112233445566778899aabbccddeeff,1,failure\n"
        "M-3,1620,failure,0.7,0.3,12345678901234567890123456789012,0,\n")
    labels = read_labels(str(tmp_path / "out.csv"), ["failure", "ok"], lambda *_: None)
    assert labels.to_pylist() == [
        {"request_id": "00112233445566778899aabbccddeeff", "record": 0, "label": "ok"},
        {"request_id": "00112233445566778899aabbccddeeff", "record": 1, "label": "failure"}]
    # The outcome kept under the bundle's own label name ('failure'), as the rows held it: read as the label, said.
    (tmp_path / "own.csv").write_text((tmp_path / "out.csv").read_text().replace(",label\n", ",failure\n", 1))
    said = []
    assert read_labels(str(tmp_path / "own.csv"), ["failure", "ok"], said.append, label_name="failure") == labels
    assert said[0] == (f"[monitor] --labels {tmp_path / 'own.csv'}: no column 'label'; its column 'failure' (the "
                       "bundle's label) is read as the label")
    # A value that is no class is named in that column, not in a 'label' the file does not have.
    (tmp_path / "odd.csv").write_text((tmp_path / "own.csv").read_text().replace(",0,ok\n", ",0,Yes\n", 1))
    with pytest.raises(MonitorInputError, match=r"odd.csv: column 'failure' holds 'Yes', which is not a class"):
        read_labels(str(tmp_path / "odd.csv"), ["failure", "ok"], said.append, label_name="failure")
    # The data itself (rows and their outcomes) has no request ids to join the logs by: said how to get them, with
    # the file's own columns (the message listed 'label' for 'failure', renamed inside).
    (tmp_path / "data.csv").write_text("machine_id,rpm,failure\nM-1,1500,ok\n")
    with pytest.raises(MonitorInputError, match=r"column 'request_id' is missing \(columns: machine_id, rpm, "
                                                r"failure\); labels need request_id, label and optionally record; "
                                                r"labels are joined to the logged requests by their ids: `trainyard "
                                                r"predict ROWS --out FILE` writes request_id and record"):
        read_labels(str(tmp_path / "data.csv"), ["failure", "ok"], said.append, label_name="failure")


def test_a_regression_is_judged_by_its_errors_not_by_the_spread_of_the_labels_that_came_in():
    """Remaining life is known first of the gearboxes that failed soon: a window of 100 labels under 100 days (of
    0-400) had errors of 13 days, half the test split's 22, and an R² of 0.70 against the test split's 0.94, which
    said retrain. Judged by the errors on the test split's spread of the label it is not flagged; a window whose
    errors doubled is, whatever its labels' spread."""
    from jobs import drift
    from jobs.monitor_stats import reference_metric, window_stats
    from jobs.monitor_summary import Plan, summarise
    from jobs.profile import summarise as reference_of

    rng = np.random.default_rng(3)
    ref_y = reference_of(rng.uniform(0, 400, 5000))
    profile = {"numeric": {}, "categorical": {},
               "prediction": {"task": "regression", **{k: ref_y[k] for k in ("edges", "shares", "quantiles")}}}
    plan = Plan(86_400_000, {}, {}, "regression", None, ref_y["edges"])
    reference = reference_metric("regression", {"test": {"mae": 22.05, "rmse": 27.65, "r2": 0.944}}, 437)

    def window(truth, error_sd):
        ids = [f"r{i}" for i in range(len(truth))]
        rows = pa.table({"request_id": ids, "record": pa.array(np.zeros(len(ids), np.int32)),
                         "time": pa.array([DAY0] * len(ids), pa.timestamp("ms", tz="UTC")),
                         "prediction": truth + rng.normal(0, error_sd, len(ids))})
        labels = pa.table({"request_id": ids, "record": pa.array(np.zeros(len(ids), np.int32)), "label": truth})
        [summary] = [json.loads(x) for x in summarise(rows, plan, labels)["summary"].to_pylist()]
        return window_stats(summary, profile, drift.Thresholds(), 1, reference)["metrics"]

    soon = window(rng.uniform(0, 100, 100), 16.0)
    assert soon["r2"] < 0.85 and soon["rmse"] < 27.65 and soon["flags"] == [], soon       # narrow labels, small errors
    worse = window(rng.uniform(0, 100, 100), 55.0)
    assert worse["flags"] and worse["flags"][0].startswith("rmse ") and worse["rmse_p"] < 1e-6, worse
    assert window(rng.uniform(0, 400, 400), 28.0)["flags"] == []                            # as on the test split


def test_empty_and_repeated_labels_are_counted_and_a_regression_label_that_is_no_number_is_refused(tmp_path):
    """Ray-free. An empty label in a CSV was refused as "holds '', which is not a class"; a request labelled
    twice kept its last label without a word; a regression label that is not a number became NaN silently."""
    from jobs.monitor import MonitorInputError, read_labels

    path = tmp_path / "labels.csv"
    path.write_text("request_id,label\nr1,ok\nr2,\nr3, \nr1,failure\nr4,ok\n")
    said = []
    labels = read_labels(str(path), ["failure", "ok"], said.append)
    assert labels.to_pydict() == {"request_id": ["r1", "r4"], "record": [0, 0], "label": ["failure", "ok"]}
    assert said == [f"[monitor] --labels {path}: 2 empty label(s) left out (not known yet); 1 label(s) for a "
                    "(request_id, record) labelled again later in the file: the last one given is used"]
    path.write_text("request_id,label\nr1,1.5\nr2,n/a\nr3,\n")
    with pytest.raises(MonitorInputError, match=r"column 'label' holds 'n/a' \(1 such value\(s\)\), which is not a "
                                                r"finite number, and this bundle predicts a number"):
        read_labels(str(path), None, said.append)
    path.write_text("request_id,label\nr1,1.5\nr3,\n")
    assert read_labels(str(path), None, said.append).column("label").to_pylist() == [1.5]
    # Class names quoted: "(classes: ..., Home, Kitchen, ...)" hid which of them 'Home,  Kitchen' was not.
    path.write_text('request_id,label\nr1,"Home,  Kitchen"\n')
    with pytest.raises(MonitorInputError, match=r"holds 'Home,  Kitchen', which is not a class of the bundle \(classes: "
                                                r"'  Books', 'Home, Kitchen'\)$"):
        read_labels(str(path), ["  Books", "Home, Kitchen"], said.append)
    # A class in another case: said as such, as `evaluate` says it.
    path.write_text("request_id,label\nr1,Failure\n")
    with pytest.raises(MonitorInputError, match=r"holds 'Failure', which is not a class of the bundle \(classes: "
                                                r"'failure', 'ok'\); 'failure' and 'Failure' differ only in case or "
                                                r"in spaces around them: write the labels as the model's classes$"):
        read_labels(str(path), ["failure", "ok"], said.append)


TEXT_SCHEMA = {"input": "text", "task": "classification", "label": {"name": "y", "classes": ["bad", "good"]},
               "features": [{"name": "note", "type": "text", "max_length": 64, "required": True},
                            {"name": "rpm", "type": "number"}]}


def test_a_text_feature_is_watched_by_its_length_and_emptiness_from_profile_to_monitor(tmp_path):
    """Ray-free, on a string column: the profile keeps a text feature's character length and empty share
    (`jobs.profile.text_reference_of_frame`, as `text_reference` over a
    Ray dataset), a serving replica counts them from the records' text, the prediction logs
    write them (never the text) and the monitor job's summaries judge them: notes three times longer flag
    note.length there and live, and nothing else."""
    import pyarrow.fs as pafs

    from jobs import drift
    from jobs.monitor_stats import window_stats
    from jobs.monitor_summary import Plan, merge, summarise_files
    from jobs.profile import summarise, text_reference_of_frame
    from jobs.watched import of_profile, of_schema
    from serving.monitor import LiveMonitor
    from serving.predlog import PredictionLogger

    rng = np.random.default_rng(4)

    def notes(n: int, words: tuple[int, int]) -> list:
        out = [" ".join(["bearing"] * int(k)) for k in rng.integers(*words, n)]
        return [None if i % 20 == 0 else "  " if i % 20 == 1 else text for i, text in enumerate(out)]

    train = pd.DataFrame({"note": notes(1000, (2, 12)), "rpm": rng.normal(1500, 100, 1000)})
    ref = text_reference_of_frame(train, ["note"])
    assert ref["numeric"]["note.length"]["missing_rate"] == pytest.approx(0.05)
    assert ref["numeric"]["note.length"]["of"] == {"feature": "note", "quantity": "length"}
    assert ref["categorical"]["note.empty"]["shares"]["true"] == pytest.approx(50 / 950)
    profile = {"numeric": {"rpm": {**{k: v for k, v in summarise(train["rpm"]).items() if k != "count"},
                                   "missing_rate": 0.0}, **ref["numeric"]},
               "categorical": ref["categorical"],
               "prediction": {"task": "classification", "classes": ["bad", "good"], "shares": [0.5, 0.5]}}
    assert [w.name for w in of_profile(profile)] == ["rpm", "note.length", "note.empty"]
    assert [w.name for w in of_schema(TEXT_SCHEMA)] == ["note.length", "note.empty", "rpm"]
    assert of_schema(TEXT_SCHEMA, exclude=["note"])[0].name == "rpm"          # excluded: nor what derives from it

    longer = [{"note": note, "rpm": float(v)} for note, v in zip(notes(400, (30, 40)), rng.normal(1500, 100, 400))]
    predictions = list(rng.choice(["bad", "good"], 400))
    live = LiveMonitor(profile, app="a", version="v1", replica="r1", window_s=600, export=False)
    logger = PredictionLogger({"path": str(tmp_path)}, app="a", replica="r1", schema=TEXT_SCHEMA, version="v1")
    try:
        for i in range(0, 400, 4):
            live.observe(longer[i:i + 4], predictions[i:i + 4])
            logger.log(f"q{i}", longer[i:i + 4], predictions[i:i + 4])
        seen = live.snapshot()
    finally:
        live.close()
        logger.close()
    assert seen["flagged"] == ["note.length"] and seen["features"]["note.empty"]["n"] == 400
    assert seen["features"]["note.length"]["missing_rate"] == 0.05

    [path] = (tmp_path / "a").glob("*.parquet")
    table = pq.read_table(path)
    assert "feature.note" not in table.column_names
    assert table.column("feature.note.length").to_pylist()[2:4] == [float(len(longer[2]["note"])),
                                                                  float(len(longer[3]["note"]))]
    assert table.column("feature.note.empty").to_pylist()[:2] == [None, "true"]
    plan = Plan(86_400_000, {n: profile["numeric"][n]["edges"] for n in ("rpm", "note.length")},
                {"note.empty": ["false", "true"]}, "classification", ["bad", "good"], None)
    parts = summarise_files(pa.table({"path": [str(path)]}), plan, table.column_names, pafs.LocalFileSystem())
    [window] = [json.loads(merge(group)["summary"][0]) for _, group in parts.to_pandas().groupby("window")]
    stats = window_stats(window, profile, drift.Thresholds(), 3, None)
    assert stats["flagged"] == ["note.length"] and stats["n"] == 400


def test_regression_predictions_of_a_few_values_are_judged_by_chi_squared_over_every_row():
    """Ray-free: a model that predicts a few distinct values has tied reference quantiles, where KS does not
    apply: the window's ks_p stays None and the chi-squared p over every row's bin judges (the KS slot held a
    chi-squared p over the 5,000-value sample instead, which `flagged` then preferred)."""
    from jobs import drift
    from jobs.monitor_stats import window_stats
    from jobs.monitor_summary import Plan, merge, summarise
    from jobs.profile import prediction_reference

    rng = np.random.default_rng(9)
    ref = prediction_reference(SimpleNamespace(task="regression"), rng.choice([1.0, 2.0, 3.0], 3000))
    assert drift.numeric_drift(ref, [1.0, 2.0])["ks_p"] is None                 # tied: no KS
    profile = {"numeric": {}, "categorical": {}, "prediction": ref}
    n = 12000
    log = pa.table({"request_id": pa.array([f"r{i}" for i in range(n)]), "record": pa.array(np.zeros(n, np.int32)),
                    "time": pa.array([DAY0] * n, pa.timestamp("ms", tz="UTC")),
                    "prediction": pa.array(rng.choice([1.0, 2.0, 3.0], n, p=[0.3, 0.3, 0.4]))})
    plan = Plan(86_400_000, {}, {}, "regression", None, ref["edges"])
    window = json.loads(merge(summarise(log, plan).to_pandas())["summary"][0])
    stats = window_stats(window, profile, drift.Thresholds(), 1, None)["prediction"]
    every_row = drift.prediction_drift(ref, dict(enumerate(window["prediction"]["counts"])))
    assert stats["ks_p"] is None and drift.p_value(stats) == every_row["p"] and stats["n"] == n


def test_labelled_rows_are_judged_by_the_rule_the_cut_off_was_chosen_for():
    """A credit policy of catching 85 % of defaulters: accuracy gave the same verdict at a realised recall of 0.93
    and of 0.70; the positive class's recall is now realised, and flagged below the rule's target."""
    from jobs import drift
    from jobs.monitor_stats import _policy

    cut = {"positive": "default", "positive_index": 0, "threshold": 0.08, "rule": "min_recall 0.85",
           "measure": "recall", "target": 0.85}
    low = {"n": 900, "flags": []}
    _policy(low, np.array([[267, 113], [250, 270]]), cut, drift.Thresholds())
    assert low["positive_recall"] == pytest.approx(267 / 380) and low["positive_precision"] == pytest.approx(267 / 517)
    assert low["flags"] == ["recall of 'default' 0.703 (267 of 380) below the min_recall 0.85 its cut-off was "
                            "chosen for (p 2e-13)"]
    # A window of 300 labels holds 25 defaulters: a cut-off meeting 0.85 reads 21 of 25 (0.84) or fewer in 53 % of
    # such windows; not flagged (said on the window's line). 15 of 25 is.
    within = {"n": 300, "flags": []}
    _policy(within, np.array([[21, 4], [60, 215]]), cut, drift.Thresholds())
    assert within["flags"] == [] and within["shortfall"]["p"] == pytest.approx(0.53, abs=0.01)
    from jobs.monitor_stats import window_line

    def line(metrics, decision=cut):
        return window_line({"start": "day 0", "n": 5000, "judged": True, "flagged": [], "prediction": {"flags": []},
                            "metrics": metrics}, None, decision, 50)
    assert line(within).endswith("nothing flagged; recall of 'default' 0.840 (min_recall 0.85); its recall of "
                                 "'default' 0.840 (21 of 25) is short of 0.85 within chance (p 0.53)")
    beyond = {"n": 300, "flags": []}
    _policy(beyond, np.array([[15, 10], [60, 215]]), cut, drift.Thresholds())
    assert beyond["flags"] and beyond["shortfall"]["p"] < 0.01 and "within chance" not in line(beyond)
    assert "flagged: recall below target; " in line(beyond)          # not a "drop": it never had more
    # A cut-off whose test recall already fell short of its target (0.721 against 0.8, which train said) is judged
    # against its test recall: in-distribution traffic at 0.748 said "recall drop", retrain, from the first day.
    from jobs.monitor import with_test_figures
    short_on_test = with_test_figures({**cut, "rule": "min_recall 0.8", "target": 0.8},
                                      {"test": {"confusion_matrix": [[44, 17], [160, 730]]}})
    assert {k: v for k, v in short_on_test["test"].items() if k != "counts"} == pytest.approx(
        {"recall": 44 / 61, "precision": 44 / 204, "positive_rate": 61 / 951})
    assert short_on_test["test"]["counts"] == {"recall": [44, 61], "precision": [44, 204]}
    as_before = {"n": 20000, "flags": []}
    _policy(as_before, np.array([[1351, 455], [5000, 13194]]), short_on_test, drift.Thresholds())
    assert as_before["flags"] == [] and "shortfall" not in as_before
    assert line(as_before, short_on_test).endswith("recall of 'default' 0.748 (min_recall 0.8); 'default' in 9.0% of "
                                                   "labels (6.4% on the test split)")
    # The test figure is a sample too (44 of 61: 0.721 give or take 0.057): a window is compared with it by Fisher's
    # exact test, so a model of true recall 0.69 is not called a drop (as one sample against 0.721: p 0.002).
    near = {"n": 20000, "flags": []}
    _policy(near, np.array([[1246, 560], [5000, 13194]]), short_on_test, drift.Thresholds())
    assert near["flags"] == [] and near["shortfall"]["p"] > 0.2 and near["shortfall"]["bar"] == pytest.approx(44 / 61)
    fell = {"n": 20000, "flags": []}
    _policy(fell, np.array([[900, 906], [5000, 13194]]), short_on_test, drift.Thresholds())
    assert fell["flags"] == [f"recall of 'default' 0.498 (900 of 1806) below the 0.721 it had on the test split (p "
                             f"{fell['shortfall']['p']:.1g})"] and "flagged: recall drop; " in line(fell, short_on_test)
    # Under min_rows labels a shortfall is neither flagged nor called chance (2 of 10 read "within chance, p 9e-06").
    scarce = {"n": 30, "flags": []}
    _policy(scarce, np.array([[2, 8], [0, 20]]), cut, drift.Thresholds())
    assert scarce["flags"] == [] and "shortfall" not in scarce
    assert line(scarce).endswith("recall of 'default' 0.200 (min_recall 0.85) (30 labels, under min_rows 50: not "
                                 "judged)"), line(scarce)
    # A precision rule's shortfall names precision (the line named the recall's figures' measure wrongly).
    precise = {"n": 300, "flags": []}
    rule = {**cut, "rule": "min_precision 0.9", "measure": "precision", "target": 0.9}
    _policy(precise, np.array([[20, 5], [3, 272]]), rule, drift.Thresholds())
    assert "nothing flagged; precision of 'default' 0.870 (min_precision 0.9); its precision of 'default' 0.870 (20 " \
           "of 23) is short of 0.9 within chance (p " in line(precise, rule)       # the rule's measure, not recall
    # A window without labels says nothing of them ("(0 labels, under min_rows 50: not judged)" on every line).
    assert line({"n": 0, "flags": []}).endswith("nothing flagged")
    met = {"n": 900, "flags": []}
    _policy(met, np.array([[167, 13], [250, 470]]), cut, drift.Thresholds())
    assert met["flags"] == [] and met["positive_recall"] == pytest.approx(167 / 180)
    few = {"n": 20, "flags": []}                      # under monitor.min_rows: realised, not judged
    _policy(few, np.array([[1, 9], [0, 10]]), cut, drift.Thresholds())
    assert few["flags"] == [] and few["positive_recall"] == 0.1
    fixed = {"n": 900, "flags": []}                   # a fixed threshold sets no target
    _policy(fixed, np.array([[1, 99], [0, 800]]), {k: v for k, v in cut.items() if k not in ("measure", "target")}
            | {"rule": "threshold 0.3"}, drift.Thresholds())
    assert fixed["flags"] == [] and fixed["positive_recall"] == 0.01


def test_a_binary_models_realised_auc_comes_from_its_logged_probabilities_without_ray(tmp_path):
    """The logs hold each record's probabilities: the labels give a binary model's realised ROC-AUC (what a
    screening model is judged by, where accuracy barely moves at a 10 % base rate), from counts that merge across
    files, within 0.002 of the exact AUC; a window whose scores lost their rank is flagged against the test AUC; a
    file from before probabilities were logged counts for accuracy and not for the AUC, and that is said."""
    import pyarrow.fs as pafs

    from jobs import drift
    from jobs.metrics import roc_auc
    from jobs.monitor_stats import reference_auc, window_line, window_stats
    from jobs.monitor_summary import Plan, merge, summarise_files
    from jobs.profile import score_reference
    from jobs.profile import summarise as reference_of

    rng = np.random.default_rng(5)
    ref_x = reference_of(rng.normal(0, 1, 5000))
    profile = {"numeric": {"x": {**ref_x, "missing_rate": 0.0}}, "categorical": {},
               "prediction": {"task": "classification", "classes": ["no", "yes"], "shares": [0.9, 0.1]}}
    paths, labels, truths = [], [], {0: [], 1: []}
    def scores(n, signal, intercept=-3.0):
        truth = (rng.random(n) < 0.1).astype(int)
        return truth, 1 / (1 + np.exp(-(rng.normal(0, 1, n) + signal * truth + intercept)))   # log-odds rise with it

    validation = scores(4000, 2.5)[1]
    profile["prediction"]["score"] = score_reference(np.column_stack([1 - validation, validation]))
    truths[2] = []
    # Day 2: every row's risk up (a new population), few answers changed. The last file: an earlier version v0
    # on day 0, ranking the other way round; its rows count for neither the AUC nor the probabilities' drift.
    for i, (day, signal, with_probabilities, intercept, version) in enumerate([
            (0, 2.5, True, -3.0, "v1"), (0, 2.5, True, -3.0, "v1"), (0, 2.5, False, -3.0, "v1"),
            (1, 0.2, True, -3.0, "v1"), (2, 2.5, True, -2.2, "v1"), (0, -2.5, True, 1.0, "v0")]):
        n = 3000
        truth, p_yes = scores(n, signal, intercept)
        ids = [f"f{i}-{j}" for j in range(n)]
        columns = {"request_id": pa.array(ids), "record": pa.array(np.zeros(n, np.int32)),
                   "time": pa.array([DAY0 + timedelta(days=day, seconds=j) for j in range(n)],
                                    pa.timestamp("ms", tz="UTC")),
                   "model_version": pa.array([version] * n),
                   "prediction": pa.array(np.where(p_yes > 0.5, "yes", "no")), "feature.x": pa.array(rng.normal(0, 1, n))}
        if with_probabilities:
            columns["probabilities"] = pa.array(np.column_stack([1 - p_yes, p_yes]).tolist(), pa.list_(pa.float32()))
            truths[day] += [(truth, p_yes.astype(np.float32))] if version == "v1" else []
        pq.write_table(pa.table(columns), tmp_path / f"part-{i}.parquet")
        paths.append(str(tmp_path / f"part-{i}.parquet"))
        labels.append(pa.table({"request_id": pa.array(ids), "record": pa.array(np.zeros(n, np.int32)),
                                "label": pa.array(np.where(truth == 1, "yes", "no"))}))
    plan = Plan(86_400_000, {"x": ref_x["edges"]}, {}, "classification", ["no", "yes"], None,
                profile["prediction"]["score"]["edges"], version="v1")
    read = ["request_id", "record", "time", "model_version", "prediction", "probabilities", "feature.x"]
    parts = summarise_files(pa.table({"path": paths}), plan, read, pafs.LocalFileSystem(), pa.concat_tables(labels))
    windows = [json.loads(merge(group)["summary"][0]) for _, group in parts.to_pandas().groupby("window")]
    test_auc = reference_auc({"test": {"accuracy": 0.93, "auc": 0.94}})
    stats = [window_stats(w, profile, drift.Thresholds(), 1, ("accuracy", 0.93), None, test_auc) for w in windows]

    for day, s in enumerate(stats):
        truth, score = map(np.concatenate, zip(*truths[day]))
        assert s["metrics"]["auc"] == pytest.approx(roc_auc(truth, score), abs=0.002)
        assert s["metrics"]["auc_rows"] == len(truth) and s["metrics"]["n"] == len(truth) + 3000 * (day == 0)
        assert s["metrics"]["other_versions"] == 3000 * (day == 0)
    assert stats[0]["metrics"]["auc"] > 0.9 and stats[1]["metrics"]["auc"] < 0.6
    assert stats[0]["metrics"]["flags"] == []
    # The probabilities drift on day 2 while the answered classes barely do: flagged as prediction drift. Day 0's
    # file without probabilities is not counted in the score's rows.
    assert [s["prediction"]["score"]["n"] for s in stats] == [6000, 3000, 3000]
    assert stats[0]["prediction"]["flags"] == [] and stats[2]["prediction"]["psi"] < 0.1
    assert [f.split(" psi ")[0] for f in stats[2]["prediction"]["flags"]] == ["probability of 'yes'"]
    # ... with which way it went: the window's mean probability against the validation split's.
    risen = stats[2]["prediction"]["score"]["mean"]
    assert risen > profile["prediction"]["score"]["mean"] + 0.03
    assert stats[2]["prediction"]["flags"][0].endswith(
        f"; mean {risen:.3f} vs {profile['prediction']['score']['mean']:.3f} on the validation split")
    # A cut-off for the first class ('failure' of 'failure'/'ok') is watched through that class's probability.
    first = score_reference(np.column_stack([1 - validation, validation]), index=0)
    assert first["index"] == 0 and first["mean"] == pytest.approx(1 - profile["prediction"]["score"]["mean"])
    assert first["quantiles"][0] == pytest.approx(1 - profile["prediction"]["score"]["quantiles"][-1], abs=1e-7)
    from dataclasses import replace
    parts = summarise_files(pa.table({"path": paths}), replace(plan, score_edges=first["edges"], score_index=0), read,
                            pafs.LocalFileSystem())
    day2 = [json.loads(merge(group)["summary"][0]) for _, group in parts.to_pandas().groupby("window")][2]
    flipped = {**profile, "prediction": {**profile["prediction"], "score": first}}
    score = window_stats(day2, flipped, drift.Thresholds(), 1, None)["prediction"]
    assert score["score"]["mean"] == pytest.approx(1 - risen, abs=1e-6)
    assert score["flags"][-1].startswith("probability of 'no' psi "), score["flags"]
    assert any(f.startswith(f"auc {stats[1]['metrics']['auc']:.3f} vs 0.940 on the test split (p ")
               and f.endswith("; the probabilities logged for 3,000 labelled rows)") for f in stats[1]["metrics"]["flags"])
    assert stats[1]["metrics"]["auc_p"] < 1e-10 and stats[0]["metrics"]["auc_p"] > 0.01
    lines = [window_line({**s, "start": f"day {i}"}, ("accuracy", 0.93), None, 50) for i, s in enumerate(stats)]
    assert f"; auc {stats[0]['metrics']['auc']:.3f} on the 6000 of 9000 labelled rows logged with probabilities" in lines[0]
    assert "auc drop" in lines[1] and f"; auc {stats[1]['metrics']['auc']:.3f}" in lines[1]
    assert reference_auc({"test": {"accuracy": 0.9}}) is None and reference_auc({}) is None
    # Accuracy against a test split's 0.99 is flagged for a model answering by the likelier class; one answering by
    # a cut-off is judged by its rule and its AUC instead (its accuracy moves with the base rate).
    strict = ("accuracy", 0.99)
    assert any(f.startswith("accuracy ") for f in window_stats(windows[1], profile, drift.Thresholds(), 1, strict,
                                                               None, test_auc)["metrics"]["flags"])
    cut = {"positive": "yes", "positive_index": 1, "threshold": 0.2, "rule": "threshold 0.2"}
    by_rule = window_stats(windows[1], profile, drift.Thresholds(), 1, strict, cut, test_auc)["metrics"]
    assert [f.split(" ")[0] for f in by_rule["flags"]] == ["auc"] and by_rule["accuracy"] < 0.99
    # A cut-off without a target and no AUC to judge (no probabilities, or none on the test split): accuracy still
    # judges (labels judged nothing there).
    unjudged = window_stats(windows[1], profile, drift.Thresholds(), 1, strict, cut, None)["metrics"]
    assert [f.split(" ")[0] for f in unjudged["flags"]] == ["accuracy"]


def test_values_past_the_training_range_are_flagged_where_psi_stays_low_without_ray(tmp_path):
    """One site of several sending a lab value in other units (x 50): 8 % of a day's values far past anything
    trained on, which the deciles' top bin absorbs (psi under 0.2: a walkthrough's creatinine went unflagged with
    109 such rows of 1,806); counted against the train split's range, as /predict's out_of_range, and flagged."""
    import pyarrow.fs as pafs

    from jobs import drift
    from jobs.monitor_stats import window_stats
    from jobs.monitor_summary import Plan, merge, summarise_files
    from jobs.profile import summarise as reference_of
    from jobs.tabular import range_bounds

    rng = np.random.default_rng(9)
    train = rng.normal(1.0, 0.2, 5000)
    ref = reference_of(train)
    profile = {"numeric": {"creatinine": {**ref, "missing_rate": 0.0}}, "categorical": {},
               "prediction": {"task": "regression", **{k: ref[k] for k in ("edges", "shares", "quantiles")}}}
    paths = []
    for day, other_units in ((0, 0.0), (1, 0.08), (2, 0.005)):
        n = 2000
        values = rng.normal(1.0, 0.2, n)
        values[: int(n * other_units)] *= 50                       # µmol/L where mg/dL was trained on (x ~88)
        path = tmp_path / f"part-{day}.parquet"
        pq.write_table(pa.table({
            "request_id": pa.array([f"d{day}-{j}" for j in range(n)]), "record": pa.array(np.zeros(n, np.int32)),
            "time": pa.array([DAY0 + timedelta(days=day, seconds=j) for j in range(n)], pa.timestamp("ms", tz="UTC")),
            "prediction": pa.array(rng.normal(0, 1, n)), "feature.creatinine": pa.array(values)}), path)
        paths.append(str(path))
    plan = Plan(86_400_000, {"creatinine": ref["edges"]}, {}, "regression", None, ref["edges"],
                ranges={"creatinine": range_bounds(float(train.min()), float(train.max()))})
    parts = summarise_files(pa.table({"path": paths}), plan, ["request_id", "record", "time", "prediction",
                                                              "feature.creatinine"], pafs.LocalFileSystem())
    windows = [json.loads(merge(group)["summary"][0]) for _, group in parts.to_pandas().groupby("window")]
    stats = [window_stats(w, profile, drift.Thresholds(), 1, None) for w in windows]
    before, after, one_source = (s["features"]["creatinine"] for s in stats)
    assert (before["outside"], before["flags"]) == (0, [])
    assert after["psi"] < 0.2 and after["outside"] == 160 and after["outside_rate"] == pytest.approx(0.08)
    assert after["flags"] == ["outside the training range 0.08 (160 of 2,000)"], after["flags"]
    # One source of many (10 of 2,000 values) stays under any share: not flagged, but said once for the logs.
    from jobs.monitor import _few_outside
    assert (one_source["outside"], one_source["flags"]) == (10, [])
    assert _few_outside(stats[2:], 0.05) == [
        "creatinine: 10 of 2,000 values (0.5%) past its training range, too few to flag (monitor.unknown_rate 0.05); "
        "a source sending other units (one machine, one lab) looks like this: /predict's out_of_range names the "
        "records"]
    assert _few_outside(stats, 0.05) == []           # flagged in a window: said there
    # Past the rate but in windows too small to judge: said as such, not as "too few".
    small = [{"features": {"x": {"outside": 30, "counts": [40], "flags": []}}}]
    assert _few_outside(small, 0.05) == ["x: 30 of 40 values (75.0%) past its training range, in windows too small "
                                         "to judge (monitor.min_rows): /predict's out_of_range names the records"]


def test_a_rare_class_missed_is_flagged_though_accuracy_holds():
    """Triage notes: accuracy 0.90 on 70 labels, and nothing flagged, while 'emergent' went mostly unseen. Each
    class's realised recall is judged against its test recall, itself a sample (Fisher's exact test)."""
    import numpy as np

    from jobs import drift
    from jobs.monitor_stats import class_recalls, crossed, reference_recalls

    test = {"test": {"confusion_matrix": [[140, 2, 0], [3, 60, 1], [0, 5, 40]]}}
    ref = reference_recalls(test)
    assert ref == [[140, 142], [60, 64], [40, 45]]
    assert reference_recalls({"test": {}}) is None
    window = np.array([[45, 1, 0], [2, 14, 0], [1, 9, 2]])
    metrics = {"flags": []}
    class_recalls(metrics, window, ["routine", "urgent", "emergent"], ref, drift.Thresholds())
    assert metrics["class_recall"] == pytest.approx({"routine": 45 / 46, "urgent": 14 / 16, "emergent": 2 / 12})
    assert len(metrics["flags"]) == 1 and metrics["flags"][0].startswith(
        "recall of 'emergent' 0.167 vs 0.889 on the test split (2 of 12 labels, 40 of 45 there; p "), metrics["flags"]
    assert crossed({"flagged": [], "prediction": {"flags": []}, "metrics": metrics}) == metrics["flags"]
    from jobs.monitor_stats import window_line
    line = window_line({"start": "day 1", "n": 74, "judged": True, "flagged": [], "prediction": {"flags": []},
                        "metrics": {**metrics, "n": 74, "accuracy": 61 / 74}}, ("accuracy", 0.93), None, 50)
    assert "recall of 'emergent' drop" in line, line
    # Too few labels of a class to tell (under 5); a shortfall chance explains; a test recall of few rows: quiet
    quiet = {"flags": []}
    class_recalls(quiet, np.array([[45, 1, 0], [2, 14, 0], [1, 2, 1]]), ["r", "u", "e"], ref, drift.Thresholds())
    class_recalls(quiet, np.array([[45, 1, 0], [2, 14, 0], [1, 2, 6]]), ["r", "u", "e"], ref, drift.Thresholds())
    class_recalls(quiet, np.array([[45, 1, 0], [2, 14, 0], [1, 7, 2]]), ["r", "u", "e"],
                  [[140, 142], [60, 64], [7, 9]], drift.Thresholds())        # 2 of 10 vs 7 of 9: p 0.01
    assert quiet["flags"] == []
    # A healthy class read from 10 test rows (true recall 0.85, 20 labels a window) is flagged rarely, not in a
    # fifth of windows as against its test recall taken as exact
    rng = np.random.default_rng(0)
    flagged = 0
    for _ in range(300):
        test_hits, hits = int(rng.binomial(10, 0.85)), int(rng.binomial(20, 0.85))
        m = {"flags": []}
        class_recalls(m, np.array([[50, 0], [20 - hits, hits]]), ["a", "b"], [[50, 50], [test_hits, 10]],
                      drift.Thresholds())
        flagged += bool(m["flags"])
    assert flagged <= 3, flagged
