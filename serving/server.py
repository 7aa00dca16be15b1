"""Putting a bundle behind Ray Serve: start Serve's HTTP ingress, deploy (or update) an app, serve until Ctrl-C.

Serve's HTTP address is one per Ray cluster (the first `serve.start` fixes host and port for the cluster's
lifetime), and apps share it by route prefix. So:

- `deploy(bundle, name=N)` starts Serve on host:port if it is not running, or checks that the running one
  listens where asked (and says what to do if not), then runs app N. Deploying N again is an update: Serve
  starts the new replicas, waits until they pass their health check, and only then stops the old ones
  (`max_surge_percent`), so requests in flight or arriving meanwhile are all answered. An update keeps the
  running version's token and operator settings (`serving.settings.KEPT_ON_UPDATE`) unless told otherwise,
  and one that fails (or waits past its time limit) is rolled back to the running version;
- `serving.forever.serve_forever(bundle)` deploys and blocks until Ctrl-C or SIGTERM (`trainyard serve`).
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from cluster.errors import EXIT_BAD_INPUT
from cluster.nodes import alive_nodes
from cluster.ports import free_ports
from cluster.ray_compat import ServeDeployment, actor_table, gcs_protos, serve_controller_client, serve_deployment
from jobs.spec import ServeSpec
from serving.ingress import (check_port_free, choose_ingress, first_line, ingress_env, metrics_env,
                             not_started, own_port_taken, replica_ingress_env, running_ingress,
                             soft_stop_haproxy, stop_half_started)
from serving.contract import check_update, update_notes
from serving.payload import payload_json, served_from
from serving.probe import client_host, get_json, running_version
from serving.settings import (TOKEN_ENV, ServeError, check_name, check_settings, default_name, in_part_error,
                              keep_running, kept_words, resolve_spec)

DEPLOYMENT = "model"
# How long a deploy waits for its replicas to answer, and a rollback for the old version's (seconds to load a
# bundle; minutes to install a runtime_env or for a node an autoscaler adds).
DEPLOY_TIMEOUT_S = 300.0
ROLLBACK_TIMEOUT_S = 120.0
IN_FLIGHT_WAIT_S = 10.0     # at a stop, the longest wait for the requests in flight (`shutdown`)


@dataclass
class Served:
    name: str
    version: str
    host: str
    port: int
    route_prefix: str
    updated_from: Optional[str] = None      # the version it replaced, when this was an update
    token_required: bool = False            # its token was given, or kept from the version it replaced
    schema: dict = field(default_factory=dict, repr=False)      # the bundle's schema.json
    log_path: Optional[str] = None          # serve.log.path: the folder its predictions are logged under

    @property
    def url(self) -> str:
        prefix = "" if self.route_prefix == "/" else self.route_prefix
        return f"http://{client_host(self.host)}:{self.port}{prefix}"


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
        try:
            _start(serve_spec, host, port, ingress)
        except Exception as exc:  # HAProxy's own ports (stats, metrics, fallback) are chosen anew at each start
            if not (ingress == "haproxy" and own_port_taken(exc, port)):
                raise
            stop_half_started()
            progress(f"[serve] HAProxy's port was taken before it bound ({first_line(exc)}); trying other ports")
            _start(serve_spec, host, port, ingress)
    except Exception as exc:  # a taken port surfaces as a proxy (or HAProxy) that never becomes ready
        stop_half_started()
        check_port_free(host, port)     # taken since the check above (a second serve started beside): exit 2
        if not (ingress == "haproxy" and serve_spec.ingress == "auto"):
            raise not_started(host, port, exc) from exc
        # `auto` promised a working server, not HAProxy: the Python proxy is slower but has no extra parts.
        progress(f"[serve] the HAProxy ingress did not start ({first_line(exc)}); using Serve's proxy")
        ingress = "proxy"
        try:
            _start(serve_spec, host, port, ingress)
        except Exception as exc2:
            stop_half_started()
            check_port_free(host, port)
            raise not_started(host, port, exc2) from exc2
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


def app_status(name: str) -> Optional[dict]:
    """{"status", "message", "replicas": {state: count}} of app `name`, None when it does not exist."""
    from ray import serve
    app = serve.status().applications.get(name)
    if app is None:
        return None
    dep = app.deployments.get(DEPLOYMENT)
    replicas = {str(getattr(k, "value", k)): v for k, v in (dep.replica_states if dep else {}).items()}
    return {"status": _status_text(app), "message": app.message, "replicas": replicas}


def app_states() -> dict[str, str]:
    """{app name: its status ("RUNNING", "DELETING", ...)} of every app on this Ray's Serve, in one call."""
    return app_overview()[0]


def app_overview(name: Optional[str] = None) -> tuple[dict[str, str], int]:
    """`app_states()`, and the RUNNING replicas of app `name` (0 without it), from one answer of Serve's."""
    from ray import serve
    apps = serve.status().applications
    dep = apps[name].deployments.get(DEPLOYMENT) if name in apps else None
    running = sum(v for k, v in (dep.replica_states if dep else {}).items() if str(getattr(k, "value", k)) == "RUNNING")
    return {n: _status_text(app) for n, app in apps.items()}, running


def _status_text(app) -> str:
    return str(getattr(app.status, "value", app.status))


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
    return app_overview(name)[1]


# ---------------------------------------------------------------------------------------------- deploy

def resolve_token(token: Optional[str], no_token: bool = False) -> Optional[str]:
    """The token a deploy asks for: --token, else $TRAINYARD_SERVE_TOKEN, else None (then an update keeps the
    running version's). An empty one is refused rather than read as "no authentication": turning it off takes
    --no-token, said on purpose."""
    if no_token:
        if token is not None:
            raise ServeError("--token and --no-token contradict each other: give one", exit_code=EXIT_BAD_INPUT)
        return None
    if token is None:
        token = os.environ.get(TOKEN_ENV)
        source = f"${TOKEN_ENV}"
    else:
        source = "--token"
    if token is not None and not token.strip():
        raise ServeError(f"{source} is empty, which would serve without authentication: give a token, or pass "
                         f"--no-token to serve without one{'' if source == '--token' else f' (or unset {TOKEN_ENV})'}",
                         exit_code=EXIT_BAD_INPUT)
    return token


def load_bundle(path):
    """The bundle at `path` (a bundle or a run's output folder), or a ServeError naming the file at fault and
    what to serve instead. `trainyard serve` calls it before Ray starts too: bad input costs no Ray start."""
    from jobs.bundle import BundleError, load, resolve

    try:
        return load(resolve(path))
    except BundleError as exc:
        if "not a trainyard bundle" in str(exc) or "Give the bundle folder" in str(exc):
            raise                  # these already say what to give
        raise ServeError(f"{exc}, or give another bundle folder", exit_code=exc.exit_code) from None


def deploy(bundle_path, *, spec=None, name: Optional[str] = None, host: Optional[str] = None,
           port: Optional[int] = None, token: Optional[str] = None, no_token: bool = False,
           progress: Callable[[str], None] = print, timeout_s: float = DEPLOY_TIMEOUT_S,
           breaking: bool = False) -> Served:
    """Serve the bundle at `bundle_path` (a bundle folder or a run's output folder) as app `name`, or update
    app `name` to it. Returns when the app answers over HTTP with the new version.

    The token: `token`, else $TRAINYARD_SERVE_TOKEN; without either an update keeps the running version's,
    and only `no_token` serves without one. An update whose bundle would refuse requests the running version
    takes is refused unless `breaking` (`serving.contract`). An update that fails (a replica that cannot start,
    replicas not scheduled or not answering within `timeout_s`) is rolled back to the running version, so that
    replicas started later (autoscaling, a replaced replica) run that version rather than the failed one."""
    import ray

    from jobs.bundle import resolve
    from serving.app import application

    path = resolve(bundle_path)
    bundle = load_bundle(path)     # a broken bundle fails here, with the file named, before Serve is touched
    serve_spec = resolve_spec(spec, host=host, port=port)
    name = name or default_name(bundle)
    check_name(name)
    check_settings(bundle, serve_spec)
    token = resolve_token(token, no_token)

    if not ray.is_initialized():
        from cluster import connect
        connect()
    part = {k: v[0] for k, v in serve_spec._given_in_part.items()}  # sections --set gave in part, and what
    if part and serve_deployment(name, DEPLOYMENT) is None:     # none to complete them: said before Serve starts
        raise in_part_error(serve_spec, sorted(part))
    host, port = start_serve(serve_spec, progress)
    # What is running now, from Serve's controller: whoever deployed it (this process, another `trainyard
    # serve`, a config file), its replicas' arguments hold the hash of its token (never the token), and the
    # deployment itself is what a failed update rolls back to. Asking the controller needs a connection to
    # this Ray cluster, which an updater has anyway and which a `ray start` cluster guards with its own token.
    before = serve_deployment(name, DEPLOYMENT)
    kept_sha256 = None
    if before is not None:
        running = _replica_settings(before).get("serve")
        if isinstance(running, dict):       # the route it really has (a config file's deploy sets it outside)
            running = {**running, "route_prefix": before.route_prefix or running.get("route_prefix", "/")}
        serve_spec, kept, unread = keep_running(serve_spec, running)
        if kept:
            progress(f"[serve] {name} keeps its running {kept_words(kept, part)} (what this update did not give: "
                     "--spec SPEC or --set FIELD=VALUE changes it)")
            try:
                check_settings(bundle, serve_spec)      # a kept serve.log's `exclude` against this bundle's features
            except ServeError as exc:
                whose = (f"what --set gave of {', '.join(f'serve.{k}' for k in sorted(part))}, completed from the "
                         f"running {name}'s" if part else f"kept from the running {name}")
                raise ServeError(f"{exc} ({whose}: --set FIELD=VALUE or --spec SPEC changes it; --set log=null stops "
                                 "the logging)", exit_code=exc.exit_code) from None
        if unread:
            progress(f"[serve] note: {name}'s running {', '.join(unread)} could not be kept (settings this "
                     "trainyard cannot read, from another version?): this update uses what it is given, or the "
                     "defaults")
        running_sha256 = _token_sha256(before)
        if running_sha256 and token is None and not no_token:
            kept_sha256 = running_sha256
            progress(f"[serve] {name} keeps its token (no --token given; --no-token serves without one)")
        elif running_sha256 and no_token:
            progress(f"[serve] {name}: turning authentication off (--no-token)")
        running_log = _running_log(before)
        if running_log and serve_spec.log is None:
            # Only an update given `log: null` ends the logging that `trainyard monitor` reads: said, not silent.
            why = "its running serve.log could not be kept" if "log" in unread else "serve.log given as null"
            progress(f"[serve] note: {name} logged its predictions to {running_log.get('path')}; this update "
                     f"logs none ({why}): to go on logging, --set log.path={running_log.get('path')}")
    _check_route_free(name, serve_spec.route_prefix, host, port)
    old_version = running_version(before, host, port) if before else None
    was = payload_json(before.init_args[0], "schema.json") if before and before.init_args else None
    if before:
        check_update(name, {"schema": was, "serve": _replica_settings(before).get("serve")}, bundle.schema,
                     serve_spec.model_dump(mode="json"), (old_version or "running", bundle.version), breaking, progress)
    for note in update_notes(name, was, payload_json(before.init_args[0], "metrics.json"), bundle, old_version or
                             "running", served_from(before.init_args[0]), (port, before.route_prefix)) if was else ():
        progress(note)
    # The replicas follow the ingress Serve runs with, whatever this spec asks: it is fixed per Ray cluster.
    env = {**replica_ingress_env(running_ingress(), serve_spec), **metrics_env(serve_spec)}
    app = application(path, serve_spec, name, token, env_vars=env, token_sha256=kept_sha256, source=str(bundle_path))
    verb = "updating" if before else "deploying"
    progress(f"[serve] {verb} {name} (bundle {path}, version {bundle.version})")
    served = Served(name, bundle.version, host, port, serve_spec.route_prefix,
                    updated_from=(old_version or "the previous version") if before else None,
                    token_required=bool(token or kept_sha256), schema=bundle.schema,
                    log_path=serve_spec.log.path if serve_spec.log else None)
    deadline = time.monotonic() + timeout_s
    with _term_as_exit(before is not None):     # SIGTERM too: an interrupted update is rolled back
        try:
            _run(app, name, serve_spec.route_prefix, serve_spec.access_log)
            _wait_running(name, deadline, timeout_s, progress)
            _wait_http(served, deadline, timeout_s)
        except (KeyboardInterrupt, SystemExit):
            if before is not None:      # else Serve deploys on: a replica lost later would have had no successor
                progress(f"[serve] interrupted: {_roll_back(name, before, old_version, progress)}")
            raise
        except ServeError as exc:
            reason = f"{verb} {name} to {bundle.version} failed: {exc}"
            if before is None:
                _delete_quietly(name)      # a half-deployed app would go on retrying: nothing of it is served
                raise ServeError(f"{reason}. Nothing is served under {name}.{_logs()}",
                                 exit_code=exc.exit_code) from None
            raise ServeError(f"{reason}. {_roll_back(name, before, old_version, progress)}{_logs()}",
                             exit_code=exc.exit_code) from None
    return served


@contextlib.contextmanager
def _term_as_exit(update: bool):
    """SIGTERM as SystemExit while an update waits: Ray's handler left Serve deploying an update that never started."""
    if not update or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _replica_settings(running: ServeDeployment) -> dict:
    """A trainyard replica's settings argument (serving.app.replica_settings); {} for another deployment."""
    settings = running.init_args[1] if len(running.init_args) > 1 else None
    return settings if isinstance(settings, dict) else {}


def _check_route_free(name: str, route_prefix: str, host: str, port: int) -> None:
    """Bad input (exit 2) when another trainyard app on this Serve answers at `route_prefix`: Serve would refuse
    the deploy with its own exception and traceback ("Prefix / is being used by application ...")."""
    for other in app_states():
        running = serve_deployment(other, DEPLOYMENT) if other != name else None
        if running is not None and (running.route_prefix or "/") == route_prefix:
            raise ServeError(
                f"route prefix {route_prefix} is taken by app {other!r} on this server "
                f"(http://{client_host(host)}:{port}{'' if route_prefix == '/' else route_prefix}); serve {name!r} "
                f"beside it under another: --set route_prefix=/{name}, or update {other!r} itself with --name "
                f"{other}", exit_code=EXIT_BAD_INPUT)


def _token_sha256(running: ServeDeployment) -> Optional[str]:
    """The token hash the running replicas check, None without one."""
    return _replica_settings(running).get("token_sha256")


def _running_log(running: ServeDeployment) -> Optional[dict]:
    """The serve.log settings the running replicas log with, None without."""
    serve = _replica_settings(running).get("serve")
    return serve.get("log") if isinstance(serve, dict) else None


def _run(app, name: str, route_prefix: Optional[str], access_log: Optional[bool] = None) -> None:
    """Hand the app to Serve without waiting: `serve.run` waits for RUNNING with no time limit, and replicas
    that no node can hold would keep it waiting forever. `access_log` None: as the app's deployment says."""
    from ray import serve
    logging_config = None if access_log is None else {"enable_access_log": access_log}
    with _quiet_driver_logs():
        serve.run_many([serve.RunTarget(app, name=name, route_prefix=route_prefix, logging_config=logging_config)],
                       wait_for_applications_running=False)


def _wait_running(name: str, deadline: float, timeout_s: float, progress: Callable[[str], None]) -> None:
    """Until Serve says the app is RUNNING; a failed replica start or the deadline raise ServeError."""
    said_waiting = False
    while True:
        status = app_status(name) or {"status": "DELETED", "message": "the app was deleted meanwhile"}
        if status["status"] == "RUNNING":
            return
        if status["status"] in ("DEPLOY_FAILED", "DELETED", "DELETING"):
            raise ServeError(_replica_error(name) or status["message"] or status["status"])
        timed_out = time.monotonic() >= deadline
        if timed_out or (not said_waiting and time.monotonic() >= deadline - timeout_s + 10):
            unscheduled = _unscheduled(name)
            if timed_out and unscheduled:
                raise ServeError(f"gave up after {timeout_s:g}s (--timeout): {unscheduled}",
                                 exit_code=unscheduled.exit_code)
            if timed_out:
                raise ServeError(f"its replicas did not start within {timeout_s:g}s (--timeout); Serve says "
                                 f"{status['status']}: {status['message'] or '-'}")
            if unscheduled:
                progress(f"[serve] {name}: {unscheduled}; giving up after {timeout_s:g}s (--timeout)")
            said_waiting = True
        time.sleep(0.25)


def _unscheduled(name: str) -> Optional[ServeError]:
    """When replicas of app `name` wait for a node to take them: what one asks against what the nodes have,
    and the fix; exit 2 when no node of the cluster could ever hold one."""
    import ray
    pb = gcs_protos()
    prefix = f"SERVE_REPLICA::{name}#{DEPLOYMENT}#"
    pending = [a for a in actor_table() if a.state == pb.ActorTableData.PENDING_CREATION
               and a.ray_namespace == "serve" and a.name.startswith(prefix)]
    if not pending:
        return None
    need = {k: v for k, v in sorted(pending[0].required_resources.items()) if v}
    nodes = alive_nodes()
    if not any(all(n.resources.get(k, 0.0) >= v for k, v in need.items()) for n in nodes):
        largest = {k: max((n.resources.get(k, 0.0) for n in nodes), default=0.0) for k in need}
        return ServeError(
            f"no node can hold its replicas: each asks for {need} (serve.ray_actor_options), and the "
            f"largest node has {largest}. Lower serve.ray_actor_options (e.g. --set "
            "ray_actor_options.num_cpus=0.5), or add a node with those resources", exit_code=EXIT_BAD_INPUT)
    free = ray.available_resources()
    waiting = replicas_without_room(pending)
    if not waiting:
        return None     # each has its worker: they are starting (a process, the bundle's load), not waiting
    return ServeError(
        f"{waiting} of its replicas wait for free resources: each asks for {need} and the cluster has "
        f"{({k: round(free.get(k, 0.0), 3) for k in need})} free (other apps, jobs or replicas hold the rest). "
        "Free some, lower serve.ray_actor_options, or give it longer (--timeout)")


def replicas_without_room(pending: list) -> int:
    """How many of the `pending` replicas (the GCS's actor table rows in PENDING_CREATION) wait for resources: Ray
    counts a replica whose process is starting as pending too, but it has a worker leased (its address has a
    port), where one that waits has none yet. Every update's new replicas were said to "wait for free resources",
    with 2 CPUs free for 0.5 each."""
    return sum(1 for actor in pending if not actor.address.port)


def _roll_back(name: str, before: ServeDeployment, old_version: Optional[str],
               progress: Callable[[str], None]) -> str:
    """Redeploy what ran before the update (same version: its replicas that still run are kept), so that a
    replica started later runs it, not the version that failed. Returns the sentence that says so."""
    label = old_version or "the previous version"
    progress(f"[serve] rolling {name} back to {label}")
    try:
        _run(before.redeploy, name, before.route_prefix)
        _wait_running(name, time.monotonic() + ROLLBACK_TIMEOUT_S, ROLLBACK_TIMEOUT_S, lambda _: None)
    except Exception as exc:  # noqa: BLE001 - the update's error stays the one raised; this one is added to it
        return (f"Rolling back to {label} failed too ({first_line(exc)}): redeploy a working bundle with "
                f"`trainyard serve BUNDLE --name {name}`.")
    return f"Rolled back: {name} serves {label} again, and replicas started from now on run it."


def _wait_http(served: Served, deadline: float, timeout_s: float) -> None:
    """Serve reports RUNNING slightly before its HTTP ingress routes to the app: wait for /readyz (which needs
    no token) to answer with this version, so that whoever called deploy can send requests right away."""
    while time.monotonic() < deadline:
        ready = get_json(served.url + "/readyz", timeout=2.0)
        if ready and ready.get("model", {}).get("version") == served.version:
            return
        time.sleep(0.2)
    raise ServeError(f"it is RUNNING in Serve but {served.url}/readyz did not answer with version {served.version} "
                     f"within {timeout_s:g}s (--timeout)")


def _logs() -> str:
    from cluster.ray_compat import logs_folder
    return f" The replica logs (full tracebacks) are under {logs_folder()}/serve/ (on the replicas' nodes)"


def shutdown(name: Optional[str] = None) -> None:
    """Delete app `name` (all of trainyard's apps when None); shut Serve down when no app is left. When `name` is
    the last app, Serve is shut down whole, the requests in flight answered first: deleting the app first left its
    route gone while the ingress still listened, and for ~6 s every request got 404 (15,098 under 4 clients),
    which load balancers do not retry; now they are refused (connection refused)."""
    from ray import serve
    with _quiet_driver_logs():
        if name is not None and set(serve.status().applications) - {name}:
            _delete_quietly(name)
            if serve.status().applications:
                return
        soft_stop_haproxy(IN_FLIGHT_WAIT_S)     # the requests in flight are answered first
        serve.shutdown()


def _delete_quietly(name: str, blocking: bool = True) -> None:
    """Delete app `name`; `blocking`: wait until it is gone (else only ask Serve: `serve.delete`'s own switch)."""
    from ray import serve
    with contextlib.suppress(Exception):     # already gone (deleted by someone else, or Serve with it)
        serve.delete(name, _blocking=blocking)
