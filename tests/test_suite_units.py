"""`make test` runs the modules in two pytest-xdist workers (tests/conftest.py): every module that uses a fixture
paid once per process (Ray Serve, the served bundles) must land in the one shared work unit, or Serve is started
and the bundles are trained again in the other worker. And a test session leaves no Ray worker behind."""
import pytest

from tests.conftest import ROOT, SHARED_FIXTURES, SHARED_UNIT, unit_of


def test_every_module_using_a_shared_fixture_is_in_the_shared_unit(request):
    items = request.session.items
    users = {item.path for item in items if set(SHARED_FIXTURES) & set(getattr(item, "fixturenames", ()))}
    if not users:
        pytest.skip("no test that uses the serving fixtures was collected in this run")
    assert {path for path in users if unit_of(path.relative_to(ROOT).as_posix()) != SHARED_UNIT} == set()


def test_other_modules_stay_units_of_their_own():
    assert unit_of("tests/test_cli.py") == "tests/test_cli.py"
    assert unit_of("tests/test_serving.py") == SHARED_UNIT
    assert unit_of("tests/no_such_module.py") == "tests/no_such_module.py"


def test_the_session_kills_its_ray_workers_that_never_exit(monkeypatch):
    """`ray_session`'s teardown: processes under this one that carry Ray's RAY_RAYLET_PID (the session's
    workers) and are still running after the grace are killed, with a warning; other children are not its
    business. A real process stands in for a worker stuck in Ray's exit handler."""
    import subprocess
    import sys

    import cluster.processes as processes
    import tests.conftest as conftest

    sleep = [sys.executable, "-c", "import time; time.sleep(600)"]
    stuck = subprocess.Popen(sleep, env={"RAY_RAYLET_PID": "1", "PATH": "/usr/bin:/bin"})
    other = subprocess.Popen(sleep, env={"PATH": "/usr/bin:/bin"})
    try:
        found = processes.ray_workers_of_this_process()
        pids = [r["pid"] for r in found]
        assert stuck.pid in pids and other.pid not in pids
        monkeypatch.setattr(processes, "WORKER_EXIT_GRACE_S", 0.5)
        with pytest.warns(UserWarning, match=rf"killed 1 Ray worker\(s\) .* \(pid {stuck.pid}\)"):
            conftest._end_stuck_workers([r for r in found if r["pid"] == stuck.pid])
        assert stuck.wait(10) == -9 and other.poll() is None
    finally:
        for proc in (stuck, other):
            proc.kill()
            proc.wait()
