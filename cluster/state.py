"""Where trainyard keeps what it records on this machine: the folder (``state_dir``), and in it the local
cluster `trainyard cluster up` started (``cluster.json``: pids, ports, address, token file).

Other packages put their own records in the same folder (``state_dir()``), so that one setting
(``--state-dir`` or $TRAINYARD_STATE_DIR) moves them all.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from cluster.errors import Failure

STATE_FILE = "cluster.json"
STATE_DIR_ENV = "TRAINYARD_STATE_DIR"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost"}


class StateError(Failure):
    """The recorded state cannot be read; the message names the file and what to do with it."""


def state_dir(path: str | os.PathLike | None = None) -> Path:
    """The folder of trainyard's records: the argument, else $TRAINYARD_STATE_DIR, else ./.trainyard."""
    chosen = path or os.environ.get(STATE_DIR_ENV) or Path.cwd() / ".trainyard"
    return Path(chosen).expanduser().resolve()


def elsewhere_hint() -> str:
    """Where else a cluster's record may be: each `cluster up` records its cluster in the folder it was run in
    (./.trainyard) unless told otherwise, and a command run from another folder found none ("start one" then
    invited a second cluster)."""
    # Only `trainyard cluster ...` takes --state-dir: `submit` and `jobs` were told to give it, and refused it.
    return (f"a cluster started from another folder is recorded in that folder's .trainyard/: run this there, "
            f"or set {STATE_DIR_ENV}=DIR/.trainyard (`trainyard cluster` commands also take --state-dir DIR/.trainyard)")


def state_path(path: str | os.PathLike | None = None) -> Path:
    return state_dir(path) / STATE_FILE


def read_state(path: str | os.PathLike | None = None) -> dict | None:
    """The recorded cluster, or None when there is none. A corrupt file is a StateError naming the file."""
    file = state_path(path)
    if not file.exists():
        return None
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise StateError(
            f"{file}: unreadable cluster state ({exc}). If no cluster is running, delete the file; "
            "otherwise stop its processes by the pids it lists."
        ) from exc


def write_state(path: str | os.PathLike | None, state: dict) -> Path:
    file = state_path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    # A reader (another `trainyard` command) never sees a half-written file.
    os.replace(tmp, file)
    return file


def matches_address(state: dict, host: str | None, port: int | None) -> bool:
    """Whether host:port is one of the recorded cluster's endpoints (GCS, Ray Client or dashboard)."""
    if host not in LOOPBACK_HOSTS or port is None:
        return False
    ports = state.get("ports", {})
    return port in {ports.get("gcs"), ports.get("client"), ports.get("dashboard")}
