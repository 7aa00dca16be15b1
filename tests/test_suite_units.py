"""`make test` runs the modules in two pytest-xdist workers (tests/conftest.py): every module that uses a fixture
paid once per process (Ray Serve, the served bundles) must land in the one shared work unit, or Serve is started
and the bundles are trained again in the other worker."""
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
