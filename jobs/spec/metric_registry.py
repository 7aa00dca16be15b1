"""The one registry of the validation metrics a spec can name (`train.early_stop.metric`, `tune.metric`).

Each metric says which tasks it applies to, which direction is better, and whether it needs a binary label.
`jobs.metrics` computes exactly these (tests/test_metrics.py holds it to that), under the key without the
`val_` prefix; the training loop reports them with it. The spec's validation, early stopping's mode, the
tuning search and evaluation all read them from here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

CLASSIFICATION, REGRESSION = "classification", "regression"
VAL_PREFIX = "val_"


@dataclass(frozen=True)
class Metric:
    name: str                   # as a spec names it and the training loop reports it (val_...)
    tasks: tuple[str, ...]      # the tasks it is computed for
    mode: str                   # "max": bigger is better; "min": smaller is better
    about: str                  # what it measures, in a phrase
    binary_only: bool = False   # needs a label with exactly two classes

    @property
    def key(self) -> str:
        """The name `jobs.metrics` computes it under (the test split's metrics use it too)."""
        return self.name.removeprefix(VAL_PREFIX)

    def applies(self, task: str, n_classes: Optional[int] = None) -> bool:
        """Whether it is computed for `task`; `n_classes`: the label's class count, when known."""
        return task in self.tasks and not (self.binary_only and n_classes is not None and n_classes != 2)


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("val_loss", (CLASSIFICATION, REGRESSION), "min", "the training loss on the validation split"),
    Metric("val_accuracy", (CLASSIFICATION,), "max", "the fraction of rows whose class is predicted right"),
    # Macro averages (every class counts the same) over the classes in the labels or the predictions.
    Metric("val_precision", (CLASSIFICATION,), "max", "macro-averaged precision"),
    Metric("val_recall", (CLASSIFICATION,), "max", "macro-averaged recall"),
    Metric("val_f1", (CLASSIFICATION,), "max", "macro-averaged F1"),
    Metric("val_auc", (CLASSIFICATION,), "max", "ROC-AUC of the second class's probability", binary_only=True),
    Metric("val_mae", (REGRESSION,), "min", "mean absolute error"),
    Metric("val_rmse", (REGRESSION,), "min", "root mean squared error"),
    Metric("val_r2", (REGRESSION,), "max", "coefficient of determination (R²)"),
)}


def metrics_for(task: str, n_classes: Optional[int] = None) -> tuple[str, ...]:
    """The metrics that apply to `task` (and to a label of `n_classes` classes, when known), in registry order."""
    return tuple(name for name, m in METRICS.items() if m.applies(task, n_classes))


CLASSIFICATION_METRICS = metrics_for(CLASSIFICATION)
REGRESSION_METRICS = metrics_for(REGRESSION)
MAXIMISED_METRICS = frozenset(name for name, m in METRICS.items() if m.mode == "max")


def metric_mode(metric: str) -> str:
    """"max" when bigger is better, else "min"."""
    return METRICS[metric].mode


def best_key(metric: str) -> str:
    """The reported column holding a run's best value of `metric` so far: what early stopping keeps, and what
    Tune's scheduler and searcher rank trials by (a trial is judged by the epoch its bundle would hold)."""
    return f"best_{metric}"


def unknown_metric_problem(metric: str) -> Optional[str]:
    if metric in METRICS:
        return None
    return f"unknown metric {metric!r}; use one of {', '.join(sorted(METRICS))}"


def mode_problem(metric: str, mode: Optional[str], field: str, metric_said: Optional[str] = None) -> Optional[str]:
    """Every metric trainyard reports has a direction; a `mode` against it would keep the worst model. What is
    wrong, if anything; `metric_said`: how to name the metric (default: its name)."""
    if mode is None or mode == metric_mode(metric):
        return None
    better = "bigger" if metric_mode(metric) == "max" else "smaller"
    return (f"{field} is {mode} but {metric_said or metric} is better when {better} ({metric_mode(metric)}), so "
            f"the worst epochs and trials would win; remove {field} (it follows the metric) or set it to "
            f"{metric_mode(metric)}")


def shown_values(values: Sequence, complete: bool = True) -> str:
    """The first five of a label's values for a message, with "..." where there are more (or, `complete`
    False, where only the first ones were read)."""
    shown = (f"{v:.6g}" if isinstance(v, float) and not v.is_integer() else repr(v)     # 86.093, not 86.0929896...
             for v in list(values)[:5])
    return ", ".join(shown) + (", ..." if len(values) > 5 or not complete else "")


def task_problem(metric: str, field: str, task: Optional[str], classes: Optional[Sequence] = None, *,
                 label: Optional[str] = None, said: Optional[str] = None, all_classes: bool = True) -> Optional[str]:
    """What is wrong with ranking by `metric` for this task and label, if anything (None when the task is not
    known yet). `field`: the spec field to change; `said`: where the metric came from (default `field`);
    `classes`: the label's classes, when known (val_auc needs exactly two); `all_classes`: False when
    `classes` are only the first of more."""
    if task is None or metric not in METRICS:
        return None
    said = said or field
    m = METRICS[metric]
    n = len(classes) if classes is not None else None
    if task not in m.tasks:
        return (f"{said} is {metric!r}, a {m.tasks[0]} metric, but the task is {task}; set {field} to one of "
                f"{', '.join(metrics_for(task, n))}")
    if not m.applies(task, n if all_classes else max(n or 0, 3)):
        count = f"{n} classes" if all_classes else f"more than {n - 1} distinct values"
        shown = shown_values(list(classes), all_classes)
        return (f"{said} is {metric!r}, which needs a binary label, but "
                f"{'label ' + repr(label) if label else 'the label'} has {count} ({shown}); set {field} to one of "
                f"{', '.join(metrics_for(task, 3))} (precision, recall and F1 are macro averages over the classes)")
    return None


def train_task_problems(loss: str, class_weight: str, task: Optional[str], said: str = "") -> list[str]:
    """The train settings that only one task uses, given for the other (they were dropped without a word:
    `class_weight: balanced` on a regression, `loss: mse` on classes). `said`: why the task is what it is,
    appended to each line (e.g. where it was inferred from)."""
    if task is None:
        return []
    problems = []
    if task == REGRESSION and class_weight != "none":
        problems.append(f"train.class_weight is {class_weight!r}, which weighs classes, but the task is regression; "
                        "remove it")
    wanted = {CLASSIFICATION: ("auto", "cross_entropy"), REGRESSION: ("auto", "mse", "huber")}[task]
    if loss not in wanted:
        problems.append(f"train.loss is {loss!r}, a loss for {REGRESSION if task == CLASSIFICATION else CLASSIFICATION}"
                        f", but the task is {task}; set it to {' or '.join(wanted)}")
    return [p + said for p in problems]
