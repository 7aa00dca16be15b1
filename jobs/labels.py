"""The label's distinct values as the files on this machine hold them, read before Ray starts (`jobs.precheck`:
the task a label will be inferred as, its classes, the metrics and settings that depend on them), or the class
folders of an image data set. None where this machine cannot say (remote data, a file it cannot read): ingest
reads the label again, and says what is wrong."""
from __future__ import annotations

import os
from typing import Any, Optional

from jobs.spec import DataSpec, JobSpec
from jobs.spelling import case_twins


def label_values(data: DataSpec, most: int) -> Optional[list[Any]]:
    """Up to `most` distinct label values (missing ones left out), or None when this machine cannot read them."""
    try:
        values = class_folders(data, most) if data.format == "images" else _column_values(data, most)
    except Exception:  # noqa: BLE001 - whatever stops this look-ahead, ingest reports properly later
        return None
    if values is None:
        return None
    return sorted(values, key=lambda v: (str(type(v)), v))      # in the order ingest gives the classes


def class_folders(data: DataSpec, most: int) -> Optional[list[str]]:
    from jobs.images import IMAGE_EXTENSIONS      # the classes are the folders holding images, as ingest sees them

    root = data.path if isinstance(data.path, str) else data.path[0]
    if "://" in root:
        return None
    root = os.path.abspath(os.path.expanduser(root))
    found = []
    for name in sorted(os.listdir(root)):
        folder = os.path.join(root, name)
        if name.startswith(".") or not os.path.isdir(folder):
            continue
        if any(f.lower().endswith(IMAGE_EXTENSIONS) for _, _, files in os.walk(folder) for f in files):
            found.append(name)
            if len(found) >= most:
                break
    return found


def _column_values(data: DataSpec, most: int) -> Optional[list[Any]]:
    from jobs.datafiles import infer_format, resolve_files

    entries = data.path if isinstance(data.path, list) else [data.path]
    if any("://" in entry for entry in entries):
        return None
    _, files, _ = resolve_files(data.path)
    fmt = infer_format(files, data.format)
    # `validate` asks for the label several times (the task, its classes, the metrics, the train settings): read
    # once per files as they are (a file changed since is read again).
    key = (data.label, fmt, tuple((f, os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files))
    # A read of more values (or of them all) holds this one as its first `most`: the values come in the order they
    # are met (`train`'s case check reads up to 1000, its metric and cut-off checks 21, of one column).
    if key in _READ and (_READ[key][0] >= most or len(_READ[key][1]) < _READ[key][0]):
        return list(_READ[key][1][:most])
    values = _read_column_values(files, fmt, data.label, most)
    if len(_READ) >= 8:
        _READ.clear()
    _READ[key] = (most, values)
    return list(values)


_READ: dict = {}      # label values read (the count asked, the values), by label, format and the files' names,
# sizes and times


def _read_column_values(files: list[str], fmt: str, label: str, most: int) -> list[Any]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from jobs.datafiles import csv_convert

    seen: dict = {}
    for path in files:
        if fmt == "parquet":
            batches = pq.ParquetFile(path).iter_batches(columns=[label])
        else:
            batches = pacsv.open_csv(path, convert_options=csv_convert(include_columns=[label]))
        for batch in batches:
            column = pc.drop_null(batch.column(0))
            if pa.types.is_floating(column.type):      # NaN is missing, as ingest reads it
                column = column.filter(pc.invert(pc.is_nan(column)))
            for value in pc.unique(column).to_pylist():
                seen.setdefault(value, None)       # 1 and 1.0 are one class, as ingest's unified type makes them
            if len(seen) >= most:
                return list(seen)[:most]
    return list(seen)


# ---------------------------------------------------------------------------------------------- classes
def class_notes(spec: JobSpec) -> list[str]:
    """For `trainyard validate`: label classes that are one word written two ways ('Yes' and 'yes'), which ingest
    will train as different classes (`jobs.spelling.look_alike`), when the label is read as classes."""
    from jobs.spelling import look_alike, look_alike_note, placeholder_note, placeholders, same_but_case

    if spec.data.task == "regression" or spec.data.is_image:
        return []
    values = label_values(spec.data, _MOST_CLASSES_LOOKED_AT)       # not the first 21 alone: a catalogue has 37
    found = placeholders(values or [])
    return ([placeholder_note(spec.data.label, found, label=True)] if found else []) + [
        look_alike_note(spec.data.label, group) for group in look_alike(values or []) if not same_but_case(group)]


def class_problems(spec: JobSpec) -> list[str]:
    """Label classes that differ only in case or spaces (`jobs.spelling.case_classes_problem`), or one class in
    every row, which ingest refuses: said before any command's Ray start (`jobs.precheck.problems`)."""
    from jobs.spelling import case_classes_problem

    if spec.data.task == "regression" or spec.data.is_image:
        return []
    values = label_values(spec.data, _MOST_CLASSES_LOOKED_AT) or []
    if len(values) == 1 and (spec.data.task == "classification" or not isinstance(values[0], (int, float))
                             or isinstance(values[0], bool)):     # every row read: refused by ingest after Ray
        return [f"label {spec.data.label!r} has a single class ({values[0]!r}) in every row of data.path: "
                f"{spec.data.path}; classification needs at least two. Check the label column or the data path"]
    twins = case_twins(values)
    return [case_classes_problem(spec.data.label, twins, f"data.path: {spec.data.path}")] if twins else []


# Label values `class_notes` reads for classes written two ways (`look_alike` compares every pair).
_MOST_CLASSES_LOOKED_AT = 1000
