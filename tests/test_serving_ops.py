"""Serving under load, on real Ray Serve: replicas scale up with traffic and back down after it; a model
update while requests flow loses none of them and switches responses to the new version, and a broken one is
rolled back. (Failures under load, a killed replica: tests/test_serving_faults.py.)"""
import threading
import time
from collections import Counter

import pytest

from tests.serving_fixtures import bundle_variant, deploy_app, release_app, served_bundle, serve_instance  # noqa: F401

pytestmark = [pytest.mark.usefixtures("ray_session"), pytest.mark.slow]


class Traffic:
    """Closed-loop load from `threads` threads, each on its own keep-alive connection, until stop()."""

    def __init__(self, url: str, threads: int, records=({"rpm": 1500.0, "machine_type": "M"},)):
        from serving import Client
        self.ok, self.failures, self.versions = 0, Counter(), []
        self._stop = threading.Event()
        self._lock = threading.Lock()

        def run():
            client = Client(url, retries=0, timeout=30)     # no client-side retry: every failure counts
            while not self._stop.is_set():
                try:
                    version = client.predict(list(records))["model"]["version"]
                    with self._lock:
                        self.ok += 1
                        self.versions.append(version)
                except Exception as exc:  # noqa: BLE001 - counted and reported
                    with self._lock:
                        self.failures[f"{type(exc).__name__}: {str(exc)[:200]}"] += 1
            client.close()

        self._threads = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
        for t in self._threads:
            t.start()

    def stop(self) -> "Traffic":
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)
        return self


def _wait_for(predicate, timeout: float, every: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False


def test_replicas_scale_up_under_load_and_back_down(served_bundle, serve_instance):
    from serving import running_replicas

    # Short delays so the test takes seconds: production defaults wait 30 s to scale up and 10 min to scale down.
    served = deploy_app(served_bundle, "scale", serve_instance, autoscaling={
        "min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 1, "upscale_delay_s": 0.5,
        "downscale_delay_s": 2.0, "look_back_period_s": 1.0, "metrics_interval_s": 0.25})
    try:
        assert running_replicas("scale") == 1
        traffic = Traffic(served.url, threads=8)
        try:
            scaled_up = _wait_for(lambda: running_replicas("scale") == 2, timeout=60)
        finally:
            traffic.stop()
        assert scaled_up, "8 requests in flight against target_ongoing_requests=1 never brought a 2nd replica"
        assert not traffic.failures, traffic.failures
        assert _wait_for(lambda: running_replicas("scale") == 1, timeout=60), "did not scale back to min_replicas"
    finally:
        release_app("scale")


def test_an_update_interrupted_while_it_waits_is_rolled_back(served_bundle, serve_instance, tmp_path):
    """An update whose replicas could not be placed, stopped while it waited (SIGTERM: a cancelled CI job), printed
    Ray's stack dump alone and left Serve deploying it: the old replica answered, and once it was lost the app had
    none, and the next `serve` kept the update's settings. Now SIGTERM (and Ctrl-C) roll it back first."""
    import os
    import signal

    from cluster.ray_compat import serve_deployment
    from serving import Client
    from serving.payload import payload_json
    from serving.server import DEPLOYMENT

    v2 = bundle_variant(served_bundle, tmp_path / "v2", version="stuck-v2")
    served = deploy_app(served_bundle, "stuck", serve_instance)
    said = []

    def progress(line):
        said.append(line)
        if line.startswith("[serve] updating stuck"):       # the update waits for replicas no node can hold
            threading.Timer(3.0, os.kill, (os.getpid(), signal.SIGTERM)).start()
    try:
        with pytest.raises(SystemExit):
            deploy_app(v2, "stuck", serve_instance, progress=progress, ray_actor_options={"num_cpus": 64})
        assert any(line.startswith(f"[serve] interrupted: Rolled back: stuck serves {served.version} again")
                   for line in said), said
        target = serve_deployment("stuck", DEPLOYMENT)       # what Serve deploys: the version that ran, again
        assert payload_json(target.init_args[0], "lineage.json")["version"] == served.version
        assert Client(served.url).predict([{}])["model"]["version"] == served.version
        assert signal.getsignal(signal.SIGTERM) is not None          # the handler is put back
    finally:
        release_app("stuck")


def test_update_while_serving_loses_no_request_and_a_broken_update_changes_nothing(
        served_bundle, serve_instance, tmp_path, monkeypatch):
    import serving.server
    from serving import Client, ServeError, running_replicas

    v2 = bundle_variant(served_bundle, tmp_path / "v2", version="update-v2")
    served = deploy_app(served_bundle, "upd", serve_instance)
    v1 = served.version
    try:
        traffic = Traffic(served.url, threads=4)
        try:
            time.sleep(1.0)
            updated = deploy_app(v2, "upd", serve_instance)          # blocks until v2 answers over HTTP
            assert updated.updated_from == v1 and updated.version == "update-v2"
            time.sleep(2.0)
        finally:
            traffic.stop()
        assert not traffic.failures, traffic.failures
        assert traffic.ok > 50
        # Responses switched from v1 to v2, and stayed there.
        switches = [v for i, v in enumerate(traffic.versions) if i == 0 or traffic.versions[i - 1] != v]
        assert switches[0] == v1 and switches[-1] == "update-v2", switches[:10]
        assert set(traffic.versions[-20:]) == {"update-v2"}
        assert _wait_for(lambda: running_replicas("upd") == 1, timeout=60)   # the old replica is gone

        # A replica that cannot start (its start-up checks of settings against the bundle, then a canary
        # prediction, are what mark a broken model unhealthy) fails the update with the replica's own error,
        # and it is rolled back to v2 (tests/test_serving_faults.py: replicas started later run v2 too). The
        # driver would refuse this setting first: let it through.
        monkeypatch.setattr(serving.server, "check_settings", lambda *a: None)
        with pytest.raises(ServeError, match=r"updating upd to update-v2 failed: a replica could not start: "
                                             r"ValueError: serve.required_features names \['no_such_feature'\].*"
                                             r"Rolled back: upd serves update-v2 again"):
            deploy_app(v2, "upd", serve_instance, required_features=["no_such_feature"])
        assert Client(served.url).predict([{}])["model"]["version"] == "update-v2"

        # A version that would refuse what clients send now (here: categories it did not train on) is no
        # zero-downtime update: refused before Serve is touched, naming what breaks, unless told (--breaking).
        v3 = bundle_variant(served_bundle, tmp_path / "v3", version="update-v3", unknown_category="error")
        with pytest.raises(ServeError, match=r"^updating upd from version update-v2 to update-v3 would refuse "
                                             r"requests the running version takes: 'machine_type' refuses any "
                                             r"category it did not train on .*Serve the new version beside it "
                                             r"\(--name upd-v2 .*update anyway with --breaking$") as refused:
            deploy_app(v3, "upd", serve_instance)
        assert refused.value.exit_code == 2
        assert Client(served.url).predict([{"machine_type": "Z"}])["model"]["version"] == "update-v2"
        said = []
        assert deploy_app(v3, "upd", serve_instance, progress=said.append, breaking=True).version == "update-v3"
        assert any(line.startswith("[serve] note: updating upd from version update-v2 to update-v3 refuses requests")
                   and line.endswith("(--breaking)") for line in said), said
    finally:
        release_app("upd")
