"""Where new rows fall in a bundle's split (`trainyard evaluate`: the rows a bundle trained or validated on, and
`--held-out`), from what lineage.json keeps of it (`jobs.splits.split_summary`)."""
from __future__ import annotations

import base64
import hashlib
from typing import Optional

import numpy as np
import pandas as pd
import pyarrow as pa

from jobs.splits import GAP, NEW, TEST, TRAIN, VAL, _bucket, _comparable, _group_hashes, _unit, gap_units

__all__ = ["splits_of", "unplaced", "TRAIN", "VAL", "TEST", "GAP", "NEW"]


def splits_of(how: dict, table: pd.DataFrame, label: str) -> Optional[np.ndarray]:
    """Which split of a bundle's data each row of `table` would have been in (TRAIN, VAL, TEST; -1 where it
    cannot be told: a row without its group or time, or a group between two classes' cuts), by the bundle's split
    (lineage.json's data.split: a split by group keeps its cuts, and the groups it saw, a split by time where each
    split starts); NEW for a group the bundle never saw. None where rows cannot be placed at all (`unplaced` says
    why)."""
    if unplaced(how, table):
        return None
    column = how.get("by") or how.get("order")
    out = np.full(len(table), -1, dtype=np.int8)
    values = table[column]
    if how.get("by") and how.get("type") in ("int", "float") and not pd.api.types.is_numeric_dtype(values):
        # Training read the ids as numbers ('007' as 7): text ids are keyed as those numbers, or none.
        values = pd.to_numeric(values, errors="coerce")
    if how.get("by"):
        key = hashlib.sha256(str(how.get("seed", 0)).encode()).hexdigest()[:16]
        hashes = _group_hashes(values, key)
        u = _unit(hashes)
        from jobs.fitted import canonical
        cuts = {canonical(k): tuple(-np.inf if c is None else c for c in (t, v)) for k, t, v in how["cuts"]}
        # Stratified, each class had its cuts, and a group's split came from the class it had in training: its
        # class's where all its rows here hold that one class (as training had it); else where every class's cuts
        # agree, and -1 between them (a later visit of another outcome must not move a patient into test).
        t_lo, t_hi = min(t for t, _ in cuts.values()), max(t for t, _ in cuts.values())
        v_lo, v_hi = min(v for _, v in cuts.values()), max(v for _, v in cuts.values())
        t_cut, t_any, v_cut, v_any = (np.full(len(table), x) for x in (t_lo, t_hi, v_lo, v_hi))
        if how.get("stratified") and label in table.columns:
            classes = pd.Series([canonical(y) for y in table[label]], index=table.index)
            one = classes.groupby(hashes).transform("nunique").to_numpy() == 1
            for k, (t, v) in cuts.items():
                mine = one & (classes == k).to_numpy()
                t_cut[mine], t_any[mine], v_cut[mine], v_any[mine] = t, t, v, v
        known = values.notna().to_numpy()
        out[known & (u <= t_cut)] = TEST
        out[known & (u > t_any) & (u <= v_cut)] = VAL
        out[known & (u > v_any)] = TRAIN
        if how.get("seen") is not None:     # the groups it did see: a new group placed by its key alone is NEW
            seen = np.isin(_bucket(u), np.frombuffer(base64.b64decode(how["seen"]), dtype="<u4"))
            out[known & (out != TEST) & ~seen] = NEW
            # One it saw was trained or validated on, wherever its class's cuts put its rows here (a later row of
            # the other class: placed in test, or between the cuts).
            odd = known & seen & ~np.isin(out, (TRAIN, VAL))
            out[odd] = np.where(u[odd] > v_any[odd], TRAIN, VAL)
        return out
    times = _comparable(values)
    starts = {name: _comparable(pd.Series([at]))[0] for name, at in (how.get("from") or {}).items()
              if name in ("val", "test") and at is not None}
    known = ~np.isnan(times)
    out[known] = TRAIN
    # The gap as the spec gave it, which training checked against the column: a span for times, else a number.
    gap = gap_units(how.get("gap"), pa.timestamp("us") if isinstance(how.get("gap"), str) else pa.float64())
    for name, k in (("val", VAL), ("test", TEST)):
        if starts.get(name) is not None:
            out[known & (times > starts[name] - gap) & (times < starts[name])] = GAP    # left out (`assign_split`)
            out[known & (times >= starts[name])] = k
    return out


def unplaced(how: dict, table: pd.DataFrame) -> Optional[str]:
    """Why `splits_of` cannot place the rows of `table` by the split `how`, or None."""
    column = how.get("by") or how.get("order")
    if column is None:
        return ("split by row: which rows it held out cannot be told from other data (it keyed each row by its "
                "whole content as read)")
    if how.get("by") and how.get("keyed") == "image":
        return (f"split by {column!r} of images, whose groups training keyed otherwise than a table's: new rows "
                "cannot be placed by it")
    if column not in table.columns:
        return f"split by {column!r}, a column the rows lack"
    if how.get("by") and not how.get("cuts"):
        return f"split by {column!r} by a trainyard that did not keep the split's cuts: train it again"
    if how.get("type") == "time":
        return f"split by {column!r}, a column of times, whose text another reader writes another way"
    if how.get("type") == "string" and pd.api.types.is_numeric_dtype(table[column]):
        return (f"split by {column!r}, ids of text (such as '000123') that these rows hold as numbers: read its "
                "column as text (dtype=str)")
    return None
