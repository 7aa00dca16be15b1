"""The validation metrics a spec can name, and which direction is better for each."""
from __future__ import annotations

from typing import Optional

CLASSIFICATION_METRICS = ("val_loss", "val_accuracy", "val_precision", "val_recall", "val_f1", "val_auc")
REGRESSION_METRICS = ("val_loss", "val_mae", "val_rmse", "val_r2")
# Metrics where bigger is better; everything else is minimised.
MAXIMISED_METRICS = {"val_accuracy", "val_precision", "val_recall", "val_f1", "val_auc", "val_r2"}


def metric_mode(metric: str) -> str:
    return "max" if metric in MAXIMISED_METRICS else "min"


def mode_problem(metric: str, mode: Optional[str], field: str, metric_said: Optional[str] = None) -> Optional[str]:
    """Every metric trainyard reports has a direction; a `mode` against it would keep the worst model. What is
    wrong, if anything; `metric_said`: how to name the metric (default: its name)."""
    if mode is None or mode == metric_mode(metric):
        return None
    better = "bigger" if metric_mode(metric) == "max" else "smaller"
    return (f"{field} is {mode} but {metric_said or metric} is better when {better} ({metric_mode(metric)}), so "
            f"the worst epochs and trials would win; remove {field} (it follows the metric) or set it to "
            f"{metric_mode(metric)}")
