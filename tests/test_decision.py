"""A binary classifier's cut-off (`decision:`, `jobs.decision`), without Ray: the spec's rules, the choice on
validation rows against a brute-force search over every cut-off, the positive class resolved against the
label's classes, and a bundle that keeps its cut-off and answers, scores and describes itself by it."""
import json

import numpy as np
import pytest

from jobs import bundle as B
from jobs import decision as D
from jobs.evaluate import score_records
from jobs.fitted import decide
from jobs.infer import DataError
from jobs.model import build_model
from jobs.preprocess import load_state
from jobs.spec import DecisionSpec, SpecError, validate_spec
from jobs.tabular import NumericState, Preprocessor


def _brute(y, p):
    """(cut-off, recall, precision, f1) of answering positive at p >= t, for every distinct score t."""
    out = []
    for t in sorted(set(p.tolist()), reverse=True):
        answered = p >= t
        tp = int((answered & (y == 1)).sum())
        out.append((t, tp / y.sum(), tp / answered.sum(), 2 * tp / (answered.sum() + y.sum())))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_each_rule_picks_the_cut_off_a_search_over_every_cut_off_picks(seed):
    rng = np.random.default_rng(seed)
    n = 300
    y = (rng.random(n) < 0.2).astype(int)
    p = np.clip(rng.normal(0.3 + 0.3 * y, 0.2), 0, 1).round(2)        # rounded: many tied scores
    proba = np.column_stack([1 - p, p])
    brute = _brute(y, p)
    at = lambda t: next(row for row in brute if row[0] >= t and not any(r[0] >= t and r[0] < row[0] for r in brute))

    got = D.choose(DecisionSpec(min_recall=0.8), ["no", "yes"], 1, y, proba)
    want = max(t for t, r, _, _ in brute if r >= 0.8)
    assert at(got["threshold"])[0] == want and got["val"]["recall"] >= 0.8
    got = D.choose(DecisionSpec(min_precision=0.5), ["no", "yes"], 1, y, proba)
    meets = [(r, t) for t, r, prec, _ in brute if prec >= 0.5]
    best_recall = max(meets)[0]
    # The most recall the precision allows, at the highest cut that gives it (no false alarm that adds nothing).
    assert at(got["threshold"])[0] == max(t for r, t in meets if r == best_recall) and got["val"]["precision"] >= 0.5
    got = D.choose(DecisionSpec(threshold="best_f1"), ["no", "yes"], 1, y, proba)
    assert at(got["threshold"])[3] == pytest.approx(max(f for *_, f in brute))
    # Halfway between two validation scores: a row scored exactly like a validation row gets that row's answer.
    assert got["threshold"] not in set(p.tolist())
    assert got["positive"] == "yes" and got["positive_index"] == 1 and got["rule"] == "best_f1"


def test_a_fixed_threshold_is_kept_and_described_and_an_unmet_precision_is_said():
    y = np.array([0, 1, 0, 1, 0, 0])
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.2, 0.1])
    proba = np.column_stack([1 - p, p])
    got = D.choose(DecisionSpec(threshold=0.65), ["ok", "bad"], 1, y, proba)
    assert got["threshold"] == 0.65 and got["val"] == {"rows": 6, "positives": 2, "recall": 0.5, "precision": 1 / 3}
    assert "note" not in got
    assert D.summary(got) == ("'bad' when P('bad') >= 0.65 (threshold 0.65: recall 0.500, precision 0.333; the "
                              "validation split's 6 rows hold 2 'bad')")
    none = D.choose(DecisionSpec(threshold=0.65), ["ok", "bad"], 1, np.zeros(6), proba)
    assert D.summary(none) == ("'bad' when P('bad') >= 0.65 (threshold 0.65; the validation split's 6 rows hold "
                               "none of 'bad': nothing to measure it on)")
    got = D.choose(DecisionSpec(min_precision=0.9), ["ok", "bad"], 1, y, proba)
    assert "no cut-off reaches a precision of 0.9" in got["note"] and "highest precision (0.500)" in got["note"]
    got = D.choose(DecisionSpec(min_recall=1.0), ["ok", "bad"], 1, y, proba)      # 0.6 in, 0.2 out: halfway
    assert got["threshold"] == pytest.approx(0.4) and "chosen on 2 validation row(s) of 'bad'" in got["note"]


def test_min_precision_adds_no_false_alarm_that_catches_nothing_more():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 0])
    p = np.linspace(0.9, 0.0, 10)
    got = D.choose(DecisionSpec(min_precision=0.3), ["no", "yes"], 1, y, np.column_stack([1 - p, p]))
    assert got["threshold"] == pytest.approx(0.65) and got["val"]["recall"] == got["val"]["precision"] == 1.0
    # The target is kept as given (the rule's text rounds it: min_recall 0.8333333 reads 0.833333).
    assert (got["measure"], got["target"]) == ("precision", 0.3)
    exact = D.choose(DecisionSpec(min_recall=0.8333333), ["no", "yes"], 1, y, np.column_stack([1 - p, p]))
    assert exact["target"] == 0.8333333 and exact["rule"] == "min_recall 0.833333"
    assert D.shortfall([[5, 0], [1, 5]], exact) is None                            # recall 5/6 = 0.8333333...
    assert D.shortfall([[5, 0], [2, 3]], exact) == ("recall", 0.6, 3, 5)


def test_a_model_without_finite_probabilities_gets_no_cut_off():
    p = np.array([0.9, np.nan, 0.2])
    with pytest.raises(DataError, match="1 of the 3 validation rows got no finite probability"):
        D.choose(DecisionSpec(min_precision=0.5), ["no", "yes"], 1, np.array([1, 0, 0]), np.column_stack([1 - p, p]))
    with pytest.raises(DataError, match="which holds no row of 'yes'"):
        D.choose(DecisionSpec(min_recall=0.5), ["no", "yes"], 1, np.array([0, 0]), np.array([[0.5, 0.5]] * 2))


def test_the_cut_off_is_applied_in_float64_as_it_was_chosen():
    p = np.array([0.29999998, 0.29999995], dtype=np.float32)
    cut = float(p.astype(np.float64).sum() / 2)
    assert decide({"positive_index": 1, "threshold": cut}, np.column_stack([1 - p, p])).tolist() == [1, 0]


def test_positive_yes_read_by_yaml_as_true_names_the_yes_class(tmp_path):
    from jobs.spec import load_spec

    path = tmp_path / "s.yaml"
    path.write_text("name: t\ndata: {path: x.csv, label: y}\ndecision: {min_recall: 0.9, positive: yes}\n")
    spec = load_spec(path)
    assert spec.decision.positive is True
    assert D.positive_index(spec.decision, ["no", "yes"], {}) == 1
    assert D.positive_index(spec.decision, ["N", "Y"], {}) == 1
    assert D.positive_index(load_spec(path, ["decision.positive=off"]).decision, ["on", "off"], {}) == 1
    assert D.positive_index(spec.decision, [False, True], {}) == 1
    with pytest.raises(DataError, match=r"is not a class of the label, which has 2 classes \(0, 1\); give one of them \(YAML "
                                        r"reads an unquoted yes, no, on or off as true or false"):
        D.positive_index(spec.decision, [0, 1], {})


def test_the_positive_class_is_the_named_one_or_the_rarer_and_a_wrong_one_names_the_classes():
    assert D.positive_index(DecisionSpec(threshold=0.5), ["no", "yes"], {"no": 80, "yes": 20}) == 1
    assert D.positive_index(DecisionSpec(threshold=0.5), ["fraud", "ok"], {"fraud": 5, "ok": 95}) == 0
    assert D.positive_index(DecisionSpec(threshold=0.5, positive=True), [False, True], {}) == 1
    assert D.positive_index(DecisionSpec(threshold=0.5, positive=0), [0, 1], {}) == 0
    assert D.positive_index(DecisionSpec(threshold=0.5, positive="YES"), ["no", "yes"], {}) == 1
    with pytest.raises(DataError, match=r"decision.positive: 'maybe' is not a class of the label, which has 2 "
                                        r"classes \('no', 'yes'\)"):
        D.positive_index(DecisionSpec(threshold=0.5, positive="maybe"), ["no", "yes"], {})
    with pytest.raises(DataError, match="two classes, and label 'grade' has 3 classes \\('a', 'b', 'c'\\)"):
        D.positive_index(DecisionSpec(threshold=0.5), ["a", "b", "c"], {}, "grade")


def _spec(**decision):
    return validate_spec({"name": "t", "data": {"path": "x.csv", "label": "y"}, "decision": decision})


def test_a_rule_chosen_on_validation_needs_positive_rows_there_and_a_label_of_classes():
    counts = {"train": {"no": 90, "yes": 10}, "val": {"no": 20}}
    with pytest.raises(DataError, match="min_recall 0.9 is chosen on the validation split, which holds no row of "
                                        "the positive class 'yes'; raise data.split.val"):
        D.check(_spec(min_recall=0.9), ["no", "yes"], counts)
    assert D.check(_spec(threshold=0.3), ["no", "yes"], counts) == 1       # a fixed cut-off needs none
    with pytest.raises(DataError, match="label 'y' was read as a quantity"):
        D.check(_spec(threshold=0.3), None, {})
    assert D.check(validate_spec({"name": "t", "data": {"path": "x.csv", "label": "y"}}), None, {}) is None


def test_the_spec_takes_exactly_one_rule_and_refuses_a_cut_off_for_a_regression():
    assert _spec(threshold="best_f1").decision.rule == "best_f1"
    assert _spec(min_precision=0.8, positive="yes").decision.rule == "min_precision 0.8"
    for bad, said in [({}, "give exactly one of threshold, min_recall, min_precision (got none)"),
                      ({"threshold": 0.2, "min_recall": 0.9}, "(got threshold, min_recall)"),
                      ({"threshold": 1.0}, "threshold 1.0 must be between 0 and 1"),
                      ({"min_recall": 1.5}, "decision.min_recall")]:
        with pytest.raises(SpecError, match=None) as err:
            _spec(**bad)
        assert said in str(err.value)
    with pytest.raises(SpecError, match="data.task is regression"):
        validate_spec({"name": "t", "data": {"path": "x.csv", "label": "y", "task": "regression"},
                       "decision": {"threshold": 0.5}})


CONFIG = {"kind": "mlp", "input_dim": 1, "output_dim": 2, "hidden": [], "dropout": 0.0, "activation": "relu"}


def _bundle(tmp_path, decision=None):
    """A bundle whose model scores P('yes') = sigmoid(2x) (logits 0 and 2x), with `decision` chosen while written."""
    import torch
    model = build_model(CONFIG)
    state = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    weight = [k for k in state if k.endswith("weight")][-1]
    state[weight][1, 0] = 2.0
    pre = Preprocessor(task="classification", label="y", classes=["no", "yes"],
                       numeric=[NumericState("x", fill=0.0, center=0.0, scale=1.0)], categorical=[])

    def decide_hook(bundle):
        if decision is None:
            return None
        bundle.preprocessor.decision = decision
        return {"val": {**bundle.metrics["val"], "val_f1": 0.5}}     # the sections it changes, whole

    def score(bundle):
        return {"test": score_records(bundle, [{"x": x, "y": y} for x, y in [(-1, "no"), (-0.2, "yes"), (1, "yes")]],
                                      "y")}

    return B.write(tmp_path / "out" / "bundle", state_dict=state, model_config=CONFIG, preprocessor=pre,
                   metrics={"val": {"val_f1": 0.4, "val_auc": 0.9}}, spec_yaml="name: t\n", lineage={"version": "1"},
                   decide=decide_hook, score=score)


def test_a_bundle_keeps_its_cut_off_and_answers_scores_and_describes_itself_by_it(tmp_path):
    chosen = {"positive": "yes", "positive_index": 1, "threshold": 0.35, "rule": "min_recall 0.9",
              "val": {"rows": 3, "positives": 2, "recall": 1.0, "precision": 0.67}}
    version = _bundle(tmp_path, chosen)
    bundle = B.load(version)
    out = bundle.predict([{"x": -1.0}, {"x": -0.2}, {"x": 1.0}])
    p_yes = [round(p[1], 3) for p in out["probabilities"]]
    assert p_yes == [0.119, 0.401, 0.881]
    assert out["predictions"] == ["no", "yes", "yes"]          # 0.401 >= 0.35: 'yes' where the likelier is 'no'
    assert bundle.metrics["val"] == {"val_f1": 0.5, "val_auc": 0.9}     # what decide changed, the rest kept
    # The test split is scored by the answers the bundle gives: every row right at this cut-off.
    assert bundle.metrics["test"]["accuracy"] == 1.0 and bundle.metrics["test"]["confusion_matrix"] == [[1, 0], [0, 2]]
    assert json.loads((version / "preprocessor.json").read_text())["decision"] == chosen
    assert json.loads((version / "schema.json").read_text())["label"] == {
        "name": "y", "classes": ["no", "yes"],
        "decision": {"positive": "yes", "threshold": 0.35, "rule": "min_recall 0.9"}}
    assert B._is_bundle(version) and not B.manifest_problems(version)


def test_a_bundle_without_a_cut_off_answers_the_likelier_class_as_before(tmp_path):
    bundle = B.load(_bundle(tmp_path))
    assert bundle.predict([{"x": -0.2}, {"x": 0.1}])["predictions"] == ["no", "yes"]
    assert bundle.preprocessor.decision is None and "decision" not in bundle.schema["label"]
    assert "decision" not in json.loads((bundle.path / "preprocessor.json").read_text())
    assert bundle.metrics["test"]["confusion_matrix"] == [[1, 0], [1, 1]]


def test_the_cut_off_survives_preprocessor_json_for_every_kind_and_decides_for_either_class(tmp_path):
    from cluster.errors import BadInput
    from jobs.images import ImagePreprocessor

    pre = Preprocessor(task="classification", label="y", classes=["fraud", "ok"],
                       numeric=[NumericState("x", fill=0.0, center=0.0, scale=1.0)], categorical=[])
    image = ImagePreprocessor(label="y", classes=["bad", "good"], column="image", size=[8, 8], channels=1,
                              mean=[0.5], std=[0.2], stats={})
    cut = {"positive": "fraud", "positive_index": 0, "threshold": 0.2, "rule": "threshold 0.2"}
    for kind in (pre, image):
        kind.decision = cut
        kind.save(tmp_path / "preprocessor.json")
        assert load_state(json.loads((tmp_path / "preprocessor.json").read_text())).decision == cut
    again = load_state(json.loads((tmp_path / "preprocessor.json").read_text()))
    assert again.decision == pre.decision
    with pytest.raises(BadInput, match="preprocessor.json: decision .* is not a cut-off between two classes"):
        load_state({**pre.to_dict(), "decision": {"positive_index": 2, "threshold": 0.5}})
    proba = np.array([[0.1, 0.9], [0.25, 0.75], [0.6, 0.4]])
    assert again.decide(proba).tolist() == [1, 0, 0]
    assert decide(None, proba).tolist() == [1, 1, 0]


def test_validate_checks_the_decision_against_the_labels_values_before_ray(tmp_path):
    from jobs import precheck

    (tmp_path / "loans.csv").write_text("income,outcome\n1,default\n2,repaid\n3,repaid\n")
    (tmp_path / "grades.csv").write_text("income,outcome\n1,A\n2,B\n3,C\n")
    base = {"name": "t", "data": {"path": str(tmp_path / "loans.csv"), "label": "outcome"}}
    assert precheck.problems(validate_spec({**base, "decision": {"min_recall": 0.9, "positive": "default"}})) == ([], [])
    spec_problems, _ = precheck.problems(validate_spec({**base, "decision": {"min_recall": 0.9, "positive": "yes"}}))
    assert spec_problems == [f"decision.positive: 'yes' is not a class of label 'outcome', which has 2 distinct values "
                             f"('default', 'repaid'; data.path: {tmp_path / 'loans.csv'}); give one of them"]
    grades = {**base, "data": {**base["data"], "path": str(tmp_path / "grades.csv")}, "decision": {"threshold": 0.4}}
    spec_problems, _ = precheck.problems(validate_spec(grades))
    assert spec_problems[0].startswith("decision: sets a cut-off between two classes, and label 'outcome' has 3 "
                                       "distinct values ('A', 'B', 'C'")
    assert spec_problems[0].endswith("remove the decision section for this label")
    # One class written two ways: the data is what to fix, not the spec. Said alone (the cut-off's, and a binary
    # metric's "remove the decision section" came first), and by `train` too, before Ray starts.
    (tmp_path / "cased.csv").write_text("income,outcome\n1,default\n2,Default\n3,current\n")
    cased = {**grades, "data": {**grades["data"], "path": str(tmp_path / "cased.csv")},
             "train": {"early_stop": {"metric": "val_auc"}}}
    spec_problems, data_problems = precheck.problems(validate_spec(cased))
    assert spec_problems == [] and data_problems == [
        f"label 'outcome': classes 'Default' and 'default' differ only in case or in spaces around them, and would be "
        f"trained as different classes (data.path: {tmp_path / 'cased.csv'}). Write each class one way in the data, "
        "e.g. with pandas: df[label].str.strip() for the spaces, .str.lower() for the case"]


def test_an_update_says_how_the_served_cut_off_changes_and_reads_the_running_schema(tmp_path):
    from serving.payload import payload_json

    low = {"positive": "default", "threshold": 0.154067, "rule": "min_recall 0.9", "val": {"recall": 0.91}}
    fixed = {"positive": "default", "threshold": 0.5, "rule": "threshold 0.5"}
    assert D.change(None, None) is None
    assert D.change(low, {**low, "val": {"recall": 0.95}}) is None      # the same cut-off, measured anew
    assert D.change(low, fixed) == ("changes its cut-off: P('default') >= 0.154067 (min_recall 0.9) → "
                                    "P('default') >= 0.5 (threshold 0.5)")
    assert D.change(None, fixed) == ("answers by the cut-off P('default') >= 0.5 (threshold 0.5) from now on (it "
                                     "answered by the likelier class)")
    assert D.change(low, None) == ("answers by the likelier class from now on (it answered by the cut-off "
                                   "P('default') >= 0.154067 (min_recall 0.9))")
    # The running deployment's schema.json: from its bytes, or its folder on this machine; never guessed.
    schema = {"label": {"decision": fixed}}
    assert payload_json({"files": {"schema.json": json.dumps(schema).encode()}}, "schema.json") == schema
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    assert payload_json({"path": str(tmp_path)}, "schema.json") == schema
    assert payload_json({"path": str(tmp_path / "gone")}, "schema.json") is None
    assert payload_json({"path": "s3://bucket/b/bundles/1", "version": "1"}, "schema.json") is None
    assert payload_json("not a payload", "schema.json") is None
