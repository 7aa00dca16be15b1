"""One connection rule for every command.

- no address and no RAY_ADDRESS: start an embedded local Ray, bound to 127.0.0.1;
- ``--address`` / RAY_ADDRESS: join that cluster — ``auto`` (the cluster ``trainyard cluster up`` started,
  else Ray's own auto-detection), ``host:port`` (the GCS) or ``ray://host:port`` (Ray Client);
- ``http(s)://host:port`` is a dashboard, i.e. the Jobs API: ``cluster.dashboard.job_client()`` takes it,
  ``connect()`` refuses it.

Token-auth clusters (Ray 2.60's ``ray start`` turns it on) need the cluster's token (where it is looked up:
``cluster.address``). Before handing over to Ray we ask the cluster ourselves, so that a wrong address, a missing
token and a rejected token each fail in seconds with a message saying which, instead of Ray's 20-second retry
loop ending in "Failed to connect". Addresses and tokens: ``cluster.address``; a dashboard's HTTP side (its
token check, the Jobs API client): ``cluster.dashboard``.
"""
from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading

import ray

from cluster import processes, ray_compat, reaper
from cluster.address import (ADDRESS_HELP, AUTH_MODE_ENV, PROBE_TIMEOUT_S, TOKEN_ENV, TOKEN_HELP,
                             TOKEN_PATH_ENV, Address, ConnectError, Token, address_from, find_token, local_cluster,
                             parse_address, rejected_token)
from cluster.dashboard import authorize
from cluster.errors import EXIT_FAILED
from cluster.nodes import alive_nodes
from cluster.ports import connect_error
from cluster.quiet import hide_no_free_cpu_warning


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
                    timeout=PROBE_TIMEOUT_S, metadata=metadata)
            else:
                from ray.core.generated import gcs_service_pb2 as pb, gcs_service_pb2_grpc as pb_grpc
                pb_grpc.NodeInfoGcsServiceStub(channel).GetClusterId(
                    pb.GetClusterIdRequest(), timeout=PROBE_TIMEOUT_S, metadata=metadata)
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
    error = connect_error(host, port, PROBE_TIMEOUT_S)
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
            f"(http://host:8265) is for `trainyard submit` / `trainyard jobs`; {ADDRESS_HELP}")
    token = find_token(address, state_dir=state_dir)
    if token is None:
        raise ConnectError(
            f"the cluster at {address.text} uses token authentication and no token was found: {TOKEN_HELP}")
    outcome, detail = _probe_grpc(address, token)
    if outcome == "unauthenticated":
        raise rejected_token(address.text, token, address, state_dir)
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
        return authorize(parsed.text, state_dir=state_dir)
    if parsed.kind == "auto":
        local = local_cluster(parsed, state_dir)
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


def _stop_at_exit_told() -> None:
    """`stop_embedded` at exit, a Ctrl-C meanwhile told rather than raised (`tell_ctrl_c`)."""
    tell_ctrl_c()
    stop_embedded()


STOPPING_NOTE = "[ray] stopping Ray (a few seconds); press Ctrl-C again to leave now"


def tell_ctrl_c() -> None:
    """For the rest of the process, once its work is done and Ray stops (at exit): a Ctrl-C there raised
    KeyboardInterrupt wherever it landed, and Python printed "Exception ignored in: <function WeakSet...>" with a
    traceback after "bundle written to" while the stop went on regardless. Now the first Ctrl-C says what is
    happening (`STOPPING_NOTE`) and the second leaves at once, exit code 130 (the embedded Ray's processes share
    this one's fate and end with it). Only the main thread may set a signal handler: elsewhere, nothing changes."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is _on_ctrl_c:
        return
    signal.signal(signal.SIGINT, _on_ctrl_c)


_pressed: list = []


def _on_ctrl_c(signum, frame) -> None:
    if _pressed:
        # What the command printed is kept: os._exit skips the flush (a piped "bundle written to" line was lost).
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(130)
    _pressed.append(signum)
    try:
        sys.stderr.write(STOPPING_NOTE + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):      # stderr closed or gone: the note is all that is lost
        pass


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
        ray_compat.own_token_file()
        # Only trainyard uses its embedded Ray, and its runs and searches leave a CPU for Ray Data: the data's own
        # tasks of a moment ago holding every CPU is no hang, yet Ray Data warned "The Dataset job will hang" when
        # it found none free (2 of 8 searches on 2 cores, while their data was prepared).
        hide_no_free_cpu_warning()
        _embedded_gcs, _embedded_session = info["gcs_address"], info["session_dir"]
        if not _stop_at_exit:
            atexit.register(_stop_at_exit_told)   # after Ray's own exit handler (registered at `import ray`): first
            _stop_at_exit = True
        return describe_resources()
    if parsed.kind == "dashboard":
        raise ConnectError(
            f"{parsed.text} is a dashboard (Jobs API) address: submit work there with "
            f"`trainyard submit SPEC --address {parsed.text}`; to run a driver on the cluster give its GCS "
            "address (host:6379) or ray://host:10001")
    if parsed.kind == "auto":
        local = local_cluster(parsed, state_dir)
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
    from cluster.leftovers import release_ended_jobs_groups
    released = release_ended_jobs_groups()      # a job stopped as its workers were placed: theirs, held still
    return {**describe_resources(), **({"released": released} if released[0] else {})}


def describe_resources() -> dict:
    """Total CPUs/GPUs of the connected cluster, as plain numbers."""
    res = ray.cluster_resources()
    return {"CPU": float(res.get("CPU", 0)), "GPU": float(res.get("GPU", 0)),
            "nodes": len(alive_nodes())}
