"""jobs.metrics against scikit-learn (the oracle, a test-only dependency) on random inputs, and the metric
registry: every metric a spec can name is computed, and nothing computed is unregistered. No Ray needed."""
import math

import numpy as np
import pytest
from sklearn import metrics as SK

from jobs import metrics as M
from jobs.spec import (CLASSIFICATION_METRICS, MAXIMISED_METRICS, METRICS, REGRESSION_METRICS, SpecError, best_key,
                       metric_mode, metrics_for, validate_spec)


def _proba(rng, n, n_classes, predict=None):
    """Random class probabilities; `predict`: the classes argmax may land on (others get less mass)."""
    p = rng.dirichlet(np.ones(n_classes), size=n)
    if predict is not None:
        boost = np.zeros(n_classes)
        boost[list(predict)] = 2.0
        p = (p + boost[None, :] * rng.random((n, 1))) / (1 + 2.0)
    return p


def _close(ours, theirs):
    return (math.isnan(ours) and math.isnan(theirs)) or math.isclose(ours, theirs, rel_tol=1e-9, abs_tol=1e-12)


def _check_classification(y_true, proba):
    n_classes = proba.shape[1]
    y_pred = proba.argmax(axis=1)
    ours = M.classification_metrics(y_true, proba, loss=0.5, prefix="val_")
    expected = {
        "val_accuracy": SK.accuracy_score(y_true, y_pred),
        # labels=None: scikit-learn's macro average runs over the labels in y_true ∪ y_pred.
        "val_precision": SK.precision_score(y_true, y_pred, average="macro", zero_division=0),
        "val_recall": SK.recall_score(y_true, y_pred, average="macro", zero_division=0),
        "val_f1": SK.f1_score(y_true, y_pred, average="macro", zero_division=0),
        "val_loss": 0.5,
    }
    if n_classes == 2:
        both = len(set(y_true.tolist())) == 2
        expected["val_auc"] = SK.roc_auc_score(y_true, proba[:, 1]) if both else float("nan")
    for key, value in expected.items():
        assert _close(ours[key], value), (key, ours[key], value, y_true.tolist(), y_pred.tolist())
    assert set(M.scalar_metrics(ours)) == set(expected)
    assert ours["val_confusion_matrix"] == SK.confusion_matrix(y_true, y_pred, labels=range(n_classes)).tolist()


def test_the_issue_example_macro_averages_over_labels_and_predictions():
    # Class 2 is predicted but absent from the labels: it counts, with precision 0 (ours used to skip it: 0.833).
    proba = np.eye(3)[[0, 2, 1, 1]]
    ours = M.classification_metrics(np.array([0, 0, 1, 1]), proba)
    assert round(ours["f1"], 3) == 0.556 and round(ours["precision"], 3) == 0.667 and ours["recall"] == 0.5


@pytest.mark.parametrize("n_classes", [2, 3, 5])
def test_classification_metrics_match_scikit_learn_on_random_inputs(n_classes):
    rng = np.random.default_rng(n_classes)
    for _ in range(80):
        n = int(rng.integers(1, 60))
        # Labels drawn from a random subset of the classes (absent classes), predictions sometimes steered to
        # classes the labels lack, or to one class only.
        present = rng.choice(n_classes, size=int(rng.integers(1, n_classes + 1)), replace=False)
        y_true = rng.choice(present, size=n)
        steer = [None, rng.choice(n_classes, size=int(rng.integers(1, n_classes + 1)), replace=False),
                 [int(rng.integers(n_classes))]][int(rng.integers(3))]
        _check_classification(y_true, _proba(rng, n, n_classes, steer))


def test_auc_with_tied_scores_matches_scikit_learn():
    rng = np.random.default_rng(7)
    for _ in range(100):
        n = int(rng.integers(2, 80))
        y_true = rng.integers(0, 2, size=n)
        if len(set(y_true.tolist())) < 2:
            y_true[0] = 1 - y_true[-1]
        score = rng.integers(0, 4, size=n) / 4.0                  # few distinct scores: many ties
        assert _close(M.roc_auc(y_true, score), SK.roc_auc_score(y_true, score))


def test_auc_from_binned_counts_is_the_auc_of_the_binned_scores():
    """The monitor's realised AUC comes from counts per bin (mergeable across files): exactly the AUC of scores
    rounded to their bin (pairs within one bin are ties), for any bins; NaN with one class."""
    rng = np.random.default_rng(11)
    for _ in range(100):
        n, bins = int(rng.integers(2, 200)), int(rng.integers(1, 30))
        y_true = rng.integers(0, 2, size=n)
        y_true[0], y_true[-1] = 0, 1
        binned = rng.integers(0, bins, size=n)
        counts = [np.bincount(binned[y_true == c], minlength=bins) for c in (0, 1)]
        assert _close(M.binned_auc(*counts), SK.roc_auc_score(y_true, binned))
    assert math.isnan(M.binned_auc([0, 0], [3, 1])) and math.isnan(M.binned_auc([2, 0], [0, 0]))


def test_the_chance_of_an_auc_shortfall_is_that_of_sampling_or_a_little_more():
    """The monitor flags a realised AUC below the test split's only beyond chance: Hanley and McNeil's p against
    the share of samples of a model of AUC 0.85 (binormal) reading that low; their variance is the cautious one
    for such scores at these base rates (a little too large: fewer false alarms; a review found 1.4 % at p < 0.01
    with 50 of each), and a real fall reads p near 0."""
    from scipy.stats import norm

    rng = np.random.default_rng(0)
    shift = norm.ppf(0.85) * np.sqrt(2)                     # two unit normals this far apart: AUC 0.85
    for positives, negatives, low in ((10, 90, 0.80), (30, 270, 0.80)):
        y = np.r_[np.ones(positives), np.zeros(negatives)]
        reads = np.array([M.roc_auc(y, np.r_[rng.normal(shift, 1, positives), rng.normal(0, 1, negatives)])
                          for _ in range(1000)])
        sampled, said = float(np.mean(reads <= low)), M.auc_shortfall_chance(0.85, low, positives, negatives)
        assert sampled - 0.02 <= said <= sampled + 0.07, (positives, sampled, said)
    assert M.auc_shortfall_chance(0.85, 0.60, 300, 2700) < 1e-10 and M.auc_shortfall_chance(0.85, 0.9, 10, 90) > 0.5


def test_constant_and_degenerate_classification_inputs():
    for n_classes in (2, 4):
        for label in range(n_classes):
            y = np.full(9, label)
            _check_classification(y, np.full((9, n_classes), 1.0 / n_classes))     # argmax: always class 0
            _check_classification(y, np.eye(n_classes)[y])                          # perfect
    assert math.isnan(M.classification_metrics(np.array([1, 1]), np.array([[0.2, 0.8], [0.4, 0.6]]))["auc"])
    empty = M.classification_metrics(np.array([], dtype=np.int64), np.zeros((0, 3)))
    assert (empty["accuracy"], empty["f1"], empty["confusion_matrix"]) == (0.0, 0.0, [[0] * 3] * 3)


def _check_regression(y_true, y_pred):
    ours = M.regression_metrics(y_true, y_pred, loss=1.25, prefix="val_")
    expected = {"val_mae": SK.mean_absolute_error(y_true, y_pred),
                "val_rmse": math.sqrt(SK.mean_squared_error(y_true, y_pred)),
                "val_r2": SK.r2_score(y_true, y_pred) if len(y_true) > 1 else float("nan"), "val_loss": 1.25}
    if len(y_true) == 1:
        # One row: scikit-learn warns and returns NaN; its variance is 0, so ours follows the constant-target rule.
        expected["val_r2"] = 1.0 if y_true[0] == y_pred[0] else 0.0
    for key, value in expected.items():
        assert _close(ours[key], value), (key, ours[key], value)
    assert set(ours) == set(expected)


def test_regression_metrics_match_scikit_learn_on_random_inputs():
    rng = np.random.default_rng(3)
    for _ in range(300):
        n = int(rng.integers(1, 80))
        scale = 10.0 ** rng.integers(-3, 4)
        y_true = rng.normal(size=n) * scale
        y_pred = y_true + rng.normal(size=n) * scale * rng.random()
        _check_regression(y_true, y_pred)


def test_constant_regression_inputs():
    y = np.full(7, 2.5)
    _check_regression(y, y.copy())                                # exact: R² 1
    _check_regression(y, y + np.linspace(-1, 1, 7))               # not: R² 0, as scikit-learn's default
    _check_regression(np.linspace(0, 1, 7), np.full(7, 0.5))      # constant predictions
    assert all(math.isnan(v) for v in M.regression_metrics(np.array([]), np.array([])).values())


# ---------------------------------------------------------------------------------------------- registry
@pytest.mark.parametrize("task, n_classes", [("classification", 2), ("classification", 3), ("regression", None)])
def test_every_registered_metric_is_computed_and_nothing_else(task, n_classes):
    """What a spec may name is what the training loop reports: not one more, not one fewer."""
    rng = np.random.default_rng(0)
    if task == "classification":
        computed = M.classification_metrics(rng.integers(0, n_classes, 20), _proba(rng, 20, n_classes), 0.1, "val_")
    else:
        computed = M.regression_metrics(rng.normal(size=20), rng.normal(size=20), 0.1, "val_")
    assert set(M.scalar_metrics(computed)) == set(metrics_for(task, n_classes))
    assert set(M.scalar_metrics(computed)) <= set(METRICS)
    # The test split's metrics (no loss, no prefix) are the same names without val_.
    if task == "classification":
        test = M.classification_metrics(rng.integers(0, n_classes, 20), _proba(rng, 20, n_classes))
    else:
        test = M.regression_metrics(rng.normal(size=20), rng.normal(size=20))
    assert {"val_" + k for k in M.scalar_metrics(test)} == set(metrics_for(task, n_classes)) - {"val_loss"}


def test_the_lists_modes_and_columns_come_from_the_registry():
    assert CLASSIFICATION_METRICS == ("val_loss", "val_accuracy", "val_precision", "val_recall", "val_f1", "val_auc")
    assert REGRESSION_METRICS == ("val_loss", "val_mae", "val_rmse", "val_r2")
    assert MAXIMISED_METRICS == {"val_accuracy", "val_precision", "val_recall", "val_f1", "val_auc", "val_r2"}
    assert {m: metric_mode(m) for m in ("val_loss", "val_f1", "val_rmse", "val_r2")} == {
        "val_loss": "min", "val_f1": "max", "val_rmse": "min", "val_r2": "max"}
    assert metrics_for("classification", 3) == CLASSIFICATION_METRICS[:-1]          # no val_auc
    assert best_key("val_f1") == "best_val_f1"
    # Early stopping's mode follows the registry when the spec leaves it out.
    spec = validate_spec({"name": "x", "data": {"path": "d", "label": "y"},
                          "train": {"early_stop": {"metric": "val_r2"}}})
    assert spec.train.early_stop.resolved_mode == "max"
    with pytest.raises(SpecError, match="unknown metric 'val_auroc'; use one of " + ", ".join(sorted(METRICS))):
        validate_spec({"name": "x", "data": {"path": "d", "label": "y"}, "tune": {"metric": "val_auroc"}})


def test_the_evaluate_table_says_macro_and_gives_each_class_its_own_precision_and_recall():
    """A credit-risk user read "recall 0.6151" as the share of defaulters caught; it was the macro average, and
    the defaulters' own recall was 10/26 = 0.38 (the walkthrough's test split)."""
    from jobs.pipeline import format_metrics

    cm = [[104, 19], [16, 10]]
    metrics = {"val": {"val_accuracy": 0.9, "val_precision": 0.58, "val_recall": 0.6, "val_f1": 0.59},
               "test": {"accuracy": 114 / 149, "precision": 0.6057, "recall": 0.6151, "f1": 0.6,
                        "confusion_matrix": cm}}
    lines = format_metrics(metrics, [0, 1]).splitlines()
    assert lines[2].startswith("[evaluate] precision (macro)") and lines[3].startswith("[evaluate] recall (macro)")
    assert lines[-2:] == [
        "[evaluate] test class '0': precision 0.8667  recall 0.8455  f1 0.8560  (123 of 149 rows)",
        "[evaluate] test class '1': precision 0.3448  recall 0.3846  f1 0.3636  (26 of 149 rows)"]
    # Many classes (a product catalogue's 37, a long tail): the ten with the most rows a line each, then the rest
    # with their lowest recalls; the matrix in metrics.json, not a 3 KB line. None were shown, and nothing said.
    names = ["Home, Kitchen", "  Books"] + [f"c{i}" for i in range(2, 12)]
    cm = [[0] * 12 for _ in range(12)]
    for i in range(12):
        cm[i][i] = 20 - i if i < 10 else 0          # the two smallest classes never right
        cm[i][(i + 1) % 12] = 2
    many = format_metrics({**metrics, "test": {**metrics["test"], "confusion_matrix": cm}}, names).splitlines()
    assert "[evaluate] test confusion matrix: 12 x 12, in the bundle's metrics.json (test.confusion_matrix: rows " \
           "= true, in the order of schema.json's label.classes)" in many
    per_class = [line for line in many if line.startswith("[evaluate] test class")]
    assert len(per_class) == 10 and per_class[0].startswith("[evaluate] test class 'Home, Kitchen': ")
    assert per_class[1].startswith("[evaluate] test class '  Books': ")
    assert "[evaluate] ... 2 more class(es), 4 row(s) in all, not shown; the lowest recall among them: 'c10' 0.0000 " \
           "(2 rows), 'c11' 0.0000 (2 rows)" in many
    few = format_metrics(metrics, ["Home, Kitchen", "  Books"])
    assert "(rows = true; classes 'Home, Kitchen', '  Books'): [[104, 19], [16, 10]]" in few


def test_a_model_that_predicts_one_class_for_every_row_is_warned_of():
    """A credit search ranked by val_accuracy on a 10% minority chose a model that never predicts 'yes' (test
    accuracy 0.90, exit 0, no word); its confusion matrix did not say which row was which class either."""
    from jobs.pipeline import format_metrics

    metrics = {"val": {"val_accuracy": 0.9}, "test": {"accuracy": 202 / 224, "confusion_matrix": [[202, 0], [22, 0]]}}
    lines = format_metrics(metrics, ["no", "yes"]).splitlines()
    assert "[evaluate] test confusion matrix (rows = true; classes 'no', 'yes'): [[202, 0], [22, 0]]" in lines
    assert lines[-1] == (
        "[evaluate] warning: the model predicts 'no' for every test row; it never predicts 'yes' (10% of the rows). "
        "Judge epochs and trials by val_f1 or val_auc (train.early_stop.metric, tune.metric) rather than "
        "val_accuracy or val_loss, and weigh the rarer classes up with train.class_weight: balanced; for two "
        "classes, a cut-off chosen for the rare one's recall or precision (decision: {min_recall: 0.8}) answers by "
        "its probability rather than the likelier class")
    metrics["test"]["confusion_matrix"] = [[200, 2], [20, 2]]
    assert "warning" not in format_metrics(metrics, ["no", "yes"])
    # A 50/50 defect set: neither class is rarer, so weighing them is no advice.
    metrics["test"]["confusion_matrix"] = [[52, 0], [48, 0]]
    assert format_metrics(metrics, ["ok", "scratch"]).splitlines()[-1] == (
        "[evaluate] warning: the model predicts 'ok' for every test row; it never predicts 'scratch' (48% of the "
        "rows). The classes are about as common as each other: the model has not learned to tell them apart. Train "
        "longer (train.epochs), try another train.lr (a search: trainyard tune), or check that the features carry "
        "the label")
    # A model that predicts the rare class for every row, and three classes of which one is rare: weigh them.
    for cm in ([[0, 90], [0, 10]], [[50, 0, 0], [45, 0, 0], [5, 0, 0]]):
        metrics["test"]["confusion_matrix"] = cm
        assert "weigh the rarer classes up with train.class_weight: balanced" in format_metrics(metrics, None)
    # A cut-off that puts every row on one side (decision: min_recall 1.0): the cut-off is what to change.
    metrics["test"]["confusion_matrix"] = [[0, 202], [0, 22]]
    metrics["decision"] = {"positive": "yes", "positive_index": 1, "threshold": 0.0123456, "rule": "min_recall 1"}
    assert format_metrics(metrics, ["no", "yes"]).splitlines()[-2] == (
        "[evaluate] warning: the model predicts 'yes' for every test row; it never predicts 'no' (90% of the rows). "
        "It answers by the cut-off decision P('yes') >= 0.0123456 (min_recall 1), which puts every row on one "
        "side: loosen the rule, or give a fixed decision.threshold")


def test_a_cut_off_that_falls_short_of_its_target_on_the_test_split_is_said():
    from jobs.pipeline import format_metrics

    cut = {"positive": "default", "positive_index": 0, "threshold": 0.08, "rule": "min_recall 0.85",
           "measure": "recall", "target": 0.85}
    metrics = {"val": {}, "test": {"accuracy": 0.5, "confusion_matrix": [[69, 13], [250, 267]]}, "decision": cut}
    assert format_metrics(metrics, ["default", "current"]).splitlines()[-2] == (
        "[evaluate] note: on the test split the cut-off's recall of 'default' is 0.841 (69 of 82), below the "
        "min_recall 0.85 it was chosen for on the validation split: with 82 to count, a cut-off that meets 0.85 "
        "reads this low in 46% of samples; more rows in the validation and test splits (data.split) would tell")
    # Beyond chance: ask for more, while there is more to ask for; at min_recall 1 the model is what to change
    # (a walkthrough was told "say min_recall 1" at min_recall 1, its test recall 18 of 22 at every rule).
    metrics["test"]["confusion_matrix"] = [[60, 22], [250, 267]]
    assert format_metrics(metrics, ["default", "current"]).splitlines()[-2].endswith(
        "(60 of 82), below the min_recall 0.85 it was chosen for on the validation split, lower than chance "
        "explains (p 0.004): a cut-off that just meets a target on one sample often falls short on another; for a "
        "margin ask for more (say min_recall 0.9) or give the validation split more rows (data.split.val)")
    metrics["decision"] = {**cut, "rule": "min_recall 1", "target": 1.0}
    metrics["test"]["confusion_matrix"] = [[18, 4], [100, 117]]
    assert format_metrics(metrics, ["default", "current"]).splitlines()[-2].endswith(
        "lower than chance explains (p 0): no cut-off chosen on the validation split reaches 1 on the test split: "
        "the model ranks some 'default' rows below rows of the other class; a better model (features, "
        "train.epochs, a search) rather than a stricter rule")
    metrics["decision"] = cut
    metrics["test"]["confusion_matrix"] = [[70, 12], [250, 267]]                       # 0.854: met, no note
    assert "note" not in format_metrics(metrics, ["default", "current"])
    metrics["decision"] = {**cut, "rule": "min_precision 0.3", "measure": "precision", "target": 0.3}   # 0.219
    assert "precision of 'default' is 0.219 (70 of 320), below the min_precision 0.3" in format_metrics(
        metrics, ["default", "current"])
    # Out of reach on the validation split too (the highest precision, 0.200, was used): not "ask for more".
    metrics["decision"] = {**cut, "rule": "min_precision 0.5", "measure": "precision", "target": 0.5,
                           "val": {"rows": 300, "positives": 40, "recall": 0.9, "precision": 0.2}}
    said = format_metrics(metrics, ["default", "current"]).splitlines()[-2]
    assert said.endswith("below the min_precision 0.5 it was chosen for on the validation split; no cut-off reached "
                         "it there either (precision 0.200 at best): the model cannot separate 'default' rows this "
                         "well; a better model (features, train.epochs, a search) or a lower min_precision"), said
    assert "ask for more" not in said


def test_a_cut_off_says_how_many_rows_it_flags_and_what_they_hold():
    """A risk analyst read accuracy 0.57 and macro scores; what the cut-off does (45% of applicants flagged, 81% of
    the defaults among them, 2.0x their base rate) was in no line."""
    from jobs.pipeline import flagged_lines, format_metrics

    cut = {"positive": "Y", "positive_index": 1, "threshold": 0.04, "rule": "min_recall 0.8"}
    cm = [[240, 182], [5, 22]]                                  # rows = true: 'N', 'Y'
    assert flagged_lines(cm, cut, "[evaluate] test") == [
        "[evaluate] test at the cut-off: 'Y' for 204 of 449 rows (45%); they hold 22 of the 27 'Y' rows (recall "
        "0.815), precision 0.108, 1.8x the base rate 6.0%"]
    metrics = {"val": {}, "test": {"accuracy": 262 / 449, "confusion_matrix": cm}, "decision": cut}
    assert format_metrics(metrics, ["N", "Y"]).splitlines()[-1] == flagged_lines(cm, cut, "[evaluate] test")[0]
    assert flagged_lines(cm, None, "x") == [] and flagged_lines([[1, 0, 0]] * 3, cut, "x") == []
    assert flagged_lines([[10, 0], [3, 0]], cut, "x") == [
        "x at the cut-off: 'Y' for 0 of 13 rows (0%); they hold 0 of the 3 'Y' rows (recall 0.000), precision -; "
        "base rate 23.1%"]
