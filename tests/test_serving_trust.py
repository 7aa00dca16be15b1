"""Serving someone else's bundle on a shared machine, on real Ray Serve: the bundle cannot choose what runs or
where the server listens, and HAProxy's files (config, admin socket, the bind wrapper) are this Serve's own."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import yaml

from jobs.manifest import write as write_manifest
from tests.serving_fixtures import (SERVE_SAID, bundle_variant, call, records_from, release_app, served_bundle,  # noqa: F401
                                    serve_instance)

BUNDLE_VAR, OPERATOR_VAR = "TRAINYARD_TEST_FROM_BUNDLE", "TRAINYARD_TEST_FROM_OPERATOR"


def _processes(word: str) -> dict[int, list[str]]:
    """pid → argv of this machine's processes whose command line mentions `word` (Ray titles an actor's worker
    process ray::<actor class>, e.g. ray::ServeReplica:<app>:<deployment>)."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except (OSError, ValueError):   # not a process, or one that just ended
            continue
        if entry.name.isdigit() and any(word in a for a in argv):
            found[int(entry.name)] = argv
    return found


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)


def _listening(port: int) -> set[str]:
    """The addresses this machine listens on at TCP `port` (from /proc/net/tcp and tcp6; IPv4 as a.b.c.d)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            local, state = row.split()[1], row.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:   # 0A: LISTEN
                found.add(".".join(str(b) for b in reversed(bytes.fromhex(address))) if len(address) == 8
                          else address)
    return found


def test_haproxy_runs_from_a_private_folder_and_binds_locally(serve_instance):
    """Ray's default puts HAProxy's config and its `level admin` socket (mode 666) in the shared
    /tmp/haproxy-serve; here they are in a 0700 folder of this Serve start, and the wrapper that runs
    HAProxy from there has bound its stats and Prometheus listeners to 127.0.0.1."""
    import ray

    from serving.ingress import haproxy_binary, running_ingress

    if haproxy_binary() is None or os.environ.get("TRAINYARD_TEST_SERVE_INGRESS") == "proxy":
        pytest.skip("this session's Serve runs the Python proxy (no HAProxy binary, or "
                    "TRAINYARD_TEST_SERVE_INGRESS=proxy)")
    # `auto` falls back to the Python proxy when HAProxy does not start (as it did with a socket path over
    # HAProxy's 97 bytes): that would pass unseen without this line.
    assert running_ingress() == "haproxy", SERVE_SAID
    node = ray.get_runtime_context().get_node_id()
    configs = {argv[argv.index("-f") + 1] for argv in _processes(f"/{node}/haproxy.cfg").values() if "-f" in argv}
    assert len(configs) == 1, configs
    config = Path(configs.pop())
    private = config.parent.parent
    info = private.stat()
    assert private.name.startswith("trainyard-ha-") and info.st_uid == os.getuid()
    assert stat.S_IMODE(info.st_mode) == 0o700
    assert not Path("/tmp/haproxy-serve", node).exists()
    text = config.read_text()
    socket = private / node / "admin.sock"
    assert f"stats socket {socket} " in text and stat.S_ISSOCK(socket.stat().st_mode)
    # What HAProxy listens on (the config file itself may be mid-rewrite by a reload when read here).
    ports = {int(line.split()[1].rsplit(":", 1)[1]) for line in text.splitlines() if line.strip().startswith("bind ")}
    assert len(ports) == 3 and all(_listening(p) == {"127.0.0.1"} for p in ports), {p: _listening(p) for p in ports}
    assert (private / "haproxy-bind.sh").is_file()
    assert "timeout http-request 10s" in text          # a client has 10 s to send its request's headers


def test_a_bundle_cannot_choose_its_runtime_env_or_host(served_bundle, serve_instance, telemetry_dir, tmp_path):
    """A bundle whose spec.yaml asks for 0.0.0.0, another port and prefix, its own ingress, resources and a
    runtime_env is served with the operator's values: on 127.0.0.1, its environment variable absent from the
    replica while the operator's is there; its request limits (max_records) still apply; and the operator is
    told, in one line, what was not taken."""
    from serving import deploy
    from serving.commands import serve_settings

    host, port = serve_instance
    theirs = bundle_variant(served_bundle, tmp_path / "theirs", version="theirs-1")
    doc = yaml.safe_load((theirs / "spec.yaml").read_text())
    doc["serve"].update({"host": "0.0.0.0", "port": port + 1, "route_prefix": "/theirs", "ingress": "proxy",
                         "ray_actor_options": {"num_cpus": 0.25, "runtime_env": {"env_vars": {BUNDLE_VAR: "1"}}},
                         "max_records": 3})
    (theirs / "spec.yaml").write_text(yaml.safe_dump(doc))
    write_manifest(theirs, "theirs-1")      # their bundle, as their trainyard wrote it

    said = []
    spec = serve_settings(theirs, None, [f"port={port}", "route_prefix=/trust", "ray_actor_options.num_cpus=0.25",
                                         f"ray_actor_options.runtime_env.env_vars.{OPERATOR_VAR}=operator"],
                          progress=said.append)
    assert (spec.host, spec.port, spec.route_prefix, spec.ingress, spec.max_records) == (
        "127.0.0.1", port, "/trust", "auto", 3)
    assert len(said) == 1 and "serve.host" in said[0] and "serve.ray_actor_options.runtime_env" in said[0]
    served = deploy(theirs, spec=spec, name="trust", progress=lambda *_: None)
    try:
        assert (served.host, served.port) == (host, port) == ("127.0.0.1", port)
        status, _, body = call(served.url, "GET", "/readyz")
        assert status == 200 and body["model"]["version"] == "theirs-1"
        status, _, body = call(served.url, "POST", "/predict",
                               json.dumps({"records": records_from(telemetry_dir, 4)}).encode(),
                               {"Content-Type": "application/json"})
        assert status == 413, body
        replicas = _processes("ServeReplica:trust:model")
        assert replicas
        for pid in replicas:
            env = _environ(pid)
            assert env.get(OPERATOR_VAR) == "operator" and BUNDLE_VAR not in env, pid
    finally:
        release_app("trust")


def test_the_embedded_ray_listens_on_loopback_only(ray_session):
    """The embedded Ray keeps 127.0.0.1 as its node address, so its metrics agent (where the drift gauges are
    scraped) listens on 127.0.0.1, not on 0.0.0.0: without cluster.ray_compat.keep_loopback Ray swapped in the
    machine's outward address and the Prometheus port was open to the network."""
    from cluster import is_embedded

    if not is_embedded():
        pytest.skip("this session joined a Ray it did not start")
    node = next(n for n in ray_session.nodes() if n["Alive"])
    assert node["NodeManagerAddress"] == "127.0.0.1"
    assert _listening(node["MetricsExportPort"]) == {"127.0.0.1"}
