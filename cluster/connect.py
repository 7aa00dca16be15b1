"""One connection rule for every command.

- no address and no RAY_ADDRESS: start an embedded local Ray, bound to 127.0.0.1;
- ``--address`` / RAY_ADDRESS: join that cluster (``auto``, ``host:port`` or ``ray://host:port``).
"""
from __future__ import annotations

import logging
import os

import ray


class ConnectionError_(RuntimeError):
    """Raised when a Ray cluster cannot be reached; the message says what to check."""


def connect(address: str | None = None, *, num_cpus: int | None = None, quiet: bool = True) -> dict:
    """Connect to Ray once per process and return the cluster's total resources.

    Already connected (a test's session fixture, a job's entrypoint on a cluster): reuse it.
    """
    if ray.is_initialized():
        return describe_resources()
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict = {"logging_level": logging.WARNING if quiet else logging.INFO,
                    "log_to_driver": True}
    if address is None:
        # Logical CPUs may exceed physical cores: a Train worker, Ray Data's tasks and the controller must
        # all fit at once or training waits forever for a CPU (the classic Train + Data starvation).
        cpus = num_cpus or max(os.cpu_count() or 1, 4)
        kwargs.update(num_cpus=cpus, include_dashboard=False,
                      _node_ip_address="127.0.0.1")
    else:
        kwargs["address"] = address
    try:
        ray.init(**kwargs)
    except ConnectionError as exc:  # ray raises the builtin for unreachable GCS
        raise ConnectionError_(
            f"could not connect to the Ray cluster at {address!r}: {exc}. "
            "Check the address (trainyard cluster status), or unset RAY_ADDRESS to use embedded local Ray."
        ) from exc
    return describe_resources()


def describe_resources() -> dict:
    """Total CPUs/GPUs of the connected cluster, as plain numbers."""
    res = ray.cluster_resources()
    return {"CPU": float(res.get("CPU", 0)), "GPU": float(res.get("GPU", 0)),
            "nodes": sum(1 for n in ray.nodes() if n.get("Alive"))}
