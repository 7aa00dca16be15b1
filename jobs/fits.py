"""Whether a run fits a cluster of given resources: the CPUs its workers take, and whether it trains on GPUs.
Kept apart from `jobs.train` (which imports torch, seconds on 2 cores): `trainyard submit` asks it of a
`cluster up` cluster before the upload."""
from __future__ import annotations

from cluster.errors import BadInput
from jobs.spec import JobSpec


class ClusterTooSmall(BadInput):
    """The spec asks for more CPUs or GPUs than the connected cluster has (exit 2: the spec must change, or the
    cluster); said before any data is read."""


def resolve_use_gpu(spec_value, workers: int, resources: dict) -> bool:
    gpus = resources.get("GPU", 0)
    if spec_value == "auto":
        return gpus >= workers and gpus > 0
    if spec_value and gpus < workers:
        raise ClusterTooSmall(f"train.use_gpu is true and train.workers is {workers}, but the cluster has {gpus:g} "
                              "GPU(s); lower train.workers or set train.use_gpu: auto")
    return bool(spec_value)


def check_resources(spec: JobSpec, resources: dict) -> None:
    need = spec.train.workers * spec.train.cpus_per_worker
    if need > resources.get("CPU", 0):
        raise ClusterTooSmall(f"train.workers={spec.train.workers} × train.cpus_per_worker="
                              f"{spec.train.cpus_per_worker:g} needs {need:g} CPUs but the cluster has "
                              f"{resources.get('CPU', 0):g}; lower train.workers or train.cpus_per_worker, or add "
                              "nodes")
