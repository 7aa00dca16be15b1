"""What the monitor job's Ray tasks compute: a block of prediction-log files → one summary per time window, and
the merge of summaries (`jobs.monitor` runs them with Ray Data and judges the merged windows).

A summary holds what aggregates exactly (numeric bin counts on the profile's edges, category counts, missing
counts, prediction counts, a confusion matrix of the joined labels and, for a binary model, the counts of its
probabilities by true class) plus bounded uniform samples: each numeric
feature's values (`SAMPLE_K` per window) for the Kolmogorov-Smirnov test, which needs values (a few thousand
are as good as millions for it), and for regression (label, prediction) pairs. A sample keeps the values with
the k smallest random keys (bottom-k), so the union of two samples cut to k again is a uniform sample of the
union: merging in any order gives the same result.
"""
from __future__ import annotations

import base64
import json
import zlib
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs import drift
from jobs.watched import FEATURE_PREFIX, PROBABILITIES

SAMPLE_K = 5000            # numeric values kept per window and feature for KS (a uniform sample)
PAIRS_K = 20000            # regression (label, prediction) pairs kept per window for the realised metrics
# The window of a log file a summary task could not read: its slice is the file's path, its summary the error.
UNREADABLE = -(2 ** 62)
READ_ROWS = 65536          # rows read at a time from a log file: a task's memory stays bounded whatever the file
# A binary model's labelled rows are counted by P(second class) on these bins of its log-odds, apart by true class:
# the realised ROC-AUC from the counts (`jobs.metrics.binned_auc`) is exact but for pairs within one bin (counted
# as ties, which pulls it towards 0.5): 0.01 of log-odds is a 1 % change in the odds, and the ends hold odds
# beyond e^±12 (p < 6e-6). Measured against the exact AUC on 20,000 rows: within 0.001 for log-odds with a standard
# deviation of 0.05 or more, 0.003 at 0.02 (bins of 0.05 were 0.019 off at 0.05).
SCORE_EDGES = np.linspace(-12.0, 12.0, 2401)


@dataclass(frozen=True)
class Plan:
    """What each block's summary needs of the profile; shipped to the Ray tasks (plain data)."""

    window_ms: int
    numeric: dict[str, list[float]]            # feature → inner bin edges
    categorical: dict[str, list[str]]          # feature → known categories
    task: str
    classes: Optional[list[str]]               # canonical class names (classification)
    prediction_edges: Optional[list[float]]    # regression
    score_edges: Optional[list[float]] = None  # a binary model's probability of a class (profile "score") ...
    score_index: int = 1                       # ... of this class: its cut-off's positive class, else the second
    # The version of the bundle judged: its labelled rows alone give the realised metrics and its probabilities
    # alone are judged against its profile (another version answers by its own cut-off and model). None: all rows.
    version: Optional[str] = None
    # feature → (low, high): past these a value is outside the train split's range (`jobs.tabular.range_bounds`)
    ranges: Optional[dict[str, tuple[float, float]]] = None
    # `trainyard monitor --by`: the log column (keep.<name> or a category's feature.<name>) whose values (`by_values`,
    # canonical text: the most frequent) are each summarised apart too, as slices of each window
    by: Optional[str] = None
    by_values: tuple[str, ...] = ()


def _sample(keys: np.ndarray, values: np.ndarray, k: int) -> str:
    """The values with the k smallest keys, packed with their keys as rows (key, value...) of float64, base64:
    JSON of the numbers themselves took most of the job's time (a window's sample is 5,000 values a feature)."""
    rows = np.column_stack([keys, values]).astype(np.float64)
    if len(rows) > k:
        rows = rows[np.argpartition(rows[:, 0], k)[:k]]
    return base64.b64encode(np.ascontiguousarray(rows).tobytes()).decode() + f":{rows.shape[1]}"


def sample_rows(packed: str) -> np.ndarray:
    """A packed sample → its rows (key, value...)."""
    data, width = packed.rsplit(":", 1)
    return np.frombuffer(base64.b64decode(data), dtype=np.float64).reshape(-1, int(width))


WEEK_MS = 7 * 86_400_000
_MONDAY_MS = 4 * 86_400_000         # 1970-01-01 was a Thursday; 1970-01-05 a Monday


def window_start(ms, window_ms: int):
    """The start of the window that holds each time (ms since 1970, UTC; an int or an int64 array). Windows are
    aligned to 1970-01-01 UTC (days at midnight, hours on the hour), and windows of whole weeks to a Monday, as
    ISO weeks are (aligned to 1970 they started on Thursdays)."""
    offset = _MONDAY_MS if window_ms % WEEK_MS == 0 else 0
    return (ms - offset) // window_ms * window_ms + offset


def summarise(batch: pa.Table, plan: Plan, labels: Optional[pa.Table] = None) -> pa.Table:
    """One block of log rows → one row per time window it touches: (window start ms, slice ("" for all rows, "=v"
    for the rows of `--by` value v), JSON summary). `labels`:
    (request_id, record, label), keys typed as the logs' (`summarise_files` casts them once)."""
    if PROBABILITIES in batch.column_names:    # a list column passes no join: the value counted instead
        batch = batch.set_column(batch.column_names.index(PROBABILITIES), PROBABILITIES,
                                 _second_probability(batch[PROBABILITIES]))
    if labels is not None:      # joined: the labels of this block's requests only
        ids = batch["request_id"]
        mine = labels.filter(pc.is_in(labels["request_id"], value_set=ids.combine_chunks()
                                      if isinstance(ids, pa.ChunkedArray) else ids))
        batch = batch.join(mine, keys=["request_id", "record"], join_type="left outer")
    times = pc.cast(pc.cast(batch["time"], pa.timestamp("ms", tz="UTC")), pa.int64()).to_numpy(zero_copy_only=False)
    has_time = ~np.isnan(times.astype(np.float64)) if times.dtype.kind == "f" else np.ones(len(times), bool)
    starts = window_start(np.nan_to_num(times, nan=0).astype(np.int64), plan.window_ms)
    first = batch["request_id"][0].as_py() if len(batch) else ""
    rng = np.random.default_rng(zlib.crc32(f"{first}:{len(batch)}".encode()))
    names = set(batch.column_names)
    windows, slices, payloads = [], [], []
    by = None           # each row's position in plan.by_values, -1 for none (one pass, not one per value)
    if plan.by and plan.by in names:
        by = pc.fill_null(pc.index_in(pc.cast(batch[plan.by], pa.string()),
                                      value_set=pa.array(plan.by_values, pa.string())), -1).to_numpy(
            zero_copy_only=False)
    for start in np.unique(starts[has_time]):
        rows = has_time & (starts == start)
        parts = [("", batch.filter(pa.array(rows)))]
        if by is not None:          # the window's rows of each value apart, too (`--by`)
            for k, value in enumerate(plan.by_values):
                mine = rows & (by == k)
                if mine.any():
                    parts.append(("=" + value, batch.filter(pa.array(mine))))
        for key, part in parts:
            windows.append(int(start))
            slices.append(key)
            payloads.append(json.dumps(_summary(part, plan, names, rng, labels)))
    return pa.table({"window": pa.array(windows, pa.int64()), "slice": pa.array(slices, pa.string()),
                     "summary": pa.array(payloads, pa.string())})


def _summary(part: pa.Table, plan: Plan, names: set, rng: np.random.Generator, labels: Optional[pa.Table]) -> dict:
    """The summary of one window's rows (of one `--by` value, or all)."""
    summary: dict[str, Any] = {"n": len(part), "numeric": {}, "categorical": {}}
    if "model_version" in names:       # which bundle served them: an update mid-window mixes two
        versions = pc.cast(part["model_version"], pa.string())
        summary["versions"] = {**_value_counts(versions), **({"": versions.null_count} if versions.null_count else {})}
    for name, edges in plan.numeric.items():
        if FEATURE_PREFIX + name not in names:
            continue
        values = part[FEATURE_PREFIX + name].to_numpy(zero_copy_only=False).astype(np.float64)
        seen = values[~np.isnan(values)]
        counts = np.bincount(drift.bin_index(seen, edges), minlength=len(edges) + 1)
        summary["numeric"][name] = {"counts": counts.tolist(), "missing": int(len(values) - len(seen)),
                                    "sample": _sample(rng.random(len(seen)), seen, SAMPLE_K)}
        if plan.ranges and name in plan.ranges:
            low, high = plan.ranges[name]
            summary["numeric"][name]["outside"] = int(np.sum((seen < low) | (seen > high)))
    for name in plan.categorical:
        if FEATURE_PREFIX + name in names:
            column = pc.cast(part[FEATURE_PREFIX + name], pa.string())
            summary["categorical"][name] = {"counts": _value_counts(column), "missing": column.null_count}
    prediction = part["prediction"]
    if plan.task == "classification":
        summary["prediction"] = {"counts": _value_counts(pc.cast(prediction, pa.string()))}
    else:
        values = prediction.to_numpy(zero_copy_only=False).astype(np.float64)
        values = values[~np.isnan(values)]
        summary["prediction"] = {"counts": np.bincount(drift.bin_index(values, plan.prediction_edges),
                                                       minlength=len(plan.prediction_edges) + 1).tolist(),
                                 "sample": _sample(rng.random(len(values)), values, SAMPLE_K)}
    if plan.score_edges is not None and PROBABILITIES in names:
        values = part.filter(_of_version(part, plan))[PROBABILITIES].to_numpy(zero_copy_only=False).astype(
            np.float64)
        held = values[~np.isnan(values)]         # rows logged without probabilities are not counted
        held = held if plan.score_index == 1 else 1.0 - held
        summary["score"] = {"counts": np.bincount(drift.bin_index(held, plan.score_edges),
                                                  minlength=len(plan.score_edges) + 1).tolist(),
                            "missing": 0, "sum": float(held.sum()),
                            "sample": _sample(rng.random(len(held)), held, SAMPLE_K)}
    if labels is not None:
        summary["labels"] = _label_summary(part, plan, rng)
    return summary


def _keys_typed_as(labels: Optional[pa.Table], logs: pa.Schema) -> Optional[pa.Table]:
    """The labels with their keys (request_id, record) of the logs' types: cast when they differ (once per task:
    every log file serve.log writes has the same types, string and int32, as `jobs.monitor.read_labels` gives)."""
    if labels is None:
        return None
    keys = pa.schema([logs.field("request_id"), logs.field("record"), labels.schema.field("label")])
    return labels if labels.schema.types == keys.types else labels.cast(keys)


def _value_counts(column) -> dict[str, int]:
    counts = pc.value_counts(column.drop_null() if hasattr(column, "drop_null") else column)
    return {v.as_py(): c.as_py() for v, c in zip(counts.field("values"), counts.field("counts"))}


def _label_summary(part: pa.Table, plan: Plan, rng: np.random.Generator) -> dict:
    """The labelled rows of one window: a confusion matrix (classes), or a sample of (label, prediction)."""
    labelled = part.filter(pc.is_valid(part["label"]))
    mine = _of_version(labelled, plan)
    others = len(labelled) - int(np.sum(mine))
    labelled = labelled.filter(mine)
    if plan.task == "classification":
        index = {c: i for i, c in enumerate(plan.classes)}
        truth = [index.get(v, -1) for v in labelled["label"].to_pylist()]
        predicted = [index.get(v, -1) for v in pc.cast(labelled["prediction"], pa.string()).to_pylist()]
        cm = np.zeros((len(plan.classes), len(plan.classes)), dtype=np.int64)
        for t, p in zip(truth, predicted):
            if t >= 0 and p >= 0:
                cm[t, p] += 1
        out = {"confusion": cm.tolist(), "other_versions": others}
        if len(plan.classes) == 2:
            out["scores"] = _scores(labelled, np.asarray(truth, dtype=np.int64))
        return out
    pairs = np.column_stack([labelled["label"].to_numpy(zero_copy_only=False).astype(np.float64),
                             labelled["prediction"].to_numpy(zero_copy_only=False).astype(np.float64)])
    return {"pairs": _sample(rng.random(len(pairs)), pairs, PAIRS_K), "labelled": len(pairs), "other_versions": others}


def _of_version(part: pa.Table, plan: Plan) -> np.ndarray:
    """Which rows the judged bundle's version answered (every row where the logs name no version at all)."""
    if plan.version is None or "model_version" not in part.column_names:
        return np.ones(len(part), dtype=bool)
    same = pc.equal(pc.cast(part["model_version"], pa.string()), plan.version)
    return pc.fill_null(same, False).to_numpy(zero_copy_only=False).astype(bool)


def _second_probability(column) -> pa.Array:
    """A log's `probabilities` column → each row's probability of the second class (float64; null where a row
    holds no two): the value the AUC and the score's drift count."""
    lists = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    offsets = lists.offsets.to_numpy()          # into `values`, the slice's offset applied
    values = lists.values.to_numpy(zero_copy_only=False).astype(np.float64)
    two = (np.diff(offsets) == 2) & lists.is_valid().to_numpy(zero_copy_only=False)
    second = np.full(len(lists), np.nan)
    second[two] = values[offsets[:-1][two] + 1]
    return pa.array(second, pa.float64(), from_pandas=True)


def _scores(labelled: pa.Table, truth: np.ndarray) -> list[list[int]]:
    """[negatives, positives]: the labelled rows' counts of P(second class) on `SCORE_EDGES` of its log-odds, by
    true class; rows without both probabilities (logs from before they were written, a class not the model's) are
    not counted."""
    if PROBABILITIES not in labelled.column_names or not len(truth):
        return np.zeros((2, len(SCORE_EDGES) + 1), dtype=np.int64).tolist()
    p = labelled[PROBABILITIES].to_numpy(zero_copy_only=False).astype(np.float64)
    keep = ~np.isnan(p) & (truth >= 0)
    with np.errstate(divide="ignore"):
        log_odds = np.log(np.clip(p[keep], 0.0, 1.0)) - np.log1p(-np.clip(p[keep], 0.0, 1.0))
    bins = len(SCORE_EDGES) + 1
    slots = truth[keep] * bins + np.searchsorted(SCORE_EDGES, log_odds, side="right")     # one bincount, not add.at
    return np.bincount(slots, minlength=2 * bins).reshape(2, bins).tolist()


def merge(group: pd.DataFrame) -> pd.DataFrame:
    """All summaries of one window → one (exact sums; the samples' bottom-k of the union is a uniform sample)."""
    parts = [json.loads(s) for s in group["summary"]]
    out = parts[0]
    for part in parts[1:]:
        out["n"] += part["n"]
        if "versions" in part:
            out["versions"] = {**out.get("versions", {}), **{v: out.get("versions", {}).get(v, 0) + c
                                                            for v, c in part["versions"].items()}}
        for kind in ("numeric", "categorical"):
            for name, stats in part[kind].items():
                out[kind][name] = _merge_one(out[kind].get(name), stats)
        out["prediction"] = _merge_one(out["prediction"], part["prediction"])
        if "score" in part:
            out["score"] = _merge_one(out.get("score"), part["score"])
        if "labels" in part:
            out["labels"] = _merge_one(out["labels"], part["labels"])
    return pd.DataFrame({"window": [int(group["window"].iloc[0])],
                         "slice": [group["slice"].iloc[0] if "slice" in group else ""], "summary": [json.dumps(out)]})


def _merge_one(a: Optional[dict], b: dict) -> dict:
    if a is None:
        return b
    out = dict(a)
    for key, value in b.items():
        if key == "counts" and isinstance(value, dict):
            out[key] = {**a[key], **{k: a[key].get(k, 0) + v for k, v in value.items()}}
        elif key in ("counts", "confusion", "scores"):
            out[key] = (np.asarray(a[key]) + np.asarray(value)).tolist()
        elif key in ("missing", "other_versions", "outside", "labelled", "sum"):
            out[key] = a[key] + value
    for values in ("sample", "pairs"):
        if values in b:
            rows = np.concatenate([sample_rows(a[values]), sample_rows(b[values])])
            out[values] = _sample(rows[:, 0], rows[:, 1:], SAMPLE_K if values == "sample" else PAIRS_K)
    return out



class _Unreadable(Exception):
    """A log file's data did not read (`_read`)."""


def _read(filesystem, path: str, columns: list[str]):
    """The batches of a log file (`columns` it holds, `READ_ROWS` at a time); a failure to read them raises
    _Unreadable. A feature a version did not take is not in its files: their rows are left out of its statistics
    (`summarise` skips a column the block lacks), not counted as missing values of it."""
    try:
        with filesystem.open_input_file(path) as f:
            file = pq.ParquetFile(f)
            batches = file.iter_batches(batch_size=READ_ROWS, columns=[c for c in columns
                                                                       if c in file.schema_arrow.names])
            while True:
                try:
                    rows = next(batches)
                except StopIteration:
                    return
                yield rows
    except (OSError, pa.ArrowException) as exc:
        raise _Unreadable(str(exc)) from exc


def summarise_files(batch: pa.Table, plan: Plan, columns: list[str], filesystem,
                    labels: Optional[pa.Table] = None) -> pa.Table:
    """A block of log file paths (column `path`) → one summary row per window: each file read `READ_ROWS` at a
    time (only `columns`), each piece summarised, the pieces merged per window here so that a task returns a
    few rows whatever it read."""
    pieces = []
    for path in batch["path"].to_pylist():
        own = []
        try:
            for rows in _read(filesystem, path, columns):
                labels = _keys_typed_as(labels, rows.schema)
                own.append(summarise(pa.Table.from_batches([rows]), plan, labels))
        except _Unreadable as exc:
            # Its footer read, its pages did not (a scrambled copy): the file is left out and named, as a truncated
            # one is (`jobs.monitor_logs.unreadable_files`); it failed the whole job without naming it. Only the
            # reading: an error of the labels' cast or of a summary is the job's, as before.
            own = [pa.table({"window": pa.array([UNREADABLE], pa.int64()), "slice": [path],
                             "summary": [json.dumps({"error": str(exc).strip().splitlines()[0][:300]})]})]
        pieces += own
    windows = pa.concat_tables(pieces) if pieces else None
    if windows is None or windows.num_rows == 0:     # no file, or no row with a time
        return pa.table({"window": pa.array([], pa.int64()), "slice": pa.array([], pa.string()),
                         "summary": pa.array([], pa.string())})
    merged = [merge(group) for _, group in windows.to_pandas().groupby(["window", "slice"])]
    return pa.Table.from_pandas(pd.concat(merged, ignore_index=True), preserve_index=False)
