"""Where trainyard's work runs: embedded local Ray by default, or an existing cluster.

- ``connect(address)``: the one connection rule (embedded local Ray, or a cluster by address, with its token);
  ``is_embedded()``: whether this process started the local Ray it is connected to; ``starts_embedded(address)``:
  whether ``connect(address)`` would start one; ``stop_embedded()``: stop it now (connect has it run at exit too),
  and its workers that never exit after it; ``disconnect()``: that, or leave the cluster this process joined;
- ``preflight(address)``: the same checks without starting a driver (wrong address / missing / bad token);
- ``parse_address(text)``, ``find_token(address)``, ``ConnectError``: addresses and tokens (``cluster.address``);
- ``job_client(address)``: an authenticated Ray Jobs API client for a dashboard URL, ``dashboard_url(address)``:
  that URL (``cluster.dashboard``);
- ``check_shared_storage(path)``: fail up front when some node cannot see what the others write at ``path``;
- ``cluster.local``: a real local multi-node cluster (``up``/``status``/``down``);
- ``cluster.errors``: the root of every trainyard error and its exit code (a leaf: imports nothing);
- ``cluster.quiet.quiet_ray_logs()``: Ray's log set-up for a trainyard driver;
- ``cluster.commands.register``: the `trainyard cluster ...` and `trainyard jobs ...` subcommands.

Imports nothing of ours (jobs, tuning and serving depend on this package, never the reverse). The names below
load on first use: importing a leaf such as ``cluster.errors`` (the spec does) must not import Ray. (The
module is ``cluster.connection``, not ``cluster.connect``: a submodule of that name would replace the function
``cluster.connect`` as the package's attribute the moment anything imported it.)
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    **dict.fromkeys(("connect", "describe_resources", "preflight", "is_embedded", "starts_embedded",
                     "stop_embedded", "disconnect"), "cluster.connection"),
    **dict.fromkeys(("ConnectError", "find_token", "parse_address"), "cluster.address"),
    **dict.fromkeys(("job_client", "dashboard_url"), "cluster.dashboard"),
    **dict.fromkeys(("check_shared_storage", "StorageError", "is_uri"), "cluster.storage"),
    **dict.fromkeys(("TrainyardError", "BadInput", "Failure"), "cluster.errors"),
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'cluster' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
