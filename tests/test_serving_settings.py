"""Serving's driver-side pieces, without Ray: errors and their exit codes, the app's name, the ingress choice and
its environment, where a server records itself, what replicas receive."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from cluster.errors import EXIT_BAD_INPUT, EXIT_FAILED, BadInput, Failure
from jobs.spec import ServeSpec


def test_serving_errors_derive_from_the_error_root():
    from jobs.images import InputError
    from jobs.ingest import DataError
    from serving import ClientError, ServeError
    from serving.schema import Problem, RequestError

    assert issubclass(ServeError, Failure) and ServeError("x").exit_code == EXIT_FAILED
    assert issubclass(DataError, BadInput) and issubclass(InputError, BadInput)
    err = RequestError(422, [Problem("bad", 0, "rpm")])
    assert isinstance(err, BadInput) and err.status == 422 and "record 0, field 'rpm': bad" in str(err)
    # `trainyard predict`: the server refused the rows (4xx) → 2; unreachable, a 5xx, a local file → 1
    assert ClientError("refused", 422).exit_code == EXIT_BAD_INPUT
    assert ClientError("refused", 404).exit_code == EXIT_BAD_INPUT
    assert ClientError("server error", 500).exit_code == EXIT_FAILED
    assert ClientError("cannot reach").exit_code == EXIT_FAILED
    assert issubclass(ClientError, Failure)


def test_bad_names_and_settings_are_bad_input():
    from serving.settings import ServeError, check_name, check_settings

    check_name("telemetry-v2.1")
    with pytest.raises(ServeError, match=r"--name '-x': use letters") as err:
        check_name("-x")
    assert err.value.exit_code == EXIT_BAD_INPUT
    bundle = SimpleNamespace(schema={"features": [{"name": "rpm", "type": "number"}], "task": "regression",
                                     "label": {"name": "y"}})
    check_settings(bundle, ServeSpec(required_features=["rpm"]))
    with pytest.raises(ServeError, match=r"required_features names \['rmp'\]") as err:
        check_settings(bundle, ServeSpec(required_features=["rmp"]))
    assert err.value.exit_code == EXIT_BAD_INPUT


def _bundle(folder: Path, lineage: dict, spec_yaml: str | None = None) -> SimpleNamespace:
    folder.mkdir(parents=True)
    if spec_yaml is not None:
        (folder / "spec.yaml").write_text(spec_yaml)
    return SimpleNamespace(path=folder, lineage=lineage)


def test_default_name_from_lineage_then_spec_then_folder(tmp_path):
    from serving.settings import default_name

    assert default_name(_bundle(tmp_path / "a", {"name": "from lineage"})) == "from-lineage"
    assert default_name(_bundle(tmp_path / "b", {}, "name: telemetry\n")) == "telemetry"
    assert default_name(_bundle(tmp_path / "c", {}, "name: [unclosed\n")) == "c"      # unreadable spec.yaml
    assert default_name(_bundle(tmp_path / "run" / "bundle", {})) == "run"
    assert default_name(_bundle(tmp_path / "_", {})) == "model"


def test_resolve_spec_flags_override():
    from serving.settings import resolve_spec

    assert resolve_spec(None) == ServeSpec()
    job = SimpleNamespace(serve=ServeSpec(port=9000, max_records=7))
    got = resolve_spec(job, port=0, host="0.0.0.0")
    assert (got.port, got.host, got.max_records) == (0, "0.0.0.0", 7)


def test_ingress_choice_and_environment():
    from cluster.ports import port_range
    from serving.ingress import choose_ingress, haproxy_binary, ingress_env, replica_ingress_env
    from serving.settings import ServeError

    assert choose_ingress(ServeSpec(ingress="proxy"), nodes=3) == "proxy"
    assert choose_ingress(ServeSpec(ingress="auto"), nodes=2) == "proxy"
    if haproxy_binary() is None:
        with pytest.raises(ServeError, match="needs the HAProxy binary"):
            choose_ingress(ServeSpec(ingress="haproxy"))
    else:
        with pytest.raises(ServeError, match="2-node cluster needs serve.host: 0.0.0.0"):
            choose_ingress(ServeSpec(ingress="haproxy"), nodes=2)
    spec = ServeSpec(drain_period_s=2.0)
    assert ingress_env("proxy", spec, "127.0.0.1") == {} and replica_ingress_env("proxy", spec) == {}
    env = ingress_env("haproxy", spec, "127.0.0.1")
    ports = [int(env[k]) for k in ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT",
                                   "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT", "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT")]
    assert len(set(ports)) == 4 and all(p in port_range() for p in ports)
    assert env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] == "2.0"
    wrapper = Path(env["RAY_SERVE_HAPROXY_BINARY_PATH"])
    assert wrapper.is_file() and os.access(wrapper, os.X_OK) and env["TRAINYARD_HAPROXY_BIND"] == "127.0.0.1"
    # Served on every interface: the app there, HAProxy's stats page and Prometheus listener (no token asked) on
    # loopback (a security review reached /stats from the network).
    exposed = ingress_env("haproxy", spec, "0.0.0.0")
    assert exposed["TRAINYARD_HAPROXY_BIND"] == "127.0.0.1" and "RAY_SERVE_HAPROXY_BINARY_PATH" in exposed
    config = wrapper.parent / "test.cfg"
    config.write_text("defaults\n    timeout client 3600s\nfrontend f\n    bind 0.0.0.0:8000\nlisten s\n"
                      "    bind *:8404\n    bind :9101\n")
    subprocess.run(["sh", str(wrapper), "-f", str(config)], check=True,
                   env={**os.environ, "TRAINYARD_HAPROXY_BIND": "127.0.0.1", "TRAINYARD_HAPROXY_REAL": "true"})
    subprocess.run(["sh", str(wrapper), "-f", str(config)], check=True,       # a reload: the same config again
                   env={**os.environ, "TRAINYARD_HAPROXY_BIND": "127.0.0.1", "TRAINYARD_HAPROXY_REAL": "true"})
    assert config.read_text().splitlines() == [
        "defaults", "    option http-buffer-request", "    timeout client 3600s", "    timeout http-request 10s",
        "frontend f", "    bind 0.0.0.0:8000",
        "listen s", "    bind 127.0.0.1:8404", "    bind 127.0.0.1:9101"]
    for folder in (wrapper.parent, Path(exposed["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"])):
        shutil.rmtree(folder)


def test_haproxy_files_go_to_a_fresh_private_folder_per_start(tmp_path, monkeypatch):
    """Another local user must not be able to plant the script that runs as HAProxy, nor reach the admin
    socket: a script waiting at the old shared path (trainyard-<uid>, made by someone else) is never used, and
    each start gets its own 0700 folder for the wrapper, config, state and sockets."""
    import tempfile

    from serving.ingress import _WRAPPER, ingress_env

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    planted = tmp_path / f"trainyard-{os.getuid()}"
    planted.mkdir(mode=0o777)
    script = planted / f"haproxy-bind-{hashlib.sha256(_WRAPPER.encode()).hexdigest()[:12]}.sh"
    script.write_text("#!/bin/sh\ntouch /tmp/owned\n")
    script.chmod(0o777)
    if os.getuid() == 0:
        os.chown(planted, 65534, 65534)
        os.chown(script, 65534, 65534)
    envs = [ingress_env("haproxy", ServeSpec(), "127.0.0.1") for _ in range(2)]
    wrappers = [Path(env["RAY_SERVE_HAPROXY_BINARY_PATH"]) for env in envs]
    folders = [wrapper.parent for wrapper in wrappers]
    try:
        assert script not in wrappers and folders[0] != folders[1]
        for env, wrapper, folder in zip(envs, wrappers, folders):
            assert wrapper.read_text() == _WRAPPER and stat.S_IMODE(wrapper.stat().st_mode) == 0o700
            info = folder.stat()
            assert info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) == 0o700, folder
            assert folder.name.startswith("trainyard-ha-")
            for key in ("RAY_SERVE_HAPROXY_CONFIG_FILE_LOC", "RAY_SERVE_HAPROXY_SOCKET_PATH",
                        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE", "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH"):
                assert Path(env[key]).parent == folder, key
    finally:
        for folder in folders:
            if folder != planted:
                shutil.rmtree(folder)


def test_stale_haproxy_folders_are_removed_and_no_others(tmp_path):
    """A `serve` killed with SIGKILL (or for memory) never ran its exit handlers: its private folder stayed, and
    they gathered (116 on one host). A start removes this user's folders whose maker (a `serve` on its embedded
    Ray) has ended, that no HAProxy runs from and that are old; a folder in use, a new one, a joined cluster's,
    another user's and a link are kept."""
    from cluster.processes import load_psutil
    from serving.ingress import _started, remove_stale_folders

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    old = time.time() - 3600

    def folder(name, owner=None, fresh=False, kind="embedded"):
        path = tmp_path / f"trainyard-ha-{name}"
        path.mkdir(mode=0o700)
        (path / "haproxy.cfg").write_text("global\n")
        if owner is not None:
            started = _started(owner) if owner == os.getpid() else 1.0
            (path / "owner").write_text(f"{owner} {started} {kind}\n")
        os.utime(path, (time.time(), time.time()) if fresh else (older_than_a_day if owner is None else old,) * 2)
        return path

    older_than_a_day = time.time() - 2 * 86400
    killed, older = folder("killed", owner=gone.pid), folder("older")        # no owner record: an older trainyard's
    live_owner, in_use = folder("live", owner=os.getpid()), folder("inuse", owner=gone.pid)
    fresh = folder("fresh", owner=gone.pid, fresh=True)
    joined = folder("joined", owner=gone.pid, kind="joined")       # a joined cluster's Serve outlives its `serve`
    hour_old = folder("hour-old")
    os.utime(hour_old, (old, old))            # no owner record, but less than a day old
    target = tmp_path / "elsewhere"
    target.mkdir()
    link = tmp_path / "trainyard-ha-link"
    link.symlink_to(target)
    os.utime(link, (old, old), follow_symlinks=False)
    others = None
    if os.getuid() == 0:
        others = folder("others")
        os.chown(others, 65534, 65534)
    haproxy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "-f",
                                str(in_use / "haproxy.cfg")])
    try:
        deadline = time.monotonic() + 10
        while "-f" not in load_psutil().Process(haproxy.pid).cmdline() and time.monotonic() < deadline:
            time.sleep(0.05)      # until the new process shows its arguments (before exec it shows the parent's)
        assert remove_stale_folders(tmp_path) == 2
    finally:
        haproxy.kill()
        haproxy.wait()
    assert not killed.exists() and not older.exists()
    assert live_owner.exists() and in_use.exists() and fresh.exists() and link.is_symlink() and target.exists()
    assert joined.exists() and hour_old.exists()
    assert others is None or others.exists()
    assert remove_stale_folders(tmp_path) == 1 and not in_use.exists()      # its HAProxy has ended


def test_a_temp_dir_that_does_not_keep_folders_private_is_refused(monkeypatch):
    """A file system that ignores owners (some shared mounts) would leave the admin socket open: seen here
    as a new folder that is not ours."""
    import tempfile

    from serving.ingress import ingress_env
    from serving.settings import ServeError

    made, real_mkdtemp = [], tempfile.mkdtemp

    def mkdtemp(**kwargs):
        made.append(real_mkdtemp(**kwargs))
        return made[-1]

    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
    uid = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: uid + 1)
    with pytest.raises(ServeError, match=r"does not keep a folder private .* owner uid .* serve.ingress: proxy"):
        ingress_env("haproxy", ServeSpec(), "127.0.0.1")
    assert made and not Path(made[0]).exists()


def _spec_yaml(folder: Path, serve: object) -> Path:
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spec.yaml").write_text(yaml.safe_dump({"name": "theirs", "serve": serve}))
    return folder


def test_a_spec_given_to_serve_overrides_only_what_its_serve_section_sets(tmp_path):
    """`serve BUNDLE --spec SPEC` replaced the bundle's required features, max_records and unknown_fields with
    the spec's defaults without a word; the order is the bundle's, then what --spec sets, then --set."""
    from serving.commands import serve_settings

    bundle = _spec_yaml(tmp_path / "b", {"required_features": ["rpm"], "max_records": 5, "unknown_fields": "ignore",
                                         "batch": {"max_size": 8, "wait_ms": 1.0}})
    ops = tmp_path / "ops.yaml"
    ops.write_text("name: ops\ndata: {path: d, label: y}\nserve:\n  autoscaling: {max_replicas: 3}\n"
                   "  batch: {wait_ms: 4.0}\n")
    spec = serve_settings(bundle, str(ops), ["max_records=7"], progress=lambda *_: None)
    assert spec.required_features == ["rpm"] and spec.unknown_fields == "ignore" and spec.max_records == 7
    assert spec.autoscaling.max_replicas == 3 and (spec.batch.max_size, spec.batch.wait_ms) == (8, 4.0)
    assert serve_settings(bundle, None, [], progress=lambda *_: None).max_records == 5
    # A file of serve settings alone, as an on-call engineer holds them ("name: required but missing ... data:
    # required but missing"); its mistakes are named as a spec's are.
    (tmp_path / "serve.yaml").write_text("serve:\n  autoscaling: {max_replicas: 3}\n  batch: {wait_ms: 4.0}\n")
    alone = serve_settings(bundle, str(tmp_path / "serve.yaml"), ["max_records=7"], progress=lambda *_: None)
    assert alone.model_dump() == spec.model_dump()
    (tmp_path / "serve.yaml").write_text("serve:\n  max_record: 3\n")
    from jobs.spec import SpecError
    with pytest.raises(SpecError, match=r"serve.yaml: serve.max_record: unknown key. Fix: did you mean 'max_records'"):
        serve_settings(bundle, str(tmp_path / "serve.yaml"), [], progress=lambda *_: None)


def test_the_not_taken_line_names_only_what_is_served_otherwise_than_the_bundle_says(tmp_path):
    """`serve BUNDLE --spec SPEC`, with the spec the bundle was trained from, was told its serve.log was not
    taken, though the served log is the same; an operator's env var in place of the bundle's runtime_env must
    still be named (the bundle's env var is not set)."""
    import yaml

    from serving.commands import serve_settings

    trained = {"log": {"path": "logs/p", "sample": 0.5}, "host": "0.0.0.0",
               "ray_actor_options": {"runtime_env": {"env_vars": {"A": "1"}}}}
    bundle = _spec_yaml(tmp_path / "b", ServeSpec.model_validate(trained).model_dump(mode="json"))
    (tmp_path / "job.yaml").write_text(yaml.safe_dump({"name": "job", "data": {"path": "d", "label": "y"},
                                                       "serve": trained}))

    def said(*args) -> str:
        lines = []
        serve_settings(bundle, *args, progress=lines.append)
        return "".join(lines)

    assert said(None, []).endswith("serve.host, serve.log, serve.ray_actor_options.runtime_env; if you want "
                                   "them, set them yourself (--host, --port, --spec SPEC or --set FIELD=VALUE)")
    assert said(str(tmp_path / "job.yaml"), []) == ""        # the same settings, given by the operator
    # Given in part: the bundle's sample is not served, nor its env var beside the operator's own.
    line = said(None, ["log.path=logs/p", "ray_actor_options.runtime_env.env_vars.B=2", "host=0.0.0.0"])
    assert ": serve.log, serve.ray_actor_options.runtime_env; " in line, line


def test_a_bundle_sets_only_batching_limits_and_required_features(tmp_path):
    """What runs (runtime_env, ingress), where it listens (host, port, route_prefix) and how much of the cluster
    it takes are not taken from a bundle; the line for the operator names each one, and only those."""
    from jobs.spec import SpecError
    from serving.settings import bundle_serve_section, not_taken_line

    def bundle_serve_settings(folder):
        kept, ignored = bundle_serve_section(folder)
        return kept, not_taken_line(list(ignored))

    serve = {**ServeSpec().model_dump(mode="json"),     # every bundle's spec.yaml lists all the defaults
             "host": "0.0.0.0", "port": 80, "route_prefix": "/x", "ingress": "proxy", "access_log": True,
             "ray_actor_options": {"num_cpus": 0.5, "num_gpus": 1,
                                   "runtime_env": {"pip": ["evil"], "working_dir": "s3://x/y.zip",
                                                   "env_vars": {"A": "1"}}},
             "autoscaling": {**ServeSpec().autoscaling.model_dump(), "max_replicas": 64},
             "batch": {"max_size": 8, "wait_ms": 1.0}, "max_records": 5, "required_features": "all",
             "unknown_fields": "ignore", "max_body_mb": 1.0, "max_ongoing_requests": 16, "mystery": 1}
    kept, line = bundle_serve_settings(_spec_yaml(tmp_path / "b", serve))
    assert kept == {k: serve[k] for k in ServeSpec.FROM_BUNDLE}
    named = line.split("(limits no higher than their defaults): ", 1)[1].split("; ")[0].split(", ")
    assert sorted(named) == ["serve.access_log", "serve.autoscaling.max_replicas", "serve.host", "serve.ingress",
                             "serve.mystery", "serve.port", "serve.ray_actor_options.num_gpus",
                             "serve.ray_actor_options.runtime_env", "serve.route_prefix"]
    assert line.startswith("[serve] not taken from the bundle's spec.yaml") and "--set FIELD=VALUE" in line
    assert "\n" not in line
    # A bundle that only repeats the defaults (as `trainyard run` writes them) is not reported.
    assert bundle_serve_settings(_spec_yaml(tmp_path / "d", ServeSpec().model_dump(mode="json")))[1] is None
    assert bundle_serve_settings(tmp_path / "no-spec") == ({}, None)
    with pytest.raises(SpecError, match=r"spec.yaml: serve: expected a mapping of settings, got \[1\]"):
        bundle_serve_settings(_spec_yaml(tmp_path / "bad", [1]))
    assert set(ServeSpec.FROM_BUNDLE) <= set(ServeSpec.model_fields)
    # A bundle from elsewhere may lower the request limits, not raise them (a security review's bundle set
    # max_records 100,000,000 and max_body_mb 100,000, and served without a word): the raised ones are named.
    raised = {**ServeSpec().model_dump(mode="json"), "max_records": 10**8, "max_body_mb": 1e5,
              "max_ongoing_requests": 10**5, "batch": {"max_size": 10**6, "wait_ms": 1.0}, "unknown_fields": "ignore"}
    kept, line = bundle_serve_settings(_spec_yaml(tmp_path / "raised", raised))
    assert kept == {"batch": {"wait_ms": 1.0}, "required_features": [], "unknown_fields": "ignore"}, kept
    assert sorted(line.split("defaults): ", 1)[1].split("; ")[0].split(", ")) == [
        "serve.batch.max_size", "serve.max_body_mb", "serve.max_ongoing_requests", "serve.max_records"]


def test_a_taken_port_is_named():
    import socket

    from serving.ingress import check_port_free
    from serving.settings import ServeError

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ServeError, match=rf"cannot listen on 127.0.0.1:{port}: .*pass --port") as err:
            check_port_free("127.0.0.1", port)
        assert err.value.exit_code == EXIT_BAD_INPUT


def test_serve_on_a_taken_port_is_refused_before_ray_starts(tmp_path):
    """It was refused after the embedded Ray had started (5 s), exit 1; the fix is the --port given."""
    import socket

    from tests.test_bundle_write import _write

    bundle = _write(tmp_path / "out" / "bundle")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["TRAINYARD_STATE_DIR"] = str(tmp_path / "state")        # no trainyard server recorded on any port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        run = subprocess.run([sys.executable, "-m", "trainyard", "serve", str(bundle), "--port", str(port),
                              "--no-token"], capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == EXIT_BAD_INPUT, run.stdout + run.stderr
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in run.stderr, run.stderr
    assert "If a `trainyard serve` started in another folder holds it, run this command there" in run.stderr
    assert "[ray]" not in run.stdout + run.stderr


def test_server_state_lives_in_the_state_dir(tmp_path, monkeypatch):
    from cluster.processes import own_identity
    from serving.forever import read_server_state, state_file

    monkeypatch.setenv("TRAINYARD_STATE_DIR", str(tmp_path / "state"))
    assert state_file(8123) == (tmp_path / "state" / "serve-8123.json").resolve()
    assert read_server_state(8123) is None
    state_file(8123).parent.mkdir()
    me = own_identity()
    state_file(8123).write_text(json.dumps({**me, "address": "127.0.0.1:6379"}))
    assert read_server_state(8123)["pid"] == os.getpid()
    # A record whose process has exited and whose pid another process has now is not that process's: a stale
    # record of a SIGKILLed server must not send the next `trainyard serve` to a Ray that has gone.
    for reused in ({**me, "start_ticks": (me["start_ticks"] or 0) + 1, "started": me["started"] + 3600},
                   {"pid": os.getpid(), "address": "127.0.0.1:6379"}):          # a record without its start
        state_file(8123).write_text(json.dumps(reused))
        assert read_server_state(8123) is None


def test_the_server_of_an_app_is_the_owner_listing_it_or_the_guest_that_recorded_it(tmp_path, monkeypatch):
    """An update of app N from another shell returns when a live trainyard process already serves N on the port:
    the port's owner (its record lists its apps) or a guest (a record of its own); a dead one's record is not."""
    from cluster.processes import own_identity
    from serving.forever import guest_file, server_of, serving_process, state_file

    monkeypatch.setenv("TRAINYARD_STATE_DIR", str(tmp_path / "state"))
    me = own_identity()
    alive, dead = me["pid"], subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    state_file(8123).parent.mkdir()
    state_file(8123).write_text(json.dumps({**me, "address": "127.0.0.1:6379", "apps": ["a"]}))
    assert server_of(8123, "a")["pid"] == alive and server_of(8123, "b") is None
    guest_file(8123, "b").parent.mkdir()
    guest_file(8123, "b").write_text(json.dumps({**me, "address": "127.0.0.1:6379", "apps": ["b"]}))
    assert server_of(8123, "b")["apps"] == ["b"] and server_of(8123, "c") is None
    guest_file(8123, "b").write_text(json.dumps({"pid": dead.pid, "address": "127.0.0.1:6379", "apps": ["b"]}))
    assert server_of(8123, "b") is None
    assert guest_file(8123, "b") == (tmp_path / "state" / "serve-8123-guests" / "b.json").resolve()

    # A new `trainyard serve --port 8123` joins the owner's Ray; with the owner gone, the guest's for its own app.
    assert serving_process(8123, None)["pid"] == alive == serving_process(8123, "x")["pid"]
    state_file(8123).write_text(json.dumps({"pid": dead.pid, "address": "127.0.0.1:6379", "apps": ["a"]}))
    guest_file(8123, "b").write_text(json.dumps({**me, "address": "10.0.0.5:6379", "apps": ["b"]}))
    assert serving_process(8123, "b")["address"] == "10.0.0.5:6379"
    assert serving_process(8123, "a") is None and serving_process(8123, None) is None


def test_a_server_is_the_guest_only_of_another_process_whose_embedded_ray_it_joined():
    """`trainyard serve` on the port of another: it stops with that process only when it runs on that process's
    own (embedded) Ray; a cluster's Ray outlives the process that served first."""
    from serving.forever import host_of

    other = {"pid": os.getppid(), "address": "127.0.0.1:6379", "embedded": True, "apps": ["a"]}
    assert host_of(other, "127.0.0.1:6379") is other
    assert host_of({**other, "embedded": False}, "127.0.0.1:6379") is None      # a cluster's Ray
    older = {k: v for k, v in other.items() if k != "embedded"}                  # a record from before the key
    assert host_of(older, "127.0.0.1:6379") is older
    assert host_of(other, "10.0.0.5:6379") is None                              # another Ray
    assert host_of({**other, "pid": os.getpid()}, "127.0.0.1:6379") is None     # this process owns the port
    assert host_of(None, "127.0.0.1:6379") is None


def test_a_guest_sees_its_host_gone_without_calling_into_its_ray():
    """A SIGKILLed host takes its Ray with it at once; a call into that Ray would wait a minute. So the guest
    looks at the host's process and its Ray's GCS port first, then at the host's apps in Serve's answer."""
    import socket

    from cluster.ports import free_ports
    from cluster.processes import identity
    from serving.forever import _deleting_its_apps, _host_gone

    started, ticks, _ = identity(os.getppid())
    with socket.socket() as gcs:
        gcs.bind(("127.0.0.1", 0))
        gcs.listen()
        alive = {"pid": os.getppid(), "started": started, "start_ticks": ticks,
                 "address": f"127.0.0.1:{gcs.getsockname()[1]}", "apps": ["a", "b"]}
        assert not _host_gone(alive)
        child = subprocess.Popen([sys.executable, "-c", "pass"])
        child.wait()
        assert _host_gone({**alive, "pid": child.pid})                              # the process is gone
        assert _host_gone({**alive, "start_ticks": (ticks or 0) + 1, "started": started + 3600})  # its pid reused
    closed = free_ports(1)[0]
    assert _host_gone({**alive, "address": f"127.0.0.1:{closed}"})                  # its Ray is gone
    assert not _deleting_its_apps(alive, {"a": "RUNNING", "b": "DELETING", "guest": "RUNNING"})
    assert _deleting_its_apps(alive, {"b": "DELETING", "guest": "RUNNING"})         # all gone or on their way
    assert not _deleting_its_apps({**alive, "apps": []}, {})                         # a record without apps


def test_a_server_sees_rays_gcs_or_raylet_gone_by_its_port(monkeypatch):
    """A killed raylet leaves a driver's calls waiting for ever: `serve_forever` looks at the ports first. A port
    that refuses is gone at once; one that does not answer (a lost packet to a remote GCS) only three times in a
    row."""
    import socket

    import serving.forever as forever
    from cluster.ports import free_ports

    closed = f"127.0.0.1:{free_ports(1)[0]}"
    with socket.socket() as gcs, socket.socket() as raylet:
        for s in (gcs, raylet):
            s.bind(("127.0.0.1", 0))
            s.listen()
        both = {"GCS": f"127.0.0.1:{gcs.getsockname()[1]}", "raylet": f"127.0.0.1:{raylet.getsockname()[1]}"}
        assert forever.RayLifelines(both).first_gone() is None
        assert forever.RayLifelines({**both, "raylet": closed}).first_gone() == f"raylet ({closed})"
        assert forever.RayLifelines({**both, "GCS": closed}).first_gone() == f"GCS ({closed})"
        assert forever.RayLifelines({"GCS": f"[::1]:{free_ports(1, '::1')[0]}"}).first_gone().startswith("GCS")
    assert forever.RayLifelines({}).first_gone() is None

    answers = iter([TimeoutError("timed out")] * 2 + [None] + [TimeoutError("timed out")] * 3)
    monkeypatch.setattr(forever, "connect_error", lambda *_a, **_k: next(answers))
    silent = forever.RayLifelines({"GCS": "192.0.2.1:6379"})
    assert [silent.first_gone() for _ in range(6)] == [None] * 5 + ["GCS (192.0.2.1:6379)"]


def test_what_replicas_receive(tmp_path, monkeypatch):
    import serving.app as app
    import serving.payload as payload

    (tmp_path / "model.json").write_text("{}")
    (tmp_path / "schema.json").write_text("{}")
    (tmp_path / "lineage.json").write_text('{"version": "v7"}')
    files = {"lineage.json": b'{"version": "v7"}', "model.json": b"{}", "schema.json": b"{}"}
    assert payload.bundle_payload(tmp_path) == {"files": files, "from": str(tmp_path.resolve())}
    # A link put in by hand is none of the bundle's files: its target's bytes (/etc/passwd) were shipped too.
    (tmp_path.parent / "secret.txt").write_text("not the bundle's")
    (tmp_path / "notes.txt").symlink_to(tmp_path.parent / "secret.txt")
    assert payload.bundle_payload(tmp_path) == {"files": files, "from": str(tmp_path.resolve())}
    monkeypatch.setattr(payload, "MAX_INLINE_BUNDLE_BYTES", 1)
    assert payload.bundle_payload(tmp_path) == {"path": str(tmp_path.resolve())}
    # Fetched from object storage: the URI, which replicas on other nodes (other pods) can fetch, not the copy
    # on this node; pinned to the version checked here.
    assert payload.bundle_payload(tmp_path, source="s3://b/runs/x") == {"path": "s3://b/runs/x", "version": "v7"}
    assert payload.bundle_payload(tmp_path, source=str(tmp_path)) == {"path": str(tmp_path.resolve())}
    settings = app.replica_settings("m", ServeSpec(max_records=9), "s3cret")
    assert settings["token_sha256"] == hashlib.sha256(b"s3cret").hexdigest() and "s3cret" not in json.dumps(settings)
    assert settings["serve"]["max_records"] == 9
    assert app.replica_settings("m", ServeSpec(), None)["token_sha256"] is None


def test_at_exit_an_embedded_serve_stops_the_haproxy_that_runs_from_its_private_folder(tmp_path):
    """Ray's HAProxy manager can die without stopping its HAProxy (its raylet killed): the Serve start's private
    folder names what is ours, and nothing else is touched (a folder whose name only begins the same)."""
    from serving.ingress import stop_haproxy_of

    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    ours = subprocess.Popen([*sleeper, "-f", str(tmp_path / "ha" / "haproxy.cfg")])
    others = [subprocess.Popen([*sleeper, "-f", str(tmp_path / "ha-other" / "haproxy.cfg")]),   # a sibling folder
              subprocess.Popen([*sleeper, str(tmp_path / "ha" / "haproxy.cfg")])]             # reads it (less, tail)
    try:
        assert stop_haproxy_of(tmp_path / "ha", owner_pid=os.getpid() + 1) == []      # not the process it was for
        assert stop_haproxy_of(tmp_path / "ha", owner_pid=os.getpid()) == [ours.pid]
        assert ours.wait(timeout=10) == -9 and all(other.poll() is None for other in others)
    finally:
        for process in (ours, *others):
            process.kill()
            process.wait(timeout=10)


def test_predicts_rows_file_and_out_are_checked_before_any_request(tmp_path, capsys):
    """A CSV line with a trailing comma made pandas take the first column for the index: every value shifted
    one column left, exit 0. A bad --out failed only after every prediction was made (a folder: a traceback), an
    existing one was overwritten, and a rows file that could not be read exited 1, not 2."""
    from serving.tables import TableError, check_out, read_table
    from trainyard.cli import build_parser, main

    (tmp_path / "rows.csv").write_text("a,b,c\n1,2,3,\n4,5,6,\n")
    rows = read_table(tmp_path / "rows.csv")
    assert rows[["a", "b", "c"]].to_dict("records") == [{"a": 1, "b": 2, "c": 3}, {"a": 4, "b": 5, "c": 6}]

    (tmp_path / "old.csv").write_text("mine")
    (tmp_path / "dir.csv").mkdir()
    for out, message in ((tmp_path / "p.txt", "unsupported file type '.txt'"), (tmp_path / "dir.csv", "is a folder"),
                         (tmp_path / "old.csv", "already exists; give another name, or add --overwrite")):
        with pytest.raises(TableError, match=message):
            check_out(out, overwrite=False)
        # Through the command: refused before the (unreachable) server is asked anything, exit 2.
        assert main(["predict", "--url", "http://127.0.0.1:9", str(tmp_path / "rows.csv"), "--out", str(out)]) == 2
        assert message.split(";")[0] in capsys.readouterr().err
    assert (tmp_path / "old.csv").read_text() == "mine"
    assert check_out(tmp_path / "old.csv", overwrite=True) == tmp_path / "old.csv"
    assert main(["predict", "--url", "http://127.0.0.1:9", str(tmp_path / "rows.jsonx")]) == 2

    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["predict", "f.csv", "--url", "u", "--batch-size", "-5"])
    assert exit_.value.code == 2 and "expected a whole number above 0, got '-5'" in capsys.readouterr().err


def test_a_jsonl_rows_file_that_cannot_be_read_names_its_line(tmp_path):
    """pandas says only "Expected object or value" of a broken .jsonl line; the line is named, and a line that
    is JSON but not one object too. Blank lines are skipped, as pandas does."""
    from serving.tables import TableError, read_table

    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"a": 1}\n\n{"a": 2}\n')
    assert read_table(rows)["a"].tolist() == [1, 2]
    rows.write_text('{"a": 1}\n{"a": 2}\n{"a": \n{"a": 4}\n')
    with pytest.raises(TableError, match=r"rows.jsonl: cannot read it as jsonl: line 3, column 6: not valid JSON "
                                         r"\(Expecting value\): '\{\"a\":'"):
        read_table(rows)
    rows.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(TableError, match=r"line 2: a JSON list, where each line must be one object"):
        read_table(rows)


def test_predict_reads_a_folder_of_parquet_shards_and_names_a_semicolon_csv(tmp_path, monkeypatch):
    """`trainyard predict` said "unsupported file type ''" of the Parquet folder `train` had read, and of a ';' CSV
    that none of its columns ('id;rpm;...') is a feature, where `train` names the separator."""
    import pandas as pd

    from serving.client import check_columns
    from serving.tables import TableError, numbers_read_as_text, read_table

    (tmp_path / "shards").mkdir()
    pd.DataFrame({"rpm": [1, 2]}).to_parquet(tmp_path / "shards" / "part-0.parquet")
    pd.DataFrame({"rpm": [3]}).to_parquet(tmp_path / "shards" / "part-1.parquet")
    assert read_table(tmp_path / "shards")["rpm"].tolist() == [1, 2, 3]
    # A copy of a shard beside it: its rows were read twice (evaluate's counts doubled, unsaid); refused, named.
    import shutil
    (tmp_path / "shards" / "more").mkdir()
    shutil.copy(tmp_path / "shards" / "part-1.parquet", tmp_path / "shards" / "more" / "part-1 copy.parquet")
    with pytest.raises(TableError, match=r"shards: more/part-1 copy.parquet and part-1.parquet hold the same bytes, "
                                         r"so their rows would be read twice; remove the copy"):
        read_table(tmp_path / "shards")
    monkeypatch.chdir(tmp_path)         # a folder given relative to here (the listing's paths are absolute)
    with pytest.raises(TableError, match=r"^shards: more/part-1 copy.parquet and part-1.parquet hold the same bytes"):
        read_table("shards")
    (tmp_path / "shards" / "more" / "part-1 copy.parquet").unlink()
    # Two empty shards (a header alone, an export's empty partitions) are alike and add nothing: read.
    (tmp_path / "headers").mkdir()
    for name, rows in (("a.csv", "rpm\n"), ("b.csv", "rpm\n"), ("c.csv", "rpm\n1\n")):
        (tmp_path / "headers" / name).write_text(rows)
    assert read_table(tmp_path / "headers")["rpm"].tolist() == [1]
    (tmp_path / "empty").mkdir()
    with pytest.raises(TableError, match=r"empty: a folder with no .parquet or .csv file"):
        read_table(tmp_path / "empty")
    # A compressed shard beside a plain one: named, as `train` names it (it read the plain one alone, unsaid).
    (tmp_path / "packed").mkdir()
    pd.DataFrame({"rpm": [1]}).to_csv(tmp_path / "packed" / "part-0.csv", index=False)
    pd.DataFrame({"rpm": [2]}).to_csv(tmp_path / "packed" / "part-1.csv.gz", index=False)
    for path in (tmp_path / "packed", tmp_path / "packed" / "part-1.csv.gz"):
        with pytest.raises(TableError, match=r"packed.*: holds 1 compressed file\(s\) \(\S*part-1.csv.gz\), which "
                                             r"trainyard does not read: decompress them"):
            read_table(path)
    # Monthly CSV exports, as train reads them; a stray cell is named by its file and line.
    (tmp_path / "months").mkdir()
    (tmp_path / "months" / "2024-11.csv").write_text("rpm,torque\n1500,40\n1510,41\n")
    (tmp_path / "months" / "2024-12.csv").write_text("rpm,torque\n1490,39\n?,38\n")
    (tmp_path / "months" / "._2024-11.csv").write_bytes(b"\x00\x05\x16\x07\xff")   # macOS's, beside it: left out
    months = read_table(tmp_path / "months")
    assert months["torque"].tolist() == [40, 41, 39, 38]
    with pytest.raises(TableError, match=r"column 'rpm' must hold numbers; 1 cell\(s\) do not \(\S*2024-12.csv line "
                                         r"3: '\?'\)"):
        numbers_read_as_text(months, [{"name": "rpm", "type": "number"}])
    (tmp_path / "months" / "2025-01.csv").write_text("rpm\n1500\n")
    with pytest.raises(TableError, match=r"2025-01.csv: its columns differ from 2024-11.csv's \(lacks 'torque'\)"):
        read_table(tmp_path / "months")
    # `trainyard predict`: shards may differ in a column no request carries (a month's operator note), and the
    # Parquet shards that lack a feature are refused as the CSV ones are (their rows were imputed, unsaid).
    from serving.client import read_rows

    class Server:                                   # what `Client.sent_columns` gives, from GET /schema
        def sent_columns(self):
            return {"rpm", "torque"}
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.csv").write_text("rpm,torque\n1500,40\n")
    (tmp_path / "notes" / "b.csv").write_text("rpm,torque,operator_note\n1490,39,oil changed\n")
    assert read_rows(tmp_path / "notes", Server())["operator_note"].tolist()[1] == "oil changed"
    # A shard that renamed a feature: said whole ("adds 'Torque'" was left out by the read of the sent columns).
    (tmp_path / "renamed").mkdir()
    (tmp_path / "renamed" / "a.csv").write_text("rpm,torque\n1500,40\n")
    (tmp_path / "renamed" / "b.csv").write_text("rpm,Torque\n1490,39\n")
    with pytest.raises(TableError, match=r"b.csv: its columns differ from a.csv's \(lacks 'torque'; adds 'Torque'\)"):
        read_rows(tmp_path / "renamed", Server())

    class Unreachable:                              # a file read whole asks no server (its problems come first)
        def sent_columns(self):
            raise AssertionError("asked the server")
    assert len(read_rows(tmp_path / "notes" / "a.csv", Unreachable())) == 1
    (tmp_path / "agree").mkdir()
    for name, rpm in (("a.csv", 1500), ("b.csv", 1600)):
        (tmp_path / "agree" / name).write_text(f"rpm,torque\n{rpm},40\n")
    assert len(read_rows(tmp_path / "agree", Unreachable())) == 2
    with pytest.raises(TableError, match=r"2025-01.csv: its columns differ from 2024-11.csv's \(lacks 'torque'\)"):
        read_rows(tmp_path / "months", Server())
    pd.DataFrame({"rpm": [1], "torque": [2.0]}).to_parquet(tmp_path / "shards" / "part-2.parquet")
    assert len(read_table(tmp_path / "shards")) == 4        # as before without the columns a request carries
    with pytest.raises(TableError, match=r"part-2.parquet: its columns differ from part-0.parquet's \(adds 'torque'"):
        read_table(tmp_path / "shards", sent={"rpm", "torque"})
    with pytest.raises(TableError, match=r"part-2.parquet: its columns differ from part-0.parquet's \(adds 'torque'"):
        read_rows(tmp_path / "shards", Server())
    pd.DataFrame({"rpm": [1], "note": ["x"]}).to_parquet(tmp_path / "shards" / "part-2.parquet")
    assert len(read_rows(tmp_path / "shards", Server())) == 4      # a column no request carries: read
    # A folder's table written whole (pandas keeps its attrs in the file): read alone, not against the shards.
    read_table(tmp_path / "shards").to_parquet(tmp_path / "whole.parquet")
    pd.DataFrame({"rpm": [1], "torque": [2.0]}).to_parquet(tmp_path / "shards" / "part-2.parquet")
    assert len(read_rows(tmp_path / "whole.parquet", Server())) == 4
    (tmp_path / "months" / "2025-01.parquet").write_bytes((tmp_path / "shards" / "part-0.parquet").read_bytes())
    with pytest.raises(TableError, match=r"holds .parquet and .csv files"):
        read_table(tmp_path / "months")
    (tmp_path / "rows.csv").write_text("id;rpm;torque\nA;1500;40\n")
    with pytest.raises(TableError, match=r"the file reads as a single column named 'id;rpm;torque': its fields are "
                                         r"separated by ';'.*pd.read_csv\(path, sep=';', decimal=','\)"):
        check_columns(["id;rpm;torque"], ["rpm", "torque"])
    # read_table refuses it first, as train does (pandas said "Error tokenizing data" of a row with a ',' in it),
    # and the advice writes a new file, not over the export.
    (tmp_path / "rows.csv").write_text("id;rpm;torque\nA;1500,5;40\n")
    with pytest.raises(TableError, match=r"to_csv\('clean.csv', index=False\), and give that file") as err:
        read_table(tmp_path / "rows.csv")
    assert str(err.value).startswith(f"{tmp_path / 'rows.csv'}: its fields are separated by ';' (its header: "
                                     "'id;rpm;torque')"), err.value


def test_a_rows_files_numbers_read_as_text_go_as_numbers_and_a_stray_cell_is_named(tmp_path):
    """One '?' made pandas read a whole CSV column as text: the server then refused every row ("send it as a JSON
    number"). The numbers now go as numbers; the cell that is not one is named with its row."""
    import pandas as pd

    from serving.tables import numbers_read_as_text
    from serving.tables import TableError

    features = [{"name": "a", "type": "number"}, {"name": "kind", "type": "category"}]
    df = pd.DataFrame({"a": ["0.5", " 2 ", "", None], "kind": ["x", "y", "x", "7"]})
    sent = numbers_read_as_text(df, features)
    assert sent["a"].tolist()[:2] == [0.5, 2.0] and sent["a"].isna().tolist()[2:] == [True, True]
    assert sent["kind"].tolist() == ["x", "y", "x", "7"]            # categories stay as they are
    with pytest.raises(TableError, match=r"column 'a' must hold numbers; 1 cell\(s\) do not \(row 3: '\?'\)"):
        numbers_read_as_text(pd.DataFrame({"a": ["1", "2", "?"]}), features)
    # Read from a CSV, the cell is named by its line, as `train` names one (it said "row 3" of line 4).
    from serving.tables import read_table
    (tmp_path / "rows.csv").write_text("a,kind\n1,x\n2,y\n?,x\n")
    with pytest.raises(TableError, match=r"1 cell\(s\) do not \(line 4: '\?'\)"):
        numbers_read_as_text(read_table(tmp_path / "rows.csv"), features)
    # A quoted note with line breaks above it, and a blank line: the line an editor shows (it said line 4).
    (tmp_path / "notes.csv").write_text('a,kind,note\n1,x,"first\nsecond\nthird"\n\n2,y,ok\nforty,x,ok\n')
    with pytest.raises(TableError, match=r"1 cell\(s\) do not \(line 7: 'forty'\)"):
        numbers_read_as_text(read_table(tmp_path / "notes.csv"), features)
    # A folder of Parquet shards: the file and its row ("row 1501" was counted over the folder, naming no file).
    (tmp_path / "months").mkdir()
    pd.DataFrame({"a": [1.0, 2.0], "kind": ["x", "y"]}).to_parquet(tmp_path / "months" / "01.parquet")
    pd.DataFrame({"a": ["3", "n/a", "4"], "kind": ["x"] * 3}).to_parquet(tmp_path / "months" / "02.parquet")
    with pytest.raises(TableError, match=r"1 cell\(s\) do not \(.*months/02.parquet row 2: 'n/a'\)"):
        numbers_read_as_text(read_table(tmp_path / "months"), features)
    whole = read_table(tmp_path / "months")         # written whole, its shards' rows are one file's rows
    whole.astype({"a": str}).to_parquet(tmp_path / "whole.parquet")
    with pytest.raises(TableError, match=r"1 cell\(s\) do not \(row 4: 'n/a'\)"):
        numbers_read_as_text(read_table(tmp_path / "whole.parquet"), features)
    # Every such column at once (it named one a run).
    two = [*features, {"name": "b", "type": "number"}]
    with pytest.raises(TableError, match=r"^column 'a' must hold numbers; 1 cell\(s\) do not \(row 2: 'x'\); column "
                                         r"'b' must hold numbers; 1 cell\(s\) do not \(row 1: '\$5'\) \(a currency sign: "
                                         r".*\)\. Fix them"):
        numbers_read_as_text(pd.DataFrame({"a": ["1", "x"], "b": ["$5", "6"]}), two)


def test_serve_checks_the_bundle_before_it_starts_or_joins_ray(tmp_path):
    """A bundle folder that is missing or not a bundle is bad input named before Ray: with an address where no
    Ray answers, the message is the bundle's (was: "cannot connect to Ray", or a Ray start of 4 s first)."""
    (tmp_path / "empty").mkdir()
    for folder, said in (("nothere", "nothere: no such folder. Give the bundle folder (OUTPUT/bundle) or the run's "
                                     "output folder\n"),
                         ("empty", "not a trainyard bundle")):
        run = subprocess.run([sys.executable, "-m", "trainyard", "serve", str(tmp_path / folder), "--address",
                              "127.0.0.1:1", "--no-token"], capture_output=True, text=True, timeout=120)
        assert run.returncode == EXIT_BAD_INPUT and said in run.stderr, run.stderr
        assert "another bundle folder" not in run.stderr and "connect" not in run.stderr, run.stderr


def test_a_rows_file_whose_columns_miss_the_features_is_refused():
    """`trainyard predict` sent only the columns named exactly as features: a file with none of them, or with
    'RPM' / ' rpm' / 'rmp' for 'rpm', got one imputed prediction for every row, exit 0."""
    from serving.client import check_columns
    from serving.tables import TableError

    features = ["rpm", "torque", "mtype"]
    with pytest.raises(TableError, match=r"none of the file's columns \('foo', 'bar'\) is a feature of the model"):
        check_columns(["foo", "bar"], features)
    for column in ("RPM", " rpm", "rmp"):
        with pytest.raises(TableError, match=rf"column '{column}' is not a feature of the model, and feature 'rpm' has"
                                             r" no column: did you mean 'rpm'\?"):
            check_columns([column, "torque", "mtype"], features)
    # Every misnamed column at once: a file with 'Amount' and 'cntry' was told of 'Amount' alone.
    with pytest.raises(TableError, match=r"^2 columns are not features of the model, .* did you mean 'rpm' for 'RPM', "
                                         r"'mtype' for 'm_type'\? Rename the columns"):
        check_columns(["RPM", "torque", "m_type"], features)
    check_columns(["id", "rpm", "torque", "mtype", "fail"], features)     # ids and the label are not sent
    check_columns(["rpm", "torque"], features)                             # the server imputes the rest
    # Most features missing: a file meant for another model got plausible numbers, exit 0 and one note.
    with pytest.raises(TableError, match=r"^the file has no column for 2 of the model's 3 features \('torque', "
                                         r"'mtype'\): is it the file meant for this model\? Its columns: 'rpm', "
                                         r"'note'\. To predict anyway, .* add --allow-missing$"):
        check_columns(["rpm", "note"], features)
    check_columns(["rpm", "note"], features, allow_missing=True)
    # A field the server keeps in its log is sent, not a misspelt feature ('site' was asked "did you mean 'shift'?")
    shifts = ["rpm", "torque", "shift"]
    with pytest.raises(TableError, match=r"did you mean 'shift'\?"):
        check_columns(["rpm", "torque", "site"], shifts)
    check_columns(["rpm", "torque", "site"], shifts, kept=["site"])


def test_serving_the_running_version_again_is_not_called_an_update_to_it():
    from serving.forever import update_words

    assert update_words("20261205-173046", "20261205-181500") == "updated 20261205-173046 → 20261205-181500"
    assert update_words("20261205-173046", "20261205-173046") == "deployed again, same version 20261205-173046"


def test_an_update_keeps_the_running_apps_operator_settings_it_is_not_given(tmp_path):
    """An update naming only a bundle put the running app back on the defaults: 4 replicas at most where the
    operator had capped it at 3, the route prefix at /, no prediction logging. Each operator setting the update
    is not given keeps its running value (in part: the rest of a section it gives part of); the bundle's own
    settings come with the bundle; what the update is given wins, `log: null` included."""
    from serving.commands import serve_settings
    from serving.settings import keep_running

    running = ServeSpec.model_validate({
        "autoscaling": {"min_replicas": 1, "max_replicas": 3, "upscale_delay_s": 5.0}, "route_prefix": "/fraud",
        "ray_actor_options": {"num_cpus": 0.25}, "log": {"path": "/logs", "sample": 0.5}, "max_records": 50,
        "port": 8741}).model_dump(mode="json")
    bundle = _spec_yaml(tmp_path / "b", {"max_records": 5})

    def update(*sets, spec=None):
        spec, kept, unread = keep_running(serve_settings(bundle, spec, list(sets), progress=lambda *_: None), running)
        assert unread == []
        return spec, kept

    spec, kept = update()
    assert kept == ["autoscaling", "ray_actor_options", "route_prefix", "log"]
    assert spec.model_dump(mode="json")["autoscaling"] == running["autoscaling"]
    assert (spec.route_prefix, spec.ray_actor_options, spec.log.path, spec.log.sample) == (
        "/fraud", {"num_cpus": 0.25}, "/logs", 0.5)
    assert spec.max_records == 5 and spec.port == 8000      # the bundle's limit; the port is the running Serve's
    spec, kept = update("autoscaling.max_replicas=5", "log=null", "route_prefix=/v2")
    assert (spec.autoscaling.min_replicas, spec.autoscaling.max_replicas, spec.autoscaling.upscale_delay_s) == (
        1, 5, 5.0)
    assert spec.log is None and spec.route_prefix == "/v2" and kept == ["autoscaling", "ray_actor_options"]
    # The line says what of a section the update gave: "keeps its running log" read as the whole of it kept, "not
    # given in this update", though --set had given its path and rotate_s.
    from serving.settings import kept_words
    assert kept_words(["autoscaling", "log"], {"log": {"path": "/logs2", "rotate_s": 10}}) == (
        "autoscaling, log but for path=/logs2, rotate_s=10, given here")
    ops = tmp_path / "ops.yaml"
    ops.write_text("name: ops\ndata: {path: d, label: y}\nserve:\n  ray_actor_options: {num_cpus: 1}\n")
    spec, kept = update(spec=str(ops))
    assert spec.ray_actor_options == {"num_cpus": 1} and "ray_actor_options" not in kept
    # Nothing to keep from an app that is not trainyard's; a setting this version cannot read is named, and the
    # others are kept all the same (one unreadable section dropped them all, the logging included, unsaid).
    given = serve_settings(bundle, None, [], progress=lambda *_: None)
    assert keep_running(given, None) == (given, [], [])
    spec, kept, unread = keep_running(given, {**running, "autoscaling": {"max_replicas": "many", "older_key": 1}})
    assert unread == ["autoscaling"] and kept == ["ray_actor_options", "route_prefix", "log"]
    assert spec.autoscaling == given.autoscaling and spec.log.path == "/logs"

    # `--set log.keep=[site]` alone (log.path required): completed from the running app's log, as
    # `--set autoscaling.max_replicas=5` keeps the rest of autoscaling. It was refused, "serve.log.path: Field
    # required", asking for the folder again.
    spec, kept = update("log.keep=[site]")
    assert (spec.log.path, spec.log.sample, spec.log.keep) == ("/logs", 0.5, ["site"]) and "log" in kept
    from jobs.spec import SpecError
    # ... but not a section --set emptied first: `log=null` then `log.keep` is a new log, lacking its path.
    with pytest.raises(SpecError, match=r"--set: serve.log.path: Field required$"):
        serve_settings(bundle, None, ["log=null", "log.keep=[site]"], progress=lambda *_: None)
    with pytest.raises(SpecError, match=r"--set: serve.log.path: Field required \(--set gave part of serve.log, and "
                                        r"no running app has a log section to complete it: give the rest too\)"):
        keep_running(serve_settings(bundle, None, ["log.keep=[site]"], progress=lambda *_: None),
                     {**running, "log": None})
    for sets, said in ((["log.sample=7"], "serve.log.sample: Input should be less than or equal to 1"),
                       (["log.keep=[site]", "max_records=0"], "serve.max_records: Input should be greater than")):
        with pytest.raises(SpecError) as err:       # the value's own problem, not the path the update would keep
            update(*sets)
        assert said in str(err.value) and "log.path" not in str(err.value)
    with pytest.raises(SpecError, match=r"--set: serve.log.sample \(the running app's serve.log, with what --set "
                                        r"gave\): "):
        keep_running(serve_settings(bundle, None, ["log.keep=[site]"], progress=lambda *_: None),
                     {**running, "log": {"path": "/logs", "sample": "half"}})
    # What the update gives that conflicts with the rest of a running section: said, naming both. It was put
    # aside as a setting "this trainyard cannot read", and the app went back to 1 replica at least, unasked.
    floor = {**running, "autoscaling": {"min_replicas": 3, "max_replicas": 4}}
    with pytest.raises(SpecError, match=r"serve.autoscaling: min_replicas \(3\) is above max_replicas \(2\), with "
                                        r"max_replicas=2 from this update and the rest kept from the running app's "
                                        r"serve.autoscaling; give what it conflicts with too"):
        keep_running(serve_settings(bundle, None, ["autoscaling.max_replicas=2"], progress=lambda *_: None), floor)
    spec, kept, unread = keep_running(serve_settings(bundle, None, ["autoscaling.max_replicas=2",
                                                                    "autoscaling.min_replicas=1"],
                                                     progress=lambda *_: None), floor)
    assert (spec.autoscaling.min_replicas, spec.autoscaling.max_replicas, unread) == (1, 2, [])


def test_replicas_are_said_to_wait_for_resources_only_when_the_cluster_has_no_room_for_them():
    """Ray counts a replica whose process is starting as pending: every update's new replicas were said to "wait
    for free resources" with 2 CPUs free for 0.5 each. One that waits has no worker leased yet (no port in its
    address; seen in the GCS's actor table for 6 actors of 0.5 CPU on 2 CPUs: 4 with a port, 2 without)."""
    from types import SimpleNamespace as NS

    from serving.server import replicas_without_room

    starting, waiting = NS(address=NS(port=40123)), NS(address=NS(port=0))
    assert replicas_without_room([starting, starting, starting]) == 0
    assert replicas_without_room([starting, waiting, waiting]) == 2 and replicas_without_room([]) == 0


def test_a_bad_serve_setting_names_the_source_that_set_it(tmp_path):
    """Every error named all three sources ("the bundle's spec.yaml / fraud.yaml / --set"), whichever set it."""
    from jobs.spec import SpecError
    from serving.commands import serve_settings

    bundle = _spec_yaml(tmp_path / "b", {"max_records": 5})
    ops = tmp_path / "ops.yaml"
    ops.write_text("name: ops\ndata: {path: d, label: y}\nserve:\n  autoscaling: {max_replicas: 3}\n")
    quiet = {"progress": lambda *_: None}
    with pytest.raises(SpecError) as err:
        serve_settings(bundle, str(ops), ["autoscaling.min_replicas=5"], **quiet)
    assert err.value.problems == [f"{ops} / --set: serve.autoscaling: min_replicas (5) is above max_replicas (3)"]
    with pytest.raises(SpecError) as err:
        serve_settings(bundle, str(ops), ["max_records=0"], **quiet)
    assert err.value.problems[0].startswith("--set: serve.max_records: Input should be greater than or equal to 1")
    with pytest.raises(SpecError) as err:
        serve_settings(_spec_yaml(tmp_path / "c", {"max_records": -1}), None, [], **quiet)
    assert err.value.problems[0].startswith("the bundle's spec.yaml: serve.max_records:")
    with pytest.raises(SpecError, match=r"^  - --set: serve.autoscalin: unknown setting"):
        serve_settings(bundle, None, ["autoscalin.max_replicas=3"], **quiet)
    with pytest.raises(SpecError) as err:                  # inside a value: a list's item
        serve_settings(bundle, None, ["required_features=[rpm, [1]]"], **quiet)
    assert all(p.startswith("--set: serve.required_features") for p in err.value.problems), err.value.problems


def test_a_running_server_says_when_its_replicas_or_its_version_change():
    """`trainyard serve` printed nothing after its start: not a scale-up, not an update from another process."""
    from serving.forever import serving_changes

    seen = {"running": None, "version": "v1", "answered": "v1"}
    looks = [(1, "v1"), (1, "v1"), (3, "v1"), (3, "v2"), (4, "v1"), (4, "v2"), (2, "v2"), (2, None), (2, "v2")]
    said = [line for running, answered in looks
            for line in serving_changes("fraud", seen, {"running": running, "answered": answered})]
    assert said == ["[serve] fraud: 3 replica(s) running (was 1)", "[serve] fraud: 4 replica(s) running (was 3)",
                    "[serve] fraud: 2 replica(s) running (was 4)",
                    "[serve] fraud now serves v2 (was v1): updated from another process"]


def test_an_update_that_would_refuse_what_clients_send_now_is_named_and_refused_unless_breaking():
    """A retrain without `vibration_mm_s` was served as a zero-downtime update, "pm updated A → B", exit 0; then
    7,997 of 9,671 requests of the running clients got 422 ("unknown field")."""
    from serving.contract import check_update, lost_requests
    from serving.settings import ServeError

    def schema(features, unknown_category="ignore"):
        return {"features": [{"name": n, "type": t, **({"categories": c} if c else {})} for n, t, c in features],
                "unknown_category": unknown_category, "label": {"name": "y"}}

    old = schema([("rpm", "number", None), ("vibration_mm_s", "number", None), ("kind", "category", ["L", "M"])])
    serve = {"required_features": [], "unknown_fields": "reject"}
    assert lost_requests(old, serve, old, serve) == []
    # A feature gone, one added and required, one of another type, categories refused: each said.
    new = schema([("rpm", "category", ["1", "2"]), ("kind", "category", ["L"]), ("temp", "number", None)], "error")
    assert lost_requests(old, serve, new, {**serve, "required_features": ["temp"]}) == [
        "'vibration_mm_s' is no longer a feature, and a record that sends one is refused (serve.unknown_fields: "
        "reject)",
        "'temp' is now required, and a record without it is refused",
        "'rpm' (number → category) takes values of another type",
        "'kind' refuses any category it did not train on (data.preprocess.unknown_category: error), which the "
        "running version accepts"]
    # A number now a category (a count of few values) takes what it took, numbers, unless unknown ones are refused.
    counted = schema([("rpm", "category", ["1", "2"]), ("vibration_mm_s", "number", None),
                      ("kind", "category", ["L", "M"])])
    assert lost_requests(old, serve, counted, serve) == []
    # Unknown fields ignored: a field gone is dropped, not refused; a strict version that keeps its categories
    # takes what the strict one took, and one that drops a category does not.
    assert lost_requests(old, serve, schema([("rpm", "number", None)]), {**serve, "unknown_fields": "ignore"}) == []
    strict = schema([("kind", "category", ["L", "M"])], "error")
    assert lost_requests(strict, serve, schema([("kind", "category", ["L", "M", "H"])], "error"), serve) == []
    assert lost_requests(strict, serve, schema([("kind", "category", ["L"])], "error"), serve) == [
        "'kind' refuses its categories 'M' (data.preprocess.unknown_category: error), which the running version "
        "accepts"]
    # Refused (exit 2) with the way through; said and let through with --breaking; nothing known, nothing said.
    gone = schema([("rpm", "number", None), ("kind", "category", ["L", "M"])])
    with pytest.raises(ServeError, match=r"^updating pm from version A to B would refuse requests the running "
                                         r"version takes: 'vibration_mm_s' is no longer a feature.*--name pm-v2 "
                                         r"--set route_prefix=/pm-v2\) while they move, or update anyway with "
                                         r"--breaking$") as refused:
        check_update("pm", {"schema": old, "serve": serve}, gone, serve, ("A", "B"), False, print)
    assert refused.value.exit_code == 2
    said = []
    check_update("pm", {"schema": old, "serve": serve}, gone, serve, ("A", "B"), True, said.append)
    assert said == ["[serve] note: updating pm from version A to B refuses requests the running version takes: "
                    "'vibration_mm_s' is no longer a feature, and a record that sends one is refused "
                    "(serve.unknown_fields: reject) (--breaking)"]
    check_update("pm", {"schema": None, "serve": serve}, gone, serve, ("A", "B"), False, print)


def test_an_update_without_port_of_an_app_served_on_another_port_is_told_the_port(tmp_path, monkeypatch):
    """`trainyard serve NEW --name pm` while pm ran on 8731 started a second pm on 8000, without its logging, and
    said nothing of the first; now refused before Ray starts, with both ways on."""
    from cluster.processes import own_identity
    from serving.forever import guest_file, served_elsewhere, state_file
    from tests.test_bundle_write import _write

    monkeypatch.setenv("TRAINYARD_STATE_DIR", str(tmp_path / "state"))
    me = own_identity()
    state_file(8731).parent.mkdir()
    state_file(8731).write_text(json.dumps({**me, "address": "127.0.0.1:6379", "port": 8731, "apps": ["pm"]}))
    assert served_elsewhere("pm", 8000)["port"] == 8731
    assert served_elsewhere("pm", 8731) is None and served_elsewhere("other", 8000) is None
    guest_file(8500, "other").parent.mkdir()
    guest_file(8500, "other").write_text(json.dumps({**me, "address": "x:1", "port": 8500, "apps": ["other"]}))
    assert served_elsewhere("other", 8000)["port"] == 8500
    bundle = _write(tmp_path / "out" / "bundle")
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "TRAINYARD_STATE_DIR": str(tmp_path / "state")}
    run = subprocess.run([sys.executable, "-m", "trainyard", "serve", str(bundle), "--name", "pm", "--no-token"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == EXIT_BAD_INPUT, run.stdout + run.stderr
    assert (f"trainyard: error: pm is served on port 8731 by trainyard process {os.getpid()}; to update it, add "
            "--port 8731; to serve a second pm on port 8000, give --port 8000") in run.stderr
    assert "[ray]" not in run.stdout + run.stderr


def test_serving_an_older_version_says_the_run_still_points_to_the_newer(tmp_path):
    """After a rollback (`serve runs/pm/bundles/OLD`), runs/pm/bundle still named the worse version: a restart with
    `serve runs/pm` served it again without a word."""
    from serving.commands import older_version_note

    for version in ("v1", "v2"):
        (tmp_path / "runs" / "pm" / "bundles" / version).mkdir(parents=True)
    pointer = tmp_path / "runs" / "pm" / "bundle"
    pointer.symlink_to("bundles/v2")
    assert older_version_note(tmp_path / "runs" / "pm" / "bundles" / "v1") == (
        f"[serve] note: {pointer} points to version v2, not this v1: `trainyard serve {pointer.parent}` (a restart, "
        f"a script) would serve v2; to make this one the latest: ln -sfn bundles/v1 {pointer}.new && mv -T "
        f"{pointer}.new {pointer}")
    assert older_version_note(tmp_path / "runs" / "pm" / "bundles" / "v2") is None       # the latest itself
    assert older_version_note(tmp_path / "elsewhere") is None                           # not a run's version


def test_an_update_to_a_version_of_a_lower_test_score_is_said(tmp_path):
    """A colleague's `trainyard serve` of a model of test F1 0.15 replaced one of 0.85 on the same app: the update
    said "updated A → B" alone (`train` says as much when the output's pointer moves to a worse version)."""
    from jobs import bundle as B
    from serving.contract import update_notes
    from tests.test_bundle_write import _write

    worse = B.load(_write(tmp_path / "out" / "bundle", score=lambda b: {"test": {"f1": 0.15}},
                          lineage={"version": "v2"}))
    said = update_notes("shared", worse.schema, {"test": {"f1": 0.85}}, worse, "v1")
    assert said == ["[serve] note: the version it replaces in shared, v1, scored test f1 0.8500 on its test split, "
                    "this one 0.1500; to serve it again: trainyard serve OUTPUT/bundles/v1 --name shared (OUTPUT: "
                    "its run's output folder)"]
    # Where the running version was served from is known (its payload's "from"): the note names it, not OUTPUT.
    from serving.payload import bundle_payload, served_from
    older = _write(tmp_path / "elsewhere" / "bundle", lineage={"version": "v1"})
    said = update_notes("shared", worse.schema, {"test": {"f1": 0.85}}, worse, "v1",
                        served_from(bundle_payload(older)), (8431, "/pm"))
    # ... with the port and route the update needs (without --port it was refused: "served on port 8431 by ...")
    assert said[0].endswith(f"; to serve it again: trainyard serve {older.resolve()} --name shared --port 8431 "
                            "--set route_prefix=/pm"), said
    assert served_from({"files": {}}) is None                   # a payload of an earlier trainyard
    assert served_from({"path": "s3://b/run/bundles/v1"}) == "s3://b/run/bundles/v1"     # a large bundle's
    assert update_notes("shared", worse.schema, {"test": {"f1": 0.10}}, worse, "v1") == []       # better: nothing
    assert update_notes("shared", worse.schema, None, worse, "v1") == []          # the running one's unknown
    # One rule (min_recall 0.8), a retrain's new cut-off value: the cut-off's move is said, and the test score is
    # still compared, by AUC (an update to a version of lower AUC and recall said the cut-off alone).
    from types import SimpleNamespace
    cut = {"positive": "failure", "positive_index": 0, "threshold": 0.121352, "rule": "min_recall 0.8"}
    running = {**worse.schema, "label": {**worse.schema["label"], "decision": cut}}
    retrained = SimpleNamespace(task="classification", metrics={"test": {"f1": 0.70, "auc": 0.8654}}, schema={
        **worse.schema, "label": {**worse.schema["label"], "decision": {**cut, "threshold": 0.0957153}}})
    said = update_notes("shared", running, {"test": {"f1": 0.65, "auc": 0.8739}}, retrained, "v1")
    assert [line.split(":")[0] for line in said] == ["[serve] note"] * 2, said
    assert said[0].startswith("[serve] note: shared changes its cut-off: P('failure') >= 0.121352 (min_recall 0.8) ")
    assert said[1].startswith("[serve] note: the version it replaces in shared, v1, scored test auc 0.8739 on its "
                              "test split, this one 0.8654")
    # Another rule: not ranked (the cut-off line says what changes).
    other = SimpleNamespace(**{**vars(retrained), "schema": {**retrained.schema, "label": {
        **retrained.schema["label"], "decision": {**cut, "threshold": 0.5, "rule": "threshold 0.5"}}}})
    assert len(update_notes("shared", running, {"test": {"f1": 0.65, "auc": 0.8739}}, other, "v1")) == 1
    # Another class list: probabilities[0] meant 'ok' and now 'dent', and the update said nothing
    three = {**worse.schema, "label": {**worse.schema["label"], "classes": ["dent", "no", "yes"]}}
    assert update_notes("shared", three, None, worse, "v1") == [
        "[serve] note: shared's classes change from 'dent', 'no', 'yes' to 'no', 'yes': each answer's probabilities "
        "follow the new list (schema.json's label.classes)"]


def test_an_image_model_of_another_input_shape_is_a_breaking_update():
    """A 48x48 grey model served over a 32x32x3 one said "updated", and the running clients' pixel arrays got 422
    ("pixel array has shape [32, 32, 3], expected [48, 48]")."""
    from serving.contract import lost_requests

    def image(size, channels):
        return {"input": "image", "image": {"field": "image", "size": size, "channels": channels},
                "features": [{"name": "image", "type": "image", "required": True}], "label": {"name": "y"}}

    serve = {"required_features": [], "unknown_fields": "reject"}
    assert lost_requests(image([32, 32], 3), serve, image([32, 32], 3), serve) == []
    assert lost_requests(image([32, 32], 3), serve, image([48, 48], 1), serve) == [
        "pixel arrays of the running version's shape (32x32x3) are refused, the new version takes 48x48x1 (encoded "
        "images are still resized)"]


def test_a_server_open_to_every_interface_or_a_token_in_the_process_list_is_said():
    """A security review: `serve --host 0.0.0.0` without a token answered anyone, and `--token T` sat in the
    process list for every local user, with no word of either."""
    from serving.commands import exposure_notes

    assert exposure_notes("127.0.0.1", None, None) == [] and exposure_notes("0.0.0.0", "t", None) == []
    open_to_all, in_ps = exposure_notes("0.0.0.0", None, None) + exposure_notes("127.0.0.1", "t", "t")
    assert open_to_all.startswith("[serve] note: serving on 0.0.0.0 (every interface) without a token")
    assert in_ps == ("[serve] note: a --token on the command line is visible to every local user (ps); "
                     "$TRAINYARD_SERVE_TOKEN is not")


def test_the_token_leaves_the_environment_before_ray_starts(tmp_path, monkeypatch):
    """The README says only a hash of the token reaches the replicas; $TRAINYARD_SERVE_TOKEN stayed in the
    environment of `trainyard serve` and `trainyard run`, which the embedded Ray copies into every process it
    starts, the replicas included. Checked where Ray would start: the kit's connect, stopped there."""
    import dataclasses

    import pandas as pd

    from cluster.errors import Failure
    from serving.settings import TOKEN_ENV
    from tests.conftest import small_spec, write_spec
    from tests.test_bundle_write import _write
    from trainyard import cli

    seen = []

    def connect(*_args, **_kwargs):
        seen.append(os.environ.get(TOKEN_ENV))
        raise Failure("stopped where Ray would start")
    monkeypatch.setattr(cli, "KIT", dataclasses.replace(cli.KIT, connect=connect))
    bundle = _write(tmp_path / "b", lineage={"version": "v1"})
    pd.DataFrame({"x": [float(i) for i in range(40)], "failure": ["no", "yes"] * 20}).to_csv(tmp_path / "d.csv",
                                                                                          index=False)
    spec = write_spec(tmp_path / "spec.yaml", {**small_spec("t", tmp_path / "d.csv", tmp_path / "out"),
                                               "data": {"path": str(tmp_path / "d.csv"), "label": "failure"}})
    for command in (["serve", str(bundle), "--port", "0"], ["run", str(spec)]):
        monkeypatch.setenv(TOKEN_ENV, "s3cret")
        assert cli.main(command) == 1, command
        assert seen.pop() is None, command
    monkeypatch.setenv(TOKEN_ENV, " ")          # refused before training, not after it
    assert cli.main(["run", str(spec)]) == EXIT_BAD_INPUT and not seen


def test_a_jsonl_table_is_written_as_its_text_reads(tmp_path):
    """`predict --out pred.jsonl` wrote "\\u00c9lectronique > Audio" and "Cat 10 \\/ \\u00dcr\\u00fcn": valid JSON,
    but neither readable nor found by grep; a class name is written as it is now, and reads back the same."""
    import pandas as pd

    from serving.tables import write_table

    df = pd.DataFrame({"prediction": ["Électronique > Audio", "食品"], "probability_Cat 10 / Ürün": [0.25, None],
                       "n": [1, 2]})
    out = write_table(df, tmp_path / "pred.jsonl")
    text = out.read_text(encoding="utf-8")
    assert '"prediction": "Électronique > Audio"' in text and '"probability_Cat 10 / Ürün": 0.25' in text
    assert "\\u" not in text and "\\/" not in text and len(text.splitlines()) == 2
    pd.testing.assert_frame_equal(pd.read_json(out, lines=True), df)


def test_the_client_keeps_each_request_within_the_servers_body_limit():
    """`trainyard predict` on 900 camera images sent them 1,000 records a request: a 14 MiB body, refused (413)
    by the 8 MiB limit, and the whole folder failed. Requests now also stay within max_body_mb; the answers come
    back in order."""
    import json

    from serving.client import Client
    from tests.stand_in_server import stand_in

    bodies = []

    def answer(body: bytes) -> dict:
        bodies.append(len(body))
        return {"predictions": [r["i"] for r in json.loads(body)["records"]], "request_id": str(len(bodies))}

    with stand_in({"limits": {"max_records": 1000, "max_body_mb": 0.01}, "features": [], "label": {}},
                  answer) as url:
        records = [{"i": i, "image": "x" * 1000} for i in range(40)]          # ~40 KB in all, 10 KB allowed
        out = Client(url).predict(records)
    assert out["predictions"] == list(range(40))
    assert len(bodies) > 3 and max(bodies) <= 0.01 * 2**20, bodies
    assert sum(n for _, n in out["request_ids"]) == 40
