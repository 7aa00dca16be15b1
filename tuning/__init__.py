"""Hyperparameter search on Ray Tune where every trial is a full Ray Train run (`jobs.train.fit`).

- ``run_tune(spec, resume=False)``: plan → prepare once → search (ASHA stops bad trials) → best trial → bundle;
- ``plan(spec, resources, use_gpu=)``: how many trials the cluster can run at once without deadlocking;
- ``TuneError``: the search failed, or produced no model (a ``cluster.errors.Failure``, exit 1);
  ``TuneInputError``: the spec or command asks what cannot be done (a ``cluster.errors.BadInput``, exit 2);
- ``tuning.commands.register``: the `trainyard tune` subcommand.
"""
from jobs import RUN_IMPORTS
from tuning.plan import Plan, TuneError, TuneInputError, plan

__all__ = ["run_tune", "plan", "Plan", "TuneError", "TuneInputError", "SEARCH_IMPORTS"]

# What a search imports once Ray is up (names only), for a caller that imports it while Ray starts
# (`trainyard.cli.connect`): the experiment, and everything a training run needs.
SEARCH_IMPORTS = ("tuning.experiment",) + RUN_IMPORTS


def __getattr__(name: str):
    """`run_tune` is imported on first use: tuning.experiment pulls in Ray Tune and PyTorch (seconds of imports),
    and every `trainyard` command, `trainyard cluster status` included, imports this package to register
    `tune` (tuning.commands)."""
    if name == "run_tune":
        from tuning.experiment import run_tune
        return run_tune
    raise AttributeError(f"module 'tuning' has no attribute {name!r}")
