"""Give back the CPUs of Train runs that Tune stopped.

When ASHA stops a trial, Tune ends the trial's process; the Ray Train controller it owns dies with it, without
shutting its worker group down. The workers go, but their placement group stays reserved: Ray keeps a
placement group made by an actor until that actor AND its job are gone, and the job is this driver, alive
for the whole search. Ray Train 2.60 starts a cleaner actor for exactly this case, but it checks on the
controller through the state API, which needs the dashboard (off in our embedded Ray) and breaks when more
than one Ray runs on the machine. Each stopped trial would then keep `train.workers` CPUs forever, and the
next trials wait for workers that can never be placed: the search hangs.

So the driver sweeps: placement groups of this job whose creating actor is dead are removed. Nobody can use
them any more (Ray would remove them itself at the end of the job); Tune's own trial placement groups are
created by the driver, not by an actor, and are never touched.
"""
from __future__ import annotations

import logging
import time

logger = logging.getLogger(__name__)


def orphaned_placement_groups() -> list:
    """Placement groups of this job, still holding resources, whose creating actor has died."""
    import ray
    from ray._private.state import state  # the GCS table with creator fields (the public one drops them)
    from ray.core.generated import gcs_pb2

    job_id = ray.get_runtime_context().get_job_id()
    found = []
    for raw in state._connect_and_get_accessor().get_placement_group_table():
        pg = gcs_pb2.PlacementGroupTableData.FromString(raw)
        if (pg.creator_actor_dead and _made_by_an_actor(pg.creator_actor_id) and not pg.is_detached
                and pg.creator_job_id.hex() == job_id and pg.state != gcs_pb2.PlacementGroupTableData.REMOVED):
            found.append(pg.placement_group_id)
    return found


def _made_by_an_actor(creator_actor_id: bytes) -> bool:
    # A placement group made by a driver (Tune's trial placement groups) carries the nil actor id, all 0xff
    # in its unique part, and GCS reports that "actor" as dead: those must never be swept.
    unique = creator_actor_id[:12]
    return bool(unique) and any(b != 0xFF for b in unique)


def remove_orphaned_placement_groups() -> int:
    """Remove them; returns how many. Never raises: a failed sweep only delays the next trials."""
    import ray
    from ray.util.placement_group import PlacementGroup

    try:
        ids = orphaned_placement_groups()
    except Exception as exc:         # an internal table changed shape in another Ray: warn once per run
        logger.warning("could not list placement groups to free stopped trials' CPUs: %s", exc)
        return 0
    removed = 0
    for pg_id in ids:
        try:
            ray.util.remove_placement_group(PlacementGroup(ray.PlacementGroupID(pg_id)))
            removed += 1
        except Exception as exc:     # already gone, or the GCS is busy: the next sweep retries
            logger.debug("placement group %s not removed: %s", pg_id.hex(), exc)
    return removed


class Sweeper:
    """Sweeps at most every `every_s` seconds (called from Tune's loop, which steps many times a second)."""

    def __init__(self, every_s: float = 2.0):
        self.every_s, self._last, self.removed = every_s, 0.0, 0

    def maybe_sweep(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last >= self.every_s:
            self._last = now
            self.removed += remove_orphaned_placement_groups()
