"""Where trainyard's work runs: embedded local Ray by default, or an existing cluster.

- ``connect(address)``: the one connection rule (embedded local Ray, or a cluster by address, with its token);
- ``preflight(address)``: the same checks without starting a driver (wrong address / missing / bad token);
- ``job_client(address)``: an authenticated Ray Jobs API client for a dashboard URL;
- ``check_shared_storage(path)``: fail up front when some node cannot see what the others write at ``path``;
- ``cluster.local``: a real local multi-node cluster (``up``/``status``/``down``);
- ``cluster.errors``: the root of every trainyard error and its exit code (a leaf: imports nothing);
- ``cluster.quiet.quiet_ray_logs()``: Ray's log set-up for a trainyard driver;
- ``cluster.commands.register``: the `trainyard cluster ...` and `trainyard jobs ...` subcommands.

Imports nothing of ours (jobs, tuning and serving depend on this package, never the reverse). The names below
load on first use, so that importing a leaf such as ``cluster.errors`` (the spec does) does not import Ray.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "connect": "cluster.connect", "describe_resources": "cluster.connect", "ConnectionError_": "cluster.connect",
    "preflight": "cluster.connect", "job_client": "cluster.connect", "find_token": "cluster.connect",
    "parse_address": "cluster.connect",
    "check_shared_storage": "cluster.storage", "StorageError": "cluster.storage", "is_uri": "cluster.storage",
    "TrainyardError": "cluster.errors", "BadInput": "cluster.errors", "Failure": "cluster.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cluster' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
