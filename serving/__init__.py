"""Serving: a bundle behind Ray Serve, and a client for it.

- ``serve_forever(bundle, spec=..., name=..., token=...)``: `trainyard serve` / `trainyard run` — deploy and block;
- ``deploy(bundle, ...)`` / ``shutdown(name)``: the same without blocking (tests, notebooks, updates);
- ``Client(url, token=...)``: predict from records, a DataFrame or a file, in batches;
- ``commands.register``: the `trainyard serve` and `trainyard predict` subcommands.
"""
from serving.server import Served, ServeError, app_status, deploy, running_replicas, serve_forever, shutdown

__all__ = ["serve_forever", "deploy", "shutdown", "Served", "ServeError", "app_status", "running_replicas"]
