"""`trainyard serve`: deploy a bundle (`serving.server.deploy`) and serve it until Ctrl-C or SIGTERM.

`serve_forever(bundle)` records itself in `<state dir>/serve-<port>.json`, so that a later `trainyard serve
NEW_BUNDLE --name N` in another shell can find this Ray and update app N in place; it blocks until Ctrl-C or
SIGTERM, then deletes the app, and shuts Serve down when no other app is left. A second app served on the same
port from another shell joins this process's Ray as its guest (`host_of`): it stops when this process stops, and
records itself apart (`guest_file`), so that an update of its app from a third shell finds it too (`server_of`).
"""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Callable, Optional

from cluster import is_embedded
from cluster.errors import EXIT_OK
from cluster.nodes import alive_nodes, metrics_urls
from cluster.ports import connect_error
from cluster.processes import ALIVE, own_identity, recorded_process
from cluster.state import state_dir
from serving.openapi import example_record
from serving.ingress import first_line
from serving.probe import get_json
from serving.server import DEPLOY_TIMEOUT_S, Served, _delete_quietly, app_overview, deploy, shutdown
from serving.settings import TOKEN_ENV, ServeError


def update_words(before: str, after: str) -> str:
    """What an update did: "updated X → Y"; the same bundle served again (its settings applied anew) is no new
    version, and "updated X → X" read as one."""
    return f"updated {before} → {after}" if before != after else f"deployed again, same version {after}"


def state_file(port: int) -> Path:
    """Where the `trainyard serve` on `port` records itself: in trainyard's state folder (cluster.state)."""
    return state_dir() / f"serve-{port}.json"


def guest_file(port: int, name: str) -> Path:
    """Where a `trainyard serve` of app `name` on the port of another (its guest, `host_of`) records itself, so
    that an update of `name` from a third shell finds it (`server_of`) instead of serving the app a second time.
    App names are file-name safe (serving.settings.NAME)."""
    return state_dir() / f"serve-{port}-guests" / f"{name}.json"


def read_server_state(port: int) -> Optional[dict]:
    """The trainyard process serving on `port` (its pid and Ray address), if it is still alive."""
    return _read_live(state_file(port))


def server_of(port: int, name: str, owner: Optional[dict] = None) -> Optional[dict]:
    """The live trainyard process that serves app `name` on `port`: the port's owner (`owner`, already read, or
    `read_server_state`) when its record lists the app, else the guest that recorded it (`guest_file`); None
    when no process does."""
    owner = owner if owner is not None else read_server_state(port)
    if owner is not None and name in (owner.get("apps") or []):
        return owner
    guest = _read_live(guest_file(port, name))
    return guest if guest is not None and name in (guest.get("apps") or []) else None


def serving_process(port: int, name: Optional[str]) -> Optional[dict]:
    """The record of the live trainyard process whose Ray a new `trainyard serve --port PORT [--name NAME]` joins:
    the port's owner; or, when the owner is gone but its Ray lives on (a cluster's), the guest that still serves
    app NAME there (`server_of`), so that an update of that app reaches it. None: start or join Ray as usual."""
    return read_server_state(port) or (server_of(port, name) if name else None)


def served_elsewhere(name: str, port: int) -> Optional[dict]:
    """The record of a live trainyard process serving app `name` on a port other than `port` (an owner's or a
    guest's record), None when none does: `trainyard serve NEW --name APP` without --port looked only at the
    default port and started a second server there, without the running one's logging."""
    files = sorted(state_dir().glob("serve-*.json")) + sorted(state_dir().glob(f"serve-*-guests/{name}.json"))
    for file in files:
        record = _read_live(file)
        if record is not None and record.get("port") != port and name in (record.get("apps") or []):
            return record
    return None


def _read_live(file: Path) -> Optional[dict]:
    """The record in `file` while the process it names is still that process (`cluster.processes`: a pid alone
    could name a stranger once the recorded process has exited); else None."""
    try:
        state = json.loads(file.read_text())
        return state if recorded_process(state) == ALIVE else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _write_server_state(served: Served, owner_apps: list[str], file: Optional[Path] = None) -> Path:
    """Records this process as the server of `owner_apps` on the port: in `state_file` (the port's owner) unless
    another `file` is given (a guest's, `guest_file`)."""
    import ray
    file = file or state_file(served.port)
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(".tmp")
    tmp.write_text(json.dumps({**own_identity(), "address": ray.get_runtime_context().gcs_address,
                               "embedded": is_embedded(), "host": served.host, "port": served.port,
                               "apps": owner_apps}, indent=2))
    os.replace(tmp, file)
    return file


def serve_forever(bundle_path, *, spec=None, name: Optional[str] = None, host: Optional[str] = None,
                  port: Optional[int] = None, token: Optional[str] = None, no_token: bool = False,
                  progress: Callable[[str], None] = print, timeout_s: float = DEPLOY_TIMEOUT_S,
                  breaking: bool = False) -> int:
    """Deploy and block until Ctrl-C/SIGTERM, then delete the app. When another trainyard process already
    serves app `name` here, this is an update: deploy the new bundle into it and return (that process keeps
    serving it). A new app on the port of another trainyard process (whose Ray this one joined) is that
    process's guest: served until stopped, or until that process stops (`_host_gone`, `_deleting_its_apps`),
    without touching its record (`state_file`). Returns 0 (EXIT_OK) once stopped; a deploy that fails, an app
    deleted from under it, a Serve that stops answering, a host that stops, or Ray's GCS or this node's raylet
    going (`RayLifelines`), raises ServeError."""
    import ray

    served = deploy(bundle_path, spec=spec, name=name, host=host, port=port, token=token, no_token=no_token,
                    progress=progress, timeout_s=timeout_s, breaking=breaking)
    owner = read_server_state(served.port)       # another trainyard process serving on this port, if any
    if served.updated_from is not None:
        change = update_words(served.updated_from, served.version)
        holder = server_of(served.port, served.name, owner)     # the port's owner, or a guest serving this app
        if holder and holder["pid"] != os.getpid():
            progress(f"[serve] {served.name} {change} at {served.url}; it stays served by trainyard process "
                     f"{holder['pid']}")
            return EXIT_OK
        progress(f"[serve] {served.name} {change}")
    # The handlers go first: a SIGTERM from here on stops through the `finally` below, record and app included.
    previous = _stop_on_signals()
    file, ending = None, "delete"   # what the end does with the app: delete it; "release" it; leave it ("none")
    lifelines = RayLifelines({})
    try:
        lifelines = RayLifelines.of_this_process()
        _announce(served, progress)
        if owner is None or owner["pid"] == os.getpid():
            file = _write_server_state(served, [served.name])
        else:
            # Another trainyard process serves on this port: its record is left as it is (the next update of one
            # of its apps finds it there), and this app gets a record of its own for the next update of it.
            file = _write_server_state(served, [served.name], guest_file(served.port, served.name))
        seen = {"running": None, "version": served.version, "answered": served.version}
        host_record = host_of(owner, ray.get_runtime_context().gcs_address)
        if host_record is not None:
            progress(f"[serve] {served.name} runs on the Ray of trainyard process {host_record['pid']}, which serves "
                     f"on port {served.port}: stopping that process stops {served.name} too")
        while True:
            # A guest looks every second: its host deletes its apps for a few seconds before its Ray goes, and a
            # call into a Ray that has gone waits a minute or for ever, so every server looks at the host and at
            # Ray's processes (`RayLifelines`) before asking Serve.
            time.sleep(5.0 if host_record is None else 1.0)
            if host_record is not None and _host_gone(host_record):
                ending = "none"                 # its Ray, and this app with it, has gone
                raise _stops_with_host(served, host_record)
            if (gone := lifelines.first_gone()) is not None:
                ending = "none"                 # a call into Serve would never return
                raise ServeError(f"Ray's {gone} stopped while {served.name} was served (killed, or out of memory?), "
                                 "so Ray Serve can no longer be reached from here; stopped. On this machine's own "
                                 "Ray the app is gone with it: start `trainyard serve` again. On a cluster the "
                                 f"other nodes may still serve it: `trainyard serve BUNDLE --name {served.name}` "
                                 "from a healthy node takes it over (check the cluster with `ray status` first)")
            try:
                apps, running = app_overview(served.name)
            except Exception as exc:  # noqa: BLE001 - Serve's controller or Ray went away under us
                ending = "none"
                raise ServeError(f"Ray Serve stopped answering while serving {served.name} ({first_line(exc)}); "
                                 "stopped serving it") from exc
            if host_record is not None and _deleting_its_apps(host_record, apps):
                ending = "release"              # its Ray may outlive it (a notebook, a script): ask Serve to go
                raise _stops_with_host(served, host_record)
            if served.name not in apps:
                raise ServeError(f"{served.name} was deleted from Serve (`serve.delete`, `serve shutdown` or "
                                 "another process); stopped serving it")
            # What changes while it serves is said: the replicas autoscaling adds and removes, and a version
            # another `trainyard serve` put in (the server printed nothing after its start).
            ready = get_json(f"{served.url}/readyz", timeout=2.0) or {}
            now = {"running": running, "answered": (ready.get("model") or {}).get("version")}
            for line in serving_changes(served.name, seen, now):
                progress(line)
    except KeyboardInterrupt:
        progress(f"[serve] stopping {served.name} ...")
    finally:
        try:
            if ending != "none" and (gone := lifelines.first_gone()) is not None:    # a call would never return
                progress(f"[serve] {served.name} not deleted: Ray's {gone} is gone")
            elif ending == "delete":
                shutdown(served.name)
            elif ending == "release":
                _delete_quietly(served.name, blocking=False)
        finally:
            if file is not None:
                _remove_own_record(file)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    progress("[serve] stopped")
    return EXIT_OK


def serving_changes(name: str, seen: dict, now: dict) -> list[str]:
    """The lines for what changed since the last look at a served app, `seen` updated: {"running": its RUNNING
    replicas (None before the first look), "version": the version last said, "answered": the version /readyz
    answered last}. A version is said once two looks in a row answer it: during an update either version may
    answer for a few seconds."""
    lines = []
    if seen["running"] is not None and now["running"] != seen["running"]:
        lines.append(f"[serve] {name}: {now['running']} replica(s) running (was {seen['running']})")
    seen["running"] = now["running"]
    answered = now["answered"]
    if answered and answered == seen["answered"] and answered != seen["version"]:
        lines.append(f"[serve] {name} now serves {answered} (was {seen['version']}): updated from another process")
        seen["version"] = answered
    seen["answered"] = answered or seen["answered"]
    return lines


def _stop_on_signals() -> dict:
    """SIGINT and SIGTERM raise KeyboardInterrupt; returns the handlers they had."""
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        # SIGTERM (`kill`, a container stop) stops as cleanly as Ctrl-C; SIGINT is set explicitly because a
        # process started in the background by a script inherits it ignored.
        try:
            previous[sig] = signal.signal(sig, _raise_interrupt)
        except ValueError:   # not the main thread: Ctrl-C/KeyboardInterrupt only
            pass
    return previous


def _stops_with_host(served: Served, host_record: dict) -> ServeError:
    return ServeError(f"trainyard process {host_record['pid']}, whose Ray {served.name} runs on, is stopping its "
                      f"server on port {served.port}; {served.name} stops with it. To serve it on its own, run "
                      "`trainyard serve` again once that server is down")


def host_of(owner: Optional[dict], gcs_address: str) -> Optional[dict]:
    """The record (`read_server_state`) of the other trainyard process whose embedded Ray this process joined,
    which takes this process's app with it when it stops; None when this process owns the port, or the owner's
    Ray outlives it (a cluster's) or is not this one's. A record from before "embedded" was kept counts as
    embedded: the cautious reading, as every `trainyard serve` without --address is."""
    if owner is None or owner["pid"] == os.getpid() or owner.get("address") != gcs_address:
        return None
    return owner if owner.get("embedded", True) else None


def _host_gone(host_record: dict) -> bool:
    """True once the trainyard process whose Ray this one joined (`host_of`) has ended, or its Ray has: a SIGKILLed
    host takes its embedded Ray with it at once. Asks neither Ray nor Serve (a call into a Ray that has gone waits
    a minute before it fails): the process table and the GCS port."""
    if recorded_process(host_record) != ALIVE:
        return True
    return _connect_error(str(host_record.get("address", ""))) is not None


class RayLifelines:
    """The Ray processes every call of this process into Ray goes through, by address: the GCS and the raylet of
    the node this process is attached to. When either is killed (the out-of-memory killer picks a raylet too), a
    call into Ray or Serve waits for ever: Ray keeps a driver alive when its raylet dies (ray-project/ray#20777),
    and the raylet a driver started itself (embedded Ray) stays a zombie that keeps its workers, replicas
    included, running until the driver exits. `first_gone` looks at their ports instead."""

    STRIKES = 3      # connections unanswered in a row (not refused) before a remote process counts as gone

    def __init__(self, addresses: dict[str, str]):
        self.addresses = addresses
        self._unanswered = dict.fromkeys(addresses, 0)

    @classmethod
    def of_this_process(cls) -> "RayLifelines":
        """This driver's GCS and raylet; none through Ray Client (`ray://`), whose calls go through its server."""
        import ray
        if ray.util.client.ray.is_connected():
            return cls({})
        context = ray.get_runtime_context()
        addresses = {"GCS": context.gcs_address}
        node = next((n for n in alive_nodes() if n.node_id == context.get_node_id()), None)
        if node is not None and node.raylet_port:
            addresses["raylet"] = f"{node.ip}:{node.raylet_port}"
        return cls(addresses)

    def first_gone(self) -> Optional[str]:
        """"NAME (ADDRESS)" of the first process whose port refuses connections (a process that died closes its
        ports at once), or has not answered `STRIKES` times in a row (a lost packet is not a dead GCS); else None."""
        for name, address in self.addresses.items():
            error = _connect_error(address)
            self._unanswered[name] = 0 if error is None else self._unanswered[name] + 1
            if isinstance(error, ConnectionRefusedError) or self._unanswered[name] >= self.STRIKES:
                return f"{name} ({address})"
        return None


def _connect_error(address: str) -> Optional[OSError]:
    host, _, port = address.rpartition(":")
    try:
        return connect_error(host, int(port))
    except ValueError as exc:
        return OSError(f"not an address: {address!r} ({exc})")


def _remove_own_record(file: Path) -> None:
    """Remove `file` if it is still this process's record (another process may have written its own there since),
    and a guests' folder left empty."""
    try:
        if json.loads(file.read_text()).get("pid") == os.getpid():
            file.unlink()
        if file.parent.name.endswith("-guests"):
            file.parent.rmdir()          # fails, as it should, while another guest's record is in it
    except (OSError, ValueError, AttributeError):
        pass


def _deleting_its_apps(host_record: dict, apps: dict[str, str]) -> bool:
    """True once every app the host serves is gone or being deleted (`apps`: `serving.server.app_states`): it
    deletes them when it stops, and its embedded Ray goes next."""
    listed = host_record.get("apps") or []
    return bool(listed) and all(apps.get(name, "DELETING") == "DELETING" for name in listed)


def _raise_interrupt(*_):
    raise KeyboardInterrupt


_EXAMPLE_FIELDS = 6     # fields of the example request the start-up lines show


def _announce(served: Served, progress: Callable[[str], None]) -> None:
    auth = ' -H "Authorization: Bearer $TRAINYARD_SERVE_TOKEN"' if served.token_required else ""
    # A record the model takes (its required fields first, typical values): `{}` gave a prediction of imputed
    # values alone, and a text model's 422.
    record = example_record(served.schema, _EXAMPLE_FIELDS) if served.schema else {}
    body = json.dumps({"records": [record]}).replace("'", "'\\''")          # inside the shell's '...'
    others = len(served.schema.get("features", [])) - len(record)
    rest = f"  (its other {others} field(s) are imputed when left out)" if others > 0 else ""
    logs = f"{served.log_path.rstrip('/')}/{served.name}" if served.log_path else None     # serving.predlog's folder
    # Given with --token, the token is in no variable of the user's shell: the curl line alone gave a 401. (Where
    # it came from is not known here: `serve` takes $TRAINYARD_SERVE_TOKEN out of its environment, for Ray's sake.)
    export = (f"  curl and trainyard predict read the token from ${TOKEN_ENV}: export it in the shell you send "
              "from\n" if served.token_required else "")
    progress(f"[serve] {served.name} {served.version} at {served.url}  (docs: {served.url}/docs)\n" + export +
             f"  curl -s{auth} {served.url}/predict -d '{body}'{rest}\n"
             + (f"  predictions logged under {logs} (trainyard monitor BUNDLE --logs {logs})\n" if logs else "") +
             f"  trainyard predict --url {served.url} "
             f"{'FOLDER_OF_IMAGES' if served.schema.get('input') == 'image' else 'FILE.csv'} --out predictions.csv\n"
             + metrics_line() + "  Ctrl-C stops it")


def metrics_line() -> str:
    """Where Prometheus reads the replicas' trainyard_* gauges and Serve's own metrics: each node's Ray metrics
    agent. It was found only by reading `ray.nodes()` (which a user's own ray.init could not reach)."""
    try:
        urls = metrics_urls()
    except Exception:  # noqa: BLE001 - an announcement, never a reason to fail a deploy that worked
        return ""
    if not urls:
        return ""
    more = f" (and {len(urls) - 1} more node(s): ray.nodes()' MetricsExportPort)" if len(urls) > 1 else ""
    return f"  Prometheus metrics: {urls[0]}{more}\n"
