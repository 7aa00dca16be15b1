"""`trainyard tune`: plan → prepare once → Ray Tune search (each trial a Ray Train run) → best trial → bundle.

Layout under OUTPUT:
    ray/tune-<stamp>/                 the Tune experiment (Tune's own state, one folder per trial)
    ray/tune-<stamp>/train/trial-<id>/  each trial's Ray Train run: its checkpoints (the model is read from here)
    ray/tune-<stamp>/ended/<id>.json  trials Tune has ended (so a resumed experiment never retrains them)
    ray/tune-<stamp>/trainyard.record what the experiment was started with (spec, data fingerprint; JSON)
    tune/<experiment>/results.csv, report.png  each search's report; tune/results.csv, report.png: the latest's
    bundle/                           the best trial, exactly like `trainyard train`'s
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

from ray import tune

from jobs.pipeline import (PreparedData, checkpoint_note, export_bundle, format_metrics, make_output_dir, prepare,
                           print_ingest_summary, storage_root)
from jobs.spec import JobSpec, best_key
from jobs.contracts import TrainState
from jobs.train import TrainOutcome, last_state, read_state, resolve_use_gpu, worker_config
from tuning import report as R
from tuning import space
from tuning._placement import Sweeper, settle
from tuning.failures import error_line, last_error_line
from tuning.lines import (describe_config, describe_search, ran_on_lines, search_end_line, search_line,
                           trial_end_line, trial_epoch_line)
from tuning.plan import Plan, TuneError, TuneInputError, plan
from tuning.resume import (check_same_data, mark_finished, read_record, start_experiment, started_experiment,
                           write_record)
from tuning.searchers import planned
from tuning.trial import ENDED_DIR, TRAIN_DIR, ended_record, run_name, run_trial, trial_overrides



def run_tune(spec: JobSpec, *, resume: bool = False, progress: Callable[[str], None] = print,
             prepared: Optional[PreparedData] = None, resume_command: Optional[str] = None) -> tuple[Path, dict]:
    """Search, then export the best trial as OUTPUT/bundle. Returns (bundle path, its metrics).

    `prepared`: data already prepared from this spec's data section (`jobs.pipeline.prepare`), to compare searches
    on the very same rows in the very same order; by default the data is prepared here, once for all trials.
    Raises TuneError (cannot run, or every trial failed), SpecError, and KeyboardInterrupt when the search was
    interrupted (its state is saved: run again with resume=True; `resume_command` is the command line that
    does it, for the message).
    """
    from cluster import describe_resources

    space.check(spec)           # a URI output too
    resources = describe_resources()
    use_gpu = resolve_use_gpu(spec.train.use_gpu, spec.train.workers, resources)
    the_plan = plan(spec, resources, use_gpu=use_gpu)        # before any data is read: fail in seconds
    root = storage_root(spec)
    experiment = _find_experiment(root, spec) if resume else None
    if resume and experiment is None:
        # Stopped in its first seconds: Tune had saved the search's settings but not one trial. Restored, it ran
        # a single trial of no configuration (Ray's "Failed to restore the run state" first), then the report
        # failed on its empty axes; the whole search is what --resume asks for.
        progress(f"[tune] --resume: the newest experiment under {root} was stopped before it saved any trial; "
                 "starting the search anew")
        resume = False
    out = make_output_dir(spec.output_dir)

    if prepared is None:
        prepared = prepare(spec, progress)    # ingest + preprocessing fitted ONCE, shared by every trial
    print_ingest_summary(prepared, progress, spec.train.loss)
    metric, mode = space.metric_and_mode(spec, prepared.task, prepared.preprocessor.classes)
    repeated = None
    if resume:
        check_same_data(experiment, prepared.ingest.fingerprint)
    else:
        experiment, repeated = start_experiment(root, spec, prepared.ingest.fingerprint, metric, mode)

    progress(the_plan.why)
    progress(search_line(spec, experiment, metric, mode, resume=resume))
    for note in (repeated, space.batch_note(spec, prepared.ingest.split_rows["train"])):
        if note:
            progress(note)
    before = float(read_record(experiment).get("searched_s", 0.0)) if resume else 0.0
    t0 = time.time()
    continue_with = resume_command or "the same command (spec, --set options) and --resume"
    try:
        with _progress_sink(progress), _frequent_snapshots(), _no_tune_banner(), _own_stop_notice(), \
                _resume_hint(progress, experiment, continue_with):
            with planned(the_plan.max_concurrent):     # a resumed search runs by this plan, not its first one
                results = _tuner(spec, prepared, the_plan, experiment, metric, mode, resume).fit()
    finally:
        elapsed = time.time() - t0
        _add_searched(experiment, before + elapsed)
    settle()       # what the last stopped trials' Train runs held goes back before the bundle is exported

    searched = [a for a in space.param_space(spec)]
    budget = spec.tune.time_budget_s
    budget_out = budget_ran_out(budget, stopped_by_user=_STOP_SIGNALLED.is_set())
    records = _records(spec, results, experiment, metric, mode, budget_out, searched)
    if budget_out:
        records = R.with_unstarted(records, space.trial_count(spec),
                                   {**_spec_values(spec), **{a: None for a in searched}})
    if budget_out and (before + elapsed >= budget or any(r.status in (R.TIME_BUDGET, R.NOT_RUN) for r in records)):
        started = sum(bool(r.history or r.train_run) for r in records)     # its Train run began
        progress(f"[tune] tune.time_budget_s={budget:g} ran out after {before + elapsed:.0f}s"
                 + (f" ({elapsed:.0f}s of them in this run, the rest before --resume)" if resume else "")
                 + f": {started} of {space.trial_count(spec)} trial(s) started; trials it cut short are marked "
                 f"{R.TIME_BUDGET}")
    for line in ran_on_lines(records, spec.train.epochs, metric, budget_out=bool(budget_out)):
        progress(line)
    interrupted = [r for r in records if r.status == "interrupted"]
    if interrupted:
        # Counted against the search's trials, not Tune's records: those not yet started were left out ("1 trial(s)
        # unfinished" of a 6-sample search that had finished one; the resume ran five).
        total = space.trial_count(spec)
        left = max(total - (len(records) - len(interrupted)), len(interrupted))
        started = sum(bool(r.history or r.train_run) for r in interrupted)        # its Train run began
        progress(f"[tune] interrupted with {left} of {total} trial(s) unfinished ({started} of them started); the "
                 f"experiment is saved at {experiment}. Continue it with: {continue_with}")
        raise KeyboardInterrupt
    # Each search's own report under tune/<experiment>/ (the bundle's lineage names it), and the latest search's
    # as tune/results.csv and report.png: a colleague's search to the same output replaced them, and the bundle's
    # lineage then named a file of another search's trials.
    tune_dir = out / "tune" / experiment.name
    csv_path = R.write_csv(records, metric, mode, tune_dir / "results.csv")
    png_path = R.plot(records, metric, mode, tune_dir / "report.png", rungs=space.rungs(spec),
                      title=f"{spec.name}: {describe_search(spec)}", searched=searched)
    for made in (csv_path, png_path):
        shutil.copyfile(made, out / "tune" / made.name)
    progress(search_end_line(records, elapsed, before) + "\n"
             + R.table(records, metric, mode, searched))
    progress(f"[tune] every trial: {csv_path}; plots: {png_path} (the latest search's also in {out / 'tune'})")

    best, state = _readable(_best(records, mode, budget=spec.tune.time_budget_s if budget_out else None), progress)
    outcome, best_spec = _outcome(spec, prepared, best, state, metric, mode, use_gpu)
    failed = (f"; its run failed ({best.error}), the weights of its best epoch are whole"
              if best.status == R.ERROR else "")
    progress(f"[tune] best trial {best.trial_id}: {metric} {best.best_value:.4f} at epoch {best.best_epoch} "
             f"({describe_config(best.config, searched)}{failed}); evaluating it on the test split")
    path, metrics = export_bundle(best_spec, prepared, outcome, progress=progress, trial_id=best.trial_id,
                                  tune={"experiment": str(experiment), "metric": metric, "mode": mode,
                                        "value": best.best_value, "config": {a: best.config[a] for a in searched},
                                        "trials": len(records), "results_csv": str(csv_path)})
    mark_finished(experiment, path)
    progress(format_metrics(metrics, prepared.preprocessor.classes))
    if note := checkpoint_note(str(experiment)):
        progress(note)
    return path, metrics


# ---------------------------------------------------------------------------------------------- Tune
def _tuner(spec: JobSpec, prepared: PreparedData, the_plan: Plan, experiment: Path, metric: str, mode: str,
           resume: bool) -> tune.Tuner:
    from cluster import is_embedded

    trainable = tune.with_resources(
        tune.with_parameters(run_trial, spec=spec, prepared=_for_trials(prepared),
                             experiment_dir=str(experiment), metric=metric, mode=mode, embedded=is_embedded()),
        {"CPU": the_plan.driver_cpus})
    if resume:
        # Finished and errored trials stay as they are; unfinished ones resume their Train run's checkpoint.
        return tune.Tuner.restore(str(experiment), trainable=trainable, resume_unfinished=True,
                                  resume_errored=False, restart_errored=False)
    return tune.Tuner(
        trainable,
        param_space=space.param_space(spec),
        tune_config=tune.TuneConfig(
            # ASHA (and Optuna) judge a trial by its best epoch so far: the epoch its bundle would hold if it
            # stopped now. A trial is not cut for one noisy epoch that happens to fall on a rung.
            metric=best_key(metric), mode=mode, search_alg=space.search_alg(spec, the_plan.max_concurrent),
            scheduler=space.scheduler(spec), num_samples=space.num_samples(spec),
            # max_concurrent_trials is not set here: the search algorithm enforces the plan's limit (space.py).
            time_budget_s=spec.tune.time_budget_s,
            # Where every trial ends by itself, a finished trial hands its process to the next one: a fresh one
            # costs a process start and imports of torch and trainyard (~5 s of the ~20 s a small trial's start
            # takes on 2 cores; 2 processes instead of 8 in an 8-trial search). Not where ASHA or the time
            # budget stops trials: Tune keeps a stopped trial's process for reuse too, but its Train run is still
            # going, so the reset fails (the function has not returned within TUNE_FUNCTION_THREAD_TIMEOUT_S)
            # and Tune marks the next trial as errored instead of starting a fresh process (seen in the ASHA
            # test). Without reuse, a stopped trial's process ends and takes its Train run with it.
            reuse_actors=not space.stops_trials_early(spec),
            trial_dirname_creator=_trial_dirname),
        run_config=tune.RunConfig(
            name=experiment.name, storage_path=str(experiment.parent),
            # A failed trial is reported, not retried: its Train run already retried worker failures
            # (train.max_failures), so what is left is the config's own fault (a diverging lr, say).
            failure_config=tune.FailureConfig(max_failures=0),
            callbacks=[_Progress(str(experiment), metric, spec.train.epochs, trial_patience(spec))],
            verbose=0))


def _trial_dirname(trial) -> str:
    # Tune's default folder name spells out the whole config; the id is enough (config is in results.csv).
    return f"trial-{trial.trial_id}"


def _for_trials(prepared: PreparedData) -> PreparedData:
    """What a trial needs, without the raw tables it never reads (they would travel to every trial)."""
    import dataclasses
    return dataclasses.replace(prepared, ingest=dataclasses.replace(prepared.ingest, dataset=None), test_raw=None)


_sink: Callable[[str], None] = print


@contextlib.contextmanager
def _progress_sink(progress: Callable[[str], None]) -> Iterator[None]:
    # Tune pickles its RunConfig, callbacks included, into the experiment and takes them back from there on
    # resume; so the callback cannot hold the caller's progress function and looks it up here instead.
    global _sink
    before, _sink = _sink, progress
    try:
        yield
    finally:
        _sink = before


# Ray Tune's warning at the first Ctrl-C of a search: "Stop signal received (e.g. via SIGINT/Ctrl+C), ending Ray
# Tune run. This will try to checkpoint the experiment state one last time. Press CTRL+C (...) to skip." Said in
# trainyard's words instead, with what a second Ctrl-C costs; the command that resumes comes at the end.
TUNE_STOP_SIGNAL = ("ray.tune.tune", "Stop signal received")
STOPPING_LINE = ("[tune] stopping: saving the search's state for --resume (Ctrl-C again stops at once, without "
                 "that last save)")


def budget_ran_out(budget: Optional[float], *, stopped_by_user: bool) -> bool:
    """Whether tune.time_budget_s ended the search (or let it end). The budget is the whole search's: Tune keeps
    what is left of it across --resume, so a resumed search can run out within seconds of its start. A search
    that Tune ended with trials left and no Ctrl-C was ended by its budget: judged by this run's time alone, those
    trials were marked "interrupted", and every --resume ended the same way. Not by the wall time of its runs
    either, which counts their set-up where Tune's count does not: a Ctrl-C is an interruption."""
    return budget is not None and not stopped_by_user


def _add_searched(experiment: Path, spent: float) -> None:
    # The seconds the search has run, over every run of it: said when its budget runs out after a --resume. (A
    # run killed outright adds nothing: Tune's own count, which decides, keeps its time.)
    try:
        record = read_record(experiment)
    except TuneInputError:          # unreadable: --resume says so; nothing to add the time to
        return
    record["searched_s"] = math.ceil(spent * 10) / 10      # up: a resume that found the budget spent adds its time
    write_record(experiment, record)


_STOP_SIGNALLED = threading.Event()      # Tune's SIGINT handler ran during this search (Ctrl-C, not the budget)


def _say_stopping(record) -> bool:
    if record.getMessage().startswith(TUNE_STOP_SIGNAL[1]):
        _STOP_SIGNALLED.set()
        # Tune logs this from its SIGINT handler, which runs in the main thread between any two of its bytecodes,
        # maybe while that thread is printing a line and holds the display's lock: printing from here could wait
        # on that lock forever. A thread of its own prints it as soon as the lock is free.
        threading.Thread(target=_sink, args=(STOPPING_LINE,), name="trainyard-stopping", daemon=True).start()
        return False
    return True


@contextlib.contextmanager
def _own_stop_notice() -> Iterator[None]:
    """Tune's stop warning in trainyard's words while Tune runs; and Ctrl-C as it was, after. Tune puts its own
    SIGINT handler in and takes it out only at a Ctrl-C: a Ctrl-C once the search was over (evaluating the best
    trial, writing its bundle) printed Tune's warning and was ignored, exit 0."""
    import signal

    logger = logging.getLogger(TUNE_STOP_SIGNAL[0])
    _STOP_SIGNALLED.clear()
    logger.addFilter(_say_stopping)
    main = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGINT) if main else None
    try:
        yield
    finally:
        logger.removeFilter(_say_stopping)
        if main and handler is not None:
            signal.signal(signal.SIGINT, handler)


@contextlib.contextmanager
def _resume_hint(progress: Callable[[str], None], experiment: Path, continue_with: str) -> Iterator[None]:
    """A second Ctrl-C stops the search at once (KeyboardInterrupt out of Tune, without its last save): the
    trials Tune saved before (`_frequent_snapshots`) still resume, which the command had not said."""
    try:
        yield
    except KeyboardInterrupt:
        progress(f"[tune] stopped at once; the experiment as Tune last saved it is at {experiment}. "
                 f"Continue it with: {continue_with}")
        raise


@contextlib.contextmanager
def _env(key: str, value: str, *, keep_users: bool) -> Iterator[None]:
    """`key=value` in this process's environment while Tune runs, as it was afterwards. keep_users: a value
    the user set wins."""
    before = os.environ.get(key)
    if before is None or not keep_users:
        os.environ[key] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def _frequent_snapshots() -> contextlib.AbstractContextManager:
    # Tune snapshots the experiment at most every 10 s by default; a driver killed in between loses which
    # trials ended. The snapshot is a few KB, so take it every 2 s. (The ended/ records cover the rest.)
    return _env("TUNE_GLOBAL_CHECKPOINT_S", "2", keep_users=True)


def _no_tune_banner() -> contextlib.AbstractContextManager:
    # Tune's new output engine prints a configuration box, the experiment path and a TensorBoard hint even
    # at verbose=0; the legacy engine at verbose=0 prints nothing. trainyard prints its own lines (_Progress).
    return _env("RAY_AIR_NEW_OUTPUT", "0", keep_users=False)


_TUNE_FILLED = {"done", "training_iteration", "trial_id", "date", "timestamp", "time_this_iter_s", "time_total_s",
                "pid", "hostname", "node_ip", "time_since_restore", "iterations_since_restore", "config"}


class _Progress(tune.Callback):
    """One line per trial epoch and per trial end; records ended trials for resume; frees stopped trials' CPUs."""

    # --resume restores Tune's pickle of this callback: an earlier trainyard's has no patience (its trials failed)
    patience: Optional[int] = None

    def __init__(self, experiment_dir: str, metric: str, epochs: int, patience: Optional[int] = None):
        self.experiment_dir, self.metric, self.epochs, self.patience = experiment_dir, metric, epochs, patience
        self.sweeper = Sweeper()

    def on_step_end(self, iteration, trials, **info):
        self.sweeper.maybe_sweep()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        _sink(trial_epoch_line(trial.trial_id, result.get("epoch"), self.epochs, self.metric,
                               result.get(self.metric), trial.config))

    def on_trial_complete(self, iteration, trials, trial, **info):
        # The training metrics only: what Tune fills in itself (iteration, timestamps, done) it fills in again
        # when a resumed trial hands this record back.
        last = {k: v for k, v in (trial.last_result or {}).items()
                if isinstance(v, (int, float, str, bool)) and k not in _TUNE_FILLED and not k.startswith("checkpoint")}
        ended = Path(self.experiment_dir) / ENDED_DIR
        ended.mkdir(parents=True, exist_ok=True)
        (ended / f"{trial.trial_id}.json").write_text(json.dumps({"last_result": last}))
        epoch, best = last.get("epoch"), last.get("best_epoch")
        own = (None not in (epoch, best, self.patience) and epoch < self.epochs and epoch - best >= self.patience)
        _sink(trial_end_line(trial.trial_id, epoch, self.epochs, patience=self.patience if own else None))

    def on_trial_error(self, iteration, trials, trial, **info):
        _sink(trial_end_line(trial.trial_id, None, self.epochs, error=error_line(trial)))

    def on_trial_recover(self, iteration, trials, trial, **info):
        # A failure Tune retries (a node preempted under the trial, which Tune does not count against
        # max_failures): Ray's own report of it stays out of the output (cluster.quiet), so say it here.
        _sink(f"[tune] {trial.trial_id} restarts after a failure: "
              f"{error_line(trial)}")


# ---------------------------------------------------------------------------------------------- results
def _records(spec: JobSpec, results, experiment: Path, metric: str, mode: str, budget_out: bool,
             searched: list[str]) -> list[R.TrialRecord]:
    """One record per trial Tune knows. `budget_out`: tune.time_budget_s ran out; `searched`: the axes sampled."""
    records = []
    for result in results:
        trial_id = _trial_id(result)
        sampled = result.config or {}
        # An axis the search sampled but this trial never received (it never started) is blank, not the
        # spec's train value, which it would look like it tried.
        config = {**_spec_values(spec), **{a: None for a in searched}, **sampled}
        train_run = experiment / TRAIN_DIR / run_name(trial_id)
        state = last_state(train_run)
        history = state.history if state else _history_from_tune(result)
        rec = R.TrialRecord(trial_id=trial_id, status="", config=config, history=history,
                            train_run=str(train_run) if train_run.exists() else None,
                            seen_at=(result.metrics or {}).get("epoch") or 0)
        values = [h[metric] for h in history if isinstance(h.get(metric), (int, float))
                  and not math.isnan(h[metric])]
        if values:
            rec.best_value = max(values) if mode == "max" else min(values)
            rec.best_epoch = next(h["epoch"] for h in history if h.get(metric) == rec.best_value)
        if result.error is not None:
            rec.status, rec.error = R.ERROR, last_error_line(str(result.error)) or type(result.error).__name__
        elif (ended := ended_record(experiment, trial_id)) is not None:
            # Judged by the last epoch Tune saw, not by how far the workers got: on short epochs a trial ASHA
            # stopped can train on (even to the end) before its process is gone.
            rec.judged_at = ended["last_result"].get("epoch") or 0
            if spec.tune.scheduler == "none" or spec.tune.scheduler.asha is None:
                # Nothing stops such a trial but its own early stop, so its checkpoint says how far it went: Tune's
                # last result can be older (the driver killed as the workers trained on, then --resume).
                rec.judged_at = max(rec.judged_at, rec.epochs_run)
            if rec.judged_at >= spec.train.epochs:
                rec.status = R.COMPLETED
            elif (rec.judged_at == rec.epochs_run and state
                  and state.bad_epochs >= trial_patience(spec)):
                rec.status = R.EARLY_STOPPED
            else:
                rec.status = R.STOPPED
        elif budget_out:
            # A trial that trained every epoch finished, even if the budget ran out before Tune heard it end.
            rec.status = (R.COMPLETED if rec.epochs_run >= spec.train.epochs
                          else R.TIME_BUDGET if history or rec.train_run else R.NOT_RUN)
        else:
            rec.status = "interrupted"
        records.append(rec)
    return records


def _trial_id(result) -> str:
    if (result.metrics or {}).get("trial_id"):
        return result.metrics["trial_id"]
    name = Path(result.path).name.removeprefix("trial-")
    # A trial that never reported: its id is its folder's name, less the _xxxx Tune appends when a resumed
    # trial finds its folder already there.
    return re.sub(r"_[0-9a-f]{4}$", "", name) if re.fullmatch(r".+_\d{5}_[0-9a-f]{4}", name) else name


def trial_patience(spec: JobSpec) -> int:
    return spec.train.early_stop.patience if spec.train.early_stop else spec.train.epochs


def _spec_values(spec: JobSpec) -> dict:
    """What a trial uses for an axis the search does not touch."""
    return {"lr": spec.train.lr, "batch_size": spec.train.batch_size, "weight_decay": spec.train.weight_decay,
            "dropout": spec.model.dropout, "hidden": list(spec.model.hidden)}


def _history_from_tune(result) -> list[dict]:
    df = result.metrics_dataframe
    if df is None or "epoch" not in df:
        return []
    return df.drop_duplicates("epoch", keep="last").to_dict("records")


def _best(records: list[R.TrialRecord], mode: str, budget: Optional[float] = None) -> list[R.TrialRecord]:
    """The trials that left a model, best first (at least one). `budget`: tune.time_budget_s, when it ran out."""
    ranked = [r for r in R.ranked(records, mode) if r.best_value is not None and r.train_run]
    if not ranked:
        errors = [f"{r.trial_id}: {r.error}" for r in records if r.error]
        if budget is not None and not errors and not any(r.history for r in records):
            raise TuneInputError(f"tune.time_budget_s={budget:g} ran out before any trial finished an epoch "
                                 f"({sum(bool(r.train_run) for r in records)} of {len(records)} trial(s) started); "
                                 "each trial first starts a Ray Train run "
                                 "(seconds), then trains: raise tune.time_budget_s or remove it")
        raise TuneError(f"no trial produced a model ({len(records)} trial(s), {len(errors)} failed)"
                        + (": " + "; ".join(errors[:5]) if errors else "")
                        + ". Fix the error above, or widen the search (tune.lr, tune.batch_size)")
    return ranked


def _readable(ranked: list[R.TrialRecord], progress: Callable[[str], None]) -> tuple[R.TrialRecord, TrainState]:
    """The best of `ranked` whose Train run has a checkpoint that reads, and its state. The best trial's checkpoints
    all unreadable (a full disk, a truncated copy) failed the search with an AttributeError, on every --resume."""
    for rec in ranked:
        state, skipped, error = read_state(Path(rec.train_run))
        if state is None:
            progress(f"[tune] warning: trial {rec.trial_id} ranked best of those left, but no checkpoint of its run "
                     f"can be read ({error}); taking the next one")
            continue
        for line in skipped:
            progress(f"[tune] note: trial {rec.trial_id}: {line}; its state of epoch {state.epoch + 1} is used")
        return rec, state
    raise TuneError(f"no checkpoint of any trial that left a model can be read ({len(ranked)} trial(s)): see the "
                    "warnings above. Start the search anew (without --resume) to train them again")


def _outcome(spec: JobSpec, prepared: PreparedData, best: R.TrialRecord, state: TrainState, metric: str, mode: str,
             use_gpu: bool) -> tuple[TrainOutcome, JobSpec]:
    """The best trial as a finished training run, from the state of its Train checkpoint (`_readable`)."""
    overrides = trial_overrides(spec, best.config, metric, mode)
    config = worker_config(spec, prepared, use_gpu=use_gpu, overrides=overrides)
    outcome = TrainOutcome.from_state(state, config, best.train_run)
    # The bundle's spec.yaml says what produced its weights: the spec with this trial's values filled in.
    train_update = {k: v for k, v in overrides.items() if k in type(spec.train).model_fields}
    model_update = {k: v for k, v in overrides.items() if k in ("dropout", "hidden")}
    best_spec = spec.model_copy(update={"train": spec.train.model_copy(update=train_update),
                                        "model": spec.model.model_copy(update=model_update)})
    return outcome, best_spec


# ---------------------------------------------------------------------------------------------- resume
# Tune's snapshot of a search's trials (TuneController.CKPT_FILE_TMPL), written once the first trials exist.
TUNE_STATE_GLOB = "experiment_state-*.json"

def _find_experiment(root: str, spec: JobSpec) -> Optional[Path]:
    """The newest experiment under OUTPUT/ray, when this spec started it (`tuning.resume.started_experiment`);
    None when it was stopped before Tune saved the state of any trial (no tuner.pkl, or that alone: nothing to
    keep, and an older search is not what was stopped)."""
    path = started_experiment(root, spec)
    if not tune.Tuner.can_restore(str(path)) or not any(path.glob(TUNE_STATE_GLOB)):
        return None
    return path
