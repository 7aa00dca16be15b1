"""Give back what ended jobs still hold on a cluster: placement groups whose job has ended.

A job stopped (`trainyard jobs stop`) just as its Ray Train run reserved its workers' placement group kept that
group reserved after the job had ended: Ray removes a job's groups when the job ends, and a group placed a moment
later escaped it. On a 2-CPU cluster a stopped search held 1 CPU, its `--resume` waited for workers that could not
be placed (WorkerGroupStartupTimeoutError, again and again), and after a second stop every later job hung at its
data ("does not have any available CPUs"), while `cluster status` still said 2 CPU. Only `cluster down` freed them.

A group of an ended job that is not detached, made by its driver or by an actor now dead, can be used by no one:
each trainyard driver that joins a cluster removes those first (`cluster.connection.connect`). Detached groups, and
groups made by an actor still alive (a detached actor's, such as Serve's), are left alone.
"""
from __future__ import annotations

import logging

from cluster import ray_compat

logger = logging.getLogger(__name__)


def made_by_an_actor(creator_actor_id: bytes) -> bool:
    """False for a group made by a driver: its creator is the nil actor id, all 0xff in its unique part."""
    unique = creator_actor_id[:12]
    return bool(unique) and any(b != 0xFF for b in unique)


def actor_dead(actor_id: bytes) -> bool:
    """Whether the actor table says this actor is dead (or no longer knows it)."""
    info = ray_compat.actor_info(actor_id)
    return info is None or info.state == ray_compat.gcs_protos().ActorTableData.DEAD


def unusable_groups(groups: list, of_job, dead, *, driver_groups: bool = True) -> list:
    """Of `groups` (`gcs_pb2.PlacementGroupTableData`), those still reserved, not detached, of a job `of_job(pg)`
    picks, made by an actor `dead(actor_id)` says is dead (or flagged so), or, with `driver_groups`, by the driver.
    No one can use such a group any more: the one selection behind both `release_ended_jobs_groups` (ended jobs,
    their drivers' groups too) and the tuning sweep (this search's own job, whose driver groups are Tune's)."""
    removed = ray_compat.gcs_protos().PlacementGroupTableData.REMOVED
    return [pg for pg in groups
            if pg.state != removed and not pg.is_detached and of_job(pg)
            and (driver_groups if not made_by_an_actor(pg.creator_actor_id)
                 else pg.creator_actor_dead or dead(pg.creator_actor_id))]


def ended_jobs_groups(groups: list, ended: set[str], dead) -> list:
    """Of `groups`, those still reserved whose job has `ended` (hex job ids), not detached, and made by the driver
    or by an actor `dead(actor_id)` says is dead."""
    return unusable_groups(groups, lambda pg: pg.creator_job_dead or pg.creator_job_id.hex() in ended, dead)


def remove_groups(groups: list, on_error=logger.debug) -> tuple[int, float]:
    """Remove these placement groups: (how many, the CPUs they asked for, placed or not). A group that cannot be
    removed (gone meanwhile, a busy GCS) is told to `on_error` and skipped: the next pass retries."""
    import ray
    from ray.util.placement_group import PlacementGroup

    count, cpus = 0, 0.0
    for pg in groups:
        try:
            ray.util.remove_placement_group(PlacementGroup(ray.PlacementGroupID(pg.placement_group_id)))
        except Exception as exc:     # removed meanwhile
            on_error("placement group %s not removed: %s", pg.placement_group_id.hex(), exc)
            continue
        count += 1
        cpus += sum(b.unit_resources.get("CPU", 0.0) for b in pg.bundles)
    return count, cpus


def release_ended_jobs_groups() -> tuple[int, float]:
    """Remove the placement groups of ended jobs (`ended_jobs_groups`): (how many, the CPUs they held). Never
    raises: a group left only keeps what it held."""
    import ray

    if ray.util.client.ray.is_connected():
        return 0, 0.0      # a Ray Client (ray://) has no GCS tables to read: the next driver on the cluster will
    try:
        return remove_groups(ended_jobs_groups(ray_compat.placement_group_table(), ray_compat.ended_jobs(),
                                               actor_dead))
    except Exception as exc:             # an internal table changed shape in another Ray version
        logger.debug("could not look for placement groups of ended jobs: %s", exc)
        return 0, 0.0
