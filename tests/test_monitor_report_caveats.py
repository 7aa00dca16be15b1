"""OUT/report.html says what the terminal and drift.json say the verdict does not rest on (a user walking through
`trainyard monitor` read a page headed OK over windows never judged): a metric on too few labels, windows under
monitor.min_rows, rows of other versions, labels that matched no record, unreadable files said once.

The windows are real: log rows summarised (`jobs.monitor_summary.summarise`, labels joined) and judged
(`jobs.monitor_stats.window_stats`) in-process, without Ray; the report dict around them has drift.json's shape.
"""
from __future__ import annotations

import html
import json
import re
from dataclasses import asdict
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa

DAY0 = datetime(2026, 12, 7, tzinfo=timezone.utc)
VERSION = "20261207-211341"
CLASSES = ["failure", "ok"]


def _profile(rng: np.random.Generator) -> dict:
    from jobs.drift import summarise as reference_of

    return {"numeric": {"air_temp_k": {**reference_of(rng.normal(300, 2, 5000)), "missing_rate": 0.0}},
            "categorical": {"machine_type": {"shares": {"L": 0.5, "M": 0.3, "H": 0.2}, "unknown_share": 0.0,
                                             "missing_rate": 0.0}},
            "prediction": {"task": "classification", "classes": CLASSES, "shares": [0.2, 0.8]}}


def real_report(days: list[dict], labels_given=None, skipped=(), seed: int = 0) -> tuple[dict, dict]:
    """(drift.json's report, the bundle's profile) over one window per entry of `days`: {"rows", "labelled" (how
    many of its rows have a label), "right" (the share of those the model got right, 0.9 unless given), "other"
    (rows served by another version)}.
    `labels_given`: the labels file's rows, of which those of the logged rows matched (labels_joined)."""
    from jobs import drift
    from jobs.monitor_stats import crossed, reference_metric, window_stats
    from jobs.monitor_summary import Plan, summarise

    rng = np.random.default_rng(seed)
    profile = _profile(rng)
    plan = Plan(86_400_000, {"air_temp_k": profile["numeric"]["air_temp_k"]["edges"]},
                {"machine_type": ["L", "M", "H"]}, "classification", CLASSES, None, version=VERSION)
    reference = reference_metric("classification", {"test": {"accuracy": 0.824}}, 449)
    thresholds = drift.Thresholds()
    windows, joined = [], 0
    for day, spec in enumerate(days):
        n, other = spec["rows"], spec.get("other", 0)
        ids = [f"d{day}-{i}" for i in range(n)]
        predicted = rng.choice(CLASSES, n, p=[0.2, 0.8])
        rows = pa.table({
            "request_id": pa.array(ids, pa.string()), "record": pa.array(np.zeros(n, np.int32)),
            "time": pa.array([DAY0 + timedelta(days=day, seconds=i) for i in range(n)], pa.timestamp("ms", tz="UTC")),
            "model_version": pa.array(["20261101-090000"] * other + [VERSION] * (n - other), pa.string()),
            "prediction": pa.array(predicted, pa.string()),
            "feature.air_temp_k": pa.array(rng.normal(300, 2, n)),
            "feature.machine_type": pa.array(rng.choice(["L", "M", "H"], n, p=[0.5, 0.3, 0.2]), pa.string())})
        k = spec.get("labelled", 0)
        right = round(k * spec.get("right", 0.9))
        truth = [p if i < right else CLASSES[1 - CLASSES.index(p)] for i, p in enumerate(predicted[:k])]
        labels = pa.table({"request_id": pa.array(ids[:k], pa.string()), "record": pa.array(np.zeros(k, np.int32)),
                           "label": pa.array(truth, pa.string())})
        [summary] = [json.loads(s) for s in summarise(rows, plan, labels if k else None)["summary"].to_pylist()]
        stats = window_stats(summary, profile, thresholds, 2, reference)
        start = DAY0 + timedelta(days=day)
        windows.append({"start": f"{start:%Y-%m-%dT%H:%MZ}", "end": f"{start + timedelta(days=1):%Y-%m-%dT%H:%MZ}",
                        **stats})
        joined += k
    reasons = [f"{w['start']}: " + ", ".join(what) for w in windows if (what := crossed(w))]
    labelled = any(d.get("labelled") for d in days)
    report = {"format": 1, "bundle": f"/runs/machine-failure/bundles/{VERSION}", "version": VERSION,
              "logs": "logs/predictions/machine-failure", "labels": "labels.csv" if labelled else None,
              "window": "1d", "files": len(days), "skipped": list(skipped), "rows": sum(d["rows"] for d in days),
              "untimed_rows": 0, "since": None, "rows_before_since": 0, "labels_since": None,
              "thresholds": asdict(thresholds),
              "reference_metric": {reference[0]: reference[1]}, "reference_auc": None, "features_not_logged": [],
              "windows": windows, "verdict": "retrain" if reasons else "ok", "reasons": reasons, "seconds": 1.0}
    if labelled:
        report.update(labels_given=joined if labels_given is None else labels_given, labels_joined=joined)
    return report, profile


def page_of(tmp_path, report: dict, profile: dict) -> str:
    from jobs.monitor_report import write_report

    return write_report(tmp_path / "report.html", report, profile).read_text()


def row_of(page: str, start: str) -> str:
    return re.search(rf"<tr[^>]*><td>{re.escape(start)}</td>.*?</tr>", page).group(0)


def test_a_metric_on_too_few_labels_says_its_count_and_is_a_hollow_point(tmp_path):
    """A window whose accuracy stood on 3 labels read "accuracy 0.667" like any other, and its point fell far below
    the test line unmarked: now its cell gives the count and says too few, and its point is hollow, captioned."""
    report, profile = real_report([{"rows": 600, "labelled": 500}, {"rows": 400, "labelled": 3, "right": 2 / 3}])
    first, second = report["windows"]
    assert (first["metrics"]["n"], second["metrics"]["n"]) == (500, 3)
    assert second["metrics"]["flags"] == [] and report["verdict"] == "ok"      # 0.667 against 0.824: not judged
    page = page_of(tmp_path, report, profile)
    assert "accuracy 0.667 (3 labels, too few to judge)" in row_of(page, second["start"]), row_of(page, second["start"])
    assert "accuracy 0.900 (500 labels)" in row_of(page, first["start"])
    assert (f"hollow points: 1 window(s) whose realised metric stands on fewer than monitor.min_rows (50) labels, "
            f"not judged ({second['start']})") in page
    # The plot: the judged window a filled point, the one on 3 labels a hollow one.
    from jobs.monitor_report import _few_labels, _metric_over_time
    fig = _metric_over_time(report["windows"], report["reference_metric"],
                            _few_labels(report["windows"], "accuracy", "n", 50), 50)
    points = {line.get_label(): line for line in fig.axes[0].get_lines() if line.get_marker() == "o"}
    hollow = points["under 50 labels: not judged"]
    assert hollow.get_markerfacecolor() == "none" and list(hollow.get_ydata()) == [second["metrics"]["accuracy"]]
    [filled] = [line for label, line in points.items() if label != "under 50 labels: not judged"]
    assert filled.get_markerfacecolor() != "none" and list(filled.get_ydata()) == [first["metrics"]["accuracy"]]


def test_a_window_under_min_rows_is_marked_not_judged_in_its_row_and_the_header(tmp_path):
    """A window of 20 rows showed its PSI uncoloured in a page headed OK, nothing saying it was not judged."""
    report, profile = real_report([{"rows": 600}, {"rows": 20}])
    small = report["windows"][1]
    assert not small["judged"] and report["verdict"] == "ok"
    page = page_of(tmp_path, report, profile)
    row = row_of(page, small["start"])
    assert row.startswith("<tr class='unjudged'>") and "20 (not judged: 20 rows &lt; monitor.min_rows 50)" in row, row
    assert row_of(page, report["windows"][0]["start"]).startswith("<tr><td>")
    assert ("1 of 2 window(s) not judged: fewer than monitor.min_rows (50) rows; their PSI is shown, not flagged"
            in page)
    # Every window too small: said so outright.
    report, profile = real_report([{"rows": 20}])
    assert "1 of 1 window(s) not judged: fewer than monitor.min_rows (50) rows; their PSI is shown, not flagged; " \
           "no window was judged" in page_of(tmp_path, report, profile)


def test_rows_of_other_versions_are_said_in_the_header(tmp_path):
    """Rows served by another version (an update mid-window) were said in the terminal alone; their labels are
    left out of the realised metrics, which the page did not say either."""
    report, profile = real_report([{"rows": 600, "labelled": 500, "other": 100}, {"rows": 300}])
    assert report["windows"][0]["versions"] == {"20261101-090000": 100, VERSION: 500}
    assert report["windows"][0]["metrics"]["other_versions"] == 100
    page = page_of(tmp_path, report, profile)
    assert (f"100 of 900 rows were served by other version(s) than {VERSION} (20261101-090000: 100); their labels "
            "are left out of the realised metrics") in page
    assert "(400 labels; 100 labels of other versions left out)" in row_of(page, report["windows"][0]["start"])
    # One version throughout: nothing said.
    report, profile = real_report([{"rows": 600, "labelled": 500}])
    assert "other version" not in page_of(tmp_path, report, profile)


def test_labels_that_matched_no_logged_record_are_counted_in_the_header(tmp_path):
    report, profile = real_report([{"rows": 600, "labelled": 500}], labels_given=800)
    assert "500 of 800 labels matched a logged record read; the rest were left out" in page_of(
        tmp_path, report, profile)
    # None matched: no window was judged on labels, said plainly.
    report, profile = real_report([{"rows": 600, "labelled": 0}])
    report.update(labels="labels.csv", labels_given=120, labels_joined=0)
    assert "none of the 120 labels matched a logged record read: no window was judged on labels" in page_of(
        tmp_path, report, profile)
    # Every label matched, or a drift.json from before the counts were kept: nothing said (and nothing raised).
    report, profile = real_report([{"rows": 600, "labelled": 500}])
    assert "labels matched" not in page_of(tmp_path, report, profile)
    for key in ("labels_given", "labels_joined"):
        report.pop(key)
    assert "labels matched" not in page_of(tmp_path, report, profile)


def test_an_unreadable_file_reads_skipped_once(tmp_path):
    """jobs.monitor_logs' warning ends "; skipped" and the header put "skipped: " before it: said twice."""
    entry = ("/logs/part-20261207T211458-h75qn6ou-000000.parquet: not a complete Parquet file (Parquet magic bytes "
             "not found in footer. Either the file is corrupted or this is not a parquet file.); skipped")
    report, profile = real_report([{"rows": 600}], skipped=[entry])
    page = page_of(tmp_path, report, profile)
    assert page.count("skipped") == 0, page.count("skipped")
    assert f"unreadable log files, left out:</p><ul><li>{html.escape(entry.removesuffix('; skipped'))}</li>" in page


def test_the_page_reads_as_one_with_every_caveat(tmp_path):
    """All at once, the page still opens with its verdict, and each caveat is on a line of its own."""
    report, profile = real_report([{"rows": 600, "labelled": 500, "other": 50}, {"rows": 400, "labelled": 3},
                                   {"rows": 10}], labels_given=600, skipped=["/x/part.parquet: unreadable; skipped"])
    page = page_of(tmp_path, report, profile)
    head = page.split("<h2>")[0]
    assert re.search(r"<h1 class='(ok|retrain)'>", head)
    assert head.count("<p class='caveat'>") == 3, head
