"""The search algorithms a search runs with, whose concurrency limit is the plan of the run going on.

Tune restores a search's algorithm whole on --resume (its pickle in tuner.pkl, then its saved state), limit
included: a --resume on a smaller cluster ran as many trials at once as the first run's plan allowed, and their
Train runs waited on CPUs other trials held (the deadlock `tuning.plan` prevents), while the new plan was
printed. Here the limit is the one `planned` gives while the search is restored and runs, for the trials it
starts. Not for the unfinished trials Tune restores: it puts them all back as pending and starts them by
resources alone, without asking the search algorithm (TuneController._requeue_restored_trials, Ray 2.60), so a
search stopped with more trials running than the new plan allows restarts them all (a review).
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional

from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter


class Planned:
    limit: Optional[int] = None         # the plan's, while `planned` holds

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._planned()

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        self._planned()

    def _planned(self) -> None:
        if Planned.limit is not None:
            self.max_concurrent = Planned.limit


class PlannedVariants(Planned, BasicVariantGenerator):
    """Random and grid searches."""


class PlannedLimiter(Planned, ConcurrencyLimiter):
    """Optuna's, behind Tune's limiter."""


@contextlib.contextmanager
def planned(max_concurrent: int) -> Iterator[None]:
    """While a search is built or restored, and runs: its algorithm's limit is `max_concurrent`."""
    Planned.limit = max_concurrent
    try:
        yield
    finally:
        Planned.limit = None
