"""Serving: a bundle behind Ray Serve, and a client for it.

- ``serve_forever(bundle, spec=..., name=..., token=...)``: `trainyard serve` / `trainyard run` — deploy and block
  until Ctrl-C; serving under the name of a running app updates it with no downtime;
- ``deploy(bundle, ...)`` / ``shutdown(name)``: the same without blocking (tests, notebooks, scripts);
- ``Client(url, token=...)``: predictions for records, a DataFrame or a file, sent in batches;
- ``commands.register``: the `trainyard serve` and `trainyard predict` subcommands.
"""
from serving.client import Client, ClientError
from serving.forever import serve_forever
from serving.server import Served, app_status, deploy, running_replicas, shutdown
from serving.settings import ServeError

__all__ = ["serve_forever", "deploy", "shutdown", "Client", "ClientError", "Served", "ServeError",
           "app_status", "running_replicas"]
