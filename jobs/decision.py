"""A binary classifier's cut-off (`decision:` in the spec, `jobs.spec.decision`): checked against the label's
classes before training (`check`), chosen on the validation split while the bundle is written (`choose`, from
the staged bundle's own predictions), kept in its preprocessor.json and applied by the one prediction path
(`FittedPreprocessor.decide`, `jobs.fitted.decide`), so evaluation, serving, `predict` and the monitor's
reference answer alike.

The choice is a walk down the validation rows sorted by the positive class's probability: each distinct
probability is a candidate cut-off, with the recall, precision and F1 of answering positive at and above it.
A chosen cut-off sits halfway between the lowest probability it takes in and the next lower one (or 0), so a
new row scored like one of the validation rows gets the answer that row got. Of the cut-offs a rule allows it
takes the highest that gives what the rule asks for: a lower one would add false alarms and no more recall.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from jobs.fitted import canonical
from jobs.infer import DataError
from jobs.spec import JobSpec
from jobs.spec.decision import DecisionSpec

# Fewer validation rows of the positive class than this: the chosen cut-off is said to be a rough one.
FEW_POSITIVES = 30


# YAML 1.1 (PyYAML) reads an unquoted yes/no/on/off/y/n as true/false: `positive: yes` arrives as True.
_SPELLED = {True: ("true", "yes", "y", "on"), False: ("false", "no", "n", "off")}


def is_positive(value: Any, wanted: Any) -> bool:
    """Whether a label value is the class `decision.positive` names: the same category (`canonical`: 1, 1.0 and
    "1" are one), or the same text ignoring case, or, for a YAML true/false given where the label holds text,
    the word YAML read as it (yes, on, y, true)."""
    if canonical(value) == canonical(wanted) or str(value).lower() == str(wanted).lower():
        return True
    return isinstance(wanted, bool) and isinstance(value, str) and value.strip().lower() in _SPELLED[wanted]


def positive_index(decision: DecisionSpec, classes: list, train_counts: dict, label: str = "", shown: str = "",
                   fix: str = "") -> int:
    """The position of `decision.positive` in `classes` (the values of label `label`); by default the rarer class
    of the train split (`train_counts`: {str(class): rows}), the second on a tie. DataError naming the classes
    when the label is not binary or the class is not one of them; `shown` describes the classes instead (where
    `validate` read them from) and `fix` replaces the advice for a label that is not binary."""
    named = f"label {label!r}" if label else "the label"
    shown = shown or f"{len(classes)} classes ({', '.join(map(repr, classes[:10]))})"
    if len(classes) != 2:
        raise DataError(f"decision: sets a cut-off between two classes, and {named} has {shown}; "
                        f"{fix or 'remove the decision section for this label'}")
    if decision.positive is None:
        counts = [train_counts.get(str(c), 0) for c in classes]
        return 0 if counts[0] < counts[1] else 1
    found = [i for i, c in enumerate(classes) if is_positive(c, decision.positive)]
    if len(found) != 1:
        raise DataError(f"decision.positive: {decision.positive!r} is not a class of {named}, which has {shown}; "
                        f"give one of them{yaml_hint(decision.positive)}")
    return found[0]


def yaml_hint(positive: Any) -> str:
    """For a `positive` YAML read as true/false: that it did, and how to write the word itself."""
    return (" (YAML reads an unquoted yes, no, on or off as true or false: quote a class written so, e.g. "
            "positive: 'yes')" if isinstance(positive, bool) else "")


def check(spec: JobSpec, classes: Optional[list], class_counts: dict) -> Optional[int]:
    """Before training: the spec's decision against the label's classes (the positive class's index), and a
    validation split that holds the positive class when the cut-off is chosen on it. None without a decision."""
    d = spec.decision
    if d is None:
        return None
    if classes is None:
        raise DataError(f"decision: sets a cut-off between two classes, and label {spec.data.label!r} was read as a "
                        "quantity (regression); remove the decision section, or set data.task: classification")
    i = positive_index(d, classes, class_counts.get("train") or {}, spec.data.label)
    val = (class_counts.get("val") or {}).get(str(classes[i]), 0)
    if d.chosen_on_validation and not val:
        raise DataError(f"decision: {d.rule} is chosen on the validation split, which holds no row of the "
                        f"positive class {classes[i]!r}; raise data.split.val, add rows, or give a fixed "
                        "decision.threshold")
    return i


def curve(y: np.ndarray, p: np.ndarray) -> dict[str, np.ndarray]:
    """Every candidate cut-off over rows `y` (1: positive) scored `p`, highest first: the cut-off, and the
    recall, precision and F1 of answering positive at and above it."""
    order = np.argsort(-p, kind="stable")
    ps, ys = p[order], y[order].astype(np.float64)
    ends = np.r_[ps[1:] != ps[:-1], True]             # the last row of each run of equal probabilities
    tp, taken = np.cumsum(ys)[ends], (np.arange(len(ps)) + 1.0)[ends]
    scores = ps[ends]
    positives = max(float(ys.sum()), 1.0)
    return {"cut": (scores + np.r_[scores[1:], 0.0]) / 2, "recall": tp / positives, "precision": tp / taken,
            "f1": 2 * tp / (taken + positives)}


def choose(decision: DecisionSpec, classes: list, positive: int, y: np.ndarray, proba: np.ndarray) -> dict:
    """The cut-off `decision` asks for, from the validation rows' class ids `y` and probabilities `proba`, and
    what it gives there; "note" says what the rule could not meet, or that few positive rows chose it."""
    is_pos, p = (np.asarray(y) == positive).astype(np.int64), np.asarray(proba, dtype=np.float64)[:, positive]
    n_pos = int(is_pos.sum())
    if not np.isfinite(p).all():
        raise DataError(f"decision: {int((~np.isfinite(p)).sum())} of the {len(p)} validation rows got no finite "
                        "probability from the trained model, so no cut-off can be chosen; the model diverged: "
                        "lower train.lr and train again")
    notes = []
    if not decision.chosen_on_validation:
        threshold = float(decision.threshold)
    elif not n_pos:
        raise DataError(f"decision: {decision.rule} is chosen on the validation split, which holds no row of "
                        f"{classes[positive]!r}; raise data.split.val, add rows, or give a fixed decision.threshold")
    else:
        c = curve(is_pos, p)
        if decision.threshold == "best_f1":
            k = int(np.argmax(c["f1"]))
        elif decision.min_recall is not None:
            k = int(np.argmax(c["recall"] >= decision.min_recall - 1e-12))    # the highest cut that keeps it
        else:
            meets = np.flatnonzero(c["precision"] >= decision.min_precision - 1e-12)
            if len(meets):
                # The most recall the precision allows, at the highest cut that gives it: lower cuts with the same
                # recall only add false alarms.
                recall = c["recall"][meets]
                k = int(meets[np.argmax(recall >= recall.max() - 1e-12)])
            else:
                k = int(np.argmax(c["precision"]))
                notes.append(f"no cut-off reaches a precision of {decision.min_precision:g} on the validation "
                             f"split; the one with the highest precision ({c['precision'][k]:.3f}) is used")
        threshold = float(c["cut"][k])
        if n_pos < FEW_POSITIVES:
            notes.append(f"chosen on {n_pos} validation row(s) of {classes[positive]!r}: a rough cut-off; more rows "
                         "(or a larger data.split.val) steady it")
    answered = p >= threshold
    tp = int((answered & (is_pos == 1)).sum())
    val = {"rows": int(len(p)), "positives": n_pos, "recall": tp / n_pos if n_pos else float("nan"),
           "precision": tp / int(answered.sum()) if answered.any() else float("nan")}
    target = ({"measure": "recall", "target": decision.min_recall} if decision.min_recall is not None else
              {"measure": "precision", "target": decision.min_precision} if decision.min_precision is not None else {})
    return {"positive": classes[positive], "positive_index": positive, "threshold": threshold,
            "rule": decision.rule, **target, "val": val, **({"note": "; ".join(notes)} if notes else {})}


def shortfall(cm: Any, d: Optional[dict]) -> Optional[tuple[str, float, int, int]]:
    """(measure, value, hits, of) when the positive class's recall or precision in confusion matrix `cm` (rows:
    true class) is below the target the cut-off `d` was chosen for (`min_recall`, `min_precision`); None when it
    meets it, or the cut-off has no target, or there is nothing to measure."""
    from jobs.metrics import per_class_scores

    if not d or "target" not in d or np.shape(cm) != (2, 2):
        return None
    cm, i = np.asarray(cm), int(d["positive_index"])
    of = int(cm[i].sum() if d["measure"] == "recall" else cm[:, i].sum())
    precision, recall, _ = per_class_scores(cm)
    value = float((recall if d["measure"] == "recall" else precision)[i])
    return (d["measure"], value, int(cm[i, i]), of) if of and value < float(d["target"]) else None


def shortfall_chance(hit: int, of: int, target: float) -> float:
    """How often a cut-off that truly meets `target` reads `hit` of `of` or fewer on a sample of `of` (the one-sided
    binomial p): at a true recall of 0.9, 22 of 25 or fewer in 46 % of samples; 17 of 25 in under 1 %."""
    from scipy.stats import binom
    return float(binom.cdf(hit, of, min(max(float(target), 0.0), 1.0)))


def cut_text(d: dict, how: str = "") -> str:
    """The cut-off as every message says it: "P('yes') >= 0.312 (min_recall 0.9)"; `how` replaces the rule."""
    return f"P({d['positive']!r}) >= {float(d['threshold']):.6g} ({how or d['rule']})"


def change(before: Optional[dict], after: Optional[dict]) -> Optional[str]:
    """What a served model's update does to its answers' cut-off (schema.json's label.decision, None for the
    likelier class): e.g. "changes its cut-off: P('x') >= 0.15 (min_recall 0.9) → P('x') >= 0.5 (threshold 0.5)";
    None when it stays."""
    same = ("positive", "threshold", "rule")
    if before == after or (before and after and all(before.get(k) == after.get(k) for k in same)):
        return None
    if before is None:
        return f"answers by the cut-off {cut_text(after)} from now on (it answered by the likelier class)"
    if after is None:
        return f"answers by the likelier class from now on (it answered by the cut-off {cut_text(before)})"
    return f"changes its cut-off: {cut_text(before)} → {cut_text(after)}"


def summary(d: dict) -> str:
    """One line: what the bundle answers and why ("'yes' when P('yes') >= 0.312 (min_recall 0.9 ...)")."""
    val = d.get("val") or {}
    how = d["rule"] + (" on the validation split" if not d["rule"].startswith("threshold") else "")
    shown = lambda x: "-" if x != x else f"{x:.3f}"    # noqa: E731 - NaN: no positive row, or none answered
    if not val.get("positives"):
        how += (f"; the validation split's {val.get('rows', 0)} rows hold none of {d['positive']!r}: nothing to "
                "measure it on")
    else:
        how += (f": recall {shown(val['recall'])}, precision {shown(val.get('precision', float('nan')))}; the "
                f"validation split's {val.get('rows', 0)} rows hold {val['positives']} {d['positive']!r}")
    return f"{d['positive']!r} when {cut_text(d, how)}"
