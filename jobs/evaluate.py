"""Evaluation on the test split, through the bundle's own prediction path.

The test metrics are the registry's for the task and label (`jobs.spec.METRICS`, computed by `jobs.metrics`),
named as validation names them less the `val_` prefix, so a bundle's val and test metrics line up."""
from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

from jobs import metrics as M
from jobs.fitted import canonical
from jobs.tabular import unseen_categories
from jobs.spec import CLASSIFICATION


def score(bundle, frames, label: str, predictions: Optional[list] = None, unseen: Optional[dict] = None) -> dict:
    """Test metrics of `bundle` over an iterable of raw DataFrames (features + label); a regression's predictions
    are added to `predictions` when given; per category feature, the rows whose value is none of the model's
    categories (answered as its unknown category) to `unseen` when given: {feature: [rows, an example]}."""
    pre = bundle.preprocessor
    y_true, probas, preds, answered = [], [], [], []
    features = [f for f in (bundle.schema or {}).get("features", [])
                if f.get("type") == "category" and f.get("categories") is not None] if unseen is not None else []
    known = {f["name"]: set(f["categories"]) for f in features}
    kept_of = {f["name"]: (len(f["categories"]), f["kept_of"]) for f in features if f.get("kept_of")}
    for df in frames:
        if not len(df):
            continue
        present = {name: categories for name, categories in known.items() if name in df.columns}
        if present:
            # The serving path's own finding (booleans read as the booleans they stand for), counted by feature.
            for note in unseen_categories(present, df[list(present)].to_dict("records")):
                found = unseen.setdefault(note["field"], [0, note["value"], kept_of.get(note["field"])])
                found[0] += 1
        out = bundle.predict_frame(df)
        if pre.task == CLASSIFICATION:
            lookup = {canonical(c): i for i, c in enumerate(pre.classes)}
            y = np.array([lookup.get(canonical(v), -1) for v in df[label].tolist()], dtype=np.int64)
            keep = y >= 0  # a class absent from train cannot be scored by this model
            y_true.append(y[keep])
            probas.append(np.asarray(out["probabilities"], dtype=np.float64)[keep])
            answered.append(np.asarray(out["class_index"], dtype=np.int64)[keep])   # by the bundle's decision
        else:
            y_true.append(df[label].to_numpy(dtype=np.float64))
            preds.append(np.asarray(out["predictions"], dtype=np.float64))
    if not y_true:
        return {}
    if pre.task == CLASSIFICATION:
        return M.classification_metrics(np.concatenate(y_true), np.concatenate(probas),
                                        y_pred=np.concatenate(answered))
    if predictions is not None:
        predictions.extend(np.concatenate(preds).tolist())
    return M.regression_metrics(np.concatenate(y_true), np.concatenate(preds))


def evaluate(bundle, test_ds, label: str, batch_size: int = 4096, predictions: Optional[list] = None,
             unseen: Optional[dict] = None) -> dict:
    """Stream the raw test split out of Ray Data and score it (`score`)."""
    return score(bundle, test_ds.iter_batches(batch_size=batch_size, batch_format="pandas"), label, predictions,
                 unseen)


def unseen_test_note(unseen: dict, rows: int, split: dict) -> Optional[str]:
    """The test split's rows whose category values the model has none of (`score`'s `unseen`), said: a split by
    time put a region opened late (95 of 580 test rows) in the test split alone, and the run said nothing of it,
    while `evaluate` and `predict` of the same rows did. Where the split is by time or by group, that is what the
    test measures; by row, a value that rare."""
    if not unseen:
        return None
    parts = ", ".join(f"{name!r} in {found[0]:,} (e.g. {found[1]!r}" + (
        f"; it keeps the {found[2][0]} most frequent of the {found[2][1]} values training saw "
        "(data.preprocess.max_categories), the rest count here too" if found[2] else "") + ")"
        for name, found in sorted(unseen.items(), key=lambda kv: -kv[1][0]))
    # The cause, where it is known: not where values training saw but did not keep count too.
    why = "" if any(found[2] for found in unseen.values()) else (
        " (later periods bring values the earlier ones lacked: the test split measures the model on them)"
        if split.get("order") else " (groups the model never saw bring them: the test split measures it on "
        "them)" if split.get("by") else "")
    return (f"[evaluate] note: test rows hold category values the model has no category for, answered as its "
            f"unknown category{why}: {parts} of {rows:,} row(s)")


def outside_labels_note(predictions: list, stats: dict) -> Optional[str]:
    """A regression's test predictions outside the labels it was trained on (`label_stats`' min and max), said:
    days to failure, never negative, were predicted down to -88 with nothing said (a network extrapolates
    linearly past what it saw)."""
    if not predictions or not stats:
        return None
    y = np.asarray(predictions)
    below, above = int((y < stats["min"]).sum()), int((y > stats["max"]).sum())
    if not below and not above:
        return None
    counts = " and ".join(f"{n:,} {where} {bound:,.4g}" for n, where, bound in
                          ((below, "below", stats["min"]), (above, "above", stats["max"])) if n)
    return (f"[evaluate] note: {below + above:,} of the {len(y):,} test predictions fall outside the labels read "
            f"({stats['min']:,.4g} to {stats['max']:,.4g}): {counts}; the model extrapolates there. Clip its answers "
            "where you use them if the label cannot go beyond (a count or a duration is never negative)")


def score_records(bundle, records: list[dict], label: str) -> dict:
    """The same scoring over plain records, as a user of `bundle.predict` holds them."""
    return score(bundle, [pd.DataFrame.from_records(records)], label)
