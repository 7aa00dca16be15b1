"""The tuning report's panels keep every trial readable: one diverged trial must not flatten the others."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from tuning import report as R  # noqa: E402


def _trial(i: int, losses: list[float], lr: float) -> R.TrialRecord:
    history = [{"epoch": e, "val_loss": v} for e, v in enumerate(losses, 1)]
    return R.TrialRecord(trial_id=f"t{i}", status=R.COMPLETED, config={"lr": lr, "batch_size": 32},
                         history=history, best_value=min(losses), best_epoch=losses.index(min(losses)) + 1)


def _axes_of_plot(records, tmp_path) -> dict:
    """Plot the report and keep what its panels' y axes were when the figure was saved."""
    seen = {}
    real_savefig = plt.Figure.savefig

    def keep_axes(fig, *args, **kwargs):
        for name, ax in zip(("best", "curves"), fig.axes):
            seen[name] = {"scale": ax.get_yscale(), "ylim": ax.get_ylim(), "texts": [t.get_text() for t in ax.texts]}
        return real_savefig(fig, *args, **kwargs)

    plt.Figure.savefig = keep_axes
    try:
        R.plot(records, "val_loss", "min", tmp_path / "report.png", rungs=[], title="t", searched=["lr"])
    finally:
        plt.Figure.savefig = real_savefig
    assert (tmp_path / "report.png").stat().st_size > 10_000
    return seen


def test_a_diverged_trial_leaves_the_other_learning_curves_readable(tmp_path):
    good = [[0.70, 0.50, 0.42, 0.38, 0.36], [0.65, 0.45, 0.33, 0.30, 0.29], [0.80, 0.60, 0.55, 0.50, 0.48],
            [0.69, 0.52, 0.40, 0.35, 0.31]]
    diverged = [0.9, 5.0, 20.0, 45.0, 66.0]
    records = [_trial(i, c, lr) for i, (c, lr) in enumerate(zip(good + [diverged], [1e-3, 3e-3, 1e-2, 3e-4, 0.3]))]
    curves = _axes_of_plot(records, tmp_path)["curves"]
    bottom, top = curves["ylim"]
    low, high = min(min(c) for c in good), max(max(c) for c in good)
    assert bottom <= low and high <= top, curves                # every readable curve is on the axis ...
    assert curves["scale"] == "linear" and (high - low) / (top - bottom) > 0.7, curves   # ... and fills it
    assert top < 66, curves                                      # the diverged epochs are off the axis ...
    assert any("off the axis" in t for t in curves["texts"]), curves  # ... and said to be


def test_curves_spanning_decades_get_a_log_axis(tmp_path):
    """No outlier, but losses from 2.0 down to 0.01: on a linear axis the last epochs would all sit at zero."""
    records = [_trial(0, [2.0, 0.5, 0.1, 0.03, 0.01], 1e-3), _trial(1, [1.5, 0.8, 0.3, 0.1, 0.05], 1e-2),
               _trial(2, [1.8, 1.0, 0.6, 0.4, 0.3], 1e-4)]
    axes = _axes_of_plot(records, tmp_path)
    assert axes["curves"]["scale"] == "log" and axes["curves"]["ylim"][0] <= 0.01, axes
    assert not axes["curves"]["texts"]


@pytest.mark.parametrize("values, scale, limits", [
    ([0.5, 0.45, 0.4, 0.42, 0.38], "linear", None),                       # one bulk: as it is
    ([0.9, 0.85, 0.91, 0.88, 0.7, -50.0], "linear", (0.6895, 0.9205)),    # val_r2 of a diverged trial: left off
    ([0.01, 0.02, 0.05, 0.1, 0.3, 1.0], "log", None),                      # two decades, no outlier
    ([0.5] * 6 + [0.6], "linear", None),                                   # near-equal values: nothing is off
])
def test_value_axis(values, scale, limits):
    axis = R.value_axis(values)
    assert axis.scale == scale
    assert axis.limits == (pytest.approx(limits) if limits else None)


def test_a_search_with_no_scored_trial_plots_without_a_warning(tmp_path):
    """A time budget that ran out before any trial reported (`tune.time_budget_s`): no point and no best, so no
    legend; matplotlib warned "No artists with labels found to put in legend" into the user's output."""
    import warnings

    # A trial that never started has a blank for every axis sampled (tuning.experiment._records).
    unscored = [R.TrialRecord(trial_id=f"t{i}", status=R.NOT_RUN, config={"lr": None, "batch_size": None})
                for i in range(2)]
    # Trials that started, given their rates and batch sizes, but ended by the budget before an epoch: matplotlib
    # failed to draw the empty log axis ("Data cannot be log-scaled because all values are <= 0"), and the search
    # ended in that traceback (exit 1) instead of the error naming the budget.
    given = [R.TrialRecord(trial_id=f"t{i}", status=R.TIME_BUDGET, config={"lr": lr, "batch_size": batch})
             for i, (lr, batch) in enumerate([(0.01, 32), (0.001, 64)])]
    for records, searched in ((unscored, ["lr"]), ([], ["lr"]), (given, ["lr", "batch_size"])):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            R.plot(records, "val_loss", "min", tmp_path / "report.png", rungs=[], title="t", searched=searched)
        assert (tmp_path / "report.png").stat().st_size > 1_000


def test_the_trials_tune_never_created_are_listed_as_not_run():
    """Tune creates a trial once there is room to run it: those left when a time budget ran out were missing from
    the table and results.csv, which the README says lists them as not_run."""
    made = [R.TrialRecord(trial_id="6b940_00000", status=R.TIME_BUDGET, config={"lr": 0.01}),
            R.TrialRecord(trial_id="6b940_00002", status=R.COMPLETED, config={"lr": 0.1})]
    records = R.with_unstarted(made, 5, {"lr": None, "batch_size": 32})
    assert [(r.trial_id, r.status, r.config) for r in records[2:]] == [
        (f"6b940_0000{i}", R.NOT_RUN, {"lr": None, "batch_size": 32}) for i in (1, 3, 4)]
    assert R.with_unstarted(made, 2, {}) == made
    # Optuna names its trials by a random id; before any trial was made, there is no prefix either.
    optuna = [R.TrialRecord(trial_id="3f2a9c1e", status=R.TIME_BUDGET, config={})]
    assert [r.trial_id for r in R.with_unstarted(optuna, 3, {})] == ["3f2a9c1e", "unstarted_00000", "unstarted_00001"]
    assert [r.trial_id for r in R.with_unstarted([], 2, {})] == ["unstarted_00000", "unstarted_00001"]


def test_with_no_scheduler_a_trial_is_judged_by_how_far_its_checkpoint_went(tmp_path, monkeypatch):
    """A driver killed (kill -9) as the workers trained on: the checkpoint reached the last epoch, Tune's saved
    result an earlier one, and after --resume a search with no scheduler said "stopped early by the scheduler",
    with every later epoch "ran on after the scheduler stopped it"."""
    from types import SimpleNamespace

    from jobs.spec import validate_spec
    from tuning import experiment

    spec = validate_spec({"name": "t", "data": {"path": str(tmp_path), "label": "y"}, "train": {"epochs": 30},
                          "tune": {"scheduler": "none"}})
    history = [{"epoch": e, "val_loss": 1.0 / e} for e in range(1, 31)]
    monkeypatch.setattr(experiment, "last_state", lambda run: SimpleNamespace(history=history, bad_epochs=0))
    monkeypatch.setattr(experiment, "ended_record", lambda exp, trial: {"last_result": {"epoch": 8}})
    result = SimpleNamespace(config={"lr": 0.01}, error=None, metrics={"trial_id": "x_00000"}, path=str(tmp_path))
    [rec] = experiment._records(spec, [result], tmp_path, "val_loss", "min", False, ["lr"])
    assert rec.status == R.COMPLETED and rec.judged_at == 30
    asha = validate_spec({"name": "t", "data": {"path": str(tmp_path), "label": "y"}, "train": {"epochs": 30},
                          "tune": {}})
    [rec] = experiment._records(asha, [result], tmp_path, "val_loss", "min", False, ["lr"])
    assert rec.status == R.STOPPED and rec.judged_at == 8      # ASHA may have stopped it there: judged as Tune saw


def test_the_curves_title_explains_only_the_marks_the_search_has():
    done = [_trial(0, [0.5, 0.4], 1e-3)]
    assert R.curve_title(done, rungs=[]) == "learning curves\n(○ = other early end)"          # scheduler: none
    assert R.curve_title(done, rungs=[2, 4]) == (
        "learning curves\n(× = stopped by ASHA, ○ = other early end, dotted = rungs)")
