"""What the spec asks of the data, checked against it before any Ray work: that the label and the columns
data.features lists or excludes are in its files (their headers), that the values of the first rows of each file
are what ingest takes (`_sample_problem`: no ID column, no numbers written as text, no infinite value), and what
the spec's metrics need of the label.

`val_auc` needs a label with exactly two classes, which the spec alone cannot tell; a multiclass label would
pass validation and then fail every training run (every trial of a search). This reads the label column alone
(Parquet row group by row group, CSV block by block, or the class folders of an image data set), only when a
metric the spec names depends on the label, and stops once it has seen more classes than the check needs.

Data this machine cannot read (a URI, a path only the cluster's nodes see) is not checked here: `trainyard
validate` does not read data otherwise, and the run checks the metric against the ingested classes before any
training starts.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Optional

from cluster.errors import BadInput
from jobs.labels import class_folders, class_notes, class_problems, label_values  # noqa: F401 (validate's)
from jobs.spec import METRICS, DataSpec, JobSpec, SpecError, shown_values, task_problem, train_task_problems
from jobs.spelling import case_twins, nearest_column

# Enough to tell "two classes" from "more", and to name a few of them; a label with more distinct values than
# this is reported as "more than ...": counting them would read the whole column for nothing.
_MOST_VALUES = 21


def named_metrics(spec: JobSpec) -> list[tuple[str, str]]:
    """(field, metric) for every metric the spec names."""
    named = [("train.early_stop.metric", spec.train.early_stop.metric)] if spec.train.early_stop else []
    if spec.tune is not None and spec.tune.metric is not None:
        named.append(("tune.metric", spec.tune.metric))
    return named


def metric_problems(spec: JobSpec) -> list[str]:
    """One line per metric the spec names that the label cannot give (without the file name): one that needs two
    classes, or, with data.task omitted, one of the other task than ingest will infer from the label."""
    inferring = spec.data.task is None and not spec.data.is_image
    needing = [(field, metric) for field, metric in named_metrics(spec) if metric in METRICS
               and (METRICS[metric].binary_only or (inferring and len(METRICS[metric].tasks) == 1))]
    if not needing or spec.data.task == "regression":      # regression: the task check already refuses them
        return []
    values = label_values(spec.data, _MOST_VALUES)
    if values is None or len(values) < 2 or _refused_twins(spec, values):
        return []
    complete = len(values) < _MOST_VALUES
    task = spec.data.task or _inferred_task(values, complete, spec.data.label)
    count = _count(values, complete)
    if task is None:
        # Values the inference cannot read here (mixed types): ingest will say what they are; a metric that
        # needs two classes is still checked against them, as it was.
        needing = [(field, metric) for field, metric in needing if METRICS[metric].binary_only]
        task, inferring = "classification", False
    if inferring and task == "regression":
        # Ingest will infer regression: advising the other classification metrics would only move the refusal
        # to after ingest ("a classification metric, but the task is regression").
        why = (f"label {spec.data.label!r} has {count} ({shown_values(values, complete)}), numbers that trainyard "
               "takes as a regression target; if they are classes, set data.task: classification")
        problems = [task_problem(metric, field, "regression") for field, metric in needing]
        return [f"{p} ({why}; data.path: {spec.data.path})" for p in problems if p]
    why = f"label {spec.data.label!r} has {count} ({shown_values(values, complete)}), which trainyard takes as classes; "
    problems = [(task_problem(metric, field, "classification", values, label=spec.data.label, all_classes=complete),
                 inferring and "classification" not in METRICS[metric].tasks) for field, metric in needing]
    return [f"{p} ({why if inferred else ''}data.path: {spec.data.path})" for p, inferred in problems if p]


def setting_problems(spec: JobSpec) -> list[str]:
    """train.loss and train.class_weight against the task the label will be inferred as, with data.task omitted
    (given, the spec's own validation checks them): `class_weight: balanced` on a column of measurements was
    dropped without a word."""
    t = spec.train
    if spec.data.task is not None or (t.loss == "auto" and t.class_weight == "none"):
        return []
    if spec.data.is_image:
        return train_task_problems(t.loss, t.class_weight, "classification", " (image classes)")
    values = label_values(spec.data, _MOST_VALUES)
    if values is None or len(values) < 2:
        return []
    complete = len(values) < _MOST_VALUES
    task = _inferred_task(values, complete, spec.data.label)
    count = _count(values, complete)
    taken = "classes" if task == "classification" else "a regression target"
    return train_task_problems(t.loss, t.class_weight, task, f" (label {spec.data.label!r} has {count} "
                               f"({shown_values(values, complete)}), which trainyard takes as {taken}; if not, set "
                               "data.task)")


def decision_problems(spec: JobSpec) -> list[str]:
    """`decision:` against the label's values: a cut-off needs exactly two classes, and `decision.positive` must
    be one of them (`jobs.decision.check` says the same after ingest, for data this machine cannot read)."""
    from jobs.decision import positive_index
    from jobs.infer import DataError

    d = spec.decision
    values = label_values(spec.data, _MOST_VALUES) if d is not None else None
    if not values or len(values) < 2 or _refused_twins(spec, values):
        return []
    complete = len(values) < _MOST_VALUES
    fix = ""
    if len(values) != 2:
        from jobs.spelling import look_alike, look_alike_note
        # 'Default' beside 'default': one class written two ways, which the data should fix, not the spec.
        fix = "; ".join(look_alike_note(spec.data.label, g) for g in look_alike(values))
    try:
        positive_index(d, values, {}, spec.data.label, fix=fix,
                       shown=f"{_count(values, complete)} ({shown_values(values, complete)}; data.path: "
                             f"{spec.data.path})")
    except DataError as e:
        return [str(e)]
    return []


def _refused_twins(spec: JobSpec, values: list) -> bool:
    """Classes `class_problems` refuses: a metric or cut-off counted on them is not said (it advised a spec change)."""
    return spec.data.task != "regression" and not spec.data.is_image and bool(case_twins(values))


def _count(values: list, complete: bool) -> str:
    return f"{len(values)} distinct values" if complete else f"more than {len(values) - 1} distinct values"


def task_note(spec: JobSpec) -> Optional[str]:
    """For `trainyard validate`: a label of three or more distinct whole numbers, with data.task omitted, is
    classified (`jobs.infer`), which a quantity recorded in whole units (days, counts) is not meant to be; say so
    before a run trains 12 classes; with data.task: classification, a label of more than 20 distinct numbers
    (`jobs.infer.number_classes_note`). None otherwise, or when the label cannot be read here."""
    if spec.data.task == "classification" and not spec.data.is_image:
        from jobs.infer import number_classes_note
        return number_classes_note(spec.data.label, label_values(spec.data, _MOST_VALUES) or [])
    if spec.data.task is not None or spec.data.is_image:
        return None
    values = label_values(spec.data, _MOST_VALUES)
    if not values or len(values) < 3 or not all(isinstance(v, (int, float)) for v in values):
        return None
    if _inferred_task(values, len(values) < _MOST_VALUES, spec.data.label) != "classification":
        return None
    return (f"label {spec.data.label!r} holds {len(values)} distinct whole numbers ({shown_values(values)}): "
            f"trainyard will classify it, {len(values)} classes; if it is a quantity (days, a count), set "
            "data.task: regression")


def _inferred_task(values: list, complete: bool, label: str) -> Optional[str]:
    """The task ingest infers for this label with data.task omitted (`jobs.infer.infer_task`, on the facts read
    here: `complete`, all its distinct values, not only the first `_MOST_VALUES`), or None where they say none."""
    import pyarrow as pa

    from jobs.infer import infer_task

    try:
        facts = {"capped": not complete, "distinct": set(values),
                 "integral": all(isinstance(v, (int, float)) and float(v).is_integer() for v in values)}
        return infer_task(pa.array(values).type, facts, {}, label)
    except (BadInput, pa.ArrowException, TypeError, ValueError):     # mixed or unusual values: ingest will say
        return None


def problems(spec: JobSpec, *, metrics: bool = True,
             notes: Optional[list[str]] = None) -> tuple[list[str], list[str]]:
    """Every problem found before Ray, as (the spec's, the data's): `check_columns`' lines, `metric_problems` and
    `setting_problems` (unless `metrics` is False: a search checks those with its own, `tuning.space.check`),
    `check_encoder`'s. `notes`: a list `check_columns` adds what it found to say of the data to."""
    from jobs.datafiles import DataError

    spec_problems, data_problems = [], []
    try:
        check_columns(spec, notes)
    except DataError as exc:
        data_problems += str(exc).splitlines()
    data_problems += class_problems(spec)       # one class written two ways: refused by ingest after Ray starts
    if metrics:
        spec_problems += metric_problems(spec) + setting_problems(spec)
    spec_problems += decision_problems(spec)
    try:
        check_encoder(spec)
    except SpecError as exc:
        spec_problems += exc.problems
    except BadInput as exc:
        spec_problems.append(str(exc))
    return spec_problems, data_problems


def refuse(spec_problems: list[str], data_problems: list[str]) -> None:
    """Raise every problem at once: a DataError when they are all the data's, else a SpecError listing both."""
    from jobs.datafiles import DataError

    if spec_problems:
        raise SpecError(spec_problems + data_problems)
    if data_problems:               # more than one: a list, as a SpecError's (the others were bare lines)
        raise DataError(data_problems[0] if len(data_problems) == 1 else f"the data has {len(data_problems)} "
                        "problem(s):\n" + "\n".join(f"  - {p}" for p in data_problems))


def check(spec: JobSpec, source: Optional[str] = None) -> None:
    """Raise every `problems` of a spec that trains once, the spec's starting with `source` (its file) if given."""
    spec_problems, data_problems = problems(spec)
    refuse([f"{source}: {p}" if source else p for p in spec_problems], data_problems)


def check_columns(spec: JobSpec, notes: Optional[list[str]] = None) -> None:
    """Raise ingest's DataError, every line of it, when the label or a column data.features lists or excludes is
    in none of the data's files (with the nearest name), or the shards do not agree (a column missing from one,
    types that differ): `jobs.datafiles.check_files`, here before Ray starts, in a second rather than after the
    8-9 s of a Ray start. Reads the files' headers (Parquet footers, a CSV's first block), as ingest does
    again, and with data.split.order the column of times (Arrow, one column: rows without a time). Data this
    machine does not have (a URI, a path that finds nothing: `local_data_note`) is left to the run; so are
    images, whose columns ingest checks its own way. `notes`: what `_sample_problem` found (for `validate`)."""
    from jobs.datafiles import DataError, check_files, file_schema, infer_format, resolve_files
    from jobs.infer import kind_of, not_text_problem, text_label_problem
    from jobs.splits import gap_check, order_gaps, split_column, split_field

    data = spec.data
    entries = data.path if isinstance(data.path, list) else [data.path]
    if any("://" in entry for entry in entries):
        return
    if data.format == "images":
        from jobs.images import folder_layout, without_images_note

        root = os.path.abspath(os.path.expanduser(entries[0]))
        if os.path.isdir(root) and (len(class_folders(data, 2)) < 2 or case_twins(    # ingest's own DataError:
                [n for n in os.listdir(root) if not n.startswith(".") and os.path.isdir(os.path.join(root, n))])):
            folder_layout(root)     # no class folder with images, one, or two written two ways
        if os.path.isdir(root) and notes is not None and (note := without_images_note(root)):
            notes.append(note)
        return
    try:
        fs, files, _ = resolve_files(data.path)
    except DataError:
        return
    if data.is_image:
        from jobs.images import check_parquet_columns
        schemas = {f: file_schema(fs, f, "parquet") for f in files}
        check_parquet_columns(schemas, data)
        split_field(data, schemas)      # data.split.by of a table of images
        return
    fmt = infer_format(files, data.format)
    schemas = {f: file_schema(fs, f, fmt) for f in files}
    try:
        # data.split.by / .order: in every file, of a type a split can use; said first (a misspelt split column
        # otherwise came second, after its side effect: a date column left among the features)
        split_field(data, schemas, fs)
        split_problem = []
    except DataError as exc:
        split_problem = [str(exc)]
    try:
        schema, found = check_files(data, schemas, fmt, text=spec.model.kind == "text", fs=fs), list(split_problem)
    except DataError as exc:
        if not exc.columns:
            raise DataError("\n".join(split_problem + [str(exc)])) from None
        # Columns of a type no feature can have (a timestamp): the rest's problems are named with them, in one
        # pass (validate said one, then the ID column on the next try).
        data = data.model_copy(update={"features": data.features.model_copy(
            update={"exclude": [*data.features.exclude, *exc.columns]})})
        schema = check_files(data, schemas, fmt, text=spec.model.kind == "text", fs=fs)
        # A misspelt split column's "did you mean" is that date column: not also refused as a feature.
        meant = nearest_column(split_column(data) or "", next(iter(schemas.values())).names) if split_problem else None
        found = split_problem + [line for line in str(exc).split("\n")
                                 if not (meant and line.startswith(f"column {meant!r} has type"))]
    if data.split.order and not split_problem and (gaps := order_gaps(fs, files, data.split.order)):
        found.append(gaps)          # rows without a time: refused by the run, after a Ray start
    elif data.split.gap is not None and not split_problem and (
            emptied := gap_check(fs, files, data, split_field(data, schemas, fs).type)):
        found.append(emptied)       # a period shorter than the gap
    not_text = [f"{p} (data.path: {data.path})" for p in (
        not_text_problem(c, schema.field(c).type) for c in data.features.text or []
        if spec.model.kind == "text" and c in schema.names and kind_of(schema.field(c).type) != "string")]
    if not not_text and (problem := _sample_problem(data, fs, files, fmt, schema, spec.model.kind == "text",
                                                    [] if notes is None else notes)):
        found.append(problem)
    if found or not_text:
        raise DataError("\n".join(found + not_text))
    label_type = schema.field(data.label).type
    if data.task == "regression" and kind_of(label_type) not in ("int", "float"):
        # after a Ray start and a read of every row, ingest said "cannot be regressed; use task: classification"
        raise DataError(f"{text_label_problem(data.label, label_type, label_values(data, _MOST_VALUES) or [])} "
                        f"(data.path: {data.path})")


# Rows read per file for `_sample_problem`: all of a small table, the first ones of a large one.
SAMPLE_ROWS = 100_000


def _sample_problem(data: DataSpec, fs, files: list[str], fmt: str, schema, text: bool,
                    notes: list[str]) -> Optional[str]:
    """What ingest's look at the values would refuse (jobs.infer: an ID column, numbers written with a comma or
    a currency sign, numbers with stray cells, infinite values) in local files of up to SAMPLE_ROWS rows each:
    what `validate` names in a second, where a run found them one at a time, each after a Ray start and a read
    (23-36 s a try). Of larger files only infinite values, in their first SAMPLE_ROWS rows: a share or a count
    of a part need not be the whole's, and nothing may be refused that ingest would take. None when the rows
    read show nothing, or cannot be read here (ingest says). Adds to `notes` what ingest will note of the features
    (`jobs.infer.feature_notes`: a column of one value, a yes/no spelt several ways, look-alike categories) where
    it read every file whole, and which files it read in part, whose shares it left to the run."""
    import pyarrow as pa

    from jobs.datafiles import cast_batch, stray_cells_where
    from jobs.infer import (MAX_INFERRED_CLASSES, DataError, confirm_distinct, feature_notes, id_candidates,
                            infer_features, infinite_problem, merge_probes, probe)

    rows, infinite, partial = [], [], []        # partial: the files not read to their end
    try:
        for path in files:
            batches = _batches(path, fmt, schema)
            taken, read = [], 0
            for batch in batches:
                taken.append(batch)
                read += batch.num_rows
                if read > SAMPLE_ROWS:
                    partial.append(path)
                    break
            if taken:
                table = cast_batch(pa.Table.from_batches(taken).slice(0, SAMPLE_ROWS), schema, data.label)
                rows.append(probe(table, schema.names, MAX_INFERRED_CLASSES * 5)["probe"][0])
                said = infinite_problem(of_file := merge_probes(rows[-1:], schema.names), schema.names, path)
                if said and fmt == "csv":
                    said += _infinite_where(fs, path, [c for c in schema.names if of_file[c]["infinite"]])
                infinite.append(said)
    except Exception:  # noqa: BLE001 - a file this look cannot read: ingest reads it, and says what is wrong
        return None
    if not rows:
        return None
    problems = [p for p in infinite if p]      # by file: ingest can name only data.path
    if partial:
        # Shares and counts (an ID, numbers with strays) of a part need not be the whole's: ingest judges those.
        notes.append(f"{', '.join(partial[:3])}{' ...' if len(partial) > 3 else ''}: more than {SAMPLE_ROWS:,} rows, "
                     f"so validate checked their first {SAMPLE_ROWS:,} rows for infinite values only; the run reads "
                     "every row and may still refuse an ID column, numbers written as text, or a stray cell further "
                     "down")
        return "\n".join(problems) or None
    facts = merge_probes(rows, schema.names)
    columns = [c for c in schema.names if c != data.label]
    if ids := id_candidates(schema, columns, data, facts, text=text):
        # As ingest does: values distinct within each file may repeat across files.
        try:
            tables = [cast_batch(t, schema, data.label) for t in (_read(f, fmt, schema) for f in files) if t]
        except Exception:  # noqa: BLE001 - read a moment ago: changed since, ingest says what it finds
            return None
        confirm_distinct(facts, ids, [pa.chunked_array([t[c] for t in tables], schema.field(c).type) for c in ids])
    while columns:          # ingest stops at the first column it refuses; here every one is named, in one pass
        try:
            numeric, categorical, _ = infer_features(schema, columns, data, facts, {}, text=text)
            if not problems:    # what ingest will note of the features, for `validate` to say now
                notes += feature_notes(numeric, categorical, facts, data.preprocess.max_categories,
                                       by_time=bool(data.split.order))
            break
        except DataError as exc:
            if not exc.columns and len(problems) > sum(1 for p in infinite if p):
                break       # "no feature column is left": the columns already named are gone from this look only
            found = stray_cells_where(fs, files, str(exc), facts) if fmt == "csv" else None
            problems.append(f"{exc}. {found}" if found else str(exc))
            if not exc.columns:
                break
            columns = [c for c in columns if c not in exc.columns]
    return "\n".join(problems) or None


def _batches(path: str, fmt: str, schema) -> Iterator:
    """The record batches of a local file's columns `schema` names (a CSV read as those types)."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from jobs.datafiles import csv_convert

    if fmt == "parquet":
        return pq.ParquetFile(path).iter_batches(columns=schema.names, batch_size=SAMPLE_ROWS)
    return pacsv.open_csv(path, convert_options=csv_convert(include_columns=schema.names, column_types=schema))


def _read(path: str, fmt: str, schema):
    """A local file's columns `schema` names, whole, as one table (None for a file of no rows)."""
    import pyarrow as pa

    batches = list(_batches(path, fmt, schema))
    return pa.Table.from_batches(batches) if batches else None


def _infinite_where(fs, path: str, columns: list[str], shown: int = 5) -> str:
    """". Where: FILE line N ('inf'), ..." for the infinite values of `columns` in CSV file `path`; "" when none
    is found again (the message stands without)."""
    import math

    from jobs.datafiles import column_cells

    found = []
    for column in columns:
        try:
            cells = column_cells(fs, path, column)
        except Exception:  # noqa: BLE001 - unreadable now: the message stands without the lines
            continue
        for line, v in cells:
            try:
                if v is not None and math.isinf(float(v)):
                    found.append(f"line {line} ({column}: {v!r})")
            except ValueError:
                continue
    if not found:
        return ""
    return f". Where: {path} " + ", ".join(found[:shown]) + (f" and {len(found) - shown} more" if len(found) > shown
                                                               else "")


def local_data_note(data: DataSpec) -> Optional[str]:
    """Why `data.path` finds no files on this machine (a path that does not exist, a glob that matches none), or
    None when it does or names a URI. A note, not an error: a spec submitted to a cluster may name a path that
    only its nodes have."""
    from jobs.datafiles import DataError, resolve_files

    entries = data.path if isinstance(data.path, list) else [data.path]
    if any("://" in entry for entry in entries):
        return None
    if data.format == "images":         # a folder of class folders
        missing = [e for e in entries if not os.path.isdir(os.path.expanduser(e))]
        return f"data.path: {missing[0]!r} is not a folder here (looked in {os.getcwd()})" if missing else None
    try:
        resolve_files(data.path)
    except DataError as exc:
        return str(exc) + _nearest_path(entries)
    return None


def _nearest_path(entries: list[str]) -> str:
    """" Did you mean 'credit/csv/'?" for the first entry that does not exist whose folder holds a name a letter
    or two apart (`credit/cvs/`), else ""."""
    import difflib

    for entry in entries:
        path = os.path.expanduser(entry.rstrip("/"))
        if any(ch in entry for ch in "*?[") or os.path.exists(path):
            continue
        parent = os.path.dirname(path) or "."
        try:
            names = os.listdir(parent)
        except OSError:
            continue
        near = difflib.get_close_matches(os.path.basename(path), names, n=1, cutoff=0.75)
        if near:
            shown = os.path.join(os.path.dirname(entry.rstrip("/")), near[0]) + ("/" if entry.endswith("/") else "")
            return f". Did you mean {shown!r}?"
    return ""


def output_problem(output: str) -> Optional[str]:
    """Why a run on this machine could not write its local `output` folder (a file where the folder or one above
    it would be, a folder it may not write to, a read-only file system), or None. A run found out only when it
    wrote summary.json, after Ray's start and the data's read, in a traceback (exit 1)."""
    if "://" in output:
        return None
    out = Path(os.path.abspath(os.path.expanduser(output)))
    blocker = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        return f"output {output!r}: {blocker} is a file, not a folder; choose another output folder (it is created " \
               "if missing)"
    nearest = next(p for p in (out, *out.parents) if p.exists())
    # An earlier run's folders the run writes into too (a search's report into tune/): bundles/ that could not be
    # written failed after training, in a traceback, the trained model lost.
    existing = next((p for p in (nearest, *(out / d for d in ("bundles", "ray", "tune"))) if p.is_dir()
                     and not os.access(p, os.W_OK | os.X_OK)), None)
    why = None
    if existing is None:
        # os.access answers yes to root for any folder: /proc (or a folder of a pseudo file system) passed, and
        # the run failed on the cluster saying its nodes share no storage. A folder made and removed says.
        import tempfile
        try:
            probe = tempfile.mkdtemp(prefix=".trainyard-write-check-", dir=nearest)
        except OSError as exc:
            existing, why = nearest, f"a folder cannot be made there: {exc.strerror or exc}"
        else:
            os.rmdir(probe)         # made: it can be written (an empty folder of its own, removed at once)
            return None
    why = why or ("a read-only file system" if os.statvfs(existing).f_flag & os.ST_RDONLY
                  else "no permission to write there")
    made = f" to create {out.relative_to(existing)} in" if out.is_relative_to(existing) and existing != out else ""
    return (f"output {output!r}: cannot write{made} {existing} ({why}); choose another output folder "
            "(--set output=PATH), or make that one writable")


def check_encoder(spec: JobSpec) -> None:
    """A pretrained `model.encoder` (text or image) is found offline and fits the spec, or a BadInput names the
    field and the fix: the same checks `prepare` makes, here before Ray starts (`trainyard validate` too)."""
    if spec.model.kind == "text":
        from jobs.text import resolve_encoder
        resolve_encoder(spec.model, spec.data)
    elif spec.model.kind == "image":
        from jobs.images import pretrained_backbone
        pretrained_backbone(spec.model)
