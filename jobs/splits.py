"""The train/validation/test split: by a seeded hash of each row (the default), of each row's group
(`data.split.by`), or by time (`data.split.order`).

Every way gives each row a key `_u` and cuts on it, so one `assign_split` serves all three:
- by row: `_u` uniform in [0, 1) from the row's content: independent of shard order and block boundaries, and
  identical rows share a split, so duplicates cannot leak from train into test;
- by group: `_u` from the group's value alone (a patient, a machine, a customer), so all of a group's rows share a
  split and the test split measures the model on groups it never saw; a row without a group is keyed by its
  content;
- by time: `_u` is minus the row's time, so the latest rows are the test split, those before them validation,
  the earliest train: the model is measured on a later period than it learnt from, as it will be used.
The column a split is made by is read for it alone, never a feature, and dropped with `_u`.
"""
from __future__ import annotations

import base64
import hashlib
import re
from typing import Any, Optional

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from jobs.datafiles import column_cells, csv_convert, nearest_name
from jobs.infer import DataError, jsonable, kind_of, label_missing
from jobs.lake import partition_hint
from jobs.spec import DataSpec

SPLIT_COLUMN = "_split"
TRAIN, VAL, TEST = 0, 1, 2
NAMES = {TRAIN: "train", VAL: "val", TEST: "test"}
GAP = 3         # a split by time's row within data.split.gap before the next split's start: in no split
NEW = 4         # a split by group's row whose group the bundle never saw (`splits_of`, by its kept `seen` groups)
# The groups a split by group trained or validated on, kept in its summary (lineage.json) as the top 32 bits of their
# keys, up to this many (4 bytes each, base64: about 1.1 MB at the most); past it, none are kept. A new group's key
# falls in the train split's range as often as a seen one's: the cuts alone counted 80 % of new applicants as
# "groups it trained or validated on". Two groups share 32 bits about once in 2^32 / n: 1 in 21,000 at 200,000.
SEEN_MAX = 200_000


def split_column(data: DataSpec) -> Optional[str]:
    """The column the split is made by (`data.split.by` or `.order`), or None: by row."""
    return data.split.by or data.split.order


# ---------------------------------------------------------------------------------------------- the column
def split_field(data: DataSpec, schemas: dict[str, pa.Schema], fs=None) -> Optional[pa.Field]:
    """The field ingest reads the split's column as, across the shards; None when the split is by row. Raises a
    DataError naming the shards that lack it, or a type it cannot be split by (text as a time: with `fs`, the
    CSV shards' first cells that are no ISO date, by line)."""
    column = split_column(data)
    if column is None:
        return None
    what = "data.split.by" if data.split.by else "data.split.order"
    lacking = [f for f, s in schemas.items() if column not in s.names]
    if len(lacking) == len(schemas):
        names = next(iter(schemas.values())).names
        raise DataError(f"{what} names column {column!r}, which is in none of the files"
                        f"{partition_hint(column, list(schemas), names, data.path)}; "
                        f"{nearest_name(column, names)}columns are {sorted(names)}. Fix {what}")
    if lacking:
        shown = ", ".join(lacking[:5]) + (f" and {len(lacking) - 5} more" if len(lacking) > 5 else "")
        raise DataError(f"{what} names column {column!r}, which {len(lacking)} of the {len(schemas)} file(s) lack "
                        f"({shown}): their rows could not be split by it. Add the column to them, or leave them out "
                        "of data.path")
    types = {f: s.field(column).type for f, s in schemas.items()}
    kinds = {kind_of(t) for t in types.values()} - {"null"}
    shown = ", ".join(sorted({str(t) for t in types.values()}))
    if not kinds:
        raise DataError(f"{what} names column {column!r}, which holds no value in any file; fill it in")
    if kinds == {"time"}:       # a shard whose column is empty (null) is left to the check of rows without a time
        field = pa.field(column, _time_type(column, what, {f: t for f, t in types.items() if kind_of(t) != "null"}))
        gap_units(data.split.gap, field.type)
        return field
    if kinds <= {"int", "float"}:
        gap_units(data.split.gap, pa.float64())
        return pa.field(column, pa.float64() if data.split.order or "float" in kinds else pa.int64())
    if data.split.order:
        texts = [f for f, t in types.items() if kind_of(t) == "string"]
        raise DataError(f"data.split.order names column {column!r}, of type {shown}: the split orders rows by a "
                        "date, a time or a number that counts up" + (_not_dates(fs, texts, column, len(types)) or "")
                        + ". Store it as a date or timestamp (a CSV's ISO dates and times read as such: 2024-11-04, "
                        "2024-11-04 10:00, 2024-11-04T10:00Z), or as a number (days since a start date)")
    if kinds <= {"string", "int", "float"}:
        return pa.field(column, pa.string())    # ids as text in one shard and numbers in another: one text
    if kinds == {"bool"}:
        return pa.field(column, pa.bool_())
    raise DataError(f"data.split.by names column {column!r}, of type {shown}: a split groups rows by text, numbers, "
                    "booleans or times. Store it as one of those (a UUID as its text), or name another column")


def gap_units(gap, order_type: pa.DataType) -> float:
    """`data.split.gap` in the order column's units (microseconds for times, as `order_values` gives them; the
    number itself for a column of numbers), 0 for none. Raises a DataError where the gap's form does not fit the
    column: a span of time for numbers, or a bare number for times (days? hours?)."""
    from jobs.spec import window_seconds
    if gap is None:
        return 0.0
    if pa.types.is_timestamp(order_type) or pa.types.is_date(order_type):
        if not isinstance(gap, str):
            raise DataError(f"data.split.gap is {gap:g}, a bare number, but the order column holds times: give a span "
                            f"with its unit ({gap:g}d for days, {gap:g}h for hours)")
        return window_seconds(gap) * 1e6
    if isinstance(gap, str):
        raise DataError(f"data.split.gap is {gap!r}, a span of time, but the order column holds numbers (days since a "
                        "start, a period's index): give the gap as a number of those units")
    return float(gap)


def _time_type(column: str, what: str, types: dict[str, pa.DataType]) -> pa.DataType:
    """One timestamp type for a split's times: in UTC where the files store a time zone, in nanoseconds where a
    shard stores them so (pandas writes them; a cast to microseconds refuses to drop the digits), else in
    microseconds (a date before 1677 fits). Files with a zone and files without cannot be ordered together: which
    zone the others' times are in, only their writer knows."""
    zoned = {f for f, t in types.items() if pa.types.is_timestamp(t) and t.tz is not None}
    if zoned and len(zoned) < len(types):
        plain = [f for f in types if f not in zoned]
        raise DataError(f"{what} names column {column!r}, whose times carry a time zone in {len(zoned)} file(s) "
                        f"({sorted(zoned)[0]}) and none in {len(plain)} ({plain[0]}): they cannot be "
                        f"{'ordered' if 'order' in what else 'compared'} together. Write them one way in every "
                        "file (all with a zone or offset, or all without)")
    unit = "ns" if any(pa.types.is_timestamp(t) and t.unit == "ns" for t in types.values()) else "us"
    return pa.timestamp(unit, "UTC" if zoned else None)


def _times(cells: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(is an ISO date or time, carries a zone or offset) per cell, vectorised (two Arrow casts a cell took
    minutes on a large file)."""
    text = pd.Series(cells, dtype=object).str.strip()
    parsed = pd.to_datetime(text, format="ISO8601", errors="coerce", utc=True)
    iso = text.str.match(r"^\d{4}-\d\d-\d\d", na=False)          # pandas also takes 2024/11/04; Arrow does not
    zoned = text.str.contains(r"(?:Z|[+-]\d\d(?::?\d\d)?)$", regex=True, na=False) & text.str.contains("T| ", na=False)
    return (parsed.notna() & iso).to_numpy(), zoned.to_numpy()


_MONTH_FIRST = r"^\d{1,2}/\d{1,2}/\d{4}$"


def _not_dates(fs, files: list[str], column: str, of: int, shown: int = 3) -> Optional[str]:
    """Where a column of times reads as text: the files, and in a CSV the first cells that are no ISO date or
    time, by line (a '?' in one of 23 monthly files made the whole column text there, and the message named
    none of them), or that its ISO times mix cells with a zone and without. None when no file is of text."""
    if not files:
        return None
    found, month_first, mixed, numbers, bad_total = [], False, [], False, 0
    for path in files:
        if fs is None or not path.lower().endswith(".csv"):
            continue
        try:
            cells = [(line, v) for line, v in column_cells(fs, path, column) if v is not None]
        except (OSError, pa.ArrowException):
            continue
        ok, zoned = _times([v for _, v in cells])
        # Day numbers with a stray '?' read as text too: the numbers are fine, the other cells are what to name.
        numeric = pd.to_numeric(pd.Series([v for _, v in cells], dtype=object).str.strip(), errors="coerce").notna()
        numbers = numbers or bool(numeric.any())
        ok = ok | numeric.to_numpy()
        bad_total += int((~ok).sum())
        bad = [cells[i] for i in np.flatnonzero(~ok)[:max(shown - len(found), 0)]]
        found += [f"{path} line {line}: {v!r}" for line, v in bad]
        month_first = month_first or any(re.match(_MONTH_FIRST, v.strip()) for _, v in bad)
        if ok.all() and zoned.any() and not zoned.all():
            i, j = int(np.argmax(zoned)), int(np.argmax(~zoned))
            mixed.append(f"{path}: line {cells[i][0]} {cells[i][1]!r} has a zone or offset, line {cells[j][0]} "
                         f"{cells[j][1]!r} none")
    more = f" and {bad_total - len(found):,} more" if bad_total > len(found) else ""
    where = "; ".join(found + mixed) + more if found or mixed else (
        ", ".join(files[:shown]) + (" ..." if len(files) > shown else ""))
    hint = (" (month/day/year as written? pd.to_datetime(df[col], format='%m/%d/%Y') reads it, "
            ".dt.strftime('%Y-%m-%d') writes it as ISO)" if month_first else
            " (write every time of the column one way: all with a zone or offset, or all without)" if mixed else
            " (the other cells are numbers: fix or empty these)" if numbers and found else "")
    return f"; it reads as text in {len(files)} of {of} file(s): {where}{hint}"


GAPS_FIX = ", so the split cannot tell which period they belong to. Fill them in, or leave those rows out"


def order_gaps(fs, files: list[str], column: str, shown: int = 3) -> Optional[str]:
    """Where the rows without a time are (CSV: by line; Parquet: by file, with a count), for the refusal of
    `order_problem`, in `validate` before Ray starts and in the run. Reads the one column of each file with Arrow;
    only a CSV that has gaps is read again for their lines (a 1M-row file of none took 2 s that way, on every
    run). None when none is found here."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    found, total = [], 0
    for path in files:
        try:
            if path.lower().endswith(".csv"):
                with fs.open_input_stream(path) as stream:
                    cells = pacsv.read_csv(stream, convert_options=csv_convert(
                        include_columns=[column], column_types={column: pa.string()}))[column]
                gaps = cells.null_count + int(pc.sum(pc.equal(pc.utf8_trim_whitespace(cells), "")).as_py() or 0)
                if gaps and len(found) < shown:
                    found += [f"{path} line {line}" for line, v in column_cells(fs, path, column)
                              if v is None or not v.strip()][:shown - len(found)]
            else:
                with fs.open_input_file(path) as f:
                    gaps = pq.read_table(f, columns=[column])[column].null_count
                found += [f"{path} ({gaps:,} row(s))"] if gaps and len(found) < shown else []
            total += gaps
        except (OSError, KeyError, pa.ArrowException):
            continue
    if not total:
        return None
    more = f" and {total - len(found)} more" if total > len(found) and any(" line " in f for f in found) else ""
    return (f"data.split.order: {total:,} row(s) have no value in column {column!r} ({'; '.join(found)}"
            f"{more}){GAPS_FIX}")


def gap_problem(split_rows: dict[str, int], in_gap: Optional[dict[str, int]], data: DataSpec) -> Optional[str]:
    """Why a split by time with a gap has no train or no validation row: its whole period fell within the gap
    (not the ties of one time). For `ingest.check_splits`, and for `validate` (`gap_check`) before Ray starts."""
    longer = {"train": "lower data.split.val / data.split.test (a longer train period)",
              "val": "raise data.split.val (a longer validation period)"}
    for name, what, before in (("train", "train", "validation"), ("val", "validation", "test")):
        if split_rows[name] == 0 and (in_gap or {}).get(name):
            return (f"the {what} split is empty: all {in_gap[name]:,} row(s) of its period fell within "
                    f"data.split.gap {data.split.gap!r} before {before}'s start, and were left out. Shorten the gap, "
                    f"{longer[name]}, or add rows of a longer period")
    return None


def gap_check(fs, files: list[str], data: DataSpec, order_type: pa.DataType) -> Optional[str]:
    """`gap_problem` for `validate`: the labelled rows' times read (two columns, with Arrow) and split as ingest
    will split them. A gap of 30 days emptied the validation split of six months of data (15 %: 27 days), found
    after a Ray start."""
    import pyarrow.parquet as pq

    times = []
    for path in files:
        try:
            if path.lower().endswith(".csv"):
                with fs.open_input_stream(path) as stream:
                    table = pacsv.read_csv(stream, convert_options=csv_convert(
                        include_columns=[data.split.order, data.label],
                        column_types={data.split.order: pa.string(), data.label: pa.string()}))
            else:
                with fs.open_input_file(path) as f:
                    table = pq.read_table(f, columns=[data.split.order, data.label])
        except (OSError, KeyError, pa.ArrowException):
            return None         # the run's own checks say what is wrong with the file
        labelled = ~label_missing(table[data.label]).to_numpy()     # the rows ingest keeps (`cast_batch`)
        times.append(_comparable(table[data.split.order].to_pandas())[labelled])
    u = -np.concatenate(times) if times else np.array([])
    if not len(u) or np.isnan(u).any():
        return None             # no rows, or rows without a time: refused on their own (`order_gaps`)
    cuts = split_thresholds(np.zeros(len(u)), u, data.split.val, data.split.test, stratify=False)
    keys = pd.DataFrame({"_u": u, "y": 0})
    splits = assign_split(keys, "y", cuts, False, gap=gap_units(data.split.gap, order_type))[SPLIT_COLUMN].to_numpy()
    how = split_summary(data, pd.DataFrame({SPLIT_COLUMN: splits}), u, False, order_type=order_type, cuts=cuts)
    return gap_problem({name: int((splits == k).sum()) for k, name in NAMES.items()}, how["in_gap"], data)


def order_problem(column: str, facts: dict) -> Optional[str]:
    """Why the rows cannot be ordered by `column` (rows without a time), from ingest's probe `facts` of it."""
    if facts["nulls"]:
        return (f"data.split.order: {facts['nulls']:,} of {facts['n']:,} rows have no value in column {column!r}"
                f"{GAPS_FIX}")
    if facts["infinite"]:
        return (f"data.split.order: {facts['infinite']:,} of {facts['n']:,} rows have an infinite value in column "
                f"{column!r}, which no period holds. Fix them, or leave those rows out")
    return None


# ---------------------------------------------------------------------------------------------- the key
def split_key(batch: pd.DataFrame, seed: int, by: Optional[str] = None, order: Optional[str] = None) -> pd.DataFrame:
    """Drop label-less rows, add `_u` (the module's docstring says how each way keys a row) and drop the split's
    own column."""
    batch = batch[batch["_label_missing"] == 0].drop(columns=["_label_missing"])
    if order is not None:
        return batch.drop(columns=[order]).assign(_u=-order_values(batch[order]))
    key = hashlib.sha256(str(seed).encode()).hexdigest()[:16]
    if by is None:
        h = pd.util.hash_pandas_object(batch, index=False, hash_key=key).to_numpy(dtype=np.uint64)
    else:
        groups = batch[by]
        batch = batch.drop(columns=[by])
        h = _group_hashes(groups, key)
        alone = groups.isna().to_numpy()
        if alone.any():
            h[alone] = pd.util.hash_pandas_object(batch[alone], index=False, hash_key=key).to_numpy(dtype=np.uint64)
    return batch.assign(_u=_unit(h))


def _unit(h: np.ndarray) -> np.ndarray:
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _bucket(u: np.ndarray) -> np.ndarray:
    """A group's key `_u` as 32 bits (`SEEN_MAX`)."""
    return np.floor(np.asarray(u, dtype=np.float64) * 4294967296.0).astype(np.uint32)


def _group_hashes(groups: pd.Series, key: str) -> np.ndarray:
    """Each group value's hash, of its canonical text (`jobs.fitted.canonical`: 7, 7.0 and '7' are one group):
    pandas hashed an Arrow-backed column of integers as floats in a block holding a null and as integers in one
    that did not (a group's rows in two splits), and `evaluate` must key a table read another way the same."""
    from jobs.fitted import canonical
    if pd.api.types.is_string_dtype(groups) or pd.api.types.is_integer_dtype(groups):
        # The usual ids, text or whole numbers: their canonical text is str() of each, in C (ingest keys every row
        # of the data with this; a Python call per row was the slow part).
        text = groups.astype(object).where(groups.notna(), "").astype(str).astype(object)
        if pd.api.types.is_string_dtype(groups) and not groups.dropna().map(type).eq(str).all():
            text = pd.Series(["" if pd.isna(v) else canonical(v) for v in groups], dtype=object)
    else:
        text = pd.Series(["" if pd.isna(v) else canonical(v) for v in groups], dtype=object)
    return pd.util.hash_pandas_object(text.reset_index(drop=True), index=False,
                                      hash_key=key).to_numpy(dtype=np.uint64, copy=True)


def _comparable(values: pd.Series) -> np.ndarray:
    """Times (or numbers) as float64 for comparing with a split's starts: microseconds since 1970 in UTC (a time
    without a zone taken as UTC), NaN where a value is none."""
    if not pd.api.types.is_datetime64_any_dtype(values):
        numbers = pd.to_numeric(values, errors="coerce")
        # Numbers where most cells are (a stray '?' is a value of none, not a reason to read every cell as a time:
        # one made all 60 rows of a column unplaceable).
        if numbers.notna().sum() * 2 > values.notna().sum():
            return numbers.to_numpy(dtype=np.float64)
        values = pd.to_datetime(values.astype(object), errors="coerce", utc=True, format="ISO8601")
    t = pd.to_datetime(values, utc=True)
    us = t.dt.tz_convert(None).to_numpy(dtype="datetime64[us]").astype(np.int64).astype(np.float64)
    us[t.isna().to_numpy()] = np.nan
    return us


def order_values(values: pd.Series) -> np.ndarray:
    """A split's order column as float64: microseconds since 1970 for times, the numbers as they are."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return values.to_numpy(dtype="datetime64[us]").astype(np.int64).astype(np.float64)
    return values.to_numpy(dtype=np.float64)


def split_thresholds(labels: np.ndarray, u: np.ndarray, val: float, test: float,
                     stratify: bool) -> dict[Any, tuple[float, float]]:
    """Per class (or globally), the `_u` cut-offs for test and val that give exact fractions.

    Counts are floored, so a class with very few rows stays in train rather than vanishing from it.
    """
    groups = {}
    keys = pd.unique(labels) if stratify else [None]
    for k in keys:
        us = np.sort(u[labels == k] if stratify else u)
        n = len(us)
        n_test, n_val = int(np.floor(n * test)), int(np.floor(n * val))
        t_cut = us[n_test - 1] if n_test else -np.inf
        v_cut = us[n_test + n_val - 1] if n_val else t_cut
        groups[jsonable(k)] = (float(t_cut), float(v_cut))
    return groups


def assign_split(batch: pd.DataFrame, label: str, cuts: dict, stratify: bool, gap: float = 0.0,
                 keep_gap: bool = True) -> pd.DataFrame:
    """Each row's split (SPLIT_COLUMN) from its key `_u` and the `cuts`. By time with a `gap` (`gap_units`), a row
    of train within it before validation's first time, or of validation before test's, is GAP (dropped unless
    `keep_gap`): its label, known `gap` after its time, was made in the next split's period."""
    u = batch["_u"].to_numpy()
    if stratify:
        keys = batch[label].map(jsonable)
        t_cut = keys.map(lambda k: cuts[k][0]).to_numpy(dtype=np.float64)
        v_cut = keys.map(lambda k: cuts[k][1]).to_numpy(dtype=np.float64)
    else:
        t_cut, v_cut = cuts[None]
    split = np.where(u <= t_cut, TEST, np.where(u <= v_cut, VAL, TRAIN)).astype(np.int8)
    if gap:
        # `_u` is minus the time: validation starts at -v_cut, test at -t_cut. A row exactly `gap` before a start
        # has its label by then, and stays.
        split[((split == TRAIN) & (u < v_cut + gap)) | ((split == VAL) & (u < t_cut + gap))] = GAP
    out = batch.drop(columns=["_u"]).assign(**{SPLIT_COLUMN: split})
    return out if keep_gap or not gap else out[split != GAP]


# ---------------------------------------------------------------------------------------------- what it gave
def stratified_by_groups(keys: pd.DataFrame, label: str) -> bool:
    """Whether a split by group can also be stratified by class: each group's rows hold one class (a patient's
    diagnosis), so cutting each class on its own keeps every group whole. Where a group's rows hold several
    classes (a machine that failed once), the class cuts would part it: the split is then by group alone."""
    return bool(keys.groupby("_u", sort=False)[label].nunique().max() <= 1)


def split_summary(data: DataSpec, splits: pd.DataFrame, u: np.ndarray, stratified: bool,
                  order_type: Optional[pa.DataType] = None, cuts: Optional[dict] = None,
                  by_type: Optional[pa.DataType] = None) -> dict:
    """How the split was made, for summary.json and the `[ingest] split` line: the groups per split, or the time
    each split starts from. `splits`: the rows' SPLIT_COLUMN (from `assign_split`), `u` their keys; `order_type`:
    the type the order column was read as (`split_field`)."""
    if data.split.by:
        groups = {name: int(pd.unique(u[splits[SPLIT_COLUMN].to_numpy() == k]).size) for k, name in NAMES.items()}
        # The cuts on the groups' keys (per class where stratified): `splits_of` places new rows' groups with them.
        kept = [[k, *(float(c) if np.isfinite(c) else None for c in pair)] for k, pair in (cuts or {}).items()]
        seen = np.unique(_bucket(u[np.isin(splits[SPLIT_COLUMN].to_numpy(), (TRAIN, VAL))]))
        return {"by": data.split.by, "groups": groups, "stratified": stratified, "cuts": kept,
                **({"type": kind_of(by_type)} if by_type is not None else {}),
                **({"seen": base64.b64encode(seen.astype("<u4").tobytes()).decode("ascii")}
                   if seen.size <= SEEN_MAX else {})}
    if data.split.order:
        starts = {}
        for name, k in (("val", VAL), ("test", TEST)):
            first = -u[splits[SPLIT_COLUMN].to_numpy() == k]
            starts[name] = _order_text(first.min(), order_type) if first.size else None
        last = -u[splits[SPLIT_COLUMN].to_numpy() == TRAIN]
        starts["train_until"] = _order_text(last.max(), order_type) if last.size else None
        if data.split.gap is None:
            return {"order": data.split.order, "from": starts}
        # The rows left out in the gap, by the split they would have been in (the one before the next's start).
        cut = splits[SPLIT_COLUMN].to_numpy() == GAP
        before_test = u[cut] <= cuts[None][1]      # in validation's period (its `_u` up to its cut)
        return {"order": data.split.order, "from": starts, "gap": data.split.gap,
                "in_gap": {"train": int((~before_test).sum()), "val": int(before_test.sum())}}
    return {}


def _order_text(value: float, order_type: Optional[pa.DataType]) -> Any:
    if order_type is not None and pa.types.is_timestamp(order_type):
        t = pd.Timestamp(int(value), unit="us", tz=order_type.tz)
        return str(t.date()) if t == t.normalize() and order_type.tz is None else str(t)
    if float(value).is_integer():
        return int(value)
    return jsonable(value)


def split_line(summary: dict, task: str = "classification") -> Optional[str]:
    """The `[ingest] split ...` line of a split by group or by time; None for the default. A regression's label
    has no classes to stratify by: its line says nothing of them."""
    if "by" in summary:
        g = summary["groups"]
        how = ("" if task != "classification" else
               " (each class split on its own, as every group holds one class)" if summary["stratified"] else
               " (not stratified by class: a group's rows hold more than one class)")
        return (f"[ingest] split by {summary['by']!r}: {sum(g.values()):,} groups, train/val/test "
                f"{g['train']:,}/{g['val']:,}/{g['test']:,} groups, none in two splits{how}")
    if "order" in summary:
        f = summary["from"]
        parts = [f"train up to {f['train_until']}"] if f["train_until"] is not None else []
        parts += [f"validation from {f['val']}"] if f["val"] is not None else []
        parts += [f"test from {f['test']}"] if f["test"] is not None else []
        gap = ""
        if "gap" in summary:
            cut, g = summary["in_gap"], summary["gap"]
            gap = (f"; gap {g if isinstance(g, str) else f'{g:g}'}: {cut['train']:,} train and {cut['val']:,} "
                   "validation row(s) within it before the next split's start left out")
        return f"[ingest] split by time {summary['order']!r}: {', '.join(parts)}{gap}"
    return None
