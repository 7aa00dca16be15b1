"""Where trainyard's work runs: embedded local Ray by default, or an existing cluster.

- ``connect(address)``: the one connection rule (embedded local Ray, or a cluster by address, with its token);
- ``preflight(address)``: the same checks without starting a driver (wrong address / missing / bad token);
- ``job_client(address)``: an authenticated Ray Jobs API client for a dashboard URL;
- ``check_shared_storage(path)``: fail up front when some node cannot see what the others write at ``path``;
- ``cluster.local``: a real local multi-node cluster (``up``/``status``/``down``);
- ``cluster.errors``: the root of every trainyard error and its exit code (a leaf: imports nothing);
- ``cluster.quiet.quiet_ray_logs()``: Ray's log set-up for a trainyard driver;
- ``cluster.commands.register``: the `trainyard cluster ...` and `trainyard jobs ...` subcommands.

Imports nothing of ours (jobs, tuning and serving depend on this package, never the reverse).
"""
from cluster.connect import (ConnectError, connect, describe_resources, find_token, job_client, parse_address,
                             preflight)
from cluster.errors import BadInput, Failure, TrainyardError
from cluster.storage import StorageError, check_shared_storage, is_uri

__all__ = ["connect", "describe_resources", "ConnectError", "preflight", "job_client", "find_token",
           "parse_address", "check_shared_storage", "StorageError", "is_uri", "TrainyardError", "BadInput",
           "Failure"]
