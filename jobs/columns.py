"""Records read a field at a time: what `jobs.tabular`'s checks and notes (`outside_range`, `unseen_categories`,
`missing_fields`, `record_problems`) and `Preprocessor.transform`'s category lookup run on.

They went record by record, field by field, in Python: on 200,000 rows of 20 columns `trainyard predict --bundle`
spent 10 s of 34 in the notes and 5 s in `canonical` alone. Here each field is a list of its values (or a
DataFrame's column), and each rule is applied once per distinct value, or to a numpy array, where a column's
types allow it; a value the fast test picks out is judged again by the rule itself (`_far`, the key function),
so what is said, its order and its values are those of the per-record rule, whatever the records hold.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional

import numpy as np
import pandas as pd

# The value types whose equality decides what the rules make of them: two equal values of one of these types
# (3 and 3, 'a' and 'a') have one canonical form, one range verdict. Not so for Decimal('1.0') and
# Decimal('1.00'), equal but written differently: other types are judged value by value.
_PLAIN = frozenset({str, int, float, bool, type(None)})
_NUMBERS = frozenset({int, float, type(None)})
# Below this many values a plain loop is quicker than numpy's and pandas' per-call costs (a request of 1 or 32
# records took 1.7 ms and 5 ms more with factorize and arrays for every field).
VECTOR_FROM = 256


class Fields:
    """The records a check or a note is given, a field at a time: `values(name)` is [r.get(name) for r in
    records], worked out once per field (a list of records), or a DataFrame's column as `to_dict("records")`
    would give it (`from_frame`)."""

    def __init__(self, records: Optional[list[dict]] = None, frame: Optional[pd.DataFrame] = None):
        self.records, self.frame = records, frame
        self._values: dict[Any, list] = {}

    @classmethod
    def of(cls, records) -> "Fields":
        return records if isinstance(records, Fields) else cls(records)

    def __len__(self) -> int:
        return len(self.records) if self.frame is None else len(self.frame)

    def values(self, name) -> list:
        if name not in self._values:
            if self.frame is None:
                self._values[name] = [r.get(name) for r in self.records]
            else:
                self._values[name] = self.frame[name].tolist() if name in self.frame else [None] * len(self.frame)
        return self._values[name]


def frame_fields(df: pd.DataFrame, names: list) -> Optional[Fields]:
    """`Fields` of `df`'s rows read straight from its columns, when the columns `names` (those that are there) hold
    what `df.to_dict("records")` would give as they are: numpy numbers and booleans (`tolist` gives Python ones),
    and pandas' default text columns (str, NaN for a missing cell); None for a frame `Bundle.predict` is to turn
    into records first (an object column's numpy scalars, which `to_dict` makes Python ones; repeated column
    names)."""
    if not df.columns.is_unique:
        return None
    text = pd.Series(["a"]).dtype           # what pandas reads a column of strings as (and rebuilds one as)
    for name in names:
        dtype = df[name].dtype if name in df.columns else text
        if not ((isinstance(dtype, np.dtype) and dtype.kind in "biuf") or dtype == text):   # not Int64's pd.NA
            return None
    return Fields(frame=df)


def category_codes(col: pd.Series, lookup: dict, key: Callable[[Any], Optional[str]], unknown: int) -> np.ndarray:
    """Each value's slot in a categorical feature's one-hot block: `lookup[key(value)]`, `unknown` when absent.
    `key` is applied to each distinct value (pandas' factorize) where distinct values cannot share a key (numbers,
    booleans, strings); a column mixing types (1 and True and 1.0 are one value to a hash) goes value by value."""
    dtype = col.dtype
    distinct = len(col) >= VECTOR_FROM and (dtype.kind in "biuf" or isinstance(dtype, pd.StringDtype) or (
        dtype == object and pd.api.types.infer_dtype(col, skipna=True) in ("string", "empty")))
    if not distinct:
        return np.fromiter((lookup.get(key(v), unknown) for v in col.tolist()), dtype=np.int64, count=len(col))
    codes, uniques = pd.factorize(col, use_na_sentinel=True)
    table = np.array([lookup.get(key(u), unknown) for u in uniques.tolist()] + [unknown], dtype=np.int64)
    idx = table[codes]                       # code -1 (a missing value) → the last entry, unknown
    if dtype.kind not in "biuf" and (na := np.flatnonzero(codes < 0)).size:
        # Missing to pandas is not always missing to `key` (pd.NA is the text '<NA>'): those values judged alone.
        idx[na] = [lookup.get(key(v), unknown) for v in col.iloc[na].tolist()]
    return idx


def _far(v, low: float, high: float):
    """The number `v` stands for when it lies outside [low, high] (`jobs.tabular.outside_range`'s rule), else None."""
    if type(v) is str:          # a number written as text, which the model reads as that number
        try:
            v = float(v)
        except ValueError:
            return None
    elif type(v) not in (int, float):
        return None
    return v if math.isfinite(v) and not low <= v <= high else None


def outside(values: list, low: float, high: float) -> list[tuple[int, Any]]:
    """(position, value) of each of a field's `values` that `_far` picks out, in order."""
    if len(values) >= VECTOR_FROM and set(map(type, values)) <= _NUMBERS:
        try:
            x = np.array(values, dtype=np.float64)          # None → NaN
        except OverflowError:                               # an int past a float's range
            x = None
        if x is not None:
            # Strictly inside in float64 is inside for the value itself too (rounding an int keeps its order);
            # the rest, a few, are judged by the rule on the value as given.
            with np.errstate(invalid="ignore"):
                maybe = np.flatnonzero(~((low < x) & (x < high)) & ~np.isnan(x))
            return [(i, far) for i in maybe.tolist() if (far := _far(values[i], low, high)) is not None]
    return [(i, far) for i, v in enumerate(values) if (far := _far(v, low, high)) is not None]


def unseen(values: list, key: Callable[[Any], Optional[str]], allowed) -> list[int]:
    """Positions of the `values` whose key is not None and not `allowed`, in order; the key of each distinct
    (type, value) worked out once."""
    types = set(map(type, values))
    if types <= _PLAIN:
        pairs = set(zip(map(type, values), values))
        bad = {p for p in pairs if (k := key(p[1])) is not None and k not in allowed}
        if not bad:
            return []
        return [i for i, p in enumerate(zip(map(type, values), values)) if p in bad]
    return [i for i, v in enumerate(values) if (k := key(v)) is not None and k not in allowed]


def missing(values: list, blank: bool) -> np.ndarray:
    """Whether each value is missing: None, a float NaN, or (`blank`: a text feature) a string of spaces."""
    types = set(map(type, values))
    if not blank and types <= _PLAIN and len(values) >= VECTOR_FROM:
        if float not in types and type(None) not in types:
            return np.zeros(len(values), dtype=bool)
        # pd.isna of these types is exactly None or a float NaN (np.float64 NaN, pd.NA are other types).
        return pd.isna(np.array(values, dtype=object))
    return np.fromiter(((v is None or (type(v) is float and v != v) or (blank and type(v) is str and not v.strip()))
                        for v in values), dtype=bool, count=len(values))


def in_record_order(found: list[list]) -> list[tuple[int, int, Any]]:
    """(record, field's index, item) of every field's findings (`found[j]`: (record, item) pairs, by record), by
    record then field, as a loop over records then fields finds them."""
    if len(found) == 1 or sum(map(len, found)) < VECTOR_FROM:
        return sorted(((i, j, item) for j, pairs in enumerate(found) for i, item in pairs), key=lambda t: t[:2])
    flat = [pair for pairs in found for pair in pairs]
    records = np.fromiter((i for i, _ in flat), dtype=np.int64, count=len(flat))
    fields = np.repeat(np.arange(len(found)), [len(pairs) for pairs in found])
    order = np.lexsort((fields, records)).tolist()      # by record, then field; stable
    fields = fields.tolist()
    return [(flat[k][0], fields[k], flat[k][1]) for k in order]
