"""The actor that hands a run started early its loop config (`jobs.early`). A module of its own that imports
nothing heavy: the actor's process imports it, and on 2 cores an import of torch there (1.5-2 CPU-s, what
`jobs.early` and `jobs.train` bring in) competed with the very preparation the early start overlaps."""
from __future__ import annotations

import asyncio
from typing import Optional


class Handoff:
    """Holds a run's loop config until the driver gives it; `take` waits for it (a Ray actor: `EarlyRun`). A
    worker group that Ray Train restarts after a failure takes the same config again."""

    def __init__(self) -> None:
        self._given = asyncio.Event()
        self._config: Optional[dict] = None

    async def give(self, config: Optional[dict]) -> None:
        self._config = config
        self._given.set()

    async def take(self) -> Optional[dict]:
        await self._given.wait()
        return self._config
