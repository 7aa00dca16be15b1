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


def ended_jobs_groups(groups: list, ended: set[str], actor_dead) -> list:
    """Of `groups` (`gcs_pb2.PlacementGroupTableData`), those still reserved whose job has `ended` (hex job ids),
    not detached, and made by the driver or by an actor `actor_dead(actor_id)` says is dead."""
    removed = ray_compat.gcs_protos().PlacementGroupTableData.REMOVED
    return [pg for pg in groups
            if pg.state != removed and not pg.is_detached
            and (pg.creator_job_dead or pg.creator_job_id.hex() in ended)
            and (not made_by_an_actor(pg.creator_actor_id) or pg.creator_actor_dead
                 or actor_dead(pg.creator_actor_id))]


def release_ended_jobs_groups() -> tuple[int, float]:
    """Remove the placement groups of ended jobs (`ended_jobs_groups`): (how many, the CPUs they held). Never
    raises: a group left only keeps what it held."""
    import ray
    from ray.util.placement_group import PlacementGroup

    count, cpus = 0, 0.0
    if ray.util.client.ray.is_connected():
        return count, cpus      # a Ray Client (ray://) has no GCS tables to read: the next driver on the cluster will
    try:
        dead = ray_compat.gcs_protos().ActorTableData.DEAD

        def actor_dead(actor_id: bytes) -> bool:
            info = ray_compat.actor_info(actor_id)
            return info is None or info.state == dead

        for pg in ended_jobs_groups(ray_compat.placement_group_table(), ray_compat.ended_jobs(), actor_dead):
            try:
                ray.util.remove_placement_group(PlacementGroup(ray.PlacementGroupID(pg.placement_group_id)))
            except Exception as exc:     # removed meanwhile
                logger.debug("placement group %s not removed: %s", pg.placement_group_id.hex(), exc)
                continue
            count += 1
            cpus += sum(b.unit_resources.get("CPU", 0.0) for b in pg.bundles)     # as asked (placed or not)
    except Exception as exc:             # an internal table changed shape in another Ray version
        logger.debug("could not look for placement groups of ended jobs: %s", exc)
    return count, cpus
