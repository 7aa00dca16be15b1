"""Asking a served app over HTTP from this machine: its /readyz, and the version it runs."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Optional

from serving.payload import payload_json


def client_host(host: str) -> str:
    """Where a client on this machine reaches a server listening on `host`."""
    return "127.0.0.1" if host in ("0.0.0.0", "::") else host


def get_json(url: str, timeout: float = 5.0) -> Optional[dict]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return json.loads(r.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def running_version(running, host: str, port: int) -> Optional[str]:
    """The version a running deployment (`ServeDeployment`) answers with at its /readyz (no token needed; its own
    route prefix), else the version Serve was given to run (its bundle's lineage): with no replica up to answer,
    an update said "the version it replaces, running, scored ..."."""
    prefix = "" if running.route_prefix in (None, "/") else running.route_prefix
    ready = get_json(f"http://{client_host(host)}:{port}{prefix}/readyz")
    version = ((ready or {}).get("model") or {}).get("version")
    if version or not running.init_args:
        return version
    return (payload_json(running.init_args[0], "lineage.json") or {}).get("version")
