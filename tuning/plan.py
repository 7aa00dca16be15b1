"""Resource planning: how many trials can run at once without starving Ray Train or Ray Data.

A trial is three things on the cluster: its driver (the Tune function, which builds a TorchTrainer and waits on
it), the Train controller (an actor with no CPU) and `train.workers` workers holding `train.cpus_per_worker`
each. Ray Train starts a run only when every worker can be placed at once, and Ray Data runs its tasks on
whatever CPUs are left. Tune left alone starts as many trial drivers as there are CPUs: on a small cluster
their drivers and workers take every CPU, the runs wait for workers that can never be placed and the data
tasks wait for CPUs that never free up — the experiment sits PENDING forever. So we count, and keep
`tune.data_cpus` out of reach of the trials.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from cluster.errors import BadInput, Failure
from jobs.spec import JobSpec


class TuneError(Failure):
    """The search ran and failed (every trial failed, no trial produced a model); the message says why and what
    to change."""


class TuneInputError(BadInput):
    """What the spec or the command asks cannot be done (more trials at once than the cluster holds, --resume
    with nothing to resume): bad input, exit 2, not a failure while running."""


@dataclass(frozen=True)
class Plan:
    max_concurrent: int
    trial_cpus: float            # driver + workers, what one running trial holds
    trial_gpus: float
    driver_cpus: float           # what Tune reserves for the trial function itself
    fits: int                    # how many trials the cluster could hold at once
    why: str                     # one line for the run log


def plan(spec: JobSpec, resources: dict, *, use_gpu: bool) -> Plan:
    """How many trials to run at once on a cluster with `resources` ({"CPU": n, "GPU": n}).

    Raises TuneInputError when not even one trial fits, or when `tune.max_concurrent` asks for more than fit.
    """
    tune, train = spec.tune, spec.train
    cpus, gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
    worker_cpus = train.workers * train.cpus_per_worker
    trial_cpus = tune.trial_driver_cpus + worker_cpus
    trial_gpus = float(train.workers) if use_gpu else 0.0
    usable = cpus - tune.data_cpus
    problems = []
    if trial_cpus > usable + 1e-9:
        most_workers = math.floor((usable - tune.trial_driver_cpus) / train.cpus_per_worker + 1e-9)
        if most_workers >= 1:
            fix = f"lower train.workers to {most_workers}"
        else:
            # Even one worker does not fit: say which knob makes a one-worker trial fit.
            options = []
            if usable - tune.trial_driver_cpus > 0:
                options.append(f"train.cpus_per_worker: {usable - tune.trial_driver_cpus:g}")
            if cpus - tune.trial_driver_cpus - train.cpus_per_worker >= 0:
                options.append(f"tune.data_cpus: {cpus - tune.trial_driver_cpus - train.cpus_per_worker:g}")
            fix = ("set " + " or ".join(options) + (" with train.workers: 1" if train.workers > 1 else "")
                   if options else "use a cluster with more CPUs")
        fix += " (or add nodes)" if fix.startswith(("lower", "set")) else ""
        problems.append(
            f"one trial needs train.workers={train.workers} × train.cpus_per_worker={train.cpus_per_worker:g} "
            f"+ tune.trial_driver_cpus={tune.trial_driver_cpus:g} = {trial_cpus:g} CPUs, and "
            f"tune.data_cpus={tune.data_cpus:g} CPU stays free for Ray Data, but the cluster has {cpus:g} CPUs; "
            f"{fix}")
    if use_gpu and trial_gpus > gpus:
        problems.append(f"one trial needs {trial_gpus:g} GPUs (train.workers={train.workers}, one GPU each) but the "
                        f"cluster has {gpus:g}; lower train.workers or set train.use_gpu: false")
    if problems:
        raise TuneInputError("the search cannot start: " + "; ".join(problems))

    fits = math.floor(usable / trial_cpus + 1e-9)
    limit = "CPU"
    if use_gpu:
        by_gpu = math.floor(gpus / trial_gpus + 1e-9)
        if by_gpu < fits:
            fits, limit = by_gpu, "GPU"
    if tune.max_concurrent == "auto":
        chosen = fits
    elif tune.max_concurrent > fits:
        raise TuneInputError(
            f"tune.max_concurrent={tune.max_concurrent} but the cluster holds at most {fits} trial(s) at once "
            f"({_capacity_line(cpus, gpus, trial_cpus, trial_gpus, tune.data_cpus, use_gpu)}); set "
            f"tune.max_concurrent: auto (or at most {fits}), lower train.workers, or add nodes")
    else:
        chosen = tune.max_concurrent
    why = (f"[tune] {chosen} trial(s) at once: each holds {trial_cpus:g} CPU "
           f"({tune.trial_driver_cpus:g} driver + {train.workers} worker(s) × {train.cpus_per_worker:g})"
           + (f" and {trial_gpus:g} GPU" if use_gpu else "")
           + f"; {tune.data_cpus:g} of {cpus:g} CPUs kept for Ray Data; limited by {limit}")
    return Plan(max_concurrent=chosen, trial_cpus=trial_cpus, trial_gpus=trial_gpus,
                driver_cpus=tune.trial_driver_cpus, fits=fits, why=why)


def _capacity_line(cpus, gpus, trial_cpus, trial_gpus, data_cpus, use_gpu) -> str:
    line = f"({cpus:g} CPUs - {data_cpus:g} for Ray Data) / {trial_cpus:g} CPUs per trial"
    if use_gpu:
        line += f", {gpus:g} GPUs / {trial_gpus:g} per trial"
    return line
