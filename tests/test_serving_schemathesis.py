"""Schemathesis against the served OpenAPI: requests generated from /openapi.json, those that fit it and those
that do not (wrong types, missing and extra fields, odd strings and numbers), must never get a 5xx, and every
answer must be the JSON that the spec declares for its status.

Real Ray Serve over real HTTP, behind the bearer token: a tabular bundle and an image bundle, each deployed with
a small serve.max_records so that generated request bodies stay small. 60 examples per operation and mode: about
3 s of requests per bundle on 2 cores (training the bundles, shared with other tests, is the rest).
"""
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from tests.serving_fixtures import deploy_app, release_app, served_bundle, serve_instance  # noqa: F401  (fixtures)
from tests.test_serving_bodies import image_bundle  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("ray_session")
TOKEN = "fuzz-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLES = 60
# No 5xx; and every answer is the JSON its status declares in the spec (a NaN in a 200 is not JSON).
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


def served_schema(bundle, name: str, serve_instance):
    """Deploy `bundle` as app `name` behind the token and load its OpenAPI (which needs the token too)."""
    served = deploy_app(bundle, name, serve_instance, token=TOKEN, max_records=4)
    schema = schemathesis.openapi.from_url(f"{served.url}/openapi.json", headers=AUTH)
    # The spec's paths are relative to the app's route prefix.
    schema.config.update(base_url=served.url)
    return schema


@pytest.fixture(scope="module")
def tabular_api(served_bundle, serve_instance):
    yield served_schema(served_bundle, "fuzz", serve_instance)
    release_app("fuzz")


@pytest.fixture(scope="module")
def image_api(image_bundle, serve_instance):
    yield served_schema(image_bundle, "fuzzimg", serve_instance)
    release_app("fuzzimg")


def fuzz(schema) -> int:
    """Every operation of `schema`, with data that fits it and data that does not; fails on any CHECKS failure.
    Returns how many operations were fuzzed. (Through `as_strategy` and `@given` rather than `from_fixture`, whose
    pytest integration does not run under pytest 9.2: it writes a node attribute that no longer exists.)"""
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        for mode in GenerationMode:
            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
                      database=None)
            def answers_well(case):
                case.call_and_validate(headers=AUTH, checks=CHECKS)

            answers_well()
    return len(operations)


def test_tabular_api_has_no_server_errors(tabular_api):
    assert fuzz(tabular_api) == 5       # /predict, /healthz, /readyz, /schema, /monitor


def test_image_api_has_no_server_errors(image_api):
    assert fuzz(image_api) == 5
