"""Rows files for `trainyard predict` and `trainyard evaluate`, and a client's `predict_file`: a .csv, .parquet or
.jsonl file, a folder of Parquet shards, or image files; the output file of predictions. Each problem is a
TableError naming the file and what to do (exit 2), found before any request."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Collection, Optional, Union

from cluster.errors import BadInput

SUFFIXES = (".csv", ".parquet", ".jsonl")
# Image files `predict` reads for an image model (a folder of them, class folders too, or one), as the server
# decodes them (serving.schema's accepted encodings).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class TableError(BadInput):
    """A rows file (`trainyard predict FILE`) or an output file (`--out`) that cannot be used; the message names
    it and what to do. Exit 2."""


class ShardColumns(TableError):
    """Shards of a folder whose columns differ (`read_table` with `sent` may take them). `read`: a CSV folder's
    (folder, files, parts) as read, for `read_used` to check by the columns used without reading them again."""

    read: Optional[tuple] = None


def _no_copies(folder: Path, files: list[Path]) -> None:
    """Refuse two shards of one folder that hold the same bytes (`a.csv` and `a_copy.csv`): their rows were read
    twice, `evaluate`'s counts and scores resting on twice the rows they had, `predict` answering each twice."""
    import hashlib

    by_size: dict[int, list[Path]] = {}
    for f in files:
        by_size.setdefault(f.stat().st_size, []).append(f)
    for same in (g for g in by_size.values() if len(g) > 1):
        first: dict[str, Path] = {}
        for f in same:
            with open(f, "rb") as stream:
                digest = hashlib.file_digest(stream, "sha256").hexdigest()
            if digest in first and _rows_in(f):     # two empty shards (a header alone) are alike, and add nothing
                root = os.path.abspath(folder)      # the listing's paths are absolute; `folder` as the user gave it
                raise TableError(f"{folder}: {os.path.relpath(first[digest], root)} and {os.path.relpath(f, root)} "
                                 "hold the same bytes, so their rows would be read twice; remove the copy")
            first[digest] = f


def _rows_in(f: Path) -> bool:
    """Whether a shard holds a row (a CSV more than its header line; a Parquet file a row by its footer)."""
    if f.suffix.lower() == ".csv":
        return len(f.read_bytes().strip().splitlines()) > 1
    import pyarrow.parquet as pq
    try:
        return pq.read_metadata(f).num_rows > 0
    except Exception:   # unreadable: read_table says so
        return False


def read_table(path, sent: Optional[Collection[str]] = None) -> "pd.DataFrame":  # noqa: F821
    """The rows of a .csv, .parquet or .jsonl file, or of a folder of Parquet or CSV shards. `sent`: the columns
    the rows' reader uses (`trainyard predict`'s features and kept fields), when known: shards may then differ in
    other columns (an operator's note in one month's file); in one of these they are refused, as shards that
    differ in any column are without `sent` (a shard lacking a feature would be imputed whole)."""
    import pandas as pd
    path = Path(path)
    if path.is_dir():
        # A folder of shards, listed as `train` lists one (subfolders too, in path order; hidden files and those
        # starting with '_' left out; .parquet, .pq and .csv in any case).
        from jobs.datafiles import DataError, resolve_files
        from jobs.lake import CompressedFiles
        try:
            found = [Path(f) for f in resolve_files(str(path))[1]]
        except CompressedFiles as exc:       # named, not read as a folder of none: a table cut short unsaid
            raise TableError(f"{path}: {str(exc).removeprefix('data.path ')}") from None
        except DataError:
            found = []
        _no_copies(path, found)
        shards = [f for f in found if f.suffix.lower() in (".parquet", ".pq")]
        csvs = [f for f in found if f.suffix.lower() == ".csv"]
        if csvs and not shards:
            return _csv_shards(path, csvs, sent)
        if not shards:
            raise TableError(f"{path}: a folder with no .parquet or .csv file; give a .csv, .parquet or .jsonl "
                             "file, or a folder of .parquet or .csv files")
        if csvs:
            raise TableError(f"{path}: holds .parquet and .csv files ({shards[0].name}, {csvs[0].name}); give a "
                             "folder of one kind, or one file")
        try:
            parts = [pd.read_parquet(f) for f in shards]
        except Exception as exc:   # pandas/pyarrow raise many types for a corrupt file
            raise TableError(f"{path}: cannot read its .parquet files: {exc}") from None
        if sent is not None:        # (without `sent`, as before: pandas fills a column a shard lacks with nulls)
            _same_columns(path, shards, parts, sent)
        table = pd.concat(parts, ignore_index=True)
        # Each shard's columns, for `same_shard_columns` once the columns that matter are known.
        table.attrs["parquet_parts"] = [(str(path), str(f), list(p.columns)) for f, p in zip(shards, parts)]
        table.attrs["shard_rows"] = [(str(f), len(p)) for f, p in zip(shards, parts)]     # a bad cell's file and row
        return table
    if path.suffix.lower() not in SUFFIXES:
        from jobs.lake import CompressedFiles, refuse_compressed
        try:
            refuse_compressed([str(path)])
        except CompressedFiles as exc:
            raise TableError(f"{path}: {str(exc).removeprefix('data.path ')}") from None
        raise TableError(f"{path}: unsupported file type {path.suffix!r}; use one of {', '.join(SUFFIXES)}")
    if not path.is_file():
        raise TableError(f"{path}: no such file")
    if path.suffix.lower() == ".csv":
        _check_separator(path)
    try:
        if path.suffix.lower() == ".csv":
            # index_col=False: a line with one delimiter too many (a trailing comma) would otherwise make the
            # first column the index and shift every value one column to the left.
            table = pd.read_csv(path, index_col=False)
            table.attrs["csv"] = str(path)      # a bad cell is named by its line (`numbers_read_as_text`)
            return table
        if path.suffix.lower() == ".parquet":
            table = pd.read_parquet(path)
            for key in ("parquet_parts", "shard_rows"):   # a folder's table written whole: its shards are not this file's
                table.attrs.pop(key, None)
            return table
        return pd.read_json(path, lines=True)
    except UnicodeDecodeError:              # a Latin-1 (Excel's Windows-1252) export: said as `train` says it
        import pyarrow.fs as pafs

        from jobs.csvfix import not_utf8
        raise TableError(not_utf8(pafs.LocalFileSystem(), str(path), "the file")) from None
    except Exception as exc:   # pandas/pyarrow raise many types for a corrupt file
        where = _bad_json_line(path) if path.suffix.lower() == ".jsonl" else None
        raise TableError(f"{path}: cannot read it as {path.suffix[1:]}: {where or exc}") from None


def _check_separator(path: Path) -> None:
    """A CSV whose header has no ',' but a ';', a tab or a '|' is refused as `train` refuses it: pandas said
    "Error tokenizing data. C error: Expected 2 fields in line 4, saw 3", or read one column of all the names.
    So are an empty file and a header naming a column twice, as `train` refuses them (`jobs.datafiles`)."""
    import csv
    if path.stat().st_size == 0:        # pandas: "No columns to parse from file"
        raise TableError(f"{path}: the file is empty (0 bytes); remove it, or write its rows (a csv file with a "
                         "header)")
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
        header = f.readline()
    # pandas renamed the second 'income' 'income.1' and took the first for the feature, without a word.
    names = next(csv.reader([header]), [])
    if twice := sorted({n for n in names if n.strip() and names.count(n) > 1}):
        raise TableError(f"{path}: column name(s) {twice} appear more than once in its header, and which one the "
                         "model would read is a guess; rename them so that each column has its own name")
    sep = next((ch for ch in (";", "\t", "|") if ch in header and "," not in header), None)
    if sep is not None:
        from jobs.csvfix import resave_hint
        raise TableError(f"{path}: its fields are separated by {sep!r} (its header: {header.strip()[:80]!r}), and "
                         f"trainyard reads CSV with ',' between fields, as train does. {resave_hint(sep, 'give that file')}")


def image_table(files: list[Path], image_field: str) -> "pd.DataFrame":  # noqa: F821
    """Rows for an image model from image files (`image_files`): a `file` column (the path) and the image's
    bytes under `image_field`, base64-encoded when sent (`_image_bytes_as_base64`)."""
    import pandas as pd
    return pd.DataFrame({"file": [str(f) for f in files], image_field: [f.read_bytes() for f in files]})


def image_files(path: Path, others: Optional[list[Path]] = None) -> list[Path]:
    """The image files `path` names: itself, or those under a folder that holds no Parquet file (searched
    recursively, so class folders too); the folder's other files go to `others` when given (said, not dropped
    silently)."""
    if path.is_file():
        return [path] if path.suffix.lower() in IMAGE_SUFFIXES else []
    if not path.is_dir() or any(path.glob("*.parquet")):
        return []
    found = sorted(f for f in path.rglob("*") if f.is_file() and not f.name.startswith("."))
    if others is not None:
        others.extend(f for f in found if f.suffix.lower() not in IMAGE_SUFFIXES)
    return [f for f in found if f.suffix.lower() in IMAGE_SUFFIXES]


def _bad_json_line(path: Path) -> Optional[str]:
    """The first line of a .jsonl file that is not one JSON object, named with its number (pandas' own error
    says only "Expected object or value", with no line)."""
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line.strip())
                except json.JSONDecodeError as exc:
                    return f"line {number}, column {exc.colno}: not valid JSON ({exc.msg}): {line.strip()[:80]!r}"
                if not isinstance(row, dict):
                    return (f"line {number}: a JSON {type(row).__name__}, where each line must be one object "
                            '({"feature": value, ...})')
    except (OSError, UnicodeDecodeError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def check_out(out, *, overwrite: bool = True) -> Path:
    """`out` as a place to write a table to: a known suffix, not a folder, and (unless `overwrite`) no file there
    yet. Checked before any request, so that a bad --out fails in a second, not after every prediction."""
    out = Path(out)
    if out.suffix.lower() not in SUFFIXES:
        raise TableError(f"--out {out}: unsupported file type {out.suffix!r}; use one of {', '.join(SUFFIXES)}")
    if out.is_dir():
        raise TableError(f"--out {out} is a folder; give a file name ending in {', '.join(SUFFIXES)}")
    if out.exists() and not overwrite:
        raise TableError(f"--out {out} already exists; give another name, or add --overwrite to replace it")
    return out


def write_table(df, out, *, overwrite: bool = True) -> Path:
    """`df` written to `out` whole or not at all: into a hidden file beside it, then renamed. A predict stopped
    while writing (cron's SIGTERM, Ctrl-C, a full disk) left the rows written so far, whole lines that read as a
    complete, shorter table. Without `overwrite`, a file that appeared at `out` meanwhile (a second run into the
    same --out) is kept and this one refused, not replaced unsaid."""
    out = check_out(out)                    # its kind; a file there is for the link below to find
    suffix = out.suffix.lower()
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(f".{out.name}.{os.getpid()}.partial")
    try:
        if suffix == ".csv":
            df.to_csv(part, index=False)
        elif suffix == ".parquet":
            df.to_parquet(part, index=False)
        else:
            # As written: 'Électronique > Audio', not "\u00c9lectronique" (pandas escapes non-ASCII, and every '/').
            part.write_text("".join(json.dumps(row, ensure_ascii=False, default=str) + "\n"
                                    for row in json.loads(df.to_json(orient="records"))), encoding="utf-8")
        if overwrite:
            os.replace(part, out)
        else:
            try:
                os.link(part, out)          # fails where a file is there: the check and the write are one step
            except FileExistsError:
                # This run's rows are not thrown away either (a night's scoring): kept beside it, by its pid.
                kept = out.with_name(f"{out.stem}.{os.getpid()}{out.suffix}")
                os.replace(part, kept)
                raise TableError(f"--out {out} exists now, written while this run predicted (by another run into "
                                 f"the same --out?); that file is kept, and this run's table is at {kept}. Give each "
                                 "run its own --out, or add --overwrite to replace it") from None
            except OSError:                 # a file system without hard links: checked, then renamed
                check_out(out, overwrite=False)
                os.replace(part, out)
    finally:
        part.unlink(missing_ok=True)
    return out


def _csv_shards(folder: Path, files: list[Path],
                sent: Optional[Collection[str]] = None) -> "pd.DataFrame":  # noqa: F821
    """A folder of CSV shards (a month a file) as one table; shards whose columns differ are refused, naming one
    (pandas would fill a missing column with empty cells, scored as imputed values), or with `sent`, those that
    differ in one of these. A bad cell is named by its file and line (`attrs["csv_parts"]`)."""
    parts = [read_table(f) for f in files]
    try:
        _same_columns(folder, files, parts, sent)
    except ShardColumns as exc:
        exc.read = (folder, files, parts)       # `read_used` checks them again by the columns used, not re-reading
        raise
    return _joined(files, parts)


def _joined(files: list[Path], parts: list) -> "pd.DataFrame":  # noqa: F821
    import pandas as pd
    table = pd.concat(parts, ignore_index=True)
    table.attrs["csv_parts"] = [(str(f), len(part)) for f, part in zip(files, parts)]
    return table


def read_used(path, used: Union[Collection[str], Callable[[], Collection[str]]]) -> "pd.DataFrame":  # noqa: F821
    """`read_table` of a file or folder of which only the columns `used` are read (a request's, or what
    `trainyard evaluate` scores and places rows by; a callable is asked only once the file reads, so that a file's
    problems are said before a server is asked for its schema). Shards that differ in their columns are read again
    with `used`, where differing in others (an operator's note in one month's file) does no harm, and Parquet shards
    that differ in one of `used` are refused (one lacking a feature was imputed whole)."""
    try:
        table = read_table(path)
    except ShardColumns as first:
        if first.read is None:
            raise
        folder, files, parts = first.read
        try:
            _same_columns(folder, files, parts, used() if callable(used) else used)
            return _joined(files, parts)
        except ShardColumns:
            # The first refusal names what the other shard adds too ("lacks 'torque'; adds 'Torque'"), which
            # the read by `used` leaves out (a column not used): the rename is in sight.
            raise first from None
    if table.attrs.get("parquet_parts"):        # a single file, or CSV shards read whole, needs no more
        same_shard_columns(table, used() if callable(used) else used)
    return table


def same_shard_columns(table, sent: Collection[str]) -> None:
    """`_same_columns` of a table `read_table` read from a folder of Parquet shards, once `sent` is known."""
    import pandas as pd

    if shards := table.attrs.get("parquet_parts"):
        _same_columns(Path(shards[0][0]), [Path(f) for _, f, _ in shards],
                      [pd.DataFrame(columns=columns) for _, _, columns in shards], sent)


def _same_columns(folder: Path, files: list[Path], parts: list, sent: Optional[Collection[str]]) -> None:
    """Refuse the first shard whose columns (those in `sent`, when given) differ from the first shard's."""
    first = {c for c in parts[0].columns if sent is None or c in sent}
    for f, part in zip(files[1:], parts[1:]):
        columns = {c for c in part.columns if sent is None or c in sent}
        if columns != first:
            lacks, extra = sorted(first - columns), sorted(columns - first)
            raise ShardColumns(f"{f}: its columns differ from {files[0].name}'s ("
                             + "; ".join(([f"lacks {', '.join(map(repr, lacks))}"] if lacks else [])
                                         + ([f"adds {', '.join(map(repr, extra))}"] if extra else []))
                             + f") in folder {folder}; make the shards agree, or give one file")


def numbers_read_as_text(df, features: list[dict]):
    """`df` with its numeric features as numbers. A file's reader makes a whole column text when one cell is not
    a number (a CSV's '?'); the server would then refuse every row of it, advising JSON senders. Here the
    numbers go as numbers, and a cell that is not one is named with its row: TableError. `trainyard predict`
    and `trainyard evaluate` read files through it (evaluate imputed such a column whole, without a word)."""
    import pandas as pd
    df, problems, at = df.copy(), [], None
    for f in features:
        name = f["name"]
        if f.get("type") != "number" or name not in df.columns:
            continue
        if problem := _dates_for_number(df[name], f):
            problems.append(problem)
            continue
        if pd.api.types.is_numeric_dtype(df[name]):
            if len(infinite := _infinite(df[name])):
                at = at or _cell_place(df)
                problems.append(_infinite_problem(df[name], infinite, at))
            continue
        cells = df[name].map(lambda v: v.strip() if isinstance(v, str) else v).replace("", None)
        numbers = pd.to_numeric(cells, errors="coerce")
        bad = cells.notna() & numbers.isna()
        if bad.any():
            if at is None:
                at = _cell_place(df)
            where = ", ".join(f"{at(i)}: {cells.iloc[i]!r}" for i in bad.to_numpy().nonzero()[0][:3])
            problems.append(f"column {name!r} must hold numbers; {int(bad.sum())} cell(s) do not ({where})"
                            + _written_hint(cells[bad], f))
        df[name] = numbers
        if not bad.any() and len(infinite := _infinite(numbers)):     # 'inf' in a CSV's text reads as a number
            at = at or _cell_place(df)
            problems.append(_infinite_problem(cells, infinite, at))
    if problems:        # every such column at once: one per run made a fix-and-retry loop of it
        raise TableError("; ".join(problems) + ". Fix them, or leave them empty for a missing value")
    return df


def _written_hint(cells, feature: dict) -> str:
    """How to mend numbers written as a screen shows them, when most bad cells are such: a percentage, whose
    scale the training range decides ('13.70%' is 0.137 to a model trained on 0.03 to 0.25), or a decimal comma or
    thousands separator ('24.319,51', '24,319.51'). The refusal said 'Fix them' alone."""
    text = cells.astype(str).str.strip()
    name, lo_hi = feature["name"], feature.get("trained_on")
    if text.str.fullmatch(r"[-+]?\d+([.,]\d+)?\s*%").mean() > 0.5:
        scale = "/ 100" if lo_hi and lo_hi[1] <= 1.5 else ""
        said = f"; the model was trained on {lo_hi[0]:g} to {lo_hi[1]:g}" if lo_hi else ""
        return (f" (percentages{said}: e.g. with pandas, df[{name!r}] = "
                f"df[{name!r}].str.rstrip('%').astype(float){' ' + scale if scale else ''})")
    if text.str.contains(r"^[-+]?\s*[$€£]|[$€£]$").mean() > 0.5:
        return (f" (a currency sign: e.g. with pandas, df[{name!r}] = df[{name!r}].str.replace(r'[^0-9.eE+-]', '', "
                "regex=True).astype(float), for a decimal point)")
    comma = text.str.fullmatch(r"[-+]?\d{1,3}(\.\d{3})*,\d+").mean()
    if comma > 0.5:
        return " (a decimal comma: save the file anew, e.g. with pandas: pd.read_csv(path, decimal=',', thousands='.'))"
    if text.str.fullmatch(r"[-+]?\d{1,3}(,\d{3})+(\.\d+)?").mean() > 0.5:
        return " (a thousands separator: save the file anew, e.g. with pandas: pd.read_csv(path, thousands=','))"
    return ""


def _dates_for_number(column, feature: dict) -> Optional[str]:
    """Why a column of dates, times or durations (a Parquet timestamp, with a zone or none) cannot be a number
    feature, or None: pandas' to_numeric made each its nanoseconds since 1970 (2019-03-01 became 1.55e15), scored
    as a number 'well outside the range' (`predict`) and scored by `evaluate` as a model that answers one class."""
    import pandas as pd
    kind = column.dtype
    if not (pd.api.types.is_datetime64_any_dtype(kind) or pd.api.types.is_timedelta64_dtype(kind)
            or isinstance(kind, pd.PeriodDtype)):
        return None
    seen = next((str(v) for v in column if not pd.isna(v)), None)
    trained = f" (trained on {feature['trained_on'][0]:g} to {feature['trained_on'][1]:g})" if feature.get(
        "trained_on") else ""
    return (f"column {feature['name']!r} holds dates or times ({kind}" + (f", such as {seen!r}" if seen else "")
            + f") where the model takes a number{trained}: store the number it was trained on (a duration in its "
            "units, days or years since a date) in that column")


def _infinite(column) -> "np.ndarray":  # noqa: F821
    """The positions of inf and -inf in a column of numbers. A bundle in this process imputed such a cell as a
    missing value without a word (the server refuses it: NaN/Infinity, send null), and `evaluate` scored it so."""
    import numpy as np
    return np.isinf(column.to_numpy(dtype="float64", na_value=np.nan)).nonzero()[0]


def _infinite_problem(column, infinite, at) -> str:
    where = ", ".join(f"{at(i)}: " + (repr(v) if isinstance(v := column.iloc[i], str) else f"{float(v)}")
                      for i in infinite[:3])
    return f"column {column.name!r} holds {len(infinite)} infinite value(s) ({where})"


def _cell_place(df):
    """How a cell's row is named: a CSV's line as an editor shows it (`record_lines`), as `train` names a stray
    cell; else the row, counted from 1."""
    if df.attrs.get("csv_parts") or df.attrs.get("shard_rows"):   # a folder of shards: the file, its line or row
        import bisect
        import itertools

        from jobs.datafiles import record_lines
        csv_parts = bool(df.attrs.get("csv_parts"))
        parts = df.attrs["csv_parts"] if csv_parts else df.attrs["shard_rows"]
        starts = list(itertools.accumulate(n for _, n in parts[:-1]))
        starts.insert(0, 0)
        lines: dict = {}                    # a shard's record lines, read only for a shard that holds a bad cell

        def at(i: int) -> str:
            k = bisect.bisect_right(starts, i) - 1
            path, n = parts[k]
            if not csv_parts:               # a Parquet shard's row, counted from 1 ("row 1501" of the folder named none)
                return f"{path} row {i - starts[k] + 1}"
            if path not in lines:
                found = record_lines(None, path)
                lines[path] = found if len(found) == n else range(2, n + 2)
            return f"{path} line {lines[path][i - starts[k]]}"
        return at
    if not df.attrs.get("csv"):
        return lambda i: f"row {i + 1}"
    from jobs.datafiles import record_lines
    lines = record_lines(None, df.attrs["csv"])
    return (lambda i: f"line {lines[i]}") if len(lines) == len(df) else (lambda i: f"line {i + 2}")
