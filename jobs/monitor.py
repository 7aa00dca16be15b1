"""The monitor job: prediction logs → per time window drift against the bundle's profile, realised metrics when
labels are given, and a verdict (fine / retrain) that cron or CI can act on.

    run_monitor(bundle, logs, labels=None, window="1d", out="monitor") -> MonitorResult

The inputs are checked first, in this process and before Ray starts (the logs' Parquet footers: a truncated file
is skipped with a warning; a file without a column every log holds, a labels file without request_id or label,
is bad input naming the file and column). Then one Ray Data job over the log files (`serving` writes them: see
`LOG_COLUMNS`): a dataset of the file paths whose tasks read their files and summarise them per time window
(`jobs.monitor_summary`: counts that aggregate exactly, and a bounded uniform sample of each numeric feature for
KS), reduced per window by a groupby on the window column. `jobs.monitor_stats` judges each merged window with
`jobs.drift`'s statistics: PSI, chi-squared, missing and unknown rates over every row, KS over the sample (5,000
values a window), and the realised metrics of its labelled rows.

Why the tasks read the files themselves rather than `ray.data.read_parquet`: the footers are already read
here, and Ray 2.60's Parquet datasource spends seconds listing and planning before the first row (an identity
pass over 4 files took 5-14 s against 0.6 s for a dataset of the paths, on the loaded 2-core machine).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from cluster.errors import Failure, root_cause
from jobs import drift
from jobs.fitted import canonical
from jobs.fitted import pull_shuffle
from jobs.monitor_logs import (LOG_COLUMNS, NO_TRAFFIC, VERSION_COLUMN, MonitorInputError,  # noqa: F401
                               NoTrafficSince, _iso, case_only, check_out, log_files, several_records,
                               unreadable_files)
from jobs.monitor_slices import by_column, judge, top_values
from jobs.monitor_stats import (crossed, policy_bar, reference_auc, reference_metric, reference_recalls, window_line,
                                window_stats)
from jobs.monitor_summary import UNREADABLE, Plan, merge, summarise_files, window_start
from jobs.spec import window_seconds
from jobs.tabular import range_bounds, training_ranges
from jobs.watched import FEATURE_PREFIX, PROBABILITIES

EXIT_RETRAIN = 3


@dataclass
class MonitorResult:
    report: dict                       # what OUT/drift.json holds
    verdict: str                       # "ok" or "retrain"
    reasons: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)   # unreadable log files, with why

    @property
    def exit_code(self) -> int:
        return EXIT_RETRAIN if self.verdict == "retrain" else 0


def parse_window(text: str) -> int:
    """'1d', '12h', '30m', '90s', '1w' (the spec's `monitor.window` form) → milliseconds."""
    try:
        return int(round(window_seconds(text) * 1000))
    except ValueError as exc:
        raise MonitorInputError(f"--window: {exc}") from None


# ---------------------------------------------------------------------------------------------- inputs
def read_labels(path: str, classes: Optional[list], progress: Callable[[str], None] = print,
                label_name: Optional[str] = None, several: Callable[[], bool] = lambda: False) -> pa.Table:
    """The labels file (Parquet or CSV: request_id, optional record (default 0), label) as a table of
    request_id (string), record (int32), label (string for classes, float64 for regression), one row per key.
    Empty labels (not known yet) are left out and a key given twice keeps its last label: both are counted in a
    line to `progress`; a label that is not a class of the bundle (or not a number, for regression) is refused.
    `several`: whether the logs hold requests of several records (`jobs.monitor_logs.several_records`), asked
    when a file without `record` gives a request id more than once."""
    local = "://" not in path
    kind = "parquet" if not local or Path(path).expanduser().is_dir() else path.lower().rsplit(".", 1)[-1]
    if kind not in ("csv", "parquet", "pq"):        # a folder (or a URI) is read as a Parquet dataset
        raise MonitorInputError(f"--labels {path}: give a .csv or .parquet file, or a folder of Parquet files "
                                "(columns request_id, optional record, label)")
    if local and not Path(path).expanduser().exists():
        raise MonitorInputError(f"--labels {path}: no such file or folder")
    try:
        if kind == "csv":
            table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
                column_types={"request_id": pa.string(), "label": pa.string(),
                              **({label_name: pa.string()} if label_name else {})}))
        else:
            table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise MonitorInputError(f"--labels {path}: cannot read it as {'CSV' if path.endswith('.csv') else 'Parquet'}"
                                f" ({exc})") from None
    given_columns = list(table.column_names)
    read_as = "label"           # the column the labels come from, as the file names it
    if "label" not in table.column_names and label_name in table.column_names:
        read_as = label_name
        # `trainyard predict --out` of rows that held their outcome under the bundle's own label name: its column.
        progress(f"[monitor] --labels {path}: no column 'label'; its column {label_name!r} (the bundle's label) is "
                 "read as the label")
        table = table.rename_columns(["label" if c == label_name else c for c in table.column_names])
    missing = [c for c in ("request_id", "label") if c not in table.column_names]
    if missing:
        # A table of the rows and their outcomes (the data itself) has no request ids to join the logs by.
        join = ("; labels are joined to the logged requests by their ids: `trainyard predict ROWS --out FILE` "
                "writes request_id and record for each row it sends; add the outcomes to that file as a column "
                f"'label' (or {label_name!r})" if "request_id" in missing and label_name else "")
        cased = [f"{g!r} for {c!r}" for c in missing for g in given_columns if g.lower() == c and g != c]
        said = f"column {missing[0]!r} is" if len(missing) == 1 else f"columns {', '.join(map(repr, missing))} are"
        raise MonitorInputError(f"--labels {path}: {said} missing (columns: "
                                f"{', '.join(given_columns)})" + (f"; rename {', '.join(cased)} (names are "
                                                                   "matched exactly)" if cased else "")
                                + f"; labels need request_id, label and optionally record{join}")
    df = table.select([c for c in ("request_id", "record", "label") if c in table.column_names]).to_pandas()
    df["request_id"] = df["request_id"].astype(str)
    if "record" not in df and (twice := df["request_id"][df["request_id"].duplicated()]).size and several():
        # Each of a request's rows is a record of it: without the column, every label of a request of 500 rows was
        # taken for its record 0 (the last one kept), and 497 said "labelled again later". Where every logged
        # request is of one row, a request id given again is a label given again, the last one kept.
        raise MonitorInputError(f"--labels {path}: request_id {twice.iloc[0]!r} is given more than once "
                                f"({twice.nunique():,} request id(s) are) and there is no column 'record', so the "
                                "rows of a request of several records cannot be told apart: keep the column record "
                                "that `trainyard predict --out` writes (for requests of one row, relabelled later "
                                "in the file, add record 0)")
    df["record"] = df["record"].fillna(0).astype("int32") if "record" in df else np.int32(0)
    given = len(df)
    df = df[df["label"].notna() & (df["label"].astype(str).str.strip() != "")]
    empty = given - len(df)
    if classes is not None:
        known = {canonical(c) for c in classes}
        df["label"] = [canonical(v) for v in df["label"].tolist()]
        odd = sorted(set(df["label"]) - known)
        if odd:
            from jobs.spelling import how_alike, look_alike
            # 'Failure' for the class 'failure': said as `evaluate` says it (the case was the whole fix).
            alike = [g for g in look_alike([str(c) for c in classes] + [str(odd[0])]) if str(odd[0]) in g]
            raise MonitorInputError(f"--labels {path}: column {read_as!r} holds {odd[0]!r}, which is not a class of "
                                    f"the bundle (classes: {', '.join(map(repr, classes))})" + (
                                        f"; {' and '.join(map(repr, alike[0]))} {how_alike(alike[0])}: write the "
                                        "labels as the model's classes" if alike else ""))
    else:
        numbers = pd.to_numeric(df["label"], errors="coerce")
        odd = df["label"][numbers.isna() | ~np.isfinite(numbers.astype(float))]
        if len(odd):
            raise MonitorInputError(f"--labels {path}: column {read_as!r} holds {odd.iloc[0]!r} ({len(odd)} such "
                                    "value(s)), which is not a finite number, and this bundle predicts a number")
        df["label"] = numbers.astype("float64")
    unique = df.drop_duplicates(["request_id", "record"], keep="last")
    repeated = len(df) - len(unique)
    if empty or repeated:
        progress(f"[monitor] --labels {path}: " + "; ".join(
            ([f"{empty:,} empty label(s) left out (not known yet)"] if empty else []) +
            ([f"{repeated:,} label(s) for a (request_id, record) labelled again later in the file: the last one "
              "given is used"] if repeated else [])))
    # The summaries cast labels to (request_id, record, label) in that order: a record column added above is last.
    return pa.Table.from_pandas(unique[["request_id", "record", "label"]], preserve_index=False)


# ---------------------------------------------------------------------------------------------- statistics
def monitor_settings(bundle_dir: Path) -> tuple["drift.Thresholds", str]:
    """The thresholds and window of the bundle's spec (`jobs.drift.bundle_monitor_settings`); bad input naming
    the file when it does not read."""
    try:
        return drift.bundle_monitor_settings((bundle_dir / "spec.yaml").read_text())
    except (OSError, ValueError) as exc:
        raise MonitorInputError(f"{bundle_dir / 'spec.yaml'}: {exc}") from None


# ---------------------------------------------------------------------------------------------- the job
def summarise_logs(fs, files: list[str], columns: list[str], plan: Plan, labels: Optional[pa.Table] = None,
                   parallelism: Optional[int] = None) -> dict:
    """The Ray Data job: summarise each block of log files per window, merge per window: {window start: summary},
    and with `plan.by` {(window start, value): summary} for its values too; and the files that could not be read,
    (path, error). `parallelism`: the number of blocks of files and of concurrent summary tasks (default: Ray
    Data's choice)."""
    import ray

    paths = ray.data.from_items([{"path": p} for p in files],
                                override_num_blocks=min(parallelism, len(files)) if parallelism else None)
    partials = paths.map_batches(summarise_files, batch_format="pyarrow", batch_size=None,
                                 compute=ray.data.TaskPoolStrategy(size=parallelism) if parallelism else None,
                                 fn_kwargs={"plan": plan, "columns": columns, "filesystem": fs, "labels": labels})
    # A few summaries per window to merge: the sort-based pull shuffle runs on the workers already there.
    with pull_shuffle(partials):
        rows = partials.groupby(["window", "slice"]).map_groups(merge, batch_format="pandas").take_all()
    return {(int(r["window"]), r["slice"][1:]) if r["slice"] else int(r["window"]): json.loads(r["summary"])
            for r in rows if r["window"] != UNREADABLE}, [(r["slice"], json.loads(r["summary"])["error"])
                                                           for r in rows if r["window"] == UNREADABLE]


def parse_since(text: str, now_ms: Optional[int] = None) -> int:
    """`--since`: an ISO date or time (2026-11-01, 2026-11-01T08:00, UTC unless it says its zone), or a span back
    from now (7d, 12h: `monitor.window`'s form) → milliseconds since 1970."""
    import time

    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    try:
        return now_ms - int(round(window_seconds(text) * 1000))
    except ValueError as exc:
        if "at most" in str(exc):        # a span, too long: its own message, not the ISO form's
            raise MonitorInputError(f"--since {text!r}: a span back from now of at most 520w (ten years)") from None
    try:            # ISO only: pandas also read '11/04/2026' month first, and 'today' as local midnight
        # A trailing Z (what the split's messages write) is UTC; Python 3.10's fromisoformat did not take it.
        t = datetime.fromisoformat(text.strip()[:-1] + "+00:00" if text.strip().endswith("Z") else text.strip())
    except ValueError:
        raise MonitorInputError(f"--since {text!r}: give an ISO date or time (2026-11-01, 2026-11-01T08:00, UTC "
                                "unless it names its zone) or a span back from now (7d, 12h)") from None
    return int((t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t).timestamp() * 1000)


def _labels_in(summary: dict) -> int:
    """The labels a window's summary joined (its version's rows and other versions')."""
    labels = summary.get("labels") or {}
    return int(np.sum(labels.get("confusion", 0))) + labels.get("labelled", 0) + labels.get("other_versions", 0)


def run_monitor(bundle_path: str, logs: str, labels: Optional[str] = None, window: Optional[str] = None,
                out: Optional[str] = "monitor", progress: Callable[[str], None] = print,
                parallelism: Optional[int] = None, connect: Callable[[], Any] = lambda: None,
                since: Optional[str] = None, by: Optional[str] = None,
                labels_since: Optional[str] = None) -> MonitorResult:
    """The whole job: check the inputs (before `connect` starts or joins Ray: bad input costs no Ray start),
    summarise the logs with Ray Data, judge each window (from the one that holds `since`, when given: a cron job
    over logs that keep growing is judged on its recent traffic, not forever on a window long handled), write
    OUT/drift.json and OUT/report.html (unless `out` is None). Bad input raises MonitorInputError (exit 2)."""
    import time

    from jobs import bundle as bundles
    from jobs.monitor_report import write_report

    now_ms = int(time.time() * 1000)        # one now for every span back from it
    if since and labels_since and parse_since(labels_since, now_ms) >= parse_since(since, now_ms):   # passed over
        raise MonitorInputError(f"--labels-since {labels_since}: it is not earlier than --since {since}; it names "
                                "the windows before --since's that are judged on their labels alone (e.g. --since 1d "
                                "--labels-since 35d)")
    bundle = bundles.load(bundle_path)
    profile = bundle.profile
    if not profile:
        raise MonitorInputError(f"{bundle.path} has no profile.json (a bundle from before monitoring): train it "
                                "again with this trainyard to give it the reference the monitor compares with")
    thresholds, spec_window = monitor_settings(bundle.path)
    window = window or spec_window
    window_ms = parse_window(window)
    since_ms = parse_since(since, now_ms) if since else None
    since_window = window_start(since_ms, window_ms) if since_ms is not None else None      # windows are whole
    if since_window is not None and since_window > now_ms:      # a typo, not a quiet period (exit 4)
        raise MonitorInputError(f"--since {since}: its window starts {_iso(since_window, window_ms)}, in the future "
                                f"(now {_iso(now_ms, 1000)}); give a time the logs can hold")
    # `--labels-since`: windows from its time to --since's are judged on their labels alone (labels arrive weeks
    # after the traffic; --since 1d alone never saw a window that had them, --since 31d judged old drift daily).
    if labels_since and not (labels and since):
        raise MonitorInputError("--labels-since: it judges the windows before --since's on the labels they got "
                                "since; give --labels and --since with it")
    labels_window = (min(window_start(parse_since(labels_since, now_ms), window_ms), since_window) if labels_since
                     else since_window)
    out_dir = check_out(out) if out else None      # said before Ray, not after the whole job
    earlier_files = [0]         # rows of log files wholly before --since's window: left unread
    footers: dict = {}          # the log files' footers, read once (`log_files`)
    fs, files, skipped, total, columns = log_files(logs, progress, earlier_files, labels_window, footers)
    by_col = by_column(by, columns, profile) if by else None       # `--by`: said before Ray, as the rest
    logged = {c[len(FEATURE_PREFIX):] for c in columns if c.startswith(FEATURE_PREFIX)}
    numeric = {n: ref["edges"] for n, ref in profile["numeric"].items() if n in logged}
    categorical = {n: list(ref["shares"]) for n, ref in profile["categorical"].items() if n in logged}
    not_logged = sorted((set(profile["numeric"]) | set(profile["categorical"])) - logged)
    if not_logged:
        progress(f"[monitor] note: not in the logs, so not checked: {', '.join(not_logged)} (left out by "
                 "serve.log.exclude, or the logs are of a version that did not take them)")
    for n in (*numeric, *categorical):
        has_files, has_rows = columns[FEATURE_PREFIX + n]
        if has_files < len(files):
            # A version that did not take the feature (a column renamed) served these rows: judged as missing.
            progress(f"[monitor] note: {n} is not in {len(files) - has_files} of {len(files)} log file(s) "
                     f"({total - has_rows:,} of {total:,} rows, served by a version that did not take it?): it is "
                     f"judged on the {has_rows:,} rows that hold it")
    pred = profile["prediction"]
    logged_scores = PROBABILITIES in columns and "score" in pred     # a binary model's, against its profile's
    if PROBABILITIES in columns and "score" not in pred and len(pred.get("classes") or []) == 2:
        progress(f"[monitor] note: {bundle.path} has no profile of its probabilities (written before they were "
                 "profiled), so the logged ones are not judged for drift; a bundle trained by this trainyard has it")
    plan = Plan(window_ms, numeric, categorical, pred["task"],
                [canonical(c) for c in pred.get("classes", [])] or None, pred.get("edges"),
                pred["score"]["edges"] if logged_scores else None, int(pred.get("score", {}).get("index", 1)),
                bundle.version,
                {name: range_bounds(lo, hi) for name, lo, hi in training_ranges(bundle.preprocessor) if name in numeric})
    if by_col:
        values, counted = top_values(fs, files, by_col, since_ms=since_window)
        if not values:
            raise MonitorInputError(f"--by {by}: no logged row has a value of it ({counted['rows']:,} rows read)")
        plan = replace(plan, by=by_col, by_values=tuple(values))
    label_table = (read_labels(labels, plan.classes if plan.task == "classification" else None, progress,
                               bundle.preprocessor.label, lambda: several_records(fs, files, footers))
                   if labels else None)
    progress(f"[monitor] {len(files)} log file(s), {total:,} rows, {len(numeric) + len(categorical)} feature(s)"
             f" against bundle {bundle.version}; windows of {window}"
             + (f"; {label_table.num_rows:,} labels" if label_table is not None else ""))
    scored = label_table is not None and len(plan.classes or []) == 2
    if scored and PROBABILITIES not in columns:
        progress("[monitor] note: the logs hold no probabilities (written by a trainyard from before they were "
                 "logged), so the labels give accuracy" + (" and the cut-off's recall" if bundle.preprocessor.decision
                                                           else "") + ", not the realised ROC-AUC")
    elif scored and columns[PROBABILITIES][0] < len(files):
        has_files, has_rows = columns[PROBABILITIES]
        progress(f"[monitor] note: {len(files) - has_files} of {len(files)} log file(s) ({total - has_rows:,} rows) "
                 "hold no probabilities (written before they were logged): the realised ROC-AUC is of the rest")
    read = ([c for c in LOG_COLUMNS] + [VERSION_COLUMN] * (VERSION_COLUMN in columns)
            + [PROBABILITIES] * ((scored and PROBABILITIES in columns) or logged_scores)
            + [FEATURE_PREFIX + n for n in (*numeric, *categorical)])
    read += [by_col] if by_col and by_col not in read else []
    connect()
    began = time.monotonic()
    try:
        summaries, failed = summarise_logs(fs, files, read, plan, label_table, parallelism)
    except Exception as exc:   # a Ray task's error: the message, not Ray's traceback
        raise Failure(f"the monitor job failed while reading {logs}: {root_cause(exc)}") from exc
    elapsed = time.monotonic() - began
    total -= unreadable_files(fs, failed, skipped, progress, footers)
    # Windows alone: `--by`'s (window, value) summaries counted among them made 1 window read as 21.
    windowed = sum(not isinstance(key, tuple) for key in summaries)
    progress(f"[monitor] summarised {total:,} rows into {windowed} window(s) in {elapsed:.1f} s "
             f"({total / max(elapsed, 1e-9):,.0f} rows/s)")
    sliced = {key: s for key, s in summaries.items()        # `--by`: (window start, value) → summary
              if isinstance(key, tuple) and (since_window is None or key[0] >= since_window)}
    summaries = {key: s for key, s in summaries.items() if not isinstance(key, tuple)}
    untimed = total - sum(s["n"] for s in summaries.values())
    if not summaries and failed and len(failed) == len(files):
        raise MonitorInputError(f"--logs {logs}: no log file's data could be read (the warnings above name them)")
    if not summaries:
        raise MonitorInputError(f"--logs {logs}: none of the {total:,} rows has a time (column 'time' is empty in "
                                "every row), so none falls in a window; serve.log writes one in every row: point "
                                "--logs at its folder, or fill the column")
    if untimed:
        progress(f"[monitor] warning: {untimed:,} of {total:,} rows have no time (column 'time' is empty) and "
                 "fall in no window: they are left out")
    earlier = {start: summaries.pop(start) for start in sorted(summaries)
               if since_window is not None and start < since_window}
    late = {start: earlier.pop(start) for start in list(earlier)     # `--labels-since`'s windows, with labels
            if start >= labels_window and _labels_in(earlier[start])}
    before_since = sum(s["n"] for s in earlier.values()) + earlier_files[0]
    if before_since:
        progress(f"[monitor] --since {since}: {before_since:,} earlier row(s) left out"
                 + (f" ({earlier_files[0]:,} in log files wholly before it, not read)" if earlier_files[0] else ""))
    if late:
        progress(f"[monitor] --labels-since {labels_since}: {len(late)} window(s) before --since's judged on their "
                 "labels alone (their drift was judged when they were recent)")
    if not summaries and not late:
        raise NoTrafficSince(f"--since {since}: no logged row from {_iso(since_window, window_ms)}'s window on "
                                f"(the latest window starts {_iso(max(earlier), window_ms)}){NO_TRAFFIC}")
    reference = reference_metric(plan.task, bundle.metrics, (bundle.lineage.get("data") or {}).get(
        "split_rows", {}).get("test"))
    test_auc = reference_auc(bundle.metrics)
    test_recalls = reference_recalls(bundle.metrics)
    decision = with_test_figures(bundle.preprocessor.decision, bundle.metrics)
    if label_table is not None and decision and "target" in decision and policy_bar(decision) < decision["target"]:
        measure = decision["measure"]
        progress(f"[monitor] note: the cut-off's {measure} of {decision['positive']!r} was "
                 f"{decision['test'][measure]:.3f} on the test split, short of the {decision['rule']} it was chosen "
                 f"for (train said so): each window's is judged against {decision['test'][measure]:.3f}. To meet the "
                 "target, choose the cut-off on more validation rows (data.split.val) or a better model")
    n_features = max(len(numeric) + len(categorical), 1)
    windows = []
    for start in sorted({**summaries, **late}):
        stats = window_stats({**summaries, **late}[start], profile, thresholds, n_features, reference, decision,
                             test_auc, test_recalls)
        windows.append({"start": _iso(start, window_ms), "end": _iso(start + window_ms, window_ms), **stats,
                        **(_labels_alone(stats) if start in late else {})})
    if label_table is not None:
        joined = (sum(w["metrics"]["n"] + w["metrics"]["other_versions"] for w in windows)
                  + sum(map(_labels_in, earlier.values())))
        if joined < label_table.num_rows:
            unread = " or of rows before --since in log files left unread" if earlier_files[0] else ""
            progress(f"[monitor] {'note' if unread else 'warning'}: {label_table.num_rows - joined:,} of "
                     f"{label_table.num_rows:,} labels in {labels} match no logged record read (request_id, record): "
                     f"requests not logged (serve.log.sample), labels for other logs{unread}"
                     + (case_only(fs, files, label_table) if not joined else ""))
    for line in _few_outside([w for w in windows if not w.get("labels_only")], thresholds.unknown_rate):
        progress(f"[monitor] note: {line}")
    others = _other_versions(windows, bundle.version)
    if others:
        progress(f"[monitor] note: {others}")
    if label_table is not None and (left := sum(w["metrics"]["other_versions"] for w in windows)):
        progress(f"[monitor] note: {left:,} labelled row(s) were answered by other version(s) than {bundle.version}: "
                 "they are left out of the realised metrics, which judge this version by its own test scores and "
                 "cut-off; give that version's bundle to judge its rows")
    for w in windows:
        progress(window_line(w, reference, decision, thresholds.min_rows, bundle.version)
                 + (" (before --since: judged on its labels alone)" if w.get("labels_only") else ""))
    reasons = [f"{w['start']}: " + ", ".join(what) for w in windows if (what := crossed(w))]
    by_report = None
    if by:      # each value's windows, with every value's tests in the p-value correction
        # Said, not the verdict: a source may always differ from the whole (the exit code is the whole traffic's).
        by_report, _ = judge(by, sliced, lambda s, k: window_stats(s, profile, thresholds, n_features * k, reference,
                                                                  decision, test_auc, test_recalls),
                             lambda ms: _iso(ms, window_ms), window_ms, counted, progress,
                             by_col[len(FEATURE_PREFIX):] if by_col.startswith(FEATURE_PREFIX) else None)
    report = {"format": 1, "bundle": str(bundle.path), "version": bundle.version, "logs": logs, "labels": labels,
              "labels_given": label_table.num_rows if label_table is not None else None,
              "labels_joined": joined if label_table is not None else None,
              "window": window, "files": len(files), "skipped": skipped, "rows": total + earlier_files[0],
              "untimed_rows": untimed, "since": _iso(since_ms, 1000) if since_ms is not None else None,
              "rows_before_since": before_since, "labels_since": _iso(labels_window, window_ms) if late else None,
              "thresholds": asdict(thresholds), "reference_metric": {reference[0]: reference[1]} if reference else None,
              "reference_auc": test_auc,
              "features_not_logged": not_logged, "windows": windows, **({"by": by_report} if by else {}),
              "verdict": "retrain" if reasons else "ok", "reasons": reasons, "seconds": round(elapsed, 3)}
    result = MonitorResult(report, report["verdict"], reasons, skipped)
    if out_dir is not None:
        earlier = out_dir / "drift.json"
        when = datetime.fromtimestamp(earlier.stat().st_mtime) if earlier.is_file() else None
        replaced = (f" (replacing the report written {when:%Y-%m-%d %H:%M:%S} there; give each run its own --out to "
                    "keep both)") if when else ""
        written = []
        try:        # each whole or not at all (a temporary file renamed): one cut short was refused as the user's
            out_dir.mkdir(parents=True, exist_ok=True)
            for name, write in (("drift.json", lambda p: p.write_text(json.dumps(drift.json_safe(report), indent=2,
                                                                                 allow_nan=False))),
                                ("report.html", lambda p: write_report(p, report, profile))):
                write(out_dir / f".{name}.tmp")
                (out_dir / f".{name}.tmp").replace(out_dir / name)
                written.append(name)
        except OSError as exc:     # the verdict stands (the exit code is cron's): said, not a traceback
            progress(f"[monitor] warning: cannot write {out_dir / ('report.html' if written else 'drift.json')} "
                     f"({exc}); the verdict below is " + ("in drift.json alone" if written else "not saved"))
        else:
            progress(f"[monitor] wrote {out_dir / 'drift.json'} and {out_dir / 'report.html'}{replaced}")
    return result


def _labels_alone(stats: dict) -> dict:
    """A window before --since's, judged on its labels alone: its drift flags cleared (said when it was recent)."""
    for feature in stats["features"].values():
        feature["flags"] = []
    stats["prediction"]["flags"] = []
    if "score" in stats["prediction"]:
        stats["prediction"]["score"]["flags"] = []
    return {"flagged": [], "labels_only": True}


def _few_outside(windows: list[dict], rate: float) -> list[str]:
    """Features with values past their training range that no window flagged: too few for monitor.unknown_rate
    (one machine of 60 sending a sensor in other units stays under any share for good), or in windows too small
    to judge; said either way."""
    lines = []
    for name in sorted({n for w in windows for n in w["features"]}):
        stats = [w["features"][name] for w in windows if name in w["features"]]
        outside = sum(s.get("outside") or 0 for s in stats)
        if outside and not any(f.startswith("outside the training range") for s in stats for f in s["flags"]):
            values = sum(int(np.sum(s["counts"])) for s in stats)
            why = (f"too few to flag (monitor.unknown_rate {rate:g}); a source sending other units (one machine, "
                   "one lab) looks like this" if outside / values <= rate else
                   "in windows too small to judge (monitor.min_rows)")
            lines.append(f"{name}: {outside:,} of {values:,} values ({outside / values:.1%}) past its training range, "
                         f"{why}: /predict's out_of_range names the records")
    return lines


def with_test_figures(decision: Optional[dict], metrics: dict) -> Optional[dict]:
    """A binary cut-off (preprocessor.json's) with what it did on the test split (metrics.json's confusion matrix):
    {"test": {"recall", "precision", "positive_rate", "counts": {measure: [hits, of]}}}; as it is without a test
    confusion matrix."""
    cm = np.asarray((metrics.get("test") or {}).get("confusion_matrix") or [], dtype=np.int64)
    if not decision or cm.shape != (2, 2) or not cm.sum():
        return decision
    i = int(decision["positive_index"])
    figures = {"recall": cm[i, i] / cm[i].sum() if cm[i].sum() else None,
               "precision": cm[i, i] / cm[:, i].sum() if cm[:, i].sum() else None,
               "positive_rate": cm[i].sum() / cm.sum()}
    # The counts too: a window is compared with the test split's figure as one sample with another, not with an
    # exact value (44 of 61 is 0.721 give or take 0.057).
    counts = {"recall": [int(cm[i, i]), int(cm[i].sum())], "precision": [int(cm[i, i]), int(cm[:, i].sum())]}
    return {**decision, "test": {**{k: None if v is None else float(v) for k, v in figures.items()},
                                 "counts": counts}}


def _other_versions(windows: list[dict], version: str) -> Optional[str]:
    """Rows served by other bundle versions than the one the traffic is compared with (an update mid-window, or
    logs of an app that has served several), said with their counts; None when every row is `version`'s."""
    served: dict[str, int] = {}
    for w in windows:
        for v, n in (w.get("versions") or {}).items():
            served[v] = served.get(v, 0) + n
    other = {v: n for v, n in served.items() if v != version}
    if not other:
        return None
    rows = sum(other.values())
    listed = ", ".join(f"{v or 'no version logged'}: {n:,}" for v, n in sorted(other.items(), key=lambda kv: -kv[1]))
    return (f"{rows:,} of {sum(served.values()):,} rows were served by other version(s) than {version} ({listed}); "
            "their inputs and answers are compared with this bundle's training data like the rest (drift.json: each "
            "window's versions), their labels and probabilities are not. "
            "To judge one version alone, point --logs at the files of its time, or give that version's bundle")
