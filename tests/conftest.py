"""One real local Ray for the whole session (starting Ray costs seconds on 2 cores), tiny data in tmp dirs."""
from __future__ import annotations

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


def pytest_collection_modifyitems(config, items):
    for item in items:
        if RAY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.ray)


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
        ray.shutdown()


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
            "train": {"epochs": 3, "batch_size": 32, "lr": 0.01, "workers": 1, "max_failures": 1, **train},
            "output": str(output)}
