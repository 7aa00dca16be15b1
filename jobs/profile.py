"""The reference profile a bundle carries (`profile.json`): what the train split's inputs and the validation
split's predictions looked like, so that serving and `trainyard monitor` can tell when live traffic drifts away
from them (`jobs.drift`).

    {"format": 1, "kind": "tabular" | "image", "rows": {"train": n, "val": n},
     "numeric": {name: {"edges", "shares", "quantiles", "missing_rate"}},
     "categorical": {name: {"shares": {category: share}, "unknown_share", "missing_rate"}},
     "prediction": {"task": "classification", "classes", "shares"}
                 | {"task": "regression", "edges", "shares", "quantiles"}}

Numeric bins are the train split's deciles (deduplicated: a value that fills several deciles is one edge), shares
are over the values present, quantiles are q = 0.00, 0.01, ..., 1.00. Categories are the preprocessor's (the
`max_categories` most frequent, canonical strings); `unknown_share` is the train values outside them.

The train part is fitted in the preprocessing fit's own Ray Data pass (`jobs.tabular.fit_with_stats` holds
`NumericSummary` for every numeric column and the category counts it needs anyway); the prediction part comes
from the trained model over the packed validation split, when the bundle is written (`jobs.pipeline`).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd
from ray.data.aggregate import Quantile

from jobs.drift import summarise
from jobs.fitted import FEATURES_COLUMN, FittedPreprocessor, canonical, category_counts

FORMAT = 1


class NumericSummary(Quantile):
    """A Ray Data aggregation: `summarise` of one numeric column, exact (Ray's `Quantile` gathers the column's
    values into its one reduce task; ApproximateQuantile would need the datasketches package). One aggregation
    gives the median the preprocessor imputes with and the profile's bins, shares and quantiles, computed on
    the gathered values at once: no second pass over the data. Output: {count, edges, shares, quantiles}."""

    def __init__(self, on: str, alias_name: Optional[str] = None):
        super().__init__(on, q=0.5, alias_name=alias_name or f"summary({on})")

    def finalize(self, accumulator: Any) -> dict:
        if hasattr(accumulator, "to_pandas"):        # a pyarrow Array or ChunkedArray
            accumulator = accumulator.to_pandas()
        values = pd.to_numeric(pd.Series(accumulator), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        return summarise(values)


def median(summary: Optional[dict]) -> Optional[float]:
    """The median of a `NumericSummary` (None for a column with no value)."""
    return summary["quantiles"][50] if summary and summary["quantiles"] else None


def tabular_reference(stats: dict, pre: FittedPreprocessor) -> dict:
    """The train split's part of the profile from the preprocessing fit's aggregate row (`stats`, from
    `jobs.tabular.fit_with_stats`): "rows" (train), "numeric" and "categorical"."""
    rows = int(stats["count()"])
    numeric = {}
    for s in pre.numeric:
        summary = stats[f"summary({s.name})"] or summarise(np.array([]))
        numeric[s.name] = {"edges": summary["edges"], "shares": summary["shares"], "quantiles": summary["quantiles"],
                           "missing_rate": 1.0 - summary["count"] / rows if rows else 0.0}
    categorical = {}
    for s in pre.categorical:
        counts = category_counts(stats[f"counts({s.name})"])
        present = sum(counts.values())
        known = set(s.categories)
        unknown = sum(n for c, n in counts.items() if c not in known)
        categorical[s.name] = {"shares": {c: counts.get(c, 0) / present if present else 0.0 for c in s.categories},
                               "unknown_share": unknown / present if present else 0.0,
                               "missing_rate": 1.0 - present / rows if rows else 0.0}
    return {"rows": {"train": rows}, "numeric": numeric, "categorical": categorical}


def image_reference(pre: FittedPreprocessor) -> dict:
    """The train split's part of the profile of an image bundle: its row count (images are decoded to the
    preprocessor's size, so there is no per-feature distribution to keep)."""
    return {"rows": {"train": int(pre.stats.get("train_rows", 0))}, "numeric": {}, "categorical": {}}


def prediction_reference(pre: FittedPreprocessor, predictions: Sequence) -> dict:
    """The prediction part of the profile from the validation split's predictions (class labels, or values)."""
    if pre.task == "classification":
        index = {canonical(c): i for i, c in enumerate(pre.classes)}
        counts = np.zeros(len(pre.classes))
        for p in predictions:
            counts[index[canonical(p)]] += 1
        shares = counts / counts.sum() if counts.sum() else np.full(len(counts), 1.0 / len(counts))
        return {"task": "classification", "classes": list(pre.classes), "shares": shares.tolist()}
    summary = summarise(np.asarray(predictions, dtype=np.float64))
    return {"task": "regression", "edges": summary["edges"], "shares": summary["shares"],
            "quantiles": summary["quantiles"]}


def validation_predictions(bundle: Any, val_ds: Any, batch_size: int = 4096) -> list:
    """The bundle's predictions (labels or values) over the packed validation split (`PreparedData.val_ds`):
    the bundle's model on rows its preprocessor already transformed."""
    out: list = []
    for batch in val_ds.iter_batches(batch_size=batch_size, batch_format="numpy"):
        out.extend(bundle.predict_features(np.array(batch[FEATURES_COLUMN], dtype=np.float32))["predictions"])
    return out


def build(reference: dict, bundle: Any, val_ds: Any) -> dict:
    """The whole profile of `bundle` (being written): the train split's part fitted with preprocessing
    (`tabular_reference` / `image_reference`) and the bundle's predictions over the validation split."""
    predictions = validation_predictions(bundle, val_ds)
    pre = bundle.preprocessor
    return {"format": FORMAT, "kind": pre.kind, "rows": {**reference.get("rows", {}), "val": len(predictions)},
            "numeric": reference.get("numeric", {}), "categorical": reference.get("categorical", {}),
            "prediction": prediction_reference(pre, predictions)}
