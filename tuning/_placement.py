"""Give back what the Train runs of stopped trials still hold.

When ASHA stops a trial, Tune ends the trial's process; the Ray Train controller it owns dies with it, without
shutting its run down. The workers go, but their placement group stays: Ray keeps a placement group made by an
actor until that actor AND its job are gone, and the job is this driver, alive for the whole search. Each
stopped trial would keep `train.workers` CPUs forever, and the next trials would wait for workers that can
never be placed: the search hangs.

Ray Train has a cleaner for exactly this case (a detached `PlacementGroupCleaner` actor per run), but it checks
on the controller through the state API, which needs the dashboard (off in our embedded Ray): it would never
see the controller die, never free the group, and poll every second until the cluster stops. So trials run
without it (`cluster.ray_compat.trainer_class`, see tuning/trial.py) and the driver
sweeps instead: placement groups of this job whose creating actor is dead are removed (nobody can use them any
more; Ray would remove them itself at the end of the job). Tune's own trial placement groups are made by the
driver, not an actor, and are never touched. The GCS tables are read through `cluster.ray_compat`: the public
tables leave out who created what.
"""
from __future__ import annotations

import logging
import time
from typing import Optional

from cluster import ray_compat
from cluster.leftovers import actor_dead, made_by_an_actor, remove_groups, unusable_groups

logger = logging.getLogger(__name__)

TRAIN_CONTROLLER_CLASS = "TrainController"


def _job_groups(include_driver_groups: bool = False) -> list[tuple[object, Optional[object]]]:
    """(placement group, its creating actor's table entry or None) for this job's groups made by an actor
    (and by the driver too, if asked) and still holding resources."""
    import ray

    gcs_pb2 = ray_compat.gcs_protos()
    job_id = ray.get_runtime_context().get_job_id()
    found = []
    for pg in ray_compat.placement_group_table():
        # A group made by a driver (Tune's trial groups): GCS reports its nil "actor" dead; never swept here.
        by_actor = made_by_an_actor(pg.creator_actor_id)
        if ((not by_actor and not include_driver_groups) or pg.is_detached or pg.creator_job_id.hex() != job_id
                or pg.state == gcs_pb2.PlacementGroupTableData.REMOVED):
            continue
        found.append((pg, ray_compat.actor_info(pg.creator_actor_id) if by_actor else None))
    return found


def orphaned_placement_groups() -> list:
    """Placement groups of this job, still holding resources, made by an actor that has died. The actor table
    is asked, not only the group's own creator_actor_dead flag: a group still being placed when its creator
    died can miss that flag. Tune's trial groups, made by this driver, are never chosen."""
    import ray

    job_id = ray.get_runtime_context().get_job_id()
    return unusable_groups(ray_compat.placement_group_table(), lambda pg: pg.creator_job_id.hex() == job_id,
                           actor_dead, driver_groups=False)


def train_groups() -> int:
    """Placement groups of this job made by a Ray Train controller and not removed yet (a run's workers)."""
    return sum(1 for _, actor in _job_groups() if actor is not None and actor.class_name == TRAIN_CONTROLLER_CLASS)


def live_placement_cleaners() -> int:
    """Ray Train `PlacementGroupCleaner` actors of this job still alive (tuning trials run without them)."""
    import ray

    alive = ray_compat.gcs_protos().ActorTableData.ALIVE
    job_id = ray.get_runtime_context().get_job_id()
    return sum(1 for a in ray_compat.actor_table() if a.class_name == "PlacementGroupCleaner"
               and a.job_id.hex() == job_id and a.state == alive)


def sweep() -> int:
    """Remove orphaned placement groups; returns how many. Never raises: a failed sweep only delays the next
    trials until the next sweep."""
    try:
        return remove_groups(orphaned_placement_groups())[0]     # one not removed: the next sweep retries
    except Exception as exc:             # an internal table changed shape in another Ray version
        logger.warning("could not sweep the resources of stopped trials: %s", exc)
        return 0


def settle(timeout_s: float = 30.0, every_s: float = 0.5) -> int:
    """After the search: the last stopped trials' Train runs end a moment after Tune returns (their
    controllers die with the trial processes). Wait until no Train run's placement group is left (at most
    `timeout_s`), sweeping the orphans as they appear, so that the search leaves nothing reserved behind it."""
    groups = 0
    deadline = time.monotonic() + timeout_s
    while True:
        groups += sweep()
        try:
            busy = train_groups()
        except Exception as exc:
            logger.debug("could not read the actor table: %s", exc)
            return groups
        if not busy or time.monotonic() > deadline:
            return groups
        time.sleep(every_s)


class Sweeper:
    """Sweeps at most every `every_s` seconds (called from Tune's loop, which steps many times a second)."""

    def __init__(self, every_s: float = 2.0):
        self.every_s, self._last = every_s, 0.0
        self.groups = 0

    def maybe_sweep(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last >= self.every_s:
            self._last = now
            self.groups += sweep()


def describe_placement_groups() -> list[str]:
    """One line per placement group of this job still holding resources: who made it and whether it lives
    (for error messages and test failures)."""
    gcs_pb2 = ray_compat.gcs_protos()
    lines = []
    for pg, actor in _job_groups(include_driver_groups=True):
        if actor is not None:
            creator = f"{actor.class_name} ({gcs_pb2.ActorTableData.ActorState.Name(actor.state)})"
        else:
            creator = "an unknown actor" if made_by_an_actor(pg.creator_actor_id) else "the driver"
        bundles = [dict(b.unit_resources) for b in pg.bundles]
        lines.append(f"{pg.placement_group_id.hex()} {pg.name or '-'} "
                     f"{gcs_pb2.PlacementGroupTableData.PlacementGroupState.Name(pg.state)} {bundles} made by "
                     f"{creator}, creator_actor_dead={pg.creator_actor_dead}")
    return lines
