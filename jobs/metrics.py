"""Evaluation metrics in plain NumPy: the same functions score validation epochs, the test split and the bundle.

They compute exactly the metrics of the registry (`jobs.spec.METRICS`) that apply to the task and the label
(val_auc: binary labels only), under the name without `val_` unless `prefix` adds it back; a registered
metric with no formula here fails loudly (KeyError) the first time it is computed. tests/test_metrics.py
holds every formula to scikit-learn's on random inputs.

Why not scikit-learn itself: these run in every Ray Train worker each epoch and in the bundle's evaluation,
and scikit-learn (with SciPy) is a large dependency of the training and serving images for a dozen lines of
arithmetic; so it is a test-only dependency, the oracle these are checked against.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np

from jobs.spec import CLASSIFICATION, METRICS, REGRESSION


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, loss: Optional[float] = None,
                           prefix: str = "", y_pred: Optional[np.ndarray] = None) -> dict:
    """Accuracy, macro precision/recall/F1, ROC-AUC (binary), confusion matrix. `proba` is (n, classes);
    `y_true` holds class ids (column positions of `proba`); `y_pred` the answered ids (default: the likelier
    class; a bundle with a cut-off answers by it, `jobs.decision`)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    n_classes = proba.shape[1]
    y_pred = proba.argmax(axis=1) if y_pred is None else np.asarray(y_pred, dtype=np.int64)
    cm = confusion_matrix(y_true, y_pred, n_classes)
    tp = np.diag(cm).astype(np.float64)
    predicted, actual = cm.sum(axis=0).astype(np.float64), cm.sum(axis=1).astype(np.float64)
    precision, recall, f1 = per_class_scores(cm)
    # Macro averages count every class that occurs in the labels or in the predictions, as scikit-learn does: a
    # class predicted but absent from this split (a rare one the split kept in train) counts with precision 0,
    # so a model spraying it is not rewarded for it.
    occurs = (actual > 0) | (predicted > 0)

    def macro(per_class: np.ndarray) -> float:
        return float(per_class[occurs].mean()) if occurs.any() else 0.0

    formulas: dict[str, Callable[[], float]] = {
        "accuracy": lambda: float(tp.sum() / max(len(y_true), 1)),
        "precision": lambda: macro(precision),
        "recall": lambda: macro(recall),
        "f1": lambda: macro(f1),
        "auc": lambda: roc_auc(y_true, proba[:, 1]),
    }
    out = _registered(CLASSIFICATION, n_classes, formulas, loss, prefix)
    out[prefix + "confusion_matrix"] = cm.tolist()
    return out


def per_class_scores(cm) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each class's precision, recall and F1 from a confusion matrix (rows = true class); 0 where undefined."""
    cm = np.asarray(cm)
    tp = np.diag(cm).astype(np.float64)
    predicted, actual = cm.sum(axis=0).astype(np.float64), cm.sum(axis=1).astype(np.float64)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    # 2tp / (2tp + fp + fn): the harmonic mean of precision and recall, and 0 (not undefined) when tp is 0.
    f1 = np.divide(2 * tp, predicted + actual, out=np.zeros_like(tp), where=(predicted + actual) > 0)
    return precision, recall, f1


# Classes shown one line each (`train`'s per-class lines, `evaluate`'s recall rows): the ones with the most rows.
CLASSES_SHOWN = 10


def classes_shown(rows: list[int], limit: int = CLASSES_SHOWN) -> tuple[list[int], list[int]]:
    """(the indices of the `limit` classes with the most rows, most first; the others, fewest rows last). With 37
    classes, the first ten in the bundle's order were shown, or none, and nothing said of the rest."""
    order = sorted(range(len(rows)), key=lambda i: -rows[i])
    return order[:limit], order[limit:]


def rest_line(names: list, rest: list[int], rows: list[int], recall: Optional[list[float]] = None,
              lowest: int = 5) -> str:
    """"... 27 more class(es), 312 row(s) in all, not shown" for the classes `classes_shown` left out; with
    `recall`, the lowest among them ('Toys' 0.0000 (4 rows), ...), where a long tail's failures hide."""
    said = f"[evaluate] ... {len(rest)} more class(es), {sum(rows[i] for i in rest):,} row(s) in all, not shown"
    if recall is not None:
        worst = sorted((i for i in rest if rows[i]), key=lambda i: (recall[i], -rows[i]))[:lowest]
        if worst:
            said += "; the lowest recall among them: " + ", ".join(
                f"{names[i]!r} {recall[i]:.4f} ({rows[i]} rows)" for i in worst)
    return said


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) counts, rows = true class, columns = predicted; absent classes keep their row."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def roc_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Mann-Whitney form of ROC-AUC with average ranks for ties; NaN when only one class is present (where
    scikit-learn raises: an epoch's metrics must not fail the run)."""
    pos = np.asarray(y_true) == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = ((ends - counts + 1 + ends) / 2.0)[inverse]  # tied scores share their average rank
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def binned_auc(negatives, positives) -> float:
    """ROC-AUC from counts of the negatives' and the positives' scores on the same ordered bins (the monitor's
    mergeable summary of logged probabilities): pairs within one bin count as ties (a half); NaN without both."""
    neg, pos = np.asarray(negatives, dtype=np.float64), np.asarray(positives, dtype=np.float64)
    n_neg, n_pos = neg.sum(), pos.sum()
    if n_neg == 0 or n_pos == 0:
        return float("nan")
    below = np.cumsum(neg) - neg            # negatives in the lower bins
    return float((pos * (below + 0.5 * neg)).sum() / (n_neg * n_pos))


def auc_shortfall_chance(reference: float, auc: float, positives: int, negatives: int) -> float:
    """How often a model whose true ROC-AUC is `reference` reads `auc` or lower on `positives` and `negatives`
    (one-sided, normal approximation with Hanley and McNeil's standard error at `reference`): at a 10 % base rate
    a model of 0.85 read 0.80 or lower in a fifth of 100-row windows, which a fixed drop alone called a retrain."""
    from scipy.stats import norm

    a = min(max(float(reference), 1e-6), 1 - 1e-6)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    variance = (a * (1 - a) + (positives - 1) * (q1 - a * a) + (negatives - 1) * (q2 - a * a)) / (positives * negatives)
    return float(norm.cdf((auc - a) / math.sqrt(max(variance, 1e-12))))


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray, loss: Optional[float] = None,
                       prefix: str = "") -> dict:
    """MAE, RMSE and R² (NaN for no rows)."""
    y_true, y_pred = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    err = y_pred - y_true
    ss_res = float((err ** 2).sum())
    ss_tot = float(((y_true - y_true.mean()) ** 2).sum()) if len(y_true) else 0.0

    def r2() -> float:
        if ss_tot > 0:
            return 1.0 - ss_res / ss_tot
        # A constant target leaves no variance to explain: 1 for exact predictions, else 0 (no better than
        # its mean), as scikit-learn reports it, so early stopping and the search still compare numbers.
        return 1.0 if ss_res == 0 else 0.0

    formulas: dict[str, Callable[[], float]] = {
        "mae": lambda: float(np.abs(err).mean()),
        "rmse": lambda: float(np.sqrt((err ** 2).mean())),
        "r2": r2,
    }
    if not len(y_true):
        formulas = {k: (lambda: float("nan")) for k in formulas}
    return _registered(REGRESSION, None, formulas, loss, prefix)


def _registered(task: str, n_classes: Optional[int], formulas: dict[str, Callable[[], float]],
                loss: Optional[float], prefix: str) -> dict:
    """The registry's metrics for this task and label, in registry order, then the loss when given."""
    out = {prefix + m.key: formulas[m.key]() for m in METRICS.values()
           if m.applies(task, n_classes) and m.key != "loss"}
    if loss is not None:
        out[prefix + "loss"] = float(loss)
    return out


def scalar_metrics(metrics: dict) -> dict:
    """Metrics fit for a progress line or Ray's reporting (the confusion matrix left out)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
