"""Putting a bundle behind Ray Serve: start Serve's HTTP ingress, deploy (or update) an app, serve until Ctrl-C.

Serve's HTTP address is one per Ray cluster (the first `serve.start` fixes host and port for the cluster's
lifetime), and apps share it by route prefix. So:

- `deploy(bundle, name=N)` starts Serve on host:port if it is not running, or checks that the running one
  listens where asked (and says what to do if not), then runs app N. Deploying N again is an update: Serve
  starts the new replicas, waits until they pass their health check, and only then stops the old ones
  (`max_surge_percent`), so requests in flight or arriving meanwhile are all answered;
- `serve_forever(bundle)` deploys, records itself in `<state dir>/serve-<port>.json` (so that a later
  `trainyard serve NEW_BUNDLE --name N` in another shell can find this Ray and update the app in place), and
  blocks; Ctrl-C or SIGTERM deletes the app, and shuts Serve down when no other app is left.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from cluster.errors import EXIT_OK
from cluster.nodes import alive_nodes
from cluster.ports import free_ports
from cluster.ray_compat import serve_controller_client
from cluster.state import state_dir
from jobs.spec import ServeSpec
from serving.ingress import (check_port_free, choose_ingress, ingress_env, metrics_env, replica_ingress_env,
                             running_ingress)
from serving.settings import TOKEN_ENV, ServeError, check_name, check_settings, default_name, resolve_spec

DEPLOYMENT = "model"


@dataclass
class Served:
    name: str
    version: str
    host: str
    port: int
    route_prefix: str
    updated_from: Optional[str] = None      # the version it replaced, when this was an update

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        prefix = "" if self.route_prefix == "/" else self.route_prefix
        return f"http://{host}:{self.port}{prefix}"


# ---------------------------------------------------------------------------------------------- Serve

def running_http_address() -> Optional[tuple[str, int]]:
    """(host, port) of the Serve instance of the connected Ray cluster, or None when Serve is not running."""
    try:
        client = serve_controller_client()
    except Exception:  # a controller that is starting or stopping: no address to report yet
        return None
    if client is None:
        return None
    http = client.http_config
    return http.host, http.port


def start_serve(serve_spec: ServeSpec, progress: Callable[[str], None] = print) -> tuple[str, int]:
    """Start Serve's HTTP ingress on the spec's host:port, or check the running one matches; returns it."""
    from ray import serve

    running = running_http_address()
    if running is not None:
        host, port = running
        if (serve_spec.port not in (0, port)) or serve_spec.host != host:
            raise ServeError(
                f"Ray Serve is already running in this Ray cluster on {host}:{port}, and Serve has one HTTP "
                f"address per cluster, so it cannot also listen on {serve_spec.host}:{serve_spec.port}. "
                f"Serve this app there (--host {host} --port {port}; apps share it by --name and route_prefix), "
                "or stop the other app first")
        return host, port
    host, port = serve_spec.host, serve_spec.port or free_ports(1, serve_spec.host)[0]
    check_port_free(host, port)
    ingress = choose_ingress(serve_spec, nodes=len(alive_nodes()))
    try:
        _start(serve_spec, host, port, ingress)
    except Exception as exc:  # a taken port surfaces as a proxy (or HAProxy) that never becomes ready
        if not (ingress == "haproxy" and serve_spec.ingress == "auto"):
            raise ServeError(f"could not start Ray Serve on {host}:{port}: {_first_line(exc)}. Is the port "
                             "taken? Try --port with another port (0 picks a free one)") from exc
        # `auto` promised a working server, not HAProxy: the Python proxy is slower but has no extra parts.
        progress(f"[serve] the HAProxy ingress did not start ({_first_line(exc)}); using Serve's proxy")
        _shutdown_quietly()
        ingress = "proxy"
        try:
            _start(serve_spec, host, port, ingress)
        except Exception as exc2:
            raise ServeError(f"could not start Ray Serve on {host}:{port}: {_first_line(exc2)}. Is the port "
                             "taken? Try --port with another port (0 picks a free one)") from exc2
    progress(f"[serve] Ray Serve listening on {host}:{port} ({ingress} ingress)")
    return host, port


def _start(serve_spec: ServeSpec, host: str, port: int, ingress: str) -> None:
    from ray import serve
    env = {**ingress_env(ingress, serve_spec, host), **metrics_env(serve_spec)}
    with _quiet_driver_logs():
        serve.start(http_options={"host": host, "port": port},
                    logging_config={"enable_access_log": serve_spec.access_log},
                    controller_options={"runtime_env": {"env_vars": env}})


@contextlib.contextmanager
def _quiet_driver_logs():
    """Serve's driver-side INFO lines repeat what `progress` says, and one of them ("New http_options/
    controller_options will not be applied", logged by every serve.run) reads like a problem when it is not.
    Importing ray.serve sets that logger to INFO, so the caller's level cannot be relied on: quiet it here."""
    import logging
    log = logging.getLogger("ray.serve")
    level = log.level
    log.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        log.setLevel(level)


def _shutdown_quietly() -> None:
    from ray import serve
    try:
        serve.shutdown()
    except Exception:  # noqa: BLE001 - a half-started Serve; what matters is that the next start is clean
        pass


def _first_line(exc: BaseException) -> str:
    """The informative line of a long error (HAProxy's [ALERT] lines, else the last line naming an error)."""
    text = [l.strip() for l in str(exc).strip().splitlines() if l.strip()]
    lines = ([l for l in text if "[ALERT]" in l] or [l for l in text if "Error" in l or "error" in l]
             or text or [type(exc).__name__])
    return lines[0 if "[ALERT]" in lines[0] else -1][:300]


def app_status(name: str) -> Optional[dict]:
    """{"status", "message", "replicas": {state: count}} of app `name`, None when it does not exist."""
    from ray import serve
    app = serve.status().applications.get(name)
    if app is None:
        return None
    dep = app.deployments.get(DEPLOYMENT)
    replicas = {str(getattr(k, "value", k)): v for k, v in (dep.replica_states if dep else {}).items()}
    return {"status": str(getattr(app.status, "value", app.status)), "message": app.message, "replicas": replicas}


def _replica_error(name: str) -> Optional[str]:
    """The exception a failed replica start ended with: Serve keeps it, with its traceback, in the deployment's
    status message, while the app's own message only says that the deployment failed."""
    from ray import serve
    try:
        app = serve.status().applications.get(name)
        message = app.deployments[DEPLOYMENT].message if app else ""
    except Exception:  # noqa: BLE001 - the generic message is still there to show
        return None
    lines = [l.strip() for l in (message or "").splitlines() if l.strip()]
    return f"a replica could not start: {lines[-1]}" if lines else None


def running_replicas(name: str) -> int:
    status = app_status(name)
    return int(status["replicas"].get("RUNNING", 0)) if status else 0


# ---------------------------------------------------------------------------------------------- deploy

def deploy(bundle_path, *, spec=None, name: Optional[str] = None, host: Optional[str] = None,
           port: Optional[int] = None, token: Optional[str] = None, progress: Callable[[str], None] = print,
           timeout_s: float = 300.0) -> Served:
    """Serve the bundle at `bundle_path` (a bundle folder or a run's output folder) as app `name`, or update
    app `name` to it. Returns when the app answers over HTTP with the new version."""
    import ray
    from ray import serve

    from jobs.bundle import BundleError, load, resolve
    from serving.app import application

    path = resolve(bundle_path)
    try:   # a broken bundle fails here, with the file named, before Serve is touched
        bundle = load(path)
    except BundleError as exc:
        if "not a trainyard bundle" in str(exc):
            raise
        raise ServeError(f"{exc}, or give another bundle folder", exit_code=exc.exit_code) from None
    serve_spec = resolve_spec(spec, host=host, port=port)
    name = name or default_name(bundle)
    check_name(name)
    check_settings(bundle, serve_spec)
    token = token if token is not None else (os.environ.get(TOKEN_ENV) or None)

    if not ray.is_initialized():
        from cluster import connect
        connect()
    host, port = start_serve(serve_spec, progress)
    before = app_status(name)
    previous = _get_json(Served(name, "", host, port, serve_spec.route_prefix).url + "/readyz", token) \
        if before else None
    # The replicas follow the ingress Serve runs with, whatever this spec asks: it is fixed per Ray cluster.
    env = {**replica_ingress_env(running_ingress(), serve_spec), **metrics_env(serve_spec)}
    app = application(path, serve_spec, name, token, env_vars=env)
    verb = "updating" if before else "deploying"
    progress(f"[serve] {verb} {name} (bundle {path}, version {bundle.version})")
    try:
        with _quiet_driver_logs():
            serve.run(app, name=name, route_prefix=serve_spec.route_prefix,
                      logging_config={"enable_access_log": serve_spec.access_log})
    except RuntimeError as exc:
        kept = " The previous version keeps serving." if before else ""
        raise ServeError(f"{verb} {name} failed: {_replica_error(name) or exc}.{kept} The replica logs (full "
                         "tracebacks) are under /tmp/ray/session_latest/logs/serve/") from None
    # An update whatever /readyz said before (another route_prefix or token may have hidden the old version).
    old_version = ((previous or {}).get("model") or {}).get("version") or "the previous version"
    served = Served(name, bundle.version, host, port, serve_spec.route_prefix,
                    updated_from=old_version if before else None)
    _wait_http(served, token, timeout_s)
    return served


def _get_json(url: str, token: Optional[str], timeout: float = 5.0) -> Optional[dict]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _wait_http(served: Served, token: Optional[str], timeout_s: float) -> None:
    """Serve reports RUNNING slightly before its HTTP ingress routes to the app: wait for /readyz to answer
    with this version, so that whoever called deploy can send requests right away."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready = _get_json(served.url + "/readyz", token, timeout=2.0)
        if ready and ready.get("model", {}).get("version") == served.version:
            return
        time.sleep(0.2)
    raise ServeError(f"{served.name} is RUNNING in Serve but {served.url}/readyz did not answer with version "
                     f"{served.version} within {timeout_s:g}s")


def shutdown(name: Optional[str] = None) -> None:
    """Delete app `name` (all of trainyard's apps when None); shut Serve down when no app is left."""
    from ray import serve
    with _quiet_driver_logs():
        if name is not None:
            try:
                serve.delete(name)
            except Exception:  # noqa: BLE001 - already gone (deleted by someone else): nothing to stop
                pass
            if serve.status().applications:
                return
        serve.shutdown()


# ---------------------------------------------------------------------------------------------- forever

def state_file(port: int) -> Path:
    """Where the `trainyard serve` on `port` records itself: in trainyard's state folder (cluster.state)."""
    return state_dir() / f"serve-{port}.json"


def read_server_state(port: int) -> Optional[dict]:
    """The trainyard process serving on `port` (its pid and Ray address), if it is still alive."""
    try:
        state = json.loads(state_file(port).read_text())
        os.kill(int(state["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return state


def _write_server_state(served: Served, owner_apps: list[str]) -> Path:
    import ray
    file = state_file(served.port)
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "address": ray.get_runtime_context().gcs_address,
                               "host": served.host, "port": served.port, "apps": owner_apps}, indent=2))
    os.replace(tmp, file)
    return file


def serve_forever(bundle_path, *, spec=None, name: Optional[str] = None, host: Optional[str] = None,
                  port: Optional[int] = None, token: Optional[str] = None,
                  progress: Callable[[str], None] = print) -> int:
    """Deploy and block until Ctrl-C/SIGTERM, then delete the app. When another trainyard process already
    serves app `name` here, this is an update: deploy the new bundle into it and return (that process keeps
    serving it). Returns 0 (EXIT_OK) once stopped; a deploy that fails, or an app deleted from under it, raises
    ServeError."""
    token = token if token is not None else (os.environ.get(TOKEN_ENV) or None)
    served = deploy(bundle_path, spec=spec, name=name, host=host, port=port, token=token, progress=progress)
    if served.updated_from is not None:
        owner = read_server_state(served.port)
        if owner and owner["pid"] != os.getpid() and served.name in owner.get("apps", []):
            progress(f"[serve] {served.name} updated {served.updated_from} → {served.version} at {served.url}; "
                     f"it stays served by trainyard process {owner['pid']}")
            return EXIT_OK
        progress(f"[serve] {served.name} updated {served.updated_from} → {served.version}")
    _announce(served, token, progress)
    file = _write_server_state(served, [served.name])
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        # SIGTERM (`kill`, a container stop) stops as cleanly as Ctrl-C; SIGINT is set explicitly because a
        # process started in the background by a script inherits it ignored.
        try:
            previous[sig] = signal.signal(sig, _raise_interrupt)
        except ValueError:   # not the main thread: Ctrl-C/KeyboardInterrupt only
            pass
    try:
        while True:
            time.sleep(5.0)
            if app_status(served.name) is None:
                raise ServeError(f"{served.name} was deleted from Serve (`serve.delete`, `serve shutdown` or "
                                 "another process); stopped serving it")
    except KeyboardInterrupt:
        progress(f"[serve] stopping {served.name} ...")
    finally:
        try:
            shutdown(served.name)
        finally:
            file.unlink(missing_ok=True)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    progress("[serve] stopped")
    return EXIT_OK


def _raise_interrupt(*_):
    raise KeyboardInterrupt


def _announce(served: Served, token: Optional[str], progress: Callable[[str], None]) -> None:
    auth = ' -H "Authorization: Bearer $TRAINYARD_SERVE_TOKEN"' if token else ""
    progress(f"[serve] {served.name} {served.version} at {served.url}  (docs: {served.url}/docs)\n"
             f"  curl -s{auth} {served.url}/predict -d '{{\"records\": [{{}}]}}'\n"
             f"  trainyard predict --url {served.url} FILE.csv --out predictions.csv\n"
             "  Ctrl-C stops it")
