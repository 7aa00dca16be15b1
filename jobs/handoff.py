"""The actor that hands a run started early its loop config (`jobs.early`). A module of its own that imports
nothing heavy: the actor's process imports it, and on 2 cores an import of torch there (1.5-2 CPU-s, what
`jobs.early` and `jobs.train` bring in) competed with the very preparation the early start overlaps."""
from __future__ import annotations

import asyncio
from typing import Optional


def wrap(config: Optional[dict]) -> Optional[list]:
    """What the driver gives the handoff for `config` (None: the run is given up): a one-item list holding the
    config's ObjectRef. Ray passes a reference inside an argument as it is, so the handoff's process never
    deserializes the config's Ray Datasets, which would import Ray Data and pandas there (0.6-1.3 CPU-s on
    2 cores, beside the worker's own start)."""
    import ray

    return None if config is None else [ray.put(config)]


def unwrap(held: Optional[list]) -> Optional[dict]:
    """The config a worker takes from what `wrap` made (None: the run was given up)."""
    import ray

    return None if held is None else ray.get(held[0])


class Handoff:
    """Holds what the driver gives for a run (`wrap`) until a worker takes it; `take` waits for it (a Ray actor:
    `EarlyRun`). A worker group that Ray Train restarts after a failure takes the same again."""

    def __init__(self) -> None:
        self._given = asyncio.Event()
        self._held: Optional[list] = None

    async def give(self, held: Optional[list]) -> None:
        self._held = held
        self._given.set()

    async def take(self) -> Optional[list]:
        await self._given.wait()
        return self._held
