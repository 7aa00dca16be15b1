"""Ingest: sharded Parquet/CSV → one Ray Dataset with a reconciled schema, features inferred, split assigned.

`ingest(spec.data)` checks every shard's schema up front (cheap: Parquet footers, the first CSV block), so a
shard missing a column or holding an incompatible type is named before any Ray task runs. It then reads with
Ray Data, drops rows without a label (counted), infers what the spec leaves open and assigns a seeded,
stratified train/val/test split.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import ray

from cluster.errors import root_cause
from cluster.quiet import held_ray_data_errors
from jobs.datafiles import (cast_batch, check_files, column_cells, csv_convert, file_schema, infer_format,
                            resolve_files, stray_cells_where, wanted_columns)
from jobs.infer import (MAX_INFERRED_CLASSES, DataError, confirm_distinct, feature_notes, id_candidates,
                         infer_features, infer_task, infinite_problem, jsonable, merge_probes,
                         number_classes_note, probe, text_label_problem)
from jobs.lake import folder_partitions
from jobs.spec import DataSpec
from jobs.spelling import (case_classes_problem, look_alike, look_alike_note, placeholder_note, placeholders,
                           same_but_case)
from jobs.splits import (NAMES, SPLIT_COLUMN, TEST, TRAIN, VAL, assign_split,  # noqa: F401 (jobs.images)
                         gap_problem, gap_units, order_gaps, order_problem, split_column, split_field, split_key,
                         split_line, split_summary, split_thresholds, stratified_by_groups)


@dataclass
class IngestResult:
    dataset: ray.data.Dataset           # reconciled, label present, with SPLIT_COLUMN; materialized
    files: list[str]
    format: str
    schema: pa.Schema                   # reconciled schema of the used columns (label included)
    label: str
    task: str
    numeric: list[str]
    categorical: list[str]
    classes: Optional[list[Any]]        # classification: sorted label values
    rows_read: int
    rows_dropped_missing_label: int
    split_rows: dict[str, int]
    class_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    inferred: dict[str, str] = field(default_factory=dict)   # what was inferred, and why
    unused_columns: list[str] = field(default_factory=list)
    excluded_columns: list[str] = field(default_factory=list)   # data.features.exclude, as the files have them
    fingerprint: str = ""
    corrupt: list[dict] = field(default_factory=list)         # images: undecodable files (path, error)
    text: list[str] = field(default_factory=list)             # free-text columns (model.kind text)
    missing: dict[str, int] = field(default_factory=dict)     # feature → rows without a value (imputed)
    label_stats: dict[str, float] = field(default_factory=dict)   # regression: `label_stats` of the labelled rows
    split_how: dict = field(default_factory=dict)             # a split by group or time: `jobs.splits.split_summary`

    def split(self, which: int) -> ray.data.Dataset:
        return self.dataset.map_batches(_keep_split, fn_kwargs={"which": which}, batch_format="pyarrow")

    def left_out(self) -> str:
        """The rows read that are in no split, by why: no label, an image that did not decode, a split's gap."""
        said = f"{self.rows_dropped_missing_label} dropped (no label)" + (
            f", {len(self.corrupt)} undecodable skipped" if self.corrupt else "")
        if in_gap := sum(self.split_how.get("in_gap", {}).values()):
            said += f", {in_gap} in data.split.gap left out"
        return said

    def summary(self) -> dict:
        return {"files": len(self.files), "format": self.format, "rows_read": self.rows_read,
                "rows_dropped_missing_label": self.rows_dropped_missing_label, "label": self.label,
                "task": self.task, "classes": self.classes, "numeric": self.numeric,
                "categorical": self.categorical, "text": self.text, "unused_columns": self.unused_columns,
                "excluded_columns": self.excluded_columns,
                "inferred": self.inferred, "split_rows": self.split_rows, "class_counts": self.class_counts,
                "fingerprint": self.fingerprint, "corrupt": self.corrupt, "missing_values": self.missing,
                **({"label_stats": self.label_stats} if self.label_stats else {}),
                **({"split": self.split_how} if self.split_how else {})}


def _keep_split(batch: pa.Table, which: int) -> pa.Table:
    return batch.filter(pc.equal(batch[SPLIT_COLUMN], which)).drop_columns([SPLIT_COLUMN])


# ---------------------------------------------------------------------------------------------- reading
# Ray 2.60's read_parquet (datasource V2) reads the files' footers on a pool of FooterReader actors that every
# execution of the read starts afresh: RAY_DATA_PARQUET_FOOTER_NUM_ACTORS of them, 32 by default, each one a new
# worker process, however few the files (each takes 10 files at a time: RAY_DATA_PARQUET_FOOTER_BATCH_SIZE). On
# 2 cores, 32 process starts cost seconds before the first row and load the machine for longer. read_parquet
# reads the variable while it builds the plan, in this process, so it is set around that call only; a value the
# user exported wins. Checked on Ray 2.60.0 (ray/data/_internal/datasource_v2/formats/parquet/
# footer_file_indexer.py).
_FOOTER_ACTORS_ENV = "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS"
_FILES_PER_FOOTER_READ = 10     # Ray's default RAY_DATA_PARQUET_FOOTER_BATCH_SIZE
_MAX_FOOTER_ACTORS = 32         # Ray's default RAY_DATA_PARQUET_FOOTER_NUM_ACTORS


def read_parquet(files: list[str], **kwargs) -> ray.data.Dataset:
    """`ray.data.read_parquet`, with one footer-reading actor per batch of files it reads (at most Ray's 32)."""
    if os.environ.get(_FOOTER_ACTORS_ENV):
        return ray.data.read_parquet(files, **kwargs)
    os.environ[_FOOTER_ACTORS_ENV] = str(min(_MAX_FOOTER_ACTORS, -(-len(files) // _FILES_PER_FOOTER_READ)))
    try:
        return ray.data.read_parquet(files, **kwargs)
    finally:
        del os.environ[_FOOTER_ACTORS_ENV]


# ---------------------------------------------------------------------------------------------- ingest
def fingerprint(fs: pafs.FileSystem, files: list[str]) -> str:
    h = hashlib.sha256()
    for info in fs.get_file_info(files):
        h.update(f"{info.path}|{info.size}|{info.mtime_ns}".encode())
    return h.hexdigest()[:16]


def ingest(data: DataSpec, *, progress=print, text: bool = False) -> IngestResult:
    """Read, check, infer and split `data`. `text`: the job reads free text (model.kind text), so text columns
    are kept (data.features.text, or inferred: `jobs.infer`)."""
    fs, files, _ = resolve_files(data.path)
    fmt = infer_format(files, data.format)
    exclude = set(data.features.exclude)
    explicit = wanted_columns(data, text)
    schemas = {f: file_schema(fs, f, fmt) for f in files}
    split_by = split_field(data, schemas, fs)       # data.split.by or .order: read for the split alone
    schema = check_files(data, schemas, fmt, text=text, fs=fs)
    read_schema = schema.append(split_by) if split_by is not None else schema
    all_columns = [n for n in next(iter(schemas.values())).names if n not in exclude]
    unused = [c for c in all_columns if explicit is not None and c not in explicit and c != split_column(data)]
    progress(f"[ingest] {len(files)} {fmt} file(s), {len(read_schema)} column(s) read: the label and "
             f"{len(schema) - 1} more" + (f", and {split_by.name!r} for the split" if split_by is not None else ""))
    # Ray Data reads key=value folder names as columns by default, and put a folder's value over the file's own
    # column of that name (`partitioning=None` below): the files' columns are what `predict` and the server read.
    if partitions := folder_partitions(files, {n for s in schemas.values() for n in s.names}, data.path):
        them = "it" if len(partitions) == 1 else "them"
        progress(f"[ingest] note: folder names give {', '.join(partitions)} ({next(iter(partitions.values()))}/), "
                 f"not read: trainyard reads the files' own columns, as predict and the server do; write {them} "
                 f"into the files to use {them}")

    with held_ray_data_errors() as ray_says:
        try:
            if fmt == "parquet":
                # Read as the shards' one schema: Ray Data otherwise merges every file's whole schema first, and
                # a column one shard dictionary-encodes, or an excluded one of another type in a shard (timestamps
                # with and without a time zone), failed the read ("Unable to merge: Field region has
                # incompatible types"), though `check_files` had reconciled the columns used.
                raw = read_parquet(files, filesystem=fs, columns=read_schema.names, schema=read_schema,
                                   partitioning=None)
            else:
                raw = ray.data.read_csv(files, filesystem=fs, partitioning=None,
                                        convert_options=csv_convert(include_columns=read_schema.names,
                                                                    column_types=read_schema))
            ds = raw.map_batches(cast_batch, fn_kwargs={"schema": read_schema, "label": data.label},
                                 batch_format="pyarrow").materialize()
        except Exception as exc:
            found = _csv_value_error(fs, files, read_schema, split_column(data)) if fmt == "csv" else None
            if found is None:
                ray_says.release()      # an error only Ray's traceback explains: shown, then ours
            raise DataError(found or f"reading {data.path!r} failed: {root_cause(exc)}") from None
    rows_read = ds.count()
    if rows_read == 0:
        raise DataError(f"data.path {data.path!r}: the files hold no rows")

    columns = [c for c in schema.names if c != data.label]
    probe_rows = ds.map_batches(probe, fn_kwargs={"columns": read_schema.names, "cap": MAX_INFERRED_CLASSES * 5},
                                batch_format="pyarrow", batch_size=None).take_all()
    facts = merge_probes([r["probe"] for r in probe_rows], read_schema.names)
    if data.split.order and (problem := order_problem(data.split.order, facts[data.split.order])):
        where = order_gaps(fs, files, data.split.order) if facts[data.split.order]["nulls"] else None
        raise DataError(f"{where or problem} (data.path: {data.path})")
    if data.split.by and facts[data.split.by]["nulls"]:
        progress(f"[ingest] note: {facts[data.split.by]['nulls']:,} row(s) have no value in data.split.by "
                 f"{data.split.by!r}: each of them is split on its own, as a group of one")
    label_facts = facts[data.label]
    if problem := infinite_problem(facts, schema.names, repr(data.path)):
        raise DataError(problem)
    if label_facts["nulls"] == rows_read:
        raise DataError(f"label column {data.label!r} is empty in every row of {data.path!r}")

    inferred: dict[str, str] = {}
    task = data.task or infer_task(schema.field(data.label).type, label_facts, inferred, data.label)
    if ids := id_candidates(schema, columns, data, facts, text=text):
        # Before a column is refused as an ID: its values may repeat across the blocks the probes saw apart.
        blocks = ray.get(ds.select_columns(ids).to_arrow_refs())
        confirm_distinct(facts, ids, [pa.chunked_array([b[c] for b in blocks], schema.field(c).type) for c in ids])
    try:
        numeric, categorical, texts = infer_features(schema, columns, data, facts, inferred, text=text)
    except DataError as exc:
        # A numeric column with stray cells: the probe counted them, a CSV's lines say where they are.
        where = stray_cells_where(fs, files, str(exc), facts) if fmt == "csv" else None
        if where is None:
            raise
        raise DataError(f"{exc}. {where}") from None
    for note in feature_notes(numeric, categorical, facts, data.preprocess.max_categories,
                              by_time=bool(data.split.order)):
        progress(f"[ingest] note: {note}")

    ds = ds.map_batches(split_key, fn_kwargs={"seed": data.split.seed, "by": data.split.by,
                                              "order": data.split.order}, batch_format="pandas")
    keys = ds.select_columns([data.label, "_u"]).to_pandas()
    labels = keys[data.label].to_numpy()
    dropped = rows_read - len(keys)        # null labels, and a CSV's empty ones (`_cast`)
    if not len(keys):
        raise DataError(f"label column {data.label!r} is empty in every row of {data.path!r}")
    classes = None
    class_counts: dict[str, dict[str, int]] = {}
    if task == "classification":
        if schema.field(data.label).type == pa.float64() and not label_facts["integral"]:
            raise DataError(f"label {data.label!r} has fractional values but data.task is classification; "
                            "use task: regression or fix the label")
        classes = sorted(pd.unique(labels).tolist(), key=lambda v: (str(type(v)), v))
        classes = [jsonable(c) for c in classes]
        if len(classes) < 2:
            raise DataError(f"label {data.label!r} has a single class ({classes[0]!r}) in {len(labels)} rows; "
                            "classification needs at least two. Check the label column or the data path")
        if found := placeholders(classes):
            progress(f"[ingest] note: {placeholder_note(data.label, found, label=True)}")
        if twins := [g for g in look_alike(classes) if same_but_case(g)]:
            raise DataError(case_classes_problem(data.label, twins, f"data.path: {data.path}"))
        for group in look_alike(classes):
            progress(f"[ingest] {look_alike_note(data.label, group)}")
        if note := number_classes_note(data.label, classes, len(labels)):
            progress(f"[ingest] warning: {note}")
    elif not pa.types.is_integer(schema.field(data.label).type) and not pa.types.is_floating(schema.field(data.label).type):
        problem = text_label_problem(data.label, schema.field(data.label).type, sorted(label_facts["not_numbers"]),
                                     numbers=label_facts["numbers"] > 0)
        raise DataError(f"{problem} (data.path: {data.path})")
    stratify = (task == "classification" and not data.split.order
                and (not data.split.by or stratified_by_groups(keys, data.label)))
    cuts = split_thresholds(labels, keys["_u"].to_numpy(), data.split.val, data.split.test, stratify)
    gap = gap_units(data.split.gap, split_by.type) if data.split.order else 0.0
    ds = ds.map_batches(assign_split, fn_kwargs={"label": data.label, "cuts": cuts, "stratify": stratify,
                                                 "gap": gap, "keep_gap": False},
                        batch_format="pandas").materialize()
    # The keys already hold every kept row's label and `_u`, in the dataset's order: the same assign_split
    # gives the rows' splits here, without another pass over the dataset.
    splits = assign_split(keys, data.label, cuts, stratify, gap=gap)
    split_rows = {NAMES[k]: int((splits[SPLIT_COLUMN] == k).sum()) for k in NAMES}
    how = split_summary(data, splits, keys["_u"].to_numpy(), stratify,
                        order_type=split_by.type if data.split.order else None, cuts=cuts,
                        by_type=split_by.type if data.split.by else None)
    if line := split_line(how, task):
        progress(line)
    # Whether the cuts came out lumpy: the rows a gap left out counted in the split they were cut into.
    lumpy_split(keys, {k: n + how.get("in_gap", {}).get(k, 0) for k, n in split_rows.items()}, data, progress)
    check_splits(split_rows, data, classes=len(cuts) if stratify else None, in_gap=how.get("in_gap"))
    if task == "classification":
        for k, name in NAMES.items():
            vc = splits.loc[splits[SPLIT_COLUMN] == k, data.label].value_counts()
            class_counts[name] = {str(jsonable(c)): int(n) for c, n in vc.items()}
        for line in unmeasured_classes(class_counts):
            progress(line)
    return IngestResult(label_stats=label_stats(labels) if task == "regression" else {},
                        dataset=ds, files=files, format=fmt, schema=schema, label=data.label, task=task,
                        numeric=numeric, categorical=categorical, text=texts, classes=classes, rows_read=rows_read,
                        rows_dropped_missing_label=int(dropped), split_rows=split_rows,
                        class_counts=class_counts, inferred=inferred, unused_columns=unused,
                        excluded_columns=[c for c in next(iter(schemas.values())).names if c in exclude],
                        fingerprint=fingerprint(fs, files), split_how=how,
                        missing={**{c: facts[c]["nulls"] for c in numeric + categorical if facts[c]["nulls"]},
                                 # a text is missing when null, empty or only whitespace: it is read as "" then
                                 **{c: facts[c]["n"] - facts[c]["filled"] for c in texts
                                    if facts[c]["n"] > facts[c]["filled"]}})


def lumpy_split(keys: pd.DataFrame, split_rows: dict[str, int], data: DataSpec, progress) -> None:
    """Say when the splits came out far (over 5 points) from the fractions asked: the rows share few keys (identical
    rows, a group's rows, one time's rows always go to the same split)."""
    asked = {"train": 1 - data.split.val - data.split.test, "val": data.split.val, "test": data.split.test}
    got = {k: n / len(keys) for k, n in split_rows.items()}
    distinct = int(keys["_u"].nunique())
    if distinct == len(keys) or all(abs(got[k] - asked[k]) <= 0.05 for k in asked):
        return
    why = (f"the rows belong to {distinct:,} groups of {data.split.by!r}, and a group's rows always go to the same "
           "split. More groups even it out" if data.split.by else
           f"the rows hold {distinct:,} distinct times of {data.split.order!r}, and rows of one time always go to "
           "the same split" if data.split.order else
           f"only {distinct:,} of the {len(keys):,} rows are distinct, and identical rows always go to the same "
           "split. More distinct rows even it out")
    progress(f"[ingest] split: asked train/val/test {'/'.join(f'{asked[k]:.0%}' for k in asked)}, got "
             f"{'/'.join(f'{got[k]:.0%}' for k in asked)}: {why}")


def label_stats(labels: np.ndarray) -> dict[str, float]:
    """A regression label's spread, said beside the task (`jobs.pipeline.print_ingest_summary`) and kept in
    summary.json: days to failure from 0 to 1,941, median 36, were trained with nothing said of their long tail."""
    from scipy.stats import skew

    y = np.asarray(labels, dtype=float)
    low, median, p99, high = np.quantile(y, [0.0, 0.5, 0.99, 1.0])
    return {"min": float(low), "median": float(median), "p99": float(p99), "max": float(high),
            "mean": float(y.mean()), "skewness": float(skew(y)) if y.std() > 0 else 0.0}


def unmeasured_classes(class_counts: dict[str, dict[str, int]], shown: int = 5) -> list[str]:
    """A warning per class of a few rows that the validation or test split holds none of: the model is trained
    on it, and nothing measures it (the test report's row of zeros for 'flood', 2 rows, said nothing more). The
    first `shown`, then one line for the rest (347 classes of days-to-failure made 240 lines)."""
    lines = unmeasured_lines(class_counts)
    if len(lines) > shown + 1:
        lines = lines[:shown] + [f"[ingest] warning: and {len(lines) - shown:,} more class(es) of a few rows that the "
                                 "validation or test split holds none of (every class's rows per split: "
                                 "summary.json's class_counts)"]
    return lines


def unmeasured_lines(class_counts: dict[str, dict[str, int]]) -> list[str]:
    lines = []
    for c, n in (class_counts.get("train") or {}).items():
        absent = [s for s in ("val", "test") if s in class_counts and not class_counts[s].get(c)]
        if absent:
            total = n + sum((class_counts.get(s) or {}).get(c, 0) for s in ("val", "test"))
            why = {("val",): "the best epoch is chosen without it", ("test",): "the test report cannot measure it",
                   ("val", "test"): "nothing measures how the model does on it"}[tuple(absent)]
            lines.append(f"[ingest] warning: class {c!r} has {total} row(s), none in the {' and '.join(absent)} "
                         f"split{'s' if len(absent) > 1 else ''}: {why}. Add rows of it, or leave those rows out if "
                         "it is no class to predict")
    return lines


def _csv_value_error(fs: pafs.FileSystem, files: list[str], schema: pa.Schema,
                     split: Optional[str] = None) -> Optional[str]:
    """Which cell of which CSV file does not fit its column's type, read again here with the same options: Ray
    Data's error names the file at most, and drops Arrow's message that names the row and the value. A column's
    type comes from each file's first 4 MB (`file_schema`), so a stray '?' further down fails the read."""
    import re

    for path in files:
        try:
            with fs.open_input_stream(path) as stream:
                reader = pacsv.open_csv(stream, convert_options=csv_convert(include_columns=schema.names,
                                                                            column_types=schema))
                for _ in reader:
                    pass
        except pa.ArrowInvalid as exc:
            m = re.search(r"column #(\d+): (?:Row #\d+: )?CSV conversion error to (\w+): invalid value '(.*)'",
                          str(exc))
            header = file_schema(fs, path, "csv").names
            if not m or int(m[1]) >= len(header):
                return f"{path}: {exc}"
            column, kind, value = header[int(m[1])], m[2], m[3]
            lines = [line for line, v in column_cells(fs, path, column) if v == value]
            where = ((f", line {lines[0]}" if lines else "")
                     + (f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""))
            fix = (f"or list {column!r} under data.features.exclude" if column != split else
                   "or write every cell of the column alike: the split reads each row's value")
            return (f"{path}{where}: column {column!r} holds {value!r}, which does not read as {kind} like the "
                    "column's other values (its type is taken from the file's first rows). Fix that cell (leave it "
                    f"empty for a missing value), {fix}")
        except (OSError, pa.ArrowException):
            continue
    return None


def check_splits(split_rows: dict[str, int], data: DataSpec, classes: Optional[int] = None,
                 in_gap: Optional[dict[str, int]] = None) -> None:
    """Refuse an empty train or validation split. The validation split picks the best epoch (the one bundled)
    and drives early stopping: without it every epoch scored NaN, "best epoch -1", and a patience of N stopped the
    run after N epochs for no reason. `classes`: the label's classes, when the split was stratified by them;
    `in_gap`: the rows a split by time's gap left out, by the split they were cut into."""
    if problem := gap_problem(split_rows, in_gap, data):       # not the ties of one time: a period within the gap
        raise DataError(problem)
    # By time, rows of one time share a split: a column of few times (a month, a term in months) empties one.
    few_times = (f" (rows of one time of data.split.order {data.split.order!r} share a split: it needs rows of more "
                 "times)" if data.split.order else "")
    if split_rows["train"] == 0:
        raise DataError("the train split is empty; lower data.split.val / data.split.test or add rows" + few_times)
    rows = sum(split_rows.values())
    if split_rows["val"] == 0 and classes and classes * 2 > rows:
        # The split is stratified and keeps each class's rows in train until it has 1/val of them: a label with
        # (about) one row per class leaves validation empty, and more rows or a larger val would not help.
        raise DataError(f"label {data.label!r} has {classes:,} classes in {rows:,} rows, too few rows per class to "
                        "put any in the validation split (each class is split on its own). Is it an identifier "
                        "rather than what to predict? Fix data.label, or group its values into fewer classes")
    if split_rows["val"] == 0:
        raise DataError(f"the validation split is empty ({sum(split_rows.values())} rows, data.split.val "
                        f"{data.split.val:g}): trainyard picks the best epoch on it and stops early by it. Raise "
                        "data.split.val, or add rows" + few_times)
