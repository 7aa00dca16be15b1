"""Every private Ray name behind cluster/ray_compat.py still exists in the installed Ray (no Ray started).

A failure here after a Ray upgrade names what moved: fix cluster/ray_compat.py (and its CHECKED_ON)."""
import inspect
import logging

import pytest

from cluster import ray_compat as rc


def test_gcs_tables_and_their_messages():
    from ray._private.state import GlobalState, state
    from ray._raylet import GlobalStateAccessor

    assert isinstance(state, GlobalState) and callable(state._connect_and_get_accessor)
    for method in ("get_placement_group_table", "get_actor_table", "get_actor_info", "get_job_table"):
        assert callable(getattr(GlobalStateAccessor, method, None)), method
    pb = rc.gcs_protos()
    pg = pb.PlacementGroupTableData()
    for name in ("placement_group_id", "creator_actor_id", "creator_job_id", "creator_actor_dead", "is_detached",
                 "state", "name", "bundles"):
        assert hasattr(pg, name), f"PlacementGroupTableData.{name}"
    assert pb.PlacementGroupTableData.REMOVED in pb.PlacementGroupTableData.PlacementGroupState.values()
    actor = pb.ActorTableData()
    for name in ("class_name", "job_id", "state"):
        assert hasattr(actor, name), f"ActorTableData.{name}"
    assert {pb.ActorTableData.DEAD, pb.ActorTableData.ALIVE} <= set(pb.ActorTableData.ActorState.values())


def test_trainer_class_leaves_out_the_cleaner_and_an_idle_datasets_callback_and_only_them():
    import ray
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    cleaner, datasets = rc.placement_group_cleaner_callback(), rc.datasets_callback()
    assert inspect.isclass(cleaner) and cleaner.__name__ == "PlacementGroupCleanerCallback"
    assert inspect.isclass(datasets) and datasets.__name__ == "DatasetsCallback"

    def names(trainer_cls, **kw) -> list[str]:
        trainer = trainer_cls(lambda config: None, scaling_config=ScalingConfig(num_workers=1), **kw)
        return [type(cb).__name__ for cb in trainer._create_default_callbacks()]

    default = names(TorchTrainer)
    assert {"PlacementGroupCleanerCallback", "DatasetsCallback", "BackendSetupCallback"} <= set(default)
    swept = rc.trainer_class(torch_backend=True, placement_cleaner=False)
    assert issubclass(swept, TorchTrainer)
    assert names(swept) == [n for n in default if n not in ("PlacementGroupCleanerCallback", "DatasetsCallback")]
    # A dataset as a function that makes it (Ray Train accepts either): ray.data.range itself would start Ray.
    some_data = {"datasets": {"train": lambda: ray.data.range(3)}}
    assert names(swept, **some_data) == [n for n in default if n != "PlacementGroupCleanerCallback"]
    kept = rc.trainer_class(torch_backend=True, placement_cleaner=True)
    assert names(kept, **some_data) == default
    plain = rc.trainer_class(torch_backend=False, placement_cleaner=False)
    assert issubclass(plain, DataParallelTrainer) and not issubclass(plain, TorchTrainer)
    assert names(plain) == [n for n in names(DataParallelTrainer)
                            if n not in ("PlacementGroupCleanerCallback", "DatasetsCallback")]


def test_train_report_logger_is_the_one_the_context_logs_to():
    from ray.train.v2._internal.execution import context as train_context

    logger = rc.train_report_logger()
    assert isinstance(logger, logging.Logger) and logger is train_context.logger
    assert logger.name.endswith("context.py")


def test_serve_controller_client_getter():
    from ray.serve import context as serve_context

    params = inspect.signature(serve_context._get_global_client).parameters
    assert "raise_if_no_controller_running" in params


def test_serve_deployment_names():
    from ray.serve._private.client import ServeControllerClient
    from ray.serve._private.config import ReplicaConfig
    from ray.serve.deployment import Deployment

    assert list(inspect.signature(ServeControllerClient.get_deployment_info).parameters) == ["self", "name",
                                                                                           "app_name"]
    assert {"version", "_internal"} <= set(inspect.signature(Deployment.__init__).parameters)
    assert isinstance(ReplicaConfig.init_args, property)


def test_the_autoscaler_monitor_is_where_shutdown_finds_it():
    import ray._private.node as node
    import ray._private.worker as worker
    from ray._private import ray_constants

    assert hasattr(worker, "_global_node") and ray_constants.PROCESS_TYPE_MONITOR == "monitor"
    assert "all_processes" in inspect.getsource(node.Node.__init__)
    assert "check_alive=False" in inspect.getsource(worker.shutdown)
    assert callable(rc.kill_autoscaler_monitor)


def test_ray_services_resolves_localhost():
    services = rc.ray_services()
    assert callable(services.resolve_ip_for_localhost)
    assert list(inspect.signature(services.resolve_ip_for_localhost).parameters) == ["host"]


def test_auth_config_reload_names_exist(monkeypatch):
    from ray._raylet import AuthenticationTokenLoader, Config

    assert callable(Config.initialize) and callable(AuthenticationTokenLoader.instance().reset_cache)
    rc.reload_auth_config()       # re-reads the (unchanged) environment: must not raise


def test_checked_on_the_installed_ray():
    import ray

    if ray.__version__ not in rc.CHECKED_ON:
        pytest.fail(f"Ray {ray.__version__} is installed but cluster/ray_compat.py was checked on "
                    f"{', '.join(rc.CHECKED_ON)}: check each of its items on this Ray, then add the version")


def test_worker_output_routing_names_exist():
    """What route_worker_output replaces: the dispatcher Ray's log thread emits to, the name `ray.init` registers
    its printer under, the keys of a forwarded batch, and the printer of the messages Ray pushes to the driver."""
    from ray._private import log_monitor, worker
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

    assert callable(dispatcher.add_handler) and callable(dispatcher.remove_handler) and callable(dispatcher.emit)
    assert f'"{rc._PRINTER}"' in inspect.getsource(worker.connect)
    assert list(inspect.signature(worker.print_to_stdstream).parameters) == ["data", "ignore_prefix"]
    assert "print_to_stdstream(" in inspect.getsource(worker.listen_error_messages)
    published = inspect.getsource(log_monitor)
    for key in ("pid", "is_err", "lines", "actor_name", "task_name", "job"):
        assert f'"{key}":' in published, key
    # Serve turns the driver's filter by job off (so `WorkerOutput.other_job` is what keeps other jobs out).
    from ray.serve import context
    assert "_filter_logs_by_job = False" in inspect.getsource(context)
    assert 'data["job"] != job_id_hex' in inspect.getsource(worker.Worker.print_logs)


def test_train_workers_are_the_actor_class_ray_train_names():
    from ray.train.v2._internal.execution.worker_group.worker import RayTrainWorker

    assert RayTrainWorker.__name__ == rc.TRAIN_WORKER


def test_token_auth_logger_is_the_one_that_warns():
    from ray._private.authentication import authentication_token_setup as setup

    assert rc.token_auth_logger() is setup.logger
    assert "Token authentication is enabled" in inspect.getsource(setup._warn_token_auth_enabled)


def test_the_jobs_sdk_loggers_are_the_ones_that_say_the_upload():
    """cluster.quiet.JOBS_SDK_LOGGERS are the loggers of Ray's Jobs SDK modules, the upload's INFO line is
    theirs, and `quiet_jobs_sdk` keeps their INFO out (a warning still shows)."""
    from ray._private.runtime_env import packaging
    from ray.dashboard.modules import dashboard_sdk
    from ray.dashboard.modules.job import sdk

    from cluster.quiet import JOBS_SDK_LOGGERS, quiet_jobs_sdk

    assert (dashboard_sdk.logger.name, sdk.logger.name, packaging.default_logger.name) == JOBS_SDK_LOGGERS
    assert "Uploading package" in inspect.getsource(dashboard_sdk.SubmissionClient._upload_package)
    # The zip it uploads, made with packaging's own logger (a submit printed "INFO packaging.py:785 -- ...").
    assert "Creating a file package" in inspect.getsource(packaging.create_package)
    assert "logger" not in inspect.getsource(dashboard_sdk.SubmissionClient._upload_package).split(
        "create_package(")[1].split(")")[0]
    loggers = [logging.getLogger(name) for name in JOBS_SDK_LOGGERS]
    levels = [logger.level for logger in loggers]
    try:
        quiet_jobs_sdk()
        assert not any(logger.isEnabledFor(logging.INFO) for logger in loggers)
        assert all(logger.isEnabledFor(logging.WARNING) for logger in loggers)
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def test_ray_datas_task_error_records_are_held_and_released_through_their_loggers():
    """cluster.quiet.RAY_DATA_ERROR_LOGGERS are the loggers of Ray Data's failed-task records (the streaming
    executor's and the driver's "Full stack trace"); held, they reach no handler; released (an error ingest
    cannot explain), they reach the handlers they would have reached; warnings pass meanwhile."""
    from ray.data import exceptions
    from ray.data._internal.execution import streaming_executor_state as state

    from cluster.quiet import RAY_DATA_ERROR_LOGGERS, held_ray_data_errors

    assert (state.logger.name, exceptions.logger.name) == RAY_DATA_ERROR_LOGGERS
    assert "An exception was raised from a task of operator" in inspect.getsource(state)
    said: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: said.append(record.getMessage())
    logging.getLogger("ray.data").addHandler(handler)
    try:
        with held_ray_data_errors() as held:
            state.logger.error("An exception was raised from a task of operator \"ReadCSV\".")
            exceptions.logger.warning("a warning")
            assert said == ["a warning"]
            held.release()
        assert said == ["a warning", "An exception was raised from a task of operator \"ReadCSV\"."]
        exceptions.logger.error("Full stack trace:")                    # after the block: as Ray logs it
        assert said[-1] == "Full stack trace:"
    finally:
        logging.getLogger("ray.data").removeHandler(handler)


def test_the_loopback_switch_is_where_ray_reads_it():
    from ray._private import ray_constants, services

    assert ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR == "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
    assert isinstance(ray_constants.ENABLE_RAY_CLUSTER, bool)
    assert "ray_constants.ENABLE_RAY_CLUSTER" in inspect.getsource(services.get_node_ip_address)


def test_the_controller_ray_train_starts_and_what_it_starts_with_a_runtime_env():
    """What `run_controller` repeats and `in_process_env_classes` extends: Ray's own way to start the
    controller (its options, the env vars it hands over, its Ctrl-C handler), the classes and hooks the
    subclasses override; and the worker group sends Ray only what is not env_vars."""
    from ray.train.v2._internal.execution.controller import TrainController
    from ray.train.v2._internal.execution.worker_group.worker import RayTrainWorker
    from ray.train.v2._internal.execution.worker_group.worker_group import WorkerGroup
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    source = inspect.getsource(DataParallelTrainer._initialize_and_run_controller)
    for piece in ("get_env_vars_to_propagate()", "RAY_WARN_BLOCKING_GET_INSIDE_ASYNC_ENV_VAR", "num_cpus=0",
                  "ray._raylet.RAY_NODE_ID_KEY", 'runtime_env={"env_vars": env_vars}',
                  "self._register_sigint_handler(controller)", "controller.run.remote()",
                  "controller.get_result.remote()"):
        assert piece in source, piece
    assert TrainController.worker_group_cls is WorkerGroup and WorkerGroup._worker_cls is RayTrainWorker
    assert "self.worker_group_cls.create(" in inspect.getsource(TrainController)
    assert "self._get_worker_runtime_env(" in inspect.getsource(WorkerGroup._create_workers)
    assert ")(self._worker_cls)" in inspect.getsource(WorkerGroup._create_workers)
    assert list(inspect.signature(RayTrainWorker.__init__).parameters) == ["self"]
    # `abort_run`: the controller's abort, as Ray's Ctrl-C handler calls it, ends the worker group and the actor.
    assert "controller.abort.remote()" in inspect.getsource(DataParallelTrainer._register_sigint_handler)
    assert inspect.iscoroutinefunction(TrainController.abort)
    # (Ray adds `_ray_trace_ctx` to an actor class's methods once the class has been made an actor here.)
    assert [p for p in inspect.signature(TrainController.abort).parameters if p != "_ray_trace_ctx"] == ["self"]
    abort = inspect.getsource(TrainController.abort)
    assert "self._worker_group.abort()" in abort and "ray.actor.exit_actor()" in abort

    controller, group, worker = rc.in_process_env_classes()
    assert (controller.__name__, group.__name__, worker.__name__) == ("TrainController", "WorkerGroup",
                                                                     "RayTrainWorker")
    assert controller.worker_group_cls is group and issubclass(worker, RayTrainWorker)
    assert group._get_worker_runtime_env({"env_vars": {"A": "1"}, "working_dir": "/w"}) == {"working_dir": "/w"}
    assert group._get_worker_runtime_env({"env_vars": {"A": "1"}}) == {}


def test_ray_train_reads_the_variables_it_propagates_when_it_uses_them_not_at_import():
    """`run_controller` sets Ray Train's variables in its processes after Ray's modules are imported: no
    statement that runs at import (outside a function) of `ray.train` may read one of them."""
    import ast
    from pathlib import Path

    import ray.train
    from ray.train.v2._internal import constants

    values = set(constants.ENV_VARS_TO_PROPAGATE)
    names = {n for n, v in vars(constants).items() if isinstance(v, str) and v in values}
    readers = {"getenv", "get", "env_bool", "env_float", "env_integer", "env_set_by_user", "__getitem__"}
    found = []
    for path in Path(ray.train.__file__).parent.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        pending = list(tree.body)
        while pending:
            node = pending.pop()
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(node, ast.Call):
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                used = {a.id for a in ast.walk(node) if isinstance(a, ast.Name)} | {
                    a.value for a in ast.walk(node) if isinstance(a, ast.Constant) and isinstance(a.value, str)}
                if called in readers and used & (names | values):
                    found.append(f"{path.name}:{node.lineno}")
            if isinstance(node, ast.Subscript) and "environ" in ast.unparse(node.value):
                if {a.id for a in ast.walk(node.slice) if isinstance(a, ast.Name)} & names:
                    found.append(f"{path.name}:{node.lineno}")
            pending.extend(ast.iter_child_nodes(node))
    assert not found, f"Ray Train reads a propagated variable at import: {found}"


def test_the_token_file_a_local_ray_writes_is_made_its_owners_alone(tmp_path, monkeypatch):
    """Ray writes ~/.ray/auth_token with the umask (0644): any local user could read the token that opens the
    embedded Ray. `own_token_file` (after every embedded start) makes it 0600; Ray reads it from that path."""
    from ray._private.authentication import authentication_token_setup as setup

    assert "_get_default_token_path()" in inspect.getsource(setup.generate_and_save_token)
    monkeypatch.setenv("HOME", str(tmp_path))
    token = tmp_path / ".ray" / "auth_token"
    token.parent.mkdir()
    token.write_text("t" * 32)
    token.chmod(0o644)
    assert setup._get_default_token_path() == token
    rc.own_token_file()
    assert token.stat().st_mode & 0o777 == 0o600
    token.unlink()
    rc.own_token_file()                      # none there (a cluster's client): nothing to do, no error


def test_the_placement_groups_of_ended_jobs_are_chosen_and_no_others():
    """A job stopped as its Train run placed its workers kept that group reserved after it ended: a search's
    `--resume` waited for workers that could not be placed, and later jobs for CPUs. Each driver joining a cluster
    removes such groups (`cluster.leftovers`); a group of a live job, a detached one, and one made by an actor
    still alive (a detached actor's) are kept."""
    from cluster.leftovers import ended_jobs_groups

    pb = rc.gcs_protos()
    by_driver, by_actor = b"\xff" * 12 + b"\x07\x00\x00\x00", b"\x11" * 12 + b"\x07\x00\x00\x00"

    def group(name, job="07000000", actor=by_driver, **fields):
        return pb.PlacementGroupTableData(name=name, creator_job_id=bytes.fromhex(job), creator_actor_id=actor,
                                          state=fields.pop("state", pb.PlacementGroupTableData.CREATED), **fields)

    groups = [group("trial of the stopped job"),
              group("its Train run's, the actor dead", actor=by_actor, creator_actor_dead=True),
              group("its Train run's, the actor gone from the table", actor=by_actor),
              group("a live job's", job="08000000"),
              group("detached", is_detached=True),
              group("removed already", state=pb.PlacementGroupTableData.REMOVED),
              group("a detached actor's, alive", actor=b"\x22" * 12 + b"\x07\x00\x00\x00"),
              group("flagged dead by the GCS itself", job="09000000", creator_job_dead=True)]
    chosen = ended_jobs_groups(groups, {"07000000"}, lambda actor: actor == by_actor)
    assert [pg.name for pg in chosen] == ["trial of the stopped job", "its Train run's, the actor dead",
                                          "its Train run's, the actor gone from the table",
                                          "flagged dead by the GCS itself"]
    # The tuning sweep's choice within its own (live) job: only the groups of actors now dead, never its
    # driver's (Tune's trial groups) nor another job's.
    from cluster.leftovers import unusable_groups
    mine = unusable_groups(groups, lambda pg: pg.creator_job_id.hex() == "07000000",
                           lambda actor: actor == by_actor, driver_groups=False)
    assert [pg.name for pg in mine] == ["its Train run's, the actor dead",
                                        "its Train run's, the actor gone from the table"]


@pytest.mark.ray
def test_a_live_jobs_placement_group_is_kept_when_ended_jobs_are_cleared(ray_session):
    import ray
    from ray._private.state import state
    from ray.util.placement_group import placement_group, remove_placement_group

    from cluster.leftovers import release_ended_jobs_groups

    assert rc.ended_jobs() == {job["JobID"] for job in state.job_table() if job["IsDead"]}
    mine = placement_group([{"CPU": 0.01}])
    try:
        ray.get(mine.ready(), timeout=60)
        assert release_ended_jobs_groups() == (0, 0.0)
        assert ray.util.placement_group_table(mine)["state"] == "CREATED"
    finally:
        remove_placement_group(mine)
