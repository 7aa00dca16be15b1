"""The connection rule without a cluster: address parsing, where the token comes from, and the errors for
addresses where no Ray answers. (Against a real token-auth cluster: tests/test_cluster_local.py.)"""
from __future__ import annotations

import http.server
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cluster import state as cluster_state
from cluster.address import ConnectError, find_token, parse_address
from cluster.connection import preflight
from cluster.dashboard import dashboard_url, job_client

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No token or address from the developer's shell or ~/.ray, and no local cluster state."""
    for name in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv(cluster_state.STATE_DIR_ENV, str(tmp_path / "state"))
    return tmp_path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("text,kind,host,port", [
    (None, "local", None, None),
    ("", "local", None, None),
    ("auto", "auto", None, None),
    ("10.0.0.5:6379", "gcs", "10.0.0.5", 6379),
    ("ray://head:10001", "client", "head", 10001),
    ("ray://head", "client", "head", 10001),
    ("http://127.0.0.1:8265/", "dashboard", "127.0.0.1", 8265),
    ("https://ray.example.com", "dashboard", "ray.example.com", 443),
])
def test_parse_address(text, kind, host, port):
    a = parse_address(text)
    assert (a.kind, a.host, a.port) == (kind, host, port)


@pytest.mark.parametrize("text,says", [
    ("head", "has no port"),
    ("head:http", "is not a number"),
    ("s3://bucket", "unknown scheme"),
])
def test_bad_address_names_the_value_and_the_accepted_forms(text, says):
    with pytest.raises(ConnectError) as err:
        parse_address(text, origin="RAY_ADDRESS")
    assert says in str(err.value) and f"RAY_ADDRESS={text!r}" in str(err.value)
    assert "ray://host:10001" in str(err.value)
    assert err.value.exit_code == 2  # the address must change: bad input


def test_token_precedence(clean_env, monkeypatch):
    home_token = clean_env / "home" / ".ray" / "auth_token"
    home_token.parent.mkdir(parents=True)
    home_token.write_text("from-home\n")
    assert find_token().value == "from-home"

    state = {"address": "127.0.0.1:45001", "ports": {"gcs": 45001, "client": 45002, "dashboard": 45003},
             "token_path": str(clean_env / "cluster-token")}
    Path(state["token_path"]).write_text("from-local-cluster")
    cluster_state.write_state(None, state)
    # The local cluster's token wins over ~/.ray for that cluster's addresses only.
    assert find_token(parse_address("127.0.0.1:45001")).value == "from-local-cluster"
    assert find_token(parse_address("http://127.0.0.1:45003")).value == "from-local-cluster"
    assert find_token(parse_address("10.0.0.5:6379")).value == "from-home"

    path_token = clean_env / "token-file"
    path_token.write_text("from-path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(path_token))
    assert find_token(parse_address("127.0.0.1:45001")).value == "from-path"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    token = find_token(parse_address("127.0.0.1:45001"))
    assert token.value == "from-env" and "RAY_AUTH_TOKEN" in token.source
    # Refused, each variable is named as the one to unset: RAY_AUTH_TOKEN is part of RAY_AUTH_TOKEN_PATH's name
    from cluster.address import rejected_token
    address = parse_address("127.0.0.1:45001")
    assert "unset RAY_AUTH_TOKEN to use that one" in str(rejected_token("x", token, address))
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    by_path = find_token(address)
    assert "unset RAY_AUTH_TOKEN_PATH to use that one" in str(rejected_token("x", by_path, address))
    assert "unset" not in str(rejected_token("x", by_path, parse_address("10.0.0.5:6379")))    # not that cluster


def test_token_path_to_nothing_is_an_error(clean_env, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(clean_env / "missing"))
    with pytest.raises(ConnectError, match="RAY_AUTH_TOKEN_PATH=.*missing.*missing or empty file"):
        find_token()


def test_no_token_anywhere(clean_env):
    assert find_token(parse_address("10.0.0.5:6379")) is None


@pytest.mark.parametrize("address", ["127.0.0.1:{port}", "ray://127.0.0.1:{port}", "http://127.0.0.1:{port}"])
def test_nothing_listening_is_a_wrong_address_error_in_seconds(clean_env, address):
    address = address.format(port=free_port())
    started = time.monotonic()
    with pytest.raises(ConnectError, match="nothing answers at .*wrong address, or the cluster is down"):
        preflight(address)
    assert time.monotonic() - started < 10  # Ray itself retries for ~20 s before a vague error


@pytest.fixture
def http_server():
    """Something that is not Ray, listening on 127.0.0.1."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()


def test_a_dashboard_address_at_a_port_that_does_not_speak_http_says_so(clean_env):
    """`jobs list --address http://HOST:<GCS port>` (the GCS or Ray Client port written as a dashboard URL)
    printed http.client's traceback ("BadStatusLine: ... @ ?") and exited 1."""
    server = socket.create_server(("127.0.0.1", 0))

    def answer_in_bytes():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.recv(4096)
                conn.sendall(b"\x00\x00\x00\x18@\x00\xfe?\n")     # what a gRPC port answers an HTTP request

    threading.Thread(target=answer_in_bytes, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.getsockname()[1]}"
        with pytest.raises(ConnectError, match=rf"{url} answers, but not in HTTP \(BadStatusLine\): the port of Ray's "
                                               r"GCS \(6379\) or Ray Client \(10001\), not its dashboard's"):
            job_client(url)
    finally:
        server.close()


def test_a_port_that_is_not_ray_says_so(clean_env, http_server):
    with pytest.raises(ConnectError, match="answers but not as a Ray GCS"):
        preflight(f"127.0.0.1:{http_server}")


def test_dashboard_url_needs_a_dashboard(clean_env):
    assert dashboard_url("http://10.0.0.5:8265/") == "http://10.0.0.5:8265"
    with pytest.raises(ConnectError, match="needs the dashboard URL"):
        dashboard_url("10.0.0.5:6379")
    with pytest.raises(ConnectError, match="no cluster to talk to.*trainyard cluster up"):
        dashboard_url(None)
    # A cluster `cluster up` started from another folder is recorded there: said, rather than only "start one".
    with pytest.raises(ConnectError, match=r"started from another folder .* or set TRAINYARD_STATE_DIR=DIR/.trainyard "
                                           r"\(`trainyard cluster` commands also take --state-dir"):
        dashboard_url(None)



def test_a_status_without_a_recorded_cluster_says_where_else_it_may_be(tmp_path):
    from cluster import local

    for call in (lambda: local.status(tmp_path), lambda: local.down(tmp_path)):
        with pytest.raises(local.ClusterError, match=r"no local cluster recorded in .*another folder.*--state-dir"):
            call()


def test_cluster_down_without_a_recorded_cluster_exits_0_saying_where_else_it_may_be(tmp_path, capsys):
    """A teardown run twice (a trap on EXIT, a CI cleanup) failed with exit 1 after a teardown that had worked."""
    import argparse

    from cluster.commands import cmd_cluster_down

    assert cmd_cluster_down(argparse.Namespace(state_dir=str(tmp_path), timeout=30.0)) == 0
    said = capsys.readouterr()
    assert re.search(r"cluster down: no local cluster recorded in .*cluster.json: nothing to stop \(.*another "
                     r"folder.*--state-dir", said.out + said.err), said


def test_dashboard_url_of_the_local_cluster(clean_env):
    cluster_state.write_state(None, {"address": "127.0.0.1:45001", "dashboard_url": "http://127.0.0.1:45003",
                              "ports": {"gcs": 45001, "client": 45002, "dashboard": 45003}})
    assert dashboard_url(None) == "http://127.0.0.1:45003"
    assert dashboard_url("auto") == "http://127.0.0.1:45003"
    assert dashboard_url("127.0.0.1:45001") == "http://127.0.0.1:45003"


def test_connect_refuses_a_dashboard_url_with_advice(clean_env):
    # A fresh interpreter: connect() reuses a Ray that this test session may have started.
    out = subprocess.run([sys.executable, "-c", "from cluster import connect; connect('http://127.0.0.1:8265')"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert out.returncode != 0
    assert "is a dashboard (Jobs API) address" in out.stderr and "trainyard submit SPEC" in out.stderr


def test_corrupt_state_file_names_the_file(clean_env):
    path = cluster_state.state_path(None)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(cluster_state.StateError, match=str(path)):
        cluster_state.read_state(None)


def test_is_embedded_says_whether_this_process_started_its_ray(ray_session, monkeypatch):
    from cluster import connection

    # The session's Ray: `connect()` with no address started it in this process.
    assert connection.is_embedded() and ray_session.is_initialized()
    # Connected to a Ray this process did not start (one that ran `connect()` earlier and then joined another
    # cluster is in this state): not embedded.
    monkeypatch.setattr(connection, "_embedded_gcs", "127.0.0.1:1")
    assert not connection.is_embedded()
    # Connected already: `connect()` starts nothing, so the CLI does not say "starting Ray".
    assert not connection.starts_embedded()


def test_addresses_tokens_and_the_dashboard_client_import_no_ray():
    """Parsing an address, finding a token and the Jobs API's HTTP checks need no Ray: their modules import none
    (only `job_client` itself loads Ray's client, when called)."""
    code = ("import sys, cluster.address, cluster.dashboard; from cluster import parse_address, find_token, "
            "dashboard_url; print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.strip() == "[]", (run.stdout, run.stderr[-2000:])


def test_starts_embedded_only_with_no_ray_connected_and_no_cluster_named(clean_env):
    """In a fresh process (no Ray connected): an embedded Ray starts unless --address or RAY_ADDRESS names one."""
    code = ("from cluster.connection import starts_embedded; print(starts_embedded(), "
            "starts_embedded('127.0.0.1:6379'), starts_embedded('ray://127.0.0.1:10001'))")

    def answers(**env) -> list[str]:
        run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **env},
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr[-2000:]
        return run.stdout.split()

    assert answers() == ["True", "False", "False"]
    assert answers(RAY_ADDRESS="127.0.0.1:6379") == ["False", "False", "False"]


# ---------------------------------------------------------------------------------------------- the token's way

class FakeDashboard:
    """A real HTTP server standing in for a Ray dashboard (or for whatever a redirect leads to): answers
    ``routes`` (path -> (status, headers, JSON body)), redirects every other path to ``redirect_to`` when set,
    and records every request it gets (path, headers)."""

    def __init__(self, host: str = "127.0.0.1", routes: dict | None = None, redirect_to: str | None = None,
                 redirect_code: int = 307):
        fake = self
        self.requests: list[tuple[str, dict]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self):
                fake.requests.append((self.path, dict(self.headers)))
                if self.path in (routes or {}):
                    status, body = routes[self.path]
                    payload = json.dumps(body).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                elif redirect_to:
                    self.send_response(redirect_code)
                    self.send_header("Location", redirect_to + self.path)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    self.send_error(404)

            do_GET = do_POST = do_PUT = _answer

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


DASHBOARD_ROUTES = {"/api/authentication_mode": (200, {"authentication_mode": "token"}),
                    "/api/version": (200, {"version": "4", "ray_version": "2.60.0", "ray_commit": "x"})}


@pytest.fixture
def servers():
    started: list[FakeDashboard] = []

    def start(**kwargs) -> FakeDashboard:
        started.append(FakeDashboard(**kwargs))
        return started[-1]

    yield start
    for server in started:
        server.close()


def test_the_token_probe_follows_no_redirect(clean_env, monkeypatch, servers):
    """A dashboard address that redirects elsewhere: refused before the token leaves for the other server
    (urllib would forward the Authorization header with the redirect)."""
    monkeypatch.setenv("RAY_AUTH_TOKEN", "the-cluster-token")
    elsewhere = servers(routes=DASHBOARD_ROUTES)
    redirecting = servers(redirect_to=elsewhere.url, redirect_code=302)
    with pytest.raises(ConnectError, match=r"answered with a redirect \(HTTP 302 to http://127\.0\.0\.1:\d+/api/"):
        job_client(redirecting.url)
    assert elsewhere.requests == [], "a redirect was followed"
    assert not any("Authorization" in headers for _, headers in elsewhere.requests)


def test_the_jobs_api_client_follows_no_redirect(clean_env, monkeypatch, servers):
    """The dashboard answers the probes itself and redirects the Jobs API (307: `requests` would re-send the
    request, body and all, to the other server)."""
    from cluster import jobs_api

    monkeypatch.setenv("RAY_AUTH_TOKEN", "the-cluster-token")
    elsewhere = servers(routes={"/api/jobs/": (200, [])})
    dashboard = servers(routes=DASHBOARD_ROUTES, redirect_to=elsewhere.url)
    with pytest.raises(ConnectError, match=rf"{dashboard.url} answered with a redirect \(HTTP 307 to "
                                           rf"{elsewhere.url}/api/jobs/\)"):
        jobs_api.list_jobs(dashboard.url)
    assert elsewhere.requests == [], "a redirect was followed"
    # The dashboard itself did get the token (the address the user gave).
    assert any(h.get("Authorization") == "Bearer the-cluster-token" for p, h in dashboard.requests
               if p == "/api/version")


def _outward_ip() -> str | None:
    """This machine's address towards the network (no packet is sent), or None when it has only loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.123", 9))
            ip = s.getsockname()[0]
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


def test_plain_http_to_another_machine_warns_before_the_token_is_sent(clean_env, monkeypatch, servers, capsys):
    ip = _outward_ip()
    if ip is None:
        pytest.skip("this machine has no address besides loopback")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "the-cluster-token")
    local_dashboard = servers(routes=DASHBOARD_ROUTES)
    preflight(local_dashboard.url)
    assert "warning" not in capsys.readouterr().err, "loopback never leaves the machine: no warning"

    remote = servers(host=ip, routes=DASHBOARD_ROUTES)
    preflight(remote.url)
    err = capsys.readouterr().err
    assert f"trainyard: warning: sending the cluster token to {remote.url} over plain http://" in err
    assert "https://" in err and "ssh -L" in err
