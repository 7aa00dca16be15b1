"""A search on the embedded Ray starts no Ray Train preemption watcher for its trials (nothing there is ever
drained): one actor process less per trial, and none of the watcher's lines."""
from collections import Counter

import pytest

from cluster import ray_compat
from jobs.train import PREEMPTION_ENV
from tests.conftest import small_spec, write_spec
from trainyard.cli import main


def _actors_by_class() -> Counter:
    return Counter(a.class_name for a in ray_compat.actor_table())


@pytest.mark.slow
def test_trials_on_embedded_ray_start_no_preemption_watcher(tmp_path, telemetry_dir, ray_session, monkeypatch):
    from cluster import is_embedded

    assert is_embedded()
    monkeypatch.delenv(PREEMPTION_ENV, raising=False)
    spec = {**small_spec("no-watcher", telemetry_dir, tmp_path / "out", epochs=1),
            "tune": {"samples": 2, "scheduler": "none", "lr": {"loguniform": [1e-3, 1e-1]}}}
    before = _actors_by_class()
    assert main(["tune", str(write_spec(tmp_path / "s.yaml", spec))]) == 0
    started = _actors_by_class() - before
    assert started["TrainController"] == 2 and started["PreemptionWatcher"] == 0, started
