"""Drift statistics of live or logged values against a bundle's reference profile (`profile.json`, written by
`jobs.profile`): numpy and scipy only, no Ray, so that a serving replica (per window of requests) and the
`trainyard monitor` job (per window of logs) compute the same numbers.

- numeric features: the population stability index (PSI) over the reference's bins, the one-sample
  Kolmogorov-Smirnov test against the reference quantiles (from raw values), or chi-squared over the bins (from
  counts alone, what a replica keeps), and the missing rate;
- categorical features: PSI and chi-squared over the categories plus the 'unknown' slot, unknown and missing rates;
- predictions: PSI and chi-squared over the classes (or the regression bins), KS for regression values.

`flagged` turns one feature's statistics into the reasons it drifted, under `Thresholds` (the spec's `monitor:`
section). PSI alone grows with sampling noise on small windows, and a p-value alone flags tiny shifts on large
ones, so a distribution counts as drifted only when both say so; the p-value threshold is Bonferroni-corrected
over the features checked together.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from jobs.fitted import canonical

EPSILON = 1e-4        # shares are floored at this before the logarithm of PSI (an empty bin is not infinitely far)
# The quantiles a reference keeps per numeric feature (KS against them); its deciles are the inner bin edges
# (PSI, chi-squared, a replica's counters).
LEVELS = np.linspace(0.0, 1.0, 101)


@dataclass(frozen=True)
class Thresholds:
    """When a feature (or the prediction) counts as drifted; the spec's `monitor:` section sets them."""
    psi: float = 0.2              # population stability index at or above this ...
    p_value: float = 0.01         # ... and a test's p-value below this / the number of features checked
    missing_rate: float = 0.1     # the missing rate rose by more than this over the train split's
    unknown_rate: float = 0.05    # the share of unseen categories rose by more than this over the train split's
    min_rows: int = 50            # fewer rows in a window: nothing is flagged (too few to tell)
    metric_drop: float = 0.05     # a realised metric worse than the bundle's test metric by more than this

    @classmethod
    def from_spec(cls, monitor: Any = None) -> "Thresholds":
        """The thresholds of a spec's `monitor:` section (`jobs.spec.MonitorSpec`, or its dict form); the
        defaults when it is None."""
        if monitor is None:
            return cls()
        given = monitor if isinstance(monitor, Mapping) else monitor.model_dump()
        return cls(**{f.name: given[f.name] for f in fields(cls) if f.name in given})


def bundle_monitor_settings(spec_yaml: Optional[str]) -> tuple[Thresholds, str]:
    """The thresholds and the window of the `monitor:` section of a bundle's spec.yaml (its text; the defaults
    where it has none), for a serving replica and the monitor job alike. Safe to take from a bundle: they decide
    what is reported, never what runs or where. ValueError saying what does not read."""
    import yaml

    from jobs.spec import MonitorSpec, read_yaml

    try:
        doc = read_yaml(spec_yaml) if spec_yaml else None
        section = MonitorSpec.model_validate((doc or {}).get("monitor") or {})
    except (yaml.YAMLError, ValueError, AttributeError, TypeError) as exc:   # pydantic's errors are ValueErrors
        raise ValueError(f"its monitor section does not read ({exc})") from None
    return Thresholds.from_spec(section), section.window


def bin_index(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """The reference bin of each value: 0 below the first inner edge, len(edges) at or above the last."""
    return np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="right")


def summarise(values: Any) -> dict:
    """The reference form of one numeric column (the profile's, `jobs.profile`): "edges" (the deduplicated
    deciles of its finite values: a value that fills several deciles is one edge), "shares" per bin, the 101
    "quantiles" q = 0.00..1.00, and "count" of finite values."""
    x = _as_floats(values)
    x = x[~np.isnan(x)]
    if not len(x):
        return {"count": 0, "edges": [], "shares": [1.0], "quantiles": []}
    quantiles = np.quantile(x, LEVELS)
    edges = np.unique(quantiles[10:100:10])          # the deciles are among the levels: one sort for both
    if edges[-1] == quantiles[-1]:
        # The top decile is the largest value itself (a constant, or a discrete feature's top value): its bin would
        # hold everything above it too, so a rise (images of 64x64 pixels in training, 128x128 sent) stayed in it
        # and went unseen, where a fall below the smallest value lands in the empty bin 0. One more edge just above
        # gives a rise an empty bin of its own as well.
        edges = np.append(edges, np.nextafter(edges[-1], np.inf))
    counts = np.bincount(bin_index(x, edges), minlength=len(edges) + 1)
    return {"count": int(len(x)), "edges": edges.tolist(), "shares": (counts / len(x)).tolist(),
            "quantiles": quantiles.tolist()}


def median_side(ref: dict, counts: Sequence[float]) -> Optional[str]:
    """Which way a number went, from counts on its reference bins alone (a live window keeps no values, where
    `trainyard monitor` gives its sample's median): the share of values at or above the training median, one of
    the bins' edges, against the training share. None without a median edge or counts."""
    quantiles, edges = ref.get("quantiles") or [], list(ref.get("edges") or [])
    counts = np.asarray(counts, dtype=np.float64)
    if len(quantiles) != 101 or quantiles[50] not in edges or counts.sum() <= 0:
        return None
    above = edges.index(quantiles[50]) + 1         # bin_index: a value equal to an edge is in the bin after it
    now, then = counts[above:].sum() / counts.sum(), float(np.sum(ref["shares"][above:]))
    if f"{now:.0%}" == f"{then:.0%}":       # the same share each side of the median: what moved is elsewhere
        return moved_bin(ref, counts)
    return f"{now:.0%} at or above the training median {quantiles[50]:.4g} ({then:.0%} in training)"


def moved_bin(ref: dict, counts: Sequence[float]) -> Optional[str]:
    """The reference bin whose share moved most, said with its range ("0% equal to 48 (23% in training)"): what
    changed where the median did not (images of 32 and 48 px in training, of 32 alone sent: "median 32 vs 32").
    None without edges or counts."""
    edges, counts = list(ref.get("edges") or []), np.asarray(counts, dtype=np.float64)
    if not edges or counts.sum() <= 0 or len(counts) != len(ref.get("shares") or []):
        return None
    now, then = counts / counts.sum(), np.asarray(ref["shares"], dtype=np.float64)
    k = int(np.argmax(np.abs(now - then)))
    if k == 0:
        where = f"below {edges[0]:.4g}"
    elif k >= len(edges):
        where = f"at or above {edges[-1]:.4g}"
    elif edges[k] == np.nextafter(edges[k - 1], np.inf):
        where = f"equal to {edges[k - 1]:.4g}"
    else:
        where = f"from {edges[k - 1]:.4g} to under {edges[k]:.4g}"
    return f"{now[k]:.0%} {where} ({then[k]:.0%} in training)"


def _floored(shares: np.ndarray) -> np.ndarray:
    shares = np.maximum(np.asarray(shares, dtype=np.float64), EPSILON)
    return shares / shares.sum()


def psi(ref_shares: Sequence[float], counts: Sequence[float]) -> float:
    """Population stability index of observed `counts` against reference shares (same bins, same order):
    sum((q - p) * ln(q / p)), both floored at EPSILON. 0.1 reads as a small shift, 0.2 or more as a large one.
    NaN when nothing was counted."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        return math.nan
    p, q = _floored(ref_shares), _floored(counts / total)
    return float(np.sum((q - p) * np.log(q / p)))


def _st():
    """scipy.stats, imported on first use: `jobs.profile` imports this module on every training run, which never
    tests drift, and scipy.stats alone took 1.1 s to import on 2 cores (`python -X importtime`)."""
    from scipy import stats
    return stats


# A profile's numeric reference is fitted on a uniform sample of at most this many values (`jobs.profile`).
REFERENCE_SAMPLE = 100_000


def with_reference_sizes(profile: Optional[dict]) -> Optional[dict]:
    """`profile` (profile.json) with `n` in each reference entry: the values its shares were counted over (the
    train split's values present, at most REFERENCE_SAMPLE of a number's; the validation split's rows for the
    predictions and probabilities), so that the tests treat it as the sample it is. Entries that have one keep it;
    a profile without row counts is left as it was (its tests take the reference as exact)."""
    if not profile:
        return profile
    rows = profile.get("rows") or {}
    train, val = rows.get("train"), rows.get("val")
    for kind, cap in (("numeric", REFERENCE_SAMPLE), ("categorical", None)):
        for ref in (profile.get(kind) or {}).values():
            if train and "n" not in ref:
                present = int(round(train * (1.0 - float(ref.get("missing_rate") or 0.0))))
                ref["n"] = min(present, cap) if cap else present
    prediction = profile.get("prediction")
    if prediction and val:
        prediction.setdefault("n", int(val))
        if isinstance(prediction.get("score"), dict):
            prediction["score"].setdefault("n", int(val))
    return profile


def _chi2_p(ref_shares: Sequence[float], counts: np.ndarray, ref_n: Optional[int] = None) -> float:
    """p-value that `counts` come from the reference's distribution. With `ref_n` (the values the reference shares
    were counted over: `with_reference_sizes`), chi-squared of two samples (homogeneity): the reference is a sample
    too, and goodness of fit to its shares as if they were exact flagged in-distribution windows against a small
    validation split (300 rows against 72: psi 0.23, p 7e-09). Without it, goodness of fit to the shares (floored,
    so that a bin the train split never filled makes the p-value tiny rather than undefined)."""
    n = counts.sum()
    if n <= 0 or len(counts) < 2:
        return math.nan
    if ref_n:
        table = np.vstack([np.asarray(ref_shares, dtype=np.float64) * ref_n, np.asarray(counts, dtype=np.float64)])
        table = table[:, table.sum(axis=0) > 0]
        if table.shape[1] < 2:
            return 1.0          # both samples in one bin: nothing tells them apart
        # The G-test (log-likelihood): Pearson's is weak where the reference holds none of a bin the window fills
        # (a new category, 4 % of a window against 200 train rows: Pearson p 0.016, unflagged; G p 0.0004).
        return float(_st().chi2_contingency(table, correction=False, lambda_="log-likelihood").pvalue)
    return float(_st().chisquare(counts, _floored(ref_shares) * n).pvalue)


def _ks_p(statistic: float, n: int, ref_n: Optional[int], one_sample_p: float) -> float:
    """KS p-value against a reference of `ref_n` values: the two-sample distribution at the effective size
    n·m/(n+m) (the reference's quantiles are a sample's); the one-sample p where the reference size is unknown."""
    if not ref_n:
        return one_sample_p
    return float(_st().kstwo.sf(statistic, max(1, int(round(n * ref_n / (n + ref_n))))))


def _as_floats(values: Any) -> np.ndarray:
    """Values as float64, None and anything not finite as NaN."""
    x = np.asarray(values, dtype=np.float64).ravel()
    return np.where(np.isfinite(x), x, np.nan)


def _reference_cdf(quantiles: Sequence[float]):
    """The piecewise-linear CDF through the reference quantiles (levels 0, 1/(k-1), ..., 1); None when two
    quantiles tie: a value with a mass of its own (a discrete or rounded feature), where KS does not apply."""
    q = np.asarray(quantiles, dtype=np.float64)
    if len(q) < 2 or np.any(np.diff(q) <= 0):
        return None
    levels = np.linspace(0.0, 1.0, len(q))
    return lambda x: np.interp(x, q, levels, left=0.0, right=1.0)


def numeric_drift(ref: Mapping, values: Any) -> dict:
    """Drift of raw values of one numeric feature against its reference (`profile["numeric"][name]`).

    Returns n (values, missing ones included), counts (per reference bin), psi, chi2_p, ks and ks_p (None when
    the reference quantiles tie, see `_reference_cdf`), missing_rate."""
    x = _as_floats(values)
    present = x[~np.isnan(x)]
    counts = np.bincount(bin_index(present, ref["edges"]), minlength=len(ref["edges"]) + 1)
    out = numeric_drift_from_counts(ref, counts, len(x) - len(present), len(x))
    cdf = _reference_cdf(ref.get("quantiles") or [])
    ks = _st().kstest(present, cdf) if cdf is not None and len(present) else None
    out.update(ks=None if ks is None else float(ks.statistic),
               ks_p=None if ks is None else _ks_p(float(ks.statistic), len(present), ref.get("n"), float(ks.pvalue)))
    return out


def numeric_drift_from_counts(ref: Mapping, bin_counts: Sequence[int], missing: int, n: int) -> dict:
    """Drift of one numeric feature from counters alone (what a serving replica keeps): `bin_counts` per
    reference bin (`bin_index`), `missing` values, `n` values in all. Returns n, counts, psi, chi2_p,
    missing_rate."""
    counts = np.asarray(bin_counts, dtype=np.int64)
    return {"n": int(n), "counts": counts.tolist(), "psi": psi(ref["shares"], counts),
            "chi2_p": _chi2_p(ref["shares"], counts, ref.get("n")), "missing_rate": missing / n if n else math.nan}


def categorical_drift(ref: Mapping, counts: Mapping[str, int], unknown: int, missing: int) -> dict:
    """Drift of one categorical feature against its reference (`profile["categorical"][name]`): `counts` per
    canonical category (`jobs.fitted.canonical`; one the reference does not know adds to `unknown`), `unknown`
    values outside the reference's categories, `missing` values.

    Returns n (all values), psi and chi2_p over the categories plus the unknown slot, unknown_rate (of the
    values present) and missing_rate."""
    categories = list(ref["shares"])
    unknown += sum(int(c) for k, c in counts.items() if k not in ref["shares"])
    observed = np.array([int(counts.get(c, 0)) for c in categories] + [int(unknown)], dtype=np.int64)
    expected = [ref["shares"][c] for c in categories] + [ref.get("unknown_share", 0.0)]
    present = int(observed.sum())
    n = present + int(missing)
    return {"n": n, "psi": psi(expected, observed), "chi2_p": _chi2_p(expected, observed, ref.get("n")),
            "unknown_rate": unknown / present if present else math.nan,
            "missing_rate": missing / n if n else math.nan}


def count_categories(values: Any) -> tuple[dict[str, int], int]:
    """Raw values of a categorical feature → ({canonical category: count}, missing), as `categorical_drift`
    takes them (the unknown ones are sorted out there)."""
    counts: dict[str, int] = {}
    missing = 0
    for v in values:
        key = canonical(v)
        if key is None:
            missing += 1
        else:
            counts[key] = counts.get(key, 0) + 1
    return counts, missing


def prediction_drift(ref_prediction: Mapping, counts_or_values: Any) -> dict:
    """Drift of the predictions against the reference's (`profile["prediction"]`, the validation split's).

    Classification: a mapping {class label: count} or the predicted labels themselves; labels are matched as
    canonical strings. Regression: a mapping {bin index (`bin_index` over the reference edges): count}, or the
    predicted values. Returns n, psi and p (chi-squared over classes or bins; KS for regression values, when the
    reference quantiles do not tie)."""
    if ref_prediction["task"] == "classification":
        classes = [canonical(c) for c in ref_prediction["classes"]]
        if isinstance(counts_or_values, Mapping):
            given = {canonical(k): int(v) for k, v in counts_or_values.items()}
        else:
            given, _ = count_categories(counts_or_values)
        counts = np.array([given.get(c, 0) for c in classes], dtype=np.int64)
        return {"n": int(counts.sum()), "psi": psi(ref_prediction["shares"], counts),
                "p": _chi2_p(ref_prediction["shares"], counts, ref_prediction.get("n"))}
    bins = len(ref_prediction["edges"]) + 1
    if isinstance(counts_or_values, Mapping):
        counts = np.zeros(bins, dtype=np.int64)
        for k, v in counts_or_values.items():
            counts[int(k)] += int(v)
        return {"n": int(counts.sum()), "psi": psi(ref_prediction["shares"], counts),
                "p": _chi2_p(ref_prediction["shares"], counts, ref_prediction.get("n"))}
    stats = numeric_drift(ref_prediction, counts_or_values)
    p = stats["ks_p"] if stats["ks_p"] is not None else stats["chi2_p"]
    return {"n": stats["n"], "psi": stats["psi"], "p": p}


def p_value(stats: Mapping) -> Optional[float]:
    """The test's p-value among a feature's statistics: KS from raw values when it applies, else chi-squared."""
    for key in ("ks_p", "chi2_p", "p"):
        if stats.get(key) is not None and not math.isnan(stats[key]):
            return float(stats[key])
    return None


def flagged(ref_feature: Mapping, stats: Mapping, thresholds: Thresholds, n_features: int) -> list[str]:
    """Why one feature (or the prediction) drifted, as short reasons ("psi 0.83 (p 1e-12)", "missing 0.50 vs
    0.00", "unknown categories 0.33 vs 0.00"); empty when it did not, or when the window holds fewer than
    `thresholds.min_rows` rows. `ref_feature`: the feature's reference (profile["numeric"|"categorical"][name],
    or profile["prediction"]); `stats`: what `numeric_drift`, `numeric_drift_from_counts`, `categorical_drift`
    or `prediction_drift` returned; `n_features`: how many features (and predictions) are checked together
    (the Bonferroni correction of the p-value threshold)."""
    if not stats.get("n") or stats["n"] < thresholds.min_rows:
        return []
    reasons = []
    missing, ref_missing = stats.get("missing_rate"), ref_feature.get("missing_rate", 0.0)
    # The shape of the values (psi, unknown categories) is judged on the values present, as many as min_rows asks:
    # one filled cell among 700 empty ones flagged a feature with psi 18.4 and "unknown categories 1.00".
    present = round(stats["n"] * (1 - missing)) if missing is not None and missing == missing else stats["n"]
    value, p = stats.get("psi"), p_value(stats)
    if present >= thresholds.min_rows and value is not None and p is not None and value >= thresholds.psi \
            and p < thresholds.p_value / max(n_features, 1):
        reasons.append(f"psi {value:.2f} (p {p:.1g})")
    if missing is not None and missing - ref_missing > thresholds.missing_rate:
        reasons.append(f"missing {missing:.2f} vs {ref_missing:.2f}")
    unknown, ref_unknown = stats.get("unknown_rate"), ref_feature.get("unknown_share", 0.0)
    if present >= thresholds.min_rows and unknown is not None and unknown - ref_unknown > thresholds.unknown_rate:
        reasons.append(f"unknown categories {unknown:.2f} vs {ref_unknown:.2f}")
    # A number's values past its training range: a lab that changed units at one site of several moved 6 % of a
    # day's values 30-100x and no PSI reached 0.2 (the deciles' top bin holds them with the rest); judged by the
    # unknown-category threshold, their counterpart for numbers (the train split holds none by definition).
    outside = stats.get("outside_rate")
    if present >= thresholds.min_rows and outside is not None and outside > thresholds.unknown_rate:
        reasons.append(f"outside the training range {outside:.2f} ({stats['outside']:,} of {present:,})")
    return reasons


def score_flags(ref_prediction: Mapping, score: Mapping) -> list[str]:
    """A binary model's probability-drift flags (`score["flags"]`, of profile "score"), as both monitors say them:
    which class, and which way when the window's mean is known ("psi 0.50" alone did not say whether the risk
    rose or fell)."""
    ref = ref_prediction["score"]
    positive = ref_prediction["classes"][int(ref.get("index", 1))]
    mean = (f"; mean {score['mean']:.3f} vs {ref['mean']:.3f} on the validation split"
            if score.get("mean") is not None and isinstance(ref.get("mean"), (int, float)) else "")
    return [f"probability of {positive!r} {flag}{mean}" for flag in score["flags"]]


def json_safe(v: Any) -> Any:
    """`v` (dicts, lists and tuples of statistics) with every NaN or infinite float as None: JSON has no NaN
    (a statistic of an empty window is one), and strict readers (JavaScript's JSON.parse, jq) refuse it."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    if isinstance(v, np.generic):
        return json_safe(v.item())
    return v
