"""Helpers of the tests that run Ray Train: a report recorder (a Ray Train callback), a worker that dies once,
and a count of Ray's actors by class."""
import json
import os
import signal
from collections import Counter
from pathlib import Path


def report_recorder(path: str):
    """A Ray Train callback (it runs in the run's controller process) that appends one JSON line per report to
    `path`: the epoch, whether a checkpoint came with it, how many ranks reported, each rank's metrics, and the
    controller's poll and preemption settings as its environment has them."""
    import ray.train

    from jobs.train import POLL_ENV, PREEMPTION_ENV

    class Recorder(ray.train.UserCallback):     # defined in here: pickled by value into the controller
        def after_report(self, run_context, metrics, checkpoint):
            with open(path, "a") as f:
                f.write(json.dumps({"epoch": metrics[0].get("epoch"), "checkpoint": checkpoint is not None,
                                    "ranks": len(metrics), "metrics": metrics, "poll": os.environ.get(POLL_ENV),
                                    "preemption": os.environ.get(PREEMPTION_ENV)}) + "\n")
    return Recorder()


def recorded(path: str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def actors_by_class(alive: bool = False) -> Counter:
    """How many actors of each class the GCS knows of (dead ones too, unless `alive`)."""
    from cluster import ray_compat

    table = ray_compat.actor_table()
    if alive:
        table = [a for a in table if a.state == ray_compat.gcs_protos().ActorTableData.ALIVE]
    return Counter(a.class_name for a in table)


def dies_once_after(loop, epoch: int, marker: str):
    """`loop`, except that rank 0 dies by SIGKILL once the controller has taken in `epoch`'s report, once per
    run: the marker file records the kill, so the restarted worker trains on. A real worker death, injected
    around the product's loop rather than inside it."""
    def dying_loop(config: dict) -> None:
        import ray.train

        report = ray.train.report

        def report_then_die(metrics, *args, **kwargs):
            report(metrics, *args, **kwargs)
            if (ray.train.get_context().get_world_rank() == 0 and metrics.get("epoch") == epoch
                    and not os.path.exists(marker)):
                # Wait for the controller to take in this report: a worker killed the instant `report`
                # returns can die before the controller's poll that just emptied its queue gets a reply, and
                # both checkpoints would be lost with it (the restarted group would start over).
                ray.train.get_all_reported_checkpoints()
                open(marker, "w").close()
                os.kill(os.getpid(), signal.SIGKILL)

        ray.train.report = report_then_die     # this worker process only: the loop calls ray.train.report
        loop(config)
    return dying_loop
