"""The lines a search prints as it goes (trainyard/display.py counts trials by them on a terminal), and the
words for a search and a trial's configuration."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from jobs.spec import JobSpec
from tuning import report as R
from tuning import space


def search_line(spec: JobSpec, experiment: Path, metric: str, mode: str, *, resume: bool) -> str:
    return (f"[tune] {'resuming' if resume else 'starting'} experiment {experiment}: {describe_search(spec)}; "
            f"ranking trials by {metric} ({mode})")


def search_end_line(records: list[R.TrialRecord], elapsed: float, before: float = 0.0) -> str:
    """`elapsed`: this run's seconds; `before`: those of the runs before a --resume."""
    resumed = f" ({before + elapsed:.0f}s with the runs before --resume)" if before else ""
    return f"[tune] {len(records)} trial(s) in {elapsed:.0f}s{resumed}; {_counts(records)}"


def trial_epoch_line(trial_id: str, epoch: Optional[int], epochs: int, metric: str, value, config: dict) -> str:
    shown = f"{value:.4f}" if isinstance(value, (int, float)) else "-"
    return (f"[tune] {trial_id} epoch {epoch if epoch is not None else '?'}/{epochs}  {metric} {shown}  "
            f"({describe_config(config, list(config))})")


# Why a trial's epochs came after the last one Tune reported (and printed), by the trial's status.
_UNSEEN = {R.TIME_BUDGET: "trained as the time budget ran out", "interrupted": "trained as the search was interrupted",
           R.ERROR: "trained before it failed"}


def ran_on_lines(records: list[R.TrialRecord], epochs: int, metric: str, budget_out: bool = False) -> list[str]:
    """The epochs a trial trained that no line showed, one line each as the live ones: they count (the table's
    epochs, its best value, its weights). A trial the scheduler stopped trains on before its workers are gone;
    any other trial's epochs past the last result Tune reported (`seen_at`) were trained as the search ended (a
    time budget that ran out (`budget_out`: a trial that trained its last epoch then is `completed`), a Ctrl-C):
    Tune stops hearing its trials before their workers stop."""
    lines = []
    for r in records:
        if r.status == R.STOPPED and r.judged_at is not None:
            after, why = r.judged_at, f"ran on after the scheduler stopped it at epoch {r.judged_at}"
        elif r.seen_at is not None:
            after, why = r.seen_at, _UNSEEN.get(r.status, _UNSEEN[R.TIME_BUDGET] if budget_out
                                                else "trained as the search ended")
        else:
            continue
        lines += [f"[tune] {r.trial_id} epoch {h['epoch']}/{epochs}  {metric} "
                  + (f"{h[metric]:.4f}" if isinstance(h.get(metric), (int, float)) else "-") + f"  ({why})"
                  for h in r.history if (h.get("epoch") or 0) > after]
    return lines


def trial_end_line(trial_id: str, epoch: Optional[int], epochs: int, error: Optional[str] = None,
                   patience: Optional[int] = None) -> str:
    """A trial ended: `error` (it failed), else after `epoch`, the last epoch Tune saw (a trial the scheduler
    stopped may train on for an epoch or two before its workers are gone: results.csv has both,
    judged_at_epoch and epochs_run); `patience`: it stopped itself, by train.early_stop, after that many
    epochs without a better value."""
    if error is not None:
        return f"[tune] {trial_id} failed: {error}"
    if epoch == epochs:
        return f"[tune] {trial_id} finished its {epoch} epoch(s)"
    if patience is not None:
        return (f"[tune] {trial_id} stopped early by train.early_stop at epoch {epoch} (no better for {patience} "
                "epoch(s))")
    return f"[tune] {trial_id} stopped early by the scheduler, judged at epoch {epoch if epoch is not None else 0}"


def describe_search(spec: JobSpec) -> str:
    t = spec.tune
    n = space.trial_count(spec)
    # "no early stopping" above trials that then stopped early (by their own train.early_stop) read as a fault.
    own = (f"each trial's train.early_stop (patience {spec.train.early_stop.patience}) still applies"
           if spec.train.early_stop is not None else "no early stopping")
    sched = f"no scheduler ({own})" if t.scheduler == "none" or t.scheduler.asha is None else (
        f"ASHA grace {t.scheduler.asha.grace_period}, reduction {t.scheduler.asha.reduction_factor:g}")
    # Settings the spec gives that this kind of search has no use for: said, not silently dropped.
    unused = ([f for f in ("samples", "seed") if f in t.model_fields_set] if t.search == "grid"
              else ["grid_points"] if "grid_points" in t.model_fields_set else [])
    note = f" (tune.{', tune.'.join(unused)} not used by a {t.search} search)" if unused else ""
    return f"{t.search} search, {n} trial(s){note}, {sched}, {spec.train.epochs} epoch(s) max"


def describe_config(config: dict, axes: list[str]) -> str:
    parts = []
    for a in axes:
        v = config.get(a)
        parts.append(f"{a} {v:.3g}" if isinstance(v, float) else f"{a} {v}")
    return ", ".join(parts)


def _counts(records: list[R.TrialRecord]) -> str:
    counts: dict[str, int] = {}
    for r in records:
        counts[r.status] = counts.get(r.status, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
