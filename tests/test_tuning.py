"""Tuning on the real local Ray: a 4-trial ASHA search finishes on this 2-core machine (4 logical CPUs), ASHA
stops the hopeless trials, the best trial becomes a bundle that loads and predicts; planning refuses specs
the cluster can never run, in seconds and naming the fix; failed trials are reported, not fatal."""
import json
import re
import time
from collections import Counter
from pathlib import Path

import pytest

from cluster import ray_compat
from jobs import bundle as B
from trainyard.cli import main
from jobs.spec import SpecError, best_key, load_spec, validate_spec
from tests.conftest import write_spec
from tests.tuning_fixtures import experiment_dir, read_results, tuning_spec
from tuning import TuneInputError, plan
from tuning import space

BASE = {"name": "t", "data": {"path": "d", "label": "y"}}


def _spec(tune=None, **train):
    return validate_spec({**BASE, "train": {"workers": 1, **train}, "tune": tune or {}})


# ---------------------------------------------------------------------------------------------- no Ray
def test_plan_fits_two_one_worker_trials_on_four_logical_cpus():
    p = plan(_spec(), {"CPU": 4}, use_gpu=False)
    # 0.25 driver + 1 worker per trial; one CPU stays free for Ray Data: 3 / 1.25 → 2 trials at once.
    assert p.max_concurrent == 2 and p.trial_cpus == 1.25
    assert plan(_spec(workers=2), {"CPU": 4}, use_gpu=False).max_concurrent == 1
    assert plan(_spec({"max_concurrent": 1}), {"CPU": 4}, use_gpu=False).max_concurrent == 1
    assert plan(_spec(workers=2), {"CPU": 32, "GPU": 4}, use_gpu=True).max_concurrent == 2   # GPU-bound


def test_plan_refuses_what_can_never_run_and_says_what_to_change():
    with pytest.raises(TuneInputError, match=r"needs .*4\.25 CPUs.*cluster has 4 CPUs; lower train.workers to 2"):
        plan(_spec(workers=4), {"CPU": 4}, use_gpu=False)
    with pytest.raises(TuneInputError, match=r"tune.max_concurrent=3 but the cluster holds at most 2 .*auto"):
        plan(_spec({"max_concurrent": 3}), {"CPU": 4}, use_gpu=False)
    with pytest.raises(TuneInputError, match=r"set train.cpus_per_worker: 0.75 or tune.data_cpus: 0.75"):
        plan(_spec(), {"CPU": 2}, use_gpu=False)


def test_tune_section_errors_name_the_field_and_the_fix():
    cases = [({"batch_size": {"uniform": [16, 256]}}, "tune.batch_size: needs choice"),
             ({"hidden": {"choice": [64, 32]}}, "tune.hidden: values must be lists of positive layer widths"),
             ({"dropout": {"choice": [0.1, 1.5]}}, "tune.dropout: values must be dropout rates in [0, 1)"),
             ({"lr": {"loguniform": [0, 0.1]}}, "loguniform needs a positive low bound"),
             ({"metric": "val_f2"}, "unknown metric 'val_f2'"),
             ({"max_concurrent": 0}, "max_concurrent must be auto or at least 1"),
             ({"lr": None, "batch_size": None}, "nothing to search")]
    for tune, expected in cases:
        with pytest.raises(SpecError) as err:
            _spec(tune)
        assert expected in str(err.value), (tune, str(err.value))
    # Every axis's problem at once (the first one alone was reported), also next to an axis of a refused form.
    with pytest.raises(SpecError) as err:
        _spec({"lr": {"loguniform": [0, 0.1]}, "batch_size": {"choice": [0, 64]}, "weight_decay": {"uniform": [-1, 0]},
               "hidden": {"choice": [[0]]}})
    assert len(err.value.problems) == 4, err.value.problems
    with pytest.raises(SpecError, match="grace_period=5 is more than train.epochs=3"):
        space.check(_spec({"scheduler": {"asha": {"grace_period": 5}}}, epochs=3))
    # Equal: the only rung is the last epoch, where every trial ends anyway.
    with pytest.raises(SpecError, match="grace_period=3 is equal to train.epochs=3, so ASHA could never stop"):
        space.check(_spec({"scheduler": {"asha": {"grace_period": 3}}}, epochs=3))
    space.check(_spec({"scheduler": {"asha": {"grace_period": 2}}}, epochs=3))
    # The metric a tune.mode contradicts may come from train.early_stop or the default val_loss.
    with pytest.raises(SpecError, match=r"tune.mode is max but the trials are ranked by val_loss \(the default"):
        space.check(_spec({"mode": "max"}, early_stop=None))
    with pytest.raises(SpecError, match=r"tune.mode is min .* val_auc \(train.early_stop.metric"):
        space.check(_spec({"mode": "min"}, early_stop={"metric": "val_auc"}))
    with pytest.raises(SpecError, match="set tune.metric to one of val_loss, val_mae"):
        space.metric_and_mode(_spec({"metric": "val_f1"}), "regression")
    assert space.metric_and_mode(_spec({"metric": "val_f1"}), "classification") == ("val_f1", "max")
    assert space.metric_and_mode(_spec(early_stop={"metric": "val_rmse"}), "regression") == ("val_rmse", "min")


def test_validate_runs_the_tune_checks_and_names_the_file(tmp_path, capsys):
    """`trainyard validate` lists what `trainyard tune` would refuse before reading data, each line naming the
    spec file."""
    spec = write_spec(tmp_path / "s.yaml", {**BASE, "data": {**BASE["data"], "task": "regression"},
                                            "train": {"epochs": 3},
                                            "tune": {"metric": "val_f1", "scheduler": {"asha": {"grace_period": 3}}}})
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "2 problem(s)" in err, err
    assert f"{spec}: tune.scheduler.asha.grace_period=3 is equal to train.epochs=3" in err
    assert f"{spec}: tune.metric is 'val_f1', a classification metric, but the task is regression" in err


def test_a_search_to_a_uri_output_is_refused_by_validate_and_submit(tmp_path, capsys):
    """A search writes its experiment to a local (or mounted) folder: a URI output was refused only in run_tune,
    after a Ray start, and on a cluster after the job's submission; validate said OK."""
    spec = write_spec(tmp_path / "s.yaml", {**BASE, "data": {"path": "s3://bucket/data/", "label": "y"},
                                            "output": "s3://bucket/runs/t", "tune": {}})
    assert main(["validate", str(spec)]) == 2
    assert "output 's3://bucket/runs/t': a search writes its experiment, report and bundle to a local folder" \
        in capsys.readouterr().err
    assert main(["submit", str(spec), "--address", "http://10.1.2.3:8265", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "a search writes its experiment" in err and "give output a path" in err, err
    # train (one run, no search) may write its bundle there
    assert main(["validate", str(spec), "--set", "tune=null"]) == 0
    # Of another cluster, nothing of this machine is asked: optuna may be on its nodes alone
    assert main(["submit", str(spec), "--address", "http://10.1.2.3:8265", "--dry-run", "--set",
                 "output=/mnt/nfs/runs/t", "--shared", "/mnt/nfs", "--set", "tune.search=optuna"]) == 0, \
        capsys.readouterr().err


def test_optuna_is_refused_clearly_when_not_installed():
    import importlib.util
    if importlib.util.find_spec("optuna") is not None:
        pytest.skip("optuna is installed here")
    with pytest.raises(SpecError, match="optuna package is not installed; `pip install optuna`, or use search: random"):
        space.check(_spec({"search": "optuna"}))


def test_grid_spans_each_axis():
    spec = _spec({"search": "grid", "lr": {"loguniform": [1e-4, 1e-2]}, "batch_size": {"choice": [32, 64]},
                  "hidden": {"choice": [[16], [32, 16]]}, "grid_points": 3})
    space_ = space.param_space(spec)
    assert space_["lr"]["grid_search"] == [1e-4, 1e-3, 1e-2]
    assert space_["hidden"]["grid_search"] == [[16], [32, 16]]
    assert space.grid_size(spec) == 12 and space.num_samples(spec) == 1


def test_optuna_gets_hidden_sizes_as_scalars_and_trials_get_lists_back():
    from tuning.trial import trial_overrides
    spec = _spec({"search": "optuna", "hidden": {"choice": [[128, 64], [32]]}})
    assert space.param_space(spec)["hidden"].categories == ["128x64", "32"]
    assert trial_overrides(spec, {"hidden": "128x64", "lr": 0.01}, "val_loss", "min")["hidden"] == [128, 64]
    assert trial_overrides(spec, {"hidden": [32]}, "val_loss", "min")["hidden"] == [32]


# ---------------------------------------------------------------------------------------------- real Ray
def test_asha_judges_a_trial_by_its_best_epoch_so_far():
    """Ray's own ASHA, set up as the experiment sets it up: a trial whose rung epoch is a noisy spike, but whose
    best epoch (the one its bundle keeps) leads, goes on; a trial that never got anywhere stops."""
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import TrialScheduler

    asha = space.scheduler(_spec({"scheduler": {"asha": {"grace_period": 2, "reduction_factor": 2}}}, epochs=8))
    asha.set_search_properties(best_key("val_loss"), "min")
    trials = {name: Trial("t", stub=True, trial_id=name) for name in ("steady", "spiky", "flat")}
    for trial in trials.values():
        asha.on_trial_add(None, trial)

    def judge(name, epoch, val_loss, best):
        return asha.on_trial_result(None, trials[name], {"epoch": epoch, "val_loss": val_loss,
                                                          "best_val_loss": best})
    assert judge("steady", 2, 0.40, 0.40) == TrialScheduler.CONTINUE      # first at the rung: unopposed
    assert judge("spiky", 1, 0.20, 0.20) == TrialScheduler.CONTINUE
    assert judge("spiky", 2, 0.90, 0.20) == TrialScheduler.CONTINUE      # last epoch 0.90, best 0.20: goes on
    assert judge("flat", 2, 0.80, 0.80) == TrialScheduler.STOP


@pytest.mark.parametrize("mode,metric,sane", [("min", "val_loss", [0.3, 0.4, 0.5]),
                                              ("max", "val_auc", [0.9, 0.8, 0.7])])
def test_asha_stops_a_trial_whose_metric_was_never_a_number(mode, metric, sane):
    """A trial that diverged from its first epoch reports best_<metric> NaN, which ASHA's `value < cutoff` never
    stopped (it trained every epoch): sent as the worst value, it is stopped as a poor finite one is."""
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import TrialScheduler

    from tuning.trial import judged

    asha = space.scheduler(_spec({"scheduler": {"asha": {"grace_period": 2, "reduction_factor": 3}}}, epochs=27))
    asha.set_search_properties(best_key(metric), mode)
    trials = {name: Trial("t", stub=True, trial_id=name) for name in ("a", "b", "c", "nan", "nan2", "late")}
    for trial in trials.values():
        asha.on_trial_add(None, trial)

    def judge(name, value):
        row = {"epoch": 2, metric: value, best_key(metric): value}
        return asha.on_trial_result(None, trials[name], judged(row, metric, mode))
    assert [judge(name, v) for name, v in zip("abc", sane)][-1] == TrialScheduler.STOP
    assert judge("nan", float("nan")) == TrialScheduler.STOP
    assert judge("nan2", float("inf") if mode == "min" else float("nan")) == TrialScheduler.STOP   # no NaN cut-off
    assert judge("late", sane[0]) == TrialScheduler.CONTINUE
    row = {"epoch": 2, metric: 0.5, best_key(metric): 0.5}
    assert judged(row, metric, mode) is row                             # a number goes as it is


@pytest.mark.parametrize("grace,factor,epochs", [(1, 2.5, 27), (2, 3, 27), (1, 2, 8), (3, 2, 20), (4, 4, 4)])
def test_the_report_draws_the_rungs_at_the_epochs_asha_judges(grace, factor, epochs):
    """The report's rung lines: with reduction_factor 2.5, one was drawn at 12 where ASHA judged at 13."""
    import math

    from ray.tune.schedulers.async_hyperband import _Bracket

    from tuning.space import rungs

    spec = _spec({"scheduler": {"asha": {"grace_period": grace, "reduction_factor": factor}}}, epochs=epochs + 1)
    spec.train.epochs = epochs
    judged = sorted(math.ceil(m) for m, _ in _Bracket(grace, epochs, factor, 0)._rungs if math.ceil(m) < epochs)
    assert rungs(spec) == judged


def test_a_resumed_search_runs_by_the_new_plan_not_the_one_it_saved():
    """Tune restores a search's algorithm whole on --resume (its pickle, then its saved state): the first run's
    limit of trials at once came back, on a smaller cluster too, while the new plan was printed."""
    from ray import cloudpickle

    from tuning.searchers import planned

    first = space.search_alg(_spec({"lr": {"choice": [0.1, 0.01, 0.001]}}), 4)
    pickled, saved = cloudpickle.dumps(first), first.get_state()
    assert cloudpickle.loads(pickled).max_concurrent == 4                  # outside a run: as it was saved
    with planned(1):
        restored = cloudpickle.loads(pickled)                              # tuner.pkl
        assert restored.max_concurrent == 1
        restored.set_state({**saved, "max_concurrent": 4})                 # then the searcher's own saved state
        assert restored.max_concurrent == 1
        assert space.search_alg(_spec(), 1).max_concurrent == 1


@pytest.fixture(scope="module")
def asha_search(tmp_path_factory, telemetry_dir, ray_session):
    tmp = tmp_path_factory.mktemp("tune")
    spec = write_spec(tmp / "spec.yaml", tuning_spec("tune-asha", telemetry_dir, tmp / "out"))
    # What other tests still hold (the session's Serve apps keep their replicas): the search must give back
    # everything it took, not more than was free before it.
    free_before = ray_session.available_resources().get("CPU", 0)
    t0 = time.monotonic()
    # `trainyard run` dispatches to tuning when the spec has a tune section.
    assert main(["run", str(spec), "--no-serve"]) == 0
    return spec, tmp / "out", time.monotonic() - t0, free_before


def test_four_trial_asha_search_finishes_on_two_cores(asha_search):
    _, out, seconds, _ = asha_search
    rows = read_results(out)
    assert len(rows) == 4
    assert all(r["status"] in ("completed", "stopped") for r in rows), rows
    assert {float(r["lr"]) for r in rows} == {0.03, 0.01, 1e-5, 1e-6}
    assert (out / "tune" / "report.png").stat().st_size > 10_000
    assert seconds < 600


def test_asha_stops_the_hopeless_trials_early(asha_search):
    _, out, _, _ = asha_search
    rows = {float(r["lr"]): r for r in read_results(out)}
    stopped = [r for r in rows.values() if r["status"] == "stopped"]
    assert stopped, rows
    for r in stopped:
        # Judged at ASHA's first rung. On data this small the workers may train on (even to the last epoch)
        # while the verdict travels: epochs_run counts what they trained, judged_at_epoch what ASHA saw.
        assert int(r["judged_at_epoch"]) < 4 and int(r["epochs_run"]) >= int(r["judged_at_epoch"])
    assert rows[0.03]["status"] == "completed" and int(rows[0.03]["epochs_run"]) == 4
    # What ASHA judged: every result Tune received carries the trial's best val_loss so far.
    for result_file in experiment_dir(out).glob("trial-*/result.json"):
        results = [json.loads(line) for line in result_file.read_text().splitlines()]
        epochs = [r for r in results if "epoch" in r]
        assert epochs, result_file
        for n, r in enumerate(epochs):
            assert r["best_val_loss"] == pytest.approx(min(e["val_loss"] for e in epochs[:n + 1]))


def test_best_trial_becomes_a_bundle_that_loads_and_predicts(asha_search, telemetry_dir):
    spec_path, out, _, _ = asha_search
    rows = read_results(out)
    best = rows[0]                               # results.csv is ranked, best first
    assert best["status"] == "completed" and float(best["lr"]) in (0.03, 0.01)
    lineage = json.loads((out / "bundle" / "lineage.json").read_text())
    assert lineage["trial_id"] == best["trial_id"]
    assert lineage["tune"]["config"] == {"lr": float(best["lr"])} and lineage["tune"]["metric"] == "val_loss"
    # The bundle's spec says what trained its weights: the winning trial's learning rate.
    assert load_spec(out / "bundle" / "spec.yaml").train.lr == float(best["lr"])
    bundle = B.load(out)
    import pandas as pd
    records = pd.read_parquet(next(telemetry_dir.glob("*.parquet"))).head(5).to_dict("records")
    pred = bundle.predict(records)
    assert len(pred["predictions"]) == 5 and set(pred["predictions"]) <= {"failure", "ok"}
    assert "accuracy" in bundle.metrics["test"]
    # Preprocessing was fitted once, before the trials: the experiment records one data fingerprint.
    from tuning.resume import EXPERIMENT_FILE
    info = json.loads((experiment_dir(out) / EXPERIMENT_FILE).read_text())
    assert info["fingerprint"] == lineage["data"]["fingerprint"]


def test_impossible_spec_is_refused_before_any_data_is_read(tmp_path, telemetry_dir, ray_session, capsys):
    spec = write_spec(tmp_path / "s.yaml", tuning_spec("too-big", telemetry_dir, tmp_path / "out", ))
    t0 = time.monotonic()
    assert main(["tune", str(spec), "--set", "train.workers=4"]) == 2          # bad input: the spec asks too much
    err = capsys.readouterr().err
    assert "needs train.workers=4" in err and "lower train.workers to 2" in err, err
    assert time.monotonic() - t0 < 20 and not (tmp_path / "out").exists()
    assert main(["tune", str(spec), "--set", "tune.scheduler.asha.grace_period=9"]) == 2
    assert "grace_period=9 is more than train.epochs=4" in capsys.readouterr().err


def test_failed_trials_are_reported_and_only_all_failing_is_fatal(tmp_path, telemetry_dir, ray_session, capfd):
    # A layer far wider than any machine's address space: the trial's Train run fails allocating the model.
    too_wide = [2 ** 44]
    # One trial at a time: the failing trial runs in the process the finished one handed on (Tune's
    # reuse_actors), so a failure there must be reported like any other.
    spec = write_spec(tmp_path / "s.yaml", tuning_spec(
        "failing", telemetry_dir, tmp_path / "out", epochs=1, max_failures=0,
        tune={"lr": None, "hidden": {"choice": [[16], too_wide]}, "scheduler": "none", "max_concurrent": 1}))
    before = Counter(a.class_name for a in ray_compat.actor_table())
    assert main(["tune", str(spec)]) == 0
    rows = {r["hidden"]: r for r in read_results(tmp_path / "out")}
    assert rows["16"]["status"] == "completed"
    failed = rows[str(2 ** 44)]
    assert failed["status"] == "error" and "allocate" in failed["error"], failed
    started = Counter(a.class_name for a in ray_compat.actor_table()) - before
    # Tune's function trainable: "ImplicitFunc", or "wrap_function.<locals>.ImplicitFunc" as Ray names it at times.
    trial_processes = sum(n for name, n in started.items() if name.endswith("ImplicitFunc"))
    assert trial_processes == 1 and started["TrainController"] == 2, started
    # The failure is said once, by trainyard, with where its traceback is (Ray Tune's own report of it is kept out:
    # tests/test_output.py).
    out = capfd.readouterr().out
    said = [line for line in out.splitlines() if line.startswith(f"[tune] {failed['trial_id']} failed: ")]
    assert len(said) == 1 and "allocate" in said[0], out
    traceback = Path(said[0].rsplit("(traceback: ", 1)[1].rstrip(")"))
    assert tmp_path / "out" in traceback.parents and "allocate" in traceback.read_text()   # in the run's own folder
    spec = write_spec(tmp_path / "s2.yaml", tuning_spec(
        "all-failing", telemetry_dir, tmp_path / "out2", epochs=1, max_failures=0,
        tune={"lr": None, "hidden": {"choice": [too_wide]}, "scheduler": "none"}))
    assert main(["tune", str(spec)]) == 1
    assert "no trial produced a model (1 trial(s), 1 failed)" in capfd.readouterr().err


def test_a_time_budget_too_short_for_any_epoch_is_named(tmp_path, telemetry_dir, ray_session, capsys):
    """tune.time_budget_s that ends the search before any trial reports: the budget is named as the cause (not
    "fix the error above"), exit 2, and the trials it never started show no configuration they did not try."""
    spec = write_spec(tmp_path / "s.yaml", tuning_spec("budget", telemetry_dir, tmp_path / "out",
                                                       tune={"time_budget_s": 0.5, "scheduler": "none",
                                                             "lr": {"choice": [0.03, 0.003]},
                                                             "batch_size": {"choice": [32, 64]}}))
    assert main(["tune", str(spec)]) == 2
    captured = capsys.readouterr()
    err, out = captured.err, captured.out
    assert "tune.time_budget_s=0.5 ran out before any trial finished an epoch" in err, err
    assert "raise tune.time_budget_s or remove it" in err and "Fix the error above" not in err
    assert re.search(r"\(\d of 4 trial\(s\) started\)", err), err
    assert "[tune] tune.time_budget_s=0.5 ran out after" in out + err
    rows = read_results(tmp_path / "out")       # every trial of the grid, those Tune never created as not_run
    assert len(rows) == 4 and all(r["status"] in ("not_run", "time_budget") and not r["best_val_loss"]
                                  for r in rows), rows
    # A trial shows the rate it was given, or none (before Tune handed it one); never train.lr (0.01 here),
    # which this grid does not try.
    assert all(r["lr"] in ("", "0.03", "0.003") for r in rows), rows
    # The budget is the whole search's: a --resume finds it spent (Tune keeps what is left), says so with the time
    # of both runs, and ends as the first run did, not as "interrupted" (exit 130) again and again.
    first = json.loads(next((tmp_path / "out" / "ray").glob("tune-*/trainyard.record")).read_text())["searched_s"]
    assert first >= 0.5
    assert main(["tune", str(spec), "--resume"]) == 2
    captured = capsys.readouterr()
    assert "tune.time_budget_s=0.5 ran out before any trial finished an epoch" in captured.err, captured.err
    assert "s of them in this run, the rest before --resume)" in captured.out + captured.err
    assert "interrupted" not in captured.out + captured.err
    record = json.loads(next((tmp_path / "out" / "ray").glob("tune-*/trainyard.record")).read_text())
    assert record["searched_s"] > first


def test_a_time_budget_is_the_whole_searchs_and_only_a_ctrl_c_interrupts():
    from tuning.experiment import budget_ran_out
    # Resumed with 100 s of a 600 s budget left, Tune ends it after ~100 s: by this run's time alone (what was
    # judged before) its trials were "interrupted", and every --resume again. Ended with no Ctrl-C: the budget.
    assert budget_ran_out(600, stopped_by_user=False)
    assert not budget_ran_out(600, stopped_by_user=True)      # Ctrl-C: interrupted, resumable (whatever the time)
    assert not budget_ran_out(None, stopped_by_user=False)    # no budget


def test_stopped_trials_give_back_their_cpus(asha_search, ray_session):
    """ASHA ends a trial's process mid-run; its Train run's placement group must not stay reserved, and no
    Ray Train cleaner actor may stay behind polling for a controller it cannot see die."""
    from tuning._placement import (describe_placement_groups, live_placement_cleaners, orphaned_placement_groups,
                                   train_groups)
    free_before = asha_search[3]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        free = ray_session.available_resources().get("CPU", 0)
        if free >= free_before and not orphaned_placement_groups():
            break
        time.sleep(1)
    assert train_groups() == 0, describe_placement_groups()
    assert free >= free_before, (free_before, free, describe_placement_groups())
    assert not orphaned_placement_groups()
    assert live_placement_cleaners() == 0


def test_report_plots_against_the_axis_that_was_searched(tmp_path):
    """The left panel's x axis is what the search varied: the learning rate, else weight decay (0 included),
    dropout, or the layer widths as categories; never an axis every trial shared."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tuning import report as R

    def record(i, **config):
        return R.TrialRecord(trial_id=f"t{i}", status=R.COMPLETED, best_value=0.5 - 0.1 * i,
                             config={"lr": 1e-3, "batch_size": 32, **config},
                             history=[{"epoch": 1, "val_loss": 0.6}, {"epoch": 2, "val_loss": 0.5 - 0.1 * i}])

    seen = {}
    real_savefig = plt.Figure.savefig

    def keep_axes(fig, *args, **kwargs):
        ax = fig.axes[0]
        seen["xlabel"], seen["xscale"] = ax.get_xlabel(), ax.get_xscale()
        seen["ticks"] = [t.get_text() for t in ax.get_xticklabels()]
        return real_savefig(fig, *args, **kwargs)

    plt.Figure.savefig = keep_axes
    try:
        hidden = [record(i, hidden=h) for i, h in enumerate([[16], [32, 16], [64]])]
        R.plot(hidden, "val_loss", "min", tmp_path / "h.png", rungs=[], title="t", searched=["hidden"])
        assert seen["xlabel"] == "layer widths" and seen["ticks"] == ["16", "32x16", "64"], seen
        decay = [record(i, weight_decay=w) for i, w in enumerate([0.0, 1e-4, 1e-2])]
        R.plot(decay, "val_loss", "min", tmp_path / "w.png", rungs=[], title="t", searched=["weight_decay"])
        assert seen["xlabel"] == "weight decay" and seen["xscale"] == "symlog", seen
        rates = [record(i, lr=lr) for i, lr in enumerate([2e-3, 4e-3, 8e-3])]
        R.plot(rates, "val_loss", "min", tmp_path / "l.png", rungs=[1], title="t", searched=["lr", "hidden"])
        assert seen["xlabel"] == "learning rate" and seen["xscale"] == "log", seen
    finally:
        plt.Figure.savefig = real_savefig
    assert all((tmp_path / f).stat().st_size > 10_000 for f in ("h.png", "w.png", "l.png"))


def test_the_start_line_says_which_given_settings_a_search_does_not_use():
    from tuning.lines import describe_search

    grid = _spec({"search": "grid", "samples": 4, "seed": 3, "lr": {"choice": [0.1, 0.01]}, "batch_size": None})
    assert "grid search, 2 trial(s) (tune.samples, tune.seed not used by a grid search)" in describe_search(grid)
    assert "not used" not in describe_search(_spec({"search": "grid", "lr": {"choice": [0.1]}}))
    assert "(tune.grid_points not used by a random search)" in describe_search(_spec({"grid_points": 5}))
    # Without a scheduler, a trial's own train.early_stop still stops it: the line said "no early stopping" above
    # trials marked early_stopped.
    assert ", no scheduler (each trial's train.early_stop (patience 5) still applies), " in describe_search(
        _spec({"scheduler": "none"}))
    assert ", no scheduler (no early stopping), " in describe_search(_spec({"scheduler": "none"}, early_stop=None))


def test_batch_sizes_above_the_train_rows_a_worker_holds_are_said():
    """A choice of 4096 on 2,360 train rows won the search by its epoch-1 score, then scored a test AUC of 0.58;
    `train` said it of its own batch, the search said nothing."""
    from tuning.space import batch_note

    spec = _spec({"batch_size": {"choice": [64, 4096, 100000]}})
    assert batch_note(spec, 2360) == (
        "[tune] note: tune.batch_size 4096, 100000 is more than the 2,360 train row(s) per worker: such a trial "
        "takes one step of 2,360 an epoch, whose early validation score may win the search; leave it out, or train "
        "on more rows")
    assert batch_note(spec, 200_000) is None and batch_note(_spec({"batch_size": None}), 10) is None


def test_a_trial_tune_restarts_is_said_with_its_cause_and_its_traceback_kept_at_once(tmp_path):
    """A failure Tune retries (a node preempted under a trial, not counted against max_failures) is said by
    trainyard, since Ray's own record of it is kept out of the output (cluster.quiet.TUNE_FAILURE_LOGS); the
    traceback the line names is in the trial's own folder when the line is said, not at Tune's next snapshot.
    The trial is a stand-in with the attributes the callback reads: a preemption needs a second node to lose."""
    from types import SimpleNamespace

    import pyarrow.fs

    from tuning import experiment

    staging = tmp_path / "ray-session" / "trial-1"         # Tune's copy, on the driver's node
    staging.mkdir(parents=True)
    (staging / "error.txt").write_text("Traceback (most recent call last):\n  File \"x.py\", line 1\n"
                                       "ray.exceptions.NodeDiedError: the node running the trial was preempted\n")
    trial = SimpleNamespace(trial_id="abc_00001", error_file=str(staging / "error.txt"),
                            path=str(tmp_path / "out" / "trial-1"),
                            storage=SimpleNamespace(storage_filesystem=pyarrow.fs.LocalFileSystem()))
    said: list[str] = []
    with experiment._progress_sink(said.append):
        experiment._Progress(str(tmp_path / "out"), "val_f1", 10).on_trial_recover(0, [trial], trial)
    kept = tmp_path / "out" / "trial-1" / "error.txt"
    assert said == [f"[tune] abc_00001 restarts after a failure: ray.exceptions.NodeDiedError: the node running "
                    f"the trial was preempted (traceback: {kept})"], said
    assert "preempted" in kept.read_text()


def test_a_trial_that_stopped_itself_is_told_from_one_the_scheduler_stopped(tmp_path):
    """Both read "stopped early, judged at epoch N", the README's words for a trial ASHA stopped."""
    from types import SimpleNamespace

    from tuning import experiment

    said: list[str] = []
    progress = experiment._Progress(str(tmp_path / "out"), "val_f1", 10, patience=2)
    with experiment._progress_sink(said.append):
        for trial_id, epoch, best in (("a_00000", 4, 2), ("a_00001", 3, 3), ("a_00002", 10, 5)):
            trial = SimpleNamespace(trial_id=trial_id, last_result={"epoch": epoch, "best_epoch": best})
            progress.on_trial_complete(0, [trial], trial)
    assert said == ["[tune] a_00000 stopped early by train.early_stop at epoch 4 (no better for 2 epoch(s))",
                    "[tune] a_00001 stopped early by the scheduler, judged at epoch 3",
                    "[tune] a_00002 finished its 10 epoch(s)"]


def test_a_callback_an_earlier_trainyard_pickled_ends_resumed_trials_without_failing_them(tmp_path):
    """Tune restores its pickle of the callback on --resume, not a new one: a search started by trainyard of
    2026-12-04 pickled it without `patience`, and every trial the resumed search ran was marked `error`
    ("'_Progress' object has no attribute 'patience'") after training all its epochs."""
    import pickle
    from types import SimpleNamespace

    from tuning import experiment

    before = experiment._Progress(str(tmp_path / "out"), "val_f1", 4)
    del before.patience                       # the state the earlier trainyard's callback was pickled with
    restored = pickle.loads(pickle.dumps(before))
    said: list[str] = []
    with experiment._progress_sink(said.append):
        trial = SimpleNamespace(trial_id="a_00002", last_result={"epoch": 4, "best_epoch": 3, "val_f1": 0.71})
        restored.on_trial_complete(0, [trial], trial)
    assert said == ["[tune] a_00002 finished its 4 epoch(s)"]
    assert (tmp_path / "out" / experiment.ENDED_DIR / "a_00002.json").is_file()


def test_an_experiment_started_before_fill_value_went_with_constant_alone_still_resumes(tmp_path):
    """Experiments recorded `fill_value: 0.0` (the old, unused default) beside impute: median; the spec now says
    null there. The same search, not a changed one."""
    import json

    from tuning.resume import EXPERIMENT_FILE, check_same_spec

    spec = validate_spec({"name": "x", "data": {"path": "d", "label": "y"}, "tune": {"samples": 2}})
    old = spec.model_dump(mode="json")
    old["data"]["preprocess"]["fill_value"] = 0.0
    (tmp_path / EXPERIMENT_FILE).write_text(json.dumps({"spec": old}))
    check_same_spec(tmp_path, spec)
    old["data"]["preprocess"]["impute"] = "mean"
    (tmp_path / EXPERIMENT_FILE).write_text(json.dumps({"spec": old}))
    with pytest.raises(SpecError, match=r"data.preprocess.impute: 'mean' → 'median'"):
        check_same_spec(tmp_path, spec)


def test_a_search_submitted_with_a_relative_data_path_resumes_here_as_the_same_search(tmp_path, monkeypatch):
    """`trainyard submit` records data.path absolute (the job runs in another folder); `trainyard tune SPEC
    --resume` here, given the relative path the spec says, was refused as a changed spec. Another folder is still
    another search, and a URI is compared as written."""
    import json

    from tuning.resume import EXPERIMENT_FILE, check_same_spec

    monkeypatch.chdir(tmp_path)
    spec = validate_spec({"name": "x", "data": {"path": "data/labs/", "label": "y"}, "tune": {"samples": 2}})
    started = spec.model_dump(mode="json")
    started["data"]["path"] = str(tmp_path / "data" / "labs")
    (tmp_path / EXPERIMENT_FILE).write_text(json.dumps({"spec": started}))
    check_same_spec(tmp_path, spec)
    started["data"]["path"] = str(tmp_path / "data" / "other")
    (tmp_path / EXPERIMENT_FILE).write_text(json.dumps({"spec": started}))
    with pytest.raises(SpecError, match=r"data.path: '.*data/other' → '.*data/labs'"):
        check_same_spec(tmp_path, spec)
    uri = validate_spec({"name": "x", "data": {"path": "s3://b/labs", "label": "y"}, "tune": {"samples": 2}})
    (tmp_path / EXPERIMENT_FILE).write_text(json.dumps({"spec": uri.model_dump(mode="json")}))
    check_same_spec(tmp_path, uri)


def test_resume_of_a_search_stopped_before_it_saved_a_trial_starts_it_anew(tmp_path):
    """Ctrl-C in a search's first seconds left Tune's tuner.pkl and no trial state: `--resume` printed Ray's
    "Failed to restore the run state" traceback, ran one trial of no configuration, and its next resume failed in
    the report. The newest experiment of the spec, restorable only in name, is nothing to resume; an older one is
    not taken in its place; one with Tune's state is resumed as before."""
    import json

    from tuning.experiment import TuneInputError, _find_experiment
    from tuning.resume import EXPERIMENT_FILE, EXPERIMENT_PREFIX

    spec = validate_spec({"name": "x", "data": {"path": "d", "label": "y"}, "tune": {"samples": 2}})
    with pytest.raises(TuneInputError, match=r"--resume: no tuning experiment to continue under .*; drop --resume"):
        _find_experiment(str(tmp_path), spec)
    older, newest = tmp_path / f"{EXPERIMENT_PREFIX}20261206-080000", tmp_path / f"{EXPERIMENT_PREFIX}20261206-090000"
    for folder in (older, newest):
        folder.mkdir()
        (folder / EXPERIMENT_FILE).write_text(json.dumps({"spec": spec.model_dump(mode="json")}))
        (folder / "tuner.pkl").write_bytes(b"settings")
    (older / "experiment_state-2026-12-06_08-00-05.json").write_text("{}")
    assert _find_experiment(str(tmp_path), spec) is None
    (newest / "tuner.pkl").unlink()                     # stopped sooner still: Tune had saved nothing
    assert _find_experiment(str(tmp_path), spec) is None
    (newest / "tuner.pkl").write_bytes(b"settings")
    (newest / "experiment_state-2026-12-06_09-00-05.json").write_text("{}")
    assert _find_experiment(str(tmp_path), spec) == newest


def test_resume_finds_this_specs_search_among_a_colleagues_and_not_a_finished_one(tmp_path):
    """Two people searching to one output: A's --resume after B's newer search was "the spec changed since
    experiment <B's> started (tune.samples: 2 → 4 ...)", and following that advice resumed B's finished search
    (exit 0, a second copy of its bundle). Two searches started in the same second shared one folder."""
    import json

    from tuning.plan import TuneInputError
    from tuning.resume import EXPERIMENT_FILE, mark_finished, new_experiment, started_experiment

    mine = validate_spec({"name": "x", "data": {"path": "d", "label": "y"}, "tune": {"samples": 4, "seed": 1}})
    theirs = mine.model_copy(update={"tune": mine.tune.model_copy(update={"samples": 2, "seed": 2})})
    a, b = new_experiment(str(tmp_path)), new_experiment(str(tmp_path))
    assert a != b and b.name.startswith(a.name) and b.name > a.name           # the same second: its own folder
    for folder, spec in ((a, mine), (b, theirs)):
        (folder / EXPERIMENT_FILE).write_text(json.dumps({"spec": spec.model_dump(mode="json")}))
    assert started_experiment(str(tmp_path), mine) == a
    assert started_experiment(str(tmp_path), theirs) == b
    mark_finished(b, tmp_path / "bundles" / "v2")
    with pytest.raises(TuneInputError, match=rf"--resume: the newest search of this spec, {b.name}, finished at "
                                             r".* and made .*bundles/v2: nothing to resume; drop --resume"):
        started_experiment(str(tmp_path), theirs)
    other = mine.model_copy(update={"tune": mine.tune.model_copy(update={"samples": 8})})
    with pytest.raises(SpecError, match=rf"--resume: the spec changed since experiment {b.name} started"):
        started_experiment(str(tmp_path), other)         # no search of its own: the newest one's differences


def test_a_search_an_earlier_trainyard_finished_is_not_resumed_to_write_its_bundle_again(tmp_path):
    """A trainyard of 2026-12-04 recorded no end of a search: `--resume` of one it had finished ran 41 s, trained
    nothing and wrote the same best trial's bundle again as a new version. Every planned trial ended and a bundle
    naming the search: refused before Ray. Either alone resumes (an interrupted search's best so far; a search
    stopped before its bundle)."""
    from tuning.plan import TuneInputError
    from tuning.resume import ENDED_DIR, LEGACY_EXPERIMENT_FILE, new_experiment, started_experiment

    spec = validate_spec({"name": "x", "data": {"path": "d", "label": "y"}, "tune": {"samples": 2}})
    root = tmp_path / "out" / "ray"
    experiment = new_experiment(str(root))
    (experiment / LEGACY_EXPERIMENT_FILE).write_text(json.dumps({"spec": spec.model_dump(mode="json")}))
    (experiment / ENDED_DIR).mkdir()
    (experiment / ENDED_DIR / "a_00000.json").write_text("{}")
    version = tmp_path / "out" / "bundles" / "20261208-005406"
    version.mkdir(parents=True)
    (version / "lineage.json").write_text(json.dumps({"tune": {"experiment": f"/elsewhere/ray/{experiment.name}"}}))
    assert started_experiment(str(root), spec) == experiment          # one of two trials ended: interrupted
    (experiment / ENDED_DIR / "a_00001.json").write_text("{}")
    with pytest.raises(TuneInputError, match=rf"--resume: the newest search of this spec, {experiment.name}, ended "
                                             r"all its 2 trial\(s\) and made bundle 20261208-005406 \(an earlier "
                                             r"trainyard, which recorded no end of a search\): nothing to resume"):
        started_experiment(str(root), spec)
    (version / "lineage.json").write_text(json.dumps({"tune": {"experiment": str(root / "tune-other")}}))
    assert started_experiment(str(root), spec) == experiment          # no bundle of it: stopped before one


def test_a_new_search_of_the_same_space_and_seed_says_it_draws_the_same_trials(tmp_path):
    """A second search of the same spec into one output, or of more samples for more of the space, drew and
    trained the first one's configurations again (the search is seeded by tune.seed, by default train.seed), and
    nothing said so. Its first lines say it, naming the earlier search; another seed, another space, or a grid,
    nothing."""
    from tuning.resume import record_file, repeated_draw, start_experiment

    spec = validate_spec({"name": "x", "data": {"path": "d", "label": "y"}, "train": {"seed": 3},
                          "tune": {"samples": 4, "lr": {"loguniform": [1e-4, 1e-2]}}})
    root = str(tmp_path / "ray")
    first, note = start_experiment(root, spec, "f" * 64, "val_loss", "min")
    assert note is None and json.loads(record_file(first).read_text())["fingerprint"] == "f" * 64
    second, note = start_experiment(root, spec, "f" * 64, "val_loss", "min")
    assert second != first and note == (
        f"[tune] the search space and seed (3) are those of the earlier search {first.name}: the same 4 "
        "configuration(s) are drawn again; set tune.seed to another number to draw others")
    reseeded = spec.model_copy(update={"tune": spec.tune.model_copy(update={"seed": 4})})
    assert repeated_draw(root, reseeded) is None
    retrained = spec.model_copy(update={"train": spec.train.model_copy(update={"seed": 4})})
    assert repeated_draw(root, retrained) is None                 # tune.seed unset: train.seed seeds the search
    wider = validate_spec({"name": "x", "data": {"path": "d", "label": "y"}, "train": {"seed": 3},
                           "tune": {"samples": 8, "lr": {"loguniform": [1e-4, 1e-2]}}})
    assert repeated_draw(root, wider).endswith(f"{second.name}: the first 4 of its 8 configuration(s) (that search "
                                               "had 4) are drawn again; set tune.seed to another number to draw others")
    wider_and_reseeded = wider.model_copy(update={"tune": wider.tune.model_copy(update={"seed": 5})})
    assert repeated_draw(root, wider_and_reseeded) is None
    other_axis = spec.model_copy(update={"tune": spec.tune.model_copy(update={"batch_size": None})})
    assert repeated_draw(root, other_axis) is None
    # What does not change the draw does not hide it: a budget, the scheduler, the metric; the same seed written as
    # tune.seed where the earlier search took train.seed's.
    budgeted = spec.model_copy(update={"tune": spec.tune.model_copy(update={"time_budget_s": 60.0, "seed": 3,
                                                                            "scheduler": "none"})})
    assert repeated_draw(root, budgeted).endswith(f"{second.name}: the same 4 configuration(s) are drawn again; set "
                                                  "tune.seed to another number to draw others")
    fewer = spec.model_copy(update={"tune": spec.tune.model_copy(update={"samples": 2})})
    assert repeated_draw(root, fewer).endswith(f"{second.name}: its 2 configuration(s), the first 2 of that search's "
                                               "4, are drawn again; set tune.seed to another number to draw others")
    grid = spec.model_copy(update={"tune": spec.tune.model_copy(update={"search": "grid"})})
    start_experiment(root, grid, "f" * 64, "val_loss", "min")
    assert repeated_draw(root, grid) is None
    (tmp_path / "ray" / "tune-99999999-999999").mkdir()           # a folder without a record is passed over
    assert repeated_draw(root, spec).endswith(f"{second.name}: the same 4 configuration(s) are drawn again; set "
                                              "tune.seed to another number to draw others")


def test_a_second_ctrl_c_still_says_how_to_resume(tmp_path):
    """A second Ctrl-C stops Tune at once (KeyboardInterrupt out of fit, without its last save): the command said
    "interrupted" alone, though the trials Tune had saved resume. It says where the experiment is and the
    command that continues it, and is still an interrupt."""
    from tuning.experiment import _resume_hint

    lines = []
    with pytest.raises(KeyboardInterrupt):
        with _resume_hint(lines.append, tmp_path / "tune-1", "trainyard tune s.yaml --resume"):
            raise KeyboardInterrupt
    assert lines == [f"[tune] stopped at once; the experiment as Tune last saved it is at {tmp_path / 'tune-1'}. "
                     "Continue it with: trainyard tune s.yaml --resume"]
    with _resume_hint(lines.append, tmp_path, "x"):
        pass
    assert len(lines) == 1


def test_ctrl_c_after_the_search_is_as_before_it(monkeypatch):
    """Tune's SIGINT handler stayed once a search ended without a Ctrl-C: a Ctrl-C while the best trial was
    evaluated printed Tune's warning, was ignored, and the command exited 0."""
    import signal

    from tuning.experiment import _own_stop_notice

    before = signal.getsignal(signal.SIGINT)
    with _own_stop_notice():
        signal.signal(signal.SIGINT, lambda *_: None)       # as Tune's fit installs its own
    assert signal.getsignal(signal.SIGINT) is before
