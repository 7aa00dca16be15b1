"""A real multi-node Ray cluster on this machine: a head and N workers, each its own `ray start` process.

What `up` guarantees, and why:
- everything listens on 127.0.0.1 (the head runs with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, which makes Ray
  pick loopback as its node address, and every node is started through ``_raystart`` so that Ray does not
  swap 127.0.0.1 for the outward IP);
- every port Ray would otherwise take at a fixed default (GCS 6379, dashboard 8265, Ray Client 10001, the
  dashboard agent's 52365, workers' 10002-19999) is a free one or an OS-chosen one, so the cluster never
  collides with other Ray instances on the machine, or with a second node of its own; the free ones are taken
  from below the OS's own range (``cluster.ports``), so that nothing can be handed one between our choice and
  Ray's bind;
- token authentication is on, with a fresh token in ``<state>/auth_token`` (mode 600);
- each node has its own short temp dir (Unix socket paths must stay under ~107 bytes) and runs in it, like a
  separate machine would;
- each node is started with ``--block`` as the leader of a new session, with TRAINYARD_CLUSTER_ID in its
  environment: `down` signals each leader, which stops its children the way `ray stop` would, then kills
  whatever still carries one of the session ids or the cluster's id (a job's driver runs in a session of
  its own). Nothing is ever found or killed by name, so other Ray instances on the machine are left alone;
- the state file is checked, not trusted: `up` records each leader's start time and command line, and `down`
  signals a pid only while it is still that process; it removes the nodes' temp dirs only under the folder
  `up` created and marked with the cluster's id.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from cluster.errors import BadInput, Failure
from cluster.nodes import alive_nodes_from_gcs
from cluster.ports import free_ports
from cluster.processes import ALIVE, REUSED, describe, identity, load_psutil, recorded_process
from cluster.state import (STATE_FILE, elsewhere_hint, read_state, state_dir as resolve_state_dir, state_path,
                           write_state)

RAYSTART = Path(__file__).with_name("_raystart.py")
CLUSTER_ID_ENV = "TRAINYARD_CLUSTER_ID"
# Ray's own switch (ray_constants.ENABLE_RAY_CLUSTER, checked on 2.60.0): at 0, Ray takes 127.0.0.1 as this
# machine's node address instead of swapping in the outward IP, which our loopback-only cluster does not
# listen on. The head runs with it, and so must any other client of the cluster (`ray status`, `ray.init()`);
# a worker node must not: with it `ray start --address` refuses to join.
LOOPBACK_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
DEFAULT_OBJECT_STORE_MB = 512
NODE_MB = 400              # memory one local node's Ray processes take, at the least (check_memory)
# In the temp root `up` creates, holding the cluster's id: `down` removes a folder only when it carries the mark
# of the cluster it stops, whatever path a state file names.
TEMP_ROOT_MARKER = ".trainyard-cluster"
_LOG_TAIL_LINES = 25


class ClusterError(Failure):
    """`cluster up/down/status` could not do what was asked; the message says why and what to do. A failure
    (exit 1), also when the local cluster is in the wrong state for the command (already up, not up); a value
    out of range is bad input (exit 2)."""


# ---------------------------------------------------------------------------------------------- up

def fresh_token(path: Path) -> str:
    """A new cluster token in a new file at `path`, readable by its owner alone. O_CREAT alone kept an existing
    file's mode (a 0644 one stayed readable by every local user, and the token opens the cluster to them), and
    followed a link put there."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    token = secrets.token_hex(32)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    return token


def up(workers: int = 1, cpus_per_node: int = 2, state_dir=None, *, object_store_mb: int = DEFAULT_OBJECT_STORE_MB,
       timeout_s: float = 180.0, progress: Callable[[str], None] = lambda _msg: None) -> dict:
    """Start a head and ``workers`` worker nodes and wait until all of them are alive; returns the state."""
    if workers < 0:
        raise BadInput(f"--workers {workers}: must be 0 or more")
    if cpus_per_node < 1:
        raise BadInput(f"--cpus-per-node {cpus_per_node}: must be at least 1")
    if object_store_mb < 80:
        raise BadInput(f"object store of {object_store_mb} MiB: Ray needs at least 80 MiB per node")
    if timeout_s <= 0:
        raise BadInput(f"--timeout {timeout_s:g}: must be above 0 seconds")
    check_memory(workers)
    folder = resolve_state_dir(state_dir)
    existing = read_state(folder)
    if existing:
        if _alive_leaders(existing):
            raise ClusterError(
                f"a cluster is already up ({existing['address']}, recorded in {state_path(folder)}): "
                "`trainyard cluster down` first, or pass another --state-dir")
        # A stale record, from a crash or a reboot. Its nodes' other processes can outlive their `ray start` (a
        # GCS, raylets, a job's driver): forgetting the record left them running, and nothing could find them.
        # Found by the cluster's mark in their environment alone: the leaders' session ids may name someone
        # else's processes by now (pids are reused, and after a reboot every process is newer than the record).
        if survivors := _marked(existing):
            progress(f"the recorded cluster's nodes are gone but {len(survivors)} of its processes still run: "
                     "stopping them first")
            for sig, grace in ((signal.SIGTERM, DEAD_HEAD_GRACE_S), (signal.SIGKILL, 10)):
                for pid in _marked(existing):
                    _signal(pid, sig)
                _wait_until(lambda: not _marked(existing), grace, existing["nodes"])
        _forget(folder, existing, progress)

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"--state-dir {folder}: cannot be created ({exc.strerror}); give a folder you can write, "
                       "or set TRAINYARD_STATE_DIR") from None
    token_path = folder / "auth_token"
    token = fresh_token(token_path)

    ports = free_ports(3 + workers + 1)
    gcs, dashboard, client, agent_ports = ports[0], ports[1], ports[2], ports[3:]
    # /tmp, not tempfile.gettempdir(): macOS's /var/folders/... makes Ray's socket paths too long.
    temp_root = Path(tempfile.mkdtemp(prefix="ty-", dir="/tmp" if os.path.isdir("/tmp") else None))
    cluster_id = secrets.token_hex(8)
    (temp_root / TEMP_ROOT_MARKER).write_text(cluster_id)
    state = {
        "version": 2,
        "cluster_id": cluster_id,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "address": f"127.0.0.1:{gcs}",
        "dashboard_url": f"http://127.0.0.1:{dashboard}",
        "client_address": f"ray://127.0.0.1:{client}",
        "ports": {"gcs": gcs, "dashboard": dashboard, "client": client},
        "token_path": str(token_path),
        "python": sys.executable,
        "temp_root": str(temp_root),
        "cpus_per_node": cpus_per_node,
        "nodes": [],
    }
    try:
        progress(f"starting head on 127.0.0.1:{gcs} (dashboard {state['dashboard_url']})")
        head_args = ["--head", "--node-ip-address", "127.0.0.1", "--port", str(gcs),
                     "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
                     "--ray-client-server-port", str(client)]
        procs = [_start_node(state, folder, "head", head_args, agent_ports[0], cpus_per_node, object_store_mb)]
        alive = lambda: len(alive_nodes_from_gcs(state["address"], token))  # noqa: E731
        _wait_for(lambda: alive() >= 1, procs, state, timeout_s, "the head to come up")
        for i in range(workers):
            progress(f"starting worker {i + 1}/{workers}")
            procs.append(_start_node(state, folder, f"worker{i + 1}", ["--address", state["address"]],
                                     agent_ports[i + 1], cpus_per_node, object_store_mb))
        _wait_for(lambda: alive() >= workers + 1, procs, state, timeout_s,
                  f"{workers + 1} nodes to be alive")
    except BaseException:
        try:
            down(folder, quiet=True, progress=progress)
        except ClusterError as exc:  # the original failure matters more; say what is left over
            progress(f"cleanup after the failed start was incomplete: {exc}")
        raise
    return state


def check_memory(workers: int, available_mb: float | None = None) -> None:
    """Refuse more nodes than this machine's free memory holds: each node is ~9 processes (raylet, agents,
    prestarted workers) of a few hundred MiB together (NODE_MB; 858 MiB measured on a worker node of a running
    test cluster, its workers with torch loaded). `--workers 500` started node after node at a load of 200."""
    if available_mb is None:
        available_mb = load_psutil().virtual_memory().available / 2**20
    need = (workers + 1) * NODE_MB
    if need > available_mb:
        most = max(int(available_mb // NODE_MB) - 1, 0)
        raise BadInput(f"--workers {workers}: {workers + 1} nodes need about {need / 1024:.1f} GiB (~{NODE_MB} MiB "
                       f"of Ray processes each, every node on this machine) and {available_mb / 1024:.1f} GiB is "
                       f"free; use --workers {most} or fewer (for more nodes, use a real cluster)")


def client_exports(state: dict) -> str:
    """The shell assignments that let any Ray client (the ``ray`` CLI, ``ray.init()``) use the cluster."""
    return (f"RAY_ADDRESS={state['address']} RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH={state['token_path']} "
            f"{LOOPBACK_ONLY_ENV}=0")


def _start_node(state: dict, folder: Path, name: str, role_args: list[str], agent_port: int, cpus: int,
                object_store_mb: int) -> subprocess.Popen:
    temp_dir = Path(state["temp_root"]) / name
    temp_dir.mkdir(parents=True)
    log_path = folder / "logs" / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # Not inherited from a shell that ran the printed `export` (client_exports): a worker with
    # LOOPBACK_ONLY_ENV refuses to join.
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH",
                        LOOPBACK_ONLY_ENV)}
    # The cluster's `python` (what a job's entrypoint runs) is this interpreter: jobs submitted to the local
    # cluster find trainyard's dependencies without a runtime_env.
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=state["token_path"],
               # Inherited by every process the node starts, job drivers included: how `down` finds them all.
               TRAINYARD_CLUSTER_ID=state["cluster_id"],
               # Ray's state API, called inside Ray Train's actors with no address, otherwise looks for "the"
               # Ray on this machine and fails when there are several (other tests, other users).
               RAY_API_SERVER_ADDRESS=state["dashboard_url"],
               # On SIGTERM a node first drains, waiting up to 30 s for work to leave it (Ray Data's detached
               # actors never do). Draining protects traffic moving to surviving nodes; `down` stops them all.
               RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0")
    if name == "head":
        # Ray then takes loopback as the node's address for everything on the head, drivers of submitted
        # jobs included (they resolve RAY_ADDRESS with this setting). A worker node must not have it: with
        # it Ray refuses to join a cluster.
        env[LOOPBACK_ONLY_ENV] = "0"
    cmd = [sys.executable, str(RAYSTART), "start", "--block", *role_args,
           "--num-cpus", str(cpus), "--num-gpus", "0",
           "--object-store-memory", str(object_store_mb * 1024 * 1024),
           "--dashboard-agent-listen-port", str(agent_port),
           "--min-worker-port", "0", "--max-worker-port", "0",  # OS-chosen, not 10002-19999 shared by all
           "--temp-dir", str(temp_dir), "--disable-usage-stats", "--log-style", "record"]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=temp_dir, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    # The command line as launched, not as read back: Popen returns once the exec has begun, and /proc may
    # still show an empty one for a moment (seen on a loaded machine). The start time is the fork's.
    started, ticks, _ = identity(proc.pid)
    state["nodes"].append({"name": name, "pid": proc.pid, "started": started, "start_ticks": ticks,
                           "cmdline": cmd,
                           "temp_dir": str(temp_dir), "log": str(log_path), "agent_port": agent_port})
    # Recorded before waiting: a `down` after a failed or interrupted `up` still finds every process.
    write_state(folder, state)
    return proc


def _wait_for(done: Callable[[], bool], procs: list[subprocess.Popen], state: dict, timeout_s: float,
              what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        for proc, node in zip(procs, state["nodes"]):
            if proc.poll() is not None:
                raise ClusterError(f"`ray start` for {node['name']} exited with code {proc.returncode} while "
                                   f"waiting for {what}. Its log ({node['log']}) ends with:\n"
                                   + _tail(node["log"]))
        try:
            if done():
                return
        except Exception:  # the GCS may not accept connections yet
            pass
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {n['log']}\n{_tail(n['log'])}" for n in state["nodes"])
            raise ClusterError(f"timed out after {timeout_s:.0f}s waiting for {what}; the logs end with:\n{logs}")
        time.sleep(0.5)


def _tail(path: str, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        return "".join(Path(path).read_text(errors="replace").splitlines(keepends=True)[-lines:])
    except OSError as exc:
        return f"(cannot read: {exc})"


# ---------------------------------------------------------------------------------------------- status

def status(state_dir=None) -> dict:
    """The recorded cluster: its endpoints, which of its processes are alive, and the nodes the GCS sees."""
    folder = resolve_state_dir(state_dir)
    state = read_state(folder)
    if not state:
        raise ClusterError(f"no local cluster recorded in {state_path(folder)}: {elsewhere_hint()}, or start one "
                           "with `trainyard cluster up`")
    alive = set(_alive_leaders(state))
    result = {k: state[k] for k in ("address", "dashboard_url", "client_address", "token_path", "python")}
    result["state_file"] = str(state_path(folder))
    result["processes"] = [{"name": n["name"], "pid": n["pid"], "alive": n["pid"] in alive, "log": n["log"]}
                           for n in state["nodes"]]
    try:
        token = Path(state["token_path"]).read_text().strip()
        result["nodes"] = [n.to_dict() for n in alive_nodes_from_gcs(state["address"], token)]
        result["error"] = None
    except Exception as exc:  # the GCS is gone: report the processes anyway
        result["nodes"] = []
        result["error"] = f"the GCS at {state['address']} does not answer ({exc.__class__.__name__})"
    return result


# ---------------------------------------------------------------------------------------------- down

# How long the processes of a cluster whose head's `ray start` is gone get after their SIGTERM (`down`).
DEAD_HEAD_GRACE_S = 5.0


def down(state_dir=None, *, timeout_s: float = 30.0, quiet: bool = False,
         progress: Callable[[str], None] = lambda _msg: None) -> list[int]:
    """Stop every process the recorded cluster started; returns the pids that were still running.

    Workers go first (a worker whose GCS vanished spends its time reconnecting), then the head; whatever
    outlives its node's graceful stop (a job's driver, which Ray runs in a session of its own) is killed.
    The state file is not trusted: a recorded pid that is now another process (its start time or command line
    differ: the pid was reused) is neither signalled nor used to find processes, and ``progress`` says so.
    """
    folder = resolve_state_dir(state_dir)
    state = read_state(folder)
    if not state:
        if quiet:
            return []
        raise ClusterError(f"no local cluster recorded in {state_path(folder)}: nothing to stop ({elsewhere_hint()})")
    for node in state["nodes"]:
        if recorded_process(node) == REUSED:
            progress(f"not signalling pid {node['pid']} ({node['name']}): it is no longer the process "
                     f"`cluster up` started ({describe(node['pid'])}); that one has exited and its pid was reused")
    stopped = set(cluster_processes(state))
    # The head's `ray start` gone (killed outright) takes its GCS with it, and no node stops gracefully without
    # one: a worker's raylet and agents, and the head's leftovers, outlived their SIGTERM until the timeout, and
    # `down` took 57 s, saying nothing. Then every process is sent its SIGTERM and given a short grace.
    head_gone = bool(stopped) and not any(recorded_process(n) == ALIVE for n in state["nodes"] if n["name"] == "head")
    if head_gone:
        progress("the head's `ray start` is no longer running (its GCS is gone with it): stopping every process "
                 f"of the cluster directly, {DEAD_HEAD_GRACE_S:g} s before they are killed")
    for group in ([n for n in state["nodes"] if n["name"] != "head"],
                  [n for n in state["nodes"] if n["name"] == "head"]):
        for node in group:
            if recorded_process(node) == ALIVE:
                _signal(node["pid"], signal.SIGTERM)  # `ray start --block` then stops its own children
            if head_gone and recorded_process(node) != REUSED:
                for pid in _members(state, sessions_of=[node]):
                    _signal(pid, signal.SIGTERM)
        _wait_until(lambda: not any(_members(state, sessions_of=group)),
                    min(timeout_s, DEAD_HEAD_GRACE_S) if head_gone else timeout_s, group)
    for pid in cluster_processes(state):
        _signal(pid, signal.SIGKILL)
    _wait_until(lambda: not cluster_processes(state), 10, state["nodes"])
    leftover = cluster_processes(state)
    if leftover:
        raise ClusterError(f"processes of the local cluster survived SIGKILL: {leftover}; "
                           f"the state stays in {state_path(folder)}")
    _forget(folder, state, progress)
    return sorted(stopped)


def _wait_until(done: Callable[[], bool], timeout_s: float, nodes: list[dict]) -> None:
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:
        _reap(nodes)
        time.sleep(0.2)


def cluster_processes(state: dict) -> list[int]:
    """Pids of the processes the recorded cluster started that still run (zombies excluded)."""
    return _members(state)


def _members(state: dict, sessions_of: list[dict] | None = None) -> list[int]:
    """Processes of the recorded cluster: by session, or (all nodes only) by the cluster's environment mark.

    Each node's `ray start` was started as a session leader, so its pid is the session id of everything
    Ray spawns under it (gcs_server, raylet, dashboard, agents, workers); processes older than the leader
    are not ours, which guards against a recycled pid. A job's driver is the exception: Ray starts it in a
    session of its own. Like every process of the cluster it inherits TRAINYARD_CLUSTER_ID from its node,
    and that finds it — this cluster's processes only, never another Ray's.
    """
    psutil = load_psutil()

    # A leader whose pid now belongs to another process names someone else's session. One that has exited
    # still names ours while a process remains in it: Linux hands out no pid still in use as a session id.
    sessions = {n["pid"]: n["started"] for n in (sessions_of if sessions_of is not None else state["nodes"])
                if recorded_process(n) != REUSED}
    mark = state.get("cluster_id") if sessions_of is None else None
    found = []
    for proc in psutil.process_iter(["pid", "create_time", "status"]):
        pid = proc.info["pid"]
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE or pid == os.getpid():
                continue
            sid = os.getsid(pid)
            if sid in sessions and (sessions[sid] is None or proc.info["create_time"] >= sessions[sid] - 1):
                found.append(pid)
            elif mark and proc.environ().get(CLUSTER_ID_ENV) == mark:
                found.append(pid)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return sorted(found)


def _marked(state: dict) -> list[int]:
    """The recorded cluster's processes, each session's vouched for: a session whose leader is gone is taken as the
    cluster's only where one of its processes carries the cluster's id in its environment (CLUSTER_ID_ENV) or works
    in the cluster's own temp folder (its marker file holds the id; Ray's renamed processes, such as the agents
    that outlive a killed node, show no environment: setproctitle overwrites it). The sessions alone could be
    someone else's by now: pids are reused, and after a reboot every process is newer than the record (a review
    found `up` would have killed them)."""
    mark, root = state.get("cluster_id"), state.get("temp_root")
    if not mark:
        return []
    try:
        root = root if root and (Path(root) / TEMP_ROOT_MARKER).read_text() == mark else None
    except OSError:
        root = None
    psutil = load_psutil()
    members = _members(state)
    vouched = set()
    for pid in members:
        try:
            proc = psutil.Process(pid)
            if proc.environ().get(CLUSTER_ID_ENV) == mark or (root and (proc.cwd() + "/").startswith(root + "/")):
                vouched.add(os.getsid(pid))
                vouched.add(("pid", pid))
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    found = []
    for pid in members:
        try:
            if ("pid", pid) in vouched or os.getsid(pid) in vouched:
                found.append(pid)
        except (ProcessLookupError, PermissionError):
            continue
    return found


def _alive_leaders(state: dict) -> list[int]:
    return [n["pid"] for n in state.get("nodes", []) if recorded_process(n) == ALIVE]


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _reap(nodes: list[dict]) -> None:
    """Collect leaders that are our own children (up() and down() in one process, as in tests)."""
    for node in nodes:
        try:
            os.waitpid(node["pid"], os.WNOHANG)
        except ChildProcessError:
            pass


def _forget(folder: Path, state: dict, progress: Callable[[str], None]) -> None:
    """Remove the record, the token and the nodes' temp dirs (their Ray logs go with them). The temp dirs'
    folder only when it is the one `up` created for this cluster (it holds the cluster's marker)."""
    temp_root = state.get("temp_root")
    if temp_root:
        marker = Path(temp_root) / TEMP_ROOT_MARKER
        try:
            ours = not Path(temp_root).is_symlink() and marker.read_text() == state.get("cluster_id")
        except OSError:
            ours = False
        if ours:
            _keep_job_logs(Path(temp_root), folder, progress)
            shutil.rmtree(temp_root, ignore_errors=True)
        elif os.path.lexists(temp_root):
            progress(f"left {temp_root} in place: `cluster up` did not create it for this cluster "
                     f"(no {TEMP_ROOT_MARKER} marker with the cluster's id)")
    for name in (STATE_FILE, "auth_token"):
        try:
            (folder / name).unlink()
        except FileNotFoundError:
            pass


def _keep_job_logs(temp_root: Path, folder: Path, progress: Callable[[str], None]) -> None:
    """Copy the jobs' driver logs (Ray's job-driver-<id>.log, in the head's session folder) to
    FOLDER/logs/jobs before `down` removes the temp dirs: `jobs logs` cannot reach them once the cluster is
    gone, and how a model was trained was lost with them. Private to the user: a job prints what it likes."""
    logs = sorted(p for p in temp_root.glob("*/session_*/logs/job-driver-*.log")
                  if not p.parent.parent.is_symlink())      # session_latest is a link to a session of the list
    if not logs:
        return
    kept, copied = folder / "logs" / "jobs", 0
    try:            # a full disk, a folder of root's: said, and `down` goes on (its record and temp dirs go)
        kept.mkdir(parents=True, exist_ok=True, mode=0o700)
        for log in logs:
            target = kept / log.name.removeprefix("job-driver-")
            shutil.copyfile(log, target)
            target.chmod(0o600)
            copied += 1
    except OSError as exc:
        progress(f"could not keep the jobs' logs in {kept} ({exc.strerror or exc}): {len(logs) - copied} of "
                 f"{len(logs)} go with the cluster's temp folder")
    if copied:
        progress(f"kept {copied} job log(s) in {kept} (`trainyard jobs logs` cannot reach them once the cluster "
                 "is down)")

