"""A REAL local cluster — a head and a worker, each its own `ray start` process with token auth — driven
through the same commands a user types: `cluster up/status/down`, `submit`, `jobs ...`, `cluster
check-storage`. One cluster for the module (starting one costs ~15 s on 2 cores); the last test takes it
down and proves that no process it started is left, and the fixture makes sure of it whatever happens."""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cluster import local

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def run_cli(*args: str, env: dict, timeout: float = 300, module: str = "trainyard"):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def cluster_env(tmp_path_factory):
    """Environment of a user whose only cluster is the one `cluster up` starts for this module."""
    state_dir = tmp_path_factory.mktemp("cluster-state")
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH",
                        "RAY_AUTH_MODE")}
    env["TRAINYARD_STATE_DIR"] = str(state_dir)
    return env


@pytest.fixture(autouse=True)
def same_env_in_process(cluster_env, monkeypatch):
    """Calls made in this process (submit, jobs_api) see the environment the CLI subprocesses get."""
    for name in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TRAINYARD_STATE_DIR", cluster_env["TRAINYARD_STATE_DIR"])


@pytest.fixture(scope="module")
def cluster(cluster_env):
    with _cluster_up(cluster_env) as state:
        yield state


@contextlib.contextmanager
def _cluster_up(cluster_env):
    """A cluster `cluster up` starts (head and one worker, 2 CPUs each), brought down and checked for leftovers."""
    state_file = Path(cluster_env["TRAINYARD_STATE_DIR"]) / "cluster.json"
    up = run_cli("cluster", "up", "--workers", "1", "--cpus-per-node", "2", "--object-store-mb", "256",
                 env=cluster_env)
    state = json.loads(state_file.read_text()) if state_file.exists() else None
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield {**state, "up_output": up.stdout}
    finally:
        if state_file.exists():
            run_cli("cluster", "down", env=cluster_env)
        if state:
            assert local.cluster_processes(state) == [], "the local cluster left processes behind"


def test_status_shows_head_and_worker_alive(cluster, cluster_env):
    out = run_cli("cluster", "status", "--json", env=cluster_env)
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    assert len(status["nodes"]) == 2
    assert sorted(n["head"] for n in status["nodes"]) == [False, True]
    assert all(n["resources"]["CPU"] == 2 for n in status["nodes"])
    # What is free too: a job's reservation left after it ended showed nowhere ("CPU 2" while none was free)
    assert all(0 <= n["available"]["CPU"] <= 2 for n in status["nodes"]), status["nodes"]
    text = run_cli("cluster", "status", env=cluster_env).stdout
    assert re.search(r"CPU 2 \([0-9.]+ free\)", text), text
    assert all(p["alive"] for p in status["processes"]) and len(status["processes"]) == 2
    assert status["address"] == cluster["address"] and status["address"].startswith("127.0.0.1:")
    assert oct(Path(status["token_path"]).stat().st_mode & 0o777) == "0o600"


def test_every_listening_socket_is_on_loopback(cluster):
    import psutil  # ships inside Ray

    listening = []
    for pid in local.cluster_processes(cluster):
        try:
            listening += [(pid, c.laddr.ip, c.laddr.port) for c in psutil.Process(pid).net_connections("inet")
                          if c.status == psutil.CONN_LISTEN]
        except psutil.Error:
            continue
    assert listening, "found no listening socket at all"
    exposed = [s for s in listening if s[1] not in ("127.0.0.1", "::ffff:127.0.0.1")]
    assert exposed == [], f"listening beyond 127.0.0.1: {exposed}"
    ports = {port for _, _, port in listening}
    assert {cluster["ports"]["gcs"], cluster["ports"]["dashboard"], cluster["ports"]["client"]} <= ports


def test_a_second_up_on_the_same_state_is_refused(cluster, cluster_env):
    out = run_cli("cluster", "up", env=cluster_env)
    assert out.returncode == 1 and "a cluster is already up" in out.stderr and "cluster down" in out.stderr


def test_wrong_token_fails_clearly_everywhere(cluster, cluster_env, tmp_path):
    env = dict(cluster_env, RAY_AUTH_TOKEN="0" * 64)
    for args in (("jobs", "list"), ("jobs", "list", "--address", cluster["dashboard_url"]),
                 ("cluster", "check-storage", str(tmp_path), "--address", cluster["address"]),
                 ("cluster", "check-storage", str(tmp_path), "--address", cluster["client_address"])):
        out = run_cli(*args, env=env, timeout=60)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        assert "rejected the token from the RAY_AUTH_TOKEN environment variable" in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr
        # `cluster up` saved this cluster's token: the variable wins over it, and "set RAY_AUTH_TOKEN" was the advice
        assert ("RAY_AUTH_TOKEN wins over the token `trainyard cluster up` saved for this cluster (" in out.stderr
                and "unset RAY_AUTH_TOKEN to use that one" in out.stderr), (args, out.stderr)
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: t\ndata: {{path: {tmp_path}, label: y}}\noutput: {tmp_path / 'out'}\n")
    out = run_cli("submit", str(spec), "--address", cluster["dashboard_url"], env=env, module="trainyard")
    # `submit` is always registered now (a package that cannot load is an error, not a vanished command).
    assert out.returncode == 2 and "rejected the token" in out.stderr, out.stderr


def test_missing_token_fails_clearly(cluster, cluster_env, tmp_path):
    # No state to take the token from, and a HOME without ~/.ray/auth_token.
    env = dict(cluster_env, TRAINYARD_STATE_DIR=str(tmp_path / "elsewhere"), HOME=str(tmp_path))
    for args in (("jobs", "list", "--address", cluster["dashboard_url"]),
                 ("cluster", "check-storage", str(tmp_path), "--address", cluster["address"])):
        out = run_cli(*args, env=env, timeout=60)
        assert out.returncode == 2, (args, out.stderr)
        assert "uses token authentication and no token was found" in out.stderr, (args, out.stderr)
        assert "RAY_AUTH_TOKEN_PATH" in out.stderr


def test_the_token_file_works_for_any_ray_client(cluster, cluster_env, tmp_path):
    """What `cluster up` prints (RAY_AUTH_TOKEN_PATH=...) is all another tool needs."""
    env = dict(cluster_env, TRAINYARD_STATE_DIR=str(tmp_path / "elsewhere"), HOME=str(tmp_path),
               RAY_AUTH_TOKEN_PATH=cluster["token_path"])
    out = run_cli("jobs", "list", "--address", cluster["dashboard_url"], env=env, timeout=60)
    assert out.returncode == 0, out.stderr


def test_the_printed_export_line_works_for_the_ray_cli(cluster, cluster_env, tmp_path):
    """What `cluster up` prints for other tools, run as printed in a shell: the real `ray status` and `ray job
    list` reach the loopback-only cluster (without Ray's loopback switch in the line, Ray dials the machine's
    outward address and both retry until they time out)."""
    exports = [line.strip() for line in cluster["up_output"].splitlines() if line.strip().startswith("export ")]
    assert len(exports) == 1, cluster["up_output"]
    env = {k: v for k, v in cluster_env.items() if not k.startswith(("RAY_", "TRAINYARD_"))}
    # A user with no trainyard state nor ~/.ray token around: only the printed line.
    env.update(HOME=str(tmp_path), PATH=str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""))
    for command, says in (("ray status", "Active:"), ("ray job list", "Job submission server address")):
        out = subprocess.run(["bash", "-c", f"{exports[0]} && {command}"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, (command, out.stdout[-2000:], out.stderr[-2000:])
        assert says in out.stdout + out.stderr, (command, out.stdout[-2000:], out.stderr[-2000:])
    # The head and the worker, as `cluster status` sees them. `ray status` prints what Ray's autoscaler monitor
    # last wrote (every AUTOSCALER_UPDATE_INTERVAL_S, 5 s): for a few seconds after `cluster up` it lists the
    # head alone, so this test failed when it ran first (`-k printed_export`); later in the module it passes at once.
    deadline = time.monotonic() + 30
    while True:
        out = subprocess.run(["bash", "-c", f"{exports[0]} && ray status"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=120)
        if out.stdout.count("node_") == 2 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert out.stdout.count("node_") == 2, (out.returncode, out.stdout[-2000:], out.stderr[-2000:])


def test_env_values_reach_the_job_but_no_command_line(cluster, tmp_path, monkeypatch):
    """`--env NAME` takes the value from this environment and sends it in the job's runtime_env: the job sees
    it, and neither its entrypoint nor any process's command line on this machine carries it."""
    import hashlib
    import secrets

    from cluster import jobs_api

    value = f"probe-{secrets.token_hex(8)}"
    monkeypatch.setenv("TRAINYARD_TEST_SECRET", value)
    body = ("import hashlib, os, time; v = os.environ['TRAINYARD_TEST_SECRET'].encode(); "
            "print('seen', hashlib.sha256(v).hexdigest(), flush=True); time.sleep(600)")
    job_id = _submit_small_job(cluster, tmp_path, body, env=["TRAINYARD_TEST_SECRET"])
    try:
        seen = f"seen {hashlib.sha256(value.encode()).hexdigest()}"
        deadline = time.monotonic() + 120
        while seen not in jobs_api.logs(job_id, cluster["dashboard_url"]) and time.monotonic() < deadline:
            time.sleep(1)
        assert seen in jobs_api.logs(job_id, cluster["dashboard_url"])
        assert value not in jobs_api.job_info(job_id, cluster["dashboard_url"])["entrypoint"]
        carriers = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if value.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    carriers.append(pid)
            except OSError:
                continue
        assert carriers == [], f"processes with the value in their command line: {carriers}"
    finally:
        jobs_api.stop(job_id, cluster["dashboard_url"])


def test_storage_check_passes_for_a_path_every_node_sees(cluster, cluster_env, tmp_path):
    # Through the GCS address. (Through Ray Client, ray://, it works too, but Ray's Client proxy sometimes
    # loses its per-client server at startup on a loaded 2-core machine: not a test to gate CI on.)
    # Without --address it checks the cluster `cluster up` recorded, as submit and jobs do (it started an embedded
    # Ray of one node, which said "shared by all 1 node(s)"); the next test gives the address.
    target = tmp_path / "shared-out"
    out = run_cli("cluster", "check-storage", str(target), env=cluster_env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "shared by all 2 node(s)" in out.stdout
    assert not target.exists(), "the check must leave no trace"
    # A relative path is this folder's, as `train --address` takes one (each node resolved it in its own folder)
    out = subprocess.run([sys.executable, "-m", "trainyard", "cluster", "check-storage", "rel-out"], cwd=tmp_path,
                         env=cluster_env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and f"{tmp_path / 'rel-out'}: shared by all 2 node(s)" in out.stdout, out.stdout
    assert not (tmp_path / "rel-out").exists(), "the check must leave no trace"


def test_storage_check_catches_a_path_a_node_cannot_see(cluster, cluster_env):
    # Each node runs in its own directory, as on separate machines: a relative path given to the check itself is
    # a different folder on each of them — per-node paths, the case the check exists for. (`cluster check-storage`
    # makes a relative path absolute first, from the folder it runs in.)
    code = ("import sys\nfrom cluster.connection import connect\nfrom cluster.storage import StorageError, "
            f"check_shared_storage\nconnect({cluster['address']!r})\ntry:\n    check_shared_storage('runs/not-shared')\n"
            "except StorageError as exc:\n    sys.exit(str(exc))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=cluster_env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 1, out.stdout + out.stderr
    message = out.stderr
    assert "'runs/not-shared' is not storage that all 2 nodes of the cluster share" in message
    node_dirs = [n["temp_dir"] for n in cluster["nodes"]]
    for node_dir in node_dirs:
        assert f"on this node the path is {node_dir}/runs/not-shared" in message
    assert message.count("does not see what node") == 2 and "s3://" in message
    assert not any((Path(d) / "runs" / "not-shared").exists() for d in node_dirs)
    # No node can write there at all: not a question of sharing (the NFS-or-bucket advice misled a one-machine user)
    out = subprocess.run([sys.executable, "-c", code.replace("runs/not-shared", "/proc/trainyard-out")], cwd=ROOT,
                         env=cluster_env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and "'/proc/trainyard-out' cannot be written by any node of the cluster" in out.stderr
    assert "s3://" not in out.stderr and out.stderr.count("cannot write there") == 2, out.stderr


def test_a_driver_on_the_cluster_checks_storage_then_trains(cluster, cluster_env, tmp_path):
    """`trainyard train SPEC --address HOST:PORT`, run from the user's directory: relative paths count as the
    driver resolves them (absolute here), every node is checked to see the data and share the output before
    anything runs, and the run trains on the two-node cluster."""
    sys.path.insert(0, str(ROOT / "examples"))
    from telemetry import generate, write_shards

    write_shards(generate(80, seed=3), tmp_path / "data", 2)
    (tmp_path / "spec.yaml").write_text(
        "name: driver\ndata: {path: data, label: failure, features: {exclude: [machine_id]}}\n"
        "model: {hidden: [8]}\ntrain: {epochs: 1, workers: 1, batch_size: 16, max_failures: 0}\n"
        "output: out\n")
    env = {**cluster_env, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "trainyard", "train", "spec.yaml", "--address", cluster["address"]],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"[storage] all 2 nodes see the data and share {tmp_path / 'out'}" in out.stdout + out.stderr
    assert (tmp_path / "out" / "bundle" / "model.json").is_file()


def _submit_small_job(cluster, tmp_path, body: str, env=(), extra: str = "") -> str:
    """Submit like `trainyard submit` does (working_dir, resolved spec, env and storage checks), with a small
    Python step instead of the pipeline. `extra`: more of the spec (YAML lines)."""
    from trainyard.submit import plan, submit

    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "part-0.csv").write_text("x,y\n1,0\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: tiny\ndata: {{path: {tmp_path / 'data'}, label: y}}\noutput: {tmp_path / 'out'}\n"
                    + extra)
    the_plan = plan(spec, cluster["dashboard_url"])
    checks = the_plan.entrypoint.rsplit(" && ", 1)[0]
    info = submit(spec, cluster["dashboard_url"], entrypoint=f"{checks} && python -c {body!r}", wait=False,
                  env=env, progress=lambda _m: None)
    return info["id"]


def test_submit_runs_the_checks_and_ships_the_repository_and_spec(cluster, cluster_env, tmp_path):
    from cluster import jobs_api

    body = ("import yaml, pathlib, cluster.submit; s = yaml.safe_load(open('.trainyard-job/spec.yaml')); "
            "out = pathlib.Path(s['output']); out.mkdir(parents=True); (out / 'done.txt').write_text(s['name'])")
    job_id = _submit_small_job(cluster, tmp_path, body)
    info = jobs_api.wait(job_id, cluster["dashboard_url"], timeout_s=240)
    logs = jobs_api.logs(job_id, cluster["dashboard_url"])
    assert info["status"] == "SUCCEEDED", logs
    assert (tmp_path / "out" / "done.txt").read_text() == "tiny"
    assert "trainyard envcheck:" in logs and "has all of trainyard's dependencies" in logs
    assert "trainyard storage check: all 2 node(s) share" in logs

    out = run_cli("jobs", "status", job_id, env=cluster_env)
    assert out.returncode == 0 and "SUCCEEDED" in out.stdout and f"output   {tmp_path / 'out'}" in out.stdout
    out = run_cli("jobs", "list", env=cluster_env)
    assert job_id in out.stdout
    out = run_cli("jobs", "logs", job_id, env=cluster_env)
    assert "trainyard storage check" in out.stdout
    out = run_cli("jobs", "status", "no-such-job", env=cluster_env)
    assert out.returncode == 2 and "no job 'no-such-job'" in out.stderr


def test_a_run_too_big_for_the_cluster_up_cluster_it_goes_to_is_refused_before_the_upload(cluster, tmp_path):
    """A run of more workers, or a search whose trial does not fit beside Ray Data's CPU, than the `cluster up`
    cluster holds was uploaded and refused on the cluster, after 27 s of checks there. Its size is what its GCS
    sees now (2 nodes of 2 CPUs here)."""
    from jobs.fits import ClusterTooSmall
    from trainyard.cli import check_before_ray
    from trainyard.submit import check_data_here, plan
    from tuning.plan import TuneInputError

    url = cluster["dashboard_url"]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "part-0.csv").write_text("x,y\n1,a\n2,b\n3,a\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: tiny\ndata: {{path: {tmp_path / 'data'}, label: y}}\noutput: {tmp_path / 'out'}\n"
                    "tune: {samples: 2}\n")
    with pytest.raises(ClusterTooSmall, match=r"train.workers=5 × train.cpus_per_worker=1 needs 5 CPUs but the "
                                              r"cluster has 4"):
        check_data_here(plan(spec, url, "train", ["train.workers=5"]), check_before_ray)
    with pytest.raises(TuneInputError, match=r"the search cannot start: one trial needs .* the cluster has 4 CPUs"):
        check_data_here(plan(spec, url, "tune", ["tune.data_cpus=3.5"]), check_before_ray)
    check_data_here(plan(spec, url, "train", ["train.workers=2"]), check_before_ray)          # it fits
    # Another dashboard is not the recorded cluster: its size is its own to say.
    check_data_here(plan(spec, "http://127.0.0.1:9", "train", ["train.workers=5"]), check_before_ray)


def test_jobs_stop(cluster, cluster_env, tmp_path):
    """`jobs stop` is a Ctrl-C for the job's driver (SIGINT, with a minute to save a search; the Jobs API's
    SIGTERM then SIGKILL 3 s later left a search unsaved, its driver printing Ray's stack dump), and for a spec
    that searches, the driver and `jobs stop` both say the `trainyard submit ... --resume` that continues it."""
    from cluster import jobs_api

    body = ("import os, signal, sys, time; signal.signal(signal.SIGINT, lambda *_: (print('SIGINT; continue "
            "with:', os.environ.get('TRAINYARD_RESUME_COMMAND'), flush=True), sys.exit(130))); "
            "print('sleep' + 'ing', flush=True); time.sleep(600)")        # not the entrypoint's own words, logged
    job_id = _submit_small_job(cluster, tmp_path, body, extra="tune: {samples: 2}\n")
    deadline = time.monotonic() + 120
    while "sleeping" not in jobs_api.logs(job_id, cluster["dashboard_url"]) and time.monotonic() < deadline:
        time.sleep(1)
    out = run_cli("jobs", "stop", job_id, env=cluster_env)
    assert out.returncode == 0 and "STOPPED" in out.stdout, out.stdout + out.stderr
    again = f"trainyard submit {tmp_path / 'spec.yaml'} --mode run --address {cluster['dashboard_url']} --resume"
    assert f"its search continues from what it saved in {tmp_path / 'out'} with: {again}" in out.stdout, out.stdout
    assert f"SIGINT; continue with: {again}" in jobs_api.logs(job_id, cluster["dashboard_url"])
    out = run_cli("jobs", "status", job_id, env=cluster_env)
    assert out.returncode == 1 and "STOPPED" in out.stdout
    out = run_cli("jobs", "stop", job_id, env=cluster_env)          # again: said how it ended
    assert out.returncode == 0 and f"job {job_id} had already ended: STOPPED" in out.stdout, out.stdout
    out = run_cli("jobs", "logs", job_id, env=cluster_env)          # its log says where and why it ends
    assert out.returncode == 1 and out.stderr.strip().splitlines()[-1] == f"--- job {job_id} STOPPED", out.stderr
    out = run_cli("jobs", "list", env=cluster_env)
    assert f"{tmp_path / 'spec.yaml'} (run) → {tmp_path / 'out'}" in out.stdout, out.stdout


def test_a_ctrl_c_while_submit_waits_says_the_job_runs_on_and_how_to_stop_it(cluster, tmp_path):
    """Ctrl-C on `submit --wait` ended with "interrupted" alone while the job ran on (`jobs status`: RUNNING)."""
    import signal
    import threading

    from cluster import jobs_api
    from trainyard.submit import plan, submit

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "part-0.csv").write_text("x,y\n1,0\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: tiny\ndata: {{path: {tmp_path / 'data'}, label: y}}\noutput: {tmp_path / 'out'}\n")
    checks = plan(spec, cluster["dashboard_url"]).entrypoint.rsplit(" && ", 1)[0]
    said: list[str] = []

    def ctrl_c_once_it_runs():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            ids = [line.split()[1] for line in said if line.startswith("submitted ")]
            if ids and "sleep" + "ing" in jobs_api.logs(ids[0], cluster["dashboard_url"]):
                signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
                return
            time.sleep(0.5)

    body = "import time; print('sleep' + 'ing', flush=True); time.sleep(600)"
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)     # an xdist worker ignores SIGINT
    threading.Thread(target=ctrl_c_once_it_runs, daemon=True).start()
    try:
        with pytest.raises(KeyboardInterrupt):
            submit(spec, cluster["dashboard_url"], entrypoint=f"{checks} && python -c {body!r}", wait=True,
                   progress=said.append)
    finally:
        signal.signal(signal.SIGINT, previous)
    job_id = next(line.split()[1] for line in said if line.startswith("submitted "))
    try:
        assert said[-1].startswith(f"stopped following job {job_id}, which runs on in the cluster; stop it with: "
                                   f"trainyard jobs stop {job_id} --address "), said
        assert jobs_api.job_info(job_id, cluster["dashboard_url"])["status"] in ("RUNNING", "PENDING")
    finally:
        jobs_api.stop(job_id, cluster["dashboard_url"])


def _pipeline_available() -> str | None:
    """Why the end-to-end submission cannot run yet, or None when `trainyard run` exists."""
    try:
        from trainyard.cli import build_parser

        build_parser().parse_args(["run", "spec.yaml", "--no-serve"])
        import jobs.bundle  # noqa: F401
    except (ImportError, SystemExit) as exc:
        return f"`trainyard run SPEC --no-serve` is not available yet ({exc!r})"
    return None


def test_submit_end_to_end_trains_and_writes_a_bundle(cluster, cluster_env, tmp_path):
    """`trainyard submit SPEC --wait` on the 2-node cluster: SUCCEEDED, the bundle loads, the logs say so."""
    reason = _pipeline_available()
    if reason:
        pytest.skip(reason)
    sys.path.insert(0, str(ROOT / "examples"))
    from telemetry import generate, write_shards

    data = tmp_path / "telemetry"
    write_shards(generate(400, seed=3), data, 2)
    output = tmp_path / "run"
    out = run_cli("submit", str(ROOT / "examples" / "machine-failure.yaml"), "--wait",
                  "--set", f"data.path={data}", "--set", f"output={output}",
                  "--set", "train.epochs=2", "--set", "train.workers=2", "--set", "train.early_stop=null",
                  env=cluster_env, module="trainyard", timeout=540)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert "SUCCEEDED" in out.stdout and "trainyard storage check: all 2 node(s)" in out.stdout
    assert "[storage] all 2 nodes" not in out.stdout, "the entrypoint checked storage: trainyard must not repeat it"
    assert "Uploading package" not in out.stdout + out.stderr, "Ray's Jobs SDK INFO lines are not trainyard's"

    from jobs.bundle import load

    bundle = load(output / "bundle")
    # `jobs status` names the version this job wrote (OUTPUT/bundle names the newest, maybe another job's).
    from cluster import jobs_api
    job = next(j for j in jobs_api.list_jobs(cluster["dashboard_url"]) if j.get("output") == str(output))
    status = run_cli("jobs", "status", job["id"], env=cluster_env)
    assert f"bundle   {(output / 'bundle').resolve()}" in status.stdout, status.stdout
    import pyarrow.parquet as pq

    rows = pq.read_table(sorted(data.glob("*.parquet"))[0]).to_pylist()[:5]
    assert bundle.predict(rows)


# ---------------------------------------------------------------------------------------------- S3 (moto)

@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """An S3-compatible server (moto) on 127.0.0.1, with a bucket; yields its environment variables."""
    pytest.importorskip("moto.server", reason="needs moto[server] (pip install 'moto[server]')")
    import boto3
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true"}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "moto_server did not start"
                time.sleep(0.2)
        boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                     aws_access_key_id="testing", aws_secret_access_key="testing").create_bucket(Bucket="trainyard")
        yield env
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def s3_filesystem(env: dict):
    import pyarrow.fs as pafs

    return pafs.S3FileSystem(endpoint_override=env["AWS_ENDPOINT_URL"], scheme="http", region="us-east-1",
                             access_key=env["AWS_ACCESS_KEY_ID"], secret_key=env["AWS_SECRET_ACCESS_KEY"])


def upload_telemetry(env: dict, prefix: str, rows: int, seed: int) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sys.path.insert(0, str(ROOT / "examples"))
    from telemetry import generate

    df = generate(rows, seed=seed)
    fs = s3_filesystem(env)
    half = len(df) // 2
    for i, part in enumerate((df.iloc[:half], df.iloc[half:])):
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False), f"trainyard/{prefix}/part-{i}.parquet",
                       filesystem=fs)
    return f"s3://trainyard/{prefix}/"


def test_data_and_output_in_s3_are_reached_from_every_node(cluster, s3, tmp_path):
    """The URI path for real: the job's data and output live in a bucket on an S3 server; the storage check
    writes markers there from both nodes, Ray Data reads the data, and the job writes its result there."""
    from cluster import jobs_api
    from trainyard.submit import plan, submit

    data = upload_telemetry(s3, "small/telemetry", 60, seed=4)
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: s3-small\ndata: {{path: '{data}', label: failure}}\n"
                    "output: s3://trainyard/runs/s3-small\n")
    env_args = [f"{k}={v}" for k, v in s3.items()]
    checks = plan(spec, cluster["dashboard_url"], env=env_args).entrypoint.rsplit(" && ", 1)[0]
    body = ("import yaml, ray, ray.data, pyarrow.fs as fs; from cluster import connect; connect(); "
            "s = yaml.safe_load(open('.trainyard-job/spec.yaml')); "
            "n = ray.data.read_parquet(s['data']['path']).count(); "
            "f, p = fs.FileSystem.from_uri(s['output']); f.create_dir(p); "
            "out = f.open_output_stream(p + '/rows.txt'); out.write(str(n).encode()); out.close()")
    info = submit(spec, cluster["dashboard_url"], env=env_args, entrypoint=f"{checks} && python -c {body!r}",
                  progress=lambda _m: None)
    info = jobs_api.wait(info["id"], cluster["dashboard_url"], timeout_s=240)
    logs = jobs_api.logs(info["id"], cluster["dashboard_url"])
    assert info["status"] == "SUCCEEDED", logs
    assert f"all 2 node(s) share s3://trainyard/runs/s3-small and see {data}" in logs
    with s3_filesystem(s3).open_input_stream("trainyard/runs/s3-small/rows.txt") as f:
        assert f.read() == b"60"
    import pyarrow.fs as pafs

    left = s3_filesystem(s3).get_file_info(pafs.FileSelector("trainyard/runs/s3-small", recursive=True))
    assert not [i.path for i in left if ".trainyard-storage-check" in i.path], "the check must clean up"


def _pipeline_writes_bundles_to_uris() -> bool:
    import inspect

    from jobs import pipeline

    return "NotImplementedError" not in inspect.getsource(pipeline.export_bundle)


def test_submit_end_to_end_with_data_in_s3(cluster, cluster_env, s3, tmp_path):
    """`trainyard submit --wait` with the data in S3 (and the output too, once the pipeline writes bundles to
    URIs; until then to a local folder the cluster shares)."""
    reason = _pipeline_available()
    if reason:
        pytest.skip(reason)
    data = upload_telemetry(s3, "telemetry", 400, seed=5)
    to_s3 = _pipeline_writes_bundles_to_uris()
    output = "s3://trainyard/runs/e2e" if to_s3 else str(tmp_path / "run")
    env_args = [arg for k, v in s3.items() for arg in ("--env", f"{k}={v}")]
    out = run_cli("submit", str(ROOT / "examples" / "machine-failure.yaml"), "--wait",
                  "--set", f"data.path={data}", "--set", f"output={output}", *env_args,
                  "--set", "train.epochs=2", "--set", "train.workers=2", "--set", "train.early_stop=null",
                  env=cluster_env, module="trainyard", timeout=540)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert "SUCCEEDED" in out.stdout and f"see {data}" in out.stdout

    from jobs.bundle import load

    bundle_dir = tmp_path / "run" / "bundle"
    if to_s3:
        import pyarrow.fs as pafs

        bundle_dir.mkdir(parents=True)
        with s3_filesystem(s3).open_input_stream("trainyard/runs/e2e/bundles/LATEST") as f:
            latest = f.read().decode()          # the latest bundle version's name (jobs.bundle.upload)
        pafs.copy_files(f"trainyard/runs/e2e/bundles/{latest}", str(bundle_dir), source_filesystem=s3_filesystem(s3),
                        destination_filesystem=pafs.LocalFileSystem())
    import pyarrow.parquet as pq

    rows = pq.read_table("trainyard/telemetry/part-0.parquet", filesystem=s3_filesystem(s3)).to_pylist()[:5]
    assert load(bundle_dir).predict(rows)


def test_down_stops_every_process_it_started(cluster, cluster_env, tmp_path):
    from cluster import jobs_api

    # A running job: Ray starts its driver in a session of its own, which `down` must find all the same.
    job_id = _submit_small_job(cluster, tmp_path, "import time; print('sleeping', flush=True); time.sleep(600)")
    deadline = time.monotonic() + 120
    while "sleeping" not in jobs_api.logs(job_id, cluster["dashboard_url"]) and time.monotonic() < deadline:
        time.sleep(1)
    import psutil

    drivers = [p for p in local.cluster_processes(cluster)
               if "time.sleep(600)" in " ".join(psutil.Process(p).cmdline())]
    assert drivers and all(os.getsid(p) not in {n["pid"] for n in cluster["nodes"]} for p in drivers)

    out = run_cli("cluster", "down", env=cluster_env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "none of them is left" in out.stdout and "not signalling" not in out.stdout, out.stdout
    assert local.cluster_processes(cluster) == []
    # The job's log outlives the cluster (`jobs logs` cannot reach it now): it went with the temp folder.
    kept = Path(cluster_env["TRAINYARD_STATE_DIR"]) / "logs" / "jobs" / f"{job_id}.log"
    assert f"Running entrypoint for job {job_id}" in kept.read_text(), kept.read_text()
    assert re.search(rf"kept \d+ job log\(s\) in {re.escape(str(kept.parent))} ", out.stdout), out.stdout
    assert kept.stat().st_mode & 0o077 == 0
    assert not Path(cluster["temp_root"]).exists()
    assert not (Path(cluster_env["TRAINYARD_STATE_DIR"]) / "cluster.json").exists()
    out = run_cli("cluster", "status", env=cluster_env)
    assert out.returncode == 1 and "no local cluster recorded" in out.stderr


def test_down_after_the_heads_crash_stops_the_rest_in_seconds(cluster_env, tmp_path):
    """The head's `ray start` killed outright takes its GCS with it; the worker's raylet and agents and the head's
    leftovers outlived their SIGTERM: `down` waited out its timeout for each node (57 s, nothing said), then
    killed them. (A cluster of this test's own, recorded in a folder of its own.)"""
    cluster_env = {**cluster_env, "TRAINYARD_STATE_DIR": str(tmp_path / "state")}
    with _cluster_up(cluster_env) as state:
        os.kill(next(n for n in state["nodes"] if n["name"] == "head")["pid"], signal.SIGKILL)
        started = time.monotonic()
        out = run_cli("cluster", "down", env=cluster_env)
        took = time.monotonic() - started
        assert out.returncode == 0 and "none of them is left" in out.stdout, out.stdout + out.stderr
        assert "the head's `ray start` is no longer running" in out.stdout, out.stdout
        assert took < 25, f"down took {took:.0f} s after the head's crash"


def test_up_over_a_crashed_clusters_record_stops_what_it_left_running(cluster_env, tmp_path):
    """Every node's `ray start` gone (killed outright, say), their GCS, raylet and agents run on: `up` forgot the
    record and left them running, where nothing could find them again. (A head-only cluster of its own.)"""
    cluster_env = {**cluster_env, "TRAINYARD_STATE_DIR": str(tmp_path / "state")}
    state_file = tmp_path / "state" / "cluster.json"
    args = ("cluster", "up", "--workers", "0", "--cpus-per-node", "1", "--object-store-mb", "128")
    first = run_cli(*args, env=cluster_env)
    assert first.returncode == 0, first.stdout + first.stderr
    old = json.loads(state_file.read_text())
    new = None
    try:
        for node in old["nodes"]:
            os.kill(node["pid"], signal.SIGKILL)
        assert local.cluster_processes(old), "nothing of the cluster outlived its leaders"
        second = run_cli(*args, env=cluster_env)
        assert second.returncode == 0, second.stdout + second.stderr
        new = json.loads(state_file.read_text())
        assert "the recorded cluster's nodes are gone but" in second.stdout + second.stderr
        assert local.cluster_processes(old) == []
        assert new["cluster_id"] != old["cluster_id"] and local.cluster_processes(new)
    finally:
        run_cli("cluster", "down", env=cluster_env)
        for state in (old, new):
            if state:
                assert local.cluster_processes(state) == [], "a cluster left processes behind"


def test_a_stale_records_session_is_taken_as_the_clusters_only_when_vouched_for(tmp_path):
    """A leader gone, its pid (a session id) may name someone else's session by now (pids are reused; after a
    reboot every process is newer than the record): `up` stops only the processes of a session that carries the
    cluster's mark or works in its temp folder. No Ray: a session of a process of this test's own."""
    import time as _time

    leader = subprocess.Popen(["setsid", "sh", "-c", "sleep 120 & echo $!"], stdout=subprocess.PIPE, text=True)
    sleeper = int(leader.stdout.readline())
    leader.wait()
    try:
        sid = os.getsid(sleeper)
        state = {"cluster_id": "c0ffee", "temp_root": str(tmp_path / "gone"),
                 "nodes": [{"name": "head", "pid": sid, "started": _time.time() - 60}]}
        assert sleeper in local.cluster_processes(state)        # the session alone names it (what `down` reads)
        assert local._marked(state) == []                       # not vouched for: left alone
        (tmp_path / "gone").mkdir()
        (tmp_path / "gone" / local.TEMP_ROOT_MARKER).write_text("c0ffee")
        assert local._marked(state) == []                       # its folder is the cluster's, but not its cwd
    finally:
        os.kill(sleeper, signal.SIGKILL)
