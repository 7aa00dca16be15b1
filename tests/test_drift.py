"""The drift statistics (`jobs.drift`), without Ray: samples drawn from the train distribution are not flagged,
a 3-sigma offset, a new category at 30 % and a feature missing in half the rows are, each for its own reason;
the p-value threshold is Bonferroni-corrected; a window under min_rows flags nothing. And the `monitor:` spec
section that sets the thresholds."""
import math

import numpy as np
import pytest

from jobs import drift as D
from jobs.spec import SpecError, validate_spec

TRAIN_ROWS = 2000
CATEGORIES = {"L": 0.5, "M": 0.3, "H": 0.2}


def numeric_reference(rng, missing_rate=0.02) -> dict:
    s = D.summarise(rng.normal(300.0, 2.0, TRAIN_ROWS))
    return {"edges": s["edges"], "shares": s["shares"], "quantiles": s["quantiles"], "missing_rate": missing_rate}


def categorical_reference() -> dict:
    return {"shares": dict(CATEGORIES), "unknown_share": 0.0, "missing_rate": 0.0}


def draw_categories(rng, n, new_share=0.0):
    values = rng.choice(list(CATEGORIES), size=n, p=list(CATEGORIES.values())).astype(object)
    values[rng.uniform(size=n) < new_share] = "XL"
    return values


def with_missing(values, rate, rng):
    values = values.astype(object)
    values[rng.uniform(size=len(values)) < rate] = None
    return values


@pytest.mark.parametrize("n", [60, 200, 1000])
def test_samples_of_the_train_distribution_are_not_flagged(n):
    rng = np.random.default_rng(n)
    num_ref, cat_ref = numeric_reference(rng), categorical_reference()
    thresholds = D.Thresholds()
    flags = []
    for _ in range(50):
        num = D.numeric_drift(num_ref, with_missing(rng.normal(300.0, 2.0, n), 0.02, rng))
        counts, missing = D.count_categories(draw_categories(rng, n))
        cat = D.categorical_drift(cat_ref, counts, 0, missing)
        flags += D.flagged(num_ref, num, thresholds, 2) + D.flagged(cat_ref, cat, thresholds, 2)
    assert flags == []


def test_a_three_sigma_offset_is_flagged_by_psi_and_ks():
    rng = np.random.default_rng(1)
    ref = numeric_reference(rng)
    stats = D.numeric_drift(ref, rng.normal(306.0, 2.0, 200))
    assert stats["n"] == 200 and stats["psi"] > 2 and stats["ks"] > 0.8 and stats["ks_p"] < 1e-30
    reasons = D.flagged(ref, stats, D.Thresholds(), 8)
    assert len(reasons) == 1 and reasons[0].startswith(f"psi {stats['psi']:.2f} (p ")


def test_a_new_category_at_30_percent_is_flagged_as_unknown():
    rng = np.random.default_rng(2)
    ref = categorical_reference()
    counts, missing = D.count_categories(draw_categories(rng, 400, new_share=0.3))
    assert "XL" in counts                          # the unseen category arrives as itself ...
    stats = D.categorical_drift(ref, counts, 0, missing)
    assert stats["unknown_rate"] == pytest.approx(counts["XL"] / 400)    # ... and counts as unknown
    assert 0.25 < stats["unknown_rate"] < 0.35 and stats["chi2_p"] < 1e-20
    reasons = D.flagged(ref, stats, D.Thresholds(), 8)
    assert [r.split()[0] for r in reasons] == ["psi", "unknown"]
    assert reasons[1] == f"unknown categories {stats['unknown_rate']:.2f} vs 0.00"


def test_half_missing_is_flagged_as_missing_only():
    rng = np.random.default_rng(3)
    ref = numeric_reference(rng, missing_rate=0.02)
    values = with_missing(rng.normal(300.0, 2.0, 400), 0.5, rng)
    stats = D.numeric_drift(ref, values)
    assert 0.4 < stats["missing_rate"] < 0.6
    # The values still there are distributed as in training: no psi reason.
    assert D.flagged(ref, stats, D.Thresholds(), 8) == [f"missing {stats['missing_rate']:.2f} vs 0.02"]
    counts, missing = D.count_categories(with_missing(draw_categories(rng, 400), 0.5, rng))
    cat = D.categorical_drift(categorical_reference(), counts, 0, missing)
    assert D.flagged(categorical_reference(), cat, D.Thresholds(), 8) == [f"missing {cat['missing_rate']:.2f} vs 0.00"]


def test_the_p_value_threshold_is_bonferroni_corrected():
    ref = {"missing_rate": 0.0}
    stats = {"n": 500, "psi": 0.3, "ks_p": 0.004, "missing_rate": 0.0}
    assert D.flagged(ref, stats, D.Thresholds(), 1) == ["psi 0.30 (p 0.004)"]
    assert D.flagged(ref, stats, D.Thresholds(), 2) == ["psi 0.30 (p 0.004)"]
    assert D.flagged(ref, stats, D.Thresholds(), 3) == []          # 0.004 >= 0.01 / 3
    assert D.flagged(ref, {**stats, "psi": 0.19}, D.Thresholds(), 1) == []   # the test alone is not enough


def test_a_window_under_min_rows_flags_nothing():
    rng = np.random.default_rng(4)
    ref = numeric_reference(rng)
    shifted = rng.normal(306.0, 2.0, 50)
    assert D.flagged(ref, D.numeric_drift(ref, shifted[:49]), D.Thresholds(), 1) == []
    assert D.flagged(ref, D.numeric_drift(ref, shifted), D.Thresholds(), 1) != []
    assert D.flagged(ref, D.numeric_drift(ref, shifted[:20]), D.Thresholds(min_rows=20), 1) != []


def test_counters_alone_give_the_same_psi_as_raw_values():
    rng = np.random.default_rng(5)
    ref = numeric_reference(rng)
    values = with_missing(rng.normal(301.0, 2.5, 300), 0.1, rng)
    raw = D.numeric_drift(ref, values)
    present = np.array([v for v in values if v is not None], dtype=float)
    counts = np.bincount(D.bin_index(present, ref["edges"]), minlength=len(ref["edges"]) + 1)
    from_counts = D.numeric_drift_from_counts(ref, counts, len(values) - len(present), len(values))
    for key in ("n", "counts", "psi", "chi2_p", "missing_rate"):
        assert from_counts[key] == pytest.approx(raw[key]), key
    assert D.p_value(raw) == raw["ks_p"] and D.p_value(from_counts) == from_counts["chi2_p"]


def test_psi_and_ks_edge_cases():
    assert D.psi([0.5, 0.5], [10, 10]) == pytest.approx(0.0)
    assert math.isnan(D.psi([0.5, 0.5], [0, 0]))
    assert D.psi([0.5, 0.5, 0.0], [10, 10, 0]) == pytest.approx(0.0)      # an empty bin on both sides
    # A reference whose quantiles tie (a discrete feature): no KS, chi-squared decides.
    ref = {**D.summarise(np.repeat([0.0, 1.0, 2.0], 100)), "missing_rate": 0.0}
    stats = D.numeric_drift(ref, np.repeat([0.0, 1.0, 2.0], 30))
    assert stats["ks"] is None and stats["ks_p"] is None and stats["chi2_p"] > 0.5 and stats["psi"] < 0.01
    assert D.bin_index(np.array([-1.0, 0.0, 0.5, 1.0, 3.0]), [0.0, 1.0]).tolist() == [0, 1, 1, 2, 2]


def test_prediction_drift_for_classes_and_values():
    ref = {"task": "classification", "classes": ["failure", "ok"], "shares": [0.1, 0.9]}
    same = D.prediction_drift(ref, {"failure": 10, "ok": 90})
    assert same["n"] == 100 and same["psi"] == pytest.approx(0.0) and same["p"] > 0.9
    doubled = D.prediction_drift(ref, ["failure"] * 40 + ["ok"] * 60)
    assert doubled["n"] == 100 and doubled["p"] < 1e-10 and D.flagged(ref, doubled, D.Thresholds(), 1)
    assert D.prediction_drift({**ref, "classes": [0, 1]}, [1, 1, 0])["n"] == 3      # labels matched canonically
    rng = np.random.default_rng(6)
    reg = {"task": "regression", **D.summarise(rng.normal(100.0, 10.0, TRAIN_ROWS))}
    values = rng.normal(100.0, 10.0, 300)
    assert D.flagged(reg, D.prediction_drift(reg, values), D.Thresholds(), 1) == []
    shifted = D.prediction_drift(reg, values + 30.0)
    assert shifted["p"] < 1e-30 and D.flagged(reg, shifted, D.Thresholds(), 1)
    bins = np.bincount(D.bin_index(values + 30.0, reg["edges"]), minlength=len(reg["edges"]) + 1)
    assert D.prediction_drift(reg, dict(enumerate(bins)))["psi"] == pytest.approx(shifted["psi"])


def test_monitor_spec_sets_the_thresholds_and_names_bad_values():
    base = {"name": "m", "data": {"path": "d", "label": "y"}}
    spec = validate_spec({**base, "monitor": {"psi": 0.25, "p_value": 0.05, "min_rows": 100, "window": "6h"}})
    assert spec.monitor.window_s == 6 * 3600
    assert D.Thresholds.from_spec(spec.monitor) == D.Thresholds(psi=0.25, p_value=0.05, min_rows=100)
    assert D.Thresholds.from_spec(None) == D.Thresholds() == D.Thresholds.from_spec(validate_spec(base).monitor)
    assert D.Thresholds.from_spec({"psi": 0.3, "window": "1d"}) == D.Thresholds(psi=0.3)
    with pytest.raises(SpecError) as err:
        validate_spec({**base, "monitor": {"psi": 0, "p_value": 1.5, "missing_rate": -0.1, "min_rows": 0,
                                           "window": "1 day", "psi_threshold": 1}}, "job.yaml")
    lines = err.value.problems
    for field in ("monitor.psi", "monitor.p_value", "monitor.missing_rate", "monitor.min_rows", "monitor.window",
                  "monitor.psi_threshold"):
        assert any(line.startswith(f"job.yaml: {field}:") for line in lines), (field, lines)
    assert any("got '1 day'" in line and "1h, 1d" in line for line in lines)


def test_a_bundles_monitor_section_reads_the_same_for_a_replica_and_the_monitor_job(tmp_path):
    """One reader (`jobs.drift.bundle_monitor_settings`) of a bundle's spec.yaml `monitor:` section for both: the
    replica takes the defaults and says why when it does not read, the job refuses it naming the file."""
    from jobs.monitor import MonitorInputError, monitor_settings
    from serving.monitor import bundle_thresholds

    good = "name: m\nmonitor: {psi: 0.3, window: 6h}\n"
    assert D.bundle_monitor_settings(good) == (D.Thresholds(psi=0.3), "6h")
    assert D.bundle_monitor_settings(None) == D.bundle_monitor_settings("name: m\n") == (D.Thresholds(), "1d")
    assert bundle_thresholds({"files": {"spec.yaml": good.encode()}}) == (D.Thresholds(psi=0.3), None)
    bad = "name: m\nmonitor: {psi: -1}\n"
    with pytest.raises(ValueError, match="monitor section does not read"):
        D.bundle_monitor_settings(bad)
    thresholds, note = bundle_thresholds({"files": {"spec.yaml": bad.encode()}})
    assert thresholds == D.Thresholds() and "monitor section does not read" in note and "default" in note
    (tmp_path / "spec.yaml").write_text("name: m\nmonitor: [not, a, mapping\n")
    with pytest.raises(MonitorInputError, match=r"spec.yaml: its monitor section does not read"):
        monitor_settings(tmp_path)


def test_a_feature_with_few_values_present_is_judged_by_its_missing_rate_alone():
    """Logs spanning a version that did not take 'notes': one filled cell among 700 empty ones flagged it with
    psi 18.42 and "unknown categories 1.00 vs 0.00"; seven cells flagged 'employer' the same way."""
    ref = categorical_reference()
    stats = D.categorical_drift(ref, {"XL": 1}, 0, 699)
    assert stats["unknown_rate"] == 1.0 and stats["psi"] > 5
    assert D.flagged(ref, stats, D.Thresholds(), 8) == [f"missing {stats['missing_rate']:.2f} vs 0.00"]
    # As many values present as min_rows asks: judged on their shape again.
    many = D.categorical_drift(ref, {"XL": 50}, 0, 650)
    assert [r.split()[0] for r in D.flagged(ref, many, D.Thresholds(), 8)] == ["psi", "missing", "unknown"]


def test_a_constant_reference_flags_a_rise_as_well_as_a_fall():
    """Images of one size in training (width 64 throughout): the top decile was the value itself, so its bin held
    everything above it too and images twice as wide went unflagged (psi 0), where narrower ones were flagged. The
    same holds for a discrete feature's top value. An edge just above it gives a rise an empty bin of its own."""
    from jobs.monitor_report import _bin_label

    ref = {**D.summarise(np.full(300, 64.0)), "missing_rate": 0.0}
    for sent, drifted in ((64.0, False), (128.0, True), (32.0, True)):
        stats = D.numeric_drift(ref, np.full(100, sent))
        assert bool(D.flagged(ref, stats, D.Thresholds(), 2)) is drifted, (sent, stats)
    counts = np.repeat([0.0, 1.0, 2.0], [150, 100, 50])                # a count whose top value fills a decile
    ref = {**D.summarise(counts), "missing_rate": 0.0}
    assert D.flagged(ref, D.numeric_drift(ref, np.repeat([0.0, 1.0, 2.0], [50, 30, 20])), D.Thresholds(), 2) == []
    assert D.flagged(ref, D.numeric_drift(ref, np.repeat([0.0, 1.0, 5.0], [50, 30, 20])), D.Thresholds(), 2)
    # A continuous feature keeps its ten bins: its largest value is above its top decile.
    assert len(D.summarise(np.random.default_rng(0).normal(size=500))["edges"]) == 9
    assert _bin_label(64.0, np.nextafter(64.0, np.inf)) == "64" and _bin_label(1.0, 2.5) == "1–2.5"


def test_a_small_reference_is_tested_as_a_sample_of_its_own():
    """A bundle trained on 480 rows profiles its probabilities over a validation split of 72: tested as if those
    72 were the distribution itself, a window of 300 rows of the same model on the same traffic was flagged
    (psi 0.23, p 7e-09). As two samples, in-distribution windows are flagged about as often as the p-value
    threshold says, and a real shift still is."""
    rng = np.random.default_rng(5)
    alarms = {"as exact": 0, "as a sample": 0}
    for _ in range(300):
        ref = D.summarise(rng.beta(8, 1, 72))
        window = rng.beta(8, 1, 300)
        for how, n in (("as exact", None), ("as a sample", 72)):
            stats = D.numeric_drift({**ref, **({"n": n} if n else {})}, window)
            alarms[how] += D.p_value(stats) < 0.01
    assert alarms["as a sample"] <= 9 < 60 <= alarms["as exact"], alarms         # 1 % of 300 is 3
    shifted = D.numeric_drift({**D.summarise(rng.beta(8, 1, 72)), "n": 72}, rng.beta(2, 1, 300))
    assert D.p_value(shifted) < 1e-6 and shifted["psi"] > 0.5
    # Counters alone (a replica's, the batch monitor's): a test of two samples over the bins, as rarely alarmed.
    alarms = {"as exact": 0, "as a sample": 0}
    for _ in range(300):
        ref = D.summarise(rng.beta(8, 1, 72))
        counts = np.bincount(D.bin_index(rng.beta(8, 1, 300), ref["edges"]), minlength=len(ref["edges"]) + 1)
        alarms["as exact"] += D.numeric_drift_from_counts(ref, counts, 0, 300)["chi2_p"] < 0.01
        alarms["as a sample"] += D.numeric_drift_from_counts({**ref, "n": 72}, counts, 0, 300)["chi2_p"] < 0.01
    assert alarms["as a sample"] <= 12 < 45 <= alarms["as exact"], alarms
    # A brand-new category in 4 % of a window against 200 train rows: still flagged as drift (Pearson's test of
    # two samples let it pass, p 0.016, where the reference holds none of it; the G-test does not).
    new = D.categorical_drift({"shares": {"a": 0.5, "b": 0.5}, "unknown_share": 0.0, "n": 200},
                              {"a": 1440, "b": 1440, "c": 120}, 0, 0)
    assert new["chi2_p"] < 0.001 and D.flagged({"shares": {}}, new, D.Thresholds(), 10) == [
        f"psi {new['psi']:.2f} (p {new['chi2_p']:.1g})"]
    # A profile's entries get their sizes when a bundle is loaded; entries that have one keep it.
    profile = D.with_reference_sizes({"rows": {"train": 1000, "val": 150},
                                      "numeric": {"rpm": {"missing_rate": 0.1}, "kept": {"n": 5}},
                                      "categorical": {"shift": {"missing_rate": 0.0}},
                                      "prediction": {"score": {}}})
    assert profile["numeric"]["rpm"]["n"] == 900 and profile["numeric"]["kept"]["n"] == 5
    assert profile["categorical"]["shift"]["n"] == 1000
    assert profile["prediction"]["n"] == profile["prediction"]["score"]["n"] == 150
    assert D.with_reference_sizes({"numeric": {"rpm": {}}}) == {"numeric": {"rpm": {}}}     # no row counts


def test_where_the_median_stays_the_range_that_moved_is_said():
    """Training images of 32 px (77 %) and 48 px (23 %), traffic of 32 px alone: flagged "median 32 vs 32 in
    training", which says nothing moved. The range whose share moved most says what did."""
    ref = D.summarise(np.array([32.0] * 77 + [48.0] * 23))
    counts = np.bincount(D.bin_index(np.full(200, 32.0), ref["edges"]), minlength=len(ref["edges"]) + 1)
    assert D.moved_bin(ref, counts) == "0% equal to 48 (23% in training)"
    assert D.median_side(ref, counts) == D.moved_bin(ref, counts)     # the live /monitor's line: the same
    ref = D.summarise(np.arange(100.0))           # a spread-out number: the bin of the shift, by its range
    counts = np.bincount(D.bin_index(np.full(50, 95.0), ref["edges"]), minlength=len(ref["edges"]) + 1)
    assert D.moved_bin(ref, counts) == "100% at or above 89.1 (10% in training)"
    assert D.moved_bin(ref, np.zeros(len(ref["shares"]))) is None


def test_a_classifiers_prediction_drift_names_the_class_that_moved():
    """"prediction drift (psi 2.48 (p 4e-05))" did not say that 'scratch' went from 29 % of the answers to none."""
    from jobs.monitor_stats import _prediction_stats

    ref = {"task": "classification", "classes": ["ok", "scratch", "dent"], "shares": [0.5, 0.29, 0.21], "n": 1000}
    stats = _prediction_stats({"counts": {"ok": 150, "dent": 50}}, ref, D.Thresholds(), judged=True)
    assert stats["flags"] and all(f.startswith("psi ") and f.endswith(
        "; 'scratch' 0% of answers (29% on the validation split)") for f in stats["flags"]), stats["flags"]
    assert _prediction_stats({"counts": {"ok": 100, "scratch": 58, "dent": 42}}, ref, D.Thresholds(),
                             judged=True)["flags"] == []
