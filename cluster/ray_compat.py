"""Every private Ray name trainyard uses, in one place: public to our packages, nothing of ours imported.

Ray gives no public API for the items below; each says why we need it and on which Ray versions it was
checked. Ray is imported inside each function, so importing this module costs nothing. When a Ray upgrade
moves or removes one of these names, `tests/test_ray_compat.py` fails naming it: fix it here, nowhere else.

Other Ray internals we lean on without importing a private module, listed so an upgrade checks them too:
- the resource name ``node:__internal_head__`` marks the head node (cluster/nodes.py, cluster/storage.py);
- ``ray.core.generated`` protobufs (not underscored, but not a documented API): GCS tables here, and the GCS
  and Ray Client gRPC services in cluster/connection.py and cluster/nodes.py;
- the logger ``ray.data._internal.progress`` (a logger name only: cluster/quiet.py, jobs/worker.py), and the
  Jobs SDK's loggers ``ray.dashboard.modules.dashboard_sdk`` and ``ray.dashboard.modules.job.sdk``, and the
  packaging logger ``ray._private.runtime_env.packaging`` its upload zips with (cluster/quiet.py:
  JOBS_SDK_LOGGERS; checked on 2.60.0).
- the text of Ray's messages that cluster/quiet.py sorts: "Token authentication is enabled", the raylet's
  "worker processes have been started on node", Serve's "Task ServeController.graceful_shutdown failed. ...
  killed by `ray.kill`", the agents' "Raylet is terminated. Termination is unexpected. ... Last N lines of the
  Raylet logs:", Ray Tune's "Trial task failed for trial", "Trials did not complete: " and "Experiment has been
  interrupted, but the most recent state was saved." (loggers
  ray.tune.execution.tune_controller and ray.tune.tune; tests/test_output.py checks them against Ray's source),
  Ray Train's "Traceback"/ERROR lines, and a Train worker's "Error in training function:" (logger
  ray.train.v2._internal.util) for a run whose placement group was removed ("Destroying worker since its
  placement group was removed", from the raylet binary: cluster/quiet.py TRAIN_TORN_DOWN) (checked on 2.60.0).
- how `trainyard serve` tells that Ray has gone under it (serving/forever.py, RayLifelines): the GCS and the
  raylet (``ray.nodes()``'s NodeManagerAddress:NodeManagerPort) refuse connections once dead; and the HAProxy of
  Ray Serve's manager runs with ``-f <config in serve's folder>`` (serving/ingress.py: stop_haproxy_of).
- that Ray Train V2 reads the environment variables it propagates (`get_env_vars_to_propagate`) when it uses
  them, none at import (`run_controller` sets them in the process instead of a runtime_env; checked on 2.60.0).
- Ray Data's variable RAY_DATA_PARQUET_FOOTER_NUM_ACTORS (jobs/ingest.py: read_parquet, checked on 2.60.0).
- the text of the RayDeprecationWarning Ray Train's own `DataConfig.default_ingest_options()` raises
  (jobs/train.py: `ingest_options` silences it; checked on 2.60.0, tests/test_train_contracts.py).
"""
from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Optional

CHECKED_ON = ("2.60.0",)


# ---------------------------------------------------------------------------------------------- GCS tables
def gcs_protos() -> ModuleType:
    """`ray.core.generated.gcs_pb2`: the message types of the GCS tables below (placement groups, actors)."""
    from ray.core.generated import gcs_pb2
    return gcs_pb2


def _gcs_accessor():
    # Why: the public `ray.util.placement_group_table()` and `ray.util.state` leave out who created a placement
    # group (creator actor, creator job) and need the dashboard (off in our embedded Ray); the GCS's own
    # tables have both. Checked on Ray 2.60.0 (`ray._private.state.state._connect_and_get_accessor()`
    # returns a connected `GlobalStateAccessor`, whose tables are serialized protobufs).
    from ray._private.state import state
    return state._connect_and_get_accessor()


def placement_group_table() -> list[Any]:
    """Every placement group the GCS knows, as `gcs_pb2.PlacementGroupTableData` messages."""
    pb = gcs_protos()
    return [pb.PlacementGroupTableData.FromString(raw) for raw in _gcs_accessor().get_placement_group_table()]


def actor_table() -> list[Any]:
    """Every actor the GCS knows (dead ones too), as `gcs_pb2.ActorTableData` messages."""
    pb = gcs_protos()
    return [pb.ActorTableData.FromString(raw) for raw in _gcs_accessor().get_actor_table(None, None)]


def ended_jobs() -> set[str]:
    """The hex ids of the jobs the GCS holds as ended (`gcs_pb2.JobTableData.is_dead`)."""
    pb = gcs_protos()
    raw = _gcs_accessor().get_job_table(skip_submission_job_info_field=True, skip_is_running_tasks_field=True)
    return {entry.job_id.hex() for entry in map(pb.JobTableData.FromString, raw) if entry.is_dead}


def actor_info(actor_id: bytes) -> Optional[Any]:
    """One actor's `gcs_pb2.ActorTableData` (None when the GCS has no record of it)."""
    import ray

    raw = _gcs_accessor().get_actor_info(ray.ActorID(actor_id))
    return gcs_protos().ActorTableData.FromString(raw) if raw else None


# ---------------------------------------------------------------------------------------------- Ray Train
def placement_group_cleaner_callback() -> type:
    """The class of Ray Train's per-run `PlacementGroupCleanerCallback` (private: `ray.train.v2._internal`)."""
    from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback
    return PlacementGroupCleanerCallback


def datasets_callback() -> type:
    """The class of Ray Train's `DatasetsCallback` (private: `ray.train.v2._internal`)."""
    from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
    return DatasetsCallback


@functools.lru_cache(maxsize=None)
def trainer_class(torch_backend: bool = True, placement_cleaner: bool = True) -> type:
    """A Ray Train V2 trainer class, called as `TorchTrainer` is: `TorchTrainer` (`torch_backend`), or with Ray
    Train's plain backend (`DataParallelTrainer`: no torch process group, for one worker). Two of Ray Train's
    per-run default callbacks, which Ray has no option to leave out, go where they have nothing to do (this
    overrides the private `_create_default_callbacks`; checked on Ray 2.60.0):

    - the placement group cleaner, unless `placement_cleaner`: for runs whose placement group someone else gives
      back (a tuning trial's, swept by the search's driver: tuning/_placement.py), and for training on the
      embedded Ray, which ends with the driver and so leaves nothing to clean (jobs.train.build_trainer). The
      cleaner is a detached actor that watches its controller through the state API; without the dashboard (our
      embedded Ray) it never sees a stopped trial's controller die and polls every second, logging a warning,
      until Ray stops. With hundreds of them (one per stopped trial) the same searches of one long benchmark on
      2 cores took ever longer: 598, 722, 887 s.
    - the datasets callback, when the trainer is given no datasets (a one-worker run reads its splits itself,
      `jobs.worker.dataset_iterators`): it would start a `DatasetManager` actor anyway, a Python process per run.

    Measured on 2 cores, 1 worker, a trivial loop that pulls 850 rows, fit() median of 4 alternating (RESULTS,
    "Time to a model: fewer processes per run and per trial"): TorchTrainer 7.2 s / 11.3 CPU-s of the machine;
    without the torch backend 5.9 s / 10.0; and without the DatasetManager 5.8 s / 8.3.

    Its controller and workers start without a runtime_env, their variables set in the process (`run_controller`,
    which overrides the private `_initialize_and_run_controller`: ~9 s → ~5 s for such a run on 2 cores)."""
    from ray.train.torch import TorchTrainer
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    cleaner, datasets = placement_group_cleaner_callback(), datasets_callback()
    base = TorchTrainer if torch_backend else DataParallelTrainer

    class Trainer(base):
        # Called with the run's controller actor as soon as it is made (`run_controller`): a caller that may
        # give the run up before it trains can end it then (`jobs.early.EarlyRun.abort`).
        on_controller: Optional[Callable] = None

        def _create_default_callbacks(self):
            return [cb for cb in super()._create_default_callbacks()
                    if not (isinstance(cb, cleaner) and not placement_cleaner)
                    and not (isinstance(cb, datasets) and not self.datasets)]

        def _initialize_and_run_controller(self, **controller_init_kwargs):
            return run_controller(self, controller_init_kwargs)

    return Trainer


def run_controller(trainer, controller_init_kwargs: dict):
    """What Ray Train's `DataParallelTrainer._initialize_and_run_controller` does (checked on Ray 2.60.0: the
    controller an actor of no CPU on the driver's node, a Ctrl-C handler in the main thread, run, result), with
    the controller and its workers started *without a runtime_env*: the environment variables Ray Train hands
    them that way (`get_env_vars_to_propagate()`: the poll interval, ...; the RunConfig's
    `worker_runtime_env` env_vars) are set in the process as it starts instead (`in_process_env_classes`).

    Why: an actor with a runtime_env, even one of env_vars only, cannot take one of the worker processes Ray
    keeps started; Ray starts a new process for it through its runtime-env agent. Each Train run starts two
    such (the controller, then each worker), one after the other. Measured on 2 cores, a one-worker run of a
    trivial loop, fit() (RESULTS, "Ray Train's processes without a runtime_env"): 8.2-11.6 s as Ray does it (7
    runs), 4.7-7.0 s with the controller started so (9), 4.9-5.3 s with its workers too (2). The variables are the same and
    set before anything reads them: Ray Train reads each when it is used (the controller's at its __init__,
    the workers' when the training context is made), none at import; Ray already makes a worker's stdout
    unbuffered, and PYTHONUNBUFFERED set in the process still reaches the processes it starts. An actor
    process is never reused, so the variables end with the actor as a runtime_env's would. Any other part of
    a worker_runtime_env (pip, working_dir, ...) still goes to Ray as a runtime_env."""
    import threading

    import ray
    from ray._common.constants import RAY_WARN_BLOCKING_GET_INSIDE_ASYNC_ENV_VAR
    from ray.train.v2._internal.constants import (DEFAULT_RAY_WARN_BLOCKING_GET_INSIDE_ASYNC_VALUE,
                                                  get_env_vars_to_propagate)

    env_vars = get_env_vars_to_propagate()
    env_vars.setdefault(RAY_WARN_BLOCKING_GET_INSIDE_ASYNC_ENV_VAR, DEFAULT_RAY_WARN_BLOCKING_GET_INSIDE_ASYNC_VALUE)
    controller_cls, _, _ = in_process_env_classes()
    controller = ray.remote(
        num_cpus=0,
        label_selector={ray._raylet.RAY_NODE_ID_KEY: ray.get_runtime_context().get_node_id()},
    )(controller_cls).remote(process_env=env_vars, **controller_init_kwargs)
    if trainer.on_controller is not None:
        trainer.on_controller(controller)
    # Ray registers its handler only in the main thread (a Tune trial runs fit() in another).
    if threading.current_thread() is threading.main_thread():
        trainer._register_sigint_handler(controller)
    ray.get(controller.run.remote())
    return ray.get(controller.get_result.remote())


def abort_run(controller) -> None:
    """Abort a Ray Train run as Ray's own Ctrl-C handler does (`TrainController.abort`, an actor method of the
    controller `run_controller` made: its worker group killed where it stands and its placement group removed,
    the run marked aborted, the controller's process ended); the run's fit() then raises (the controller died).
    Does not wait. Private: the controller's class; checked on Ray 2.60.0."""
    controller.abort.remote()


@functools.lru_cache(maxsize=None)
def in_process_env_classes() -> tuple[type, type, type]:
    """Ray Train's controller, worker group and worker classes, each of which sets the environment variables
    Ray Train would give its process as a runtime_env in the process itself (`run_controller` says why).
    They keep Ray's class names ("TrainController", "RayTrainWorker": what Ray's actor table and log stream
    show). Made in this function, so Ray ships them by value: the processes need not import trainyard.
    Private: `ray.train.v2._internal`'s TrainController (its `worker_group_cls`), WorkerGroup (its
    `_worker_cls`, `_train_run_context`, `_get_worker_runtime_env`), RayTrainWorker; checked on Ray 2.60.0."""
    import os

    from ray.train.v2._internal.execution.controller import TrainController
    from ray.train.v2._internal.execution.worker_group.worker import RayTrainWorker
    from ray.train.v2._internal.execution.worker_group.worker_group import WorkerGroup

    class EnvWorker(RayTrainWorker):
        process_env: dict = {}

        def __init__(self):
            os.environ.update(self.process_env)
            super().__init__()

    class EnvWorkerGroup(WorkerGroup):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            ray_env = WorkerGroup._get_worker_runtime_env(self._train_run_context.run_config.worker_runtime_env)
            self._worker_cls = type(RayTrainWorker.__name__, (EnvWorker,),
                                    {"process_env": dict(ray_env.get("env_vars") or {})})

        @staticmethod
        def _get_worker_runtime_env(custom_runtime_env):
            rest = dict(WorkerGroup._get_worker_runtime_env(custom_runtime_env))
            rest.pop("env_vars", None)
            return rest

    class EnvController(TrainController):
        worker_group_cls = EnvWorkerGroup

        def __init__(self, process_env: dict, **kwargs):
            os.environ.update(process_env)
            super().__init__(**kwargs)

    for cls, name in ((EnvWorker, RayTrainWorker.__name__), (EnvWorkerGroup, WorkerGroup.__name__),
                      (EnvController, TrainController.__name__)):
        cls.__name__ = cls.__qualname__ = name
    return EnvController, EnvWorkerGroup, EnvWorker


def train_report_logger() -> logging.Logger:
    """The logger Ray Train uses for "Reporting training result N: TrainingReport(...)" in every worker.

    Why: Ray Train logs every `report` at INFO (~800 characters an epoch) through a logger named after its
    file (`logging.getLogger(__file__)` in `ray.train.v2._internal.execution.context`), which RunConfig's
    LoggingConfig(log_level) does not reach (it filters loggers named ray.train*). Checked on Ray 2.60.0."""
    from ray.train.v2._internal.execution import context as train_context
    return logging.getLogger(train_context.__file__)


def token_auth_logger() -> logging.Logger:
    """The logger with which a starting local Ray warns that token authentication is on (or off).

    Why: Ray logs "Token authentication is enabled for this Ray cluster" at WARNING at every start of an
    embedded Ray, through its private module's logger (`ray._private.authentication.
    authentication_token_setup`). Checked on Ray 2.60.0."""
    from ray._private.authentication import authentication_token_setup
    return authentication_token_setup.logger


def own_token_file() -> None:
    """Make the token file a local Ray start writes (~/.ray/auth_token) readable by its owner alone.

    Why: Ray 2.60's `generate_and_save_token` writes it with the process umask (0644 under the usual 022), so
    every local user could read the token that opens the embedded Ray (and its replicas' gRPC port) to running
    code as this user. Its path is the private `_get_default_token_path`. Checked on Ray 2.60.0."""
    from ray._private.authentication import authentication_token_setup

    path = authentication_token_setup._get_default_token_path()
    try:
        if path.is_file() and not path.is_symlink() and path.stat().st_uid == os.getuid() and \
                path.stat().st_mode & 0o077:
            path.chmod(0o600)
    except OSError:             # another user's home, a read-only one: nothing of ours to tighten
        pass


# ---------------------------------------------------------------------------------------------- worker output
# The actor class every Ray Train worker runs in: the name Ray's log stream gives its output.
TRAIN_WORKER = "RayTrainWorker"
# The handler name `ray.init(log_to_driver=True)` registers Ray's printer under (ray._private.worker.connect);
# `ray.shutdown()` removes the handler of that name, so one registered under it goes with Ray's.
_PRINTER = "ray_print_logs"


@dataclass(frozen=True)
class WorkerOutput:
    """One batch of lines a Ray process wrote, as Ray forwards it to the driver; or (`pushed`) a message Ray
    sent the driver itself (the raylet's warnings and errors: a worker killed, a request no node can hold)."""
    lines: list[str]
    pid: str                   # the process id, or "raylet" / "autoscaler" for Ray's own daemons
    process: str               # the actor class or task name ("RayTrainWorker", "TrainController", ...), or ""
    is_err: bool               # written to stderr
    pushed: bool = False
    other_job: bool = False    # from a process of another driver's job (`trainyard train` beside a `serve`)


def route_worker_output(handler: Callable[[WorkerOutput], None]) -> None:
    """Hand what Ray forwards to this driver from its other processes (`log_to_driver`) and the messages it
    pushes to the driver to `handler`, instead of Ray's printer (which prints every line of every Ray process,
    its own actors' included, behind an ANSI-coloured "(ActorName pid=N)" prefix). Call it after
    `ray.init(log_to_driver=True)`; it holds until this process ends.

    Why: Ray has no public hook into what it prints there; `log_to_driver=False` drops the workers' lines and
    tracebacks altogether. Checked on Ray 2.60.0: process output reaches `ray._private.ray_logging.
    global_worker_stdstream_dispatcher` as dicts with the keys pid, is_err, lines, actor_name, task_name, job
    (log_monitor.py), and `ray.init` registers Ray's printer there as "ray_print_logs"; the pushed messages
    reach `ray._private.worker.print_to_stdstream` (by its module-global name) from the driver's
    listen_error_messages thread, as {"lines": [message], "pid": "raylet", "is_err": False}."""
    from ray._private import worker as ray_worker
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

    # Ray forwards a driver the lines of its own job's processes (and of those no job has claimed yet, its
    # prestarted workers), but Serve turns that filter off in any driver that starts or joins it
    # (`_filter_logs_by_job`, for its controller's and replicas' lines): a `trainyard serve` then printed another
    # driver's training, epochs and tracebacks. Each batch says whether it came from another job (its "job").
    own = ray_worker.global_worker.current_job_id.hex()

    def forward(data: dict, pushed: bool = False) -> None:
        handler(WorkerOutput(lines=list(data.get("lines") or ()), pid=str(data.get("pid", "")),
                             process=data.get("actor_name") or data.get("task_name") or "",
                             is_err=bool(data.get("is_err")), pushed=pushed,
                             other_job=bool(data.get("job")) and data.get("job") != own))

    dispatcher.remove_handler(_PRINTER)
    dispatcher.add_handler(_PRINTER, forward)
    ray_worker.print_to_stdstream = lambda data, ignore_prefix: forward(data, pushed=True)


# ---------------------------------------------------------------------------------------------- Ray Serve
def serve_controller_client() -> Optional[Any]:
    """The connected cluster's Serve controller client (its `http_config` says where Serve listens), or None
    when Serve is not running.

    Why: Serve has no public getter for the cluster's HTTP options; the controller client holds them.
    Checked on Ray 2.60.0 (`ray.serve.context._get_global_client`)."""
    from ray.serve.context import _get_global_client
    return _get_global_client(raise_if_no_controller_running=False)


@dataclass(frozen=True)
class ServeDeployment:
    """One deployment of a Serve app as the controller holds it (its target: after a failed update, the
    version that failed)."""
    redeploy: Any                     # a `serve.Application` that deploys exactly this again, same version
    route_prefix: Optional[str]
    init_args: tuple                  # what its replicas are constructed with


def serve_deployment(app_name: str, deployment_name: str) -> Optional[ServeDeployment]:
    """Deployment `deployment_name` of Serve app `app_name`, or None when the app or Serve is not running.

    Why: an update must know what it replaces (its constructor arguments, to keep its token; the whole
    deployment, to roll back to it) even when another process deployed it, and Serve's public status has
    neither. The controller's `get_deployment_info` holds both, and `Deployment(..., _internal=True)` with
    the same version redeploys it without restarting replicas that still run it. Checked on Ray 2.60.0."""
    from ray.serve.deployment import Application, Deployment

    client = serve_controller_client()
    if client is None:
        return None
    try:
        info, route = client.get_deployment_info(deployment_name, app_name)
    except KeyError:
        return None
    replica = info.replica_config
    deployment = Deployment(deployment_name, info.deployment_config, replica, version=info.version,
                            _internal=True)
    return ServeDeployment(redeploy=Application(deployment), route_prefix=route,
                           init_args=tuple(replica.init_args or ()))


# ---------------------------------------------------------------------------------------------- ray start
def ray_services() -> ModuleType:
    """`ray._private.services`, whose `resolve_ip_for_localhost` cluster/_raystart.py wraps.

    Why: Ray rewrites 127.0.0.1/localhost in a bootstrap address to the machine's outward IP, so a GCS that
    listens on loopback only is unreachable by its own nodes; there is no option to turn that off. Checked on
    Ray 2.60.0."""
    import ray._private.services as services
    return services


def keep_loopback() -> None:
    """Make the Ray this process starts (and its raylet, agents and workers) use 127.0.0.1 as its node address.

    Why: Ray swaps `_node_ip_address="127.0.0.1"` for the machine's outward address unless
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER is 0; with the outward address its metrics agent (the Prometheus port the
    drift gauges go out on) listens on 0.0.0.0 and the node manager, object manager and runtime-env agent on
    the outward address. The variable is read into `ray._private.ray_constants.ENABLE_RAY_CLUSTER` when Ray is
    imported, so the constant is set too; the variable reaches the processes Ray starts. Only for a Ray that
    stays one node: Ray refuses to join a worker node to a cluster with it (cluster/local.py strips it from
    the nodes it starts). Checked on Ray 2.60.0."""
    import os

    from ray._private import ray_constants
    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


# ---------------------------------------------------------------------------------------------- shutdown
def kill_autoscaler_monitor() -> bool:
    """Kill (SIGKILL) the autoscaler monitor of the local Ray this process started, right before `ray.shutdown()`;
    True if there was one running.

    Why: `ray.shutdown()` stops the GCS before the monitor, and the monitor's SIGTERM handler then tries to record
    in the GCS that it failed, and hangs until Ray kills it a second later (`_kill_process_impl`'s 1 s): 1.0 s of
    the 1.45 s a shutdown of the embedded Ray takes, at every command's exit. A one-node embedded Ray has no
    autoscaler state to keep, SIGKILL skips the handler that would tell the driver "The autoscaler failed", and
    `ray.shutdown()` passes over a process already gone (`check_alive=False`). Checked on Ray 2.60.0."""
    import subprocess

    import ray._private.worker as worker
    from ray._private import ray_constants

    node = worker._global_node
    if node is None:
        return False
    killed = False
    for info in node.all_processes.get(ray_constants.PROCESS_TYPE_MONITOR, []):
        if info.process.poll() is None:
            info.process.kill()
            try:
                info.process.wait(timeout=10)
            except subprocess.TimeoutExpired:   # left to ray.shutdown(), which waits for it too
                pass
            killed = True
    return killed


# ---------------------------------------------------------------------------------------------- token auth
def reload_auth_config() -> None:
    """Make this process's Ray re-read RAY_AUTH_MODE and the token (after cluster.connection has set them).

    Why: Ray caches both in its C++ core (`ray._raylet.Config`, `AuthenticationTokenLoader`) at import; a
    driver that learns the token later (from the local cluster's state file) must refresh them, as Ray's own
    `_enable_token_auth` does. No public API does this. Checked on Ray 2.60.0."""
    from ray._raylet import AuthenticationTokenLoader, Config
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


# ------------------------------------------------------------------------------------------------- Jobs API
def job_client_without_redirects(on_redirect: Callable[[str, int, Optional[str]], Exception]) -> type:
    """Ray's ``JobSubmissionClient``, except that no request follows a redirect: a redirect raises
    ``on_redirect(address, status, location)``.

    Why: its requests go through ``requests``, which follows redirects by default (a 307 re-sends the body, a
    job's working_dir upload included, and the token header, wherever it points), and Ray has no option for it.
    Every request of the client passes through the private ``_do_request``, whose keyword arguments reach
    ``requests.request``: the one place to say no. Checked on Ray 2.60.0 (tests/test_cluster_connect.py fails
    if that changes)."""
    from ray.dashboard.modules.job.sdk import JobSubmissionClient

    class NoRedirectJobSubmissionClient(JobSubmissionClient):
        def _do_request(self, method, endpoint, **kwargs):
            response = super()._do_request(method, endpoint, allow_redirects=False, **kwargs)
            if response.is_redirect:
                raise on_redirect(self.get_address(), response.status_code, response.headers.get("Location"))
            return response

    return NoRedirectJobSubmissionClient


def logs_folder() -> str:
    """The log folder of the Ray this process is connected to (its node's session), else where a Ray started here
    keeps it (Ray's default temp folder: $RAY_TMPDIR, on Linux $TMPDIR, else /tmp; then ray/session_latest/logs).
    Messages named /tmp/ray/session_latest/logs always: on a `trainyard cluster up` cluster, or under $RAY_TMPDIR,
    another Ray's (or another user's) logs."""
    try:
        import ray._private.worker as worker
        node = worker.global_worker.node
        if node is not None:
            return node.get_logs_dir_path()
    except Exception:  # noqa: BLE001 - not connected, or another Ray: the default place
        pass
    try:
        from ray._common.utils import get_default_ray_temp_dir
        return os.path.join(get_default_ray_temp_dir(), "session_latest", "logs")
    except Exception:  # noqa: BLE001
        return "/tmp/ray/session_latest/logs"
