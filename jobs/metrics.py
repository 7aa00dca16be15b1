"""Evaluation metrics in plain NumPy: the same functions score validation epochs, the test split and the bundle."""
from __future__ import annotations

import numpy as np


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, loss: float | None = None,
                           prefix: str = "") -> dict:
    """Accuracy, macro precision/recall/F1, ROC-AUC (binary), confusion matrix. `proba` is (n, classes)."""
    n_classes = proba.shape[1]
    y_pred = proba.argmax(axis=1)
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    tp = np.diag(cm).astype(np.float64)
    predicted, actual = cm.sum(axis=0), cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=(precision + recall) > 0)
    present = actual > 0  # macro averages over the classes that occur, as scikit-learn warns and does
    out = {"accuracy": float(tp.sum() / max(len(y_true), 1)),
           "precision": float(precision[present].mean()) if present.any() else 0.0,
           "recall": float(recall[present].mean()) if present.any() else 0.0,
           "f1": float(f1[present].mean()) if present.any() else 0.0}
    if n_classes == 2:
        out["auc"] = roc_auc(y_true, proba[:, 1])
    if loss is not None:
        out["loss"] = float(loss)
    out = {prefix + k: v for k, v in out.items()}
    out[prefix + "confusion_matrix"] = cm.tolist()
    return out


def roc_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Mann-Whitney form of ROC-AUC with average ranks for ties; NaN when only one class is present."""
    pos = y_true == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = ((ends - counts + 1 + ends) / 2.0)[inverse]  # tied scores share their average rank
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray, loss: float | None = None, prefix: str = "") -> dict:
    err = y_pred - y_true
    ss_tot = float(((y_true - y_true.mean()) ** 2).sum()) if len(y_true) else 0.0
    out = {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err ** 2).mean())),
           "r2": float(1.0 - (err ** 2).sum() / ss_tot) if ss_tot > 0 else float("nan")}
    if loss is not None:
        out["loss"] = float(loss)
    return {prefix + k: v for k, v in out.items()}


def scalar_metrics(metrics: dict) -> dict:
    """Metrics fit for a progress line or Ray's reporting (the confusion matrix left out)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
