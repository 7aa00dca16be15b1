"""The data's files, found and read by their headers alone, with no Ray: `data.path` expanded (folders, globs,
URIs), the format told from the names, each file's schema (Parquet footers, a CSV's first block), one schema
reconciled across shards, and the columns the spec names checked against them. Ingest builds on these before
Ray Data reads a row; `jobs.precheck` calls them before Ray starts.
"""
from __future__ import annotations

import fnmatch
import glob as globlib
import os
import re
from typing import Optional

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from jobs.csvfix import not_utf8, other_separator, resave_hint
from jobs.infer import (_COMMA_NUMBER, _DRESSED_NUMBER, MOSTLY_NUMBERS, NUMBER, DataError, kind_of, label_missing,
                        written_numbers_problem)
from jobs.lake import glob_base, partition_hint, refuse_compressed
from jobs.spec import DataSpec
from jobs.spelling import nearest_column

_EXTENSIONS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}


# ---------------------------------------------------------------------------------------------- files
def resolve_files(path: str | list[str]) -> tuple[pafs.FileSystem, list[str], list[str]]:
    """Expand directories and globs. Returns (filesystem, paths for pyarrow, display names)."""
    entries = path if isinstance(path, list) else [path]
    fs: Optional[pafs.FileSystem] = None
    found: list[str] = []
    for entry in entries:
        if "://" in entry:
            base, wild = glob_base(entry)
            try:
                entry_fs, root = pafs.FileSystem.from_uri(base)
                info = entry_fs.get_file_info(root)
            except Exception as exc:
                raise DataError(f"data.path: cannot open {entry!r}: {exc}") from None
            if info.type == pafs.FileType.NotFound:
                raise DataError(f"data.path: {entry} does not exist; check the bucket and prefix")
            if wild is not None:
                pattern = root.rstrip("/") + "/" + entry[len(base):].lstrip("/")
                listing = entry_fs.get_file_info(pafs.FileSelector(root, recursive=True))
                hits = _visible(sorted(i.path for i in listing if i.type == pafs.FileType.File
                                       and fnmatch.fnmatch(i.path, pattern)), root)
            else:
                hits = _list_dir(entry_fs, root) if info.type == pafs.FileType.Directory else [root]
            refuse_compressed(hits)
        else:
            entry_fs = pafs.LocalFileSystem()
            expanded = os.path.expanduser(entry)
            base, wild = glob_base(expanded)
            if wild is not None:
                # Folders matched too (lake/site=*): their tables, as a folder's listing reads them.
                matched = _visible(globlib.glob(expanded, recursive=True), base)
                hits = sorted({*(p for p in matched if os.path.isfile(p)),
                               *(f for p in matched if os.path.isdir(p) for f in _tables_under(entry_fs, p))})
            elif os.path.isdir(expanded):
                hits = _list_dir(entry_fs, os.path.abspath(expanded))
            elif os.path.isfile(expanded):
                hits = [os.path.abspath(expanded)]
            else:
                raise DataError(f"data.path: {entry!r} does not exist (looked in {os.getcwd()}); "
                                "paths are relative to the directory you run trainyard from")
            hits = [os.path.abspath(h) for h in hits]
            refuse_compressed(hits)
            if not hits:
                raise DataError(f"data.path: {entry!r} matches no Parquet or CSV files")
        if fs is not None and type(fs) is not type(entry_fs):
            raise DataError("data.path mixes local paths and URIs; keep all shards on one filesystem")
        fs = entry_fs
        found.extend(hits)
    if not found:
        raise DataError(f"data.path: {path!r} holds no Parquet or CSV files")
    found = list(dict.fromkeys(found))      # a file named twice (a folder and a file in it) is one shard
    return fs, found, found


def _visible(paths: list[str], base: str) -> list[str]:
    """`paths` but those under a name starting with '.' or '_' below `base` (.ipynb_checkpoints, a Spark job's
    _temporary: copies of the shards, read twice before), as a folder's listing and a glob's hits alike."""
    return [f for f in paths if not any(p.startswith((".", "_")) for p in os.path.relpath(f, base).split("/"))]


def _tables_under(fs: pafs.FileSystem, root: str) -> list[str]:
    """The visible tables under the folder `root` (a compressed one refused), sorted; [] when there are none."""
    return _listed_tables(fs, root)[0]


def _listed_tables(fs: pafs.FileSystem, root: str) -> tuple[list[str], list[str]]:
    """(`_tables_under`, every table under `root`, hidden ones too), from one listing."""
    listed = [i.path for i in fs.get_file_info(pafs.FileSelector(root, recursive=True)) if i.type == pafs.FileType.File]
    refuse_compressed(_visible(listed, root))
    tables = [f for f in listed if os.path.splitext(f)[1].lower() in _EXTENSIONS]
    return sorted(_visible(tables, root)), tables


def _list_dir(fs: pafs.FileSystem, root: str) -> list[str]:
    files, tables = _listed_tables(fs, root)
    if not files:
        hidden = f" ({len(tables)} under names starting with '.' or '_', which are skipped)" if tables else ""
        raise DataError(f"data.path: the directory {root} holds no .parquet or .csv files{hidden}")
    return files


_CONVERT = ("trainyard reads CSV and Parquet files (.csv, .parquet, .pq). Save the table as one, e.g. with pandas: "
            "pd.read_json(path).to_parquet('data.parquet') (add lines=True for JSON lines; pd.read_excel(path) for a "
            "spreadsheet, pd.read_csv(path, sep='\\t') for a tab-separated file)")


def infer_format(files: list[str], given: Optional[str]) -> str:
    kinds = {_EXTENSIONS.get(os.path.splitext(f)[1].lower()) for f in files}
    if given:
        other = [f for f in files if _EXTENSIONS.get(os.path.splitext(f)[1].lower()) not in (None, given)]
        if other and len(other) == len(files):
            raise DataError(f"data.format is {given}, but data.path names {other[:3]}"
                            f"{' and more' if len(other) > 3 else ''}: set data.format to match, or leave it out")
        if other:
            raise DataError(f"data.format is {given}, but data.path also holds {other[:3]}; point it at the {given} "
                            f"files only, e.g. with a glob: path: 'FOLDER/**/*.{given}'")
        return given
    if None in kinds:
        odd = [f for f in files if os.path.splitext(f)[1].lower() not in _EXTENSIONS][:3]
        known = [f for f in files if os.path.splitext(f)[1].lower() in _EXTENSIONS]
        if not known and any(os.path.splitext(f)[1].lower() in (".json", ".jsonl", ".xlsx", ".xls", ".tsv", ".txt")
                             for f in odd):
            raise DataError(f"data.path names {odd}: {_CONVERT}")
        raise DataError(f"cannot infer data.format from {odd}; set data.format: parquet or csv")
    if len(kinds) > 1:
        one_of_each = [next(f for f in files if _EXTENSIONS.get(os.path.splitext(f)[1].lower()) == k)
                       for k in sorted(kinds)]
        raise DataError(f"data.path mixes Parquet and CSV files ({', '.join(one_of_each)}); point it at one format, "
                        "e.g. with a glob: path: 'FOLDER/**/*.parquet'")
    return kinds.pop()


# ---------------------------------------------------------------------------------------------- schema
# Schemas read in this process, of local files, by (path, format, size, mtime): `jobs.precheck` reads every file's
# header before Ray starts and ingest reads them again a few seconds later; a CSV's is its first 4 MB block.
_SCHEMAS: dict[tuple, pa.Schema] = {}
_SCHEMAS_KEPT = 10_000


def file_schema(fs: pafs.FileSystem, path: str, fmt: str) -> pa.Schema:
    """`path`'s schema (a Parquet footer, a CSV's first block), or a DataError naming the file and the fix."""
    key = None
    if isinstance(fs, pafs.LocalFileSystem):
        try:
            st = os.stat(path)
            key = (path, fmt, st.st_size, st.st_mtime_ns)
        except OSError:     # reading it says what is wrong
            pass
    if key in _SCHEMAS:
        return _SCHEMAS[key]
    schema = _read_schema(fs, path, fmt)
    if key is not None:
        if len(_SCHEMAS) >= _SCHEMAS_KEPT:
            _SCHEMAS.clear()
        _SCHEMAS[key] = schema
    return schema


def _read_schema(fs: pafs.FileSystem, path: str, fmt: str) -> pa.Schema:
    try:
        if fmt == "parquet":
            schema = pq.read_schema(path, filesystem=fs)
        else:
            with fs.open_input_stream(path) as stream:
                schema = pacsv.open_csv(stream, read_options=pacsv.ReadOptions(block_size=4 << 20)).schema
            names = schema.names        # decoded here: a header that is not UTF-8 raises UnicodeDecodeError
    except UnicodeDecodeError:
        raise DataError(not_utf8(fs, path, "its header")) from None
    except Exception as exc:  # pyarrow raises several types for corrupt files
        if fs.get_file_info(path).size == 0:
            raise DataError(f"{path}: the file is empty (0 bytes); remove it, or write its rows (a {fmt} file with "
                            "a header)") from None
        if fmt == "csv" and _starts_with(fs, path, b"PAR1"):
            raise DataError(f"{path}: data.format is csv, but the file is Parquet; set data.format: parquet") from None
        sep = other_separator(fs, path) if fmt == "csv" else None
        if sep is not None:     # ';' between fields and decimal commas (25,0) in them: the parse fails on row 2
            raise DataError(f"{path}: its fields are separated by {sep!r}, and trainyard reads CSV with ',' between "
                            f"fields. {resave_hint(sep)}") from None
        raise DataError(f"{path}: cannot read it as {fmt} ({type(exc).__name__}: {exc}); "
                        f"the file is corrupt or not a {fmt} file; remove or replace it") from None
    if fmt == "csv" and schema.names and (schema.names[0].lstrip().startswith(('{"', "[{", '["'))
                                          or schema.names[0].strip() == "["):
        # JSON read as CSV parses: its "header" is the first record cut at its commas ('{"a":0', 'y:0}')
        raise DataError(f"{path}: data.format is csv, but the file holds JSON ({schema.names[0][:20]!r}...): "
                        f"{_CONVERT}")
    if fmt == "csv" and (binary := [f.name for f in schema if pa.types.is_binary(f.type)]):
        # Arrow reads the cells of a CSV column that are not UTF-8 as bytes: a file saved as Latin-1 (Excel's
        # Windows-1252), whose accented categories would be refused as a column of an unusable type.
        raise DataError(not_utf8(fs, path, f"column {binary[0]!r}"))
    twice = sorted({n for n in schema.names if schema.names.count(n) > 1})
    if twice:
        raise DataError(f"{path}: column name(s) {twice} appear more than once in its header; rename them so that "
                        "each column has its own name")
    return schema


def _starts_with(fs: pafs.FileSystem, path: str, magic: bytes) -> bool:
    try:
        with fs.open_input_stream(path) as stream:
            return stream.read(len(magic)) == magic
    except Exception:       # unreadable: the caller's own message stands
        return False


def column_cells(fs: pafs.FileSystem, path: str, column: str) -> list[tuple[int, Optional[str]]]:
    """One column of a CSV file as (line, cell text) per record, a missing value None (as `csv_convert` reads
    them): to point at cells by the line an editor shows (`record_lines`: quoted line breaks move later records)."""
    with fs.open_input_stream(path) as stream:
        cells = pacsv.read_csv(stream, convert_options=csv_convert(
            include_columns=[column], column_types={column: pa.string()}))[column].to_pylist()
    lines = record_lines(fs, path)
    if len(lines) != len(cells):        # the two readers disagree on the records: the simple count it is
        lines = list(range(2, len(cells) + 2))
    return list(zip(lines, cells))


def record_lines(fs: Optional[pafs.FileSystem], path: str) -> list[int]:
    """The line each data record of a CSV starts on (header: line 1), as an editor numbers them: a quoted field
    may hold line breaks, blank lines are no records. Reads the whole file: to name a bad cell, not in a good read."""
    import csv
    import io

    if fs is None:
        fs = pafs.LocalFileSystem()
    info = fs.get_file_info(path)
    key = (path, info.size, info.mtime_ns)
    if key in _LINES:                   # several refused columns of one file name their cells by its lines
        return _LINES[key]
    with fs.open_input_file(path) as raw:
        reader, starts, previous = csv.reader(io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace",
                                                               newline="")), [], 0
        for row in reader:
            if row:
                starts.append(previous + 1)
            previous = reader.line_num
    _LINES.clear()
    _LINES[key] = starts[1:]
    return starts[1:]


_LINES: dict = {}       # the last file's record_lines, by path, size and modification time


def csv_convert(**options) -> pacsv.ConvertOptions:
    """How every reader of the training data reads a CSV's cells: Arrow's defaults, but an empty cell and 'NA',
    'null', ... are missing in a column of text too (an empty cell became a category '' or a third class)."""
    return pacsv.ConvertOptions(strings_can_be_null=True, **options)


_UNIFIED = {"int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(), "string": pa.string()}


def reconcile(schemas: dict[str, pa.Schema], wanted: Optional[set[str]], exclude: set[str],
              label: Optional[str] = None, fs: Optional[pafs.FileSystem] = None) -> pa.Schema:
    """One schema for all shards: int+float promote to float; anything else mixed is an error naming the file.
    `label`: the label column, which cannot be excluded, so its fix is the shards alone. `fs`: where the CSV
    shards can be read again, to point at a few stray cells that made a column of numbers text in a shard."""
    first_file, first = next(iter(schemas.items()))
    columns = [n for n in first.names if n not in exclude and (wanted is None or n in wanted)]
    problems = _shard_column_problems(schemas, exclude, wanted)
    fields, unusable = [], []       # unusable: columns of a type no feature can have (a timestamp)
    for c in columns:
        kinds = {f: kind_of(s.field(c).type) for f, s in schemas.items() if c in s.names}
        distinct = set(kinds.values()) - {"null"}
        if distinct <= {"int", "float"} and distinct:
            unified = "float" if "float" in distinct else "int"
        elif len(distinct) == 1 and next(iter(distinct)) in _UNIFIED:
            unified = next(iter(distinct))
        elif not distinct:
            unified = "float"  # all-null everywhere: a numeric column that is always imputed
        else:
            if len(distinct) == 1:
                t = next(s.field(c).type for s in schemas.values() if c in s.names)
                derive = ("dates and times are not read as features: derive a number from it in the data (days "
                          "before a reference date, a weekday, an hour), or " if distinct == {"time"} else "")
                problems.append(f"column {c!r} has type {t} which trainyard cannot use as a feature; {derive}list "
                                "it under data.features.exclude")
                unusable += [c] if c != label else []
                continue
            stray = (_stray_cells(fs, [f for f, k in kinds.items() if k == "string"], c)
                     if fs is not None and c != label and distinct - {"int", "float"} == {"string"} else None)
            if stray:
                problems.append(stray)
                continue
            by_kind: dict[str, str] = {}
            for f, k in kinds.items():
                by_kind.setdefault(k, f)
            detail = ", ".join(f"{k} in {f}" for k, f in by_kind.items())
            fix = ("write the label the same way in every shard (the same classes, e.g. 'yes'/'no' or 1/0, or "
                   "numbers throughout)" if c == label else "dates and times are not features (a text shard's are "
                   "written another way, or hold a stray cell): list it under data.features.exclude, or derive a "
                   "number from it" if "time" in distinct else "make the shards agree or exclude the column")
            problems.append(f"column {c!r} has incompatible types across shards ({detail}); {fix}")
            continue
        fields.append(pa.field(c, _UNIFIED[unified]))
    if problems:        # of columns of such types alone: a caller may go on without them (`DataError.columns`)
        raise DataError("\n".join(problems), columns=unusable if len(unusable) == len(problems) else ())
    return pa.schema(fields)


def _shard_column_problems(schemas: dict[str, pa.Schema], exclude: set[str], wanted: Optional[set[str]]) -> list[str]:
    """The shards that do not have the columns the others have, or have columns the others lack: a column in more
    shards than not is expected (a tie: as the first shard has it), so the odd shard out is named, once, and not
    every shard that has it (one export without 'ambient_temp_c' named the five good shards). Where several
    shards differ alike (a sensor added halfway: 7 of 14 daily shards without it), one line says so for all."""
    names = list(schemas)
    first = schemas[names[0]]
    union = list(dict.fromkeys(n for s in schemas.values() for n in s.names
                               if n not in exclude and (wanted is None or n in wanted)))
    lacking: dict[tuple, list[str]] = {}       # the shards that lack a column → the columns they all lack
    for c in union:
        if lack := tuple(f for f in names if c not in schemas[f].names):
            lacking.setdefault(lack, []).append(c)
    fix = ("fix the shard (a column it lacks may be added empty, null in every row: it is imputed there), or list "
           "the column under data.features.exclude")
    problems = []
    for lack, columns in lacking.items():
        have = [f for f in names if f not in lack]
        expected = 2 * len(have) > len(names) or (2 * len(have) == len(names) and columns[0] in first.names)
        odd = list(lack) if expected else have           # the shards that differ from the rest
        if len(odd) == 1:
            others = lack if not expected else have
            count = others[0] if len(others) == 1 else f"{len(others)} of the {len(names)} shards"
            verb = ("missing", "has" if len(others) == 1 else "have") if expected else ("has", "lacks" if len(
                others) == 1 else "lack")
            problems.append(f"{odd[0]}: {verb[0]} column(s) {columns} that {count} {verb[1]}; {fix}")
            continue
        shown = ", ".join(lack[:3]) + (f" and {len(lack) - 3} more" if len(lack) > 3 else "")
        problems.append(f"column(s) {columns} are in {len(have)} of the {len(names)} shards and missing from the other "
                        f"{len(lack)} ({shown}): a column added or dropped partway. Give the shards that lack it the "
                        "column, empty (null in every row: it is imputed there), or list it under "
                        "data.features.exclude")
    return problems


def _stray_cells(fs: pafs.FileSystem, files: list[str], column: str, shown: int = 5) -> Optional[str]:
    """When the shards in which `column` reads as text hold numbers but for a few cells: which cells, where
    ("FILE line N ('?')" of a CSV, "FILE row N" of a Parquet file), and the fix; else None (a column of text in
    those shards). A month's Parquet file with 29 'n/a' among its readings was told only "incompatible types
    across shards", and to exclude the sensor."""
    found, filled, numbers, comma, dressed = [], 0, 0, 0, 0
    for path in files:
        csv_file = path.lower().endswith(".csv")
        try:
            cells = (column_cells(fs, path, column) if csv_file else
                     enumerate(pq.read_table(path, columns=[column], filesystem=fs)[column].to_pylist(), 1))
        except (OSError, pa.ArrowException):
            return None
        for line, v in cells:
            if v is not None and not isinstance(v, str):
                return None         # a Parquet column of another type (a list, bytes): not a stray cell
            line = line if csv_file else f"row {line}"
            if v is None or not v.strip():
                continue
            filled += 1
            if re.match(NUMBER, v.strip()):            # as ingest tells a number (`jobs.infer`)
                numbers += 1
                continue
            comma += bool(re.match(_COMMA_NUMBER, v.strip()))
            dressed += bool(re.match(_DRESSED_NUMBER, v.strip()))
            found.append((path, line, v))
    # '1,000', '25,0', '$12.50', '12%': numbers written as text, said as ingest says them of one file.
    facts = {"filled": filled, "numbers": numbers, "comma_numbers": comma, "dressed_numbers": dressed,
             "not_numbers": {v.strip() for _, _, v in found[:3]}, "distinct": set()}
    if problem := written_numbers_problem(column, facts):
        path, line, v = found[0]
        return (f"{problem} (in {', '.join(sorted({p for p, _, _ in found}))}, e.g. {path} {_at(line)}: {v!r}; "
                "the other shards hold plain numbers)")
    if not found or numbers < MOSTLY_NUMBERS * filled:
        return None
    where = ", ".join(f"{path} {_at(line)} ({v!r})" for path, line, v in found[:shown])
    more = f" and {len(found) - shown} more" if len(found) > shown else ""
    return (f"column {column!r} holds numbers but for {len(found)} cell(s) of {', '.join(files)}, which make it "
            f"text there: {where}{more}. Fix those cells (leave them empty for a missing value), or list "
            f"{column!r} under data.features.exclude")


def _at(line) -> str:
    return line if isinstance(line, str) else f"line {line}"      # a Parquet file's "row N", a CSV's line


# ---------------------------------------------------------------------------------------------- columns
def check_files(data: DataSpec, schemas: dict[str, pa.Schema], fmt: str, *, text: bool = False,
                fs: Optional[pafs.FileSystem] = None) -> pa.Schema:
    """The one schema ingest reads the files with: every `column_problems` line, then `reconcile`'s (a shard
    missing a column, types that do not agree, stray cells in a CSV shard read again from `fs`), raised as one
    DataError. `text`: the job reads free text."""
    if problems := column_problems(data, schemas, fmt):
        raise DataError("\n".join(problems))
    split = {c for c in (data.split.by, data.split.order) if c}      # read for the split alone: `jobs.splits`
    return reconcile(schemas, wanted_columns(data, text), set(data.features.exclude) | split, data.label, fs=fs)


def wanted_columns(data: DataSpec, text: bool) -> Optional[set[str]]:
    """The columns a spec that lists its features reads (those and the label); None: every column not excluded."""
    given = data.features
    if given.numeric is not None and given.categorical is not None and (given.text is not None or not text):
        return set(given.listed) | {data.label}
    return None


def column_problems(data: DataSpec, schemas: dict[str, pa.Schema], fmt: str) -> list[str]:
    """Why the columns `data` names (its label, the features it lists or excludes) are not in the files whose
    `schemas` are given, one line each, with the nearest column name where one is close; [] when every name is
    found. Ingest raises them; `jobs.precheck` before Ray starts, on the files this machine has."""
    names = next(iter(schemas.values())).names
    no_label = all(data.label not in s.names for s in schemas.values())
    if no_label:
        one = [s.names[0] for s in schemas.values() if len(s.names) == 1]
        sep = next((ch for ch in (";", "\t", "|") if one and ch in one[0]), None) if fmt == "csv" else None
        if sep is not None:      # a ';' (or tab, '|') separated file reads as one column named by the whole header
            return [f"{len(one)} of the {len(schemas)} file(s) under {data.path!r} read as a single column "
                    f"named {one[0][:80]!r}: their fields are separated by {sep!r}, and trainyard reads CSV "
                    f"with ',' between fields. {resave_hint(sep)}"]
    problems = []
    if no_label:
        problems.append(f"label column {data.label!r} is in none of the {len(schemas)} file(s) under {data.path!r}"
                        f"{partition_hint(data.label, list(schemas), names, data.path)}; "
                        f"{nearest_name(data.label, names)}columns are {sorted(names)}. Fix data.label")
    for field in ("numeric", "categorical", "text", "exclude"):
        for listed in getattr(data.features, field) or []:
            if all(listed not in s.names for s in schemas.values()):
                # A misspelt exclude would otherwise leave the id or leak it was meant to drop among the features.
                problems.append(f"data.features.{field} names column {listed!r}, which is in none of the files"
                                f"{partition_hint(listed, list(schemas), names, data.path)}; "
                                f"{nearest_name(listed, names)}"
                                f"columns are {sorted(names)}. Fix data.features.{field}")
    return problems


def nearest_name(name: str, names: list[str]) -> str:
    """"did you mean 'X'? " for the column nearest `name` (`jobs.spelling.nearest_column`), else ""."""
    return f"did you mean {near!r}? " if (near := nearest_column(name, names)) else ""


def cast_batch(batch: pa.Table, schema: pa.Schema, label: str) -> pa.Table:
    """A block of rows as ingest reads them: in the reconciled `schema` (a column a shard lacks as nulls, NaN as
    null), with `_label_missing` (1 where the label is missing, or an empty CSV cell of a text label)."""
    cols = []
    for f in schema:
        col = batch[f.name] if f.name in batch.column_names else pa.nulls(len(batch), f.type)
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        col = col.cast(f.type)
        if pa.types.is_floating(f.type):
            # NaN and null both mean "missing" to trainyard; keep one representation.
            col = pc.if_else(pc.is_nan(col), pa.scalar(None, f.type), col)
        cols.append(col)
    table = pa.Table.from_arrays(cols, schema=schema)
    return table.append_column("_label_missing", pc.cast(label_missing(table[label]), pa.int64()))


def stray_cells_where(fs: pafs.FileSystem, files: list[str], said: str, facts: dict) -> Optional[str]:
    """Where the cells that kept a column of numbers from reading as numbers are, for the column `said` names:
    "Where: FILE line N ('?'), ..." (at most 5), or None. Reads that one column of each file again, as text."""
    column = next((c for c, f in facts.items()
                   if f.get("not_numbers") and f"column {c!r} holds numbers but for " in said), None)
    if column is None:
        return None
    stray, found, total = set(facts[column]["not_numbers"]), [], 0
    for path in files:
        try:
            cells = column_cells(fs, path, column)
        except (OSError, pa.ArrowException):
            continue
        lines = [(line, v) for line, v in cells if v is not None and v.strip() in stray]
        total += len(lines)
        found += [f"{path} line {n} ({v!r})" for n, v in lines[:5 - len(found)]]
    if not found:
        return None
    return "Where: " + ", ".join(found) + (f" and {total - len(found)} more" if total > len(found) else "")
