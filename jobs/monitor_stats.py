"""The judging of one window's merged summary (`jobs.monitor_summary`) against the bundle's profile: drift of
each feature and of the predictions, the realised metrics of the labelled rows (accuracy or R², a binary model's
ROC-AUC from its logged probabilities, a cut-off's recall and precision) with their flags, and the window's line.
`jobs.monitor` runs the job around it.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

from jobs import drift
from jobs.fitted import canonical
from jobs.metrics import binned_auc, classification_metrics, regression_metrics
from jobs.monitor_summary import sample_rows

UNKNOWN_NAMES_K = 20       # distinct unseen categories named per window (for the report); all are counted


def window_stats(summary: dict, profile: dict, thresholds: "drift.Thresholds", n_features: int,
                 reference_metric: Optional[tuple], decision: Optional[dict] = None,
                 reference_auc: Optional[float] = None, reference_recalls: Optional[list] = None) -> dict:
    """The drift statistics of one window's merged summary, each with its flags (`jobs.drift.flagged`);
    `decision`: the bundle's binary cut-off, whose rule the labelled rows are judged by too (`_policy`);
    `reference_auc`: a binary model's test ROC-AUC, which the realised one is judged against; `reference_recalls`:
    each class's recall on the test split (`reference_recalls`), which each class's realised one is judged
    against (`class_recalls`)."""
    reference_metric = Reference(*reference_metric) if reference_metric else None
    n = summary["n"]
    features: dict[str, dict] = {}
    for name, s in summary["numeric"].items():
        ref = profile["numeric"][name]
        # Of the rows that hold the feature: logs spanning a version that did not take it lack it in some rows.
        held = int(np.sum(s["counts"])) + int(s["missing"])
        stats = drift.numeric_drift_from_counts(ref, np.asarray(s["counts"]), s["missing"], held)
        sample = sample_rows(s["sample"])[:, 1]
        if len(sample):
            on_sample = drift.numeric_drift(ref, sample)
            stats.update(ks=on_sample["ks"], ks_p=on_sample["ks_p"])
        stats.update(kind="numeric", ks_sample=len(sample), counts=s["counts"],
                     median=float(np.median(sample)) if len(sample) else None)
        if "outside" in s:       # past the train split's range (as /predict's out_of_range): a unit changed
            present = int(np.sum(s["counts"]))
            stats.update(outside=int(s["outside"]), outside_rate=s["outside"] / present if present else None)
        features[name] = stats
    for name, s in summary["categorical"].items():
        ref = profile["categorical"][name]
        known = {c: s["counts"].get(c, 0) for c in ref["shares"]}
        unseen = {c: k for c, k in s["counts"].items() if c not in ref["shares"]}
        stats = drift.categorical_drift(ref, known, sum(unseen.values()), s["missing"])
        top = sorted(unseen.items(), key=lambda kv: -kv[1])[:UNKNOWN_NAMES_K]
        stats.update(kind="categorical", counts=known, unknown=sum(unseen.values()), unknown_values=dict(top))
        features[name] = stats
    judged = n >= thresholds.min_rows
    for name, stats in features.items():
        ref = profile["numeric"].get(name) or profile["categorical"][name]
        stats["flags"] = drift.flagged(ref, stats, thresholds, n_features) if judged else []
        quantiles = ref.get("quantiles") or []
        if stats.get("median") is not None and len(quantiles) == 101:     # which way: "psi 2.07" alone did not say
            # Where the median stayed, the range whose share moved most says it ("median 32 vs 32" did not).
            same = f"{stats['median']:.4g}" == f"{quantiles[50]:.4g}" and drift.moved_bin(ref, stats["counts"])
            stats["flags"] = [(f"{f}; {same}" if same else
                               f"{f}; median {stats['median']:.4g} vs {quantiles[50]:.4g} in training")
                              if f.startswith("psi ") else f for f in stats["flags"]]
    prediction = _prediction_stats(summary["prediction"], profile["prediction"], thresholds, judged)
    if "score" in summary and "score" in profile["prediction"]:
        prediction["score"] = score = _score_stats(summary["score"], profile["prediction"], thresholds)
        prediction["flags"] += drift.score_flags(profile["prediction"], score)
    out = {"n": n, "judged": judged, "features": features, "prediction": prediction,
           "flagged": sorted(name for name, stats in features.items() if stats["flags"])}
    if "versions" in summary:
        out["versions"] = summary["versions"]
    if "labels" in summary:
        # A model answering by a cut-off is judged by its rule (and its AUC), not by accuracy: a plant running
        # hotter (failures 7 % → 15 %) lowered the accuracy of a recall-driven cut-off while it caught more.
        # Accuracy still judges where neither the rule (no target: a fixed threshold, best_f1) nor an AUC can.
        by_rule = decision and profile["prediction"]["task"] == "classification" and (
            policy_bar(decision) is not None or (reference_auc is not None and "scores" in summary["labels"]))
        judged_by = None if by_rule else reference_metric
        out["metrics"] = _realised(summary["labels"], profile["prediction"], thresholds, judged_by, reference_auc)
        if decision and profile["prediction"]["task"] == "classification":
            _policy(out["metrics"], np.asarray(summary["labels"]["confusion"], dtype=np.int64), decision, thresholds)
        elif reference_recalls and profile["prediction"]["task"] == "classification":
            class_recalls(out["metrics"], np.asarray(summary["labels"]["confusion"], dtype=np.int64),
                          profile["prediction"]["classes"], reference_recalls, thresholds)
    return out


def reference_recalls(metrics: dict) -> Optional[list]:
    """Each class's recall on the test split as [hits, of] (metrics.json's confusion matrix; None for a class it
    did not hold)."""
    cm = (metrics.get("test") or {}).get("confusion_matrix")
    if not cm:
        return None
    cm = np.asarray(cm, dtype=np.int64)
    return [[int(cm[i, i]), int(cm[i].sum())] if cm[i].sum() else None for i in range(len(cm))]


MIN_CLASS_LABELS = 5        # a class's labels in a window below this: its recall is not judged


def class_recalls(metrics: dict, cm: np.ndarray, classes: list, reference: list, thresholds) -> None:
    """Each class's realised recall (`class_recall`), flagged when more than `metric_drop` below the test split's
    and below it by more than chance explains: the test figure is a sample too (of a rare class, a few rows), so
    one-sided Fisher's exact test of the two (`_below_test_chance`), p under monitor.p_value / the classes judged.
    Accuracy alone hid a rare class that went unseen: triage notes scored accuracy 0.90 while 'emergent' was
    caught in 2 of 9. Against the test recall as an exact value, a healthy class read from 10 test rows was
    flagged in a fifth of windows (a review)."""
    held = cm.sum(axis=1)
    judged = [i for i in range(min(len(cm), len(reference))) if reference[i] is not None
              and held[i] >= MIN_CLASS_LABELS]
    metrics["class_recall"] = {str(classes[i]): float(cm[i, i] / held[i]) for i in range(len(cm)) if held[i]}
    for i in judged:
        hits, of, (test_hits, test_of) = int(cm[i, i]), int(held[i]), reference[i]
        chance = _below_test_chance(hits, of, reference[i])
        if test_hits / test_of - hits / of > thresholds.metric_drop and chance < thresholds.p_value / len(judged):
            metrics["flags"].append(f"recall of {classes[i]!r} {hits / of:.3f} vs {test_hits / test_of:.3f} on the "
                                    f"test split ({hits} of {of} labels, {test_hits} of {test_of} there; p "
                                    f"{chance:.1g})")


def _policy(metrics: dict, cm: np.ndarray, decision: dict, thresholds) -> None:
    """The positive class's realised recall and precision (`positive_recall`, `positive_precision`) and share of
    the labels (`positive_rate`), flagged when below what the cut-off reached on the test split (the `min_recall`/
    `min_precision` it was chosen for; the test split's own figure where that fell short, `decision["test"]`: a
    cut-off that never met its target there said retrain on the first day of in-distribution traffic) by more
    than chance explains (`shortfall`, its p below monitor.p_value). A credit policy's "catch 85 % of
    defaulters": accuracy alone gave the same verdict at a recall of 0.93 and of 0.70."""
    from jobs.decision import shortfall, shortfall_chance
    from jobs.metrics import per_class_scores

    if cm.shape != (2, 2):
        return
    i = int(decision["positive_index"])
    precision, recall, _ = per_class_scores(cm)       # 0 where undefined: None here (nothing to measure)
    metrics["positive_recall"] = float(recall[i]) if cm[i].sum() else None
    metrics["positive_precision"] = float(precision[i]) if cm[:, i].sum() else None
    metrics["positive_rate"] = float(cm[i].sum() / cm.sum()) if cm.sum() else None
    bar = policy_bar(decision)
    short = shortfall(cm, {**decision, "target": bar}) if bar is not None else None
    if short is not None and metrics["n"] >= thresholds.min_rows:     # fewer labels: neither flagged nor "chance"
        # Flagged when chance does not explain it: a window holds a few positives (a helper's 300 labels held
        # 21-32), and a model that meets a recall of 0.9 exactly reads below it in about half of such windows.
        what, value, hit, of = short
        against_test = bar < float(decision["target"])
        chance = (_below_test_chance(hit, of, decision["test"]["counts"][what]) if against_test
                  else shortfall_chance(hit, of, bar))
        metrics["shortfall"] = {"measure": what, "value": value, "hits": hit, "of": of, "p": chance, "bar": bar,
                                "flagged": chance < thresholds.p_value}
        if chance < thresholds.p_value:
            below = (f"the {bar:.3f} it had on the test split" if against_test else
                     f"the {decision['rule']} its cut-off was chosen for")
            metrics["flags"].append(f"{what} of {decision['positive']!r} {value:.3f} ({hit} of {of}) below {below} "
                                    f"(p {chance:.1g})")


def _below_test_chance(hit: int, of: int, test: list[int]) -> float:
    """How likely a window's `hit` of `of` is this far below the test split's `test` [hits, of] if both come from
    one rate (one-sided Fisher's exact test): the test figure is a sample too."""
    from scipy.stats import fisher_exact
    return float(fisher_exact([[hit, of - hit], [test[0], test[1] - test[0]]], alternative="less").pvalue)


def policy_bar(decision: Optional[dict]) -> Optional[float]:
    """What a window's recall (or precision) of the cut-off's positive class is judged against: its target, or the
    test split's own figure where that fell short of it (`decision["test"]`, added by the monitor from
    metrics.json); None for a rule without a target."""
    if not decision or "target" not in decision:
        return None
    test = (decision.get("test") or {}).get(decision["measure"])
    counted = ((decision.get("test") or {}).get("counts") or {}).get(decision["measure"])
    return (min(float(decision["target"]), test) if isinstance(test, (int, float)) and counted
            else float(decision["target"]))


def _prediction_stats(s: dict, ref: dict, thresholds, judged: bool) -> dict:
    if ref["task"] == "classification":
        stats = drift.prediction_drift(ref, {c: s["counts"].get(c, 0) for c in map(canonical, ref["classes"])})
        stats["counts"] = s["counts"]
    else:
        # PSI and chi-squared ("p") over every prediction's bin; KS on the sample, which `flagged` prefers where it
        # applies. Where the reference quantiles tie (a model predicting a few distinct values) KS does not
        # apply: ks_p stays None and the chi-squared p over every row judges, not one over the sample alone.
        stats = drift.prediction_drift(ref, dict(enumerate(s["counts"])))
        stats.update(counts=s["counts"], ks_p=drift.numeric_drift(ref, sample_rows(s["sample"])[:, 1])["ks_p"])
    stats["flags"] = drift.flagged(ref, stats, thresholds, 1) if judged else []
    if stats["flags"] and ref["task"] == "classification" and stats["n"]:
        # Which class: "prediction drift (psi 2.48)" did not say that 'scratch' went from 29 % of answers to 0.
        classes = [canonical(c) for c in ref["classes"]]
        now = np.array([s["counts"].get(c, 0) for c in classes]) / stats["n"]
        k = int(np.argmax(np.abs(now - np.asarray(ref["shares"]))))
        stats["flags"] = [f"{f}; {classes[k]!r} {now[k]:.0%} of answers ({ref['shares'][k]:.0%} on the validation "
                          "split)" for f in stats["flags"]]
    return stats


def _score_stats(s: dict, ref_prediction: dict, thresholds) -> dict:
    """Drift of a binary model's logged probabilities of one class (profile "score": its "index") against the
    validation split's, judged as a numeric feature is: PSI and chi-squared over every row's bin, KS on the
    sample; flagged only with `min_rows` rows that hold them (logs from before they were written do not)."""
    ref = ref_prediction["score"]
    stats = drift.numeric_drift_from_counts(ref, np.asarray(s["counts"]), 0, int(np.sum(s["counts"])))
    on_sample = drift.numeric_drift(ref, sample_rows(s["sample"])[:, 1])
    stats.update(ks=on_sample["ks"], ks_p=on_sample["ks_p"],
                 mean=s["sum"] / stats["n"] if stats["n"] and "sum" in s else None)
    stats["flags"] = drift.flagged(ref, stats, thresholds, 1)
    return stats


def _realised(s: dict, ref_prediction: dict, thresholds, reference: Optional[tuple[str, float]],
              reference_auc: Optional[float] = None) -> dict:
    """The metrics of the labelled rows (jobs.metrics) and whether the compared ones fell beyond the threshold:
    accuracy (or R²), and a binary model's ROC-AUC from the logged probabilities (`auc`, over `auc_rows`: the
    labelled rows logged with them). The confusion matrix gives the rest: metrics of the answered classes.
    Accuracy and AUC are flagged when more than `metric_drop` below the test split's and below it by more than
    chance explains (`accuracy_p`, `auc_p` under monitor.p_value): a window of 100 labels holds a few positives,
    and a healthy model of AUC 0.85 read 0.80 or lower in a fifth of such windows."""
    from jobs.decision import shortfall_chance
    from jobs.metrics import auc_shortfall_chance

    flags, chances = [], {}
    if ref_prediction["task"] == "classification":
        cm = np.asarray(s["confusion"], dtype=np.int64)
        truth = np.repeat(np.arange(cm.size) // len(cm), cm.ravel())
        predicted = np.repeat(np.arange(cm.size) % len(cm), cm.ravel())
        metrics = classification_metrics(truth, np.eye(len(cm))[predicted]) if len(truth) else {}
        metrics.pop("auc", None)           # of the answered classes alone: the probabilities' is below
        n = len(truth)
        if reference and reference.name == "accuracy" and n:
            chances["accuracy"] = shortfall_chance(int(np.trace(cm)), n, reference.value)
        if "scores" in s:
            negatives, positives = np.asarray(s["scores"], dtype=np.int64)
            rows = int(negatives.sum() + positives.sum())
            auc = binned_auc(negatives, positives)
            metrics.update(auc=auc if np.isfinite(auc) else None, auc_rows=rows)
            if reference_auc is not None and metrics["auc"] is not None:
                chances["auc"] = auc_shortfall_chance(reference_auc, auc, int(positives.sum()), int(negatives.sum()))
                if (rows >= thresholds.min_rows and reference_auc - auc > thresholds.metric_drop
                        and chances["auc"] < thresholds.p_value):
                    flags.append(f"auc {auc:.3f} vs {reference_auc:.3f} on the test split (p {chances['auc']:.1g}; "
                                 f"the probabilities logged for {rows:,} labelled rows)")
    else:
        pairs = sample_rows(s["pairs"])[:, 1:]
        metrics = regression_metrics(pairs[:, 0], pairs[:, 1]) if len(pairs) else {}
        n = int(s.get("labelled", len(pairs)))      # every labelled row (the pairs are a sample of them)
        if reference and reference.name == "rmse" and len(pairs) and reference.value > 0:
            chances["rmse"] = _errors_chance(metrics["rmse"], reference.value, len(pairs), reference.test_rows)
    out = {"n": n, **metrics, "other_versions": int(s.get("other_versions", 0)),
           **{f"{k}_p": v for k, v in chances.items()}, "flags": []}
    if reference and n >= thresholds.min_rows and reference.name in metrics:
        name, value = reference.name, reference.value
        chance = chances.get(name, 0.0)       # R² of a bundle without its test RMSE: no test of chance
        if name == "rmse":
            # R² on the test split's spread of the label: the window's own R² fell wherever its labels spanned less
            # (remaining life known first of the gearboxes that failed soon: R² 0.70 for errors of 13 days, half
            # the test split's 22), and said retrain of a model doing better than it did on its test split.
            test_r2 = reference.test_r2
            drop = (metrics["rmse"] ** 2 - value ** 2) / reference.spread
            if drop > thresholds.metric_drop and chance < thresholds.p_value:
                out["flags"] = [f"rmse {metrics['rmse']:,.4g} vs {value:,.4g} on the test split (r2 "
                                f"{test_r2 - drop:.3f} vs {test_r2:.3f} on the test split's spread of the label; p "
                                f"{chance:.1g}; MAE {metrics['mae']:,.4g}, in the label's units)"]
        elif value - metrics[name] > thresholds.metric_drop and chance < thresholds.p_value:
            p = f" (p {chance:.1g})" if name in chances else ""
            out["flags"] = [f"{name} {metrics[name]:.3f} vs {value:.3f} on the test split{p}"]
    out["flags"] += flags
    return out


def _errors_chance(rmse: float, test_rmse: float, rows: int, test_rows: Optional[int]) -> float:
    """How likely errors as large as the window's (`rmse` over `rows` labels) are from a model erring as on its test
    split: one-sided F test of the two mean squared errors (chi-squared where the test rows are not known), as if
    the errors were normal. Heavier tails make it readier to flag; `metric_drop` must be crossed as well."""
    from scipy.stats import chi2, f

    ratio = (rmse / test_rmse) ** 2
    return float(f.sf(ratio, rows, test_rows) if test_rows else chi2.sf(ratio * rows, rows))


class Reference(NamedTuple):
    """The test figure a window's realised metric is judged against (`reference_metric`); a plain (name, value)
    tuple reads as one. A regression's RMSE carries its test R², the label's variance on the test split (`spread`,
    which turns an RMSE into an R² on it) and the test rows (the F test's second degrees of freedom)."""
    name: str
    value: float
    test_r2: Optional[float] = None
    spread: Optional[float] = None
    test_rows: Optional[int] = None


def reference_metric(task: str, metrics: dict, test_rows: Optional[int] = None) -> Optional[Reference]:
    """The test metric the realised one is compared with: accuracy for a classifier; a regression's RMSE, or, of a
    bundle without it or of a perfect fit, its R². Both are judged against `metric_drop` as an R² is."""
    test = metrics.get("test") or {}
    value = test.get("accuracy" if task == "classification" else "r2")
    if not (isinstance(value, (int, float)) and np.isfinite(value)):
        return None
    rmse = test.get("rmse")
    if task != "classification" and isinstance(rmse, (int, float)) and 0 < rmse < np.inf and value < 1:
        return Reference("rmse", float(rmse), float(value), float(rmse) ** 2 / (1 - float(value)), test_rows)
    return Reference("accuracy" if task == "classification" else "r2", float(value))


def reference_auc(metrics: dict) -> Optional[float]:
    """A binary model's test ROC-AUC (metrics.json), which the realised one is compared with; None without it."""
    value = (metrics.get("test") or {}).get("auc")
    return float(value) if isinstance(value, (int, float)) and np.isfinite(value) else None


def crossed(w: dict) -> list[str]:
    """What crossed a threshold in one judged window (`window_stats`): features with their flags, prediction drift,
    the realised metrics' drops."""
    what = [f"{name} ({'; '.join(w['features'][name]['flags'])})" for name in w["flagged"]]
    what += [f"prediction drift ({'; '.join(w['prediction']['flags'])})"] if w["prediction"]["flags"] else []
    return what + w.get("metrics", {}).get("flags", [])


def window_line(w: dict, reference, decision: Optional[dict], min_rows: int, version: Optional[str] = None) -> str:
    """A window's line: its rows, what drifted (features, the predictions, a metric below the test split's) or
    "nothing flagged", and its realised metric. It said "nothing flagged" above a retrain for prediction drift."""
    flagged = list(w["flagged"]) + (["predictions"] if w["prediction"]["flags"] else [])
    flagged += [f"{flag.split(' ', 1)[0]} below target" if " its cut-off was chosen for " in flag else
                "rmse rise" if flag.startswith("rmse ") else
                f"{flag.split(' vs ', 1)[0].rsplit(' ', 1)[0]} drop" if " vs " in flag.split(" on ", 1)[0] else  # a class
                f"{flag.split(' ', 1)[0]} drop" for flag in (w.get("metrics") or {}).get("flags", [])]
    metric, m = "", w.get("metrics") or {}
    reference = Reference(*reference) if reference else None
    if reference and reference.name == "rmse" and "rmse" in m:
        metric = f"; rmse {m['rmse']:,.4g} on {m['n']} labels ({reference.value:,.4g} on the test split)"
    elif reference and reference.name in m:
        metric = f"; {reference.name} {m[reference.name]:.3f} on {m['n']} labels"
    if (auc := m.get("auc")) is not None:
        metric += f"; auc {auc:.3f}" + (f" on the {m['auc_rows']} of {m['n']} labelled rows logged with probabilities"
                                        if m["auc_rows"] < m["n"] else "")
    measure = (decision or {}).get("measure", "recall")      # a min_precision rule's line shows its precision
    if m.get(f"positive_{measure}") is not None:
        metric += f"; {measure} of {decision['positive']!r} {m[f'positive_{measure}']:.3f} ({decision['rule']})"
    if m.get("positive_rate") is not None and (decision.get("test") or {}).get("positive_rate") is not None:
        metric += (f"; {decision['positive']!r} in {m['positive_rate']:.1%} of labels ("
                   f"{decision['test']['positive_rate']:.1%} on the test split)")
    if (short := m.get("shortfall")) and not short["flagged"]:
        metric += (f"; its {short['measure']} of {decision['positive']!r} {short['value']:.3f} ({short['hits']} of "
                   f"{short['of']}) is short of {short['bar']:.3g} within chance (p {short['p']:.2g})")
    if m and 0 < m["n"] < min_rows and w["judged"]:
        metric += f" ({m['n']} labels, under min_rows {min_rows}: not judged)"
    served = [v for v in (w.get("versions") or {}) if v]
    if version and (w.get("versions") or {}) and version not in w["versions"]:     # the note alone said it, for all
        metric += (f" (served by {', '.join(served)} alone, not {version})" if served else
                   f" (no row of it logged its version: its labels are not judged as {version}'s)")
    return (f"[monitor] {w['start']}: {w['n']:,} rows, " + ("flagged: " + ", ".join(flagged) if flagged else
                                                          "nothing flagged") + metric
            + ("" if w["judged"] else f" (under min_rows {min_rows}: not judged)"))
