"""One real local Ray for the whole session (starting Ray costs seconds on 2 cores), tiny data in tmp dirs."""
from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

# Fixtures that start Ray (the session's embedded Ray, a local multi-node cluster). A test that uses one, even
# through another fixture, is marked `ray`; `make test-fast` runs the rest (`-m "not ray"`). A test that starts
# Ray some other way (a `trainyard` subprocess) carries `@pytest.mark.ray` itself.
RAY_FIXTURES = {"ray_session", "cluster", "cluster_env"}


# The slowest modules, slowest first (per-file totals of a `-n 2` run, issue 17). Under pytest-xdist (`pytest
# -n 2 --dist loadfile --no-loadscope-reorder`, benchmarks/RESULTS.md) each worker takes the next whole module, so a
# long module taken last leaves the other worker idle for its whole length; these go first and the short ones
# fill in at the end. A serial run keeps the file order.
SLOWEST_FIRST = ["test_cluster_local.py", "test_serving_faults.py", "test_text_e2e.py", "test_tuning.py",
                 "test_output.py", "test_train_e2e.py", "test_tuning_resume.py", "test_serving_ops.py",
                 "test_text_serving_http.py", "test_serving.py", "test_images.py"]


def pytest_collection_modifyitems(config, items):
    for item in items:
        if RAY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.ray)
    if hasattr(config, "workerinput"):  # an xdist worker: every worker sorts alike, so their collections agree
        rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
        items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


# Session fixtures paid once per pytest process however many modules use them: Ray Serve (a controller, a proxy
# and HAProxy, then a controller idling for the session; tests/serving_fixtures.py) and the bundles the serving
# tests train. Under `--dist loadfile` (`make test`) every module that names one of them goes to the same xdist
# worker, as one unit, so each is set up once instead of once per worker; any other module stays a unit of its
# own. (xdist's `--dist loadgroup` would do this with marks, but with pytest 9.2 it silently falls back to one
# test per unit: xdist 3.8 renames a test by setting `item._nodeid`, which pytest 9.2 no longer reads;
# pytest-xdist issue #1386, open.) The scheduler sees only test ids, so the module's source decides.
SHARED_FIXTURES = ("serve_instance", "served_bundle", "image_bundle")
SHARED_UNIT = "tests/serving_fixtures.py"


@functools.lru_cache(maxsize=None)
def unit_of(path: str) -> str:
    """The xdist work unit of the test module at `path` (relative to the repository root)."""
    source = (ROOT / path).read_text() if (ROOT / path).is_file() else ""
    return SHARED_UNIT if any(name in source for name in SHARED_FIXTURES) else path


@pytest.hookimpl(tryfirst=True, optionalhook=True)   # optional: the hook exists only with pytest-xdist installed
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SharedFixturesTogether(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid.split("::", 1)[0])

    return SharedFixturesTogether(config, log)


@pytest.fixture(scope="session")
def ray_session():
    import ray
    from cluster import connect
    from cluster.quiet import quiet_ray_logs

    quiet_ray_logs()
    started = not ray.is_initialized()
    connect(num_cpus=4)
    yield ray
    if started:
        from cluster import disconnect

        # The session's embedded Ray stops, its workers still running waited for here; a cluster it joined instead
        # (RAY_ADDRESS) is left running.
        left = disconnect(reap=False)
        _end_stuck_workers(left)


def _end_stuck_workers(workers: list[dict]) -> None:
    """The session's Ray workers still running WORKER_EXIT_GRACE_S after `ray.shutdown()` are stuck in Ray's own
    exit handler (`cluster.processes.end_stuck`): the suite stops what it started, in this process (where a
    command leaves that to `cluster.reaper`), and a warning says so."""
    import warnings

    from cluster.processes import end_stuck

    killed = end_stuck(workers)
    if killed:
        names = ", ".join(f"{r['name']} (pid {r['pid']})" for r in killed)
        warnings.warn(f"killed {len(killed)} Ray worker(s) of the test session still running after "
                      f"ray.shutdown(): {names}")


@pytest.fixture(autouse=True)
def given_up_runs_end():
    """A test whose run was given up before its data was ready (bad data after Ray started, `jobs.early`) returns
    while that run's worker group still starts on the shared Ray; the next test would count its actors."""
    yield
    early = sys.modules.get("jobs.early")
    if early is not None:
        assert early.wait_given_up(120), "a run given up before its data was ready did not end in 120 s"


@pytest.fixture(autouse=True)
def no_ray_started_by_the_way(request):
    """A test that does not ask for `ray_session` must not leave a Ray of its own running in this process: every
    later test of the process would run on it instead of the session's (Ray's defaults: other CPUs, its
    dashboard, its log lines). Found: `ray.data.range(3)` starts Ray by itself, and with 2 CPUs instead of 4
    a later one-worker run could not start early."""
    ray = sys.modules.get("ray")
    before = ray is not None and ray.is_initialized()
    yield
    ray = sys.modules.get("ray")
    if not before and "ray_session" not in request.fixturenames and ray is not None and ray.is_initialized():
        ray.shutdown()
        pytest.fail("this test started Ray in the test process without asking for the `ray_session` fixture "
                    "(ray.data calls start one); use the fixture, or keep Ray out of the test")


@pytest.fixture(scope="session")
def telemetry_dir(tmp_path_factory):
    from telemetry import generate, write_shards

    out = tmp_path_factory.mktemp("telemetry")
    write_shards(generate(480, seed=1), out, 3)
    return out


@pytest.fixture(scope="session")
def regression_dir(tmp_path_factory):
    from telemetry import generate, write_shards

    out = tmp_path_factory.mktemp("telemetry-reg")
    write_shards(generate(360, seed=2, regression=True), out, 2, fmt="csv")
    return out


def write_spec(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def small_spec(name: str, data_path, output, label: str = "failure", **train) -> dict:
    return {"name": name,
            "data": {"path": str(data_path), "label": label, "features": {"exclude": ["machine_id"]}},
            "model": {"hidden": [16], "dropout": 0.0},
            # use_gpu false: the suite checks CPU numerics everywhere (on a GPU machine `auto` would train these
            # runs there under bf16); tests/test_gpu.py checks the GPU path.
            "train": {"epochs": 3, "batch_size": 32, "lr": 0.01, "workers": 1, "max_failures": 1, "use_gpu": False,
                      **train},
            "output": str(output)}
