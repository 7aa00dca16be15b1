"""The reference profile a bundle carries (`profile.json`): what the train split's inputs and the validation
split's predictions looked like, so that serving and `trainyard monitor` can tell when live traffic drifts away
from them (`jobs.drift`).

    {"format": 1, "kind": "tabular" | "image" | "text", "rows": {"train": n, "val": n},
     "numeric": {name: {"edges", "shares", "quantiles", "missing_rate"[, "of"]}},
     "categorical": {name: {"shares": {category: share}, "unknown_share", "missing_rate"[, "of"]}},
     "prediction": {"task": "classification", "classes", "shares"[, "score"]}
                 | {"task": "regression", "edges", "shares", "quantiles"}}

A binary model's "score" is its probability of its cut-off's positive class (else the second class; "index") over
the validation split ("edges", "shares", "quantiles" as a numeric feature's, and "mean"; bundles from before it
have none). Numeric bins are the train split's deciles (deduplicated: a value that fills several deciles is one edge), shares
are over the values present, quantiles are q = 0.00, 0.01, ..., 1.00. Categories are the preprocessor's (the
`max_categories` most frequent, canonical strings); `unknown_share` is the train values outside them.
Text and image features are profiled through derived quantities (`jobs.watched`: a text's length and emptiness,
an image's width and height as stored), entries like any other with `"of": {"feature", "quantity"}`.

Numeric summaries are of a bounded uniform sample (`NumericSummary`: the values with the SAMPLE_K smallest
random keys; exact up to that many rows): deciles and percentiles of 100,000 values are within a fraction of a
percentile of the whole column's, and the fit's memory stays bounded whatever the data's size.

The train part is fitted in the preprocessing fit's own Ray Data pass (`jobs.tabular.fit_with_stats` holds
`NumericSummary` for every numeric column and the category counts it needs anyway); the prediction part comes
from the trained model over the packed validation split, when the bundle is written (`jobs.pipeline`).
"""
from __future__ import annotations

import zlib
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd
from ray.data.aggregate import AggregateFnV2

from jobs import watched as W
from jobs.drift import REFERENCE_SAMPLE, summarise
from jobs.fitted import FEATURES_COLUMN, LABEL_COLUMN, FittedPreprocessor, canonical, category_counts

FORMAT = 1
SAMPLE_K = REFERENCE_SAMPLE      # values a numeric summary keeps (a uniform sample; exact up to this many rows)


class NumericSummary(AggregateFnV2):
    """A Ray Data aggregation: `summarise` of one numeric column over a bounded uniform sample of its values
    (bottom-k: the SAMPLE_K values with the smallest random keys, so merging partial samples in any order gives
    a uniform sample of the union), and the exact count of values present. One aggregation gives the median the
    preprocessor imputes with and the profile's bins, shares and quantiles: no second pass over the data, and
    memory bounded whatever the column's length (Ray's `Quantile` gathered every value into one task;
    ApproximateQuantile would need the datasketches package). Output: {count, edges, shares, quantiles}.

    The accumulator is bytes: float64 [count, key_1..key_m, value_1..value_m]."""

    def __init__(self, on: str, alias_name: Optional[str] = None, k: int = SAMPLE_K):
        self.k = k
        super().__init__(alias_name or f"summary({on})", zero_factory=lambda: None, on=on, ignore_nulls=True)

    def aggregate_block(self, block: Any) -> Optional[bytes]:
        column = block[self.get_target_column()]
        if hasattr(column, "to_pandas"):        # a pyarrow Array or ChunkedArray
            column = column.to_pandas()
        x = pd.to_numeric(pd.Series(column), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        x = x[np.isfinite(x)]
        if not len(x):
            return None
        # Keys seeded by the values: the same data gives the same profile.
        keys = np.random.default_rng(zlib.crc32(x.tobytes())).random(len(x))
        return _packed(len(x), keys, x, self.k)

    def combine(self, current_accumulator: bytes, new: bytes) -> bytes:
        (n1, k1, v1), (n2, k2, v2) = _unpacked(current_accumulator), _unpacked(new)
        return _packed(n1 + n2, np.concatenate([k1, k2]), np.concatenate([v1, v2]), self.k)

    def finalize(self, accumulator: bytes) -> dict:
        count, _, values = _unpacked(accumulator)
        return {**summarise(values), "count": int(count)}


def _packed(count: int, keys: np.ndarray, values: np.ndarray, k: int) -> bytes:
    if len(keys) > k:
        keep = np.argpartition(keys, k)[:k]
        keys, values = keys[keep], values[keep]
    return np.concatenate([[float(count)], keys, values]).astype(np.float64).tobytes()


def _unpacked(acc: bytes) -> tuple[int, np.ndarray, np.ndarray]:
    a = np.frombuffer(acc, dtype=np.float64)
    m = (len(a) - 1) // 2
    return int(a[0]), a[1:1 + m], a[1 + m:]


def median(summary: Optional[dict]) -> Optional[float]:
    """The median of a `NumericSummary` (None for a column with no value)."""
    return summary["quantiles"][50] if summary and summary["quantiles"] else None


def tabular_reference(stats: dict, pre: FittedPreprocessor) -> dict:
    """The train split's part of the profile from the preprocessing fit's aggregate row (`stats`, from
    `jobs.tabular.fit_with_stats`): "rows" (train), "numeric" and "categorical"."""
    rows = int(stats["count()"])
    numeric = {s.name: _numeric_entry(stats[f"summary({s.name})"], rows) for s in pre.numeric}
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


def _numeric_entry(summary: Optional[dict], rows: int, of: Optional[W.Watched] = None) -> dict:
    """A profile's numeric entry from a `NumericSummary` (None: no value at all) over `rows` rows."""
    summary = summary or summarise(np.array([]))
    entry = {"edges": summary["edges"], "shares": summary["shares"], "quantiles": summary["quantiles"],
             "missing_rate": 1.0 - summary["count"] / rows if rows else 0.0}
    return {**entry, "of": {"feature": of.feature, "quantity": of.quantity}} if of and of.quantity else entry


def image_reference(pre: FittedPreprocessor, stats: dict) -> dict:
    """The train split's part of the profile of an image bundle, from `jobs.images.fit_with_stats`'s row: its
    row count and the images' width and height as stored (the pixels themselves are resized to the model's
    size, so their distribution is the preprocessor's mean and std)."""
    rows = int(pre.stats.get("train_rows", 0))
    numeric = {w.name: _numeric_entry(stats.get(f"summary({w.quantity})"), rows, w)
               for w in (W.derived(pre.column, "width"), W.derived(pre.column, "height"))}
    return {"rows": {"train": rows}, "numeric": numeric, "categorical": {}}


def text_quantities(batch: pd.DataFrame, features: Sequence[str]) -> pd.DataFrame:
    """A batch's text columns → the quantities watched of them (`jobs.watched`), one column each, named so."""
    out = {}
    for feature in features:
        raw = [None if isinstance(v, float) and v != v else v for v in batch[feature].tolist()]   # NaN: missing
        for w in (W.derived(feature, q) for q in W.DERIVED_OF["text"]):
            out[w.name] = pd.Series(w.values(raw), dtype="float64" if w.kind == "numeric" else "object")
    return pd.DataFrame(out, index=batch.index)


def text_reference(train_ds: Any, features: Sequence[str]) -> dict:
    """The profile entries of text `features` over the train split (a Ray Data dataset; one pass): per feature
    its character length (numeric) and emptiness (categorical "true"/"false"). Returns {"numeric",
    "categorical"} to merge into the profile's train part. `text_reference_of_frame` is the same in-process."""
    from ray.data.aggregate import Count, ValueCounter

    from jobs.fitted import aggregate

    quantities = train_ds.select_columns(list(features)).map_batches(
        text_quantities, fn_kwargs={"features": list(features)}, batch_format="pandas")
    aggs: list = [Count()]
    for f in features:
        aggs += [NumericSummary(f"{f}.length"), ValueCounter(f"{f}.empty", alias_name=f"counts({f}.empty)")]
    stats = aggregate(quantities, *aggs)
    return _text_entries(features, int(stats["count()"]), lambda name: stats[f"summary({name})"],
                         lambda name: category_counts(stats[f"counts({name})"]))


def text_bundle_reference(stats: dict, pre: Any, train_ds: Any) -> dict:
    """The train part of a text bundle's profile (`jobs.text.TextPreprocessor` `pre`): its table columns' from
    the fit's aggregate row (`tabular_reference`) and its text columns' length and emptiness (`text_reference`:
    one more pass, over the text columns only)."""
    table, text = tabular_reference(stats, pre.tabular), text_reference(train_ds, pre.text)
    return {**table, "numeric": {**table["numeric"], **text["numeric"]},
            "categorical": {**table["categorical"], **text["categorical"]}}


def text_reference_of_frame(frame: pd.DataFrame, features: Sequence[str]) -> dict:
    """`text_reference` of a pandas DataFrame, in this process (no Ray)."""
    q = text_quantities(frame, features)
    return _text_entries(features, len(frame),
                         lambda name: {**summarise(q[name].to_numpy()), "count": int(q[name].notna().sum())},
                         lambda name: {k: int(n) for k, n in q[name].value_counts().items()})


def _text_entries(features: Sequence[str], rows: int, summary_of, counts_of) -> dict:
    out: dict = {"numeric": {}, "categorical": {}}
    for feature in features:
        length, empty = (W.derived(feature, q) for q in W.DERIVED_OF["text"])
        out["numeric"][length.name] = _numeric_entry(summary_of(length.name), rows, length)
        counts = counts_of(empty.name)
        present = sum(counts.values())
        out["categorical"][empty.name] = {
            "shares": {c: counts.get(c, 0) / present if present else 0.0 for c in ("false", "true")},
            "unknown_share": 0.0, "missing_rate": 1.0 - present / rows if rows else 0.0,
            "of": {"feature": feature, "quantity": "empty"}}
    return out


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


def validation_scores(bundle: Any, val_ds: Any, batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Class ids (or targets) and the model's outputs over the packed validation split (`PreparedData.val_ds`):
    the bundle's model on rows its preprocessor already transformed, one pass; outputs are a classifier's
    probabilities (n, classes), or a regression's predicted values (n,)."""
    ys, outs = [], []
    for batch in val_ds.iter_batches(batch_size=batch_size, batch_format="numpy"):
        ys.append(np.asarray(batch[LABEL_COLUMN]))
        out = bundle.predict_features(np.array(batch[FEATURES_COLUMN], dtype=np.float32))
        outs.append(np.asarray(out["probabilities"] if "probabilities" in out else out["predictions"],
                               dtype=np.float64))
    if not ys:
        classes = bundle.preprocessor.classes
        return np.zeros(0), np.zeros((0, len(classes))) if classes else np.zeros(0)
    return np.concatenate(ys), np.concatenate(outs)


def validation_predictions(bundle: Any, val_ds: Any, scores: Optional[tuple] = None) -> list:
    """The bundle's predictions (labels, by its decision, or values) over the packed validation split, from
    `validation_scores` (given, or made here)."""
    _, out = scores if scores is not None else validation_scores(bundle, val_ds)
    pre = bundle.preprocessor
    if pre.task == "classification":
        return [pre.classes[i] for i in pre.decide(out)] if len(out) else []
    return out.tolist()


def build(reference: dict, bundle: Any, val_ds: Any, scores: Optional[tuple] = None) -> dict:
    """The whole profile of `bundle` (being written): the train split's part fitted with preprocessing
    (`tabular_reference` / `image_reference`) and the bundle's predictions over the validation split (from its
    `validation_scores`: given when the bundle's writer has them already)."""
    scores = scores if scores is not None else validation_scores(bundle, val_ds)
    predictions = validation_predictions(bundle, val_ds, scores)
    pre = bundle.preprocessor
    prediction = prediction_reference(pre, predictions)
    if pre.task == "classification" and len(pre.classes) == 2 and len(scores[1]):
        # Of the class a cut-off is for, else the second: "probability of 'ok'" told a plant engineer nothing.
        prediction["score"] = score_reference(scores[1], int((pre.decision or {}).get("positive_index", 1)))
    return {"format": FORMAT, "kind": pre.kind, "rows": {**reference.get("rows", {}), "val": len(predictions)},
            "numeric": reference.get("numeric", {}), "categorical": reference.get("categorical", {}),
            "prediction": prediction}


def score_reference(probabilities: np.ndarray, index: int = 1) -> dict:
    """A binary model's reference of its probability of class `index` (its cut-off's positive class, else the
    second) over the validation split, as a numeric feature's ("edges", "shares", "quantiles"), with "index" and
    "mean": the monitor judges the logged probabilities against it, which move before the answered classes do (a
    rise from 0.1 to 0.3 changes no answer at a cut-off of 0.5). Of the second class's probability as float32, as
    the logs hold it (the first's is 1 minus it, as the monitor reads it): a value many rows share can be a bin
    edge, and its float64 form would put the logged float32 on the wrong side of it."""
    second = np.asarray(probabilities, dtype=np.float64)[:, 1].astype(np.float32).astype(np.float64)
    values = second if index == 1 else 1.0 - second
    summary = summarise(values)
    return {"index": index, "edges": summary["edges"], "shares": summary["shares"],
            "quantiles": summary["quantiles"], "mean": float(values.mean())}

# Percentiles two apart this far apart (strictly), with at least TWO_POPULATIONS_SHARE of the values on either
# side, each side spread smoothly (every other such ratio under TWO_POPULATIONS_SMOOTH, and more than two distinct
# values): one column holding two populations (a lab's glucose in mmol/L and mg/dL: 2.7-11 and 70-199, 18x apart),
# not a heavy tail (its ratios grow steadily), nor a few distinct sizes (1, 2 and 10; packs of 1, 6 and 12).
TWO_POPULATIONS_RATIO = 5.0
TWO_POPULATIONS_SMOOTH = 2.0
TWO_POPULATIONS_SHARE = 3        # percent


def two_populations(name: str, ref: dict) -> Optional[str]:
    """A note on a numeric column (its profile entry, `ref`) whose positive values form two groups far apart, or
    None: two units in one column train and serve as one spread, which also widens the range that /predict's
    out_of_range and the monitor's outside_rate judge by. Of the train split's percentiles (exact to 100,000 rows);
    zeros and negative values (a placeholder 0, a signed quantity) are left below the scan."""
    q = np.asarray(ref.get("quantiles") or [], dtype=np.float64)
    if len(q) != 101 or not (q > 0).any():
        return None
    first = int(np.argmax(q > 0)) + TWO_POPULATIONS_SHARE        # the first percentile scanned, 3 % above zero
    # Two percentiles apart: the percentile at the gap itself is interpolated across it (9.2, 22.5, 72.7).
    k = np.arange(first, 99 - TWO_POPULATIONS_SHARE)
    if len(k) < 2 * TWO_POPULATIONS_SHARE:
        return None
    ratios = q[k + 2] / q[k]
    at = int(k[ratios.argmax()])
    others = ratios[np.abs(k - at) > 2]
    lower, upper = np.unique(q[first - TWO_POPULATIONS_SHARE:at + 1]), np.unique(q[at + 2:])
    if (ratios.max() <= TWO_POPULATIONS_RATIO or (len(others) and others.max() >= TWO_POPULATIONS_SMOOTH)
            or len(lower) < 3 or len(upper) < 3):
        return None
    return (f"column {name!r} holds two groups of values far apart: its percentiles jump {ratios.max():.1f}x from the "
            f"{_ordinal(at)} ({q[at]:,.4g}) to the {_ordinal(at + 2)} ({q[at + 2]:,.4g}), about {at + 1}% of its values below the jump "
            f"(from {q[0]:,.4g}) and {99 - at}% above it (up to {q[100]:,.4g}). Two units in one column (mmol/L and "
            "mg/dL, °C and °F) or two sources? The model learns them as one spread, and /predict's out_of_range and "
            "the monitor take both as in range: convert them in the data, or split the column")


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"

