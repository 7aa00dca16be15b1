"""One connection rule for every command.

- no address and no RAY_ADDRESS: start an embedded local Ray, bound to 127.0.0.1;
- ``--address`` / RAY_ADDRESS: join that cluster — ``auto`` (the cluster ``trainyard cluster up`` started,
  else Ray's own auto-detection), ``host:port`` (the GCS) or ``ray://host:port`` (Ray Client);
- ``http(s)://host:port`` is a dashboard, i.e. the Jobs API: ``job_client()`` takes it, ``connect()`` refuses it.

Token-auth clusters (Ray 2.60's ``ray start`` turns it on) need the cluster's token. It is looked up, in this
order, in RAY_AUTH_TOKEN, the file named by RAY_AUTH_TOKEN_PATH, the token file of the cluster
``trainyard cluster up`` started (only when the address is that cluster's), then ~/.ray/auth_token.
Before handing over to Ray we ask the cluster ourselves, so that a wrong address, a missing token and a
rejected token each fail in seconds with a message saying which, instead of Ray's 20-second retry loop
ending in "Failed to connect".

The token goes only where the user pointed: no HTTP request that carries it (our probes, the Jobs API
client's) follows a redirect; a redirect is an error naming where it led. Sending it over plain ``http://`` to
an address that is not this machine prints a warning first: anyone on the way can read it.
"""
from __future__ import annotations

import atexit
import ipaddress
import json
import logging
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import ray

from cluster import processes, ray_compat, reaper
from cluster import state as cluster_state
from cluster.errors import EXIT_FAILED, BadInput
from cluster.nodes import alive_nodes
from cluster.ports import connect_error

TOKEN_ENV, TOKEN_PATH_ENV, AUTH_MODE_ENV = "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"
DEFAULT_TOKEN_FILE = Path("~/.ray/auth_token")
_PROBE_TIMEOUT_S = 5.0

_ADDRESS_HELP = ("use `auto`, host:port (the GCS, e.g. 10.0.0.5:6379), ray://host:10001 (Ray Client), "
                 "or http://host:8265 (the dashboard, for `trainyard submit` / `trainyard jobs`)")
_TOKEN_HELP = (f"set {TOKEN_ENV}=<token>, or {TOKEN_PATH_ENV}=<file holding it>, or put it in "
               f"{DEFAULT_TOKEN_FILE}; for a cluster from `trainyard cluster up`, `trainyard cluster status` "
               "prints its token file")


class ConnectError(BadInput):
    """The cluster at the address cannot be used: nothing answers there, it is not Ray, or it refuses our
    token. The message says which and what to check: the address or the token must change."""


@dataclass(frozen=True)
class Address:
    """A parsed cluster address. kind: local | auto | gcs | client | dashboard."""

    kind: str
    text: str
    host: str | None = None
    port: int | None = None

    @property
    def is_loopback(self) -> bool:
        if self.host in cluster_state.LOOPBACK_HOSTS:
            return True
        try:
            return ipaddress.ip_address(self.host or "").is_loopback
        except ValueError:  # a host name other than localhost: not known to be this machine
            return False


@dataclass(frozen=True)
class Token:
    value: str
    source: str                      # said in errors: where the token came from
    path: str | None = None          # the file it was read from, if any


def parse_address(text: str | None, *, origin: str = "--address") -> Address:
    """Classify an address string; ``origin`` (the flag or variable it came from) is named in errors."""
    if text is None or not text.strip() or text.strip() == "local":
        return Address("local", text or "")
    text = text.strip()
    if text == "auto":
        return Address("auto", text)
    for scheme, kind, default_port in (("ray://", "client", 10001), ("http://", "dashboard", 80),
                                       ("https://", "dashboard", 443)):
        if text.startswith(scheme):
            host, port = _split_host_port(text[len(scheme):], text, origin)
            return Address(kind, text.rstrip("/"), host, port or default_port)
    if "://" in text:
        raise ConnectError(f"{origin}={text!r}: unknown scheme; {_ADDRESS_HELP}")
    host, port = _split_host_port(text, text, origin)
    if port is None:
        raise ConnectError(f"{origin}={text!r} has no port; {_ADDRESS_HELP}")
    return Address("gcs", text, host, port)


def _split_host_port(hostport: str, text: str, origin: str) -> tuple[str, int | None]:
    hostport = hostport.split("/", 1)[0]
    if not hostport:
        raise ConnectError(f"{origin}={text!r} has no host; {_ADDRESS_HELP}")
    host, sep, port = hostport.rpartition(":")
    if not sep or hostport.endswith("]"):
        return hostport.strip("[]"), None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConnectError(f"{origin}={text!r}: port {port!r} is not a number in 1-65535; {_ADDRESS_HELP}")
    return host.strip("[]"), int(port)


def address_from(address: str | None) -> Address:
    """The address to use: the argument, else RAY_ADDRESS, else local."""
    if address:
        return parse_address(address, origin="--address")
    return parse_address(os.environ.get("RAY_ADDRESS"), origin="RAY_ADDRESS")


# ---------------------------------------------------------------------------------------------- tokens

def find_token(address: Address | None = None, *, state_dir=None) -> Token | None:
    """The token to present to ``address``, or None. A token variable pointing at nothing is an error."""
    if os.environ.get(TOKEN_ENV, "").strip():
        return Token(os.environ[TOKEN_ENV].strip(), f"the {TOKEN_ENV} environment variable")
    if os.environ.get(TOKEN_PATH_ENV):
        path = Path(os.environ[TOKEN_PATH_ENV]).expanduser()
        value = _read_token_file(path)
        if not value:
            raise ConnectError(
                f"{TOKEN_PATH_ENV}={os.environ[TOKEN_PATH_ENV]} names a missing or empty file; "
                f"point it at the cluster's token file, or unset it")
        return Token(value, f"{path} ({TOKEN_PATH_ENV})", str(path))
    local = _local_cluster(address, state_dir)
    if local and local.get("token_path"):
        value = _read_token_file(Path(local["token_path"]))
        if value:
            return Token(value, f"{local['token_path']} (the token of `trainyard cluster up`'s cluster)",
                         local["token_path"])
    default = DEFAULT_TOKEN_FILE.expanduser()
    value = _read_token_file(default)
    if value:
        return Token(value, str(default), str(default))
    return None


def _read_token_file(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _local_cluster(address: Address | None, state_dir=None) -> dict | None:
    """The state of the cluster `trainyard cluster up` started, if ``address`` is one of its endpoints."""
    try:
        state = cluster_state.read_state(state_dir)
    except cluster_state.StateError:
        return None
    if not state or address is None:
        return None
    if address.kind == "auto" or cluster_state.matches_address(state, address.host, address.port):
        return state
    return None


def _use_token_in_process(token: Token) -> None:
    """Make this process's Ray (C++ token loader included) present ``token``.

    Ray reads RAY_AUTH_MODE into its cached config and caches the token: both must be refreshed, as Ray's own
    ``_enable_token_auth`` does. RAY_AUTH_TOKEN/RAY_AUTH_TOKEN_PATH already win over the default file; only a
    token from the local cluster's state needs pointing at.
    """
    os.environ[AUTH_MODE_ENV] = "token"
    if token.path and not os.environ.get(TOKEN_ENV) and not os.environ.get(TOKEN_PATH_ENV):
        os.environ[TOKEN_PATH_ENV] = token.path
    ray_compat.reload_auth_config()


# ---------------------------------------------------------------------------------------------- probes

def _probe_grpc(address: Address, token: Token | None) -> tuple[str, str]:
    """Ask the GCS (or Ray Client server) one cheap question. Returns (outcome, detail), outcome one of
    ok | unauthenticated | unreachable | not_ray."""
    import grpc

    metadata = [("authorization", f"Bearer {token.value}")] if token else None
    target = f"{address.host}:{address.port}"
    with grpc.insecure_channel(target) as channel:
        try:
            if address.kind == "client":
                from ray.core.generated import ray_client_pb2 as pb, ray_client_pb2_grpc as pb_grpc
                pb_grpc.RayletDriverStub(channel).ClusterInfo(
                    pb.ClusterInfoRequest(type=pb.ClusterInfoType.PING),
                    timeout=_PROBE_TIMEOUT_S, metadata=metadata)
            else:
                from ray.core.generated import gcs_service_pb2 as pb, gcs_service_pb2_grpc as pb_grpc
                pb_grpc.NodeInfoGcsServiceStub(channel).GetClusterId(
                    pb.GetClusterIdRequest(), timeout=_PROBE_TIMEOUT_S, metadata=metadata)
        except grpc.RpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.UNAUTHENTICATED:
                return "unauthenticated", exc.details() or ""
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                return "unreachable", exc.details() or str(code)
            return "not_ray", f"{code.name}: {exc.details()}"
    return "ok", ""


def _tcp_reachable(host: str, port: int) -> str | None:
    """None when something accepts connections at host:port, else why not."""
    error = connect_error(host, port, _PROBE_TIMEOUT_S)
    return None if error is None else (error.strerror or str(error))


def _authorize_grpc(address: Address, state_dir=None) -> Token | None:
    """Check that ``address`` is a Ray cluster that will accept us; returns the token to use (None: no auth)."""
    what = "Ray Client server" if address.kind == "client" else "Ray GCS"
    why = _tcp_reachable(address.host, address.port)
    if why:
        hint = ("Is the cluster up (`trainyard cluster status`)? "
                "The GCS listens on 6379 by default, Ray Client on 10001.")
        raise ConnectError(f"nothing answers at {address.text} ({why}): wrong address, or the cluster is "
                               f"down. {hint}")
    outcome, detail = _probe_grpc(address, None)
    if outcome == "ok":
        return None
    if outcome != "unauthenticated":  # it accepts TCP connections, so "unreachable" means "not gRPC"
        raise ConnectError(
            f"{address.text} answers but not as a {what} ({detail}): wrong port? A dashboard URL "
            f"(http://host:8265) is for `trainyard submit` / `trainyard jobs`; {_ADDRESS_HELP}")
    token = find_token(address, state_dir=state_dir)
    if token is None:
        raise ConnectError(
            f"the cluster at {address.text} uses token authentication and no token was found: {_TOKEN_HELP}")
    outcome, detail = _probe_grpc(address, token)
    if outcome == "unauthenticated":
        raise ConnectError(
            f"the cluster at {address.text} rejected the token from {token.source}: it is not this cluster's "
            f"token. {_TOKEN_HELP}")
    if outcome != "ok":
        raise ConnectError(f"{address.text} stopped answering while checking the token ({detail})",
                           exit_code=EXIT_FAILED)  # it answered a moment before: not the address's fault
    return token


def preflight(address: str | None = None, *, state_dir=None) -> Token | None:
    """Check, without starting a driver, that ``address`` (default RAY_ADDRESS) is a Ray cluster that will
    accept us. Returns the token to present (None: the cluster wants none, or the address is local/auto);
    raises ConnectError naming the problem: wrong address, missing token or rejected token."""
    parsed = address_from(address)
    if parsed.kind == "dashboard":
        url = parsed.text
        if _auth_mode(url) == "disabled":
            return None
        token = find_token(parsed, state_dir=state_dir)
        _check_dashboard_token(url, token)
        return token
    if parsed.kind == "auto":
        local = _local_cluster(parsed, state_dir)
        if not (local and local.get("address")):
            return None
        parsed = parse_address(local["address"])
    if parsed.kind in ("gcs", "client"):
        return _authorize_grpc(parsed, state_dir)
    return None


# ---------------------------------------------------------------------------------------------- connect

# The GCS address and session folder of the embedded local Ray this process started (None: it started none, or
# it has stopped), and whether `stop_embedded` is registered to run at exit (once per process).
_embedded_gcs: str | None = None
_embedded_session: str | None = None
_stop_at_exit = False


def is_embedded() -> bool:
    """True while this process is connected to the embedded local Ray it started itself (`connect()` with no
    address). Then the whole cluster is this process's: every node, actor and placement group ends with it,
    so nothing outlives a crash of this driver that would need cleaning up, and no node can be preempted.
    False when joined to a cluster (``--address``, RAY_ADDRESS, a job's entrypoint) or not connected."""
    return (_embedded_gcs is not None and ray.is_initialized()
            and ray.get_runtime_context().gcs_address == _embedded_gcs)


def stop_embedded(*, reap: bool = True) -> list[dict]:
    """Stop the embedded local Ray this process started (`connect` also has this run at exit), and see that its
    workers end: one stuck in Ray's own exit handler never exits (`cluster.processes.end_stuck`). The workers
    still running once Ray has stopped (normally all gone within 1-2 s) are left to `cluster.reaper`, in a
    process of its own, so the command does not wait for them; returned too (with `reap=False`, left to the
    caller: the test session waits for them itself, to warn). Nothing when not connected to such a Ray.

    At exit this runs before Ray's own handler, whose `ray.shutdown` first sleeps 0.5 s for worker output still on
    its way to the driver: a worker line printed in the last half second before the exit may not be shown. A
    command's workers have printed everything by then (their run ended before the evaluation and the bundle), so a
    command exits that much sooner, and 1 s more by stopping Ray's autoscaler monitor first
    (`ray_compat.kill_autoscaler_monitor`; benchmarks/RESULTS.md). A plain `ray.shutdown()` does neither this nor
    the reaping: call this instead."""
    global _embedded_gcs
    if not is_embedded():
        return []
    workers = processes.ray_workers_of_this_process()
    try:
        ray_compat.kill_autoscaler_monitor()
    except Exception:       # a private Ray name gone in an upgrade: only the stop's speed depends on it
        logging.getLogger(__name__).debug("could not stop Ray's autoscaler monitor first", exc_info=True)
    ray.shutdown()
    _embedded_gcs = None
    left = [worker for worker in workers if processes.running(worker)]
    if left and reap:
        try:
            reaper.spawn(left, _embedded_session, processes.WORKER_EXIT_GRACE_S)
        except OSError as exc:      # no process to spare: the workers exit by themselves unless stuck
            logging.getLogger(__name__).warning("could not start the reaper of %d Ray worker(s): %s", len(left), exc)
    return left


def disconnect(*, reap: bool = True) -> list[dict]:
    """End this process's connection to Ray, whichever `connect` made: the embedded Ray it started is stopped
    (`stop_embedded`, its workers reaped; with `reap=False` those still running are returned, left to the caller),
    a cluster it joined is left running (`ray.shutdown()` ends only this driver). Nothing when not connected."""
    left = stop_embedded(reap=reap)
    ray.shutdown()      # joined to a cluster: leave it (after stop_embedded, a no-op)
    return left


def starts_embedded(address: str | None = None) -> bool:
    """True when ``connect(address)`` would start an embedded local Ray (seconds on a small machine, worth saying
    first): no Ray connected in this process yet, and no cluster named by ``address`` or RAY_ADDRESS."""
    return not ray.is_initialized() and address_from(address).kind == "local"


def connect(address: str | None = None, *, num_cpus: int | None = None, quiet: bool = True,
            state_dir=None) -> dict:
    """Connect to Ray once per process and return the cluster's total resources.

    Already connected (a test's session fixture, a job's entrypoint on a cluster): reuse it.
    """
    if ray.is_initialized():
        return describe_resources()
    parsed = address_from(address)
    kwargs: dict = {"logging_level": logging.WARNING if quiet else logging.INFO,
                    "log_to_driver": True}
    if parsed.kind == "local":
        # Logical CPUs may exceed physical cores: a Train worker, Ray Data's tasks and the controller must
        # all fit at once or training waits forever for a CPU (the classic Train + Data starvation).
        cpus = num_cpus or max(os.cpu_count() or 1, 4)
        kwargs.update(num_cpus=cpus, include_dashboard=False,
                      _node_ip_address="127.0.0.1")
        ray_compat.keep_loopback()   # else Ray takes the outward address and its metrics port binds 0.0.0.0
        global _embedded_gcs, _embedded_session, _stop_at_exit
        info = ray.init(**kwargs).address_info
        _embedded_gcs, _embedded_session = info["gcs_address"], info["session_dir"]
        if not _stop_at_exit:
            atexit.register(stop_embedded)   # after Ray's own exit handler (registered at `import ray`): runs first
            _stop_at_exit = True
        return describe_resources()
    if parsed.kind == "dashboard":
        raise ConnectError(
            f"{parsed.text} is a dashboard (Jobs API) address: submit work there with "
            f"`trainyard submit SPEC --address {parsed.text}`; to run a driver on the cluster give its GCS "
            "address (host:6379) or ray://host:10001")
    if parsed.kind == "auto":
        local = _local_cluster(parsed, state_dir)
        if local and local.get("address"):
            parsed = parse_address(local["address"])
    if parsed.kind in ("gcs", "client"):
        if parsed.is_loopback:
            from cluster._raystart import keep_loopback
            keep_loopback()
        token = _authorize_grpc(parsed, state_dir)
        if token is not None:
            _use_token_in_process(token)
    kwargs["address"] = parsed.text
    try:
        ray.init(**kwargs)
    except ConnectionError as exc:  # ray raises the builtin for unreachable GCS
        raise ConnectError(
            f"could not connect to the Ray cluster at {parsed.text!r}: {exc}. "
            "Check the address (trainyard cluster status), or unset RAY_ADDRESS to use embedded local Ray."
        ) from exc
    return describe_resources()


def describe_resources() -> dict:
    """Total CPUs/GPUs of the connected cluster, as plain numbers."""
    res = ray.cluster_resources()
    return {"CPU": float(res.get("CPU", 0)), "GPU": float(res.get("GPU", 0)),
            "nodes": len(alive_nodes())}


# ---------------------------------------------------------------------------------------------- Jobs API

def dashboard_url(address: str | None = None, *, state_dir=None) -> str:
    """The Jobs API URL for ``address``: an http(s) URL as given; otherwise (no address, ``auto``, or the
    GCS/Ray Client address of the cluster `trainyard cluster up` started) that cluster's dashboard."""
    text = address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")
    origin = "--address" if address else "RAY_API_SERVER_ADDRESS/RAY_ADDRESS"
    parsed = parse_address(text, origin=origin)
    if parsed.kind == "dashboard":
        return parsed.text
    local = cluster_state.read_state(state_dir)
    if local and (parsed.kind in ("local", "auto")
                  or cluster_state.matches_address(local, parsed.host, parsed.port)):
        return local["dashboard_url"]
    if parsed.kind == "local":
        raise ConnectError(
            "no cluster to talk to: pass --address http://<head>:8265 (the dashboard), set RAY_ADDRESS to it, "
            "or start a local one with `trainyard cluster up` "
            f"(none recorded in {cluster_state.state_path(state_dir)})")
    raise ConnectError(
        f"{origin}={parsed.text!r}: the Jobs API needs the dashboard URL, e.g. http://<head>:8265, "
        f"not a {'Ray Client' if parsed.kind == 'client' else 'GCS'} address")


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """urllib otherwise follows a redirect with every header of the request, Authorization included, to any
    host; refused, the redirect reaches the caller as an HTTPError with its 3xx code."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_opener = urllib.request.build_opener(_RefuseRedirects)


def _redirect_error(url: str, code: int, location: str | None) -> ConnectError:
    return ConnectError(
        f"{url} answered with a redirect (HTTP {code} to {location or '?'}); trainyard sends the cluster token "
        "only to the address you give and follows no redirect with it. If that is the cluster's dashboard, "
        "pass it as --address (or RAY_ADDRESS)")


_warned_plain_http: set[str] = set()


def _warn_plain_http(url: str) -> None:
    """Say, once per URL and before the token is sent, that plain http:// to another machine exposes it."""
    parsed = parse_address(url)
    if not url.startswith("http://") or parsed.is_loopback or url in _warned_plain_http:
        return
    _warned_plain_http.add(url)
    print(f"trainyard: warning: sending the cluster token to {url} over plain http://: anyone on the network "
          "path can read it and use the cluster. Prefer https://, or a tunnel to the head "
          f"(ssh -L 8265:127.0.0.1:{parsed.port} HEAD, then --address http://127.0.0.1:8265)",
          file=sys.stderr, flush=True)


def _auth_mode(url: str) -> str:
    """The dashboard's authentication mode (a public endpoint), or 'unknown' for dashboards without it."""
    try:
        with _opener.open(f"{url}/api/authentication_mode", timeout=_PROBE_TIMEOUT_S) as resp:
            return json.loads(resp.read().decode()).get("authentication_mode", "unknown")
    except urllib.error.HTTPError as exc:
        if 300 <= exc.code < 400:
            raise _redirect_error(url, exc.code, exc.headers.get("Location")) from None
        return "unknown"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConnectError(
            f"nothing answers at {url} ({reason}): wrong address, or the cluster is down. The dashboard "
            "listens on 8265 by default; `trainyard cluster status` prints a local cluster's URL") from None
    except ValueError:
        raise ConnectError(f"{url} answers but is not a Ray dashboard (no JSON at /api/authentication_mode)")


def _check_dashboard_token(url: str, token: Token | None) -> None:
    """Raise unless the dashboard accepts ``token`` on an authenticated endpoint."""
    request = urllib.request.Request(f"{url}/api/version")
    if token:
        _warn_plain_http(url)
        request.add_header("Authorization", f"Bearer {token.value}")
    try:
        _opener.open(request, timeout=_PROBE_TIMEOUT_S).close()
    except urllib.error.HTTPError as exc:
        if 300 <= exc.code < 400:
            raise _redirect_error(url, exc.code, exc.headers.get("Location")) from None
        if exc.code == 401 or (exc.code == 403 and token is None):
            raise ConnectError(
                f"the cluster at {url} uses token authentication and no token was found: {_TOKEN_HELP}") from None
        if exc.code == 403:
            raise ConnectError(
                f"the cluster at {url} rejected the token from {token.source}: it is not this cluster's token. "
                f"{_TOKEN_HELP}") from None
        raise ConnectError(f"{url}/api/version answered HTTP {exc.code}: is this a Ray dashboard?") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ConnectError(f"could not reach the Jobs API at {url}: {getattr(exc, 'reason', exc)}") from None


def job_client(address: str | None = None, *, state_dir=None):
    """A ``JobSubmissionClient`` for the cluster at ``address``, authenticated when the cluster wants a token;
    it follows no redirect."""
    url = dashboard_url(address, state_dir=state_dir)
    token = None
    if _auth_mode(url) != "disabled":
        token = find_token(parse_address(url), state_dir=state_dir)
        _check_dashboard_token(url, token)
    headers = {"Authorization": f"Bearer {token.value}"} if token else {}
    try:
        return ray_compat.job_client_without_redirects(_redirect_error)(url, headers=headers)
    except ConnectionError as exc:
        raise ConnectError(f"could not reach the Jobs API at {url}: {exc}") from None
