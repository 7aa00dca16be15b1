"""Tabular preprocessing: fitted on the train split with Ray Data aggregations, stored as plain JSON, applied by
ONE function (`Preprocessor.transform`) both in Ray Data (training) and on plain records (serving).

The output of `transform` is one packed float32 matrix: numeric columns (imputed, scaled) followed by a
one-hot block per categorical column whose last slot is "unknown" (unseen or missing category).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

import numpy as np
import pandas as pd

from jobs.columns import Fields, category_codes, in_record_order, missing, outside, unseen
from jobs.fitted import FittedPreprocessor, aggregate, canonical, category_counts, category_key, is_boolean


@dataclass
class NumericState:
    name: str
    fill: float          # imputed value for missing readings
    center: float        # subtracted
    scale: float         # divided by (never 0)


@dataclass
class CategoricalState:
    name: str
    categories: list[str]   # canonical strings, most frequent first; index len(categories) is "unknown"


@dataclass
class Preprocessor(FittedPreprocessor):
    kind: ClassVar[str] = "tabular"

    task: str
    label: str
    numeric: list[NumericState]
    categorical: list[CategoricalState]
    classes: Optional[list[Any]] = None            # classification: label values, index = class id
    label_center: float = 0.0                      # regression: the target is standardised for training
    label_scale: float = 1.0
    unknown_category: str = "ignore"
    stats: dict = field(default_factory=dict)      # fitted statistics kept for the record (means, medians...)

    # ------------------------------------------------------------------ shape
    @property
    def feature_dim(self) -> int:
        return len(self.numeric) + sum(len(c.categories) + 1 for c in self.categorical)

    @property
    def feature_names(self) -> list[str]:
        return [n.name for n in self.numeric] + [c.name for c in self.categorical]

    # ------------------------------------------------------------------ apply
    def transform(self, df: pd.DataFrame) -> np.ndarray:
        """Rows → packed float32 matrix. Missing columns/values are imputed; unseen categories go to 'unknown'."""
        n = len(df)
        out = np.zeros((n, self.feature_dim), dtype=np.float32)
        for j, s in enumerate(self.numeric):
            col = pd.to_numeric(df[s.name], errors="coerce") if s.name in df else pd.Series(np.nan, index=df.index)
            x = col.to_numpy(dtype=np.float64, na_value=np.nan)
            x = np.where(np.isfinite(x), x, s.fill)
            out[:, j] = (x - s.center) / s.scale
        offset = len(self.numeric)
        for s in self.categorical:
            lookup = {c: i for i, c in enumerate(s.categories)}
            unknown = len(s.categories)
            if s.name in df:
                boolean = is_boolean(s.categories)
                key = functools.partial(category_key, boolean=True) if boolean else canonical
                idx = category_codes(df[s.name], lookup, key, unknown)
            else:
                idx = np.full(n, unknown, dtype=np.int64)
            out[np.arange(n), offset + idx] = 1.0
            offset += unknown + 1
        return out

    def record_problems(self, records: "list[dict] | Fields") -> list[str]:
        """Under unknown_category: error, every value of a categorical field that training never saw."""
        if self.unknown_category != "error":
            return []
        fields, problems = Fields.of(records), []
        for s in self.categorical:
            values = fields.values(s.name)
            for i in unseen(values, functools.partial(category_key, boolean=is_boolean(s.categories)),
                            set(s.categories)):
                problems.append(f"record {i}: {s.name}={values[i]!r} is not a known category "
                                f"(known: {s.categories})")
        return problems

    def frame_problems(self, df: pd.DataFrame) -> list[str]:
        """A numeric feature's value that is given but is not a number ('forty', '12,5', a list): `transform`
        would impute it like a missing one. The strings a CSV cell is read as null from in training ('', 'NA',
        'nan', 'null', ...: `csv_null_strings`) are missing values here too. Columns of numbers (what the server
        passes on) cost a dtype check."""
        problems = []
        kinds = {name: dtype.kind for name, dtype in df.dtypes.items()}    # once: ~0.1 ms a call less (8 columns)
        for s in self.numeric:
            if kinds.get(s.name, "b") in "biufc":       # absent, or numbers (bool, int, unsigned, float, complex)
                continue
            col = df[s.name]
            bad = pd.to_numeric(col, errors="coerce").isna() & col.notna() & ~col.isin(csv_null_strings())
            for i in np.flatnonzero(bad.to_numpy()):
                problems.append(f"record {i}: {s.name}={col.iloc[i]!r} is not a number; send a number, or null "
                                "(or leave the field out) to have it imputed as in training")
        return problems

    # ------------------------------------------------------------------ JSON
    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessor":
        d = {k: v for k, v in d.items() if k != "kind"}
        d["numeric"] = [NumericState(**x) for x in d["numeric"]]
        d["categorical"] = [CategoricalState(**x) for x in d["categorical"]]
        return cls(**d)


@functools.cache
def csv_null_strings() -> frozenset:
    """The cells Arrow's CSV reader, which reads the training data, takes for null in a numeric column ('', 'NA',
    'N/A', 'nan', 'NULL', ...): its defaults, which ingest keeps."""
    import pyarrow.csv as pacsv

    return frozenset(pacsv.ConvertOptions().null_values)


def fit(train_ds, data_spec, *, numeric: list[str], categorical: list[str], task: str,
        classes: Optional[list[Any]] = None) -> Preprocessor:
    """Fit every statistic on the TRAIN split only, with distributed Ray Data aggregations."""
    return fit_with_stats(train_ds, data_spec, numeric=numeric, categorical=categorical, task=task,
                          classes=classes)[0]


def fit_with_stats(train_ds, data_spec, *, numeric: list[str], categorical: list[str], task: str,
                   classes: Optional[list[Any]] = None) -> tuple[Preprocessor, dict]:
    """`fit`, and the row of aggregated statistics it was fitted from: one Ray Data pass over the train split
    also gives the reference profile's train part (`jobs.profile.tabular_reference`): every numeric column's
    `NumericSummary` (its median, bins and quantiles) and every categorical column's value counts."""
    from ray.data.aggregate import Count, Max, Mean, Min, Std, ValueCounter

    from jobs.profile import NumericSummary, median

    cfg = data_spec.preprocess
    label = data_spec.label
    aggs = [Count()]
    for c in numeric:
        aggs += [Mean(c, alias_name=f"mean({c})"), Std(c, ddof=0, alias_name=f"std({c})"),
                 Min(c, alias_name=f"min({c})"), Max(c, alias_name=f"max({c})"), NumericSummary(c)]
        if cfg.impute == "most_frequent":
            aggs.append(ValueCounter(c, alias_name=f"counts({c})"))
    for c in categorical:
        aggs.append(ValueCounter(c, alias_name=f"counts({c})"))
    if task == "classification":
        aggs.append(ValueCounter(label, alias_name="counts(__label__)"))
    else:
        aggs += [Mean(label, alias_name="mean(__label__)"), Std(label, ddof=0, alias_name="std(__label__)")]
    stats = aggregate(train_ds, *aggs)

    num_states = []
    for c in numeric:
        mean, std = stats[f"mean({c})"], stats[f"std({c})"]
        lo, hi = stats[f"min({c})"], stats[f"max({c})"]
        if mean is None or (isinstance(mean, float) and math.isnan(mean)):
            mean = std = lo = hi = 0.0  # column empty in train: it carries no signal, impute a constant
        fill = {"mean": mean, "median": _or(median(stats[f"summary({c})"]), mean), "constant": cfg.fill_value,
                "most_frequent": _most_frequent(stats.get(f"counts({c})"), mean)}[cfg.impute]
        if cfg.scale == "standard":
            center, scale = mean, std
        elif cfg.scale == "minmax":
            center, scale = lo, hi - lo
        else:
            center, scale = 0.0, 1.0
        scale = float(scale) if scale and math.isfinite(scale) and scale > 1e-12 else 1.0
        num_states.append(NumericState(c, float(fill), float(center), scale))

    cat_states, cut = [], {}
    for c in categorical:
        counts = category_counts(stats[f"counts({c})"])
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        cat_states.append(CategoricalState(c, [k for k, _ in ranked[: cfg.max_categories]]))
        if len(ranked) > cfg.max_categories:
            cut[c] = len(ranked)        # values the train split held, more than kept (`input_schema`'s kept_of)

    pre = Preprocessor(task=task, label=label, numeric=num_states, categorical=cat_states,
                       unknown_category=cfg.unknown_category)
    if task == "classification":
        seen = category_counts(stats["counts(__label__)"])
        # Keep the ingest order (sorted label values) so class ids are stable; only classes present in train.
        pre.classes = [c for c in (classes or sorted(seen)) if canonical(c) in seen]
        pre.stats["class_counts"] = {canonical(c): seen[canonical(c)] for c in pre.classes}
    else:
        pre.label_center = float(stats["mean(__label__)"])
        std = stats["std(__label__)"]
        pre.label_scale = float(std) if std and std > 1e-12 else 1.0
    pre.stats["train_rows"] = int(stats["count()"])
    if cut:
        pre.stats["categories_seen"] = cut
    pre.stats["numeric"] = {c: {"mean": stats[f"mean({c})"], "std": stats[f"std({c})"],
                                "min": stats[f"min({c})"], "max": stats[f"max({c})"]} for c in numeric}
    return pre, stats


def training_ranges(pre: Any) -> list[tuple[str, float, float]]:
    """(feature, min, max) of each numeric table column over the train split, from the fitted statistics every
    tabular and text bundle keeps (preprocessor.json `stats.numeric`); none for an image bundle, or for a column
    the train split held no value of."""
    table = getattr(pre, "tabular", pre) if getattr(pre, "kind", "tabular") == "text" else pre
    if getattr(table, "kind", None) != "tabular":
        return []
    seen = (table.stats or {}).get("numeric") or {}
    ranges = []
    for s in table.numeric:
        lo, hi = (seen.get(s.name) or {}).get("min"), (seen.get(s.name) or {}).get("max")
        if isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and math.isfinite(lo) and math.isfinite(hi):
            ranges.append((s.name, float(lo), float(hi)))
    return ranges


# How far past the train split's min or max a value may lie, as a share of that range, before it is said to be
# outside it. Fresh rows of the same data pass the split's extremes by a little all the time (each of the 8
# features of a 336-row train split, ~2 chances in 337 per held-out row): said at every such row, the note would
# be on one row in twenty and read as noise.
RANGE_MARGIN = 0.1


def range_bounds(lo: float, hi: float) -> tuple[float, float]:
    """The values beyond which a number counts as outside a train split's [lo, hi] (by RANGE_MARGIN of it)."""
    return lo - RANGE_MARGIN * (hi - lo), hi + RANGE_MARGIN * (hi - lo)


def outside_range(ranges: list[tuple[str, float, float]], records: "list[dict] | Fields") -> list[dict]:
    """The numeric values of `records` beyond the range the train split held (`training_ranges`) by more than
    RANGE_MARGIN of it, in record order: [{"record": i, "field", "value", "trained_on": [min, max]}]. The model
    extrapolates there: its answer may be far off with nothing else to say so (an age of -500 got a stay of 1.8
    million days). Values that are not finite numbers are not judged here (the request checks and the model's
    output check answer them). A field at a time (`jobs.columns`)."""
    fields = Fields.of(records)
    found = [outside(fields.values(name), *range_bounds(lo, hi)) for name, lo, hi in ranges]
    return [{"record": i, "field": ranges[j][0], "value": v, "trained_on": [ranges[j][1], ranges[j][2]]}
            for i, j, v in in_record_order(found)]


def unseen_categories(known: dict[str, set], records: "list[dict] | Fields") -> list[dict]:
    """The category values of `records` that the train split did not hold (`known`: {feature: its categories, as
    `canonical` writes them}), in record order: [{"record": i, "field", "value"}]. The model reads each as its
    unknown category, as it does a missing value: a '1,000' where it knows '1000', a 'y' where it knows 'Y', or a
    count past those seen, changed an answer with nothing to say so."""
    fields, names, found = Fields.of(records), list(known), []
    for name in names:
        # None: missing (NaN too), imputed as such
        key = functools.partial(category_key, boolean=True) if is_boolean(known[name]) else _text_or_canonical
        values = fields.values(name)
        found.append([(i, values[i]) for i in unseen(values, key, known[name])])
    return [{"record": i, "field": names[j], "value": _echoed(v)} for i, j, v in in_record_order(found)]


def _text_or_canonical(v) -> Optional[str]:
    return v if type(v) is str else canonical(v)


def missing_fields(names: list[str], records: "list[dict] | Fields",
                   blank=frozenset()) -> tuple[list[str], list[dict]]:
    """The features among `names` that records leave out or send as null (NaN), which the model imputes (the train
    split's median, the unknown category): a credit answer came with no word that its debt-to-income was never
    sent. `blank`: text features, missing when sent blank too (read as empty text: a triage note left out was
    answered "routine" without a word). Returns (the features no record sends, in `names` order; [{"record": i,
    "field"}] for the others, in record order): one entry per record and field made 190,000 entries (6 MB) of a
    request of 1,000 records that sent 10 of 200 features."""
    fields = Fields.of(records)
    masks = [missing(fields.values(n), n in blank) for n in names]
    everywhere = {n for n, m in zip(names, masks) if len(m) and m.all()}
    found = [[] if n in everywhere else [(i, None) for i in np.flatnonzero(m).tolist()] for n, m in zip(names, masks)]
    imputed = [{"record": i, "field": names[j]} for i, j, _ in in_record_order(found)]
    return [n for n in names if n in everywhere], imputed


# The most of an unseen category's text said back: a megabyte-long value was echoed whole in the response, the
# client's unseen_categories column and its note.
ECHO_CHARS = 100


def _echoed(v):
    return v if type(v) is not str or len(v) <= ECHO_CHARS else f"{v[:ECHO_CHARS]}… ({len(v):,} characters)"


def empty_columns(stats: dict, numeric: list[str], categorical: list[str]) -> list[str]:
    """The feature columns with no value in any row of the train split (`fit_with_stats`'s row): each is
    imputed one constant, so it carries nothing the model can learn from."""
    def missing(mean) -> bool:
        return mean is None or (isinstance(mean, float) and math.isnan(mean))

    return ([c for c in numeric if missing(stats[f"mean({c})"])]
            + [c for c in categorical if not category_counts(stats[f"counts({c})"])])


def _or(v, default):
    return default if v is None else v


def _most_frequent(vc, default) -> float:
    if not vc:
        return default
    counts = category_counts(vc)
    if not counts:
        return default
    return float(max(counts.items(), key=lambda kv: (kv[1], -float(kv[0])))[0])
